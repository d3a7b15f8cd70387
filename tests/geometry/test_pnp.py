"""EPnP + RANSAC wrapper: recovers known poses, matches cv2.solvePnP on exact data, is seeded."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from bopkd.geometry.pnp import solve_pnp
from bopkd.geometry.projection import project_points

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _scene(seed: int, n_cells: int = 10):
    """Box corners repeated for n_cells cells (as at inference) and a random pose in front of the camera."""
    rng = np.random.default_rng(seed)
    lo, size = np.array([-50.0, -40.0, -30.0]), np.array([100.0, 80.0, 60.0])
    bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], bool)
    corners = np.where(bits, lo + size, lo)
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.array([rng.uniform(-80, 80), rng.uniform(-60, 60), rng.uniform(600, 1200)])
    pts = np.tile(corners, (n_cells, 1))
    return pts, R, t, rng


def _rot_err_deg(Ra, Rb):
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def test_exact_projections_recover_pose_and_match_cv2_solvepnp():
    for seed in range(4):
        pts, R, t, _ = _scene(seed, n_cells=1)
        uv = project_points(pts, K, R, t)
        res = solve_pnp(pts, uv, K, seed=0)
        assert res is not None
        assert res.n_inliers == 8
        assert _rot_err_deg(res.R, R) < 1e-4
        np.testing.assert_allclose(res.t, t, atol=1e-3)
        ok, rvec, tvec = cv2.solvePnP(pts, uv, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
        assert ok
        assert _rot_err_deg(res.R, cv2.Rodrigues(rvec)[0]) < 1e-4
        np.testing.assert_allclose(res.t, tvec.reshape(3), atol=1e-3)


def test_noisy_projections_with_outliers():
    pts, R, t, rng = _scene(7, n_cells=10)
    uv = project_points(pts, K, R, t) + rng.normal(0, 1.0, (len(pts), 2))
    bad = rng.choice(len(pts), 16, replace=False)  # 20 % gross outliers
    uv[bad] += rng.uniform(40, 120, (16, 2)) * rng.choice([-1, 1], (16, 2))
    res = solve_pnp(pts, uv, K, reproj_err=5.0, iters=200, seed=1, refine=True)
    assert res is not None
    assert _rot_err_deg(res.R, R) < 2.0
    assert np.linalg.norm(res.t - t) < 0.02 * t[2]
    assert 60 <= res.n_inliers <= 64  # the 64 clean points (1 px noise) and no outlier


def test_seeded_results_are_reproducible():
    pts, R, t, rng = _scene(3, n_cells=10)
    uv = project_points(pts, K, R, t) + rng.normal(0, 3.0, (len(pts), 2))
    a = solve_pnp(pts, uv, K, seed=5)
    b = solve_pnp(pts, uv, K, seed=5)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.t, b.t)
    assert a.n_inliers == b.n_inliers


def test_degenerate_inputs_return_none():
    pts, R, t, _ = _scene(0, n_cells=1)
    uv = project_points(pts, K, R, t)
    assert solve_pnp(pts[:3], uv[:3], K) is None
    assert solve_pnp(pts, uv[:7], K) is None
    uv[0, 0] = np.nan
    assert solve_pnp(pts, uv, K) is None
