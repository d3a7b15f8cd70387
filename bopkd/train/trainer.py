"""The training loop: iteration-based, resumable, optionally distributed (DDP) and mixed precision.

One :class:`Trainer` trains one network (a teacher, or a student with an optional frozen teacher):

- data: :class:`~bopkd.data.torch_dataset.BopTorchDataset` batches from a DataLoader whose
  :class:`ResumableBatchSampler` shards a seeded permutation per epoch across processes (the
  permutation of ``torch.utils.data.DistributedSampler``) and can start at any iteration, so a resumed
  run sees exactly the batches an uninterrupted run would; every item is augmented with a generator
  seeded by ``(seed, epoch, index)``.
- losses: a mapping of named loss callables ``fn(student_outputs, batch, teacher_outputs | None) ->
  {term: scalar}``; the total loss is the sum of every term, and every term is logged. The task loss
  (``bopkd.losses.task.PoseLoss``) is always there; distillation adds its terms. Loss callables that are
  ``nn.Module`` with trainable parameters (e.g. feature adapters) are optimised and checkpointed too.
- teacher: an optional frozen network (eval mode, no gradients) run on the same augmented batch.
- optimisation (:mod:`bopkd.train.optim`): AdamW (or SGD), one-cycle (cosine or linear annealing, optional
  momentum cycling) / cosine / constant schedule, gradient clipping, bf16 autocast and channels-last on CUDA
  (fp16 with a GradScaler on request), fp32 on the CPU.
- checkpoints (:mod:`bopkd.train.checkpoint`) every ``ckpt_every`` iterations and at the end, with
  everything needed to continue exactly; metrics (:mod:`bopkd.train.logging`); rank 0 only.
- a non-finite loss or gradient stops the run with a one-line :class:`BopkdError` after saving the last
  good state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from bopkd.data.collate import batch_to_device, collate_batch
from bopkd.data.torch_dataset import BopTorchDataset
from bopkd.errors import BopkdError
from bopkd.train import checkpoint as ckpt
from bopkd.train import distributed as dist_utils
from bopkd.train.config import RunConfig, save_config, to_dict
from bopkd.train.logging import MetricsLogger
from bopkd.train.optim import make_optimizer, make_scheduler
from bopkd.train.seed import (
    make_generator,
    opencv_single_threaded,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)
from bopkd.utils.atomic import atomic_write_json

#: ``fn(student_outputs, batch, teacher_outputs_or_None) -> {term_name: scalar tensor}``
LossFn = Callable[[dict, dict, "dict | None"], "dict[str, torch.Tensor]"]


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Infinite (or ``total_iters``-long) stream of batches of ``(index, epoch)`` keys for one process.

    Epoch ``e`` visits ``DistributedSampler(range(n), world_size, rank, shuffle, seed).set_epoch(e)``'s
    indices (a seeded permutation, padded to a multiple of the world size and split across ranks);
    batches run across epoch boundaries. Batch ``i`` (0-based) of the stream depends only on
    ``(n, batch_size, seed, rank, world_size, i)``, so starting at ``start_iter`` continues a stream
    exactly.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        total_iters: int | None = None,
        shuffle: bool = True,
    ):
        if n < 1:
            raise ValueError("ResumableBatchSampler needs a non-empty dataset")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_iter, self.total_iters, self.shuffle = int(start_iter), total_iters, shuffle

    def epoch_indices(self, epoch: int) -> list[int]:
        s = torch.utils.data.DistributedSampler(
            range(self.n),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=False,
        )
        s.set_epoch(epoch)
        return list(s)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.epoch_indices(0))
        pos = self.start_iter * self.batch_size
        epoch, offset = divmod(pos, per_epoch)
        it = self.start_iter
        buf: list[tuple[int, int]] = []
        while self.total_iters is None or it < self.total_iters:
            for idx in self.epoch_indices(epoch)[offset:]:
                buf.append((idx, epoch))
                if len(buf) == self.batch_size:
                    yield buf
                    buf = []
                    it += 1
                    if self.total_iters is not None and it >= self.total_iters:
                        return
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:
        if self.total_iters is None:
            raise TypeError("an infinite ResumableBatchSampler has no length")
        return max(0, self.total_iters - self.start_iter)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's GPU) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BopkdError(f"device {name!r} asked for, but CUDA is not available here: use --device cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA for ``auto``; None (fp32) on the CPU or when off."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def task_loss_fn(cfg: RunConfig) -> LossFn:
    """The pose task loss (``PoseLoss``) as a loss callable; ignores the teacher."""
    from bopkd.losses.task import PoseLoss

    loss = PoseLoss(cfg.loss)

    def fn(outputs: dict, batch: dict, teacher_outputs: dict | None = None) -> dict[str, torch.Tensor]:
        terms = loss(outputs, batch, assignment=batch.get("assignment"))
        # share the sampled positive cells with the distillation losses (they read batch["assignment"])
        batch["assignment"] = loss.last_assignment
        return terms

    fn.module = loss if isinstance(loss, nn.Module) else None  # type: ignore[attr-defined]
    return fn


def build_loss_fns(cfg: RunConfig, model: nn.Module, teacher: nn.Module | None) -> dict[str, LossFn]:
    """The loss callables of a run: the task loss, plus the distillation terms of ``cfg.kd``."""
    fns: dict[str, LossFn] = {"task": task_loss_fn(cfg)}
    if cfg.kd.method != "none":
        try:
            from bopkd.losses.kd import build_kd_loss  # added by the distillation module
        except ImportError:
            raise BopkdError(
                f"distillation method {cfg.kd.method!r} is not available in this bopkd: use --kd none"
            ) from None
        fns["kd"] = build_kd_loss(cfg, model, teacher)
    return fns


def build_model_from_config(cfg: RunConfig) -> nn.Module:
    from bopkd.models.posenet import build_model

    return build_model(cfg.model)


def load_frozen_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A network from a checkpoint (or run directory), in eval mode with gradients off (a teacher).

    Returns:
        ``(model, checkpoint_state)``.
    """
    from bopkd.models.posenet import ModelConfig, build_model

    state = ckpt.load_checkpoint(path)
    p = ckpt.resolve_checkpoint(path)
    model_d = state["config"].get("model") if isinstance(state["config"], dict) else None
    if not isinstance(model_d, dict):
        raise BopkdError(
            f"{p}: the checkpoint's config has no model section; it was not written by bopkd train"
        )
    # The checkpoint's weights replace any pretrained ones: build without reading them (no download, no file).
    model = build_model(ModelConfig.from_dict(model_d, source=f"{p} (model config)").without_pretrained())
    ckpt.load_model_weights(model, state, p)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, state


class NonFiniteLossError(BopkdError):
    """Training produced a non-finite loss or gradient."""


class Trainer:
    """Train one network per :class:`RunConfig` (see the module docstring).

    Args:
        cfg: the run config (``model.obj_ids`` filled; see :func:`prepare_config`).
        model: the network to train (default: built from ``cfg.model``).
        loss_fns: named loss callables (default: :func:`build_loss_fns`).
        teacher: optional frozen network run on every batch; its outputs go to the loss callables.
        dataset: the training dataset (default: built from ``cfg.data``/``cfg.augment``).
        resume: continue from ``RUN_DIR/checkpoints/last.pt`` when it exists.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        model: nn.Module | None = None,
        loss_fns: Mapping[str, LossFn] | None = None,
        teacher: nn.Module | None = None,
        dataset: torch.utils.data.Dataset | None = None,
        resume: bool = False,
    ):
        self.cfg = cfg
        self.run_dir = cfg.run_dir()
        self.dist = dist_utils.env_info()
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.dist = dist_utils.init(self.device.type)
        self.is_main = self.dist.is_main
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        if self.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        self.amp = amp_dtype(cfg, self.device)
        self.channels_last = cfg.channels_last == "on" or (
            cfg.channels_last == "auto" and self.device.type == "cuda"
        )

        self.model = model if model is not None else build_model_from_config(cfg)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.teacher = teacher
        if teacher is not None:
            teacher.to(self.device).eval()
            teacher.requires_grad_(False)
            if self.channels_last:
                teacher.to(memory_format=torch.channels_last)
        self.loss_fns = dict(loss_fns) if loss_fns is not None else build_loss_fns(cfg, self.model, teacher)
        self.extra_modules: dict[str, nn.Module] = {}
        for name, fn in self.loss_fns.items():
            mod = fn if isinstance(fn, nn.Module) else getattr(fn, "module", None)
            if isinstance(mod, nn.Module):
                mod.to(self.device)
                if any(p.requires_grad for p in mod.parameters()):
                    self.extra_modules[name] = mod
        self.ddp_model = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

        params = [p for p in self.model.parameters() if p.requires_grad]
        # The loss modules' own parameters (FKD adapters) are not inside DDP: start every rank from rank 0's
        # values and average their gradients after each backward (fit), so that no rank drifts.
        self.extra_params: list[nn.Parameter] = []
        for m in self.extra_modules.values():
            if self.dist.enabled:
                dist_utils.broadcast_module(m)
            self.extra_params += [p for p in m.parameters() if p.requires_grad]
        params += self.extra_params
        self.params = params
        self.optimizer = make_optimizer(params, cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, cfg.optim, cfg.iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

        self.dataset = dataset if dataset is not None else self._make_dataset()
        self.iteration = 0
        self.resumed = False
        last = self.run_dir / "checkpoints" / ckpt.LAST
        if resume and last.is_file():
            self._restore(ckpt.load_checkpoint(last, map_location="cpu"), last)
            self.resumed = True
        elif not resume and self.is_main and last.is_file():
            raise BopkdError(
                f"run directory {self.run_dir} already holds a checkpoint: add --resume to continue it, or choose "
                "another --out"
            )
        self.logger = MetricsLogger(
            self.run_dir, enabled=self.is_main, resume_from=self.iteration if self.resumed else None
        )
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.last_terms: dict[str, float] = {}
        self.history: list[dict] = []

    # --- construction --------------------------------------------------------------------------------

    def _make_dataset(self) -> BopTorchDataset:
        return BopTorchDataset(
            self.cfg.data, self.cfg.model.obj_ids, train=True, augment=self.cfg.augment, seed=self.cfg.seed
        )

    def _loader(self, start_iter: int) -> torch.utils.data.DataLoader:
        d = self.cfg.data
        if d.num_workers > 0:
            opencv_single_threaded()
        sampler = ResumableBatchSampler(
            len(self.dataset),
            self.cfg.batch_size,
            seed=self.cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            start_iter=start_iter,
            total_iters=self.cfg.iters,
        )
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=collate_batch,
            pin_memory=d.pin_memory and self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=make_generator(self.cfg.seed * 1000 + self.dist.rank + start_iter),
            persistent_workers=False,
            prefetch_factor=4 if d.num_workers > 0 else None,
        )

    # --- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extra_modules": {k: m.state_dict() for k, m in self.extra_modules.items()},
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "info": {
                "params": count_parameters(self.model),
                "role": self.cfg.role,
                "world_size": self.dist.world_size,
            },
        }

    def save(self, name: str = ckpt.LAST) -> Path | None:
        """Write a checkpoint to ``RUN_DIR/checkpoints/name``: rank 0 writes, every rank must call it (the
        RNG states of all ranks are gathered so that a resumed DDP run continues every rank's streams)."""
        rng_ranks = dist_utils.gather_objects(rng_state())
        if not self.is_main:
            return None
        state = self.state_dict()
        if self.dist.enabled:
            state["rng_ranks"] = rng_ranks
        return ckpt.save_checkpoint(self.run_dir / "checkpoints" / name, state)

    def _restore(self, state: dict, path: Path) -> None:
        saved_iters = (
            int(state["config"].get("iters", self.cfg.iters))
            if isinstance(state["config"], dict)
            else self.cfg.iters
        )
        if saved_iters != self.cfg.iters and self.cfg.optim.schedule != "constant":
            raise BopkdError(
                f"{path}: the run was planned for {saved_iters} iterations (its lr schedule depends on it); resume "
                f"with --iters {saved_iters} or start a new run"
            )
        ckpt.load_model_weights(self.model, state, path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            for k, m in self.extra_modules.items():
                m.load_state_dict(state.get("extra_modules", {})[k])
        except (KeyError, ValueError, RuntimeError) as e:
            raise BopkdError(
                f"{path}: the optimiser/scheduler state does not fit this run ({str(e).splitlines()[0][:160]}); "
                "resume with the run's own config or start a new run"
            ) from None
        ranks = state.get("rng_ranks")
        if isinstance(ranks, list) and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        elif "rng" in state:
            set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])

    # --- training --------------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def compute_losses(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward the student (and teacher) on a device batch; ``(total, terms)``."""
        with self._autocast():
            outputs = self.ddp_model(batch["images"])
            teacher_outputs = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_outputs = self.teacher(batch["images"])
            terms: dict[str, torch.Tensor] = {}
            for name, fn in self.loss_fns.items():
                for k, v in fn(outputs, batch, teacher_outputs).items():
                    if k in terms:
                        raise BopkdError(
                            f"loss term {k!r} is produced twice (by {name!r} and before); rename it"
                        )
                    terms[k] = v
        terms = {k: v.float() for k, v in terms.items()}
        total = torch.stack(list(terms.values())).sum()
        return total, terms

    def _stop_non_finite(self, it: int, terms: dict[str, torch.Tensor], what: str) -> None:
        # The parameters are those after step it-1 (this step was not applied): save them if finite.
        saved = None
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if finite:
            self.iteration = it - 1
            saved = self.save()
        elif (self.run_dir / "checkpoints" / ckpt.LAST).is_file():
            saved = self.run_dir / "checkpoints" / ckpt.LAST
        vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        where = (
            f"the last good state (iteration {it - 1}) is in {saved}"
            if finite and saved
            else (f"the last checkpoint is {saved}" if saved else "no checkpoint was written")
        )
        self.logger.close()
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {it} ({vals}) in run {self.run_dir}; {where}: lower the learning rate "
            f"(e.g. --lr {self.cfg.optim.lr / 10:g}) and train again"
        )

    def fit(self, stop_at: int | None = None) -> dict:
        """Train from the current iteration to ``cfg.iters``.

        Args:
            stop_at: stop after this iteration (having written a checkpoint there), as if the run were
                killed right after it; used to test resuming.
        Returns:
            summary dict (iterations, seconds, images/s, last loss terms).
        """
        from tqdm import tqdm

        cfg = self.cfg
        end = cfg.iters if stop_at is None else min(cfg.iters, stop_at)
        self.ddp_model.train()
        if self.teacher is not None:
            self.teacher.eval()
        loader = self._loader(self.iteration)
        bar = tqdm(
            total=cfg.iters,
            initial=self.iteration,
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
            desc=f"{cfg.role} {cfg.model.backbone}",
        )
        window: dict[str, float] = {}
        n_window = 0
        t_window = time.perf_counter()
        t_start = time.perf_counter()
        images_seen = 0
        batch_images = cfg.batch_size * self.dist.world_size
        it = self.iteration
        try:
            for batch in loader:
                it = self.iteration + 1
                batch = batch_to_device(batch, self.device, channels_last=self.channels_last)
                total, terms = self.compute_losses(batch)
                bad = dist_utils.any_flag(not bool(torch.isfinite(total)), self.device)
                if bad:
                    self._stop_non_finite(it, terms, "loss")
                self.scaler.scale(total).backward()
                if self.dist.enabled:
                    dist_utils.all_reduce_gradients(self.extra_params)
                grad_norm = None
                if cfg.optim.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
                    bad = self.amp != torch.float16 and dist_utils.any_flag(
                        not bool(torch.isfinite(grad_norm)), self.device
                    )
                    if bad:
                        self.optimizer.zero_grad(set_to_none=True)
                        self._stop_non_finite(it, terms, "gradient")
                lr = self.optimizer.param_groups[0]["lr"]
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.iteration = it
                images_seen += batch_images

                vals = {k: float(v.detach()) for k, v in terms.items()}
                vals["loss"] = float(total.detach())
                for k, v in vals.items():
                    window[k] = window.get(k, 0.0) + v
                n_window += 1
                self.last_terms = vals
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in vals.items()}, refresh=False)

                if it % cfg.log_every == 0 or it == end:
                    means = {k: v / n_window for k, v in window.items()}
                    if self.dist.enabled:
                        keys = sorted(means)
                        t = dist_utils.all_reduce_mean(
                            torch.tensor([means[k] for k in keys], device=self.device)
                        )
                        means = dict(zip(keys, t.tolist(), strict=True))
                    dt = time.perf_counter() - t_window
                    row = {
                        "iter": it,
                        "lr": lr,
                        **means,
                        "img_s": n_window * batch_images / max(dt, 1e-9),
                        "time_s": time.perf_counter() - t_start,
                    }
                    if grad_norm is not None:
                        row["grad_norm"] = float(grad_norm)
                    self.logger.log(row)
                    self.history.append(row)
                    window, n_window, t_window = {}, 0, time.perf_counter()
                if it % cfg.ckpt_every == 0 or it == end:
                    self.save()
                if it >= end:
                    break
        finally:
            bar.close()
        elapsed = time.perf_counter() - t_start
        summary = {
            "iterations": self.iteration,
            "seconds": elapsed,
            "images_per_s": images_seen / max(elapsed, 1e-9),
            "last": self.last_terms,
            "device": device_name(self.device),
            "world_size": self.dist.world_size,
            "run_dir": str(self.run_dir),
        }
        if self.iteration >= cfg.iters:
            self.save(ckpt.FINAL)
        if self.iteration >= cfg.iters and self.is_main:
            atomic_write_json(
                self.run_dir / "run_info.json",
                {
                    "role": cfg.role,
                    "dataset": cfg.data.dataset,
                    "backbone": cfg.model.backbone,
                    "params": count_parameters(self.model),
                    **summary,
                },
            )
        self.logger.close()
        dist_utils.barrier()
        return summary


def device_name(device: torch.device) -> str:
    """A human-readable device name (``NVIDIA H100 80GB HBM3``, ``cpu (x86_64, 2 threads)``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def prepare_config(cfg: RunConfig) -> RunConfig:
    """Fill what the config leaves to the data: ``model.obj_ids`` from the dataset when empty."""
    if not cfg.model.obj_ids:
        from bopkd.data.dataset import BopDataset

        cfg.model.obj_ids = list(BopDataset(cfg.data.dataset, cfg.data.root).obj_ids)
    cfg.model.validate("model config")
    return cfg


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
) -> RunConfig:
    """The config of ``bopkd train``: the layers of :func:`bopkd.train.config.build_config`, or, when
    resuming a run that has a checkpoint, that checkpoint's config with the options given now on top."""
    from bopkd.train.config import build_config

    cfg = build_config(preset=preset, config_file=config_file, options=options, overrides=list(sets))
    last = cfg.run_dir() / "checkpoints" / ckpt.LAST
    if resume and last.is_file():
        state = ckpt.load_checkpoint(last)
        if not isinstance(state["config"], dict):
            raise BopkdError(f"{last}: the checkpoint's config is not a mapping; start a new run")
        cfg = build_config(base=state["config"], options=options, overrides=list(sets))
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
) -> dict | None:
    """The body of ``bopkd train teacher|student``: build the config, re-launch under torchrun for
    ``--gpus N > 1``, else train. Returns the summary (None on non-zero ranks and in the launcher)."""
    options = {**options, "role": role}
    if gpus is not None:
        options["gpus"] = int(gpus)
    cfg = config_for_run(preset=preset, config_file=config_file, options=options, sets=sets, resume=resume)
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
    last = ", ".join(f"{k} {v:.4g}" for k, v in summary.get("last", {}).items())
    return (
        f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s "
        f"({summary['images_per_s']:.1f} images/s on {summary['device']}); {last}; run: {run_dir}"
    )


__all__ = [
    "LossFn",
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "Trainer",
    "build_loss_fns",
    "load_frozen_model",
    "prepare_config",
    "resolve_device",
    "train",
    "train_command",
]
