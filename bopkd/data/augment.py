"""Geometric and photometric augmentation that keeps images, masks, cameras and poses consistent.

Coordinates. Pixel coordinates are *continuous* and follow the BOP convention of the intrinsics ``K``:
pixel ``(u, v)`` (integer index) covers ``[u, u+1) x [v, v+1)`` and its centre is ``(u + 0.5, v + 0.5)``
(the BOP toolkit's renderer samples pixel centres; see :mod:`bopkd.geometry.render`). A 2D affine map
``A`` (3x3, last row ``[0, 0, 1]``) acts on these coordinates. OpenCV's ``warpAffine`` indexes pixels
by their centres at integer coordinates, so images are warped with ``T(-0.5) @ A @ T(0.5)``
(:func:`index_affine`); with that, a scale ``s`` resize is exactly ``cv2.resize``'s half-pixel rule.

Cameras and poses. The network input image is ``A`` applied to the original image, so a 3D point ``X``
(camera frame, mm) that projects to ``p ~ K X`` projects to ``A p ~ (A K) X`` in the input. ``A K`` is
a valid 3x4-free projection but, when ``A`` rotates, not an upper-triangular intrinsic matrix. Following
the observation that an in-plane image rotation about the principal point is a rotation of the camera
frame about its optical (z) axis (e.g. Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., §6.1 and
the RQ decomposition of §A4.1.1), we factor ``A K = K' Rz`` with ``Rz`` a rotation about z and ``K'``
upper triangular (:func:`warp_camera_pose`). The pose becomes ``R' = Rz R``, ``t' = Rz t`` and the
intrinsics ``K'``; then ``K' (R' X_m + t') = A K (R X_m + t)`` exactly, for every model point ``X_m``.
``K'[1, 0] = 0``; ``K'[0, 1]`` (skew) is 0 when ``fx == fy`` and the affine is a similarity, and tiny
otherwise (LM: ``fx/fy = 0.998`` gives skew ~1e-3 fx per radian of rotation). Without rotation
(crop, resize, shift), ``Rz = I`` and ``K' = A K``.

Photometric. Colour jitter (brightness, contrast, saturation, hue) uses torchvision's functional ops;
background replacement (for synthetic images, where the visible masks of all objects are exact) pastes
the objects on a random background. All randomness comes from the ``numpy.random.Generator`` passed in,
so a sample is reproducible from its seed whatever process loads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from bopkd.errors import BopkdError

#: ImageNet statistics used to normalise network inputs (torchvision's pretrained models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """Training-time augmentation (nothing is applied at test time).

    Attributes:
        enabled: master switch.
        crop_frame: crop mode: where the geometric augmentation acts. ``crop``: the zoom-in crop is rotated
            about its centre (shift and scale are left to the dynamic zoom-in, ``data.crop_shift`` and
            ``data.crop_pad_range``). ``image``: the whole image is shifted, scaled and rotated first, then
            the crop is taken around the moved box, as Guo et al.'s code (GUOShuxuan/kd-6d-pose-adlp:
            ``libs/dataset.py`` runs ``RandomShiftScaleRotate`` of ``libs/transform.py`` on the image before
            ``dzi_train`` of ``libs/dzi_libs.py``).
        shift: max translation as a fraction of the image size (full mode; crop mode with ``crop_frame``
            ``image``), ``U(-shift, shift)``.
        scale: max relative scale change, ``s ~ U(1 - scale, 1 + scale)`` (full mode; crop mode with
            ``crop_frame`` ``image``).
        rotation: max in-plane rotation in degrees, ``U(-rotation, rotation)``; rotates R, t and K
            consistently (see the module docstring).
        brightness, contrast, saturation: jitter factors drawn from ``U(1 - x, 1 + x)``.
        hue: hue shift drawn from ``U(-hue, hue)`` (fraction of the hue circle, at most 0.5).
        bg_replace: probability of replacing the background (pixels outside every visible object mask)
            with a random one; meant for synthetic data, whose masks are exact.
        bg_dir: optional folder of background images (``.jpg``/``.png``); procedural noise when empty.
        blur: probability of a Gaussian blur (sigma 0.5 to 1.5 px).
        noise: standard deviation of additive Gaussian pixel noise in 0-255 units (0 = off).
    """

    enabled: bool = True
    crop_frame: Literal["crop", "image"] = "crop"
    shift: float = 0.05
    scale: float = 0.05
    rotation: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    bg_replace: float = 0.0
    bg_dir: str | None = None
    blur: float = 0.0
    noise: float = 0.0

    def validate(self) -> None:
        if self.crop_frame not in ("crop", "image"):
            raise BopkdError(f"augment.crop_frame = {self.crop_frame!r}: use 'crop' or 'image'")
        for name in ("shift", "scale", "brightness", "contrast", "saturation", "bg_replace", "blur"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise BopkdError(f"augment.{name} = {v} is out of range: use a value in [0, 1]")
        if not 0.0 <= self.hue <= 0.5:
            raise BopkdError(f"augment.hue = {self.hue} is out of range: use a value in [0, 0.5]")
        if not 0.0 <= self.rotation <= 180.0:
            raise BopkdError(f"augment.rotation = {self.rotation} is out of range: use degrees in [0, 180]")
        if self.noise < 0:
            raise BopkdError(f"augment.noise = {self.noise} must be >= 0")
        if self.bg_dir is not None and not Path(self.bg_dir).is_dir():
            raise BopkdError(
                f"augment.bg_dir = {self.bg_dir}: no such folder; give a folder of images or leave it empty"
            )


# --- affine maps -------------------------------------------------------------------------------------


def translation(dx: float, dy: float) -> np.ndarray:
    """(3, 3) 2D translation by ``(dx, dy)`` px."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    """(3, 3) 2D scaling about the origin."""
    return np.diag([sx, sx if sy is None else sy, 1.0])


def rotation_2d(angle_deg: float, center: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """(3, 3) rotation of the image by ``angle_deg`` about ``center`` (px).

    Positive angles turn the image clockwise on screen (y points down), i.e. ``[x, y]`` turns towards
    ``+y``; the matching camera rotation is ``Rz(angle)`` about the optical axis.
    """
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return translation(center[0], center[1]) @ R @ translation(-center[0], -center[1])


def apply_affine(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) affine to (..., 2) points (px)."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ A[:2, :2].T + A[:2, 2]


def index_affine(A: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix ``cv2.warpAffine`` needs for the continuous-coordinate affine ``A``.

    OpenCV addresses pixel centres by integer coordinates ``i = x - 0.5``; see the module docstring.
    """
    return (translation(-0.5, -0.5) @ A @ translation(0.5, 0.5))[:2]


def resize_affine(src_size: Sequence[int], dst_size: Sequence[int]) -> np.ndarray:
    """(3, 3) map of a whole ``src_size = (W, H)`` image onto ``dst_size = (W', H')`` (may change aspect)."""
    return scaling(dst_size[0] / src_size[0], dst_size[1] / src_size[1])


def affine_box(A: np.ndarray, box: Sequence[float]) -> tuple[float, float, float, float]:
    """The axis-aligned box ``(x, y, w, h)`` around the image of box ``(x, y, w, h)``'s corners under ``A``."""
    x, y, w, h = (float(v) for v in box)
    pts = apply_affine(A, [[x, y], [x + w, y], [x, y + h], [x + w, y + h]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])


def square_box(box: Sequence[float], pad: float) -> tuple[np.ndarray, float]:
    """Centre (2,) and side (px) of the square around box ``(x, y, w, h)`` enlarged ``pad`` times.

    The zoom-in crop of WDRNet+ / dynamic zoom-in (Li et al., CDPN, ICCV 2019; Wang et al., GDR-Net,
    CVPR 2021): a square of side ``max(w, h) * pad`` centred on the box.
    """
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    return center, max(w, h, 1.0) * float(pad)


def crop_affine(center: Sequence[float], side: float, out_size: int) -> np.ndarray:
    """(3, 3) map of the square ``center +- side/2`` (original px) onto ``[0, out_size]^2``."""
    s = out_size / float(side)
    return scaling(s) @ translation(-(center[0] - 0.5 * side), -(center[1] - 0.5 * side))


def sample_full_affine(
    rng: np.random.Generator,
    cfg: AugmentConfig,
    image_size: Sequence[int],
    input_size: Sequence[int],
    K: np.ndarray,
) -> np.ndarray:
    """Random affine of a whole image: rotate and scale about the principal point, shift, then resize.

    Args:
        image_size: original ``(W, H)``; input_size: network input ``(W', H')``; K: (3, 3) original intrinsics.
    Returns:
        (3, 3) original px -> input px.
    """
    base = resize_affine(image_size, input_size)
    if not cfg.enabled:
        return base
    pp = (float(K[0, 2]), float(K[1, 2]))
    angle = rng.uniform(-cfg.rotation, cfg.rotation) if cfg.rotation > 0 else 0.0
    s = rng.uniform(1.0 - cfg.scale, 1.0 + cfg.scale) if cfg.scale > 0 else 1.0
    dx, dy = (rng.uniform(-cfg.shift, cfg.shift, size=2) if cfg.shift > 0 else np.zeros(2)) * np.asarray(
        image_size
    )
    about_pp = translation(*pp) @ scaling(s) @ translation(-pp[0], -pp[1])
    return base @ translation(dx, dy) @ about_pp @ rotation_2d(angle, pp)


def sample_crop_affine(
    rng: np.random.Generator | None,
    box: Sequence[float],
    out_size: int,
    pad: float,
    pad_range: Sequence[float] | None = None,
    shift: float = 0.0,
    cfg: AugmentConfig | None = None,
    max_side: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The zoom-in crop of a box, with dynamic zoom-in jitter at train time.

    At test time (``rng`` None) the square has side ``max(w, h) * pad`` about the box centre. At train
    time the pad is drawn from ``U(pad_range)`` and the centre shifted by ``U(-shift, shift) * (w, h)``
    (dynamic zoom-in, CDPN / GDR-Net), and the rotation of ``cfg`` is applied about the crop centre.
    The side is capped at ``max_side`` (the larger image dimension), as those works do.

    Returns:
        ``(A, center, side)``: (3, 3) original px -> crop px, the square's centre and side (original px).
    """
    x, y, w, h = (float(v) for v in box)
    if rng is not None and pad_range is not None:
        pad = rng.uniform(float(pad_range[0]), float(pad_range[1]))
    center, side = square_box(box, pad)
    if rng is not None and shift > 0:
        center = center + rng.uniform(-shift, shift, size=2) * np.array([max(w, 1.0), max(h, 1.0)])
    if max_side is not None:
        side = min(side, float(max_side))
    A = crop_affine(center, side, out_size)
    if rng is not None and cfg is not None and cfg.enabled and cfg.rotation > 0:
        c = out_size / 2.0
        A = rotation_2d(rng.uniform(-cfg.rotation, cfg.rotation), (c, c)) @ A
    return A, center, side


# --- cameras and poses ---------------------------------------------------------------------------------


def warp_camera_pose(
    A: np.ndarray, K: np.ndarray, R: np.ndarray | None = None, t: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Intrinsics and poses of the image warped by ``A``: ``A K = K' Rz``, ``R' = Rz R``, ``t' = Rz t``.

    Args:
        A: (3, 3) affine, original px -> new px (no reflection).
        K: (3, 3) original intrinsics.
        R: (n, 3, 3) or (3, 3) rotations model -> camera, or None.
        t: (n, 3) or (3,) translations in mm, or None.
    Returns:
        ``(K', Rz, R', t')``; ``K'`` upper triangular with ``K'[1, 0] = 0`` and positive diagonal.
    """
    M = np.asarray(A, dtype=np.float64) @ np.asarray(K, dtype=np.float64)
    if abs(M[2, 0]) > 1e-12 or abs(M[2, 1]) > 1e-12:
        raise ValueError("warp_camera_pose expects an affine map (last row [0, 0, 1])")
    # Rotation about z that zeroes M[1, 0] (Givens step of the RQ decomposition, H&Z A4.1.1).
    theta = math.atan2(M[1, 0], M[1, 1])
    c, s = math.cos(theta), math.sin(theta)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    K_new = M @ Rz.T
    K_new[1, 0] = 0.0
    if K_new[0, 0] <= 0:
        raise ValueError("warp_camera_pose: the affine reflects the image; flips are not supported")
    R_new = None if R is None else Rz @ np.asarray(R, dtype=np.float64)
    t_new = None if t is None else np.asarray(t, dtype=np.float64) @ Rz.T
    return K_new, Rz, R_new, t_new


def project(K: np.ndarray, R: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) px projections of (N, 3) model points (mm) under pose ``R, t`` and intrinsics ``K``."""
    X = np.asarray(pts, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T + np.asarray(
        t, dtype=np.float64
    ).reshape(1, 3)
    x = X @ np.asarray(K, dtype=np.float64).T
    return x[:, :2] / x[:, 2:3]


# --- images and masks ----------------------------------------------------------------------------------


def warp_image(
    img: np.ndarray, A: np.ndarray, size: Sequence[int], border_value: Sequence[float] | float = 0
) -> np.ndarray:
    """Warp an (H, W[, C]) image by the continuous affine ``A`` to ``size = (W', H')`` (bilinear)."""
    if img.ndim == 3 and not isinstance(border_value, (int, float)):
        border_value = tuple(float(v) for v in border_value)
    return cv2.warpAffine(
        img,
        index_affine(A),
        (int(size[0]), int(size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def warp_mask(mask: np.ndarray, A: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Warp an (H, W) bool mask by ``A`` to ``size = (W', H')`` (nearest neighbour); returns bool."""
    out = cv2.warpAffine(
        mask.astype(np.uint8),
        index_affine(A),
        (int(size[0]), int(size[1])),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out > 0


def warp_masks(masks: np.ndarray, A: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Warp (n, H, W) bool masks; returns (n, H', W') bool.

    OpenCV warps up to 4 channels at once with nearest interpolation, so masks go through in groups of 4.
    """
    n = len(masks)
    out = np.zeros((n, int(size[1]), int(size[0])), dtype=bool)
    for i in range(0, n, 4):
        group = np.ascontiguousarray(np.moveaxis(masks[i : i + 4], 0, -1).astype(np.uint8))
        w = cv2.warpAffine(
            group,
            index_affine(A),
            (int(size[0]), int(size[1])),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if w.ndim == 2:
            w = w[..., None]
        out[i : i + 4] = np.moveaxis(w, -1, 0) > 0
    return out


# --- photometric ---------------------------------------------------------------------------------------


def color_jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter of an (H, W, 3) uint8 RGB image, in random order.

    The factors are drawn from ``rng`` and applied with torchvision's functional ops (the operations of
    ``torchvision.transforms.ColorJitter``).
    """
    import torch
    from torchvision.transforms import functional as TF

    ops = []
    if cfg.brightness > 0:
        f = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
        ops.append(lambda x, f=f: TF.adjust_brightness(x, f))
    if cfg.contrast > 0:
        f = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        ops.append(lambda x, f=f: TF.adjust_contrast(x, f))
    if cfg.saturation > 0:
        f = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        ops.append(lambda x, f=f: TF.adjust_saturation(x, f))
    if cfg.hue > 0:
        f = rng.uniform(-cfg.hue, cfg.hue)
        ops.append(lambda x, f=f: TF.adjust_hue(x, f))
    if not ops:
        return img
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    for k in rng.permutation(len(ops)):
        x = ops[k](x)
    return x.permute(1, 2, 0).contiguous().numpy()


def blur_and_noise(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Optional Gaussian blur and additive Gaussian noise of an (H, W, 3) uint8 image."""
    if cfg.blur > 0 and rng.random() < cfg.blur:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.5, 1.5)))
    if cfg.noise > 0:
        noisy = img.astype(np.float32) + rng.normal(0.0, cfg.noise, size=img.shape).astype(np.float32)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    return img


def random_background(
    rng: np.random.Generator, size: Sequence[int], bg_files: Sequence[Path] = ()
) -> np.ndarray:
    """An (H, W, 3) uint8 background of ``size = (W, H)``: a random image from ``bg_files`` (randomly
    cropped and resized) or, without files, smooth multi-scale colour noise."""
    W, H = int(size[0]), int(size[1])
    if bg_files:
        from bopkd.data.images import load_rgb

        im = load_rgb(bg_files[int(rng.integers(len(bg_files)))])
        h, w = im.shape[:2]
        s = max(W / w, H / h) * rng.uniform(1.0, 1.5)
        im = cv2.resize(im, (max(W, round(w * s)), max(H, round(h * s))), interpolation=cv2.INTER_LINEAR)
        y0 = int(rng.integers(im.shape[0] - H + 1))
        x0 = int(rng.integers(im.shape[1] - W + 1))
        return np.ascontiguousarray(im[y0 : y0 + H, x0 : x0 + W])
    acc = np.zeros((H, W, 3), dtype=np.float32)
    for cells, weight in ((2, 1.0), (8, 0.5), (32, 0.25)):
        coarse = rng.uniform(0, 255, size=(cells, max(2, round(cells * W / H)), 3)).astype(np.float32)
        acc += weight * cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
    return np.clip(acc / 1.75, 0, 255).astype(np.uint8)


def replace_background(
    img: np.ndarray, foreground: np.ndarray, rng: np.random.Generator, bg_files: Sequence[Path] = ()
) -> np.ndarray:
    """Keep the pixels of ``foreground`` ((H, W) bool: union of the objects' visible masks) and put a
    random background (:func:`random_background`) everywhere else."""
    H, W = img.shape[:2]
    bg = random_background(rng, (W, H), bg_files)
    return np.where(foreground[..., None], img, bg)


def list_backgrounds(folder: str | Path | None) -> list[Path]:
    """Image files (``.jpg``, ``.jpeg``, ``.png``) of a background folder, sorted; empty for None."""
    if folder is None:
        return []
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def normalize_image(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, scaled to [0, 1] and normalised by the ImageNet mean/std."""
    x = img.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, dtype=np.float32)) / np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def denormalize_image(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_image`: (3, H, W) float -> (H, W, 3) uint8."""
    x = np.asarray(x, dtype=np.float32).transpose(1, 2, 0)
    x = x * np.asarray(IMAGENET_STD, dtype=np.float32) + np.asarray(IMAGENET_MEAN, dtype=np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
