"""Procedural object models: closed meshes, exact diameters, and the symmetries they declare (or lack).

The asymmetry check is a proof, not a sample: a rigid motion mapping a surface onto itself preserves its
area centroid ``c`` and its second-moment tensor ``M`` about ``c``; when ``M``'s eigenvalues are distinct,
the only such rotations are the identity and the three half turns about ``M``'s eigenvectors through
``c``. So a surface with distinct eigenvalues that none of those three half turns maps onto itself has
no rotational symmetry at all.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from bopkd.data.procedural import PROCEDURAL_OBJECTS, exact_diameter, make_object, procedural_models
from bopkd.geometry.symmetry import symmetry_transforms


@pytest.fixture(scope="module")
def objects():
    return procedural_models()


def _distance_to_surface(model, pts: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(model.pts.astype(np.float32)), o3d.core.Tensor(model.faces.astype(np.uint32))
    )
    return scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()


def _surface_moments(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area centroid (3,), eigenvalues (3,) ascending and eigenvectors (3, 3) of the surface's second
    moment tensor about the centroid (exact for triangles: the per-triangle covariance formula)."""
    v = model.pts[model.faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    cen = v.mean(axis=1)
    c = (area[:, None] * cen).sum(0) / area.sum()
    d = v - c
    # Integral of x x^T over a triangle = A/12 (sum_i d_i d_i^T + 9 m m^T), m = centroid.
    s = np.einsum("fij,fik->fjk", d, d)
    m = d.mean(axis=1)
    M = (area[:, None, None] / 12.0 * (s + 9.0 * np.einsum("fj,fk->fjk", m, m))).sum(0)
    w, V = np.linalg.eigh(M)
    return c, w, V


def test_catalogue_has_six_asymmetric_one_discrete_one_continuous(objects):
    kinds = {i: inf.symmetry_kind for i, (_, inf) in objects.items()}
    assert sorted(kinds) == sorted(PROCEDURAL_OBJECTS) and len(kinds) >= 8
    assert list(kinds.values()).count("none") >= 6
    assert list(kinds.values()).count("discrete") == 1 and list(kinds.values()).count("continuous") == 1


@pytest.mark.parametrize("obj_id", sorted(PROCEDURAL_OBJECTS))
def test_mesh_is_closed_oriented_outward_with_unit_normals(objects, obj_id):
    model, info = objects[obj_id]
    f = model.faces
    # Closed and consistently oriented: every directed edge once, and its reverse once.
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    keys = directed[:, 0] * len(model.pts) + directed[:, 1]
    rev = directed[:, 1] * len(model.pts) + directed[:, 0]
    assert len(np.unique(keys)) == len(keys)
    assert np.array_equal(np.sort(keys), np.sort(rev))
    # One piece, no unused vertices.
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(model.pts), o3d.utility.Vector3iVector(f.astype(np.int32))
    )
    clusters, _, _ = mesh.cluster_connected_triangles()
    assert len(np.unique(np.asarray(clusters))) == 1
    assert len(np.unique(f)) == len(model.pts)
    # Outward: positive signed volume (divergence theorem).
    v = model.pts[f]
    volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0
    assert volume > 0
    # Unit vertex normals that agree with the faces around them.
    np.testing.assert_allclose(np.linalg.norm(model.normals, axis=1), 1.0, atol=1e-9)
    fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (np.einsum("ij,ij->i", model.normals[f[:, 0]], fn) > 0).mean() > 0.99
    # Colours per part: several distinct ones.
    assert model.colors.dtype == np.uint8 and model.colors.shape == model.pts.shape
    assert len(np.unique(model.colors, axis=0)) >= 2


@pytest.mark.parametrize("obj_id", sorted(PROCEDURAL_OBJECTS))
def test_info_diameter_is_exact_and_box_is_the_vertices(objects, obj_id):
    model, info = objects[obj_id]
    from scipy.spatial.distance import pdist

    # Brute force over all vertex pairs.
    assert info.diameter == pytest.approx(float(pdist(model.pts).max()), abs=1e-9)
    assert 60.0 <= info.diameter <= 250.0
    np.testing.assert_allclose(info.min_xyz, model.pts.min(0))
    np.testing.assert_allclose(info.min_xyz + info.size_xyz, model.pts.max(0))
    # Centred on the box centre.
    np.testing.assert_allclose(info.min_xyz + info.size_xyz / 2, 0.0, atol=1e-6)


def test_exact_diameter_on_a_known_set():
    pts = np.array([[0, 0, 0], [3, 0, 0], [0, 4, 0], [1, 1, 1], [0.5, 0.5, 0.2], [2, 2, 12]], dtype=float)
    assert exact_diameter(pts) == pytest.approx(np.sqrt(4 + 4 + 144))


@pytest.mark.parametrize("obj_id", [i for i, o in PROCEDURAL_OBJECTS.items() if o.symmetry == "none"])
def test_asymmetric_objects_have_no_rotational_symmetry(objects, obj_id):
    model, info = objects[obj_id]
    c, w, V = _surface_moments(model)
    # Distinct eigenvalues: only half turns about the eigenvectors can be symmetries.
    assert np.min(np.diff(w) / w[1:]) > 0.05, w
    for k in range(3):
        Rk = 2.0 * np.outer(V[:, k], V[:, k]) - np.eye(3)  # half turn about axis k
        moved = (model.pts - c) @ Rk.T + c
        dist = _distance_to_surface(model, moved)
        # Far from a symmetry: a large share of the vertices land well off the surface.
        assert np.quantile(dist, 0.9) > 0.05 * info.diameter, (k, np.quantile(dist, 0.9))


@pytest.mark.parametrize("obj_id", [i for i, o in PROCEDURAL_OBJECTS.items() if o.symmetry != "none"])
def test_declared_symmetries_map_the_model_onto_itself(objects, obj_id):
    model, info = objects[obj_id]
    assert info.is_symmetric
    Rs, ts = symmetry_transforms(info, max_sym_disc_step=0.05)
    assert len(Rs) > 1
    for R, t in zip(Rs, ts, strict=True):
        moved = model.pts @ R.T + t
        dist = _distance_to_surface(model, moved)
        # 48-gon circles deviate from true circles by r (1 - cos(pi / 48)) < 0.1 mm for r <= 40 mm.
        assert dist.max() < 0.1, dist.max()
    # Colours map too: the nearest vertex of a moved vertex has its colour (but for seam vertices).
    from scipy.spatial import cKDTree

    tree = cKDTree(model.pts)
    for R, t in zip(Rs[:: max(1, len(Rs) // 7)], ts[:: max(1, len(Rs) // 7)], strict=True):
        _, nn = tree.query(model.pts @ R.T + t)
        assert (model.colors[nn] == model.colors).all(axis=1).mean() > 0.9


def test_a_rotation_that_is_no_symmetry_is_detected_for_the_symmetric_objects_too(objects):
    """The surface-distance check can fail: a quarter turn is no symmetry of the twin-post block."""
    model, info = objects[7]
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert _distance_to_surface(model, model.pts @ R.T).max() > 10.0


def test_build_is_deterministic():
    from bopkd.data.procedural import _make_object_cached

    a, ia = _make_object_cached.__wrapped__(3, 6.0)  # two real builds, not the cache
    b, ib = _make_object_cached.__wrapped__(3, 6.0)
    assert (
        np.array_equal(a.pts, b.pts)
        and np.array_equal(a.faces, b.faces)
        and np.array_equal(a.colors, b.colors)
    )
    assert ia.diameter == ib.diameter
    c, _ = make_object(3)
    c.pts[:] = 0  # callers get copies
    assert np.array_equal(make_object(3)[0].pts, a.pts)


def test_unknown_id_is_an_error():
    with pytest.raises(KeyError, match="no procedural object 99"):
        make_object(99)
