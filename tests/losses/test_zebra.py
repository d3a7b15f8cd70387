"""ZebraPose loss against a direct NumPy computation of its formulas, its weights, and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.losses.zebra import ZebraLoss, ZebraLossConfig, bit_error_histogram, bit_weights


def _inputs(seed=0, B=2, n=5, H=6, W=7):
    g = torch.Generator().manual_seed(seed)
    out = {
        "mask_logits": torch.randn(B, 1, H, W, generator=g),
        "code_logits": 2 * torch.randn(B, n, H, W, generator=g),
    }
    mask = torch.rand(B, H, W, generator=g) > 0.4
    bits = (torch.rand(B, n, H, W, generator=g) > 0.5).to(torch.uint8)
    return out, mask, bits


def _numpy_loss(ml, cl, mask, bits, hist_prev=None, code_weight=3.0, sigma=3.0, pred=False, all_pixels=False):
    """The formulas of ZebraPose (Sec. 3.3-3.4, BinaryCodeNet.py) written out with NumPy, float64."""
    ml, cl = ml.astype(np.float64), cl.astype(np.float64)
    y, gt = bits.astype(np.float64), mask.astype(np.float64)[:, None]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    l_mask = np.mean(np.abs(sig(ml) - gt))
    m = (sig(ml) > 0.5).astype(np.float64) if pred else gt
    n = cl.shape[1]
    z = cl * m if all_pixels else cl
    bce = -(y * np.log(sig(z)) + (1 - y) * np.log(1 - sig(z)))
    L = np.array([(bce[:, i] * m[:, 0]).sum() / max(m.sum(), 1.0) for i in range(n)])
    if all_pixels:
        L = bce.mean(axis=(0, 2, 3))
    h = np.array(
        [(np.abs((sig(cl[:, i]) > 0.5) - y[:, i]) * m[:, 0]).sum() / (m.sum() + 1) for i in range(n)]
    )
    H = h if hist_prev is None else 0.05 * h + 0.95 * hist_prev
    w = np.exp(sigma * np.minimum(H, 0.51 - H))
    return l_mask, code_weight * (w * L).sum() / w.sum(), H


@pytest.mark.parametrize(
    ("code_mask", "reduction"), [("gt", "mask"), ("pred", "all_pixels"), ("pred", "mask")]
)
def test_loss_equals_the_numpy_formulas_over_two_steps(code_mask, reduction):
    loss = ZebraLoss(ZebraLossConfig(code_mask=code_mask, code_reduction=reduction))
    hist = None
    for seed in (0, 1):  # the second step uses the running histogram 0.95 H + 0.05 h
        out, mask, bits = _inputs(seed)
        got = loss(out, mask, bits)
        lm, lc, hist = _numpy_loss(
            out["mask_logits"].numpy(), out["code_logits"].numpy(), mask.numpy(), bits.numpy(), hist,
            pred=code_mask == "pred", all_pixels=reduction == "all_pixels",
        )  # fmt: skip
        assert got["loss_mask"].item() == pytest.approx(lm, rel=1e-5)
        assert got["loss_code"].item() == pytest.approx(lc, rel=1e-5)
        np.testing.assert_allclose(loss.histogram.numpy(), hist, rtol=1e-5)


def test_doubling_code_weight_doubles_only_the_code_term():
    out, mask, bits = _inputs(3)
    a = ZebraLoss(ZebraLossConfig(code_weight=3.0))(out, mask, bits)
    b = ZebraLoss(ZebraLossConfig(code_weight=6.0))(out, mask, bits)
    assert b["loss_code"].item() == pytest.approx(2 * a["loss_code"].item(), rel=1e-6)
    assert b["loss_mask"].item() == a["loss_mask"].item()
    assert set(a) == {"loss_mask", "loss_code"}


def test_near_zero_when_predictions_equal_targets():
    _, mask, bits = _inputs(4)
    out = {
        "mask_logits": 30.0 * (mask[:, None].float() * 2 - 1),
        "code_logits": 30.0 * (bits.float() * 2 - 1),
    }
    loss = ZebraLoss(ZebraLossConfig(code_mask="gt", code_reduction="mask"))
    got = loss(out, mask, bits)
    assert got["loss_mask"].item() < 1e-9 and got["loss_code"].item() < 1e-9
    assert loss.histogram.abs().max().item() == 0.0
    # The reference's defaults (predicted mask, mean over all pixels): a pixel outside the mask has its logits
    # multiplied by 0, BCE(0, y) = log 2, so the code term of perfect predictions is 3 (1 - |M| / N) log 2.
    ref = ZebraLoss()
    assert (ref.cfg.code_mask, ref.cfg.code_reduction) == ("pred", "all_pixels")
    frac = mask.float().mean().item()
    assert ref(out, mask, bits)["loss_code"].item() == pytest.approx(3 * (1 - frac) * np.log(2), rel=1e-5)


def test_histogram_is_in_the_state_dict():
    _, mask, bits = _inputs(4)
    out = {"mask_logits": torch.ones(mask.shape)[:, None], "code_logits": torch.randn(bits.shape)}
    a = ZebraLoss()
    a(out, mask, bits)
    b = ZebraLoss()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.histogram, b.histogram) and a.stateful
    b.load_state_dict(ZebraLoss().state_dict())
    assert b.histogram is None


def test_weights_peak_for_bits_half_learnt_and_are_detached():
    hist = torch.tensor([0.0, 0.1, 0.255, 0.4, 0.5], requires_grad=True)
    w = bit_weights(hist)
    assert not w.requires_grad
    np.testing.assert_allclose(w.numpy(), np.exp(3 * np.array([0.0, 0.1, 0.255, 0.11, 0.01])), rtol=1e-6)
    assert int(w.argmax()) == 2
    # every wrong bit inside a 3-pixel mask: 3 / (3 + 1)
    z = torch.tensor([[[[1.0, 1.0, 1.0, -1.0]]]])
    h = bit_error_histogram(z, torch.zeros_like(z), torch.tensor([[[[1.0, 1.0, 1.0, 0.0]]]]))
    assert h.item() == pytest.approx(0.75)


def test_gradient_flows_to_both_logits_and_not_through_code_outside_the_mask():
    out, mask, bits = _inputs(5)
    out = {k: v.clone().requires_grad_(True) for k, v in out.items()}
    terms = ZebraLoss(ZebraLossConfig(code_mask="gt", code_reduction="mask"))(out, mask, bits)
    sum(terms.values()).backward()
    g = out["code_logits"].grad
    assert out["mask_logits"].grad.abs().sum() > 0 and g.abs().sum() > 0
    assert g.permute(1, 0, 2, 3)[:, ~mask].abs().max() == 0  # pixels outside the GT mask get no code gradient


def test_histogram_is_kept_in_training_mode_only_and_bad_input_is_an_error():
    out, mask, bits = _inputs(6)
    loss = ZebraLoss().eval()
    loss(out, mask, bits)
    assert loss.histogram is None
    with pytest.raises(BopkdError, match="do not match"):
        loss(out, mask, bits[:, :3])
    with pytest.raises(BopkdError, match="code_mask"):
        ZebraLossConfig(code_mask="both").validate()
