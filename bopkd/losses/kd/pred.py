"""Prediction-to-prediction distillation, the naive baseline of Guo et al. (CVPR 2023).

Guo, Hu, Alvarez, Salzmann, "Knowledge Distillation for 6D Pose Estimation by Aligning Distributions
of Local Predictions", CVPR 2023: the straightforward way to distil a keypoint network is to make each
of the student's local predictions regress the teacher's prediction at the same place, instead of
aligning their distributions (Sec. 1 and 3 contrast this "prediction-to-prediction" supervision with
their OT loss). Here, at every positive cell of the task loss (the cells where the student's keypoints
are supervised, :func:`bopkd.losses.task.assign_targets`), the student's 8 keypoints of the instance's
class regress the teacher's 8 keypoints at the same cell, weighted by the teacher's confidence there:

    L = sum_p  s_t(p) * mean_{k, xy} smoothL1(u_s(p, k) - u_t(p, k); beta)      (reduction "sum")

with u the keypoints in original-image pixels divided by the original width and height (the
normalisation of the OT loss, :mod:`~bopkd.losses.kd.ot_kd`), ``s_t(p)`` the teacher's sigmoid score of
the instance's class at cell p (detached), ``beta`` 0.01 (about 6 px on a 640-px-wide image) and P the
number of positive cells that have a teacher counterpart. The term follows the task loss's reduction
(:mod:`bopkd.losses.task`): summed over the cells like the keypoint term ``loss_kpt`` under ``"sum"``
(the reference code's reduction), divided by P under ``"mean_per_positive"``, so that its ratio to
``loss_kpt`` is the same in both. Student and teacher cells are matched on
pyramid levels with the same stride and grid (:func:`~bopkd.losses.kd.gather.grid_match`); positive
cells on a level the teacher lacks are skipped. Default weight 5, the OT weight of the reference code
(``--kd_weight 5``; the paper gives no weight for this baseline). Under either reduction the weight is
relative to ``loss_kpt`` (weight 1): 5 makes the teacher's keypoints, at the cells where the GT
supervises the student, a regression target five times as strong as the GT's own term per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod, require_teacher, zero_like_graph
from bopkd.losses.kd.gather import grid_match, normalise_points, orig_normalisation
from bopkd.losses.kd.registry import register_kd


@dataclass
class PredKDConfig:
    """Options of prediction-to-prediction distillation.

    Attributes:
        weight: weight of the term (``--kd-weight``), 5.
        beta: smooth-L1 transition, in normalised image units, 0.01.
        teacher_weighted: weight each cell by the teacher's score (False: all cells weigh 1).
    """

    weight: float = 5.0
    beta: float = 0.01
    teacher_weighted: bool = True

    def validate(self, source: str = "the kd config") -> PredKDConfig:
        if not self.weight >= 0:
            raise BopkdError(f"{source}: kd weight {self.weight} must be >= 0")
        if not self.beta >= 0:
            raise BopkdError(f"{source}: pred beta {self.beta} must be >= 0")
        return self


@register_kd(
    "pred",
    config=PredKDConfig,
    summary="prediction-to-prediction: student keypoints regress the teacher's at the same cells",
    terms=("kd_pred",),
    weight_key=("weight",),
)
class PredKD(KDMethod):
    """``--kd pred``. Returns ``{"kd_pred": weight * loss}``."""

    def __init__(self, cfg: PredKDConfig | None = None, loss_cfg=None):
        super().__init__((cfg or PredKDConfig()).validate(), loss_cfg)
        self._match_cache: dict[tuple, torch.Tensor] = {}

    def _match(self, sa: dict, ta: dict) -> torch.Tensor:
        key = (
            tuple(sa["strides"]),
            tuple(tuple(x) for x in sa["shapes"]),
            tuple(ta["strides"]),
            tuple(tuple(x) for x in ta["shapes"]),
            str(sa["centers"].device),
        )
        m = self._match_cache.get(key)
        if m is None:
            m = self._match_cache[key] = grid_match(sa, ta)
        return m

    def forward(
        self,
        student_out: dict,
        batch: dict,
        teacher_out: dict | None = None,
        assignment: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg: PredKDConfig = self.cfg
        t = require_teacher(self.name, teacher_out)
        kpts = student_out["kpts"].float()  # float32 even under autocast
        device = kpts.device
        asg = self.positives(student_out, batch, assignment)
        pb, pc, pcls = (asg[k].to(device) for k in ("pos_batch", "pos_cell", "pos_cls"))
        tcell = self._match(student_out["anchors"], t["anchors"])[pc]
        keep = tcell >= 0
        pb, pc, pcls, tcell = pb[keep], pc[keep], pcls[keep], tcell[keep]
        P = int(pb.numel())
        if P == 0:
            return {"kd_pred": zero_like_graph(kpts)}
        M = orig_normalisation(batch, device, kpts.dtype)
        us = normalise_points(kpts[pb, pc, pcls], pb, M)
        ut = normalise_points(t["kpts"].detach()[pb, tcell, pcls].to(kpts.dtype), pb, M)
        per_cell = F.smooth_l1_loss(us, ut, beta=cfg.beta, reduction="none").mean(dim=(1, 2))
        if cfg.teacher_weighted:
            w = torch.sigmoid(t["cls_logits"].detach()[pb, tcell, pcls].float())
            per_cell = per_cell * w
        norm = 1.0 if self.reduction() == "sum" else float(P)
        return {"kd_pred": cfg.weight * per_cell.sum() / norm}
