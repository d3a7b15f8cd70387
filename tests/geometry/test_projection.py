"""Projection helpers against OpenCV (cv2.projectPoints) as the independent reference."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from bopkd.geometry.projection import (
    apply_affine_2d,
    apply_affine_2d_torch,
    backproject_rays_torch,
    project_points,
    project_points_torch,
    transform_points,
)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _pose(rng):
    R = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    t = np.array([rng.uniform(-100, 100), rng.uniform(-100, 100), rng.uniform(500, 1500)])
    return R, t


def test_project_points_equals_cv2():
    rng = np.random.default_rng(0)
    for _ in range(5):
        R, t = _pose(rng)
        pts = rng.uniform(-80, 80, (50, 3))
        ref, _ = cv2.projectPoints(pts, cv2.Rodrigues(R)[0], t, K, None)
        np.testing.assert_allclose(project_points(pts, K, R, t), ref.reshape(-1, 2), atol=1e-8)


def test_project_camera_frame_points_without_pose():
    rng = np.random.default_rng(1)
    R, t = _pose(rng)
    pts = rng.uniform(-80, 80, (10, 3))
    np.testing.assert_allclose(
        project_points(transform_points(pts, R, t), K), project_points(pts, K, R, t), atol=1e-9
    )


def test_project_points_torch_batched_equals_cv2():
    rng = np.random.default_rng(2)
    poses = [_pose(rng) for _ in range(3)]
    pts = rng.uniform(-80, 80, (3, 20, 3))
    Ks = np.stack([K, K * [[0.5], [0.5], [1]], K])
    got = project_points_torch(
        torch.tensor(pts),
        torch.tensor(Ks),
        torch.tensor(np.stack([p[0] for p in poses])),
        torch.tensor(np.stack([p[1] for p in poses])),
    ).numpy()
    for i, (R, t) in enumerate(poses):
        ref, _ = cv2.projectPoints(pts[i], cv2.Rodrigues(R)[0], t, Ks[i], None)
        np.testing.assert_allclose(got[i], ref.reshape(-1, 2), atol=1e-8)


def test_backprojected_ray_reprojects_to_the_pixel():
    uv = torch.tensor([[[10.0, 20.0], [600.0, 400.0], [325.2611, 242.04899]]], dtype=torch.float64)
    rays = backproject_rays_torch(uv, torch.tensor(K)[None])
    np.testing.assert_allclose(rays[..., 2].numpy(), 1.0)
    for depth in (1.0, 750.0):
        back = project_points_torch(rays * depth, torch.tensor(K)[None])
        np.testing.assert_allclose(back.numpy(), uv.numpy(), atol=1e-9)


def test_affine_2d_general_matrix_and_inverse():
    rng = np.random.default_rng(3)
    a = np.deg2rad(17.0)
    A = np.array(
        [[1.3 * np.cos(a), -1.3 * np.sin(a), -40.0], [1.3 * np.sin(a), 1.3 * np.cos(a), 12.0], [0, 0, 1]]
    )
    pts = rng.uniform(0, 640, (30, 2))
    # reference: cv2.transform with the 2x3 part
    ref = cv2.transform(pts[None], A[:2]).reshape(-1, 2)
    np.testing.assert_allclose(apply_affine_2d(pts, A), ref, atol=1e-9)
    np.testing.assert_allclose(apply_affine_2d(pts, A[:2]), ref, atol=1e-9)
    np.testing.assert_allclose(apply_affine_2d(apply_affine_2d(pts, A), np.linalg.inv(A)), pts, atol=1e-9)
    got_t = apply_affine_2d_torch(torch.tensor(pts), torch.tensor(A)).numpy()
    np.testing.assert_allclose(got_t, ref, atol=1e-9)


def test_affine_composed_intrinsics_match_mapped_projection():
    """Projecting with A @ K equals projecting with K and mapping by A (the augmentation contract)."""
    rng = np.random.default_rng(4)
    R, t = _pose(rng)
    pts = rng.uniform(-80, 80, (20, 3))
    a = np.deg2rad(-30.0)
    A = np.array(
        [[0.5 * np.cos(a), -0.5 * np.sin(a), 7.0], [0.5 * np.sin(a), 0.5 * np.cos(a), -3.0], [0, 0, 1]]
    )
    np.testing.assert_allclose(
        project_points(pts, A @ K, R, t), apply_affine_2d(project_points(pts, K, R, t), A), atol=1e-8
    )
