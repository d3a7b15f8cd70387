"""VSD on hand-built scenes whose values follow from pixel counts, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bopkd.eval.raster import ToolkitDepthRenderer
from bopkd.eval.vsd import BOP19_TAUS, dist_image, pixel_rays, vsd, vsd_from_renders

from .test_raster import box_mesh

W, H = 640, 480
K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
DELTA = 15.0
# A 200 x 200 x 50 mm box; with t = (0, 0, 1025) its front face (z = 1000) covers columns 270..369 and
# rows 190..289: 100 x 100 pixels, edges half-way between pixel centres. 1 px = 2 mm at z = 1000.
BOX = box_mesh(200, 200, 50)
DIAM = float(np.sqrt(200**2 + 200**2 + 50**2))
T0 = np.array([0.0, 0.0, 1025.0])
I3 = np.eye(3)


@pytest.fixture(scope="module")
def ren():
    r = ToolkitDepthRenderer(W, H)
    r.add_object(1, *BOX)
    # An occluding plate in front (z = 900..910), covering columns 150..319 and rows 150..329.
    x0, x1 = 2 * (150 - 320) * 0.9, 0.0
    y0, y1 = 2 * (150 - 240) * 0.9, 2 * (330 - 240) * 0.9
    r.add_object(9, *box_mesh(x1 - x0, y1 - y0, 10, c=((x0 + x1) / 2, (y0 + y1) / 2, 0)))
    return r


def _scene_depth(ren, *objs):
    """Test depth (float32 mm) of several (obj, R, t): the nearest surface, 0 where there is none."""
    d = np.zeros((H, W), np.float32)
    for o, R, t in objs:
        x = ren.render(o, R, t, K).full(W, H)
        d = np.where((x > 0) & ((d == 0) | (x < d)), x, d)
    return d


def _vsd(ren, depth, Re, te, Rg=I3, tg=T0):
    return vsd(Re, te, Rg, tg, depth, K, DELTA, BOP19_TAUS, DIAM, ren, 1)


def test_exact_pose_is_zero(ren):
    depth = _scene_depth(ren, (1, I3, T0))
    np.testing.assert_array_equal(_vsd(ren, depth, I3, T0), np.zeros(10))


def test_lateral_shift_gives_the_non_overlap_fraction(ren):
    depth = _scene_depth(ren, (1, I3, T0))
    for k in (1, 5, 10):  # shift by k pixels: union 100 (100 + k), complement 2 * 100 k, equal depths
        e = _vsd(ren, depth, I3, T0 + [2.0 * k, 0, 0])
        np.testing.assert_array_equal(e, np.full(10, (2 * 100 * k) / float(100 * (100 + k))))


def test_depth_shift_beyond_tau_is_one_below_is_the_silhouette_loss(ren):
    depth = _scene_depth(ren, (1, I3, T0))
    e = _vsd(ren, depth, I3, T0 + [0, 0, 120.0])
    # Every overlapping pixel is >= 120 mm off (0.418 of the diameter, at most 0.422 at the corners):
    # cost 1 for tau <= 0.4, so VSD = 1; for tau 0.45 and 0.5 no cost, and VSD = (GT - estimate
    # pixels) / GT pixels. The estimate's front face at z = 1120 spans 2 * 44.64 px: 90 x 90 centres.
    np.testing.assert_array_equal(e[:8], np.ones(8))
    np.testing.assert_array_equal(e[8:], np.full(2, (10000 - 8100) / 10000.0))


def test_occluded_parts_do_not_count(ren):
    depth = _scene_depth(ren, (1, I3, T0), (9, I3, np.array([0, 0, 905.0])))
    # GT visible: columns 320..369 (the plate hides 270..319). The exact pose scores 0.
    np.testing.assert_array_equal(_vsd(ren, depth, I3, T0), np.zeros(10))
    # Shifted 10 px left: its visible part is columns 320..359 (4000 px) of the GT's 5000; the
    # columns it moves into are hidden by the plate (100 mm in front of it), so they do not count.
    np.testing.assert_array_equal(_vsd(ren, depth, I3, T0 + [-20.0, 0, 0]), np.full(10, 1000 / 5000.0))
    # Shifted 10 px right (columns 280..379): 280..319 are behind the plate, 370..379 have no
    # measurement and count as visible (BOP'19 mode): visible 6000, of which 1000 outside the GT's.
    np.testing.assert_array_equal(_vsd(ren, depth, I3, T0 + [20.0, 0, 0]), np.full(10, 1000 / 6000.0))


def test_a_symmetric_pose_scores_zero(ren):
    depth = _scene_depth(ren, (1, I3, T0))
    # The box is square in x-y: turned by 90 deg about z it looks the same.
    Rz = Rotation.from_rotvec([0, 0, np.pi / 2]).as_matrix()
    np.testing.assert_array_equal(_vsd(ren, depth, Rz, T0), np.zeros(10))


def test_monotonic_in_the_error(ren):
    depth = _scene_depth(ren, (1, I3, np.array([0, 0, 1025.0])))
    prev = np.zeros(10)
    for k in range(1, 15):
        R = Rotation.from_rotvec([0.0, 0.02 * k, 0.0]).as_matrix()
        e = _vsd(ren, depth, R, T0 + [3.0 * k, 0, 4.0 * k])
        assert np.all(e >= prev - 1e-12) and np.all(e <= 1.0)
        prev = e
    # VSD is non-increasing in tau (a larger tolerance forgives more).
    assert np.all(np.diff(prev) <= 0)


def test_no_overlap_at_all_is_one(ren):
    depth = _scene_depth(ren, (1, I3, T0))
    np.testing.assert_array_equal(_vsd(ren, depth, I3, T0 + [400.0, 0, 0]), np.ones(10))
    empty = ren.render(1, I3, np.array([0, 0, -100.0]), K)
    np.testing.assert_array_equal(
        vsd_from_renders(depth, empty, empty, K, DELTA, BOP19_TAUS, DIAM), np.ones(10)
    )


def test_distance_images_use_integer_pixel_coordinates():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0, 2000, (7, 9)).astype(np.float32)
    depth[2, 3] = 0
    Kc = np.array([[600.0, 0, 4.3], [0, 610.0, 3.1], [0, 0, 1]])
    ys, xs = np.mgrid[0:7, 0:9]
    Z = depth.astype(np.float64)
    ref = np.sqrt(((xs - 4.3) / 600.0 * Z) ** 2 + ((ys - 3.1) / 610.0 * Z) ** 2 + Z**2)
    np.testing.assert_allclose(dist_image(depth, Kc), ref, rtol=1e-15)
    assert dist_image(depth, Kc)[2, 3] == 0
    rx, ry = pixel_rays(Kc, 9, 7)
    np.testing.assert_array_equal(rx, (np.arange(9) - 4.3) / 600.0)
    np.testing.assert_array_equal(ry, (np.arange(7) - 3.1) / 610.0)


def test_matches_a_full_image_numpy_reference(ren):
    """The compiled crop pass against the toolkit's array formulas on whole images."""
    depth = _scene_depth(ren, (1, I3, T0), (9, I3, np.array([0, 0, 905.0])))
    depth = np.round(depth)  # as stored in a uint16 PNG
    R = Rotation.from_rotvec([0.05, -0.08, 0.1]).as_matrix()
    te = T0 + [12.0, -7.0, 9.0]
    gt = ren.render(1, I3, T0, K).full(W, H)
    est = ren.render(1, R, te, K).full(W, H)
    dt, dg, de = dist_image(depth, K), dist_image(gt, K), dist_image(est, K)
    vg = ((dg.astype(np.float32) - dt.astype(np.float32) <= DELTA) | (dt == 0)) & (dg > 0)
    ve = ((de.astype(np.float32) - dt.astype(np.float32) <= DELTA) | (dt == 0)) & (de > 0)
    ve |= vg & (de > 0)
    inter, union = vg & ve, vg | ve
    d = np.abs(dg[inter] - de[inter]) / DIAM
    ref = [(np.sum(d >= tau) + union.sum() - inter.sum()) / float(union.sum()) for tau in BOP19_TAUS]
    np.testing.assert_array_equal(_vsd(ren, depth, R, te), ref)
    assert 0 < ref[0] < 1
