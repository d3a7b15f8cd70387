"""Prediction-to-prediction distillation on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.gather import grid_match
from bopkd.losses.kd.pred import PredKD, PredKDConfig
from bopkd.losses.task import LossConfig

AFFINES = [np.array([[0.5, 0.0, 4.0], [0.0, 0.5, 2.0], [0.0, 0.0, 1.0]]), np.eye(3)]
ORIG = (128, 96)


def setup(kd_synth, s_strides=(8, 16), t_strides=(8, 16)):
    s = kd_synth.outputs(B=2, strides=s_strides, seed=0)
    t = kd_synth.outputs(B=2, strides=t_strides, seed=1)
    batch = kd_synth.batch(
        B=2, boxes=[[(0, 8, 8, 40, 40)], [(1, 16, 16, 48, 48)]], affines=AFFINES, orig_size=ORIG
    )
    an = s["anchors"]
    cells = []
    for b, (c, x0, y0, x1, y1) in enumerate([(0, 8, 8, 40, 40), (1, 16, 16, 48, 48)]):
        cells += [(b, cell, c, 0) for cell in kd_synth.cells_in_box(an, x0, y0, x1, y1)[::3]]
    asg = kd_synth.assignment(2, an["centers"].shape[0], cells)
    t["cls_logits"] = torch.randn_like(t["cls_logits"], generator=torch.Generator().manual_seed(5))
    return s, t, batch, asg


def test_zero_for_identical_outputs(kd_synth):
    s, t, batch, asg = setup(kd_synth)
    t2 = {**t, "kpts": s["kpts"].clone()}
    assert float(PredKD()(s, batch, t2, assignment=asg)["kd_pred"]) == 0.0


def test_value_matches_hand_computation(kd_synth):
    s, t, batch, asg = setup(kd_synth)
    cfg = PredKDConfig(weight=2.0, beta=0.01)
    got = float(PredKD(cfg)(s, batch, t, assignment=asg)["kd_pred"])  # default task reduction: "sum"
    got_mean = float(
        PredKD(cfg, LossConfig(reduction="mean_per_positive"))(s, batch, t, assignment=asg)["kd_pred"]
    )
    total = 0.0
    for i in range(asg["num_pos"]):
        b, cell, c = int(asg["pos_batch"][i]), int(asg["pos_cell"][i]), int(asg["pos_cls"][i])
        Ainv = np.linalg.inv(AFFINES[b])

        def norm(p, Ainv=Ainv):
            return (Ainv @ np.c_[p, np.ones(len(p))].T).T[:, :2] / np.array(ORIG)

        d = np.abs(
            norm(s["kpts"][b, cell, c].double().numpy()) - norm(t["kpts"][b, cell, c].double().numpy())
        )
        sl1 = np.where(d < cfg.beta, 0.5 * d**2 / cfg.beta, d - 0.5 * cfg.beta)
        w = 1 / (1 + np.exp(-float(t["cls_logits"][b, cell, c])))
        total += w * sl1.mean()
    assert got == pytest.approx(cfg.weight * total, rel=1e-5)
    assert got_mean == pytest.approx(cfg.weight * total / asg["num_pos"], rel=1e-5)


def test_gradients_only_to_student_keypoints(kd_synth):
    s, t, batch, asg = setup(kd_synth)
    s["kpts"].requires_grad_(True)
    s["cls_logits"].requires_grad_(True)
    t["kpts"].requires_grad_(True)
    PredKD()(s, batch, t, assignment=asg)["kd_pred"].backward()
    g = s["kpts"].grad
    assert g[asg["pos_batch"], asg["pos_cell"], asg["pos_cls"]].abs().sum() > 0
    assert s["cls_logits"].grad is None
    assert t["kpts"].grad is None


def test_grid_match_by_stride_and_shape(kd_synth):
    sa = kd_synth.anchors(64, 64, (8, 16, 32))
    ta = kd_synth.anchors(64, 64, (16, 32, 64))
    m = grid_match(sa, ta)
    n8 = 8 * 8
    assert (m[:n8] == -1).all()  # the teacher has no stride-8 level
    # same position on the stride-16 and stride-32 levels
    assert torch.allclose(sa["centers"][m >= 0], ta["centers"][m[m >= 0]])
    assert int((m >= 0).sum()) == 16 + 4


def test_positives_on_levels_the_teacher_lacks_are_skipped(kd_synth):
    s, t, batch, asg = setup(kd_synth, s_strides=(8, 16), t_strides=(16, 32))
    t2 = {**t, "cls_logits": torch.zeros(2, t["cls_logits"].shape[1], 2)}
    # put the student's stride-16 keypoints on the teacher's: only stride-8 cells differ, and those are skipped
    m = grid_match(s["anchors"], t2["anchors"])
    kp = s["kpts"].clone()
    kp[:, m >= 0] = t2["kpts"][:, m[m >= 0]]
    s2 = {**s, "kpts": kp + 0.0}
    s2["kpts"][:, m < 0] += 50.0
    assert float(PredKD()(s2, batch, t2, assignment=asg)["kd_pred"]) == 0.0
    s2["kpts"][:, m >= 0] += 1.0
    assert float(PredKD()(s2, batch, t2, assignment=asg)["kd_pred"]) > 0.0


def test_teacher_weighting(kd_synth):
    s, t, batch, asg = setup(kd_synth)
    t["cls_logits"][:] = 0.0  # score 0.5 everywhere
    half = float(PredKD()(s, batch, t, assignment=asg)["kd_pred"])
    unweighted = float(PredKD(PredKDConfig(teacher_weighted=False))(s, batch, t, assignment=asg)["kd_pred"])
    assert half == pytest.approx(0.5 * unweighted, rel=1e-6)


def test_errors(kd_synth):
    s, t, batch, asg = setup(kd_synth)
    with pytest.raises(BopkdError, match="needs a teacher"):
        PredKD()(s, batch, None)
    with pytest.raises(BopkdError, match="beta"):
        PredKDConfig(beta=-1).validate()


def test_grid_match_with_inputs_padded_differently(kd_synth):
    # 64x40 input: a student padded to 16 has 5 stride-8 rows, a teacher padded to 32 has 8 (64x64)
    sa = kd_synth.anchors(40, 64, (8, 16))
    ta = kd_synth.anchors(64, 64, (8, 16, 32))
    m = grid_match(sa, ta)
    assert (m >= 0).all()  # every student cell lies inside the teacher's padded grid
    assert torch.allclose(sa["centers"], ta["centers"][m])
    # and the other way round: teacher cells beyond the student's grid have no match
    back = grid_match(ta, sa)
    assert int((back >= 0).sum()) == sa["centers"].shape[0]
    assert torch.allclose(ta["centers"][back >= 0], sa["centers"][back[back >= 0]])
