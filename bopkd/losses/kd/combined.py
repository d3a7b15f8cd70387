"""``--kd fkd+ot``: FKD's feature distillation and the OT distillation of local predictions, added.

Guo et al. (CVPR 2023) combine their OT loss with feature distillation (Zhang & Ma, ICLR 2021) to show
the two are complementary. The terms of both methods are returned side by side (``kd_fkd_*`` and
``kd_ot``), each with its own weights (:class:`~bopkd.losses.kd.fkd.FKDConfig`,
:class:`~bopkd.losses.kd.ot_kd.OTKDConfig`); ``--kd-weight`` sets the OT weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.fkd import FKD, FKDConfig, network_channels
from bopkd.losses.kd.ot_kd import OTKD, OTKDConfig
from bopkd.losses.kd.registry import register_kd


@dataclass
class FKDOTConfig:
    """Options of ``fkd+ot``: one config per component."""

    fkd: FKDConfig = field(default_factory=FKDConfig)
    ot: OTKDConfig = field(default_factory=OTKDConfig)

    def validate(self, source: str = "the kd config") -> FKDOTConfig:
        self.fkd.validate(source)
        self.ot.validate(source)
        return self


class CombinedKD(KDMethod):
    """Sum of a feature distillation ``fkd`` and an OT distillation ``ot`` (terms kept apart).

    A subclass names its config (``config_type``, with ``fkd`` and ``ot`` parts) and builds the two in
    :meth:`parts`.
    """

    config_type: type

    def __init__(self, cfg=None, student_channels=None, teacher_channels=None, loss_cfg=None):
        cfg = (cfg or self.config_type()).validate()
        super().__init__(cfg, loss_cfg)
        self.fkd, self.ot = self.parts(cfg, student_channels, teacher_channels, loss_cfg)

    def parts(self, cfg, student_channels, teacher_channels, loss_cfg) -> tuple[KDMethod, KDMethod]:
        """The ``(fkd, ot)`` modules of ``cfg``."""
        raise NotImplementedError

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        terms = dict(self.fkd(student_out, batch, teacher_out, assignment=assignment))
        terms.update(self.ot(student_out, batch, teacher_out, assignment=assignment))
        return terms


@register_kd(
    "fkd+ot",
    config=FKDOTConfig,
    summary="fkd and ot added (--kd-weight sets the ot weight)",
    terms=("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl", "kd_ot"),
    weight_key=("ot", "weight"),
)
class FKDOT(CombinedKD):
    """Sum of :class:`~bopkd.losses.kd.fkd.FKD` and :class:`~bopkd.losses.kd.ot_kd.OTKD` (terms kept apart)."""

    config_type = FKDOTConfig

    @classmethod
    def build(cls, cfg: FKDOTConfig, *, student=None, teacher=None, loss_cfg=None) -> FKDOT:
        """FKD's adapters sized from the feature channels of ``student`` and ``teacher`` (both needed)."""
        w = cfg.fkd.features
        return cls(cfg, network_channels(student, w), network_channels(teacher, w), loss_cfg)

    def parts(self, cfg: FKDOTConfig, student_channels, teacher_channels, loss_cfg) -> tuple[FKD, OTKD]:
        return FKD(cfg.fkd, student_channels, teacher_channels, loss_cfg), OTKD(cfg.ot, loss_cfg)
