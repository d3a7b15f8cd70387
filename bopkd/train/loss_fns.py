"""The loss callables of a training run and how one step's terms are gathered from them.

A loss callable is ``fn(student_outputs, batch, teacher_outputs, assignment=...) -> {term: scalar}``:

- ``student_outputs``/``teacher_outputs``: :meth:`bopkd.models.posenet.PoseNet.forward` dicts (the
  teacher's None without a teacher);
- ``batch``: the collated device batch (``bopkd/models/README_CONTRACT.md``);
- ``assignment``: the positive cells of the task loss (:func:`bopkd.losses.targets.assign_targets`),
  sampled once per step by the trainer and passed to every loss, so that the task loss and the
  distillation losses of Guo et al. (CVPR 2023) see the same sampled positives.

The task loss (:class:`bopkd.losses.task.PoseLoss`) is always there; distillation
(:func:`bopkd.losses.kd.build_kd_loss`) adds its ``kd_*`` terms. A callable that is an ``nn.Module``
with trainable parameters (FKD's adapters), or that carries one as ``fn.module``, is optimised and
checkpointed with the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from bopkd.errors import BopkdError
from bopkd.train.config import RunConfig

#: ``fn(student_outputs, batch, teacher_outputs_or_None, assignment=dict) -> {term_name: scalar tensor}``
LossFn = Callable[..., "dict[str, torch.Tensor]"]


def task_loss_fn(cfg: RunConfig) -> LossFn:
    """The pose task loss (``PoseLoss`` of ``cfg.loss``) as a loss callable; ignores the teacher."""
    from bopkd.losses.task import PoseLoss

    loss = PoseLoss(cfg.loss)

    def fn(
        outputs: dict, batch: dict, teacher_outputs: dict | None = None, assignment: dict | None = None
    ) -> dict[str, torch.Tensor]:
        return loss(outputs, batch, assignment=assignment)

    fn.module = loss if isinstance(loss, nn.Module) else None  # type: ignore[attr-defined]
    return fn


def build_loss_fns(cfg: RunConfig, model: nn.Module, teacher: nn.Module | None) -> dict[str, LossFn]:
    """The loss callables of a run: the task loss, plus the distillation terms of ``cfg.kd``."""
    fns: dict[str, LossFn] = {"task": task_loss_fn(cfg)}
    if cfg.kd.method != "none":
        from bopkd.losses.kd import build_kd_loss

        fns["kd"] = build_kd_loss(cfg, model, teacher)
    return fns


def loss_modules(loss_fns: Mapping[str, LossFn]) -> dict[str, nn.Module]:
    """The ``nn.Module`` behind each loss callable that has one (the callable itself or ``fn.module``)."""
    out = {}
    for name, fn in loss_fns.items():
        mod = fn if isinstance(fn, nn.Module) else getattr(fn, "module", None)
        if isinstance(mod, nn.Module):
            out[name] = mod
    return out


def gather_terms(
    loss_fns: Mapping[str, LossFn],
    outputs: dict,
    batch: dict,
    teacher_outputs: dict | None,
    assignment: dict,
) -> dict[str, torch.Tensor]:
    """Call every loss callable, in order, and merge their terms; a term produced twice is an error."""
    terms: dict[str, torch.Tensor] = {}
    for name, fn in loss_fns.items():
        for k, v in fn(outputs, batch, teacher_outputs, assignment=assignment).items():
            if k in terms:
                raise BopkdError(f"loss term {k!r} is produced twice (by {name!r} and before); rename it")
            terms[k] = v
    return terms
