"""The ray-casting renderer against independent computations and the toolkit-rendered oracle depth."""

from __future__ import annotations

import numpy as np

from bopkd.data import BopDataset
from bopkd.geometry.render import Renderer
from bopkd.records import ObjectModel


def _square(z_size: float = 0.0) -> ObjectModel:
    pts = np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], dtype=np.float64)
    return ObjectModel(pts=pts, faces=np.array([[0, 1, 2], [0, 2, 3]]))


def test_fronto_parallel_plane_depth_and_extent():
    K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    r = Renderer(80, 60)
    r.add_object(1, _square())
    out = r.render(K, [(1, np.eye(3), np.array([0.0, 0.0, 500.0]))], normals=True)
    hit = out.depth > 0
    # The square spans +-50 mm at 500 mm: +-10 px around the principal point; pixel centres u+0.5 inside.
    us = np.nonzero(hit.any(0))[0]
    vs = np.nonzero(hit.any(1))[0]
    assert (us.min(), us.max()) == (30, 49) and (vs.min(), vs.max()) == (20, 39)
    np.testing.assert_allclose(out.depth[hit], 500.0, atol=1e-3)
    assert (out.inst[hit] == 0).all() and (out.inst[~hit] == -1).all()
    np.testing.assert_allclose(np.abs(out.normals[hit][:, 2]), 1.0, atol=1e-6)
    assert (out.normals[hit][:, 2] < 0).all()  # facing the camera


def test_layer_triangle_ids_are_minus_one_on_a_miss():
    K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    r = Renderer(80, 60)
    r.add_object(1, _square())
    # A tilted square leaves pixels of its projected box unhit.
    c, s = np.cos(0.7), np.sin(0.7)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    (layer,) = r.render_layers(K, [(1, R, np.array([0.0, 0.0, 500.0]))])
    hit = layer.depth > 0
    assert layer.prim.dtype == np.int64 and (~hit).any()
    assert (layer.prim[~hit] == -1).all() and set(np.unique(layer.prim[hit])) <= {0, 1}


def test_occlusion_nearest_wins():
    K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
    r = Renderer(80, 60)
    r.add_object(1, _square())
    # Far square: px 34..45 in x; near square (x + 60 mm at 400 mm): px 42..67 in x, in front.
    out = r.render(
        K, [(1, np.eye(3), np.array([0.0, 0.0, 800.0])), (1, np.eye(3), np.array([60.0, 0.0, 400.0]))]
    )
    assert out.inst[30, 44] == 1 and np.isclose(out.depth[30, 44], 400.0, atol=1e-3)
    assert out.inst[30, 36] == 0 and np.isclose(out.depth[30, 36], 800.0, atol=1e-3)


def test_matches_toolkit_rendered_depth(oracle_root):
    ds = BopDataset("lmo", oracle_root)
    r = Renderer(640, 480)
    for o in ds.obj_ids:
        r.add_object(o, ds.model(o, eval=True))
    for im in ds.im_ids("test", 2):
        gts = ds.scene_gt("test", 2)[im]
        out = r.render(ds.scene_camera("test", 2)[im].K, [(g.obj_id, g.R, g.t) for g in gts])
        d = ds.depth("test", 2, im)
        both = (out.depth > 0) & (d > 0)
        close = np.abs(out.depth[both] - d[both]) <= 0.5 + 1e-6  # depth PNG stores whole mm
        assert close.mean() > 0.998, close.mean()
