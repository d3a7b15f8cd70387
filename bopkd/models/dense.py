"""ZebraPose-style dense network: a zoom-in crop -> visible-mask logits and per-pixel surface-code bit logits.

The dense pose family of Su et al., "ZebraPose: Coarse to Fine Surface Encoding for 6DoF Object Pose
Estimation" (CVPR 2022, code suyz526/ZebraPose): for a 256x256 crop around one object the network predicts,
at 128x128 (stride 2), one visible-mask logit and ``bits`` binary-code logits per pixel (paper Sec. 3.3;
``model/BinaryCodeNet.py``, ``DeepLabV3.forward``: one output tensor of ``1 + bits`` channels split into the
mask and the code). The bits of a pixel, bit 0 the coarsest, name the surface patch of the object it shows.

What differs from ZebraPose's network (``model/resnet.py`` ``ResNet34_OS8`` + ``model/aspp.py`` ``ASPP``):

* encoder: bopkd's backbones (:func:`bopkd.models.backbones.build_backbone`: timm ``features_only`` bodies,
  ``DarkNetTiny``) at their plain strides 2..32, where ZebraPose dilates ResNet-34 to output stride 8 and puts
  an ASPP block (rates 6, 12, 18 and image pooling) on top;
* decoder: a U-Net path (bilinear x2 upsampling, concatenation with the encoder map of that stride, two
  3x3 conv-norm-ReLU) at every stride down to 2, where ZebraPose upsamples the ASPP output by two transposed
  convolutions (stride 8 -> 2) with skips from the stride-4 and stride-2 maps only;
* normalisation: GroupNorm in the decoder unless the backbone norm resolves to "batch" (ZebraPose: BatchNorm).

The output head is ZebraPose's ``output_kernel_size = 1``: one 1x1 convolution to ``1 + bits`` channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bopkd.errors import BopkdError
from bopkd.models.backbones import NORMS, build_backbone, make_group_norm, resolve_norm

#: Encoder levels asked of the backbone: strides 2, 4, 8, 16, 32 (those it has, from stride 2 on).
ENCODER_LEVELS = (1, 2, 3, 4, 5)


@dataclass
class DenseModelConfig:
    """Configuration of a :class:`DensePoseNet`.

    Attributes:
        encoder: a bopkd backbone preset or timm model name (teacher ``resnet34`` as ZebraPose; a student e.g.
            ``resnet18`` or ``darknet-tiny``). It must give a feature map at stride 2.
        pretrained: encoder weights: false, true (timm's) or a local weights file (as ``ModelConfig``).
        bits: code bits per pixel (ZebraPose: 16, ``number_of_itration``).
        out_size: side of the output maps, px; the input crop side is ``2 * out_size`` (ZebraPose:
            ``BoundingBox_CropSize_GT`` 128 for ``BoundingBox_CropSize_image`` 256).
        decoder_channels: widths of the decoder stages, coarsest first; an encoder with ``n`` maps uses the
            last ``n - 1`` entries.
        norm: backbone norm ("auto" | "batch" | "group" | "frozen_batch", see ``backbones.py``); the decoder
            uses BatchNorm when it resolves to "batch", GroupNorm otherwise.
    """

    encoder: str = "resnet34"
    pretrained: bool | str = False
    bits: int = 16
    out_size: int = 128
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64])
    norm: str = "auto"

    @property
    def in_size(self) -> int:
        """Side of the input crop, px (the output is at stride 2)."""
        return 2 * self.out_size

    def validate(self, source: str = "the dense model config") -> DenseModelConfig:
        """Check the values; raise :class:`BopkdError` naming ``source`` and the fix. Returns self."""
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 24:
            raise BopkdError(
                f"{source}: model.bits = {self.bits!r} must be an integer in 1..24 (ZebraPose: 16)"
            )
        if not isinstance(self.out_size, int) or self.out_size < 16 or self.out_size % 16:
            raise BopkdError(
                f"{source}: model.out_size = {self.out_size!r} must be a multiple of 16 (input 2 * out_size "
                "must be divisible by the encoder's stride 32), e.g. 128"
            )
        dc = list(self.decoder_channels)
        if not dc or not all(isinstance(c, int) and c > 0 for c in dc):
            raise BopkdError(
                f"{source}: model.decoder_channels = {dc!r} must be a non-empty list of positive integers"
            )
        if self.norm not in NORMS:
            raise BopkdError(f"{source}: model.norm {self.norm!r}: use one of {', '.join(NORMS)}")
        if not isinstance(self.pretrained, (bool, str)) or self.pretrained == "":
            raise BopkdError(
                f"{source}: model.pretrained = {self.pretrained!r}: use true, false or the path of a weights file"
            )
        return self


def _conv_norm_relu(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    norm = nn.BatchNorm2d(cout) if batch_norm else make_group_norm(cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm, nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """x (B, cin, h, w), skip (B, cskip, 2h, 2w) -> (B, cout, 2h, 2w): bilinear x2, concat, 2 x conv3x3."""

    def __init__(self, cin: int, cskip: int, cout: int, batch_norm: bool):
        super().__init__()
        self.conv = nn.Sequential(
            _conv_norm_relu(cin + cskip, cout, batch_norm), _conv_norm_relu(cout, cout, batch_norm)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


class DensePoseNet(nn.Module):
    """Crop (B, 3, 2S, 2S) -> ``{"mask_logits": (B, 1, S, S), "code_logits": (B, bits, S, S), "features"}``.

    ``features``: the encoder maps, stride 2 first and the coarsest (stride 32, or 16 for DarkNet-tiny) last,
    each (B, C_l, 2S / s_l, 2S / s_l), for feature distillation. S = ``cfg.out_size`` by default (128).
    """

    def __init__(self, cfg: DenseModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = build_backbone(cfg.encoder, list(ENCODER_LEVELS), cfg.pretrained, cfg.norm)
        if self.encoder.reductions[0] != 2 or len(self.encoder.reductions) < 2:
            raise BopkdError(
                f"dense model encoder {cfg.encoder!r} gives strides {self.encoder.reductions}: it needs a map at "
                "stride 2 and a coarser one; use a ResNet (resnet18, resnet34) or darknet-tiny"
            )
        steps = len(self.encoder.channels) - 1
        if len(cfg.decoder_channels) < steps:
            raise BopkdError(
                f"model.decoder_channels {list(cfg.decoder_channels)} has fewer than the {steps} stages encoder "
                f"{cfg.encoder!r} needs: give at least {steps} widths"
            )
        widths = list(cfg.decoder_channels)[-steps:]
        batch_norm = resolve_norm(cfg.norm, cfg.pretrained) == "batch"
        chans = self.encoder.channels
        blocks, c = [], chans[-1]
        for k in range(steps):
            skip = chans[-2 - k]
            blocks.append(UpBlock(c, skip, widths[k], batch_norm))
            c = widths[k]
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 1 + cfg.bits, 1)

    @property
    def stride(self) -> int:
        """Input px per output px (2)."""
        return self.encoder.reductions[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        top = self.encoder.reductions[-1]
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % top or x.shape[-2] % top:
            raise BopkdError(
                f"dense model input of shape {tuple(x.shape)}: give (B, 3, H, W) crops with H and W multiples "
                f"of {top} (default 256 x 256)"
            )
        feats = self.encoder(x)
        y = feats[-1]
        for k, block in enumerate(self.decoder):
            y = block(y, feats[-2 - k])
        out = self.head(y)
        mask, code = torch.split(out, [1, self.cfg.bits], dim=1)
        return {"mask_logits": mask, "code_logits": code, "features": list(feats)}


def build_dense_model(cfg: DenseModelConfig | None = None) -> DensePoseNet:
    """Build a :class:`DensePoseNet` (default: the ResNet-34 teacher, 256 -> 128)."""
    return DensePoseNet(cfg if cfg is not None else DenseModelConfig())


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
