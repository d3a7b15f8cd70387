"""Dense ``pred``: prediction-to-prediction distillation of a dense network's mask and code probabilities.

The naive baseline that Guo et al. (CVPR 2023, Sec. 1 and 3) contrast with aligning distributions: each
local prediction of the student regresses the teacher's at the same place. For the ZebraPose-style outputs
(:class:`bopkd.models.dense.DensePoseNet`; Su et al., CVPR 2022) the teacher's probabilities replace the
ground truth in ZebraPose's two losses (``zebrapose/model/BinaryCodeNet.py``: ``MaskLoss``, an L1 on the mask
probability, and ``BinaryCodeLoss``, a BCE per code bit; ``train.py``: code weight 3). With p = sigmoid of
the student's logits, q = sigmoid of the teacher's (detached), over the B x S x S pixels:

* mask: ``L_mask = mean_{b,h,w} |p_m - q_m|``;
* code: ``L_code = sum_{b,h,w} T (1/n) sum_i KL(q_i || p_i) / max(sum_{b,h,w} T, 1)`` with
  ``T = [q_m > mask_threshold]`` the teacher's binarised mask (0.5, ZebraPose's binarisation) and
  ``KL(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p))`` the Bernoulli KL divergence, i.e. the BCE with
  the soft target q minus q's entropy (same gradient as that BCE; 0 when the student equals the teacher);
* ``kd_pred = weight * (mask_weight * L_mask + code_weight * L_code)``, code weight 3 and mask weight 1 as
  ZebraPose's ``binary_loss_weight = 3``.

Default weight 1: the teacher's maps are a target as strong as the ground truth's in the task loss
(:class:`bopkd.losses.zebra.ZebraLoss`, whose terms are the same kind of per-pixel means); the sparse
``pred``'s weight 5 is relative to a summed keypoint term and does not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.dense_common import checked_pair, dense_probs
from bopkd.losses.kd.registry import register_kd


@dataclass
class DensePredKDConfig:
    """Options of dense prediction-to-prediction distillation.

    Attributes:
        weight: weight of the term (``--kd-weight``), 1.
        mask_weight: factor of the mask L1, 1.
        code_weight: factor of the code KL, 3 (ZebraPose's ``binary_loss_weight``).
        mask_threshold: teacher mask probability above which a pixel's code is distilled, 0.5.
    """

    weight: float = 1.0
    mask_weight: float = 1.0
    code_weight: float = 3.0
    mask_threshold: float = 0.5

    def validate(self, source: str = "the kd config") -> DensePredKDConfig:
        for k in ("weight", "mask_weight", "code_weight"):
            if not getattr(self, k) >= 0:
                raise BopkdError(f"{source}: dense pred {k} = {getattr(self, k)} must be >= 0")
        if not 0 <= self.mask_threshold < 1:
            raise BopkdError(f"{source}: dense pred mask_threshold = {self.mask_threshold} must be in [0, 1)")
        return self


def bernoulli_kl(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(q || sigmoid(logits)) of Bernoulli variables: BCE(logits, q) minus the entropy of q."""
    ent = -(torch.special.xlogy(q, q) + torch.special.xlogy(1 - q, 1 - q))
    return F.binary_cross_entropy_with_logits(logits, q, reduction="none") - ent


@register_kd(
    "pred",
    family="dense",
    config=DensePredKDConfig,
    summary="prediction-to-prediction: student mask and code probabilities regress the teacher's per pixel",
    terms=("kd_pred",),
    weight_key=("weight",),
)
class DensePredKD(KDMethod):
    """Dense ``--kd pred``. Returns ``{"kd_pred": weight * (mask_weight L_mask + code_weight L_code)}``."""

    def __init__(self, cfg: DensePredKDConfig | None = None, loss_cfg=None):
        super().__init__((cfg or DensePredKDConfig()).validate(), loss_cfg)

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg: DensePredKDConfig = self.cfg
        t = checked_pair(self.name, student_out, teacher_out)
        pm = torch.sigmoid(student_out["mask_logits"].float())
        qm, qc = dense_probs(t, detach=True)
        l_mask = (pm - qm).abs().mean()
        inside = (qm > cfg.mask_threshold).float()  # (B, 1, S, S)
        kl = bernoulli_kl(student_out["code_logits"].float(), qc).mean(1, keepdim=True)
        l_code = (kl * inside).sum() / inside.sum().clamp_min(1.0)
        return {"kd_pred": cfg.weight * (cfg.mask_weight * l_mask + cfg.code_weight * l_code)}
