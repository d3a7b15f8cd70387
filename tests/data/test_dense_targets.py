"""Dense code targets: the output camera, the visible mask, the per-pixel code and occlusion."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from bopkd.data.augment import crop_affine, scaling
from bopkd.data.dense_targets import code_image, code_renderer, code_targets, output_camera
from bopkd.errors import BopkdError
from bopkd.geometry.render import Renderer
from bopkd.geometry.surface_code import bits_to_codes, encode_model
from bopkd.records import ObjectModel

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
BOX = (240.0, 160.0, 160.0)  # x0, y0, side px: the crop around the principal point
SIZE = (128, 128)


def _rot(ax, ay):
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    return np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])


@pytest.fixture(scope="module")
def codes():
    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=40.0, resolution=16)
    box = o3d.geometry.TriangleMesh.create_box(60.0, 60.0, 20.0)
    models = {
        1: ObjectModel(pts=np.asarray(sphere.vertices), faces=np.asarray(sphere.triangles, dtype=np.int64)),
        2: ObjectModel(
            pts=np.asarray(box.vertices) - [30.0, 30.0, 10.0], faces=np.asarray(box.triangles, dtype=np.int64)
        ),
    }
    return {o: encode_model(m, bits=13, min_vertices=2**13) for o, m in models.items()}


def test_output_camera_is_the_crop_affine_then_the_stride():
    center = (BOX[0] + BOX[2] / 2, BOX[1] + BOX[2] / 2)
    expect = scaling(0.5) @ crop_affine(center, BOX[2], 256) @ K  # crop to 256 px input, output stride 2
    np.testing.assert_allclose(output_camera(K, BOX, SIZE), expect, atol=1e-12)
    X = np.array([12.0, -7.0, 500.0])
    uv = K @ X
    uv = uv[:2] / uv[2]
    uo = output_camera(K, BOX, SIZE) @ X
    np.testing.assert_allclose(uo[:2] / uo[2], (uv - BOX[:2]) * 128 / 160, atol=1e-9)
    with pytest.raises(BopkdError, match="side"):
        output_camera(K, (0, 0, 0))


def test_mask_is_the_renderers_instance_mask_and_codes_decode_to_the_hit_point(codes):
    K_out = output_camera(K, BOX, SIZE)
    inst = [
        (1, _rot(0.3, 0.5), np.array([-10.0, 0.0, 600.0])),
        (2, _rot(0.7, -0.2), np.array([45.0, 30.0, 520.0])),
    ]
    renderer = code_renderer(codes, SIZE)
    ref = Renderer(*SIZE)
    for o, c in codes.items():
        ref.add_object(o, c.model())
    out = ref.render(K_out, inst)
    for i, (obj_id, R, t) in enumerate(inst):
        mask, planes = code_targets(renderer, inst, i, K_out, SIZE, codes)
        np.testing.assert_array_equal(mask, out.inst == i)
        assert mask.sum() > 200 and planes.shape == (13, 128, 128) and planes.dtype == np.uint8
        assert not planes[:, ~mask].any()
        # Independent: back-project each pixel centre with the rendered depth into the model frame.
        v, u = np.nonzero(mask)
        ray = np.linalg.inv(K_out) @ np.stack([u + 0.5, v + 0.5, np.ones_like(u, dtype=float)])
        X = ((ray * out.depth[v, u]).T - t) @ R  # R^T (X_cam - t)
        P = codes[obj_id].decode(bits_to_codes(planes[:, v, u]))
        err = np.linalg.norm(P - X, axis=1)
        # Bound: the hit lies within an edge of its vertex, which lies within its cluster's radius.
        sc = codes[obj_id]
        radius = np.zeros(2**sc.bits)
        np.maximum.at(radius, sc.codes, np.linalg.norm(sc.vertices - sc.points[sc.codes], axis=1))
        tri = sc.vertices[sc.faces]
        edge = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max()
        bound = radius[bits_to_codes(planes[:, v, u])] + edge + 1e-3
        assert (err <= bound).all() and np.median(err) < 1.0, (np.median(err), (err - bound).max())
        p = (P @ R.T + t) @ K_out.T
        px = np.linalg.norm(p[:, :2] / p[:, 2:] - np.stack([u + 0.5, v + 0.5], 1), axis=1)
        assert np.percentile(px, 99) < 1.5, np.percentile(px, 99)  # px on the 128 grid


def test_occluder_removes_exactly_the_pixels_it_covers(codes):
    K_out = output_camera(K, BOX, SIZE)
    target = (1, np.eye(3), np.array([0.0, 0.0, 600.0]))
    occluder = (2, np.eye(3), np.array([30.0, 0.0, 450.0]))
    renderer = code_renderer(codes, SIZE)
    alone, code_alone = code_image(renderer, [target], 0, K_out, codes, SIZE)
    occl, code_occl = code_image(renderer, [occluder, target], 1, K_out, codes, SIZE)
    cover = renderer.render(K_out, [occluder]).depth > 0
    assert (alone & cover).sum() > 100
    np.testing.assert_array_equal(occl, alone & ~cover)
    np.testing.assert_array_equal(code_occl[occl], code_alone[occl])
    assert (code_occl[~occl] == -1).all()
    behind, _ = code_image(
        renderer, [target, (2, np.eye(3), np.array([30.0, 0.0, 900.0]))], 0, K_out, codes, SIZE
    )
    np.testing.assert_array_equal(behind, alone)


def test_instance_outside_the_crop_gives_an_empty_target(codes):
    K_out = output_camera(K, BOX, SIZE)
    mask, planes = code_targets(
        code_renderer(codes, SIZE), [(1, np.eye(3), np.array([400.0, 0.0, 600.0]))], 0, K_out, SIZE, codes
    )
    assert not mask.any() and not planes.any()


def test_a_renderer_without_the_encoded_mesh_is_refused(codes):
    K_out = output_camera(K, BOX, SIZE)
    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=40.0, resolution=16)
    raw = Renderer(*SIZE)
    raw.add_object(
        1,
        ObjectModel(
            pts=np.asarray(sphere.vertices) * 1.01, faces=np.asarray(sphere.triangles, dtype=np.int64)
        ),
    )
    with pytest.raises(BopkdError, match="encoded mesh"):
        code_targets(raw, [(1, np.eye(3), np.array([0.0, 0.0, 600.0]))], 0, K_out, SIZE, codes)
    with pytest.raises(BopkdError, match="load_or_encode"):
        code_targets(raw, [(3, np.eye(3), np.array([0.0, 0.0, 600.0]))], 0, K_out, SIZE, codes)
