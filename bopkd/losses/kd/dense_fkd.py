"""Dense ``fkd``: Zhang & Ma's feature distillation (ICLR 2021) on the encoder maps of dense networks.

The method of :mod:`bopkd.losses.kd.fkd` (attention-guided feature loss, attention transfer loss and
non-local loss, Zhang & Ma Sec. 3.1-3.2, weights 7e-5 / 4e-3 / 7e-5 of their code), applied to the
``features`` of :class:`bopkd.models.dense.DensePoseNet` in place of the FPN levels: the encoder maps at
strides 2, 4, 8, 16, 32 (px of the input crop; 2..16 for DarkNet-tiny), matched by stride between the student
and the teacher. A map's stride is the input side ``2 S`` (S the side of the stride-2 output maps) divided by
its side. The 1x1 adapters and non-local blocks are sized from the two encoders' channels (``encoder.channels``
per ``encoder.reductions``), and are parameters to optimise.

Units: Zhang & Ma's weights are relative to detection losses normalised per positive sample; ZebraPose's task
terms (:class:`bopkd.losses.zebra.ZebraLoss`) are per-pixel means, so the terms are not multiplied by a
count of positives as the sparse method does under its ``"sum"`` reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bopkd.errors import BopkdError
from bopkd.losses.kd.fkd import FKD
from bopkd.losses.kd.registry import register_kd


@dataclass
class DenseFKDConfig:
    """Options of dense FKD (defaults: Zhang & Ma's code, as :class:`~bopkd.losses.kd.fkd.FKDConfig`).

    Attributes:
        weight: multiplier of the three terms (``--kd-weight``), 1.
        feat_weight, att_weight, nonlocal_weight: alpha 7e-5, beta 4e-3, gamma 7e-5.
        temperature: T of the attention softmax, 0.5.
        channel_mask: multiply the feature loss by the channel mask too (the paper's equation), True.
        nonlocal_reduction: non-local inner width = channels / this, 2.
        nonlocal_pool: max-pool factor of keys/values; None = max(1, 32 // stride) per level.
        strides: encoder strides (px) to distil; None = every stride both encoders have.
    """

    weight: float = 1.0
    feat_weight: float = 7e-5
    att_weight: float = 4e-3
    nonlocal_weight: float = 7e-5
    temperature: float = 0.5
    channel_mask: bool = True
    nonlocal_reduction: int = 2
    nonlocal_pool: int | None = None
    strides: list[int] | None = None

    def validate(self, source: str = "the kd config") -> DenseFKDConfig:
        def bad(msg: str) -> BopkdError:
            return BopkdError(f"{source}: {msg}")

        for k in ("weight", "feat_weight", "att_weight", "nonlocal_weight"):
            if not getattr(self, k) >= 0:
                raise bad(f"dense fkd {k} = {getattr(self, k)} must be >= 0")
        if not self.temperature > 0:
            raise bad(f"dense fkd temperature = {self.temperature} must be > 0")
        if self.nonlocal_reduction < 1:
            raise bad(f"dense fkd nonlocal_reduction = {self.nonlocal_reduction} must be >= 1")
        if self.nonlocal_pool is not None and self.nonlocal_pool < 1:
            raise bad(f"dense fkd nonlocal_pool = {self.nonlocal_pool} must be >= 1 (or null for automatic)")
        if self.strides is not None and (not self.strides or any(int(s) < 1 for s in self.strides)):
            raise bad(
                f"dense fkd strides = {self.strides} must be a non-empty list of strides, e.g. [4, 8, 16]"
            )
        return self


def encoder_channels(model: nn.Module | None) -> dict[int, int]:
    """{stride: channels} of a dense network's encoder maps (``model.encoder.reductions``, ``.channels``)."""
    if model is None:
        raise BopkdError(
            "dense fkd needs both the student and the teacher model to size its adapters (pass --teacher CHECKPOINT)"
        )
    enc = getattr(model, "encoder", None)
    if enc is None or not hasattr(enc, "channels") or not hasattr(enc, "reductions"):
        raise BopkdError(
            f"dense fkd: {type(model).__name__} has no encoder with channels and reductions: use a dense network"
        )
    return {int(r): int(c) for r, c in zip(enc.reductions, enc.channels, strict=True)}


def dense_feature_strides(out: dict) -> list[int]:
    """Stride (px of the input crop) of each map of ``out["features"]``: input side 2 S over the map's side."""
    in_side = 2 * out["mask_logits"].shape[-1]
    return [2 ** round(math.log2(in_side / f.shape[-1])) for f in out["features"]]


@register_kd(
    "fkd",
    family="dense",
    config=DenseFKDConfig,
    summary="feature distillation of Zhang & Ma (ICLR 2021) on the dense networks' encoder maps",
    terms=("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"),
    weight_key=("weight",),
)
class DenseFKD(FKD):
    """Dense ``--kd fkd``. Returns ``{"kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"}`` (weighted)."""

    @classmethod
    def build(cls, cfg: DenseFKDConfig, *, student=None, teacher=None, loss_cfg=None) -> DenseFKD:
        """Adapters sized from the encoder channels of ``student`` and ``teacher`` (both needed)."""
        return cls(cfg, encoder_channels(student), encoder_channels(teacher), loss_cfg)

    def __init__(
        self,
        cfg: DenseFKDConfig | None = None,
        student_channels: dict[int, int] | None = None,
        teacher_channels: dict[int, int] | None = None,
        loss_cfg=None,
    ):
        cfg = (cfg or DenseFKDConfig()).validate()
        if cfg.strides is not None and student_channels and teacher_channels:
            keep = {int(s) for s in cfg.strides}
            student_channels = {s: c for s, c in student_channels.items() if s in keep}
            teacher_channels = {s: c for s, c in teacher_channels.items() if s in keep}
        super().__init__(cfg, student_channels, teacher_channels, loss_cfg)

    def task_units(self, student_out: dict, batch: dict, assignment: dict | None = None) -> float:
        """1: ZebraPose's task terms are per-pixel means (module docstring)."""
        return 1.0

    def level_maps(self, out: dict, who: str) -> tuple[list[int], list[torch.Tensor]]:
        """(strides, maps) of the encoder maps of ``out``, the ``who`` network's dense outputs."""
        if "features" not in out or "mask_logits" not in out:
            raise BopkdError(
                f"dense fkd: the {who}'s outputs lack 'features'/'mask_logits': use dense networks for both"
            )
        return dense_feature_strides(out), out["features"]
