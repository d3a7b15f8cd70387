"""PoseNet forward contract, anchors, parameterisation, configs, sizes of the presets."""

from __future__ import annotations

import pytest
import torch

from bopkd.config import from_dict
from bopkd.errors import BopkdError
from bopkd.models.posenet import ModelConfig, PoseNet, build_model
from bopkd.models.profile import count_parameters

OBJ_IDS = [1, 5, 6, 8, 9, 10, 11, 12]  # LM-O


@pytest.fixture(scope="module")
def models() -> dict[str, PoseNet]:
    return {
        name: build_model(ModelConfig(obj_ids=OBJ_IDS, backbone=name))
        for name in ("tiny-cpu", "darknet-tiny", "darknet-tiny-h", "darknet53", "resnet18")
    }


@pytest.mark.parametrize("name", ["tiny-cpu", "darknet-tiny", "darknet-tiny-h", "darknet53", "resnet18"])
def test_forward_contract(models, name):
    m = models[name]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = m(x)
    A = sum(h * w for h, w in out["anchors"]["shapes"])
    assert out["cls_logits"].shape == (2, A, 8) and out["cls_logits"].dtype == torch.float32
    assert out["kpts"].shape == (2, A, 8, 8, 2) and out["kpts"].dtype == torch.float32
    assert len(out["features"]) == 5
    for f, (h, w) in zip(out["features"], out["anchors"]["shapes"], strict=True):
        assert tuple(f.shape) == (2, m.cfg.fpn_channels, h, w)
    assert [f.shape[1] for f in out["backbone_features"]] == m.backbone.channels
    assert out["image_size"] == (64, 96)
    assert out["anchors"]["shapes"][0] == (8, 12)


def test_anchor_geometry_and_cache(models):
    m = models["tiny-cpu"]
    a = m.anchors((64, 96))
    assert a is m.anchors((64, 96))
    assert a["strides"] == [8, 16, 32, 64, 128] and a["levels"] == [3, 4, 5, 6, 7]
    assert a["shapes"] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    assert a["level_start"] == [0, 96, 120, 126, 128, 129]
    assert a["centers"][0].tolist() == [4.0, 4.0]
    assert a["centers"][95].tolist() == [11.5 * 8, 7.5 * 8]  # last cell of P3: row 7, column 11
    assert a["centers"][96].tolist() == [8.0, 8.0]
    assert a["centers"][127].tolist() == [96.0, 32.0]  # P6 row 0 column 1
    assert a["sizes"][0] == 32 and a["sizes"][128] == 512
    assert torch.equal(a["level"], torch.repeat_interleave(torch.arange(5), torch.tensor([96, 24, 6, 2, 1])))


def test_keypoints_are_anchor_centre_plus_scaled_offset(models):
    m = models["tiny-cpu"]
    with torch.no_grad():
        for s in m.head.scales:  # make the per-level scale matter
            s.scale.fill_(2.0)
        x = torch.randn(1, 3, 64, 96)
        out = m(x)
        _, raw = m.head(out["features"])
        for s in m.head.scales:
            s.scale.fill_(1.0)
    a = out["anchors"]
    for lv, r in enumerate(raw):  # r: (1, 16 C, h, w), already times the level scale
        h, w = a["shapes"][lv]
        i, j, c, k = h - 1, w - 1, 5, 3
        cell = a["level_start"][lv] + i * w + j
        size = m.cfg.anchor_scale * a["strides"][lv]
        expect_x = (j + 0.5) * a["strides"][lv] + r[0, c * 16 + 2 * k, i, j] * size
        expect_y = (i + 0.5) * a["strides"][lv] + r[0, c * 16 + 2 * k + 1, i, j] * size
        torch.testing.assert_close(out["kpts"][0, cell, c, k], torch.stack([expect_x, expect_y]))


def test_padding_of_sizes_not_divisible_by_the_stride(models):
    m = models["tiny-cpu"]
    assert m.size_divisor == 16
    with torch.no_grad():
        out = m(torch.randn(1, 3, 70, 100))
    assert out["anchors"]["shapes"][0] == (10, 14)  # padded to 80 x 112
    assert out["image_size"] == (70, 100)
    assert out["cls_logits"].shape[1] == out["anchors"]["centers"].shape[0]


def test_sizes_teacher_much_larger_than_students(models):
    n = {k: count_parameters(v) for k, v in models.items()}
    assert n["darknet53"] > 4 * n["darknet-tiny"] > 4 * n["darknet-tiny-h"]
    assert n["darknet-tiny-h"] > 10 * n["tiny-cpu"]
    assert (
        count_parameters(models["darknet53"].backbone) == 40_584_928
    )  # pytorchcv/WDR darknet53 less classifier


def test_train_and_eval_mode_agree_with_default_norm(models):
    m = models["tiny-cpu"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = m.train()(x)
        b = m.eval()(x)
    torch.testing.assert_close(a["kpts"], b["kpts"])
    torch.testing.assert_close(a["cls_logits"], b["cls_logits"])


def test_model_config_round_trip_and_validation():
    cfg = from_dict(ModelConfig, {"obj_ids": [1, 5], "backbone": "darknet-tiny-h", "levels": [3, 4, 5, 6]})
    r = cfg.resolved()
    assert r.fpn_channels == 128 and r.head_convs == 4
    assert from_dict(ModelConfig, cfg.to_dict()) == cfg
    net = PoseNet(cfg)
    assert net.obj_ids == [1, 5] and net.strides == [8, 16, 32, 64]
    for bad, msg in (
        ({"obj_ids": []}, "obj_ids is empty"),
        ({"obj_ids": [1, 1]}, "duplicates"),
        ({"obj_ids": [1], "levels": [3, 5]}, "consecutive"),
        ({"obj_ids": [1], "bakbone": "x"}, "'model.bakbone' .*is unknown: did you mean 'backbone'"),
        ({"obj_ids": [1], "backbone_norm": "layer"}, "backbone_norm"),
        ({"obj_ids": [1], "prior_prob": 1.5}, "prior_prob"),
        ({"obj_ids": ["a"]}, "'model.obj_ids' .*expected an integer, got 'a'"),
    ):
        with pytest.raises(BopkdError, match=msg):
            from_dict(ModelConfig, bad, source="cfg.yaml", path="model")
    with pytest.raises(BopkdError, match="3, H, W"):
        PoseNet(ModelConfig(obj_ids=[1], backbone="tiny-cpu"))(torch.zeros(3, 32, 32))
