"""WDR object-space keypoint loss: zero at the GT projection, grows with the error, hand-computed values,
invariances (affine augmentation of the image, global scale)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from bopkd.geometry.projection import apply_affine_2d_torch, project_points_torch
from bopkd.losses.wdr import ray_projection, wdr_keypoint_loss

K = torch.tensor(
    [[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]], dtype=torch.float64
)


def _cells(n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], bool)
    corners = torch.tensor(np.where(bits, 40.0, -40.0))
    cams = []
    for i in range(n):
        R = torch.tensor(Rotation.random(random_state=seed + i).as_matrix())
        t = torch.tensor([rng.uniform(-50, 50), rng.uniform(-50, 50), rng.uniform(400, 1500)])
        cams.append(corners @ R.T + t)
    X = torch.stack(cams)  # (n, 8, 3)
    Ks = K.expand(n, 3, 3)
    uv = project_points_torch(X, Ks)
    d = torch.full((n,), float(np.linalg.norm([80.0, 80.0, 80.0])), dtype=torch.float64)
    return uv, X, Ks, d


def test_zero_for_perfect_keypoints():
    uv, X, Ks, d = _cells()
    loss = wdr_keypoint_loss(uv, X, Ks, d)
    assert loss.shape == (3,)
    assert loss.abs().max() < 1e-12


def test_grows_with_the_pixel_error():
    uv, X, Ks, d = _cells(1)
    direction = torch.tensor([0.6, -0.8], dtype=torch.float64)
    losses = [float(wdr_keypoint_loss(uv + e * direction, X, Ks, d)) for e in (0.0, 0.5, 1, 2, 5, 20, 80)]
    assert all(a < b for a, b in zip(losses, losses[1:], strict=False))


def test_hand_computed_values():
    """Pixel (0, 0) of K = diag(100, 100, 1) is the ray (0, 0, 1); pixel (100, 0) the ray (1, 0, 1)."""
    Kh = torch.tensor([[[100.0, 0, 0], [0, 100.0, 0], [0, 0, 1]]], dtype=torch.float64)
    uv = torch.zeros(1, 8, 2, dtype=torch.float64)
    X = torch.zeros(1, 8, 3, dtype=torch.float64)
    X[0, :, 2] = 1000.0
    X[0, :4, 0] = 10.0  # 10 mm off the ray: |dx|/d = 0.1 >= beta -> 0.1 - 0.01 = 0.09
    X[0, 4:, 1] = 1.0  # 1 mm off: 0.01 < beta -> 0.5 * 0.01**2 / 0.02 = 0.0025
    d = torch.tensor([100.0], dtype=torch.float64)
    expected = (4 * 0.09 + 4 * 0.0025) / 24
    torch.testing.assert_close(wdr_keypoint_loss(uv, X, Kh, d), torch.tensor([expected], dtype=torch.float64))
    # off-axis ray: X = (0, 0, 1000) projects onto (1, 0, 1) at (500, 0, 500): |diff| / d = 0.5 on x and z
    uv2 = torch.zeros(1, 8, 2, dtype=torch.float64)
    uv2[0, :, 0] = 100.0
    X2 = torch.zeros(1, 8, 3, dtype=torch.float64)
    X2[0, :, 2] = 1000.0
    torch.testing.assert_close(
        ray_projection(uv2, X2, Kh)[0, 0], torch.tensor([500.0, 0.0, 500.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        wdr_keypoint_loss(uv2, X2, Kh, torch.tensor([1000.0], dtype=torch.float64)),
        torch.tensor([2 * (0.5 - 0.01) / 3], dtype=torch.float64),
    )


def test_invariant_to_an_affine_map_of_the_image():
    """Keypoints mapped by A and intrinsics A @ K (crop/resize/rotate augmentation) give the same loss."""
    uv, X, Ks, d = _cells(4, seed=3)
    noisy = uv + torch.randn(uv.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    a = np.deg2rad(25.0)
    A = torch.tensor(
        [[0.4 * np.cos(a), -0.4 * np.sin(a), -30.0], [0.4 * np.sin(a), 0.4 * np.cos(a), 9.0], [0, 0, 1]]
    )
    base = wdr_keypoint_loss(noisy, X, Ks, d)
    mapped = wdr_keypoint_loss(apply_affine_2d_torch(noisy, A), X, A @ Ks, d)
    torch.testing.assert_close(mapped, base)


def test_invariant_to_a_global_scale_and_gradient_reduces_the_loss():
    uv, X, Ks, d = _cells(2, seed=5)
    noisy = (uv + 6.0).requires_grad_(True)
    loss = wdr_keypoint_loss(noisy, X, Ks, d)
    torch.testing.assert_close(wdr_keypoint_loss(noisy, 3 * X, Ks, 3 * d), loss)
    loss.sum().backward()
    stepped = noisy.detach() - 2.0 * noisy.grad / noisy.grad.abs().max()
    assert (wdr_keypoint_loss(stepped, X, Ks, d) < loss.detach()).all()
