"""Dense ``fkd+ot``: dense FKD on the encoder maps and the dense OT distillation of the code distributions, added.

As the sparse ``fkd+ot`` (:mod:`bopkd.losses.kd.combined`; Guo et al., CVPR 2023, combine their OT loss with
Zhang & Ma's feature distillation): the terms of :class:`~bopkd.losses.kd.dense_fkd.DenseFKD` (``kd_fkd_*``)
and :class:`~bopkd.losses.kd.dense_ot.DenseOTKD` (``kd_ot``) side by side, each with its own weights;
``--kd-weight`` sets the OT weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bopkd.losses.kd.combined import CombinedKD
from bopkd.losses.kd.dense_fkd import DenseFKD, DenseFKDConfig, encoder_channels
from bopkd.losses.kd.dense_ot import DenseOTKD, DenseOTKDConfig
from bopkd.losses.kd.registry import register_kd


@dataclass
class DenseFKDOTConfig:
    """Options of dense ``fkd+ot``: one config per component."""

    fkd: DenseFKDConfig = field(default_factory=DenseFKDConfig)
    ot: DenseOTKDConfig = field(default_factory=DenseOTKDConfig)

    def validate(self, source: str = "the kd config") -> DenseFKDOTConfig:
        self.fkd.validate(source)
        self.ot.validate(source)
        return self


@register_kd(
    "fkd+ot",
    family="dense",
    config=DenseFKDOTConfig,
    summary="dense fkd and dense ot added (--kd-weight sets the ot weight)",
    terms=("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl", "kd_ot"),
    weight_key=("ot", "weight"),
    former_defaults={"ot.position": False},
)
class DenseFKDOT(CombinedKD):
    """Sum of :class:`DenseFKD` and :class:`DenseOTKD` (terms kept apart)."""

    config_type = DenseFKDOTConfig

    @classmethod
    def build(cls, cfg: DenseFKDOTConfig, *, student=None, teacher=None, loss_cfg=None) -> DenseFKDOT:
        """FKD's adapters sized from the encoder channels of ``student`` and ``teacher`` (both needed)."""
        return cls(cfg, encoder_channels(student), encoder_channels(teacher), loss_cfg)

    def parts(
        self, cfg: DenseFKDOTConfig, student_channels, teacher_channels, loss_cfg
    ) -> tuple[DenseFKD, DenseOTKD]:
        return DenseFKD(cfg.fkd, student_channels, teacher_channels, loss_cfg), DenseOTKD(cfg.ot, loss_cfg)
