"""Typed run configuration: dataclasses, YAML files (``yaml.safe_load``), presets and dotted overrides.

A run's configuration is built in layers, each overriding the previous one::

    defaults (the dataclasses below) < preset < --config FILE < command-line options < --set key.sub=value

Every layer is a nested plain dict; the merged dict is turned into a :class:`RunConfig` by
:func:`bopkd.config.from_dict`, which checks every key and value against the dataclass type hints and reports
problems as one line naming the key, where the value came from, and the allowed values
(:class:`~bopkd.errors.BopkdError`). ``--set`` values are parsed as YAML scalars/lists
(``--set data.input_size=[320,240]``, ``--set model.fpn_channels=null``).

Presets (:data:`~bopkd.train.presets.TRAIN_PRESETS`, in code so that they ship with the package) live in
:mod:`bopkd.train.presets`:
``paper`` (the settings of Guo et al.'s code, CVPR 2023; ``paper-crop`` is another name of it),
``cpu-quick`` and ``demo``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from bopkd.config import Origins, drop_none, from_dict, load_yaml, merge_into, parse_override, to_dict
from bopkd.data.augment import AugmentConfig
from bopkd.data.torch_dataset import DataConfig
from bopkd.errors import BopkdError
from bopkd.losses.task import LossConfig
from bopkd.models.posenet import ModelConfig
from bopkd.train.dense_config import DenseConfig
from bopkd.train.presets import TRAIN_PRESETS


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: ``adamw`` (the paper's) or ``sgd``.
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        betas: AdamW betas.
        eps: AdamW epsilon (torch's default 1e-8, which Guo et al.'s code passes explicitly).
        momentum: SGD momentum.
        schedule: ``onecycle`` (``torch.optim.lr_scheduler.OneCycleLR``), ``cosine`` or ``constant``.
        pct_start: one-cycle warm-up fraction of the schedule (0.05 = 5 %; at least 1.5 steps in short runs;
            runs of 1-2 steps keep the peak lr).
        div_factor, final_div_factor: one-cycle start lr = lr / div_factor, end lr = start / final_div_factor.
        anneal: one-cycle annealing, ``OneCycleLR(anneal_strategy=...)``: ``cos`` (torch's default) or
            ``linear`` (Guo et al.'s code).
        cycle_momentum: one-cycle also cycles the momentum (AdamW's beta1, SGD's momentum) inversely to the lr
            between 0.85 and 0.95 (torch's default); false keeps ``betas``/``momentum`` fixed (Guo et al.'s code).
        schedule_extra_steps: the one-cycle schedule is planned for ``iters + schedule_extra_steps`` steps, of
            which the run takes ``iters`` (Guo et al.'s code plans ``MAX_ITER + 100``, so its lr stops a little
            above the schedule's end value).
        grad_clip: clip the global gradient norm to this (0 = off).
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    pct_start: float = 0.05
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: Literal["cos", "linear"] = "cos"
    cycle_momentum: bool = True
    schedule_extra_steps: int = 0
    grad_clip: float = 1.0

    def validate(self) -> None:
        if not self.lr > 0:
            raise BopkdError(f"optim.lr = {self.lr}: the learning rate must be > 0 (the paper uses 1e-3)")
        if self.weight_decay < 0:
            raise BopkdError(f"optim.weight_decay = {self.weight_decay} must be >= 0")
        if not self.eps > 0:
            raise BopkdError(f"optim.eps = {self.eps} must be > 0 (the paper uses 1e-8)")
        if not 0 < self.pct_start < 1:
            raise BopkdError(f"optim.pct_start = {self.pct_start} must be in (0, 1) (the paper uses 0.05)")
        if self.schedule_extra_steps < 0:
            raise BopkdError(
                f"optim.schedule_extra_steps = {self.schedule_extra_steps} must be >= 0 (the paper uses 100)"
            )
        if self.grad_clip < 0:
            raise BopkdError(f"optim.grad_clip = {self.grad_clip} must be >= 0 (0 turns clipping off)")


@dataclass
class KDConfig:
    """Knowledge distillation of a student from a frozen teacher (filled in by ``bopkd train student``).

    Attributes:
        method: ``none`` (student baseline) or a distillation method registered by ``bopkd.losses.kd``.
        teacher: checkpoint (or run directory) of the teacher.
        options: method-specific settings: fields of the method's config in ``bopkd.losses.kd``, the
            distillation weight included (``options.weight``; ``options.ot.weight`` for fkd+ot; the
            method's default when absent: 5 for ot and pred, 1 for fkd). ``--kd-weight`` writes it.
    """

    method: str = "none"
    teacher: str | None = None
    options: dict = field(default_factory=dict)

    def validate(self, family: str = "sparse") -> None:
        from bopkd.losses.kd.registry import make_spec

        # name (one line listing the methods registered for the run's family) and options, by the method's
        # typed config
        make_spec(self.method, self.options or None, source="kd config", family=family)
        if self.method != "none" and not self.teacher:
            raise BopkdError(
                f"kd.method = {self.method!r} needs a teacher checkpoint: add --teacher CHECKPOINT"
            )


@dataclass
class PredictConfig:
    """Inference: cell selection, PnP-RANSAC and batching (``bopkd predict``).

    Attributes:
        score_th: cells whose class score is below this are ignored (WDR's CONFIDENCE_TH 0.1).
        num_cells: at most this many most confident cells per object feed PnP.
        reproj_err: RANSAC inlier threshold, px in the original image.
        ransac_iters: RANSAC iterations.
        refine: refine on the inliers (Levenberg-Marquardt).
        batch_size: images (or crops) per forward pass.
        crop_pad: crop mode: pad of the square box at test time (None: ``data.crop_pad``).
    """

    score_th: float = 0.1
    num_cells: int = 10
    reproj_err: float = 5.0
    ransac_iters: int = 100
    refine: bool = False
    batch_size: int = 8
    crop_pad: float | None = None

    def validate(self) -> None:
        if not 0 <= self.score_th < 1:
            raise BopkdError(f"predict.score_th = {self.score_th} must be in [0, 1)")
        if self.num_cells < 1 or self.batch_size < 1 or self.ransac_iters < 1:
            raise BopkdError("predict.num_cells, predict.batch_size and predict.ransac_iters must be >= 1")
        if not self.reproj_err > 0:
            raise BopkdError(f"predict.reproj_err = {self.reproj_err} must be > 0 px")


@dataclass
class RunConfig:
    """Everything a training run needs; saved as ``RUN_DIR/config.yaml`` and inside every checkpoint.

    Attributes:
        role: ``teacher`` or ``student``.
        family: ``sparse`` (WDRNet-style keypoint network, :mod:`bopkd.models.posenet`) or ``dense``
            (ZebraPose-style surface-code network, :mod:`bopkd.models.dense`, crop mode only; the section
            ``dense`` configures it, with ``model.backbone`` as its encoder and ``data.crop_size`` its input).
        data, augment, model, loss, optim, kd, predict, dense: the sections above and of the other modules
            (``loss`` and ``predict`` are the sparse family's; ``dense.loss``, ``dense.pnp`` the dense one's).
        iters: optimiser steps.
        batch_size: images (crops) per step and process.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        amp: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``bf16``, ``fp16`` or ``off``.
        channels_last: ``auto`` (on CUDA), ``on`` or ``off``.
        seed: seeds python, numpy, torch, the data order and augmentation, and RANSAC.
        deterministic: ``torch.use_deterministic_algorithms`` (slower; exact repeatability on one device).
        ckpt_every: write ``checkpoints/last.pt`` every N iterations (and always at the end).
        log_every: write a metrics row every N iterations.
        out: run directory (default ``runs/<role>-<dataset>-<backbone>``).
        gpus: processes (GPUs) for DDP through torchrun; 1 trains in this process.
        progress: show a tqdm progress bar.
        cpu_threads: torch CPU threads (``torch.set_num_threads``); 0 keeps PyTorch's default. On a
            machine whose cores are busy with other work, 1 can be several times faster.
    """

    role: Literal["teacher", "student"] = "teacher"
    family: Literal["sparse", "dense"] = "sparse"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    iters: int = 10000
    batch_size: int = 16
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    deterministic: bool = False
    ckpt_every: int = 1000
    log_every: int = 20
    out: str | None = None
    gpus: int = 1
    progress: bool = True
    cpu_threads: int = 0

    def validate(self) -> RunConfig:
        if self.iters < 1:
            raise BopkdError(f"iters = {self.iters}: train for at least 1 iteration (--iters)")
        if self.batch_size < 1:
            raise BopkdError(f"batch_size = {self.batch_size}: use at least 1 (--batch-size)")
        if self.ckpt_every < 1 or self.log_every < 1:
            raise BopkdError("ckpt_every and log_every must be >= 1")
        if self.gpus < 1:
            raise BopkdError(f"gpus = {self.gpus}: use 1 or more (--gpus)")
        if self.cpu_threads < 0:
            raise BopkdError(f"cpu_threads = {self.cpu_threads}: use 0 (PyTorch's default) or more")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise BopkdError(f"device = {self.device!r}: use auto, cpu, cuda or cuda:N (--device)")
        for section in (self.data, self.augment, self.optim, self.predict):
            section.validate()
        self.kd.validate(self.family)
        if self.model.obj_ids:
            self.model.validate("model config")
        if hasattr(self.loss, "validate"):
            self.loss.validate()
        if self.family == "dense":
            if self.data.mode != "crop":
                raise BopkdError(
                    f"family dense with data.mode = {self.data.mode!r}: the dense family trains on zoom-in crops "
                    "only: set data.mode=crop"
                )
            self.dense.check(self.model, self.data.crop_size)
        return self

    def run_dir(self) -> Path:
        """The run directory: ``out``, or ``runs/<role>-<dataset>-<backbone>`` (``<role>-dense-...`` for the
        dense family)."""
        if self.out:
            return Path(self.out)
        role = self.role if self.family == "sparse" else f"{self.role}-dense"
        return Path("runs") / f"{role}-{self.data.dataset}-{self.model.backbone}"


def build_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    options: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
    kd_weight: float | None = None,
) -> RunConfig:
    """Merge the layers (see the module docstring) and return the validated :class:`RunConfig`.

    Args:
        preset: a name of :data:`~bopkd.train.presets.TRAIN_PRESETS`; a config file may also name one
            under ``preset:``.
        config_file: YAML file.
        options: nested dict of the command-line options that were given (None values are skipped).
        overrides: ``key.sub=value`` strings (``--set``).
        base: start from this plain dict instead of the defaults: a stored run config (a checkpoint's),
            read through :func:`~bopkd.losses.kd.registry.fold_legacy_kd_weight`.
        kd_weight: ``--kd-weight``: written into ``kd.options`` where the method keeps its weight,
            after ``options`` and before ``overrides``.
    """
    from bopkd.losses.kd.registry import fold_legacy_kd_weight

    origins = Origins()
    d = (
        to_dict(RunConfig())
        if base is None
        else fold_legacy_kd_weight(copy.deepcopy(base), "the stored run config")
    )
    file_d = load_yaml(config_file) if config_file is not None else {}
    file_preset = file_d.pop("preset", None)
    for name, src in ((file_preset, f"preset in {config_file}"), (preset, "--preset")):
        if name is None:
            continue
        if name not in TRAIN_PRESETS:
            raise BopkdError(f"unknown preset {name!r} ({src}): use one of {', '.join(TRAIN_PRESETS)}")
        merge_into(d, TRAIN_PRESETS[name], f"preset {name}", origins)
    if file_d:
        merge_into(d, file_d, str(config_file), origins)
    if options:
        merge_into(d, drop_none(options), "the command-line options", origins)
    if kd_weight is not None:
        _apply_kd_weight(d, kd_weight, origins)
    for text in overrides:
        keys, value = parse_override(text)
        node = d
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {} if k not in node or node[k] is None else node[k]
            if not isinstance(node[k], dict):
                raise BopkdError(
                    f"--set {text!r}: {k!r} is not a section; see config.yaml of a run for the keys"
                )
            node = node[k]
        node[keys[-1]] = value
        origins[".".join(keys)] = f"--set {text}"
    kd = d.get("kd")
    if isinstance(kd, dict) and "weight" in kd:
        raise BopkdError(
            f"config key 'kd.weight' (from {origins.of('kd.weight')}): the distillation weight is a field of the "
            "method's config: set kd.options.weight (kd.options.ot.weight for fkd+ot) or use --kd-weight"
        )
    return from_dict(RunConfig, d, origins=origins)


def _apply_kd_weight(d: dict, weight: float, origins: Origins) -> None:
    """Write ``--kd-weight`` into ``d["kd"]["options"]`` at the registered method's ``weight_key``."""
    from bopkd.losses.kd.registry import get_entry

    kd = d.get("kd") if isinstance(d.get("kd"), dict) else {}
    entry = get_entry(str(kd.get("method") or "none"), "kd.method")
    folded = entry.weight_options(weight, "--kd-weight")
    if folded:
        merge_into(d, {"kd": {"options": folded}}, "--kd-weight", origins)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the config as YAML (atomically); :func:`build_config` with ``config_file=path`` reads it back."""
    from bopkd.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None))


__all__ = [
    "KDConfig",
    "OptimConfig",
    "PredictConfig",
    "RunConfig",
    "build_config",
    "save_config",
]
