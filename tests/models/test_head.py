"""Pose head: output layout, focal prior initialisation, per-level learned scale, GroupNorm only."""

from __future__ import annotations

import math

import torch
from torch import nn

from bopkd.models.head import PoseHead


def test_layout_prior_and_scales():
    head = PoseHead(16, num_classes=3, n_convs=2, num_levels=2, prior_prob=0.01)
    feats = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4)]
    logits, raw = head(feats)
    assert [tuple(x.shape) for x in logits] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [tuple(x.shape) for x in raw] == [(2, 48, 8, 8), (2, 48, 4, 4)]
    # at initialisation every score is ~ the prior (weights N(0, 0.01), bias -log(99))
    assert torch.allclose(head.cls_logits.bias, torch.full((3,), -math.log(99.0)))
    p = torch.sigmoid(torch.cat([x.flatten() for x in logits]))
    assert (p - 0.01).abs().max() < 0.005
    # the learned scale of level 1 multiplies that level's keypoint output only
    with torch.no_grad():
        head.scales[1].scale.fill_(3.0)
    _, raw2 = head(feats)
    torch.testing.assert_close(raw2[0], raw[0])
    torch.testing.assert_close(raw2[1], 3.0 * raw[1])


def test_group_norm_not_batch_norm():
    head = PoseHead(32, num_classes=2, n_convs=4, num_levels=5)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in head.modules()) == 8
