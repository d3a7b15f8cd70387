"""PLY models and image files: round trips and the real LM-O models."""

from __future__ import annotations

import numpy as np
import pytest

from bopkd.data import images
from bopkd.data.bop_json import load_models_info
from bopkd.data.ply import load_ply, save_ply
from bopkd.errors import BopkdError
from bopkd.records import ObjectModel


def _tetra() -> ObjectModel:
    pts = np.array([[0, 0, 0], [10, 0, 0], [0, 20, 0], [0, 0, 30]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    normals = pts / np.maximum(np.linalg.norm(pts, axis=1, keepdims=True), 1)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=np.uint8)
    return ObjectModel(pts=pts, faces=faces, normals=normals, colors=colors)


@pytest.mark.parametrize("ascii", [True, False])
def test_ply_round_trip(tmp_path, ascii):
    m = _tetra()
    save_ply(tmp_path / "obj_000001.ply", m, ascii=ascii)
    back = load_ply(tmp_path / "obj_000001.ply")
    np.testing.assert_allclose(back.pts, m.pts, atol=1e-5)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_array_equal(back.colors, m.colors)
    np.testing.assert_allclose(back.normals, m.normals, atol=1e-5)


def test_broken_ply_is_a_clear_error(tmp_path):
    p = tmp_path / "obj_000001.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\n")
    with pytest.raises(BopkdError, match="obj_000001.ply"):
        load_ply(p)


def test_real_lmo_models_match_models_info(lmo_sample_root):
    lmo = lmo_sample_root / "lmo"
    infos = load_models_info(lmo / "models/models_info.json")
    m = load_ply(lmo / "models/obj_000001.ply")
    assert m.pts.shape == (5841, 3) and m.faces.shape == (11678, 3)
    assert m.normals is not None and m.colors is not None
    np.testing.assert_allclose(m.pts.min(0), infos[1].min_xyz, atol=1e-3)
    np.testing.assert_allclose(m.pts.max(0) - m.pts.min(0), infos[1].size_xyz, atol=1e-3)
    ev = load_ply(lmo / "models_eval/obj_000001.ply")
    assert ev.pts.shape == (2825, 3) and ev.normals is None


def test_depth_png_scaling(tmp_path):
    depth = np.array([[0.0, 100.05], [1234.5, 6553.5]])
    images.save_depth(tmp_path / "d.png", depth, depth_scale=0.1)
    back = images.load_depth(tmp_path / "d.png", depth_scale=0.1)
    np.testing.assert_allclose(back, depth, atol=0.05 + 1e-9)
    with pytest.raises(BopkdError, match="uint16"):
        images.save_depth(tmp_path / "e.png", np.array([[70000.0]]), depth_scale=1.0)


def test_rgb_and_mask_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
    images.save_rgb(tmp_path / "000001.png", rgb)
    np.testing.assert_array_equal(images.load_rgb(tmp_path / "000001.png"), rgb)
    mask = rng.random((6, 8)) > 0.5
    images.save_mask(tmp_path / "000001_000000.png", mask)
    np.testing.assert_array_equal(images.load_mask(tmp_path / "000001_000000.png"), mask)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    with pytest.raises(BopkdError, match="bad.png"):
        images.load_rgb(tmp_path / "bad.png")
