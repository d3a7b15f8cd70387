"""The ``dense`` section of a run config: the ZebraPose-style dense family (``family: dense``).

A dense run trains :class:`bopkd.models.dense.DensePoseNet` (Su et al., "ZebraPose", CVPR 2022; code
suyz526/ZebraPose) on zoom-in crops: its encoder is the run's ``model.backbone`` (``model.pretrained``,
``model.backbone_norm``), its input crop is ``data.crop_size = 2 * dense.out_size`` px (ZebraPose:
``BoundingBox_CropSize_image`` 256, ``BoundingBox_CropSize_GT`` 128), its targets are the per-pixel visible mask
and the ``bits`` surface-code bits of the object's hierarchical encoding (:mod:`bopkd.geometry.surface_code`,
``min_vertices`` the encoding's subdivision), its loss is :class:`bopkd.losses.zebra.ZebraLoss`
(``dense.loss``) and its poses come from decoding + PnP-RANSAC (``dense.pnp``).

:class:`DensePnPConfig` holds the settings of :func:`bopkd.infer.dense_poses.dense_poses`. It lives here, in
the training layer, for the same reason as the sparse family's ``PredictConfig``: the run config (and every
checkpoint) carries it, and ``bopkd.infer`` imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bopkd.errors import BopkdError
from bopkd.losses.zebra import ZebraLossConfig
from bopkd.models.dense import DenseModelConfig
from bopkd.models.posenet import ModelConfig

#: Minimal solvers of the dense PnP-RANSAC (OpenCV's SOLVEPNP_EPNP, SOLVEPNP_SQPNP).
PNP_METHODS = ("epnp", "sqpnp")


@dataclass
class DensePnPConfig:
    """Dense decoding + PnP (defaults: ZebraPose's ``CNN_output_to_pose.py``, OpenCV branch).

    Attributes:
        mask_threshold: mask probability above which an output pixel is used (0.5).
        bit_threshold: probability above which a bit is 1 (0.5).
        reproj_err: RANSAC inlier threshold, px in the original image (2).
        iters: RANSAC iterations (150).
        confidence: RANSAC confidence (OpenCV's default 0.99).
        method: minimal solver inside RANSAC, "epnp" (the reference) or "sqpnp".
        refine: refine on the inliers (Levenberg-Marquardt).
        min_points: fewest correspondences to try PnP (6).
        seed: seed of OpenCV's RNG, so that a result is reproducible.
    """

    mask_threshold: float = 0.5
    bit_threshold: float = 0.5
    reproj_err: float = 2.0
    iters: int = 150
    confidence: float = 0.99
    method: str = "epnp"
    refine: bool = False
    min_points: int = 6
    seed: int = 0

    def validate(self, source: str = "the run config") -> DensePnPConfig:
        """Check the values; raise :class:`BopkdError` naming ``source`` and the fix. Returns self."""
        for name in ("mask_threshold", "bit_threshold", "confidence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise BopkdError(f"{source}: dense.pnp.{name} = {getattr(self, name)} must be in (0, 1)")
        if not self.reproj_err > 0 or self.iters < 1:
            raise BopkdError(
                f"{source}: dense.pnp.reproj_err ({self.reproj_err}) must be > 0 px and dense.pnp.iters "
                f"({self.iters}) >= 1"
            )
        if self.method not in PNP_METHODS:
            raise BopkdError(
                f"{source}: dense.pnp.method {self.method!r}: use one of {', '.join(PNP_METHODS)}"
            )
        if self.min_points < 4:
            raise BopkdError(f"{source}: dense.pnp.min_points = {self.min_points} must be >= 4 (PnP needs 4)")
        return self


@dataclass
class DenseConfig:
    """Settings of the dense family (read when ``family: dense``).

    Attributes:
        bits: code bits per output pixel (ZebraPose: 16).
        out_size: side of the output maps, px; the input crop (``data.crop_size``) is ``2 * out_size``.
        decoder_channels: widths of the decoder stages, coarsest first (:class:`DenseModelConfig`).
        min_vertices: the surface encoding subdivides each model to at least this many vertices
            (:func:`bopkd.geometry.surface_code.encode_model`; 2**16 so that each of the 2**16 codes can
            hold a vertex).
        loss: :class:`~bopkd.losses.zebra.ZebraLossConfig` (defaults: ZebraPose's code).
        pnp: :class:`DensePnPConfig`.
    """

    bits: int = 16
    out_size: int = 128
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 64])
    min_vertices: int = 2**16
    loss: ZebraLossConfig = field(default_factory=ZebraLossConfig)
    pnp: DensePnPConfig = field(default_factory=DensePnPConfig)

    def model_config(self, model: ModelConfig) -> DenseModelConfig:
        """The network of a dense run: the encoder, its weights and norm of ``model``, the rest from here."""
        return DenseModelConfig(
            encoder=model.backbone,
            pretrained=model.pretrained,
            bits=self.bits,
            out_size=self.out_size,
            decoder_channels=list(self.decoder_channels),
            norm=model.backbone_norm,
        )

    def check(self, model: ModelConfig, crop_size: int, source: str = "the run config") -> DenseConfig:
        """Check the section against the run's ``model`` and ``data.crop_size`` (px); returns self. Called by
        ``RunConfig.validate`` (not named ``validate``: it needs the run's other sections)."""
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 24:
            raise BopkdError(
                f"{source}: dense.bits = {self.bits!r} must be an integer in 1..24 (ZebraPose: 16)"
            )
        if not isinstance(self.out_size, int) or self.out_size < 16 or self.out_size % 16:
            raise BopkdError(
                f"{source}: dense.out_size = {self.out_size!r} must be a multiple of 16 (the input 2 * out_size "
                "must be divisible by the encoder's stride 32), e.g. 128"
            )
        if self.min_vertices < 0:
            raise BopkdError(
                f"{source}: dense.min_vertices = {self.min_vertices} must be >= 0 (default 65536)"
            )
        self.model_config(model).validate(source)
        if crop_size != 2 * self.out_size:
            raise BopkdError(
                f"{source}: data.crop_size = {crop_size} must be 2 * dense.out_size = {2 * self.out_size} (the "
                f"dense network outputs at stride 2): set data.crop_size={2 * self.out_size} or "
                f"dense.out_size={crop_size // 2}"
            )
        self.loss.validate(source)
        self.pnp.validate(source)
        return self


__all__ = ["PNP_METHODS", "DenseConfig", "DensePnPConfig"]
