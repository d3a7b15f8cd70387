"""FKD (Zhang & Ma, ICLR 2021) on hand-made feature maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.fkd import FKD, FKDConfig, NonLocal2d, channel_attention, spatial_attention
from bopkd.losses.task import LossConfig

#: These tests check Zhang & Ma's formulas in their own units (task losses normalised per positive).
PER_POS = LossConfig(reduction="mean_per_positive")


def outs(strides, C, seed, B=2, H=64, W=64):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(B, C, H // s, W // s, generator=g) for s in strides]
    return {
        "features": feats,
        "backbone_features": feats,
        "anchors": {"strides": list(strides)},
        "image_size": (H, W),
    }


def test_attention_masks_sum_and_sharpen():
    x = torch.randn(3, 6, 5, 7)
    sa = spatial_attention(x, 0.5)
    ca = channel_attention(x, 0.5)
    assert sa.shape == (3, 1, 5, 7) and ca.shape == (3, 6, 1, 1)
    assert torch.allclose(sa.sum((1, 2, 3)), torch.full((3,), 35.0))
    assert torch.allclose(ca.sum((1, 2, 3)), torch.full((3,), 6.0))
    assert (sa > 0).all() and (ca > 0).all()
    # a lower temperature sharpens (larger peak), a higher one flattens toward 1
    assert spatial_attention(x, 0.1).amax() > sa.amax() > spatial_attention(x, 5.0).amax() > 1.0
    # the most attended position is where the mean |activation| is largest
    g = x.abs().mean(1).reshape(3, -1)
    assert torch.equal(sa.reshape(3, -1).argmax(1), g.argmax(1))


def test_zero_for_identical_features_with_identity_adapters():
    s = outs((8, 16), 8, seed=0)
    m = FKD(FKDConfig(), {8: 8, 16: 8}, {8: 8, 16: 8}, PER_POS)  # equal widths: adapters start as identities
    terms = m(s, {}, s)
    assert set(terms) == {"kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"}
    for v in terms.values():
        assert abs(float(v.detach())) < 1e-9


def test_positive_for_different_features_and_matches_formula():
    s, t = outs((8, 16), 8, seed=0), outs((8, 16), 8, seed=1)
    cfg = FKDConfig()
    terms = FKD(cfg, {8: 8, 16: 8}, {8: 8, 16: 8}, PER_POS)(s, {}, t)
    assert all(float(v.detach()) > 0 for v in terms.values())

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    feat = att = nl = 0.0
    for fs, ft in zip(s["features"], t["features"], strict=True):
        fs, ft = fs.double().numpy(), ft.double().numpy()
        B, C, H, W = fs.shape

        def sp(x, B=B, H=H, W=W):
            return softmax(np.abs(x).mean(1).reshape(B, -1) / 0.5).reshape(B, 1, H, W) * H * W

        def ch(x, B=B, C=C):
            return softmax(np.abs(x).mean((2, 3)) / 0.5).reshape(B, C, 1, 1) * C

        ms = (sp(fs) + sp(ft)) / 2
        mc = (ch(fs) + ch(ft)) / 2
        feat += np.sqrt(((ft - fs) ** 2 * ms * mc).sum())
        att += np.abs(sp(fs) - sp(ft)).mean() + np.abs(ch(fs) - ch(ft)).mean()
        nl += np.sqrt(((ft - fs) ** 2).sum())  # non-local outputs start as the identity (zero-initialised W)
    assert float(terms["kd_fkd_feat"].detach()) == pytest.approx(cfg.feat_weight * feat, rel=1e-4)
    assert float(terms["kd_fkd_att"].detach()) == pytest.approx(cfg.att_weight * att, rel=1e-4)
    assert float(terms["kd_fkd_nl"].detach()) == pytest.approx(cfg.nonlocal_weight * nl, rel=1e-4)


def test_adapters_for_different_widths_and_gradients():
    s, t = outs((8, 16), 4, seed=0), outs((8, 16), 12, seed=1)
    for f in s["features"]:
        f.requires_grad_(True)
    for f in t["features"]:
        f.requires_grad_(True)
    m = FKD(FKDConfig(weight=2.0), {8: 4, 16: 4}, {8: 12, 16: 12}, PER_POS)
    assert m.adapters["8"].weight.shape == (12, 4, 1, 1)
    names = {n for n, _ in m.named_parameters()}
    assert any(n.startswith("adapters.") for n in names) and any(n.startswith("teacher_nl.") for n in names)
    terms = m(s, {}, t)
    sum(terms.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s["features"])
    assert all(f.grad is None for f in t["features"])  # the teacher's features are constants
    for k in ("8", "16"):
        assert m.adapters[k].weight.grad.abs().sum() > 0
        assert m.nl_adapters[k].weight.grad.abs().sum() > 0
        assert m.student_nl[k].out.weight.grad.abs().sum() > 0
        assert m.teacher_nl[k].out.weight.grad.abs().sum() > 0


def test_weight_multiplies_all_terms():
    s, t = outs((8,), 4, seed=0), outs((8,), 4, seed=1)
    a = FKD(FKDConfig(), {8: 4}, {8: 4}, PER_POS)(s, {}, t)
    torch.manual_seed(0)
    b = FKD(FKDConfig(weight=3.0), {8: 4}, {8: 4}, PER_POS)(s, {}, t)
    # adapters are identities and the non-local outputs start as the identity: no dependence on init
    for k in a:
        assert float(b[k].detach()) == pytest.approx(3.0 * float(a[k].detach()), rel=1e-6)


def test_only_shared_levels_are_distilled():
    s, t = outs((8, 16), 4, seed=0), outs((16, 32), 4, seed=1)
    m = FKD(FKDConfig(), {8: 4, 16: 4}, {16: 4, 32: 4}, PER_POS)
    assert m.strides == [16]
    only16 = FKD(FKDConfig(), {16: 4}, {16: 4}, PER_POS)
    a = m(s, {}, t)
    b = only16(
        {**s, "features": s["features"][1:], "anchors": {"strides": [16]}},
        {},
        {**t, "features": t["features"][:1], "anchors": {"strides": [16]}},
    )
    for k in a:
        assert float(a[k].detach()) == pytest.approx(float(b[k].detach()), rel=1e-6)
    with pytest.raises(BopkdError, match="share no"):
        FKD(FKDConfig(), {8: 4}, {32: 4}, PER_POS)


def test_backbone_features_option():
    s, t = outs((8, 16), 4, seed=0), outs((8, 16), 4, seed=1)
    s["backbone_features"] = [f * 2 for f in s["features"]]
    m = FKD(FKDConfig(features="backbone"), {8: 4, 16: 4}, {8: 4, 16: 4}, PER_POS)
    a = m(s, {}, t)
    b = FKD(FKDConfig(), {8: 4, 16: 4}, {8: 4, 16: 4}, PER_POS)(s, {}, t)
    assert float(a["kd_fkd_feat"].detach()) != pytest.approx(float(b["kd_fkd_feat"].detach()))


def test_nonlocal_block_dot_product_reference():
    torch.manual_seed(0)
    blk = NonLocal2d(6, reduction=2, pool=2)
    torch.nn.init.normal_(blk.out.weight)
    x = torch.randn(2, 6, 4, 6)
    q = blk.theta(x).flatten(2).transpose(1, 2)
    k = torch.nn.functional.max_pool2d(blk.phi(x), 2).flatten(2)
    v = torch.nn.functional.max_pool2d(blk.g(x), 2).flatten(2).transpose(1, 2)
    # dot-product version: no softmax, 1/K normalisation
    ref = x + blk.out(((q @ k) @ v / k.shape[-1]).transpose(1, 2).reshape(2, 3, 4, 6))
    assert torch.allclose(blk(x), ref, atol=1e-6)
    # maps smaller than the pooling window still work
    assert blk(torch.randn(1, 6, 1, 1)).shape == (1, 6, 1, 1)


def test_config_validation():
    with pytest.raises(BopkdError, match="temperature"):
        FKDConfig(temperature=0).validate()
    with pytest.raises(BopkdError, match="features"):
        FKDConfig(features="head").validate()


def test_maps_of_differently_padded_inputs_are_compared_on_common_cells():
    # student padded to 16 (stride-8 map 5x8), teacher padded to 32 (8x8): the extra teacher rows are padding
    s = outs((8,), 4, seed=0, H=40, W=64)
    t = outs((8,), 4, seed=1, H=64, W=64)
    m = FKD(FKDConfig(), {8: 4}, {8: 4}, PER_POS)
    got = m(s, {}, t)
    crop = {**t, "features": [t["features"][0][..., :5, :]]}
    ref = m(s, {}, crop)
    for k in got:
        assert float(got[k].detach()) == pytest.approx(float(ref[k].detach()), rel=1e-6)
