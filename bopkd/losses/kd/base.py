"""Common base of the distillation methods: ``method(student_out, batch, teacher_out, assignment) -> terms``.

``assignment`` is the task loss's positive cells (:func:`bopkd.losses.targets.assign_targets`), passed by
the trainer so that the task and distillation losses use the same sampled positives.

A method is an :class:`torch.nn.Module` so that its own parameters (FKD's adapters and non-local
blocks) can join the optimiser and the checkpoint. ``forward`` returns a dict of named, already
weighted scalar terms (``kd_*``) that the trainer adds to the task loss and logs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class KDMethod(nn.Module):
    """Base class.

    A subclass registers itself with :func:`bopkd.losses.kd.registry.register_kd`, which sets ``name``.

    Attributes:
        name: the registry name (``none``, ``pred``, ``fkd``, ``ot``, ``fkd+ot``).
        family: the pose family whose outputs it reads (``"sparse"`` or ``"dense"``), set by ``register_kd``.
        cfg: the method's typed config.
        needs_teacher: whether ``forward`` needs the teacher's outputs.
        loss_cfg: the task loss's :class:`bopkd.losses.task.LossConfig` (positive-cell assignment and
            the per-level cell budget of inference); None = its defaults.
    """

    name: str = ""
    family: str = "sparse"
    needs_teacher: bool = True

    def __init__(self, cfg: Any, loss_cfg: Any = None):
        super().__init__()
        self.cfg = cfg
        self.loss_cfg = loss_cfg

    @classmethod
    def build(
        cls,
        cfg: Any,
        *,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        loss_cfg: Any = None,
    ) -> KDMethod:
        """The method for a run (what :func:`bopkd.losses.kd.registry.build_kd` calls): ``cls(cfg, loss_cfg)``.

        Methods with parameters sized from the networks (FKD's adapters) override this to read
        ``student`` and ``teacher``.
        """
        return cls(cfg, loss_cfg)

    def positives(self, student_out: dict, batch: dict, assignment: dict | None = None) -> dict:
        """The task loss's positive cells for this batch (:func:`bopkd.losses.targets.assign_targets`'s dict).

        ``assignment`` when given: the trainer passes the one its task loss uses, so that both losses see
        the same sampled positives. Otherwise sampled here with ``loss_cfg``.
        """
        if assignment is not None:
            return assignment
        from bopkd.losses.task import LossConfig, assign_targets

        cfg = self.loss_cfg if self.loss_cfg is not None else LossConfig()
        return assign_targets(student_out, batch, cfg)

    def reduction(self) -> str:
        """The task loss's reduction (``LossConfig.reduction``: ``"sum"`` by default)."""
        return str(getattr(self.loss_cfg, "reduction", "sum")) if self.loss_cfg is not None else "sum"

    def inference_budget(self) -> tuple[int, float]:
        """(num_cells, positive_lambda) of the inference cell selection, from ``loss_cfg``."""
        cfg = self.loss_cfg
        num = int(getattr(cfg, "positive_num", 10)) if cfg is not None else 10
        lam = float(getattr(cfg, "positive_lambda", 1.0)) if cfg is not None else 1.0
        return num, lam

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted ``kd_*`` terms of a batch.

        Args:
            student_out, teacher_out: :meth:`bopkd.models.posenet.PoseNet.forward` dicts (``teacher_out``
                None for methods that need no teacher).
            batch: the collated batch.
            assignment: the task loss's positive cells (:func:`bopkd.losses.targets.assign_targets`), shared
                with the task loss by the trainer; None: sampled by :meth:`positives`.
        """
        raise NotImplementedError


def zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to ``t``'s graph (so backward works even when a term has nothing to do)."""
    return t.sum() * 0.0


def require_teacher(name: str, teacher_out: dict | None) -> dict:
    from bopkd.errors import BopkdError

    if teacher_out is None:
        raise BopkdError(
            f"distillation method {name!r} needs a teacher: pass --teacher CHECKPOINT (or use --kd none)"
        )
    return teacher_out
