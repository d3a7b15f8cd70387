"""How many cells each FPN level contributes for an object of a given size.

WDR (Hu et al., CVPR 2021, ``PoseLoss.prepare_targets`` in cvlab-epfl/wide-depth-range-pose; the same rule in
GUOShuxuan/kd-6d-pose-adlp) spreads ``num`` cells over the levels by comparing the object's size ``S`` (the
larger side of the box of its projected 3D bounding box corners) with each level's anchor size ``a_l``::

    d_l = |log2(S / a_l)|,   n_l = floor(num * exp(-lambda d_l^2) / sum_k exp(-lambda d_k^2) + 0.5)

Training samples positives with it (:func:`bopkd.losses.targets.assign_targets`), inference keeps that many
confident cells per level (:mod:`bopkd.models.decode`), and the OT distillation gathers teacher cells with it.
"""

from __future__ import annotations

import torch


def object_sizes(corners_2d: torch.Tensor) -> torch.Tensor:
    """(n, 8, 2) projected corners, px -> (n,) the larger side of their bounding box, px."""
    span = corners_2d.amax(dim=1) - corners_2d.amin(dim=1)
    return span.amax(dim=-1)


def level_quota(
    sizes: torch.Tensor, level_sizes: torch.Tensor, num: int = 10, lam: float = 1.0
) -> torch.Tensor:
    """Positives per level for objects of the given sizes (WDR's ``nk``).

    Args:
        sizes: (n,) object sizes, px.
        level_sizes: (L,) anchor size of each level, px.

    Returns:
        (n, L) long, ``floor(num * softmax_l(-lam d_l^2) + 0.5)``.
    """
    s = sizes.to(torch.float32).clamp(min=1.0).view(-1, 1)
    d = torch.log2(s / level_sizes.to(s).view(1, -1)).abs()
    w = torch.exp(-lam * d * d)
    w = w / w.sum(dim=1, keepdim=True)
    return torch.floor(num * w + 0.5).long()


__all__ = ["level_quota", "object_sizes"]
