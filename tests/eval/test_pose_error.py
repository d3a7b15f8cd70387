"""Pose errors (MSSD, MSPD, ADD, ADI, AD) against per-pair loops written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.spatial.transform import Rotation

from bopkd.eval import pose_error as pe
from bopkd.geometry.symmetry import symmetry_transforms
from bopkd.records import ObjectInfo

RNG = np.random.default_rng(0)
K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _pts(n=300, rng=RNG):
    return rng.uniform(-50, 50, (n, 3)) * np.array([1.0, 0.7, 0.4])


def _poses(n, rng=RNG, z=(600, 1200)):
    R = Rotation.random(n, random_state=int(rng.integers(1 << 30))).as_matrix()
    t = np.stack([rng.uniform(-100, 100, n), rng.uniform(-80, 80, n), rng.uniform(*z, n)], axis=1)
    return R, t


def _perturb(R, t, rng=RNG, deg=10.0, mm=20.0):
    dR = Rotation.from_rotvec(rng.normal(size=(len(R), 3)) * np.deg2rad(deg) / np.sqrt(3)).as_matrix()
    return dR @ R, t + rng.normal(size=t.shape) * mm


# --- references, one pair at a time, straight from the formulas ----------------------------------------


def ref_mssd(Re, te, Rg, tg, pts, syms):
    pe_ = pts @ Re.T + te
    return min(np.linalg.norm(pe_ - (pts @ (Rg @ sR).T + (Rg @ st + tg)), axis=1).max() for sR, st in syms)


def ref_proj(P, K):
    h = P @ K.T
    return h[:, :2] / h[:, 2:3]


def ref_mspd(Re, te, Rg, tg, K, pts, syms):
    pe_ = ref_proj(pts @ Re.T + te, K)
    return min(
        np.linalg.norm(pe_ - ref_proj(pts @ (Rg @ sR).T + (Rg @ st + tg), K), axis=1).max() for sR, st in syms
    )


def ref_adi(Re, te, Rg, tg, pts):
    return cdist(pts @ Rg.T + tg, pts @ Re.T + te).min(axis=1).mean()


def _syms(info):
    R, t = symmetry_transforms(info, 0.01)
    return list(zip(R, t, strict=True))


INFOS = {
    "none": ObjectInfo(1, 120.0, np.zeros(3), np.ones(3)),
    "discrete": ObjectInfo(
        2, 120.0, np.zeros(3), np.ones(3), symmetries_discrete=[np.diag([-1.0, -1, 1, 1])]
    ),
    "continuous": ObjectInfo(
        3, 120.0, np.zeros(3), np.ones(3), symmetries_continuous=[{"axis": [0, 0, 1], "offset": [0, 0, 5]}]
    ),
}


@pytest.mark.parametrize("kind", list(INFOS))
def test_mssd_and_mspd_match_per_pair_reference(kind):
    pts = _pts(200)
    Rg, tg = _poses(7)
    Re, te = _perturb(Rg, tg)
    sR, st = symmetry_transforms(INFOS[kind], 0.01)
    syms = _syms(INFOS[kind])
    got_s = pe.mssd(Re, te, Rg, tg, pts, sR, st)
    got_p = pe.mspd(Re, te, Rg, tg, K, pts, sR, st)
    for i in range(7):
        assert got_s[i] == pytest.approx(ref_mssd(Re[i], te[i], Rg[i], tg[i], pts, syms), rel=1e-12)
        assert got_p[i] == pytest.approx(ref_mspd(Re[i], te[i], Rg[i], tg[i], K, pts, syms), rel=1e-12)


@pytest.mark.parametrize("deg,mm", [(1.0, 2.0), (20.0, 40.0), (180.0, 0.0)])
def test_adi_grid_and_kd_tree_paths_agree(monkeypatch, deg, mm):
    """Close pairs use the grid, far ones the k-d tree (chunked): both exact, so they agree."""
    pts = _pts(400)
    Rg, tg = _poses(8)
    Re, te = _perturb(Rg, tg, deg=deg, mm=mm)
    grid = pe.adi(Re, te, Rg, tg, pts)
    monkeypatch.setattr(pe.ModelNN, "GRID_MAX", -1.0)  # every pair to the k-d tree
    monkeypatch.setattr(pe, "CHUNK_ELEMS", 1)  # one pair per chunk
    tree = pe.adi(Re, te, Rg, tg, pts, workers=2)
    np.testing.assert_allclose(grid, tree, rtol=1e-12)
    for i in range(3):
        assert grid[i] == pytest.approx(ref_adi(Re[i], te[i], Rg[i], tg[i], pts), rel=1e-12)


def test_batch_equals_one_pair_at_a_time():
    pts = _pts(100)
    Rg, tg = _poses(5)
    Re, te = _perturb(Rg, tg)
    sR, st = symmetry_transforms(INFOS["continuous"], 0.05)
    batch = (pe.mssd(Re, te, Rg, tg, pts, sR, st), pe.mspd(Re, te, Rg, tg, K, pts, sR, st))
    for i in range(5):
        assert pe.mssd(Re[i], te[i], Rg[i], tg[i], pts, sR, st)[0] == batch[0][i]
        assert pe.mspd(Re[i], te[i], Rg[i], tg[i], K, pts, sR, st)[0] == batch[1][i]


def test_exact_pose_is_zero_and_symmetric_pose_is_zero():
    pts = _pts(150)
    Rg, tg = _poses(4)
    for kind in INFOS:
        sR, st = symmetry_transforms(INFOS[kind], 0.01)
        assert np.all(pe.mssd(Rg, tg, Rg, tg, pts, sR, st) == 0)
        assert np.all(pe.mspd(Rg, tg, Rg, tg, K, pts, sR, st) == 0)
    # A pose related by a symmetry (x -> S x) has no error, although ADD sees it.
    sR, st = symmetry_transforms(INFOS["discrete"], 0.01)
    Re, te = Rg @ sR[1], np.einsum("nij,j->ni", Rg, st[1]) + tg
    assert np.all(pe.mssd(Re, te, Rg, tg, pts, sR, st) < 1e-9)
    assert np.all(pe.add(Re, te, Rg, tg, pts) > 1.0)
    # Continuous symmetry: any rotation about the axis is within the discretisation error.
    info = INFOS["continuous"]
    sR, st = symmetry_transforms(info, 0.01)
    ang = 0.3456
    Rz = Rotation.from_rotvec([0, 0, ang]).as_matrix()
    off = np.array([0.0, 0, 5])
    Re, te = Rg @ Rz, np.einsum("nij,j->ni", Rg, off - Rz @ off) + tg
    r = np.linalg.norm(pts[:, :2], axis=1).max()
    assert np.all(pe.mssd(Re, te, Rg, tg, pts, sR, st) <= 2 * np.pi / 315 / 2 * r * 1.0001)


def test_translation_errors_have_closed_forms():
    pts = _pts(120)
    Rg, tg = _poses(5)
    d = np.array([3.0, -4.0, 12.0])  # |d| = 13
    sR, st = symmetry_transforms(INFOS["none"], 0.01)
    np.testing.assert_allclose(pe.mssd(Rg, tg + d, Rg, tg, pts, sR, st), 13.0, rtol=1e-12)
    np.testing.assert_allclose(pe.add(Rg, tg + d, Rg, tg, pts), 13.0, rtol=1e-12)
    # ADI: the nearest estimate vertex is at most |d| away.
    assert np.all(pe.adi(Rg, tg + d, Rg, tg, pts) <= 13.0 + 1e-9)


def test_add_adi_ad_match_references():
    pts = _pts(250)
    Rg, tg = _poses(6)
    Re, te = _perturb(Rg, tg)
    add = pe.add(Re, te, Rg, tg, pts)
    adi = pe.adi(Re, te, Rg, tg, pts)
    for i in range(6):
        ref = np.linalg.norm((pts @ Re[i].T + te[i]) - (pts @ Rg[i].T + tg[i]), axis=1).mean()
        assert add[i] == pytest.approx(ref, rel=1e-12)
        assert adi[i] == pytest.approx(ref_adi(Re[i], te[i], Rg[i], tg[i], pts), rel=1e-9)
    assert np.all(adi <= add + 1e-9)
    np.testing.assert_array_equal(pe.ad(Re, te, Rg, tg, pts, symmetric=True), adi)
    np.testing.assert_array_equal(pe.ad(Re, te, Rg, tg, pts, symmetric=False), add)


def test_errors_grow_with_the_perturbation():
    pts = _pts(150)
    Rg, tg = _poses(1)
    sR, st = symmetry_transforms(INFOS["none"], 0.01)
    prev = [-1.0] * 4
    for k in range(1, 6):
        Re = Rotation.from_rotvec([0, 0.02 * k, 0]).as_matrix() @ Rg
        te = tg + np.array([2.0 * k, 0, 0])
        cur = [
            pe.mssd(Re, te, Rg, tg, pts, sR, st)[0],
            pe.mspd(Re, te, Rg, tg, K, pts, sR, st)[0],
            pe.add(Re, te, Rg, tg, pts)[0],
            pe.adi(Re, te, Rg, tg, pts)[0],
        ]
        assert all(c > p for c, p in zip(cur, prev, strict=True))
        prev = cur


def test_sphere_gates_as_the_toolkit():
    # spheres_overlap: |t_e - t_g| < diameter (strict).
    tg = np.array([[0.0, 0, 1000]])
    assert pe.spheres_overlap(tg + [99.999, 0, 0], tg, 100.0)[0]
    assert not pe.spheres_overlap(tg + [100.0, 0, 0], tg, 100.0)[0]
    # Projections: centres 0.2 apart on the image plane at z = 1000 vs radius * (1/z_e + 1/z_g).
    te = np.array([[200.0, 0, 1000]])
    assert not pe.sphere_projections_overlap(te, tg, 100.0)[0]  # 0.2 == 100 * 0.002, strict
    assert pe.sphere_projections_overlap(te, tg, 100.01)[0]
    assert not pe.sphere_projections_overlap(np.array([[0.0, 0, 0]]), tg, 1e9)[0]  # z = 0
