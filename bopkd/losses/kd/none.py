"""``--kd none``: direct training of the student, the baseline every distillation method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.registry import register_kd


@dataclass
class NoKDConfig:
    """``none`` has no options."""

    def validate(self, source: str = "the kd config") -> NoKDConfig:
        return self


@register_kd(
    "none",
    config=NoKDConfig,
    summary="direct training of the student (no teacher)",
    terms=(),
    weight_key=None,
)
class NoKD(KDMethod):
    """Direct training of the student; no terms, no teacher."""

    needs_teacher = False

    def __init__(self, cfg: NoKDConfig | None = None, loss_cfg=None):
        super().__init__(cfg or NoKDConfig(), loss_cfg)

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        return {}
