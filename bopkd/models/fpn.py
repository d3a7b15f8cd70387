"""Feature pyramid with extra top levels (RetinaNet / FCOS style), as in WDR's ``model.py``.

Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017; Lin et al., "Focal Loss for
Dense Object Detection" (RetinaNet), ICCV 2017 for P6/P7. As in WDR (Hu et al., CVPR 2021) and
GUOShuxuan/kd-6d-pose-adlp: for every backbone map C_l, a 1x1 lateral conv; top-down, the coarser
inner map is upsampled (nearest) and added; a 3x3 conv gives P_l. Levels above the backbone's top
level are made by 3x3 stride-2 convs, the first from the top P map, the next ones after a ReLU
(``FPNTopP6P7`` with ``use_p5=True``). Convs are initialised Kaiming-uniform (a=1) with zero bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """Feature pyramid.

    Args:
        in_channels: channels of the backbone maps, one per backbone level.
        backbone_levels: the pyramid levels of those maps (ascending, contiguous).
        levels: the output levels (ascending, contiguous, starting at ``backbone_levels[0]``).
        channels: width F of every output map.

    forward(feats: list of (B, C_l, H_l, W_l)) -> list of (B, F, H_l, W_l), one per output level; a
    level above the backbone's has ``H = ceil(H_prev / 2)``.
    """

    def __init__(self, in_channels: list[int], backbone_levels: list[int], levels: list[int], channels: int):
        super().__init__()
        if levels[0] != backbone_levels[0]:
            raise ValueError(
                f"the first pyramid level {levels[0]} must be the first backbone level {backbone_levels[0]}"
            )
        self.backbone_levels = list(backbone_levels)
        self.levels = list(levels)
        n_in = len([lv for lv in backbone_levels if lv <= levels[-1]])
        self.n_in = n_in
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels[:n_in])
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_in))
        n_extra = len(levels) - n_in
        self.extra = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(n_extra)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = feats[: self.n_in]
        inner = self.lateral[-1](feats[-1])
        outs = [self.output[-1](inner)]
        for i in range(self.n_in - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            inner = lat + F.interpolate(inner, size=lat.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](inner))
        x = outs[-1]
        for j, conv in enumerate(self.extra):
            x = conv(x if j == 0 else F.relu(x))
            outs.append(x)
        return outs
