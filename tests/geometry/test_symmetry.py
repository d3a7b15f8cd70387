"""Symmetry transforms from models_info annotations."""

from __future__ import annotations

import numpy as np

from bopkd.geometry.symmetry import axis_angle_matrix, symmetry_transforms
from bopkd.records import ObjectInfo


def _info(**kw) -> ObjectInfo:
    return ObjectInfo(obj_id=1, diameter=100.0, min_xyz=np.zeros(3), size_xyz=np.ones(3), **kw)


def test_no_symmetry_is_identity():
    R, t = symmetry_transforms(_info())
    np.testing.assert_array_equal(R, np.eye(3)[None])
    np.testing.assert_array_equal(t, np.zeros((1, 3)))


def test_discrete_symmetries_keep_identity_first():
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [0, 0, 5]
    R, t = symmetry_transforms(_info(symmetries_discrete=[flip]))
    assert R.shape == (2, 3, 3)
    np.testing.assert_array_equal(R[1], flip[:3, :3])
    np.testing.assert_array_equal(t[1], [0, 0, 5])


def test_continuous_symmetry_discretisation_as_in_the_toolkit():
    axis, offset = np.array([0.0, 0.0, 2.0]), np.array([1.0, 0.0, 0.0])
    R, t = symmetry_transforms(
        _info(symmetries_continuous=[{"axis": axis, "offset": offset}]), max_sym_disc_step=0.01
    )
    n = int(np.ceil(np.pi / 0.01))  # 315 steps of 2 pi / n; the toolkit (cea62d65) keeps steps 0..n-1
    assert R.shape == (n, 3, 3)
    np.testing.assert_array_equal(R[0], np.eye(3))  # step 0 is the identity, so an exact pose has error 0
    np.testing.assert_array_equal(t[0], np.zeros(3))
    np.testing.assert_allclose(R[1], axis_angle_matrix([0, 0, 1], 2 * np.pi / n), atol=1e-12)
    # Every transform rotates about the axis through the offset: the offset point is fixed.
    np.testing.assert_allclose(np.einsum("sij,j->si", R, offset) + t, np.tile(offset, (n, 1)), atol=1e-9)
    np.testing.assert_allclose(np.einsum("sij,sik->sjk", R, R), np.tile(np.eye(3), (n, 1, 1)), atol=1e-12)


def test_discrete_times_continuous():
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    R, _ = symmetry_transforms(
        _info(symmetries_discrete=[flip], symmetries_continuous=[{"axis": [0, 0, 1], "offset": [0, 0, 0]}]),
        0.1,
    )
    assert R.shape == (2 * int(np.ceil(np.pi / 0.1)), 3, 3)
