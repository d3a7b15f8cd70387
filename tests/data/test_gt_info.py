"""GT masks and scene_gt_info: hand-computed cases and the toolkit-made files of the minibop oracle."""

from __future__ import annotations

import numpy as np
import pytest

from bopkd.data import BopDataset
from bopkd.data.gt_info import calc_2d_bbox, compute_gt_info, depth_to_dist, visib_mask
from bopkd.geometry.render import Renderer
from bopkd.records import ObjectModel

K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
W, H = 80, 60


def _square(half: float = 50.0) -> ObjectModel:
    pts = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], dtype=np.float64)
    return ObjectModel(pts=pts, faces=np.array([[0, 1, 2], [0, 2, 3]]))


def _renderer() -> Renderer:
    r = Renderer(W, H)
    r.add_object(1, _square())
    return r


def test_depth_to_dist_uses_integer_pixel_coordinates():
    d = np.full((H, W), 500.0)
    dist = depth_to_dist(d, K)
    v, u = 7, 65
    assert dist[v, u] == pytest.approx(500.0 * np.sqrt(((u - 40) / 100) ** 2 + ((v - 30) / 100) ** 2 + 1))
    assert dist[30, 40] == pytest.approx(500.0)
    assert depth_to_dist(np.zeros((H, W)), K).max() == 0


def test_visib_mask_bop19_rule():
    obj = np.array([[0.0, 100, 100, 100, 100]])
    scene = np.array([[50.0, 100, 80, 90, 0]])
    # no object | same depth | 20 behind | 10 behind (within delta 15) | no scene depth (visible in bop19)
    assert visib_mask(scene, obj, 15.0).tolist() == [[False, True, False, True, True]]


def test_calc_2d_bbox_has_no_plus_one():
    assert calc_2d_bbox(np.array([3, 7, 5]), np.array([10, 2, 4])) == (3, 2, 4, 8)


def test_occlusion_truncation_and_missing_depth():
    r = _renderer()
    # 0: a square at 500 mm spanning px 30..49 x 20..39; 1: a square 10 mm behind it, shifted right by
    # 50 mm (px 40..59 at 510 mm, roughly); 2: a square 100 mm behind, overlapping; 3: a truncated square
    # at the left border (x from -250 to -150 mm at 500 mm: px -10..9, of which -10..-1 are outside).
    insts = [
        (1, np.eye(3), np.array([0.0, 0.0, 500.0])),
        (1, np.eye(3), np.array([50.0, 0.0, 510.0])),
        (1, np.eye(3), np.array([-30.0, 0.0, 600.0])),
        (1, np.eye(3), np.array([-200.0, 0.0, 500.0])),
    ]
    scene = r.render(K, insts).depth
    scene[0:5, :] = 0.0  # no depth in the top rows (nothing there anyway)
    res = compute_gt_info(r, K, insts, scene)
    alone = [r.render(K, [i]).depth for i in insts]
    # 0 is in front everywhere: fully visible.
    a0 = res[0].info
    assert a0.px_count_all == a0.px_count_visib == a0.px_count_valid == 400 and a0.visib_fract == 1.0
    assert a0.bbox_obj == a0.bbox_visib == (30, 20, 19, 19)
    # 1 is only 10 mm behind 0: the overlap counts as visible (delta 15 mm).
    a1 = res[1].info
    assert a1.px_count_visib == a1.px_count_all == (alone[1] > 0).sum()
    # 2 is 100 mm behind 0: hidden where 0 covers it.
    a2 = res[2].info
    hidden = (alone[2] > 0) & (alone[0] > 0)
    assert hidden.sum() > 0
    assert a2.px_count_visib == (alone[2] > 0).sum() - hidden.sum()
    assert a2.visib_fract == pytest.approx(a2.px_count_visib / a2.px_count_all)
    np.testing.assert_array_equal(res[2].full("mask_visib", (H, W)), (alone[2] > 0) & ~hidden)
    np.testing.assert_array_equal(res[2].full("mask", (H, W)), alone[2] > 0)
    # 3 is truncated: px_count_all counts the 10 columns left of the image, bbox_obj starts at x = -10.
    a3 = res[3].info
    inside = (alone[3] > 0).sum()
    assert inside == 10 * 20 and a3.px_count_all == 20 * 20
    assert a3.bbox_obj == (-10, 20, 19, 19) and a3.bbox_visib == (0, 20, 9, 19)
    assert a3.visib_fract == pytest.approx(0.5)


def test_invisible_and_outside_instances():
    r = _renderer()
    insts = [(1, np.eye(3), np.array([0.0, 0.0, 500.0])), (1, np.eye(3), np.array([0.0, 0.0, 700.0]))]
    scene = r.render(K, insts).depth
    res = compute_gt_info(r, K, insts + [(1, np.eye(3), np.array([5000.0, 0.0, 500.0]))], scene)
    hidden, outside = res[1].info, res[2].info
    assert hidden.px_count_visib == 0 and hidden.px_count_all > 0 and hidden.visib_fract == 0.0
    assert hidden.bbox_obj == hidden.bbox_visib == (-1, -1, -1, -1)  # the toolkit leaves both at -1
    assert outside.px_count_all == 0 and outside.visib_fract == 0.0 and outside.bbox_obj == (-1, -1, -1, -1)
    assert hidden.px_count_valid == hidden.px_count_all  # the scene has depth at all its pixels


def test_matches_toolkit_gt_info_and_masks(oracle_root):
    """The oracle's masks and scene_gt_info were made by the BOP toolkit (vispy renderer)."""
    ds = BopDataset("lmo", oracle_root)
    r = Renderer(640, 480)
    for o in ds.obj_ids:
        r.add_object(o, ds.model(o))
    ref_infos = ds.scene_gt_info("test", 2)
    n = exact = 0
    for im in ds.im_ids("test", 2):
        gts = ds.scene_gt("test", 2)[im]
        K_im = ds.scene_camera("test", 2)[im].K
        res = compute_gt_info(r, K_im, [(g.obj_id, g.R, g.t) for g in gts], ds.depth("test", 2, im))
        for gt_id, (got, ref) in enumerate(zip(res, ref_infos[im], strict=True)):
            n += 1
            exact += got.info == ref
            assert got.info.bbox_obj == ref.bbox_obj and got.info.bbox_visib == ref.bbox_visib
            for k in ("px_count_all", "px_count_valid", "px_count_visib"):
                assert abs(getattr(got.info, k) - getattr(ref, k)) <= 2, (im, gt_id, k)
            assert got.info.visib_fract == pytest.approx(ref.visib_fract, abs=2e-3)
            for which, visib in (("mask", False), ("mask_visib", True)):
                diff = got.full(which, (480, 640)) != ds.mask("test", 2, im, gt_id, visib=visib)
                assert diff.sum() <= 3, (im, gt_id, which, diff.sum())  # rasterisation of edge pixels
    assert exact >= 0.75 * n, (exact, n)
