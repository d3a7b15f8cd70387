"""The surface-code cache: hit, miss on a changed model or setting, and a corrupt file re-encoded."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

import bopkd.data.surface_codes as sc_cache
from bopkd.data.ply import save_ply
from bopkd.data.surface_codes import load_or_encode
from bopkd.errors import BopkdError
from bopkd.records import ObjectModel


def _write_sphere(models, obj_id=1, radius=30.0):
    m = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=10)
    model = ObjectModel(pts=np.asarray(m.vertices), faces=np.asarray(m.triangles, dtype=np.int64))
    save_ply(models / f"obj_{obj_id:06d}.ply", model)


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A models folder with one sphere, and a counter of encode_model calls."""
    models = tmp_path / "ds" / "models"
    _write_sphere(models)
    calls = []
    real = sc_cache.encode_model

    def counting(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(sc_cache, "encode_model", counting)
    return models, calls


def _same(a, b):
    for k in ("codes", "points", "vertices", "faces"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.bits == b.bits


def test_first_call_encodes_and_caches_beside_the_dataset_then_hits(dataset):
    models, calls = dataset
    first = load_or_encode(models, [1], bits=6, min_vertices=0)
    path = models.parent / "surface_codes" / "obj_000001.npz"
    assert path.is_file() and len(calls) == 1
    assert [p.name for p in path.parent.iterdir()] == ["obj_000001.npz"]  # no temporary left behind
    second = load_or_encode(models, [1], bits=6, min_vertices=0)
    assert len(calls) == 1
    _same(first[1], second[1])
    assert second[1].codes.dtype == np.int64 and second[1].faces.dtype == np.int64


def test_changed_setting_or_model_re_encodes(dataset, tmp_path):
    models, calls = dataset
    cache = tmp_path / "elsewhere"
    load_or_encode(models, [1], cache_dir=cache, bits=6, min_vertices=0)
    load_or_encode(models, [1], cache_dir=cache, bits=7, min_vertices=0)
    assert len(calls) == 2
    load_or_encode(models, [1], cache_dir=cache, bits=7, min_vertices=500)
    assert len(calls) == 3
    _write_sphere(models, radius=31.0)
    out = load_or_encode(models, [1], cache_dir=cache, bits=7, min_vertices=500)
    assert len(calls) == 4
    np.testing.assert_allclose(np.linalg.norm(out[1].vertices, axis=1).max(), 31.0, rtol=1e-5)
    load_or_encode(models, [1], cache_dir=cache, bits=7, min_vertices=500)
    assert len(calls) == 4


@pytest.mark.parametrize("damage", ["garbage", "truncate", "inconsistent"])
def test_corrupt_cache_file_is_re_encoded_with_a_warning(dataset, damage):
    models, calls = dataset
    good = load_or_encode(models, [1], bits=6, min_vertices=0)[1]
    path = models.parent / "surface_codes" / "obj_000001.npz"
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        z = dict(np.load(path))
        z["points"] = z["points"][:10]
        np.savez(path, **z)
    with pytest.warns(UserWarning, match="unreadable surface-code cache"):
        again = load_or_encode(models, [1], bits=6, min_vertices=0)[1]
    assert len(calls) == 2
    _same(good, again)
    load_or_encode(models, [1], bits=6, min_vertices=0)  # rewritten: a hit again
    assert len(calls) == 2


def test_missing_model_is_a_one_line_error(dataset):
    models, _ = dataset
    with pytest.raises(BopkdError, match="obj_000002.ply"):
        load_or_encode(models, [2], bits=6, min_vertices=0)
    with pytest.raises(BopkdError, match="models part"):
        load_or_encode(models.parent / "nope", [1])
