"""Poses from a dense (ZebraPose-style) network: threshold, decode codes to 3D points, map pixels back, PnP.

Su et al., "ZebraPose: Coarse to Fine Surface Encoding for 6DoF Object Pose Estimation" (CVPR 2022), Sec. 3.5,
and suyz526/ZebraPose ``zebrapose/binary_code_helper/CNN_output_to_pose.py`` (``CNN_outputs_to_object_pose``):

1. the pixels of the output grid whose mask probability is > 0.5 (``common_ops.from_output_to_class_mask``)
   are kept; each bit is ``[p_i > 0.5]`` (``from_output_to_class_binary_code``);
2. a pixel's code is ``c = sum_i b_i 2**(n - 1 - i)``, bit 0 the most significant
   (``class_id_encoder_decoder.class_code_images_to_class_id_image``), and its 3D point is the lookup table's
   row ``c`` (mm; ``dict_class_id_3D_points``; rows that are not finite, codes with no surface point, are
   dropped as the reference skips NaN entries);
3. output pixel (row i, column j) is taken at its centre ``(j + 0.5, i + 0.5)`` (pixel u spans [u, u + 1), the
   convention of bopkd's renderer; the reference maps the pixel's corner and truncates to int,
   ``mapping_pixel_position_to_original_position``) and mapped to the original image by the crop's affine
   ``A_out`` (3, 3), output px -> original px (:func:`output_to_image_affine` builds it from the input
   affine original px -> input px that bopkd's datasets record);
4. ``cv2.solvePnPRansac`` with the original intrinsics; at least 6 correspondences (the reference's
   ``len(Original_Points_2D) >= 6``). The reference solves with Progressive-X (threshold 2 px, 400
   iterations); its OpenCV branch, followed here, uses EPnP, a 2 px threshold and 150 iterations, the defaults
   of :class:`DensePnPConfig`. An optional Levenberg-Marquardt refinement on the inliers is off by default.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from bopkd.errors import BopkdError
from bopkd.train.dense_config import DensePnPConfig

#: OpenCV flag of each minimal solver named in :data:`bopkd.train.dense_config.PNP_METHODS`.
CV_PNP_FLAGS = {"epnp": cv2.SOLVEPNP_EPNP, "sqpnp": cv2.SOLVEPNP_SQPNP}


class DensePose(NamedTuple):
    """R (3, 3) float64 model -> camera, t (3,) float64 mm, RANSAC inliers, correspondences used, and
    ``score`` = n_inliers / n_points (the inlier ratio, in [0, 1])."""

    R: np.ndarray
    t: np.ndarray
    n_inliers: int
    n_points: int
    score: float


def codes_from_bits(bits: np.ndarray) -> np.ndarray:
    """(N,) int64 codes of (N, n) bits in {0, 1}, bit 0 the most significant: ``sum_i b_i 2**(n-1-i)``."""
    b = np.asarray(bits).astype(np.int64)
    n = b.shape[-1]
    return b @ (np.int64(1) << np.arange(n - 1, -1, -1, dtype=np.int64))


def output_to_image_affine(input_affine: np.ndarray, stride: float = 2.0) -> np.ndarray:
    """(3, 3) map output px -> original px, from the input affine (2, 3)/(3, 3) original px -> input px.

    Continuous coordinates: output x maps to input ``stride * x`` (a 128 grid covers a 256 input), then
    ``input_affine^-1`` maps input px to the original image.
    """
    A = np.asarray(input_affine, np.float64)
    if A.shape == (2, 3):
        A = np.vstack([A, [0.0, 0.0, 1.0]])
    if A.shape != (3, 3) or not np.isfinite(A).all() or abs(np.linalg.det(A)) < 1e-12:
        raise BopkdError(
            f"crop affine of shape {A.shape} is not an invertible 2D map: pass the crop's (3, 3)"
        )
    return np.linalg.inv(A) @ np.diag([stride, stride, 1.0])


def decode_correspondences(
    mask_prob: np.ndarray,
    code_prob: np.ndarray,
    lut: np.ndarray,
    out_to_image: np.ndarray,
    cfg: DensePnPConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2D-3D correspondences of one crop.

    Args:
        mask_prob: (H, W) visible-mask probabilities; code_prob: (n, H, W) bit probabilities.
        lut: (2**n, 3) mm 3D point of each code (non-finite rows: no point).
        out_to_image: (3, 3) output px -> original image px.

    Returns:
        points_3d (P, 3) float64 mm, points_2d (P, 2) float64 original px.
    """
    cfg = cfg or DensePnPConfig()
    _check_lut(lut, code_prob.shape[0])
    rows, cols = np.nonzero(np.asarray(mask_prob) > cfg.mask_threshold)
    bits = cfg.bit_threshold < np.asarray(code_prob)[:, rows, cols].T
    return _correspondences(rows, cols, bits, lut, out_to_image)


def _check_lut(lut: np.ndarray, n: int) -> None:
    if np.shape(lut) != (2**n, 3):
        raise BopkdError(
            f"code lookup table of shape {np.shape(lut)}: it needs (2**{n}, 3) rows for {n}-bit codes "
            "(SurfaceCode.points of the same bit count)"
        )


def _correspondences(rows, cols, bits, lut, out_to_image) -> tuple[np.ndarray, np.ndarray]:
    p3 = np.asarray(lut, np.float64)[codes_from_bits(bits)].reshape(-1, 3)
    uv = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 1) @ np.asarray(out_to_image, np.float64).T
    p2 = uv[:, :2] / uv[:, 2:3]
    ok = np.isfinite(p3).all(1) & np.isfinite(p2).all(1)
    return p3[ok], p2[ok]


def solve_dense_pnp(
    points_3d: np.ndarray, points_2d: np.ndarray, K: np.ndarray, cfg: DensePnPConfig | None = None
) -> DensePose | None:
    """``cv2.solvePnPRansac`` (EPnP or SQPnP) on (P, 3) mm / (P, 2) px correspondences with (3, 3) K.

    Written here rather than through :func:`bopkd.geometry.pnp.solve_pnp`, which fixes EPnP and has no
    minimum count. Returns None (no exception) when P < ``min_points`` or OpenCV finds no finite pose.
    """
    cfg = cfg or DensePnPConfig()
    p3 = np.ascontiguousarray(points_3d, np.float64).reshape(-1, 3)
    p2 = np.ascontiguousarray(points_2d, np.float64).reshape(-1, 2)
    if len(p3) < cfg.min_points or len(p3) != len(p2):
        return None
    K = np.asarray(K, np.float64).reshape(3, 3)
    cv2.setRNGSeed(int(cfg.seed))
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            p3, p2, K, None, iterationsCount=int(cfg.iters), reprojectionError=float(cfg.reproj_err),
            confidence=float(cfg.confidence), flags=CV_PNP_FLAGS[cfg.method],
        )  # fmt: skip
    except cv2.error:
        return None
    if not ok or rvec is None:
        return None
    n_in = 0 if inl is None else len(inl)
    if cfg.refine and n_in >= 4:
        idx = inl.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(p3[idx], p2[idx], K, None, rvec, tvec)
    R, t = cv2.Rodrigues(rvec)[0], np.asarray(tvec, np.float64).reshape(3)
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        return None
    return DensePose(R, t, int(n_in), len(p3), n_in / len(p3))


def dense_pose(
    mask_prob: np.ndarray,
    code_prob: np.ndarray,
    lut: np.ndarray,
    K: np.ndarray,
    out_to_image: np.ndarray,
    cfg: DensePnPConfig | None = None,
) -> DensePose | None:
    """The pose of one crop: :func:`decode_correspondences` then :func:`solve_dense_pnp` (None: no pose)."""
    cfg = cfg or DensePnPConfig()
    p3, p2 = decode_correspondences(mask_prob, code_prob, lut, out_to_image, cfg)
    return solve_dense_pnp(p3, p2, K, cfg)


def dense_poses(
    mask_logits: torch.Tensor,
    code_logits: torch.Tensor,
    luts: np.ndarray | list[np.ndarray],
    K: np.ndarray,
    out_to_image: np.ndarray,
    cfg: DensePnPConfig | None = None,
) -> list[DensePose | None]:
    """Poses of B crops from the network's logits, thresholded on the tensors' device in one pass.

    Args:
        mask_logits: (B, 1, H, W); code_logits: (B, n, H, W) (``sigmoid(z) > p`` is ``z > logit(p)``).
        luts: one (2**n, 3) mm table for all crops, or a list of B (one per crop's object).
        K: (3, 3) or (B, 3, 3) original intrinsics; out_to_image: (3, 3) or (B, 3, 3).

    Returns:
        B entries, a :class:`DensePose` or None.
    """
    cfg = (cfg or DensePnPConfig()).validate()
    B = mask_logits.shape[0]
    logit = lambda p: float(np.log(p / (1.0 - p)))  # noqa: E731
    with torch.no_grad():
        keep = (mask_logits[:, 0] > logit(cfg.mask_threshold)).cpu().numpy()
        hard = (code_logits > logit(cfg.bit_threshold)).cpu().numpy()
    Ks = np.broadcast_to(np.asarray(K, np.float64), (B, 3, 3))
    As = np.broadcast_to(np.asarray(out_to_image, np.float64), (B, 3, 3))
    out: list[DensePose | None] = []
    for b in range(B):
        lut = luts[b] if isinstance(luts, (list, tuple)) else luts
        _check_lut(lut, hard.shape[1])
        rows, cols = np.nonzero(keep[b])
        p3, p2 = _correspondences(rows, cols, hard[b][:, rows, cols].T, lut, As[b])
        out.append(solve_dense_pnp(p3, p2, Ks[b], cfg))
    return out
