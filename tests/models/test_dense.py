"""The dense (ZebraPose-style) network: output shapes, dtypes, feature strides, gradients, config checks."""

from __future__ import annotations

import pytest
import torch

from bopkd.errors import BopkdError
from bopkd.models.dense import DenseModelConfig, build_dense_model, count_parameters


@pytest.mark.parametrize(
    ("encoder", "strides"),
    [("resnet34", [2, 4, 8, 16, 32]), ("resnet18", [2, 4, 8, 16, 32]), ("darknet-tiny", [2, 4, 8, 16])],
)
def test_outputs_have_the_shapes_of_a_128_crop_at_stride_2(encoder, strides):
    cfg = DenseModelConfig(encoder=encoder, out_size=64, bits=16)
    model = build_dense_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, cfg.in_size, cfg.in_size))
    assert out["mask_logits"].shape == (2, 1, 64, 64) and out["mask_logits"].dtype == torch.float32
    assert out["code_logits"].shape == (2, 16, 64, 64) and out["code_logits"].dtype == torch.float32
    sides = [f.shape[-1] for f in out["features"]]
    assert sides == [128 // s for s in strides]  # stride 2 first, the coarsest last
    assert [f.shape[1] for f in out["features"]] == model.encoder.channels
    assert model.stride == 2


def test_default_is_256_in_128_out_and_the_students_are_smaller():
    cfg = DenseModelConfig()
    assert (cfg.encoder, cfg.bits, cfg.in_size, cfg.out_size) == ("resnet34", 16, 256, 128)
    student = build_dense_model(DenseModelConfig(encoder="darknet-tiny")).eval()
    with torch.no_grad():
        out = student(torch.randn(1, 3, 256, 256))
    assert out["mask_logits"].shape == (1, 1, 128, 128) and out["code_logits"].shape == (1, 16, 128, 128)
    teacher = build_dense_model(cfg)
    r18 = build_dense_model(DenseModelConfig(encoder="resnet18"))
    # timm resnet34 / resnet18 bodies without classifier: 21.28 M / 11.18 M parameters
    assert count_parameters(teacher.encoder) == 21_284_672
    assert count_parameters(r18.encoder) == 11_176_512
    assert count_parameters(student) < count_parameters(r18) < count_parameters(teacher)


def test_gradients_reach_the_encoder_and_the_head():
    model = build_dense_model(
        DenseModelConfig(encoder="tiny-cpu", out_size=32, bits=4, decoder_channels=[16, 16, 8])
    )
    out = model(torch.randn(2, 3, 64, 64))
    (out["mask_logits"].sum() + out["code_logits"].pow(2).sum()).backward()
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0
    assert out["code_logits"].shape == (2, 4, 32, 32)


@pytest.mark.parametrize(
    "kwargs",
    [{"bits": 0}, {"out_size": 100}, {"decoder_channels": []}, {"norm": "layer"}, {"pretrained": ""}],
)
def test_bad_config_is_a_one_line_error(kwargs):
    with pytest.raises(BopkdError) as e:
        DenseModelConfig(**kwargs).validate()
    assert "\n" not in str(e.value)


def test_too_few_decoder_widths_and_bad_input_are_errors():
    with pytest.raises(BopkdError, match="decoder_channels"):
        build_dense_model(DenseModelConfig(encoder="tiny-cpu", decoder_channels=[8, 8]))
    model = build_dense_model(DenseModelConfig(encoder="tiny-cpu", decoder_channels=[8, 8, 8]))
    with pytest.raises(BopkdError, match="multiples of 16"):
        model(torch.randn(1, 3, 72, 72))
