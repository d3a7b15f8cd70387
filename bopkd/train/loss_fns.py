"""The loss callables of a training run and how one step's terms are gathered from them.

A loss callable is ``fn(student_outputs, batch, teacher_outputs, assignment=...) -> {term: scalar}``:

- ``student_outputs``/``teacher_outputs``: :meth:`bopkd.models.posenet.PoseNet.forward` dicts (the
  teacher's None without a teacher);
- ``batch``: the collated device batch (``bopkd/models/README_CONTRACT.md``);
- ``assignment``: the positive cells of the task loss (:func:`bopkd.losses.targets.assign_targets`),
  sampled once per step by the trainer and passed to every loss, so that the task loss and the
  distillation losses of Guo et al. (CVPR 2023) see the same sampled positives; None for the dense
  family (``cfg.family == "dense"``), whose losses cover every output pixel.

The task loss (:class:`bopkd.losses.task.PoseLoss`; for the dense family
:class:`bopkd.losses.zebra.ZebraLoss` on the batch's ``dense_mask``/``dense_bits``) is always there; distillation
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


def dense_task_loss_fn(cfg: RunConfig) -> LossFn:
    """ZebraPose's loss (``ZebraLoss`` of ``cfg.dense.loss``) on the batch's ``dense_mask`` (B, S, S) and
    ``dense_bits`` (B, bits, S, S) as a loss callable -> ``{"loss_mask", "loss_code"}``; ignores the teacher
    and the assignment. The loss module (its running bit-error histogram) is ``fn.module``."""
    from bopkd.losses.zebra import ZebraLoss

    loss = ZebraLoss(cfg.dense.loss)

    def fn(
        outputs: dict, batch: dict, teacher_outputs: dict | None = None, assignment: dict | None = None
    ) -> dict[str, torch.Tensor]:
        if "dense_mask" not in batch or "dense_bits" not in batch:
            raise BopkdError(
                "the dense task loss needs batch['dense_mask'] and batch['dense_bits']: train on "
                "bopkd.data.dense_dataset.DenseTorchDataset batches (family: dense)"
            )
        return loss(outputs, batch["dense_mask"], batch["dense_bits"])

    fn.module = loss  # type: ignore[attr-defined]
    return fn


def task_loss_fn(cfg: RunConfig) -> LossFn:
    """The task loss of the run's family as a loss callable (ignores the teacher): ``PoseLoss`` of
    ``cfg.loss`` for the sparse family, :func:`dense_task_loss_fn` for the dense one."""
    if cfg.family == "dense":
        return dense_task_loss_fn(cfg)
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
    assignment: dict | None,
) -> dict[str, torch.Tensor]:
    """Call every loss callable, in order, and merge their terms; a term produced twice is an error."""
    terms: dict[str, torch.Tensor] = {}
    for name, fn in loss_fns.items():
        for k, v in fn(outputs, batch, teacher_outputs, assignment=assignment).items():
            if k in terms:
                raise BopkdError(f"loss term {k!r} is produced twice (by {name!r} and before); rename it")
            terms[k] = v
    return terms
