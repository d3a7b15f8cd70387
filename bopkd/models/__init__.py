"""Pose networks: backbones, FPN, head, the PoseNet itself, decoding, pose prediction, profiling.

See ``README_CONTRACT.md`` in this folder for the tensor contract shared with training and distillation.
"""

from bopkd.models.decode import Detections, decode
from bopkd.models.posenet import PRESETS, ModelConfig, PoseNet, build_model
from bopkd.models.predict import PoseEstimate, predict_poses

__all__ = [
    "PRESETS",
    "Detections",
    "ModelConfig",
    "PoseEstimate",
    "PoseNet",
    "build_model",
    "decode",
    "predict_poses",
]
