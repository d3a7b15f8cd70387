"""Pose networks: backbones, FPN, head, the PoseNet itself, decoding, profiling.

Poses from the network outputs (decoding + PnP) are in :mod:`bopkd.infer.poses`.

See ``README_CONTRACT.md`` in this folder for the tensor contract shared with training and distillation.
"""

from bopkd.models.backbones import BACKBONES
from bopkd.models.decode import Detections, decode
from bopkd.models.posenet import ModelConfig, PoseNet, build_model

__all__ = [
    "BACKBONES",
    "Detections",
    "ModelConfig",
    "PoseNet",
    "build_model",
    "decode",
]
