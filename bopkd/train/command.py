"""``bopkd train teacher|student``: the run config of a command line (or of a resumed run), the
re-launch under torchrun for several GPUs, and training with an optional teacher."""

from __future__ import annotations

from pathlib import Path

from bopkd.errors import BopkdError
from bopkd.train import checkpoint as ckpt
from bopkd.train import distributed as dist_utils
from bopkd.train.config import RunConfig
from bopkd.train.networks import load_frozen_model
from bopkd.train.trainer import Trainer


def prepare_config(cfg: RunConfig) -> RunConfig:
    """Fill what the config leaves to the data: ``model.obj_ids`` from the dataset when empty; and write
    ``kd.options`` out in full (:func:`bopkd.losses.kd.stored.resolved_options`), so that the run's
    ``config.yaml`` and checkpoints keep their meaning when a method's default changes."""
    from bopkd.losses.kd.stored import resolved_options

    if not cfg.model.obj_ids:
        from bopkd.data.dataset import BopDataset

        cfg.model.obj_ids = list(BopDataset(cfg.data.dataset, cfg.data.root).obj_ids)
    cfg.model.validate("model config")
    cfg.kd.options = resolved_options(cfg.kd.method, cfg.kd.options, cfg.family, "kd config")
    return cfg


def recorded_config(config: dict) -> dict:
    """A recorded run's config (a checkpoint's) with the former defaults of the kd options it lacks
    (:func:`bopkd.losses.kd.stored.with_former_defaults`): it resumes with the settings it started with."""
    from bopkd.losses.kd.stored import with_former_defaults

    kd = config.get("kd")
    if not isinstance(kd, dict) or not isinstance(kd.get("method"), str):
        return config
    options = with_former_defaults(kd["method"], kd.get("options"), str(config.get("family") or "sparse"))
    return {**config, "kd": {**kd, "options": options}}


def train(cfg: RunConfig, resume: bool = False, teacher_path: str | None = None) -> dict:
    """Build everything from ``cfg`` and train (the body of ``bopkd train``); returns the summary."""
    cfg = prepare_config(cfg)
    teacher = None
    path = teacher_path or cfg.kd.teacher
    if path and cfg.kd.method != "none":
        teacher, state = load_frozen_model(path)
        t_ids = list(state["config"]["model"]["obj_ids"])
        if t_ids != list(cfg.model.obj_ids):
            raise BopkdError(
                f"teacher {path} serves objects {t_ids} but the student {list(cfg.model.obj_ids)}: train both on the "
                "same dataset objects"
            )
    trainer = Trainer(cfg, teacher=teacher, resume=resume)
    try:
        return trainer.fit()
    finally:
        dist_utils.cleanup()


def config_for_run(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    options: dict | None = None,
    sets: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    kd_weight: float | None = None,
) -> RunConfig:
    """The config of ``bopkd train``: the layers of :func:`bopkd.train.config.build_config`, or, when
    resuming a run that has a checkpoint, that checkpoint's config with the options given now on top.
    ``kd_weight`` is ``--kd-weight`` (written into ``kd.options`` by ``build_config``)."""
    from bopkd.train.config import build_config

    cfg = build_config(
        preset=preset, config_file=config_file, options=options, overrides=list(sets), kd_weight=kd_weight
    )
    last = cfg.run_dir() / "checkpoints" / ckpt.LAST
    if resume and last.is_file():
        state = ckpt.load_checkpoint(last)
        if not isinstance(state["config"], dict):
            raise BopkdError(f"{last}: the checkpoint's config is not a mapping; start a new run")
        cfg = build_config(
            base=recorded_config(state["config"]), options=options, overrides=list(sets), kd_weight=kd_weight
        )
        if cfg.run_dir() != last.parent.parent:
            cfg.out = str(last.parent.parent)
    return cfg


def train_command(
    role: str,
    *,
    preset: str | None,
    config_file: str | Path | None,
    options: dict,
    sets: list[str] | tuple[str, ...],
    resume: bool,
    gpus: int | None,
    argv: list[str],
    kd_weight: float | None = None,
) -> dict | None:
    """The body of ``bopkd train teacher|student``: build the config, re-launch under torchrun for
    ``--gpus N > 1``, else train. Returns the summary (None on non-zero ranks and in the launcher)."""
    options = {**options, "role": role}
    if gpus is not None:
        options["gpus"] = int(gpus)
    cfg = config_for_run(
        preset=preset, config_file=config_file, options=options, sets=sets, resume=resume, kd_weight=kd_weight
    )
    if cfg.gpus > 1 and not dist_utils.launched_by_torchrun():
        rc = dist_utils.relaunch_with_torchrun(cfg.gpus, dist_utils.strip_gpus_option(argv))
        if rc != 0:
            raise BopkdError(
                f"distributed training ({cfg.gpus} processes under torchrun) failed with exit status {rc}; "
                f"see the messages above (run dir {cfg.run_dir()})"
            )
        return None
    summary = train(cfg, resume=resume)
    return summary if dist_utils.env_info().is_main else None


def summary_line(summary: dict, run_dir: Path) -> str:
    """One line for the terminal: iterations, time, throughput, device, last terms, run directory."""
    last = ", ".join(f"{k} {v:.4g}" for k, v in summary.get("last", {}).items())
    return (
        f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s "
        f"({summary['images_per_s']:.1f} images/s on {summary['device']}); {last}; run: {run_dir}"
    )


__all__ = ["config_for_run", "prepare_config", "summary_line", "train", "train_command"]
