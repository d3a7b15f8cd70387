"""Backbones: any timm model with ``features_only=True``, plus the DarkNet presets of the paper.

Named backbones (:data:`BACKBONES`):

* ``darknet53``: the teacher of Guo et al. (CVPR 2023) and the backbone of WDR (Hu et al., CVPR 2021).
  timm's ``darknet53`` is the same network (40.58 M parameters without the classifier, as
  pytorchcv's ``darknet53`` used by both papers), so it is taken from timm.
* ``darknet-tiny`` and ``darknet-tiny-h``: the students of Guo et al., the DarkNet-tiny of pytorchcv
  (``backbone/darknet.py`` of GUOShuxuan/kd-6d-pose-adlp) and its half-width version. timm has no
  such network, so it is defined here (:class:`DarkNetTiny`): 3x3 / 1x1 conv-norm-LeakyReLU(0.1)
  units in 5 stages with a 2x2 max-pool after each of the first four, features taken after stages
  1, 2, 3 and 5 (strides 2, 4, 8, 16), as that code does.
* ``tiny-cpu``: a very small DarkNet-tiny-like net (few channels) for CPU tests and demos.

Any other name is passed to ``timm.create_model(name, features_only=True)``.

Normalisation (``norm``): "batch" keeps BatchNorm (as the papers), "group" turns every BatchNorm into
GroupNorm (robust to the small batches of CPU training: a previous trial found train/eval BatchNorm
statistics broke small-batch overfitting), "frozen_batch" freezes BatchNorm statistics and affine
parameters (for pretrained weights), "auto" = "frozen_batch" when pretrained else "group".

Pretrained weights (``pretrained``): timm's (``True``; timm models only, downloaded or from timm's cache) or
a local file (a path; every backbone, see :mod:`bopkd.models.pretrained`). The DarkNet-tiny presets have no
weights to download: they take a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bopkd.errors import BopkdError

NORMS = ("auto", "batch", "group", "frozen_batch")


@dataclass(frozen=True)
class Preset:
    """Defaults attached to a backbone name: FPN width and number of head convs (Guo et al.'s code:
    OUT_CHANNEL 256 and N_CONV 4, 128 channels for darknet-tiny-h)."""

    fpn_channels: int
    head_convs: int
    darknet_stages: tuple[tuple[int, ...], ...] | None = None  # None: a timm model
    timm_name: str | None = None


# Stage widths of pytorchcv's DarkNet "tiny" and "tiny-h" (odd units 1x1, even 3x3 in multi-unit stages).
BACKBONES: dict[str, Preset] = {
    "darknet53": Preset(256, 4, timm_name="darknet53"),
    "darknet-tiny": Preset(
        256, 4, ((16,), (32,), (16, 128, 16, 128), (32, 256, 32, 256), (64, 512, 64, 512, 128))
    ),
    "darknet-tiny-h": Preset(
        128, 4, ((8,), (16,), (8, 64, 8, 64), (16, 128, 16, 128), (32, 256, 32, 256, 64))
    ),
    "tiny-cpu": Preset(32, 2, ((8,), (16,), (16, 32), (32, 64), (64,))),
}
TIMM_DEFAULT = Preset(256, 4)


def preset_for(name: str) -> Preset:
    """The preset of a backbone name (timm names get the darknet53 defaults)."""
    return BACKBONES.get(name, TIMM_DEFAULT)


def gn_groups(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """Number of GroupNorm groups for a width: the largest power of two <= max_groups dividing it with at
    least ``min_per_group`` channels per group (32 groups for 128+ channels, as Wu & He 2018); 1 if none."""
    g = max_groups
    while g > 1 and (channels % g or channels // g < min_per_group):
        g //= 2
    return g


def make_group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(gn_groups(channels), channels)


def convert_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace the BatchNorm layers of ``module`` according to ``norm`` ("batch", "group", "frozen_batch").

    timm's fused ``BatchNormAct2d`` becomes ``Sequential(GroupNorm, drop, act)`` so its activation stays.
    """
    if norm == "batch":
        return module
    if norm == "frozen_batch":
        from timm.layers import freeze_batch_norm_2d

        return freeze_batch_norm_2d(module)
    if norm != "group":
        raise BopkdError(f"unknown backbone norm {norm!r}: use one of {', '.join(NORMS)}")
    from timm.layers import BatchNormAct2d

    def _swap(m: nn.Module) -> nn.Module:
        if isinstance(m, BatchNormAct2d):
            return nn.Sequential(make_group_norm(m.num_features), m.drop, m.act)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return make_group_norm(m.num_features)
        for name, child in list(m.named_children()):
            new = _swap(child)
            if new is not child:
                setattr(m, name, new)
        return m

    return _swap(module)


def _conv_unit(cin: int, cout: int, k: int) -> nn.Sequential:
    """conv (no bias) + BatchNorm + LeakyReLU(0.1), pytorchcv's ``conv1x1_block`` / ``conv3x3_block``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class DarkNetTiny(nn.Module):
    """DarkNet-tiny style feature extractor (pytorchcv ``DarkNet`` with ``odd_pointwise=True``).

    In a stage with several units, units 1, 3, 5 are 1x1 convs and units 2, 4 are 3x3 convs; a
    single-unit stage is a 3x3 conv. A 2x2/2 max-pool ends every stage but the last.

    forward(x (B, 3, H, W)) -> [f1 (stride 2), f2 (stride 4), f3 (stride 8), f5 (stride 16)]
    (stage 4 feeds stage 5, whose output is returned in its place, as in the reference code).
    ``feature_info`` attributes: ``channels`` and ``reductions`` lists.
    """

    def __init__(self, stages: tuple[tuple[int, ...], ...], in_channels: int = 3):
        super().__init__()
        self.stages = nn.ModuleList()
        c = in_channels
        for i, widths in enumerate(stages):
            layers = []
            for j, w in enumerate(widths):
                pointwise = len(widths) > 1 and j % 2 == 0
                layers.append(_conv_unit(c, w, 1 if pointwise else 3))
                c = w
            if i != len(stages) - 1:
                layers.append(nn.MaxPool2d(2, 2))
            self.stages.append(nn.Sequential(*layers))
        outs = [0, 1, 2, len(stages) - 1]
        self._out = set(outs)
        self.channels = [stages[i][-1] for i in outs]
        self.reductions = [2 ** min(i + 1, len(stages) - 1) for i in outs]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)  # as pytorchcv's DarkNet._init_params

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self._out:
                feats.append(x)
        return feats


class Backbone(nn.Module):
    """A feature extractor returning the maps at pyramid levels ``levels`` (stride 2**level).

    Attributes:
        body: the wrapped network (timm ``features_only`` model or :class:`DarkNetTiny`).
        levels: pyramid levels returned, ascending and contiguous.
        channels: channels of each returned map.
        reductions: stride of each returned map, px.
    """

    def __init__(
        self, body: nn.Module, channels: list[int], reductions: list[int], wanted_levels: list[int], name: str
    ):
        super().__init__()
        self.body = body
        by_level: dict[int, int] = {}
        for i, r in enumerate(reductions):
            lv = int(round(math.log2(r)))
            if 2**lv == r:
                by_level[lv] = i  # the last map with a given stride wins
        lo = min(wanted_levels)
        if lo not in by_level:
            avail = ", ".join(f"P{lv}" for lv in sorted(by_level))
            raise BopkdError(
                f"backbone {name!r} has no feature map at stride {2**lo} (level {lo}); it offers {avail}: "
                f"choose levels starting at one of those"
            )
        levels = [lv for lv in range(lo, max(wanted_levels) + 1) if lv in by_level]
        # keep the contiguous run starting at ``lo``
        run = []
        for lv in levels:
            if run and lv != run[-1] + 1:
                break
            run.append(lv)
        self.levels = run
        self._idx = [by_level[lv] for lv in run]
        self.channels = [int(channels[i]) for i in self._idx]
        self.reductions = [2**lv for lv in run]
        self.name = name

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self._idx]


def resolve_norm(norm: str, pretrained: bool | str) -> str:
    """The normalisation ``norm`` stands for: "auto" is "frozen_batch" with pretrained weights (timm's or a
    file), else "group"."""
    if norm == "auto":
        return "frozen_batch" if pretrained else "group"
    return norm


def build_backbone(
    name: str, levels: list[int], pretrained: bool | str = False, norm: str = "auto"
) -> Backbone:
    """Build a backbone by preset or timm name, returning maps for the levels it has in ``levels``.

    Args:
        pretrained: False (initial weights), True (timm's pretrained weights, downloaded or cached), or the
            path of a local weights file (:mod:`bopkd.models.pretrained`), loaded before the norm conversion.

    Raises:
        BopkdError: unknown name, pretrained weights unavailable, or no map at the lowest level.
    """
    if norm not in NORMS:
        raise BopkdError(f"unknown backbone norm {norm!r}: use one of {', '.join(NORMS)}")
    norm = resolve_norm(norm, pretrained)
    weights_file = pretrained if isinstance(pretrained, str) else None
    preset = BACKBONES.get(name)
    if preset is not None and preset.darknet_stages is not None:
        if pretrained is True:
            raise BopkdError(
                f"backbone {name!r} has no pretrained weights to download (bopkd defines it; timm has none): set "
                "model.pretrained to a local weights file (a state dict of the backbone, or pytorchcv's "
                "darknet_tiny ImageNet file for darknet-tiny) or to false"
            )
        body = DarkNetTiny(preset.darknet_stages)
        channels, reductions = body.channels, body.reductions
    else:
        body = _timm_body(name, preset, pretrained is True)
        channels, reductions = body.feature_info.channels(), body.feature_info.reduction()
    if weights_file is not None:
        from bopkd.models.pretrained import load_backbone_weights

        load_backbone_weights(body, weights_file, name)
    body = convert_norm(body, norm)
    return Backbone(body, list(channels), list(reductions), list(levels), name)


def _timm_body(name: str, preset: Preset | None, pretrained: bool) -> nn.Module:
    """``timm.create_model(name, features_only=True, pretrained=pretrained)`` with one-line errors."""
    import timm

    timm_name = preset.timm_name if preset is not None else name
    if not timm.is_model(timm_name):
        raise BopkdError(
            f"unknown backbone {name!r}: use a preset ({', '.join(BACKBONES)}) or a timm model name "
            f'(python -c "import timm; print(timm.list_models())")'
        )
    try:
        return timm.create_model(timm_name, features_only=True, pretrained=pretrained)
    except Exception as e:  # timm raises many kinds (no weights offline, no features_only support)
        what = "download its pretrained weights" if pretrained else "build it with features_only=True"
        raise BopkdError(
            f"backbone {name!r}: timm could not {what} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "set model.pretrained to a local weights file or false, or use another backbone"
        ) from e
