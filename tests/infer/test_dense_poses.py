"""Dense decoding + PnP: a known pose is recovered from ideal mask / code maps, and too little input gives no
pose. The maps are built from the pose: each masked output pixel's centre is mapped to the image, lifted along
its camera ray to a known depth and moved to the model frame; that 3D point is stored at the pixel's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from bopkd.errors import BopkdError
from bopkd.infer.dense_poses import (
    DensePnPConfig,
    codes_from_bits,
    decode_correspondences,
    dense_pose,
    dense_poses,
    output_to_image_affine,
)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])
R_GT = Rotation.from_euler("xyz", [20.0, -35.0, 110.0], degrees=True).as_matrix()
T_GT = np.array([15.0, -20.0, 650.0])
N_BITS, S = 10, 32
# the crop: original px -> input px (64 x 64 input, 32 x 32 output), a zoom-in of a 150 px box at (250, 170)
A_IN = np.array([[64 / 150, 0.0, -250 * 64 / 150], [0.0, 64 / 150, -170 * 64 / 150], [0.0, 0.0, 1.0]])


def _ideal_maps(seed=0, n_pix=300, outliers=0):
    rng = np.random.default_rng(seed)
    A_out = output_to_image_affine(A_IN, stride=2.0)
    flat = rng.choice(S * S, n_pix, replace=False)
    rows, cols = flat // S, flat % S
    uv = np.stack([cols + 0.5, rows + 0.5, np.ones(n_pix)], 1) @ A_out.T
    depth = 650.0 + 40.0 * np.sin(cols / 5.0) + 25.0 * np.cos(rows / 3.0)  # a curved surface, mm
    X_cam = (np.linalg.inv(K) @ uv.T).T * depth[:, None]
    X_model = (X_cam - T_GT) @ R_GT  # R^T (X - t)
    codes = rng.choice(2**N_BITS, n_pix, replace=False)
    lut = np.full((2**N_BITS, 3), np.nan)
    lut[codes] = X_model
    free = np.setdiff1d(np.arange(2**N_BITS), codes)
    lut[free] = rng.uniform(-80, 80, (len(free), 3))
    codes[:outliers] = free[:outliers]  # wrong codes: their points are random
    bits = (codes[:, None] >> np.arange(N_BITS - 1, -1, -1)) & 1  # bit 0 the most significant
    mask_prob = np.full((S, S), 0.1)
    mask_prob[rows, cols] = 0.9
    code_prob = np.full((N_BITS, S, S), 0.3)
    code_prob[:, rows, cols] = np.where(bits.T == 1, 0.8, 0.2)
    return mask_prob, code_prob, lut, A_out


def _errors(pose):
    rot = np.degrees(np.arccos(np.clip((np.trace(pose.R.T @ R_GT) - 1) / 2, -1, 1)))
    return rot, np.linalg.norm(pose.t - T_GT)


def test_codes_are_read_with_bit_0_most_significant():
    assert codes_from_bits(np.array([[1, 0, 0], [0, 0, 1], [1, 1, 0]])).tolist() == [4, 1, 6]


def test_output_to_image_affine_maps_the_output_grid_back_through_the_crop():
    A = output_to_image_affine(A_IN[:2], stride=2.0)
    # output px 16 -> input px 32 -> original 250 + 32 * 150 / 64
    np.testing.assert_allclose(A @ [16.0, 0.0, 1.0], [250 + 75.0, 170.0, 1.0])
    with pytest.raises(BopkdError, match="invertible"):
        output_to_image_affine(np.zeros((3, 3)))


@pytest.mark.parametrize(("method", "refine"), [("epnp", False), ("sqpnp", False), ("epnp", True)])
def test_known_pose_is_recovered_from_ideal_maps_with_outliers(method, refine):
    mask_prob, code_prob, lut, A_out = _ideal_maps(outliers=30)
    cfg = DensePnPConfig(method=method, refine=refine)
    p3, p2 = decode_correspondences(mask_prob, code_prob, lut, A_out, cfg)
    assert p3.shape == (300, 3) and p2.shape == (300, 2)
    pose = dense_pose(mask_prob, code_prob, lut, K, A_out, cfg)
    rot, trans = _errors(pose)
    assert rot < 0.1 and trans < 1.0
    assert 270 <= pose.n_inliers <= 300 and pose.n_points == 300
    assert pose.score == pytest.approx(pose.n_inliers / 300)


def test_batched_logits_give_the_same_poses_and_fail_cleanly_per_crop():
    maps = [_ideal_maps(seed=s) for s in (1, 2)]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    empty = np.full((S, S), 0.1)
    empty[:2, :2] = 0.9  # 4 pixels: below the 6 correspondences PnP needs
    ml = torch.tensor(np.stack([logit(m[0]) for m in maps] + [logit(empty)]))[:, None].float()
    cl = torch.tensor(np.stack([logit(m[1]) for m in maps] + [logit(maps[0][1])])).float()
    poses = dense_poses(ml, cl, [m[2] for m in maps] + [maps[0][2]], K, maps[0][3])
    assert poses[2] is None
    for pose in poses[:2]:
        rot, trans = _errors(pose)
        assert rot < 0.1 and trans < 1.0


def test_no_pose_without_enough_valid_correspondences():
    mask_prob, code_prob, lut, A_out = _ideal_maps()
    assert dense_pose(np.zeros((S, S)), code_prob, lut, K, A_out) is None
    assert dense_pose(mask_prob, code_prob, np.full_like(lut, np.nan), K, A_out) is None
    with pytest.raises(BopkdError, match="lookup table"):
        dense_pose(mask_prob, code_prob, lut[:100], K, A_out)
    with pytest.raises(BopkdError, match="method"):
        DensePnPConfig(method="p3p").validate()


def test_every_configurable_solver_has_an_opencv_flag():
    from bopkd.infer.dense_poses import CV_PNP_FLAGS
    from bopkd.train.dense_config import PNP_METHODS

    assert set(CV_PNP_FLAGS) == set(PNP_METHODS)
