"""Sigmoid focal loss on the per-cell, per-class segmentation scores.

Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, Eq. 5 with the alpha balance:
``FL = -alpha (1-p)^gamma log p`` on a positive class, ``-(1-alpha) p^gamma log(1-p)`` on a negative
one, summed over all classes of every non-ignored cell (WDR's ``SigmoidFocalLoss``, Hu et al. 2021,
alpha 0.25, gamma 2). Computed by ``torchvision.ops.sigmoid_focal_loss`` (numerically stable: it uses
``binary_cross_entropy_with_logits`` rather than WDR's clamped ``log p``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Summed sigmoid focal loss over the cells that are not ignored.

    Args:
        logits: (..., C) logits.
        labels: (...) long: class index >= 0 for a positive cell, -1 background (all C classes
            negative), -2 or lower ignored (contributes nothing).

    Returns:
        scalar: the sum over valid cells and classes (normalise outside, e.g. by the positive count).
    """
    C = logits.shape[-1]
    valid = labels >= -1
    lg = logits[valid]
    lb = labels[valid]
    target = F.one_hot(lb.clamp(min=0), C).to(lg.dtype) * (lb >= 0).unsqueeze(-1).to(lg.dtype)
    return sigmoid_focal_loss(lg, target, alpha=alpha, gamma=gamma, reduction="sum")
