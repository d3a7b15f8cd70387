"""Hooks of the training loop, in the manner of detectron2's ``HookBase``.

:meth:`bopkd.train.trainer.Trainer.fit` runs data -> forward -> losses -> backward -> optimiser step and
calls, on every hook in list order:

- ``before_train()`` once, before the first batch;
- ``before_step()`` before each step;
- ``after_loss()`` after the forward pass and the losses, before ``backward`` (``trainer.total``,
  ``trainer.terms`` set);
- ``after_backward()`` after ``backward`` and gradient clipping, before the optimiser step
  (``trainer.grad_norm`` set when clipping);
- ``after_step()`` after the optimiser step (``trainer.iteration`` counts it; ``trainer.lr`` is the
  step's learning rate, ``trainer.last_terms`` its terms as floats with their sum ``loss``);
- ``after_train()`` once, when the loop ends normally;
- ``close()`` always, last, also when the loop raised (release files and progress bars).

Every hook gets the trainer as ``self.trainer`` (state: ``iteration``, ``end``, ``model``,
``optimizer``, ``scheduler``, ``cfg``, ``dist``, ...). A new behaviour is a new :class:`HookBase`
subclass and one line in :func:`build_hooks`. Collective operations (DDP) happen in the same hook order
on every rank.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from bopkd.errors import BopkdError
from bopkd.train import checkpoint as ckpt
from bopkd.train import distributed as dist_utils
from bopkd.train.logging import MetricsLogger
from bopkd.train.networks import count_parameters
from bopkd.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from bopkd.train.trainer import Trainer


class NonFiniteLossError(BopkdError):
    """Training produced a non-finite loss or gradient."""


class HookBase:
    """A behaviour of the training loop; override the points it needs (see the module docstring)."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_loss(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def close(self) -> None:
        pass


class LRScheduler(HookBase):
    """Steps the learning-rate schedule (:func:`bopkd.train.optim.make_scheduler`) after every optimiser
    step, before anything reads or saves the scheduler's state."""

    def after_step(self) -> None:
        self.trainer.scheduler.step()


class NonFiniteCheck(HookBase):
    """Stops the run with a one-line :class:`NonFiniteLossError` when the loss (or, with clipping and
    without fp16's GradScaler, the gradient norm) is not finite on any rank, after saving the parameters
    of the last good step when they are finite."""

    def after_loss(self) -> None:
        tr = self.trainer
        if dist_utils.any_flag(not bool(torch.isfinite(tr.total)), tr.device):
            self._stop("loss")

    def after_backward(self) -> None:
        tr = self.trainer
        if tr.grad_norm is None or tr.amp == torch.float16:
            return
        if dist_utils.any_flag(not bool(torch.isfinite(tr.grad_norm)), tr.device):
            tr.optimizer.zero_grad(set_to_none=True)
            self._stop("gradient")

    def _stop(self, what: str) -> None:
        # The parameters are those after step it-1 (this step was not applied): save them if finite.
        tr = self.trainer
        it = tr.iteration + 1
        saved = None
        finite = all(bool(torch.isfinite(p).all()) for p in tr.model.parameters())
        if finite:
            saved = tr.save()
        elif (tr.run_dir / "checkpoints" / ckpt.LAST).is_file():
            saved = tr.run_dir / "checkpoints" / ckpt.LAST
        vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in tr.terms.items())
        where = (
            f"the last good state (iteration {it - 1}) is in {saved}"
            if finite and saved
            else (f"the last checkpoint is {saved}" if saved else "no checkpoint was written")
        )
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {it} ({vals}) in run {tr.run_dir}; {where}: lower the learning rate "
            f"(e.g. --lr {tr.cfg.optim.lr / 10:g}) and train again"
        )


class Timer(HookBase):
    """Wall-clock time and images of this ``fit``: sets ``trainer.seconds`` and ``trainer.images_seen``."""

    def before_train(self) -> None:
        self.start = time.perf_counter()
        self.trainer.images_seen = 0

    def after_step(self) -> None:
        self.trainer.images_seen += self.trainer.images_per_step

    def after_train(self) -> None:
        self.trainer.seconds = time.perf_counter() - self.start


class MetricsWriter(HookBase):
    """Rows of ``metrics.csv``/``metrics.jsonl`` (:class:`bopkd.train.logging.MetricsLogger`, rank 0):
    every ``log_every`` iterations and at the last one, the mean of each term over the iterations since
    the previous row (averaged over ranks), the step's ``lr``, throughput ``img_s``, elapsed ``time_s``
    and ``grad_norm`` when clipping. Rows logged are kept in ``trainer.history``."""

    def __init__(self, trainer: Trainer):
        self.logger = MetricsLogger(
            trainer.run_dir,
            enabled=trainer.is_main,
            resume_from=trainer.iteration if trainer.resumed else None,
        )

    def before_train(self) -> None:
        self.window: dict[str, float] = {}
        self.n_window = 0
        self.t_window = self.t_start = time.perf_counter()

    def after_step(self) -> None:
        tr = self.trainer
        for k, v in tr.last_terms.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.n_window += 1
        if tr.iteration % tr.cfg.log_every == 0 or tr.iteration == tr.end:
            self._write_row()

    def _write_row(self) -> None:
        tr = self.trainer
        means = {k: v / self.n_window for k, v in self.window.items()}
        if tr.dist.enabled:
            keys = sorted(means)
            t = dist_utils.all_reduce_mean(torch.tensor([means[k] for k in keys], device=tr.device))
            means = dict(zip(keys, t.tolist(), strict=True))
        dt = time.perf_counter() - self.t_window
        row = {
            "iter": tr.iteration,
            "lr": tr.lr,
            **means,
            "img_s": self.n_window * tr.images_per_step / max(dt, 1e-9),
            "time_s": time.perf_counter() - self.t_start,
        }
        if tr.grad_norm is not None:
            row["grad_norm"] = float(tr.grad_norm)
        self.logger.log(row)
        tr.history.append(row)
        self.window, self.n_window, self.t_window = {}, 0, time.perf_counter()

    def close(self) -> None:
        self.logger.close()


class ProgressBar(HookBase):
    """A tqdm bar of the run's iterations with the last step's terms (rank 0, when ``cfg.progress``)."""

    def before_train(self) -> None:
        from tqdm import tqdm

        tr = self.trainer
        self.bar = tqdm(
            total=tr.cfg.iters,
            initial=tr.iteration,
            disable=not (tr.cfg.progress and tr.is_main),
            dynamic_ncols=True,
            desc=f"{tr.cfg.role} {tr.cfg.model.backbone}",
        )

    def after_step(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in self.trainer.last_terms.items()}, refresh=False)

    def close(self) -> None:
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()


class Checkpointer(HookBase):
    """``checkpoints/last.pt`` every ``ckpt_every`` iterations and at the last iteration of ``fit``;
    ``checkpoints/final.pt`` once the run reached ``cfg.iters`` (:mod:`bopkd.train.checkpoint`): a second
    name of ``last.pt`` when that holds the same iteration, a file of its own otherwise."""

    saved_iteration: int | None = None  # the iteration of the last ``last.pt`` this hook wrote

    def after_step(self) -> None:
        tr = self.trainer
        if tr.iteration % tr.cfg.ckpt_every == 0 or tr.iteration == tr.end:
            tr.save()
            self.saved_iteration = tr.iteration

    def after_train(self) -> None:
        tr = self.trainer
        if tr.iteration < tr.cfg.iters:
            return
        if self.saved_iteration != tr.iteration:
            tr.save(ckpt.FINAL)
        elif tr.is_main:
            folder = tr.run_dir / "checkpoints"
            ckpt.link_checkpoint(folder / ckpt.LAST, folder / ckpt.FINAL)


class RunInfoWriter(HookBase):
    """``run_info.json`` (rank 0) once the run reached ``cfg.iters``: role, dataset, backbone, parameter
    count and :meth:`~bopkd.train.trainer.Trainer.summary`."""

    def after_train(self) -> None:
        tr = self.trainer
        if tr.iteration >= tr.cfg.iters and tr.is_main:
            atomic_write_json(
                tr.run_dir / "run_info.json",
                {
                    "role": tr.cfg.role,
                    "dataset": tr.cfg.data.dataset,
                    "backbone": tr.cfg.model.backbone,
                    "params": count_parameters(tr.model),
                    **tr.summary(),
                },
            )


def build_hooks(trainer: Trainer) -> list[HookBase]:
    """The hooks of a training run, in calling order (the scheduler steps before anything saves it; the
    timer stops before the final checkpoint and ``run_info.json`` are written)."""
    return [
        LRScheduler(),
        NonFiniteCheck(),
        Timer(),
        ProgressBar(),
        MetricsWriter(trainer),
        Checkpointer(),
        RunInfoWriter(),
    ]


__all__ = [
    "Checkpointer",
    "HookBase",
    "LRScheduler",
    "MetricsWriter",
    "NonFiniteCheck",
    "NonFiniteLossError",
    "ProgressBar",
    "RunInfoWriter",
    "Timer",
    "build_hooks",
]
