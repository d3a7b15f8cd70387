"""Focal loss against the formula of Lin et al. (2017), written out here as an independent reference."""

from __future__ import annotations

import torch

from bopkd.losses.focal import focal_loss


def _reference(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """WDR's SigmoidFocalLoss without its clamp: loops over cells and classes."""
    total = torch.zeros((), dtype=torch.float64)
    for x, lab in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), strict=True):
        if lab < -1:
            continue
        for c, xc in enumerate(x):
            p = torch.sigmoid(xc.double())
            if c == lab:
                total = total - alpha * (1 - p) ** gamma * torch.log(p)
            else:
                total = total - (1 - alpha) * p**gamma * torch.log(1 - p)
    return total


def test_equals_formula_with_positives_background_and_ignored():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 4, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(-2, 4, (2, 30), generator=g)
    for alpha, gamma in ((0.25, 2.0), (0.5, 0.0), (0.9, 1.5)):
        got = focal_loss(logits, labels, alpha, gamma)
        torch.testing.assert_close(got, _reference(logits, labels, alpha, gamma), rtol=1e-10, atol=1e-12)


def test_ignored_cells_contribute_nothing():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 3, generator=g)
    labels = torch.full((50,), -1)
    labels[:5] = 1
    labels[10:20] = -2
    base = focal_loss(logits, labels)
    changed = logits.clone()
    changed[10:20] = 100 * torch.randn(10, 3, generator=g)
    torch.testing.assert_close(focal_loss(changed, labels), base)
    # and a background cell does contribute
    changed[30] += 5
    assert focal_loss(changed, labels) > base


def test_confident_correct_predictions_give_small_loss_and_gradient_sign():
    logits = torch.tensor([[8.0, -8.0], [-8.0, -8.0]], requires_grad=True)
    labels = torch.tensor([0, -1])
    loss = focal_loss(logits, labels)
    assert loss < 1e-6
    wrong = focal_loss(torch.tensor([[-8.0, 8.0], [8.0, -8.0]]), labels)
    assert wrong > 1.0
    x = torch.zeros(1, 2, requires_grad=True)
    focal_loss(x, torch.tensor([0])).backward()
    assert x.grad[0, 0] < 0 < x.grad[0, 1]  # raise the positive logit, lower the negative one
