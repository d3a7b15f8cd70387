"""Losses: the pose task loss (focal + WDR keypoint loss, target assignment) and distillation losses."""

from bopkd.losses.focal import focal_loss
from bopkd.losses.targets import assign_targets
from bopkd.losses.task import LossConfig, PoseLoss
from bopkd.losses.wdr import wdr_keypoint_loss

__all__ = ["LossConfig", "PoseLoss", "assign_targets", "focal_loss", "wdr_keypoint_loss"]
