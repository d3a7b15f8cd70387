"""The fast PLY reader of evaluation models, against open3d (bopkd.data.ply.load_ply)."""

from __future__ import annotations

import numpy as np
import pytest

from bopkd.data.ply import load_ply, save_ply
from bopkd.data.ply_numpy import read_mesh
from bopkd.errors import MissingFileError
from bopkd.records import ObjectModel


def _same_as_open3d(path):
    pts, faces = read_mesh(path)
    m = load_ply(path)
    np.testing.assert_array_equal(pts, m.pts)
    np.testing.assert_array_equal(faces, m.faces)


def test_real_binary_and_ascii_models(lmo_sample_root, oracle_root):
    # LM-O models_eval: binary little endian, xyz only; models: ASCII with normals and RGBA colours.
    _same_as_open3d(lmo_sample_root / "lmo" / "models_eval" / "obj_000009.ply")
    _same_as_open3d(lmo_sample_root / "lmo" / "models" / "obj_000001.ply")
    _same_as_open3d(oracle_root / "lmo" / "models_eval" / "obj_000011.ply")


@pytest.mark.parametrize("ascii", [False, True])
def test_round_trip_of_files_written_by_bopkd(tmp_path, ascii):
    rng = np.random.default_rng(0)
    m = ObjectModel(pts=rng.normal(size=(50, 3)) * 30, faces=rng.integers(0, 50, (80, 3)))
    p = tmp_path / "m.ply"
    save_ply(p, m, ascii=ascii)
    _same_as_open3d(p)


def test_quads_fall_back_to_open3d(tmp_path):
    p = tmp_path / "quad.ply"
    p.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    )
    pts, faces = read_mesh(p)
    assert pts.shape == (4, 3) and faces.shape == (2, 3)  # open3d triangulates the quad


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(MissingFileError, match="obj_000001.ply"):
        read_mesh(tmp_path / "obj_000001.ply")
