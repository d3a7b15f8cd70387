"""The reference's PnP test of the teacher's keypoints (``teacher_pnp``): kept when a pose exists."""

from __future__ import annotations

import numpy as np
import torch

from bopkd.losses.kd.gather import flatten_instances
from bopkd.losses.kd.teacher_pnp import teacher_pnp_keep

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
CORNERS = np.array([[x, y, z] for x in (-50, 50) for y in (-40, 40) for z in (-30, 30)], dtype=np.float64)


def _batch(affine: np.ndarray) -> dict:
    t = np.array([20.0, -10.0, 700.0])
    obj = {
        "cls": torch.tensor([0, 1]),
        "corners_3d": torch.tensor(np.stack([CORNERS, CORNERS])),
        "R": torch.eye(3).repeat(2, 1, 1),
        "t": torch.tensor(np.stack([t, t])),
    }
    meta = {"affine": affine, "orig_size": (640, 480), "K_orig": K}
    return {"images": torch.zeros(1, 3, 240, 320), "K": torch.eye(3)[None], "objects": [obj], "meta": [meta]}


def test_instance_with_a_consistent_teacher_is_kept_and_random_keypoints_are_dropped():
    affine = np.array([[0.5, 0.0, 3.0], [0.0, 0.5, -2.0], [0.0, 0.0, 1.0]])  # original px -> input px
    batch = _batch(affine)
    inst = flatten_instances(batch, torch.device("cpu"))
    X = CORNERS + np.array([20.0, -10.0, 700.0])
    uv = (K @ X.T).T
    uv = uv[:, :2] / uv[:, 2:]
    uv_in = uv @ affine[:2, :2].T + affine[:2, 2]  # the network's input px
    rng = np.random.default_rng(0)
    good = np.stack([uv_in + rng.normal(0, 0.3, uv_in.shape) for _ in range(3)])
    bad = rng.uniform(0, 320, (3, 8, 2))
    pts = torch.tensor(np.concatenate([good, bad]), dtype=torch.float32)
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    keep = teacher_pnp_keep(batch, inst, g, pts)
    assert keep.tolist() == [True, True, True, False, False, False]
    assert teacher_pnp_keep(batch, inst, g[:0], pts[:0]).numel() == 0
