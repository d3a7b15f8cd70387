"""Pose head shared over pyramid levels (WDR's ``PoseHead``; Hu et al., CVPR 2021).

Two towers of ``n_convs`` x (3x3 conv, GroupNorm, ReLU) on each FPN map: the classification tower
ends in a 3x3 conv with C outputs (per-class segmentation logits, one anchor per cell), the keypoint
tower in a 3x3 conv with 16 C outputs (per class, the x/y offsets of the 8 corners of the object's
3D bounding box), multiplied by a learned scalar per level (FCOS's ``Scale``). Initialisation as in
the reference code: conv weights N(0, 0.01), biases 0, and the classification bias set to
``-log((1 - prior) / prior)`` (RetinaNet, Lin et al. 2017) so every cell starts at score ``prior``.

GroupNorm, not BatchNorm, so train and eval mode compute the same thing (a previous trial found
BatchNorm's running statistics made eval-mode results collapse after small-batch training).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bopkd.models.backbones import make_group_norm


class Scale(nn.Module):
    """Multiply by one learned scalar (initialised to ``init``)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _tower(channels: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            make_group_norm(channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class PoseHead(nn.Module):
    """Shared head.

    Args:
        channels: FPN width F.
        num_classes: C, number of objects.
        n_convs: convs per tower.
        num_levels: number of pyramid levels (one learned scale each).
        prior_prob: initial foreground probability of every cell.

    forward(features: list of (B, F, H_l, W_l)) -> (logits, raw) lists per level with
    logits (B, C, H_l, W_l) and raw (B, 16 C, H_l, W_l) already multiplied by the level's scale;
    channel ``c*16 + k*2 + d`` is the offset of corner k, coordinate d (0: x, 1: y) of class c.
    """

    def __init__(
        self, channels: int, num_classes: int, n_convs: int, num_levels: int, prior_prob: float = 0.01
    ):
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _tower(channels, n_convs)
        self.kpt_tower = _tower(channels, n_convs)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.kpt_pred = nn.Conv2d(channels, num_classes * 16, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, raw = [], []
        for lv, f in enumerate(features):
            logits.append(self.cls_logits(self.cls_tower(f)))
            raw.append(self.scales[lv](self.kpt_pred(self.kpt_tower(f))))
        return logits, raw
