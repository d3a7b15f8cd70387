"""Decode + PnP on synthetic "perfect" outputs recovers the GT pose, with and without an affine crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from bopkd.errors import BopkdError
from bopkd.geometry.projection import apply_affine_2d, project_points
from bopkd.infer.poses import class_corners, predict_poses
from bopkd.models.decode import decode
from bopkd.models.posenet import ModelConfig, build_model
from bopkd.records import ObjectInfo

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
INFOS = {
    3: ObjectInfo(3, 120.0, np.array([-40.0, -30.0, -20.0]), np.array([80.0, 60.0, 40.0])),
    7: ObjectInfo(7, 200.0, np.array([-70.0, -50.0, -60.0]), np.array([140.0, 100.0, 120.0])),
}


def _perfect_outputs(model, size, poses, K_in, affine=None):
    """Every cell within 40 px of the object's projected centre predicts its exact corner projections."""
    anchors = model.anchors(size)
    A = anchors["centers"].shape[0]
    logits = torch.full((1, A, 2), -8.0)
    kpts = torch.zeros(1, A, 2, 8, 2)
    for cls, (obj_id, R, t) in enumerate(poses):
        uv = project_points(INFOS[obj_id].bbox_corners(), K_in, R, t)
        if affine is not None:
            uv = apply_affine_2d(uv, affine)
        centre = uv.mean(0)
        near = torch.linalg.norm(anchors["centers"] - torch.tensor(centre, dtype=torch.float32), dim=1) < 40
        logits[0, near, cls] = torch.linspace(0.0, 4.0, int(near.sum()))
        kpts[0, :, cls] = torch.tensor(uv, dtype=torch.float32)
    return {"cls_logits": logits, "kpts": kpts, "anchors": anchors, "image_size": size}


def _poses():
    return [
        (
            3,
            Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix(),
            np.array([-60.0, 20.0, 700.0]),
        ),
        (
            7,
            Rotation.from_euler("xyz", [-120, 10, 5], degrees=True).as_matrix(),
            np.array([90.0, -40.0, 1100.0]),
        ),
    ]


def _check(est, poses, out):
    dets = decode(out)[0]
    assert [e.obj_id for e in est] == [3, 7]
    for e, (_, R, t) in zip(est, poses, strict=True):
        ang = np.degrees(np.arccos(np.clip((np.trace(e.R.T @ R) - 1) / 2, -1, 1)))
        assert ang < 0.05
        assert np.linalg.norm(e.t - t) < 0.5
        assert e.n_inliers == 8 * e.n_cells
        assert e.score == float(dets[e.cls].scores.max()) and e.n_cells == len(dets[e.cls])


def test_perfect_outputs_recover_the_gt_pose():
    model = build_model(ModelConfig(obj_ids=[3, 7], backbone="tiny-cpu"))
    poses = _poses()
    out = _perfect_outputs(model, (480, 640), poses, K)
    est = predict_poses(model, torch.zeros(1, 3, 480, 640), torch.tensor(K)[None], INFOS, outputs=out)[0]
    _check(est, poses, out)
    assert all(e.n_cells >= 5 for e in est)


def test_perfect_outputs_in_an_affine_crop_map_back_to_the_original_image():
    model = build_model(ModelConfig(obj_ids=[3, 7], backbone="tiny-cpu"))
    poses = _poses()
    a = np.deg2rad(12.0)  # rotate, scale by 0.6, shift: original px -> 256x256 input px
    A = np.array(
        [[0.6 * np.cos(a), -0.6 * np.sin(a), -60.0], [0.6 * np.sin(a), 0.6 * np.cos(a), -30.0], [0, 0, 1]]
    )
    out = _perfect_outputs(model, (256, 256), poses, K, affine=A)
    est = predict_poses(
        model,
        torch.zeros(1, 3, 256, 256),
        torch.tensor(K)[None],
        INFOS,
        affines=torch.tensor(A)[None],
        outputs=out,
    )[0]
    _check(est, poses, out)


def test_runs_the_model_and_names_missing_objects():
    model = build_model(ModelConfig(obj_ids=[3, 7], backbone="tiny-cpu"))
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(
            5.0
        )  # every cell confident: a pose per class from untrained keypoints
    res = predict_poses(model, torch.zeros(2, 3, 64, 64), torch.tensor(K), INFOS)
    assert len(res) == 2
    assert model.training
    with pytest.raises(BopkdError, match=r"no entry for object ids \[7\]"):
        class_corners([3, 7], {3: INFOS[3]})
