"""Dense prediction-to-prediction distillation against a NumPy evaluation of its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.dense_pred import DensePredKD, DensePredKDConfig


def outputs(B=2, n=3, S=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "mask_logits": 2 * torch.randn(B, 1, S, S, generator=g),
        "code_logits": 2 * torch.randn(B, n, S, S, generator=g),
    }


def numpy_reference(s, t, cfg: DensePredKDConfig) -> float:
    sig = lambda z: 1 / (1 + np.exp(-z.double().numpy()))  # noqa: E731
    pm, qm = sig(s["mask_logits"]), sig(t["mask_logits"])
    pc, qc = sig(s["code_logits"]), sig(t["code_logits"])
    l_mask = np.abs(pm - qm).mean()
    kl = qc * np.log(qc / pc) + (1 - qc) * np.log((1 - qc) / (1 - pc))  # Bernoulli KL(q || p)
    inside = (qm[:, 0] > cfg.mask_threshold).astype(float)
    l_code = (kl.mean(1) * inside).sum() / max(inside.sum(), 1.0)
    return cfg.weight * (cfg.mask_weight * l_mask + cfg.code_weight * l_code)


@pytest.mark.parametrize("opts", [{}, {"weight": 2.5, "code_weight": 1.0, "mask_threshold": 0.2}])
def test_matches_the_formula(opts):
    cfg = DensePredKDConfig(**opts)
    s, t = outputs(seed=1), outputs(seed=2)
    assert float(DensePredKD(cfg)(s, {}, t)["kd_pred"]) == pytest.approx(numpy_reference(s, t, cfg), rel=1e-5)


def test_zero_for_equal_maps_and_codes_distilled_only_inside_the_teacher_mask():
    t = outputs(seed=3)
    m = DensePredKD()
    assert abs(float(m(t, {}, t)["kd_pred"])) < 1e-6
    s = outputs(seed=4)
    base = float(m(s, {}, t)["kd_pred"])
    outside = (torch.sigmoid(t["mask_logits"]) <= 0.5).expand_as(s["code_logits"])
    assert outside.any() and (~outside).any()
    moved = {**s, "code_logits": torch.where(outside, s["code_logits"] + 5.0, s["code_logits"])}
    assert float(m(moved, {}, t)["kd_pred"]) == pytest.approx(base, rel=1e-6)
    moved_in = {**s, "code_logits": torch.where(outside, s["code_logits"], s["code_logits"] + 5.0)}
    assert float(m(moved_in, {}, t)["kd_pred"]) > base * 1.05


def test_gradients_reach_both_student_maps_not_the_teacher():
    s = {k: v.requires_grad_(True) for k, v in outputs(seed=5).items()}
    t = {k: v.requires_grad_(True) for k, v in outputs(seed=6).items()}
    DensePredKD()(s, {}, t)["kd_pred"].backward()
    assert all(s[k].grad.abs().sum() > 0 for k in s)
    assert all(t[k].grad is None for k in t)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(BopkdError, match="mask_threshold"):
        DensePredKDConfig(mask_threshold=1.0).validate()
    with pytest.raises(BopkdError, match="needs a teacher"):
        DensePredKD()(outputs(), {}, None)
