"""Profiling helpers: parameter count, MACs against hand-counted convolutions, latency."""

from __future__ import annotations

import torch
from torch import nn

from bopkd.models.posenet import ModelConfig, build_model
from bopkd.models.profile import count_macs, count_parameters, measure_latency


def test_counts_on_a_hand_checkable_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2))
    assert count_parameters(net) == 3 * 8 * 9 + 8 + 8 * 4 + 4
    net[0].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 8 + 8 * 4 + 4
    # conv1: 8 x 3 x 3 x 3 MACs per output pixel on 20 x 30; conv2: 4 x 8 on 10 x 15 (biases not counted)
    assert count_macs(net, (20, 30)) == 8 * 27 * 600 + 32 * 150


def test_posenet_macs_scale_with_the_image_and_latency_is_positive():
    m = build_model(ModelConfig(obj_ids=[1, 2], backbone="tiny-cpu"))
    m.train()
    small, large = count_macs(m, (32, 32)), count_macs(m, (64, 64))
    assert m.training  # mode restored
    assert 3.5 < large / small < 4.5
    ms = measure_latency(m, (32, 32), "cpu", iters=2, warmup=1)
    assert ms > 0
    assert m.training
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64))["kpts"].shape[2] == 2
