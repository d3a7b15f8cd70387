"""The training loop: iteration-based, resumable, optionally distributed (DDP) and mixed precision.

One :class:`Trainer` trains one network (a teacher, or a student with an optional frozen teacher):

- data: :class:`~bopkd.data.torch_dataset.BopTorchDataset` batches from a DataLoader whose
  :class:`~bopkd.train.sampler.ResumableBatchSampler` shards a seeded permutation per epoch across
  processes and can start at any iteration, so a resumed run sees exactly the batches an uninterrupted
  run would; every item is augmented with a generator seeded by ``(seed, epoch, index)``.
- losses (:mod:`bopkd.train.loss_fns`): named loss callables; the positive cells of the task loss are
  sampled once per step and passed to every callable; the total loss is the sum of every term, and
  every term is logged.
- teacher: an optional frozen network (eval mode, no gradients) run on the same augmented batch.
- optimisation (:mod:`bopkd.train.optim`): AdamW (or SGD), one-cycle / cosine / constant schedule,
  gradient clipping, bf16 autocast and channels-last on CUDA (fp16 with a GradScaler on request), fp32
  on the CPU.
- everything else is a hook (:mod:`bopkd.train.hooks`): the schedule step, the non-finite loss check,
  timing, the progress bar, metrics rows, checkpoints (:mod:`bopkd.train.checkpoint`) and
  ``run_info.json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bopkd.config import to_dict
from bopkd.data.collate import batch_to_device, collate_batch
from bopkd.data.torch_dataset import BopTorchDataset
from bopkd.errors import BopkdError
from bopkd.losses.targets import assign_targets
from bopkd.train import checkpoint as ckpt
from bopkd.train import distributed as dist_utils
from bopkd.train.config import RunConfig, save_config
from bopkd.train.device import amp_dtype, device_name, resolve_device
from bopkd.train.hooks import HookBase, build_hooks
from bopkd.train.loss_fns import LossFn, build_loss_fns, gather_terms, loss_modules
from bopkd.train.networks import build_model_from_config, count_parameters
from bopkd.train.optim import make_optimizer, make_scheduler
from bopkd.train.sampler import ResumableBatchSampler
from bopkd.train.seed import (
    make_generator,
    opencv_single_threaded,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)


class Trainer:
    """Train one network per :class:`RunConfig` (see the module docstring).

    Args:
        cfg: the run config (``model.obj_ids`` filled; see :func:`bopkd.train.command.prepare_config`).
        model: the network to train (default: built from ``cfg.model``).
        loss_fns: named loss callables (default: :func:`bopkd.train.loss_fns.build_loss_fns`).
        teacher: optional frozen network run on every batch; its outputs go to the loss callables.
        dataset: the training dataset (default: built from ``cfg.data``/``cfg.augment``).
        resume: continue from ``RUN_DIR/checkpoints/last.pt`` when it exists.

    State the hooks read: ``iteration`` (optimiser steps done), ``end`` (last iteration of this
    :meth:`fit`), ``total``/``terms`` (the step's loss tensors), ``grad_norm``, ``lr``, ``last_terms``
    (floats), ``model``, ``optimizer``, ``scheduler``, ``history`` (metrics rows).
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
        self._setup_process()
        self._place_networks(model, teacher)
        self.loss_fns = dict(loss_fns) if loss_fns is not None else build_loss_fns(cfg, self.model, teacher)
        self._setup_optimisation()
        self.dataset = dataset if dataset is not None else self._make_dataset()
        self.iteration = 0
        self.resumed = False
        self._resume_or_refuse(resume)
        self.last_terms: dict[str, float] = {}
        self.history: list[dict] = []
        self.total: torch.Tensor | None = None
        self.terms: dict[str, torch.Tensor] = {}
        self.grad_norm: torch.Tensor | None = None
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.end = cfg.iters
        self.seconds, self.images_seen = 0.0, 0
        self.hooks: list[HookBase] = []
        self.register_hooks(build_hooks(self))
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")

    # --- construction --------------------------------------------------------------------------------

    def _setup_process(self) -> None:
        """Device, process group, threads, seeds and numerics of this process."""
        cfg = self.cfg
        self.dist = dist_utils.env_info()
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.dist = dist_utils.init(self.device.type)
        self.is_main = self.dist.is_main
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        if self.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        self.amp = amp_dtype(cfg.amp, self.device)
        self.channels_last = cfg.channels_last == "on" or (
            cfg.channels_last == "auto" and self.device.type == "cuda"
        )

    def _place_networks(self, model: nn.Module | None, teacher: nn.Module | None) -> None:
        """The student on the device (and its memory format); the teacher frozen there."""
        self.model = model if model is not None else build_model_from_config(self.cfg)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.teacher = teacher
        if teacher is not None:
            teacher.to(self.device).eval()
            teacher.requires_grad_(False)
            if self.channels_last:
                teacher.to(memory_format=torch.channels_last)

    def _setup_optimisation(self) -> None:
        """Loss modules with parameters, DDP wrapping, optimiser, schedule and gradient scaler."""
        self.extra_modules: dict[str, nn.Module] = {}
        for name, mod in loss_modules(self.loss_fns).items():
            mod.to(self.device)
            # ``stateful``: running statistics without parameters (ZebraLoss's histogram), checkpointed too.
            if any(p.requires_grad for p in mod.parameters()) or getattr(mod, "stateful", False):
                self.extra_modules[name] = mod
        self.ddp_model = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        # The loss modules' own parameters (FKD adapters) are not inside DDP: start every rank from rank 0's
        # values and average their gradients after each backward (run_step), so that no rank drifts.
        self.extra_params: list[nn.Parameter] = []
        for m in self.extra_modules.values():
            if self.dist.enabled:
                dist_utils.broadcast_module(m)
            self.extra_params += [p for p in m.parameters() if p.requires_grad]
        self.params = params + self.extra_params
        self.optimizer = make_optimizer(self.params, self.cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, self.cfg.optim, self.cfg.iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

    def _resume_or_refuse(self, resume: bool) -> None:
        """Restore ``last.pt`` when resuming; refuse to overwrite a run directory that has one otherwise."""
        last = self.run_dir / "checkpoints" / ckpt.LAST
        if resume and last.is_file():
            self._restore(ckpt.load_checkpoint(last, map_location="cpu"), last)
            self.resumed = True
        elif not resume and self.is_main and last.is_file():
            raise BopkdError(
                f"run directory {self.run_dir} already holds a checkpoint: add --resume to continue it, or choose "
                "another --out"
            )

    def _make_dataset(self) -> BopTorchDataset:
        if self.cfg.family == "dense":
            from bopkd.data.dense_dataset import DenseTorchDataset

            d = self.cfg.dense
            return DenseTorchDataset(
                self.cfg.data,
                self.cfg.model.obj_ids,
                train=True,
                augment=self.cfg.augment,
                seed=self.cfg.seed,
                out_size=d.out_size,
                bits=d.bits,
                min_vertices=d.min_vertices,
            )
        return BopTorchDataset(
            self.cfg.data, self.cfg.model.obj_ids, train=True, augment=self.cfg.augment, seed=self.cfg.seed
        )

    def make_loader(self, start_iter: int) -> torch.utils.data.DataLoader:
        """This process's batches from iteration ``start_iter`` to ``cfg.iters``."""
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

    def register_hooks(self, hooks: list[HookBase]) -> None:
        """Append hooks (called in list order); each gets this trainer as ``hook.trainer``."""
        for h in hooks:
            h.trainer = self
        self.hooks.extend(hooks)

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

    @property
    def images_per_step(self) -> int:
        """Images of one optimiser step over all processes."""
        return self.cfg.batch_size * self.dist.world_size

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)

    def compute_losses(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward the student (and teacher) on a device batch, sample the task loss's positive cells
        (shared by every loss; none for the dense family, whose losses cover every output pixel) and call
        the loss callables; ``(total, terms)``, float32."""
        with self._autocast():
            outputs = self.ddp_model(batch["images"])
            teacher_outputs = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_outputs = self.teacher(batch["images"])
            assignment = (
                assign_targets(outputs, batch, self.cfg.loss) if self.cfg.family == "sparse" else None
            )
            terms = gather_terms(self.loss_fns, outputs, batch, teacher_outputs, assignment)
        terms = {k: v.float() for k, v in terms.items()}
        total = torch.stack(list(terms.values())).sum()
        return total, terms

    def _call(self, point: str) -> None:
        for h in self.hooks:
            getattr(h, point)()

    def run_step(self, batch: dict) -> None:
        """One optimiser step on a loader batch: losses, backward, clipping, step (hooks in between)."""
        batch = batch_to_device(batch, self.device, channels_last=self.channels_last)
        self.total, self.terms = self.compute_losses(batch)
        self._call("after_loss")
        self.scaler.scale(self.total).backward()
        if self.dist.enabled:
            dist_utils.all_reduce_gradients(self.extra_params)
        self.grad_norm = None
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        self._call("after_backward")
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        self.last_terms = {k: float(v.detach()) for k, v in self.terms.items()}
        self.last_terms["loss"] = float(self.total.detach())

    def fit(self, stop_at: int | None = None) -> dict:
        """Train from the current iteration to ``cfg.iters``.

        Args:
            stop_at: stop after this iteration (having written a checkpoint there), as if the run were
                killed right after it; used to test resuming.
        Returns:
            :meth:`summary`.
        """
        self.end = self.cfg.iters if stop_at is None else min(self.cfg.iters, stop_at)
        self.ddp_model.train()
        if self.teacher is not None:
            self.teacher.eval()
        loader = self.make_loader(self.iteration)
        try:
            self._call("before_train")
            for batch in loader:
                self._call("before_step")
                self.run_step(batch)
                self._call("after_step")
                if self.iteration >= self.end:
                    break
            self._call("after_train")
        finally:
            self._call("close")
        dist_utils.barrier()
        return self.summary()

    def summary(self) -> dict:
        """Iterations done, seconds and images/s of the last :meth:`fit`, last loss terms, device, world
        size and run directory."""
        return {
            "iterations": self.iteration,
            "seconds": self.seconds,
            "images_per_s": self.images_seen / max(self.seconds, 1e-9),
            "last": self.last_terms,
            "device": device_name(self.device),
            "world_size": self.dist.world_size,
            "run_dir": str(self.run_dir),
        }


__all__ = ["Trainer"]
