"""The pose network's task loss: focal loss on the scores + WDR object-space keypoint loss.

Reductions (``LossConfig.reduction``):

* ``"sum"`` (default), the reduction of WDR (Hu et al., CVPR 2021) and of Guo et al.'s code
  (GUOShuxuan/kd-6d-pose-adlp: ``losses/loss.py``, ``SigmoidFocalLoss.forward`` returns ``loss.sum()``;
  ``KDObjectSpaceLoss`` returns ``losses.sum()`` over the positive cells; ``train_kd.py`` adds
  ``0.1 * cls + 1 * reg + kd_weight * kd``, ``configs/ape.yaml``: ``LOSS_WEIGHT_CLS 0.1``,
  ``LOSS_WEIGHT_REG 1``):

  - ``loss_cls = weight_cls * sum over non-ignored cells and classes of the focal loss``
  - ``loss_kpt = weight_kpt * sum over positive cells of the cell's WDR loss`` (each cell the mean over
    its 8 keypoints x 3 coordinates)

  Both grow with the batch and with the number of positive cells P, while the distillation terms of
  Guo et al. are averaged over images (:mod:`bopkd.losses.kd.ot_kd`): a distillation weight means what
  it means in the paper only with this reduction.
* ``"mean_per_positive"``: both sums divided by P (at least 1), the normalisation of RetinaNet/FCOS.
  It keeps the cls/kpt ratio but makes every image-averaged distillation term P times stronger
  relative to the task than the same weight in the paper (an ablation, not the paper's setting).

With no positive at all, ``loss_kpt`` is a zero that still depends on the keypoints (so every
parameter gets a gradient).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch

from bopkd.errors import BopkdError
from bopkd.losses.focal import focal_loss
from bopkd.losses.targets import assign_targets
from bopkd.losses.wdr import wdr_keypoint_loss

#: Reductions of the task terms (see the module docstring).
REDUCTIONS = ("sum", "mean_per_positive")


def task_normaliser(reduction: str, num_pos: int) -> float:
    """The divisor of the summed task terms: 1 for ``"sum"``, ``max(P, 1)`` for ``"mean_per_positive"``."""
    return 1.0 if reduction == "sum" else float(max(int(num_pos), 1))


@dataclass
class LossConfig:
    """Weights and hyper-parameters of :class:`PoseLoss` (defaults: the papers' code).

    Attributes:
        weight_cls, weight_kpt: loss weights (0.1 and 1.0).
        focal_alpha, focal_gamma: focal loss parameters (0.25, 2).
        positive_num: positive cells per object, spread over levels (10).
        positive_lambda: sharpness of the level distribution (1.0).
        kpt_beta: smooth-L1 transition of the keypoint loss, in object diameters (0.02).
        reduction: ``"sum"`` (the reference code's sums over cells) or ``"mean_per_positive"`` (both
            sums divided by the number of positive cells; see the module docstring).
    """

    weight_cls: float = 0.1
    weight_kpt: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    positive_num: int = 10
    positive_lambda: float = 1.0
    kpt_beta: float = 0.02
    reduction: Literal["sum", "mean_per_positive"] = "sum"

    def validate(self, source: str = "the loss config") -> LossConfig:
        if self.reduction not in REDUCTIONS:
            raise BopkdError(
                f"{source}: loss.reduction = {self.reduction!r}: use one of {', '.join(REDUCTIONS)}"
            )
        for f in fields(self):
            if f.name == "reduction":
                continue
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise BopkdError(f"{source}: loss.{f.name} = {v!r} must be a number >= 0")
        if self.positive_num < 1 or int(self.positive_num) != self.positive_num:
            raise BopkdError(f"{source}: loss.positive_num = {self.positive_num!r} must be an integer >= 1")
        if self.kpt_beta <= 0:
            raise BopkdError(f"{source}: loss.kpt_beta = {self.kpt_beta} must be > 0")
        if not 0 <= self.focal_alpha <= 1:
            raise BopkdError(f"{source}: loss.focal_alpha = {self.focal_alpha} must be in [0, 1]")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def gather_positive_targets(batch: dict, assignment: dict, device: torch.device) -> dict:
    """GT of every positive cell: ``corners_cam`` (P, 8, 3) mm, ``K`` (P, 3, 3), ``diameter`` (P,) mm."""
    pb, po = assignment["pos_batch"], assignment["pos_obj"]
    corners, diam = [], []
    for b, objs in enumerate(batch["objects"]):
        sel = po[pb == b]
        if sel.numel() == 0:
            continue
        sel_c = sel.to(objs["R"].device)
        R = objs["R"][sel_c].to(device, torch.float32)
        t = objs["t"][sel_c].to(device, torch.float32)
        c3 = objs["corners_3d"][sel_c].to(device, torch.float32)
        corners.append(c3 @ R.transpose(1, 2) + t.unsqueeze(1))
        diam.append(objs["diameter"][sel_c].to(device, torch.float32))
    K = batch["K"].to(device, torch.float32)[pb.to(device)]
    if corners:
        return {"corners_cam": torch.cat(corners), "K": K, "diameter": torch.cat(diam)}
    z = torch.zeros(0, device=device)
    return {"corners_cam": z.view(0, 8, 3), "K": K, "diameter": z}


class PoseLoss:
    """``PoseLoss(cfg)(outputs, batch) -> {"loss_cls", "loss_kpt"}`` (weighted scalars).

    ``outputs`` is :meth:`bopkd.models.posenet.PoseNet.forward`'s dict; ``batch`` the collated batch
    (see ``bopkd/models/README_CONTRACT.md``). The positive cells are ``assignment`` when given (the
    trainer samples them once, :func:`~bopkd.losses.targets.assign_targets`, and passes the same dict to
    the distillation loss), else sampled here with ``generator``.
    """

    def __init__(self, cfg: LossConfig | None = None):
        self.cfg = (cfg or LossConfig()).validate()

    def __call__(
        self,
        outputs: dict,
        batch: dict,
        assignment: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if assignment is None:
            assignment = assign_targets(outputs, batch, cfg, generator)
        logits, kpts = outputs["cls_logits"], outputs["kpts"]
        # computed in float32 even under autocast (bf16/fp16 outputs): the ray projection divides
        # millimetre-scale products and the focal loss takes logs of small probabilities
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._compute(logits.float(), kpts, batch, assignment)

    def _compute(
        self, logits: torch.Tensor, kpts: torch.Tensor, batch: dict, assignment: dict
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        norm = task_normaliser(cfg.reduction, assignment["num_pos"])
        loss_cls = focal_loss(logits, assignment["labels"], cfg.focal_alpha, cfg.focal_gamma) / norm
        if assignment["num_pos"] > 0:
            pb, pc, pk = assignment["pos_batch"], assignment["pos_cell"], assignment["pos_cls"]
            pred = kpts[pb, pc, pk].float()  # (P, 8, 2)
            gt = gather_positive_targets(batch, assignment, kpts.device)
            per_cell = wdr_keypoint_loss(pred, gt["corners_cam"], gt["K"], gt["diameter"], cfg.kpt_beta)
            loss_kpt = per_cell.sum() / norm
        else:
            loss_kpt = kpts.float().sum() * 0.0
        return {"loss_cls": cfg.weight_cls * loss_cls, "loss_kpt": cfg.weight_kpt * loss_kpt}
