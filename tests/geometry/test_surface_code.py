"""Hierarchical surface codes: balanced splits, locality of codes, cluster points, decode error."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from bopkd.errors import BopkdError
from bopkd.geometry.surface_code import (
    bits_to_codes,
    cluster_points,
    code_bits,
    densify,
    encode_model,
    hierarchical_codes,
)
from bopkd.records import ObjectModel


def _sphere(radius: float = 50.0, resolution: int = 20) -> ObjectModel:
    m = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=resolution)
    return ObjectModel(pts=np.asarray(m.vertices), faces=np.asarray(m.triangles, dtype=np.int64))


def _box(size=(40.0, 60.0, 80.0)) -> ObjectModel:
    m = o3d.geometry.TriangleMesh.create_box(*size)
    pts = np.asarray(m.vertices) - np.asarray(size) / 2
    return ObjectModel(pts=pts, faces=np.asarray(m.triangles, dtype=np.int64))


def _prefix_len(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """Number of leading bits two codes share."""
    x = np.asarray(a ^ b, dtype=np.int64)
    return bits - np.array([int(v).bit_length() for v in x])


@pytest.mark.parametrize("n", [1000, 1001, 37, 5])
def test_every_level_splits_into_groups_whose_sizes_differ_by_at_most_one(n):
    pts = np.random.default_rng(n).normal(size=(n, 3)) * [30.0, 10.0, 5.0]
    bits = 8
    codes = hierarchical_codes(pts, bits)
    assert codes.shape == (n,) and codes.min() >= 0 and codes.max() < 2**bits
    for level in range(1, bits + 1):
        sizes = np.bincount(codes >> (bits - level), minlength=2**level)
        assert sizes.max() - sizes.min() <= 1, (level, sizes)
        siblings = sizes.reshape(-1, 2)
        assert (siblings[:, 0] - siblings[:, 1] >= 0).all() and (siblings[:, 0] - siblings[:, 1] <= 1).all()
    if n <= 2**bits:  # once alone, a vertex keeps bit 0: all codes differ and fill the 0-half first
        assert len(np.unique(codes)) == n


def test_first_split_separates_two_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 3)) + [100.0, 0, 0]
    b = rng.normal(size=(300, 3)) + [0, 100.0, 0]
    pts = np.concatenate([a, b])
    codes = hierarchical_codes(pts, 4)
    top = codes >> 3
    assert len(np.unique(top[:300])) == 1 and len(np.unique(top[300:])) == 1 and top[0] != top[300]
    np.testing.assert_array_equal(codes, hierarchical_codes(pts, 4))


def test_balanced_split_beats_a_median_cut_along_a_wrong_axis():
    # An L-shaped cloud: the principal-axis median cut is refined by the 2-means steps; the within-half
    # sum of squares must not exceed the best of the three coordinate-axis median cuts.
    rng = np.random.default_rng(1)
    pts = np.concatenate(
        [rng.uniform([0, 0, 0], [100, 10, 10], (400, 3)), rng.uniform([0, 0, 0], [10, 60, 10], (200, 3))]
    )
    half = hierarchical_codes(pts, 1)

    def sse(h):
        return sum(((pts[h == k] - pts[h == k].mean(0)) ** 2).sum() for k in (0, 1))

    axis_cuts = [(np.argsort(np.argsort(pts[:, k], kind="stable")) >= 300).astype(int) for k in range(3)]
    assert sse(half) <= min(sse(c) for c in axis_cuts) + 1e-6


def test_nearby_vertices_share_longer_prefixes_than_far_ones():
    model = _sphere(resolution=30)
    bits = 12
    codes = hierarchical_codes(model.pts, bits)
    edges = model.faces[:, :2]
    near = _prefix_len(codes[edges[:, 0]], codes[edges[:, 1]], bits).mean()
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(codes), (2, 5000))
    far = _prefix_len(codes[i], codes[j], bits).mean()
    assert near > far + 3, (near, far)  # random pairs share ~1 bit, mesh neighbours many more


def test_cluster_points_are_centroids_or_the_deepest_populated_ancestor():
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(5, 3))
    bits = 4
    codes = hierarchical_codes(pts, bits)
    out = cluster_points(pts, codes, bits)
    for c in range(2**bits):  # independent loop: the longest prefix of c that some vertex has
        for level in range(bits, -1, -1):
            sel = (codes >> (bits - level)) == (c >> (bits - level))
            if sel.any():
                np.testing.assert_allclose(out[c], pts[sel].mean(0), atol=1e-6)
                break


def test_decode_error_small_and_decreasing_with_bits():
    model = _sphere(radius=50.0, resolution=40)  # 1562 vertices
    errs = []
    for bits in (4, 7, 10):
        sc = encode_model(model, bits=bits, min_vertices=0)
        errs.append(np.linalg.norm(sc.decode(sc.codes) - sc.vertices, axis=1).mean())
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.05 * 50.0  # 1024 clusters of ~1.5 vertices: a fraction of the vertex spacing


def test_densify_keeps_the_surface_and_reaches_the_vertex_count():
    box = _box()
    pts, faces = densify(box.pts, box.faces, 1000)
    assert len(pts) >= 1000 and faces.max() < len(pts)
    half = np.array([20.0, 30.0, 40.0])
    on_face = np.isclose(np.abs(pts), half, atol=1e-9).any(axis=1)
    assert on_face.all() and (np.abs(pts) <= half + 1e-9).all()

    def area(p, f):
        return 0.5 * np.linalg.norm(np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]]), axis=1).sum()

    np.testing.assert_allclose(area(pts, faces), area(box.pts, box.faces), rtol=1e-9)
    same = densify(box.pts, box.faces, 4)
    assert len(same[0]) == 8


def test_box_codes_decode_close_to_the_surface_and_every_code_maps_to_a_point():
    sc = encode_model(_box(), bits=10, min_vertices=2**10)
    assert sc.points.shape == (1024, 3) and np.isfinite(sc.points).all()
    err = np.linalg.norm(sc.decode(sc.codes) - sc.vertices, axis=1)
    assert err.max() < 0.1 * 40.0, err.max()
    with pytest.raises(BopkdError, match="out of range"):
        sc.decode(np.array([1024]))


def test_bit_planes_round_trip_with_bit_zero_the_most_significant():
    codes = np.array([[0, 1], [2**15, 2**16 - 1]])
    planes = code_bits(codes, 16)
    assert planes.shape == (16, 2, 2) and planes.dtype == np.uint8
    assert planes[0, 1, 0] == 1 and planes[:, 1, 0].sum() == 1 and planes[15, 0, 1] == 1
    np.testing.assert_array_equal(bits_to_codes(planes), codes)


def test_bad_bits_is_a_one_line_error():
    with pytest.raises(BopkdError, match="bits = 0"):
        hierarchical_codes(np.zeros((4, 3)), 0)


def test_lmo_obj1_default_encoding_fills_every_code(lmo_sample_root):
    from bopkd.data.ply import load_ply

    model = load_ply(lmo_sample_root / "lmo" / "models" / "obj_000001.ply")
    sc = encode_model(model)
    assert len(sc.vertices) >= 2**16 and len(np.unique(sc.codes)) == 2**16
    err = np.linalg.norm(sc.decode(sc.codes) - sc.vertices, axis=1)
    assert err.mean() < 0.5, err.mean()  # mm, object diameter 102 mm
