"""Dense OT distillation (Guo et al., CVPR 2023, on ZebraPose-style outputs) against geomloss and its properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.dense_ot import DenseOTKD, DenseOTKDConfig, cell_sets
from bopkd.losses.ot import sinkhorn_divergence

geomloss = pytest.importorskip("geomloss")


def outputs(B=3, n=4, S=8, seed=0, dtype=torch.float32, empty_image=None):
    """Random dense outputs: mask logits (B, 1, S, S), code logits (B, n, S, S)."""
    g = torch.Generator().manual_seed(seed)
    m = 3 * torch.randn(B, 1, S, S, generator=g, dtype=dtype)
    if empty_image is not None:
        m[empty_image] = -30.0
    return {"mask_logits": m, "code_logits": 3 * torch.randn(B, n, S, S, generator=g, dtype=dtype)}


def reference(s, t, cfg: DenseOTKDConfig) -> float:
    """NumPy pooling, then geomloss per image on its present cells (independent of bopkd's code)."""
    loss = geomloss.SamplesLoss(
        "sinkhorn", p=2, blur=cfg.blur, reach=cfg.reach, scaling=cfg.scaling, backend="tensorized"
    )
    k = cfg.pool

    def sets(out, b, clamp):
        m = 1 / (1 + np.exp(-out["mask_logits"][b, 0].double().numpy()))
        c = 1 / (1 + np.exp(-out["code_logits"][b].double().numpy()))
        if clamp:
            m = np.clip(m, cfg.mass_clamp, 1 - cfg.mass_clamp)
        S = m.shape[0]
        h = S // k
        mp = m.reshape(h, k, h, k).mean((1, 3))
        cp = c.reshape(c.shape[0], h, k, h, k).mean((2, 4))
        pts = [cp[:, i, j] for i in range(h) for j in range(h)]
        if cfg.position:
            pts = [
                np.r_[p, cfg.position_weight * (j + 0.5) / h, cfg.position_weight * (i + 0.5) / h]
                for p, (i, j) in zip(pts, [(i, j) for i in range(h) for j in range(h)], strict=True)
            ]
        return np.array(pts), mp.reshape(-1) / (h * h), mp.reshape(-1)

    vals = []
    for b in range(s["mask_logits"].shape[0]):
        x, a, _ = sets(s, b, True)
        y, w, tm = sets(t, b, False)
        if cfg.mask_threshold is not None:
            keep = tm > cfg.mask_threshold
            x, a, y, w = x[keep], a[keep], y[keep], w[keep]
        if len(x) == 0 or w.sum() == 0:
            continue
        vals.append(float(loss(*(torch.tensor(v) for v in (a, x, w, y)))))
    return cfg.weight * float(np.mean(vals))


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"pool": 1},
        {"pool": 4, "blur": 0.05, "reach": 1.0},
        {"position": True, "position_weight": 2.0},
        {"position": False},
        {"mask_threshold": 0.5},
    ],
    ids=["default", "pool1", "blur", "position", "noposition", "mask_only"],
)
def test_matches_geomloss_per_image(opts):
    cfg = DenseOTKDConfig(**opts)
    s, t = outputs(seed=1), outputs(seed=2)
    got = float(DenseOTKD(cfg)(s, {}, t)["kd_ot"])
    ref = reference(s, t, cfg)
    assert ref > 0
    assert got == pytest.approx(ref, rel=1e-4)


def test_float64_sets_match_geomloss_to_1e5():
    """The pooled sets in float64 through bopkd's solver equal geomloss's float64 values to 1e-5."""
    cfg = DenseOTKDConfig(pool=2, position=False)
    s, t = outputs(seed=3, dtype=torch.float64), outputs(seed=4, dtype=torch.float64)
    x, a = cell_sets(
        torch.sigmoid(s["mask_logits"]).clamp(1e-3, 1 - 1e-3), torch.sigmoid(s["code_logits"]), 2
    )
    y, b = cell_sets(torch.sigmoid(t["mask_logits"]), torch.sigmoid(t["code_logits"]), 2)
    ours = sinkhorn_divergence(x, a, y, b, blur=cfg.blur, reach=cfg.reach, scaling=cfg.scaling).mean()
    assert float(ours) * cfg.weight == pytest.approx(reference(s, t, cfg), rel=1e-5)


def test_images_without_teacher_mass_are_left_out_of_the_mean():
    cfg = DenseOTKDConfig(mask_threshold=0.5)
    s, t = outputs(seed=5), outputs(seed=6, empty_image=1)
    got = float(DenseOTKD(cfg)(s, {}, t)["kd_ot"])
    assert got == pytest.approx(reference(s, t, cfg), rel=1e-4)
    # all-empty teacher: a zero connected to the student's graph
    t["mask_logits"][:] = -30.0
    s = {k: v.clone().requires_grad_(True) for k, v in s.items()}
    out = DenseOTKD(cfg)(s, {}, t)["kd_ot"]
    out.backward()
    assert float(out.detach()) == 0.0 and s["code_logits"].grad is not None


def permute_blocks(x: torch.Tensor, pool: int, perm: torch.Tensor) -> torch.Tensor:
    """Move the pool x pool blocks of (B, C, S, S) maps to the places given by ``perm`` (one per image)."""
    B, C, S, _ = x.shape
    h = S // pool
    blocks = x.reshape(B, C, h, pool, h, pool).permute(0, 1, 2, 4, 3, 5).reshape(B, C, h * h, pool, pool)
    blocks = blocks[:, :, perm]
    return blocks.reshape(B, C, h, h, pool, pool).permute(0, 1, 2, 4, 3, 5).reshape(B, C, S, S)


def test_invariant_to_the_order_of_cells_unless_positions_join():
    s, t = outputs(S=16, seed=7), outputs(S=16, seed=8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    s2 = {k: permute_blocks(v, 4, perm) for k, v in s.items()}
    m = DenseOTKD(DenseOTKDConfig(pool=4, position=False))
    base = float(m(s, {}, t)["kd_ot"])
    assert float(m(s2, {}, t)["kd_ot"]) == pytest.approx(base, rel=1e-5)
    # with the cell position in the point (the default), moving the student's cells changes the loss
    mp = DenseOTKD(DenseOTKDConfig(pool=4))
    assert mp.cfg.position
    assert abs(float(mp(s2, {}, t)["kd_ot"]) / float(mp(s, {}, t)["kd_ot"]) - 1) > 1e-2


def test_zero_for_equal_maps_and_growing_with_the_student_s_error():
    t = outputs(seed=9)
    m = DenseOTKD(DenseOTKDConfig(mass_clamp=0.0))
    assert abs(float(m(t, {}, t)["kd_ot"])) < 1e-6
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(t["code_logits"].shape, generator=g)
    losses = [
        float(m({**t, "code_logits": t["code_logits"] + sd * noise}, {}, t)["kd_ot"]) for sd in (0.5, 2, 8)
    ]
    assert 0 < losses[0] < losses[1] < losses[2], losses


def test_gradients_reach_the_student_s_code_and_mask_logits():
    s = {k: v.requires_grad_(True) for k, v in outputs(seed=10).items()}
    t = {k: v.requires_grad_(True) for k, v in outputs(seed=11).items()}
    DenseOTKD()(s, {}, t)["kd_ot"].backward()
    for k in ("code_logits", "mask_logits"):
        g = s[k].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, k
        assert t[k].grad is None  # the teacher is a constant
    s = {k: v.detach().requires_grad_(True) for k, v in s.items()}
    DenseOTKD(DenseOTKDConfig(detach_masses=True))(s, {}, t)["kd_ot"].backward()
    assert s["mask_logits"].grad is None or float(s["mask_logits"].grad.abs().sum()) == 0.0


def test_bad_settings_and_inputs_are_one_line_errors():
    s, t = outputs(S=8), outputs(S=8)
    with pytest.raises(BopkdError, match="pool = 3 does not divide"):
        DenseOTKD(DenseOTKDConfig(pool=3))(s, {}, t)
    with pytest.raises(BopkdError, match="mask_threshold"):
        DenseOTKDConfig(mask_threshold=1.5).validate()
    with pytest.raises(BopkdError, match="needs a teacher"):
        DenseOTKD()(s, {}, None)
    with pytest.raises(BopkdError, match="differ"):
        DenseOTKD()(s, {}, outputs(S=16))
    with pytest.raises(BopkdError, match="lack"):
        DenseOTKD()({"kpts": 0}, {}, t)
