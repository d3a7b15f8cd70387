"""Backbone weights from a local file (``model.pretrained: PATH``, bopkd.models.pretrained).

The files are written here: a backbone is built, its weights perturbed and saved, and a new network built
with ``pretrained=PATH`` must hold exactly the saved values.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from bopkd.config import from_dict
from bopkd.errors import BopkdError
from bopkd.models.backbones import build_backbone
from bopkd.models.posenet import ModelConfig, PoseNet


def _perturbed_state(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The module's state with every float tensor replaced by random values (running variances > 0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            r = torch.randn(v.shape, generator=g, dtype=v.dtype)
            out[k] = r.abs() + 0.5 if k.endswith("running_var") else r
        else:
            out[k] = v.clone()
    return out


def _assert_loaded(body: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    state = body.state_dict()
    names = [k for k in saved if not k.endswith("num_batches_tracked")]
    assert names and all(torch.equal(state[k], saved[k]) for k in names)


@pytest.mark.parametrize("norm", ["batch", "auto"])
def test_darknet_weights_file_round_trip(tmp_path, norm):
    """darknet-tiny (bopkd's own network): a saved backbone state dict is loaded into a new PoseNet; with
    norm "auto" the pretrained backbone gets frozen BatchNorm holding the saved statistics."""
    src = build_backbone("darknet-tiny", [3, 4], norm="batch")
    saved = _perturbed_state(src.body)
    path = tmp_path / "darknet_tiny.pt"
    torch.save(saved, path)
    net = PoseNet(
        ModelConfig(obj_ids=[1, 2], backbone="darknet-tiny", pretrained=str(path), backbone_norm=norm)
    )
    _assert_loaded(net.backbone.body, saved)
    if norm == "auto":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.backbone.modules())


def test_full_checkpoint_dict_loads_the_backbone_only(tmp_path):
    """A checkpoint dict with the weights under 'model' (a bopkd checkpoint, or the reference's latest.pth):
    the backbone's keys are loaded, the FPN and head keep their initial values."""
    cfg = ModelConfig(obj_ids=[1], backbone="darknet-tiny-h", backbone_norm="batch")
    trained = PoseNet(cfg)
    state = _perturbed_state(trained, seed=1)
    path = tmp_path / "latest.pth"
    torch.save({"steps": 3, "model": state, "optim": {}}, path)
    fresh = PoseNet(ModelConfig(**{**cfg.to_dict(), "pretrained": str(path)}))
    body = {k[len("backbone.body.") :]: v for k, v in state.items() if k.startswith("backbone.body.")}
    _assert_loaded(fresh.backbone.body, body)
    head_key = next(k for k in state if k.startswith("head.") and state[k].is_floating_point())
    assert not torch.equal(fresh.state_dict()[head_key], state[head_key])


def test_pytorchcv_darknet_tiny_names_are_mapped(tmp_path):
    """pytorchcv's DarkNet (the reference's backbone/darknet.py) names its units
    ``features.stage{i}.unit{j}.conv|bn.*`` and adds a classifier (``output.final_conv``)."""
    src = build_backbone("darknet-tiny", [3, 4], norm="batch")
    saved = _perturbed_state(src.body, seed=2)
    renamed = {}
    for k, v in saved.items():
        stage, unit, part, rest = k.split(".", 4)[1:]
        renamed[f"features.stage{int(stage) + 1}.unit{int(unit) + 1}.{('conv', 'bn')[int(part)]}.{rest}"] = v
    renamed["output.final_conv.weight"] = torch.zeros(1000, 128, 1, 1)
    path = tmp_path / "darknet_tiny-1784-4561e1ad.pth"
    torch.save(renamed, path)
    bb = build_backbone("darknet-tiny", [3, 4], pretrained=str(path), norm="batch")
    _assert_loaded(bb.body, saved)


def test_timm_model_keys_meet_its_features_only_keys(tmp_path):
    """A timm model's own state dict (``stem.conv1...``, classifier included) loads into its features_only
    backbone (``stem_conv1...``)."""
    import timm

    full = timm.create_model("cs3darknet_s")
    saved = _perturbed_state(full, seed=3)
    path = tmp_path / "cs3darknet_s.pt"
    torch.save(saved, path)
    bb = build_backbone("cs3darknet_s", [3, 4, 5], pretrained=str(path), norm="batch")
    state = bb.body.state_dict()
    loaded = 0
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(v, saved[k.replace("stem_", "stem.").replace("stages_", "stages.")]), k
        loaded += 1
    assert loaded == len([k for k in state if not k.endswith("num_batches_tracked")]) > 50


def test_weights_file_errors_are_one_line(tmp_path):
    cases = []
    missing = tmp_path / "nope.pt"
    cases.append((missing, "missing file .*nope.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    cases.append((garbage, "garbage.pt: not a readable weights file"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"classifier.weight": torch.zeros(3, 3)}, foreign)
    cases.append((foreign, "foreign.pt: none of its 1 tensors fits backbone 'tiny-cpu'"))
    for path, message in cases:
        with pytest.raises(BopkdError, match=message) as e:
            build_backbone("tiny-cpu", [3], pretrained=str(path))
        text = str(e.value)
        assert len(text.splitlines()) == 1 and "model.pretrained" in text
    with pytest.raises(BopkdError, match="no pretrained weights to download.*local weights file"):
        build_backbone("darknet-tiny-h", [3], pretrained=True)


def test_a_partial_file_loads_what_fits_and_says_so(tmp_path):
    src = build_backbone("tiny-cpu", [3], norm="batch")
    saved = _perturbed_state(src.body, seed=4)
    dropped = next(iter(saved))
    partial = {k: v for k, v in saved.items() if k != dropped}
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb = build_backbone("tiny-cpu", [3], pretrained=str(path), norm="batch")
    lines = [str(w.message) for w in caught if "partial.pt" in str(w.message)]
    assert len(lines) == 1 and "keep their initial values" in lines[0] and dropped in lines[0]
    _assert_loaded(bb.body, partial)


def test_a_checkpoints_network_is_rebuilt_without_its_weights_file(tmp_path):
    """The network of a run trained from a weights file is rebuilt (teacher, predict) without reading the file
    again, with the same modules (frozen BatchNorm), so the checkpoint's weights load strictly."""
    src = build_backbone("tiny-cpu", [3, 4], norm="batch")
    path = tmp_path / "w.pt"
    torch.save(src.body.state_dict(), path)
    cfg = ModelConfig(obj_ids=[1], backbone="tiny-cpu", levels=[3, 4, 5], pretrained=str(path))
    trained = PoseNet(cfg)
    path.unlink()
    again = cfg.without_pretrained()
    assert again.pretrained is False and again.backbone_norm == "frozen_batch"
    rebuilt = PoseNet(again)
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    assert from_dict(ModelConfig, cfg.to_dict()).pretrained == str(path)
