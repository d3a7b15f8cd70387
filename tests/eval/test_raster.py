"""The toolkit-exact depth rasteriser: fill convention, geometry and agreement with ray casting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bopkd.eval.raster import DepthCrop, ToolkitDepthRenderer
from bopkd.geometry.render import Renderer
from bopkd.records import ObjectModel

K500 = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def box_mesh(sx: float, sy: float, sz: float, c=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A closed box of size sx x sy x sz mm centred at c: 8 vertices, 12 outward triangles."""
    x, y, z = sx / 2, sy / 2, sz / 2
    pts = np.array([[i * x, j * y, k * z] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]) + np.asarray(c)
    faces = np.array(
        [
            [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # x-, x+
            [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # y-, y+
            [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # z-, z+
        ]
    )  # fmt: skip
    return pts, faces


def _px(u: float) -> float:
    """Model x (mm) that projects to image column u at z = 1000 with K500."""
    return 2.0 * (u - 320.0)


def _py(v: float) -> float:
    """Model y (mm) that projects to image row v at z = 1000 with K500."""
    return 2.0 * (v - 240.0)


def test_fill_convention_matches_llvmpipe():
    """Edges through pixel centres: left edges in, right edges out, of horizontal edges the lower one in.

    Expected pixels measured with the BOP toolkit's vispy renderer on Mesa llvmpipe (same geometry).
    """
    pts = np.array(
        [
            [_px(100.5), _py(50.5), 0],  # a square, two triangles
            [_px(200.5), _py(50.5), 0],
            [_px(200.5), _py(150.5), 0],
            [_px(100.5), _py(150.5), 0],
            [_px(300.5), _py(300.5), 0],  # a right triangle with its hypotenuse through pixel centres
            [_px(400.5), _py(300.5), 0],
            [_px(300.5), _py(400.5), 0],
            [0, 0, -50.0],  # unused vertices: they set the near/far planes as in the toolkit
            [0, 0, 50.0],
        ]
    )
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    r = ToolkitDepthRenderer(640, 480)
    r.add_object(1, pts, faces)
    d = r.render(1, np.eye(3), np.array([0, 0, 1000.0]), K500).full(640, 480) > 0
    quad = d[:250]
    ys, xs = np.nonzero(quad)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (51, 150, 100, 199)
    assert quad.sum() == 100 * 100
    tri = d[250:]
    assert tri.sum() == 4950  # the hypotenuse (a right edge) is out
    for row in (301, 350, 399):
        assert np.flatnonzero(d[row]).tolist() == list(range(300, 700 - row))


def test_fronto_parallel_face_has_its_depth_and_exact_extent():
    pts, faces = box_mesh(200, 100, 50)
    r = ToolkitDepthRenderer(640, 480)
    r.add_object(3, pts, faces)
    crop = r.render(3, np.eye(3), np.array([0, 0, 1025.0]), K500)  # front face at z = 1000
    d = crop.full(640, 480)
    # The front face projects to u in [270, 370], v in [215, 265] (edges between pixel centres).
    ys, xs = np.nonzero(d)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (270, 369, 215, 264)
    # 16-bit depth buffer between near 1000 and far 1050: within a few micrometres of 1000 mm.
    assert np.abs(d[d > 0] - 1000.0).max() < 0.01
    assert crop.depth.dtype == np.float32
    x0, y0, x1, y1 = crop.box
    assert x0 <= 270 and x1 >= 370 and y0 <= 215 and y1 >= 265


def test_nothing_behind_the_camera_or_outside_the_image():
    pts, faces = box_mesh(100, 100, 100)
    r = ToolkitDepthRenderer(640, 480)
    r.add_object(1, pts, faces)
    assert r.render(1, np.eye(3), np.array([0, 0, -500.0]), K500).depth.size == 0
    assert r.render(1, np.eye(3), np.array([5000, 0, 500.0]), K500).depth.size == 0
    assert not DepthCrop(np.zeros((0, 0), np.float32), 0, 0).full(4, 3).any()


def test_agrees_with_ray_casting_up_to_edge_pixels(lmo_sample_root):
    """Independent reference: the open3d ray caster through pixel centres (bopkd.geometry.render)."""
    from bopkd.data.ply_numpy import read_mesh

    pts, faces = read_mesh(lmo_sample_root / "lmo" / "models_eval" / "obj_000005.ply")
    ours = ToolkitDepthRenderer(640, 480)
    ours.add_object(5, pts, faces)
    ray = Renderer(640, 480)
    ray.add_object(5, ObjectModel(pts=pts, faces=faces))
    K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(1)
    n_pix = n_diff = n_far = 0
    for R in Rotation.random(6, random_state=2).as_matrix():
        t = np.array([rng.uniform(-100, 100), rng.uniform(-80, 80), rng.uniform(600, 1100)])
        a = ours.render(5, R, t, K).full(640, 480)
        b = ray.render_depth(5, R, t, K)
        n_pix += int((b > 0).sum())
        n_diff += int(((a > 0) != (b > 0)).sum())
        both = (a > 0) & (b > 0)
        diff = np.abs(a[both] - b[both])  # mm: 16-bit depth buffer vs float ray hits
        n_far += int((diff > 0.01).sum())  # only where surfaces meet at a depth discontinuity
        assert np.median(diff) < 0.002
    assert n_pix > 20000 and n_diff <= max(3, n_pix // 5000) and n_far <= n_pix // 1000


@pytest.mark.parametrize("angle", [0.0, 0.7])
def test_render_is_deterministic_and_pose_consistent(angle):
    pts, faces = box_mesh(80, 60, 40)
    r = ToolkitDepthRenderer(320, 240)
    r.add_object(2, pts, faces)
    R = Rotation.from_rotvec([0.3, angle, 0.1]).as_matrix()
    t = np.array([10.0, -5.0, 600.0])
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    a, b = r.render(2, R, t, K), r.render(2, R, t, K)
    np.testing.assert_array_equal(a.depth, b.depth)
    # Nearest depth is at least the distance of the closest vertex and at most the farthest.
    z = (pts @ R.T + t)[:, 2]
    d = a.depth[a.depth > 0]
    assert d.min() >= z.min() - 0.01 and d.max() <= z.max() + 0.01
