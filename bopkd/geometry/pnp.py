"""Pose from 2D-3D correspondences: OpenCV EPnP inside RANSAC, seeded for reproducibility.

As at inference in WDR (Hu et al., "Wide-Depth-Range 6D Object Pose Estimation in Space", CVPR 2021,
``postprocess.py``) and its distillation follow-up (Guo et al., "Knowledge Distillation for 6D Pose
Estimation by Aligning Distributions of Local Predictions", CVPR 2023): ``cv2.solvePnPRansac`` with
``SOLVEPNP_EPNP`` and a 5 px reprojection threshold over the keypoints of all confident cells. An
optional Levenberg-Marquardt refinement on the inliers (``cv2.solvePnPRefineLM``) is off by default.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


class PnPResult(NamedTuple):
    """R (3, 3) float64 model -> camera, t (3,) float64 mm, number of RANSAC inliers."""

    R: np.ndarray
    t: np.ndarray
    n_inliers: int


def solve_pnp(
    points_3d: np.ndarray,
    points_2d: np.ndarray,
    K: np.ndarray,
    reproj_err: float = 5.0,
    iters: int = 100,
    seed: int = 0,
    confidence: float = 0.99,
    refine: bool = False,
) -> PnPResult | None:
    """Estimate a pose from correspondences with EPnP + RANSAC (OpenCV).

    Args:
        points_3d: (P, 3) model points, mm (P >= 4).
        points_2d: (P, 2) their image points, px, in the image whose intrinsics are K.
        K: (3, 3) intrinsics, px (no distortion).
        reproj_err: RANSAC inlier threshold, px.
        iters: RANSAC iterations.
        seed: seed of OpenCV's RNG (``cv2.setRNGSeed``) so a result is reproducible.
        confidence: RANSAC confidence.
        refine: refine on the inliers with ``cv2.solvePnPRefineLM``.

    Returns:
        :class:`PnPResult`, or None when there are fewer than 4 points or OpenCV finds no pose (or a
        non-finite one).
    """
    p3 = np.ascontiguousarray(np.asarray(points_3d, np.float64).reshape(-1, 3))
    p2 = np.ascontiguousarray(np.asarray(points_2d, np.float64).reshape(-1, 2))
    if len(p3) < 4 or len(p3) != len(p2) or not (np.isfinite(p3).all() and np.isfinite(p2).all()):
        return None
    K = np.asarray(K, np.float64).reshape(3, 3)
    cv2.setRNGSeed(int(seed))
    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            p3,
            p2,
            K,
            None,
            iterationsCount=int(iters),
            reprojectionError=float(reproj_err),
            confidence=float(confidence),
            flags=cv2.SOLVEPNP_EPNP,
        )
    except cv2.error:
        return None
    if not ok or rvec is None:
        return None
    n_in = 0 if inliers is None else len(inliers)
    if refine and n_in >= 4:
        idx = inliers.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(p3[idx], p2[idx], K, None, rvec, tvec)
    R = cv2.Rodrigues(rvec)[0]
    t = np.asarray(tvec, np.float64).reshape(3)
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        return None
    return PnPResult(R, t, int(n_in))
