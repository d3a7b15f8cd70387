"""The optimiser and learning-rate schedule of a run, from its :class:`~bopkd.train.config.OptimConfig`.

One-cycle (``torch.optim.lr_scheduler.OneCycleLR``; Smith & Topin, "Super-Convergence", 2019): the lr rises
from ``lr / div_factor`` to ``lr`` over the first ``pct_start`` of the planned steps, then falls to
``lr / div_factor / final_div_factor`` (cosine or linear annealing), optionally cycling the momentum inversely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from bopkd.train.config import OptimConfig


def one_cycle_pct_start(pct_start: float, iters: int) -> float:
    """The one-cycle warm-up fraction actually used: ``pct_start``, but at least 1.5 steps of ``iters``."""
    return max(float(pct_start), 1.5 / iters)


def make_optimizer(params: list[nn.Parameter], o: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (lr, weight decay, betas, eps) or SGD (lr, momentum, weight decay) over ``params``."""
    if o.name == "adamw":
        return torch.optim.AdamW(
            params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas), eps=o.eps
        )
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, o: OptimConfig, iters: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule of a run of ``iters`` steps (stepped once per step)."""
    total = iters + o.schedule_extra_steps
    if o.schedule == "onecycle" and total >= 3:
        # The cycle is planned for iters + schedule_extra_steps steps, of which the run takes iters. OneCycleLR's
        # warm-up ends at step pct_start * total - 1; it must lie inside the cycle and not at 0 (torch divides
        # by it), so short cycles warm up for at least 1.5 steps.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=o.lr,
            total_steps=total,
            pct_start=one_cycle_pct_start(o.pct_start, total),
            anneal_strategy=o.anneal,
            cycle_momentum=o.cycle_momentum,
            div_factor=o.div_factor,
            final_div_factor=o.final_div_factor,
        )
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iters)
    # "constant", and one-cycle runs of 1 or 2 steps (too short for a cycle): the peak lr throughout.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
