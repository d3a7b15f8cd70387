"""WDRNet+-style keypoint pose network: backbone -> FPN (with extra top levels) -> shared pose head.

The network of Hu et al., "Wide-Depth-Range 6D Object Pose Estimation in Space" (CVPR 2021, code
cvlab-epfl/wide-depth-range-pose) as used by Guo et al., "Knowledge Distillation for 6D Pose
Estimation by Aligning Distributions of Local Predictions" (CVPR 2023, code GUOShuxuan/kd-6d-pose-adlp):
one anchor per cell of every pyramid level; per cell and class a segmentation logit and the 2D image
positions of the 8 corners of the object's 3D bounding box.

Keypoint parameterisation (WDR's ``TargetCoder.decode`` with ``POINT`` regression)::

    kpt = center + raw * scale_l * size

with ``center = ((j + 0.5) * s, (i + 0.5) * s)`` px for the cell in row i, column j of a level of
stride s (pixel u spans [u, u+1), so its centre is u + 0.5, the convention of bopkd's renderer),
``size = anchor_scale * s`` px (4 s: WDR's anchor sizes 32, 64, ..., 512 for strides 8, ..., 128),
``scale_l`` the learned scalar of the level (:class:`~bopkd.models.head.Scale`) and ``raw`` the head's
output. One model serves all objects of a dataset: class c is ``obj_ids[c]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from bopkd.errors import BopkdError
from bopkd.models.backbones import NORMS, build_backbone, preset_for, resolve_norm
from bopkd.models.fpn import FPN
from bopkd.models.head import PoseHead


@dataclass
class ModelConfig:
    """Configuration of a :class:`PoseNet`.

    Attributes:
        obj_ids: object ids served by the model; class index = position in this list.
        backbone: a preset (``darknet53``, ``darknet-tiny``, ``darknet-tiny-h``, ``tiny-cpu``) or any timm
            model name supporting ``features_only``.
        levels: pyramid levels (stride 2**level), ascending and contiguous; the first must be a backbone
            level. Default P3-P7 as WDR.
        fpn_channels: FPN/head width; None = the preset's (256; 128 for darknet-tiny-h; 32 for tiny-cpu).
        head_convs: convs per head tower; None = the preset's (4; 2 for tiny-cpu).
        pretrained: backbone weights: false (initial weights), true (timm's pretrained weights, downloaded or
            cached; timm backbones only) or the path of a local weights file (a state dict of the backbone, or
            a checkpoint holding one under ``model``; see :mod:`bopkd.models.pretrained`).
        backbone_norm: "auto" | "batch" | "group" | "frozen_batch" (see ``backbones.py``).
        anchor_scale: anchor size / stride.
        prior_prob: initial foreground probability of the classification logits.
    """

    obj_ids: list[int] = field(default_factory=list)
    backbone: str = "darknet53"
    levels: list[int] = field(default_factory=lambda: [3, 4, 5, 6, 7])
    fpn_channels: int | None = None
    head_convs: int | None = None
    pretrained: bool | str = False
    backbone_norm: str = "auto"
    anchor_scale: float = 4.0
    prior_prob: float = 0.01

    @property
    def num_classes(self) -> int:
        return len(self.obj_ids)

    def validate(self, source: str = "the model config") -> ModelConfig:
        """Check the values; raise :class:`BopkdError` naming ``source`` and the fix. Returns self."""

        def bad(msg: str) -> BopkdError:
            return BopkdError(f"{source}: {msg}")

        if not self.obj_ids:
            raise bad("model.obj_ids is empty: list the object ids the model serves (e.g. [1, 5, 6])")
        if len(set(self.obj_ids)) != len(self.obj_ids):
            raise bad(f"model.obj_ids {list(self.obj_ids)} has duplicates: list each object once")
        if not self.levels or list(self.levels) != list(
            range(self.levels[0], self.levels[0] + len(self.levels))
        ):
            raise bad(
                f"model.levels {list(self.levels)} must be ascending consecutive integers (e.g. [3, 4, 5, 6, 7])"
            )
        if self.levels[0] < 1 or self.levels[-1] > 10:
            raise bad(f"model.levels {list(self.levels)} must lie in 1..10")
        if not isinstance(self.pretrained, (bool, str)) or self.pretrained == "":
            raise bad(
                f"model.pretrained = {self.pretrained!r}: use true, false or the path of a weights file"
            )
        if self.backbone_norm not in NORMS:
            raise bad(f"model.backbone_norm {self.backbone_norm!r}: use one of {', '.join(NORMS)}")
        for name in ("fpn_channels", "head_convs"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (1 if name == "fpn_channels" else 0)):
                raise bad(f"model.{name} = {v!r} must be a positive integer (or null for the preset's value)")
        if not self.anchor_scale > 0:
            raise bad(f"model.anchor_scale = {self.anchor_scale} must be > 0")
        if not 0.0 < self.prior_prob < 1.0:
            raise bad(f"model.prior_prob = {self.prior_prob} must be in (0, 1)")
        return self

    def resolved(self) -> ModelConfig:
        """A copy with ``fpn_channels`` and ``head_convs`` filled from the backbone's preset."""
        p = preset_for(self.backbone)
        return replace(
            self,
            obj_ids=[int(o) for o in self.obj_ids],
            levels=[int(v) for v in self.levels],
            fpn_channels=self.fpn_channels if self.fpn_channels is not None else p.fpn_channels,
            head_convs=self.head_convs if self.head_convs is not None else p.head_convs,
        )

    def without_pretrained(self) -> ModelConfig:
        """A copy that builds the same network without reading pretrained weights (for a checkpoint's
        network, whose weights replace them): ``pretrained`` false, ``backbone_norm`` the one it resolved to."""
        return replace(
            self, pretrained=False, backbone_norm=resolve_norm(self.backbone_norm, self.pretrained)
        )

    def to_dict(self) -> dict:
        return asdict(self)


class PoseNet(nn.Module):
    """Backbone + FPN + shared pose head; see the module docstring for the output parameterisation.

    Attributes:
        cfg: the resolved :class:`ModelConfig`.
        obj_ids: class index -> object id.
        levels: pyramid levels; strides ``2**level``.
        size_divisor: inputs are zero-padded (right/bottom) to a multiple of this.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg = cfg.resolved().validate()
        self.cfg = cfg
        self.obj_ids = list(cfg.obj_ids)
        self.num_classes = len(self.obj_ids)
        self.levels = list(cfg.levels)
        self.backbone = build_backbone(cfg.backbone, self.levels, cfg.pretrained, cfg.backbone_norm)
        self.fpn = FPN(self.backbone.channels, self.backbone.levels, self.levels, cfg.fpn_channels)
        self.head = PoseHead(
            cfg.fpn_channels, self.num_classes, cfg.head_convs, len(self.levels), cfg.prior_prob
        )
        self.strides = [2**lv for lv in self.levels]
        self.size_divisor = 2 ** self.backbone.levels[-1]
        self._anchor_cache: dict[tuple, dict] = {}

    # ----------------------------------------------------------------- geometry
    def padded_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) rounded up to multiples of ``size_divisor``."""
        d = self.size_divisor
        H, W = int(image_size[0]), int(image_size[1])
        return -(-H // d) * d, -(-W // d) * d

    def level_shapes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """(h, w) of every level's map for an input of ``image_size`` (H, W)."""
        Hp, Wp = self.padded_size(image_size)
        shapes = []
        for lv in self.levels:
            if lv <= self.backbone.levels[-1]:
                shapes.append((Hp // 2**lv, Wp // 2**lv))
            else:
                h, w = shapes[-1]
                shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
        return shapes

    def anchors(self, image_size: tuple[int, int], device: torch.device | str | None = None) -> dict:
        """Static cell geometry for an input of ``image_size`` (H, W), cached per size and device.

        Returns:
            dict with ``centers`` (A, 2) float32 px (x, y), ``sizes`` (A,) float32 px, ``level`` (A,) long
            (index into ``levels``), ``strides`` list[int], ``shapes`` list[(h, w)], ``levels`` list[int],
            ``level_start`` list[int] (first cell of each level; A at the end).
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (*self.padded_size(image_size), str(device))
        hit = self._anchor_cache.get(key)
        if hit is not None:
            return hit
        shapes = self.level_shapes(image_size)
        centers, sizes, level, starts = [], [], [], [0]
        for li, ((h, w), s) in enumerate(zip(shapes, self.strides, strict=True)):
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
            )
            centers.append(torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], dim=1))
            sizes.append(torch.full((h * w,), self.cfg.anchor_scale * s, dtype=torch.float32))
            level.append(torch.full((h * w,), li, dtype=torch.long))
            starts.append(starts[-1] + h * w)
        out = {
            "centers": torch.cat(centers).to(device),
            "sizes": torch.cat(sizes).to(device),
            "level": torch.cat(level).to(device),
            "strides": list(self.strides),
            "shapes": shapes,
            "levels": list(self.levels),
            "level_start": starts,
        }
        self._anchor_cache[key] = out
        return out

    # ----------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor) -> dict:
        """Run the network.

        Args:
            images: (B, 3, H, W) float32 normalised images.

        Returns:
            dict with ``cls_logits`` (B, A, C), ``kpts`` (B, A, C, 8, 2) px, ``features`` (list of FPN maps
            (B, F, h_l, w_l)), ``backbone_features`` (list of backbone maps fed to the FPN), ``anchors``
            (:meth:`anchors`) and ``image_size`` (H, W).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise BopkdError(f"PoseNet expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        B, _, H, W = images.shape
        Hp, Wp = self.padded_size((H, W))
        x = F.pad(images, (0, Wp - W, 0, Hp - H)) if (Hp, Wp) != (H, W) else images
        bfeats = self.backbone(x)
        feats = self.fpn(bfeats)
        anchors = self.anchors((H, W), images.device)
        got = [tuple(f.shape[-2:]) for f in feats]
        if got != [tuple(s) for s in anchors["shapes"]]:
            raise BopkdError(
                f"backbone {self.cfg.backbone!r} gave feature maps {got} for a {Hp}x{Wp} input, expected "
                f"{anchors['shapes']}: use a backbone whose stride-2**l map is exactly H/2**l"
            )
        logits, raw = self.head(feats)
        C = self.num_classes
        cls = torch.cat([lg.permute(0, 2, 3, 1).reshape(B, -1, C) for lg in logits], dim=1)
        off = torch.cat([r.permute(0, 2, 3, 1).reshape(B, -1, C, 8, 2) for r in raw], dim=1)
        kpts = anchors["centers"][None, :, None, None, :] + off * anchors["sizes"][None, :, None, None, None]
        return {
            "cls_logits": cls,
            "kpts": kpts,
            "features": feats,
            "backbone_features": bfeats,
            "anchors": anchors,
            "image_size": (int(H), int(W)),
        }


def build_model(cfg: ModelConfig) -> PoseNet:
    """Build a :class:`PoseNet` from a validated config."""
    return PoseNet(cfg)


__all__ = ["ModelConfig", "PoseNet", "build_model"]
