"""Size and speed of a network: parameters, multiply-accumulates and latency per image.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's operator-level FLOP
counter: convolutions and matrix products; normalisation and element-wise ops are not counted) as
``MACs = FLOPs / 2``. Latency is the median wall time of ``iters`` forward passes of a batch of one
after ``warmup`` passes, in eval mode without gradients.
"""

from __future__ import annotations

import time

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _dummy(
    model: nn.Module, input_size: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    H, W = int(input_size[0]), int(input_size[1])
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    return torch.zeros(1, 3, H, W, device=device)


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on a (1, 3, H, W) input, ``input_size = (H, W)``."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(_dummy(model, input_size))
    finally:
        model.train(was_training)
    return int(fc.get_total_flops() // 2)


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int],
    device: torch.device | str = "cpu",
    iters: int = 10,
    warmup: int = 2,
) -> float:
    """Median forward time in ms per image (batch of one, eval mode, no gradients) on ``device``.

    The model is moved to ``device`` (and left there).
    """
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    x = _dummy(model, input_size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + iters):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    times.sort()
    return 1000.0 * times[len(times) // 2]
