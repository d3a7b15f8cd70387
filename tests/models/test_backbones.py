"""Backbones: presets and timm names give the advertised maps; DarkNet-tiny equals the reference size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bopkd.errors import BopkdError
from bopkd.models.backbones import BACKBONES, DarkNetTiny, build_backbone, convert_norm, gn_groups


def _n(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_darknet_tiny_matches_the_reference_parameter_count():
    # pytorchcv's darknet_tiny (the students' backbone in GUOShuxuan/kd-6d-pose-adlp) asserts 1,042,104
    # weights including its 128 -> 1000 classifier conv (129,000): 913,104 for the feature extractor.
    assert _n(DarkNetTiny(BACKBONES["darknet-tiny"].darknet_stages)) == 913_104


@pytest.mark.parametrize("name", ["darknet-tiny", "darknet-tiny-h", "tiny-cpu"])
def test_darknet_presets_feature_maps(name):
    body = DarkNetTiny(BACKBONES[name].darknet_stages)
    feats = body(torch.zeros(2, 3, 64, 96))
    assert body.reductions == [2, 4, 8, 16]
    assert [f.shape[1] for f in feats] == body.channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(64 // r, 96 // r) for r in body.reductions]
    bb = build_backbone(name, [3, 4, 5, 6, 7], norm="batch")
    assert bb.levels == [3, 4] and bb.reductions == [8, 16]
    out = bb(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in out] == bb.channels


def test_half_width_preset_has_about_a_quarter_of_the_weights():
    full = _n(DarkNetTiny(BACKBONES["darknet-tiny"].darknet_stages))
    half = _n(DarkNetTiny(BACKBONES["darknet-tiny-h"].darknet_stages))
    assert 0.2 < half / full < 0.3


def test_any_timm_name_works():
    bb = build_backbone("resnet18", [3, 4, 5, 6, 7])
    assert bb.levels == [3, 4, 5] and bb.channels == [128, 256, 512]
    out = bb(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape) for f in out] == [(1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]


def test_errors_are_one_line_bopkd_errors():
    with pytest.raises(BopkdError, match="unknown backbone 'no-such-net'"):
        build_backbone("no-such-net", [3, 4, 5])
    with pytest.raises(BopkdError, match="no feature map at stride 128"):
        build_backbone("tiny-cpu", [7])
    with pytest.raises(BopkdError, match="no pretrained weights"):
        build_backbone("darknet-tiny", [3, 4], pretrained=True)
    with pytest.raises(BopkdError, match="unknown backbone norm"):
        build_backbone("tiny-cpu", [3], norm="layer")


def test_norm_conversion():
    assert gn_groups(256) == 32 and gn_groups(128) == 32 and gn_groups(64) == 16 and gn_groups(8) == 2
    assert gn_groups(3) == 1
    bb = build_backbone("resnet18", [3, 4, 5], norm="group")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in bb.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in bb.modules())
    # timm's fused BatchNormAct2d keeps its activation when it becomes GroupNorm
    from timm.layers import BatchNormAct2d

    fused = nn.Sequential(nn.Conv2d(3, 8, 1), BatchNormAct2d(8, act_layer=nn.ReLU))
    conv = convert_norm(fused, "group")
    assert isinstance(conv[1][0], nn.GroupNorm) and isinstance(conv[1][2], nn.ReLU)
    assert (conv(torch.randn(2, 3, 5, 5)) >= 0).all()
    # auto = group without pretrained weights: train and eval mode then compute the same thing
    tiny = build_backbone("tiny-cpu", [3, 4])
    x = torch.randn(2, 3, 32, 32)
    a = tiny.train()(x)
    b = tiny.eval()(x)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)
    frozen = build_backbone("tiny-cpu", [3, 4], norm="frozen_batch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
