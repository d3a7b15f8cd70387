"""Readers and writers of the BOP JSON files: round trips and the real LM-O sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bopkd.data import bop_json
from bopkd.errors import BopkdError, MissingFileError
from bopkd.records import Camera, GTInfo, GTInstance, Target


def test_camera_round_trip(tmp_path):
    cam = Camera(
        K=np.array([[572.4114, 0, 325.2611], [0, 573.57043, 242.04899], [0, 0, 1.0]]),
        width=640,
        height=480,
        depth_scale=0.1,
    )
    bop_json.save_camera(tmp_path / "camera.json", cam)
    back = bop_json.load_camera(tmp_path / "camera.json")
    np.testing.assert_array_equal(back.K, cam.K)
    assert (back.width, back.height, back.depth_scale) == (640, 480, 0.1)


def test_scene_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    gts = {
        3: [GTInstance(obj_id=5, R=np.linalg.qr(rng.normal(size=(3, 3)))[0], t=rng.normal(size=3) * 100)],
        7: [],
    }
    bop_json.save_scene_gt(tmp_path / "scene_gt.json", gts)
    back = bop_json.load_scene_gt(tmp_path / "scene_gt.json")
    assert set(back) == {3, 7}
    np.testing.assert_array_equal(back[3][0].R, gts[3][0].R)
    np.testing.assert_array_equal(back[3][0].t, gts[3][0].t)
    assert back[3][0].obj_id == 5

    cams = {3: Camera(K=np.eye(3) * 2, depth_scale=0.5, R_w2c=np.eye(3), t_w2c=np.arange(3.0))}
    bop_json.save_scene_camera(tmp_path / "scene_camera.json", cams)
    c = bop_json.load_scene_camera(tmp_path / "scene_camera.json")[3]
    np.testing.assert_array_equal(c.K, cams[3].K)
    np.testing.assert_array_equal(c.t_w2c, [0, 1, 2])
    assert c.depth_scale == 0.5

    infos = {3: [GTInfo((1, 2, 3, 4), (1, 2, 3, 3), 12, 11, 9, 0.75)]}
    bop_json.save_scene_gt_info(tmp_path / "scene_gt_info.json", infos)
    assert bop_json.load_scene_gt_info(tmp_path / "scene_gt_info.json") == infos

    targets = [Target(2, 3, 5, 1), Target(2, 1, 1, 2)]
    bop_json.save_targets(tmp_path / "t.json", targets)
    assert bop_json.load_targets(tmp_path / "t.json") == sorted(
        targets, key=lambda t: (t.scene_id, t.im_id, t.obj_id)
    )


def test_models_info_symmetries_round_trip(tmp_path):
    d = {
        "1": {"diameter": 10.0, "min_x": -1, "min_y": -2, "min_z": -3, "size_x": 2, "size_y": 4, "size_z": 6},
        "2": {
            "diameter": 20.0,
            "min_x": -1,
            "min_y": -1,
            "min_z": -1,
            "size_x": 2,
            "size_y": 2,
            "size_z": 2,
            "symmetries_discrete": [[-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]],
            "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}],
        },
    }
    (tmp_path / "models_info.json").write_text(json.dumps(d))
    infos = bop_json.load_models_info(tmp_path / "models_info.json")
    assert not infos[1].is_symmetric and infos[2].symmetry_kind == "discrete+continuous"
    corners = infos[1].bbox_corners()
    np.testing.assert_array_equal(corners[0], [-1, -2, -3])
    np.testing.assert_array_equal(corners[7], [1, 2, 3])
    assert len({tuple(c) for c in corners}) == 8
    bop_json.save_models_info(tmp_path / "back.json", infos)
    assert (
        json.loads((tmp_path / "back.json").read_text())["2"]["symmetries_discrete"]
        == d["2"]["symmetries_discrete"]
    )


def test_malformed_and_missing_files_give_one_line_errors(tmp_path):
    p = tmp_path / "scene_gt.json"
    p.write_text('{"0": [{"cam_R_m2c": [1,0,0')
    with pytest.raises(BopkdError, match="scene_gt.json: not valid JSON"):
        bop_json.load_scene_gt(p)
    p.write_text('{"0": [{"obj_id": 1, "cam_R_m2c": [1,0,0,0,1,0,0,0,1]}]}')
    with pytest.raises(BopkdError, match="lacks the field 'cam_t_m2c'"):
        bop_json.load_scene_gt(p)
    with pytest.raises(MissingFileError, match="missing file"):
        bop_json.load_targets(tmp_path / "nope.json")


def test_real_lmo_files(lmo_sample_root):
    lmo = lmo_sample_root / "lmo"
    cam = bop_json.load_camera(lmo / "camera.json")
    assert (cam.width, cam.height) == (640, 480) and cam.fx == pytest.approx(572.4114)
    gts = bop_json.load_scene_gt(lmo / "test/000002/scene_gt.json")
    assert len(gts) == 200 and sum(len(v) for v in gts.values()) == 1517
    for insts in gts.values():
        for g in insts:
            np.testing.assert_allclose(
                g.R @ g.R.T, np.eye(3), atol=1e-2
            )  # LM GT rotations are orthonormal to ~1e-2 only
    infos = bop_json.load_scene_gt_info(lmo / "test/000002/scene_gt_info.json")
    assert [len(v) for v in infos.values()] == [len(v) for v in gts.values()]
    targets = bop_json.load_targets(lmo / "test_targets_bop19.json")
    assert len(targets) == 1445 and {t.obj_id for t in targets} == {1, 5, 6, 8, 9, 10, 11, 12}
    mi = bop_json.load_models_info(lmo / "models/models_info.json")
    assert [i for i, v in mi.items() if v.is_symmetric] == [10, 11]
