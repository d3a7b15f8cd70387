"""Pinhole projection of 3D points and 2D affine maps of pixel coordinates (numpy and batched torch).

Conventions (BOP format document): ``x_cam = R @ x_model + t`` with t in mm; the image point of a
camera-frame point ``X`` is ``u ~ K @ X`` (homogeneous), in px. ``K`` may be any invertible 3x3 matrix
(for example ``A @ K`` after an affine crop/resize/rotation ``A`` of the image), so the full matrix
product is used, not only fx, fy, cx, cy. No lens distortion (BOP images are undistorted).

Written by hand because these few lines are needed on batched torch tensors with gradients, which
``cv2.projectPoints`` does not offer; the tests check them against ``cv2.projectPoints``.
"""

from __future__ import annotations

import numpy as np
import torch


def transform_points(pts: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Model to camera frame: (N, 3) mm -> (N, 3) mm, ``R @ p + t``."""
    return np.asarray(pts, np.float64) @ np.asarray(R, np.float64).T + np.asarray(t, np.float64).reshape(1, 3)


def project_points(
    pts: np.ndarray, K: np.ndarray, R: np.ndarray | None = None, t: np.ndarray | None = None
) -> np.ndarray:
    """Project model points (N, 3) mm with pose (R (3,3), t (3,) mm) and intrinsics K (3,3) to (N, 2) px.

    With ``R`` and ``t`` None the points are taken as already in the camera frame.
    """
    X = np.asarray(pts, np.float64)
    if R is not None:
        X = transform_points(X, R, np.zeros(3) if t is None else t)
    h = X @ np.asarray(K, np.float64).T
    return h[:, :2] / h[:, 2:3]


def project_points_torch(
    pts: torch.Tensor, K: torch.Tensor, R: torch.Tensor | None = None, t: torch.Tensor | None = None
) -> torch.Tensor:
    """Batched, differentiable projection.

    Args:
        pts: (..., N, 3) model points, mm (camera frame when R is None).
        K: (..., 3, 3) intrinsics, px.
        R: (..., 3, 3) rotations model -> camera, or None.
        t: (..., 3) translations, mm, or None.

    Returns:
        (..., N, 2) px.
    """
    X = pts
    if R is not None:
        X = X @ R.transpose(-1, -2)
    if t is not None:
        X = X + t.unsqueeze(-2)
    h = X @ K.transpose(-1, -2)
    return h[..., :2] / h[..., 2:3]


def backproject_rays_torch(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Ray directions ``K^-1 [u, v, 1]^T`` (not normalised) of pixels uv (..., N, 2) with K (..., 3, 3)."""
    ones = torch.ones_like(uv[..., :1])
    h = torch.cat([uv, ones], dim=-1)
    return h @ torch.linalg.inv(K).transpose(-1, -2)


def apply_affine_2d(pts: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Map 2D points (..., 2) px by a (3, 3) (or (2, 3)) matrix: ``[x', y', w'] = A [x, y, 1]``, divided by w'."""
    A = np.asarray(A, np.float64)
    if A.shape == (2, 3):
        A = np.vstack([A, [0.0, 0.0, 1.0]])
    p = np.asarray(pts, np.float64)
    h = p @ A[:, :2].T + A[:, 2]
    return h[..., :2] / h[..., 2:3]


def apply_affine_2d_torch(pts: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Torch version of :func:`apply_affine_2d`: pts (..., N, 2), A (..., 3, 3)."""
    h = pts @ A[..., :2, :2].transpose(-1, -2) + A[..., :2, 2].unsqueeze(-2)
    w = pts @ A[..., 2:3, :2].transpose(-1, -2) + A[..., 2:3, 2].unsqueeze(-2)
    return h / w
