"""Typed run configs: layers, YAML, dotted overrides, presets and readable errors (bopkd.train.config)."""

from __future__ import annotations

import pytest
import yaml

from bopkd.config import from_dict, parse_override, to_dict
from bopkd.errors import BopkdError, MissingFileError
from bopkd.train.config import RunConfig, build_config, save_config
from bopkd.train.presets import TRAIN_PRESETS


def test_defaults_are_the_papers_training_settings():
    cfg = build_config()
    assert isinstance(cfg, RunConfig)
    o = cfg.optim
    assert (o.name, o.lr, o.weight_decay, o.schedule, o.pct_start, o.grad_clip) == (
        "adamw",
        1e-3,
        1e-4,
        "onecycle",
        0.05,
        1.0,
    )
    assert cfg.batch_size == 16 and cfg.model.backbone == "darknet53" and cfg.data.mode == "full"


@pytest.mark.parametrize("name", sorted(TRAIN_PRESETS))
def test_every_preset_builds_and_round_trips_through_yaml(name, tmp_path):
    cfg = build_config(preset=name)
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    again = build_config(config_file=path)
    assert to_dict(again) == to_dict(cfg)
    # The file is plain YAML (safe_load reads it) with tuples stored as lists.
    d = yaml.safe_load(path.read_text())
    assert isinstance(d["data"]["crop_pad_range"], list)


def test_presets_set_what_they_promise():
    paper = build_config(preset="paper")  # setting by setting: tests/train/test_paper_preset.py
    assert paper.model.backbone == "darknet53" and paper.batch_size == 16
    assert (paper.data.mode, paper.data.crop_size) == ("crop", 256)
    assert (paper.augment.shift, paper.augment.scale, paper.augment.rotation) == (0.05, 0.05, 10.0)
    quick = build_config(preset="cpu-quick")
    assert quick.device == "cpu" and quick.model.backbone == "tiny-cpu" and quick.data.num_workers == 0
    demo = build_config(preset="demo")
    assert demo.data.mode == "crop" and demo.data.crop_size == 128 and demo.model.backbone == "tiny-cpu"


def test_layer_order_preset_file_options_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-quick\niters: 50\noptim:\n  lr: 0.01\n  weight_decay: 0.5\n")
    cfg = build_config(
        config_file=f,
        options={"optim": {"lr": 0.002, "weight_decay": None}, "iters": None},
        overrides=["optim.lr=3e-4"],
    )
    assert cfg.model.backbone == "tiny-cpu"  # the file's preset
    assert cfg.iters == 50  # the file beats the preset; an unset option (None) changes nothing
    assert cfg.optim.weight_decay == 0.5
    assert cfg.optim.lr == pytest.approx(3e-4)  # --set beats the options, which beat the file


def test_overrides_are_typed():
    cfg = build_config(
        overrides=[
            "data.input_size=[320,240]",
            "model.fpn_channels=null",
            "augment.enabled=false",
            "optim.betas=[0.8,0.9]",
            "data.scene_ids=[1,2]",
            "seed=7",
            "optim.lr=1e-2",
        ]
    )
    assert (
        cfg.data.input_size == (320, 240) and cfg.model.fpn_channels is None and cfg.augment.enabled is False
    )
    assert cfg.optim.betas == (0.8, 0.9) and cfg.data.scene_ids == [1, 2]
    assert cfg.seed == 7 and cfg.optim.lr == 0.01
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


@pytest.mark.parametrize(
    ("sets", "pattern"),
    [
        (["optim.lrr=1"], r"'optim.lrr' \(from --set optim.lrr=1\) is unknown: did you mean 'lr'\?"),
        (["optim.lr=fast"], r"'optim.lr' \(from --set optim.lr=fast\): expected a number, got 'fast'"),
        (["data.mode=zoom"], r"'data.mode'.*'zoom' is not allowed: use one of 'full', 'crop'"),
        (["data.input_size=[1,2,3]"], r"'data.input_size'.*expected a list of 2 int"),
        (["iters=0"], r"iters = 0: train for at least 1 iteration"),
        (["optim.lr=-1"], r"optim.lr = -1.0: the learning rate must be > 0"),
        (["batch_size=2.5"], r"'batch_size'.*expected an integer, got 2.5"),
        (["noequals"], r"write key.sub=value"),
        (["model.obj_ids=[1,1]"], r"model.obj_ids \[1, 1\] has duplicates"),
        (["device=tpu"], r"device = 'tpu': use auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_values_give_one_line_errors_naming_key_and_source(sets, pattern):
    with pytest.raises(BopkdError, match=pattern) as e:
        build_config(overrides=sets)
    assert "\n" not in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(BopkdError, match=r"bad.yaml:\d+: not valid YAML"):
        build_config(config_file=f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(BopkdError, match="must hold a mapping"):
        build_config(config_file=f)
    f.write_text("optim:\n  lr: abc\n")
    with pytest.raises(BopkdError, match=rf"'optim.lr' \(from {f}\): expected a number"):
        build_config(config_file=f)
    f.write_text("preset: gpu-fast\n")
    with pytest.raises(BopkdError, match="unknown preset 'gpu-fast'.*use one of"):
        build_config(config_file=f)
    f.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(BopkdError, match="not valid YAML"):
        build_config(config_file=f)
    with pytest.raises(MissingFileError):
        build_config(config_file=tmp_path / "none.yaml")


def test_from_dict_rejects_unknown_sections():
    with pytest.raises(BopkdError, match="'dat' .* is unknown: did you mean 'data'"):
        from_dict(RunConfig, {"dat": {}})
    with pytest.raises(BopkdError, match="config data .*expected a mapping of keys, got 3"):
        from_dict(RunConfig, {"data": 3})


def test_kd_weight_shorthand_writes_the_methods_weight_into_the_options(tmp_path):
    cfg = build_config(options={"kd": {"method": "ot", "teacher": "t.pt"}}, kd_weight=2.5)
    assert cfg.kd.options == {"weight": 2.5}
    cfg = build_config(options={"kd": {"method": "fkd+ot", "teacher": "t.pt"}}, kd_weight=3)
    assert cfg.kd.options == {"ot": {"weight": 3.0}}
    # --set comes after --kd-weight; "none" has no weight
    cfg = build_config(
        options={"kd": {"method": "pred", "teacher": "t.pt"}}, kd_weight=2, overrides=["kd.options.weight=4"]
    )
    assert cfg.kd.options == {"weight": 4}
    assert build_config(kd_weight=2).kd.options == {}
    with pytest.raises(BopkdError, match="kd weight -1.0 must be >= 0"):
        build_config(options={"kd": {"method": "ot", "teacher": "t.pt"}}, kd_weight=-1)


def test_kd_weight_key_is_an_error_naming_the_options_key(tmp_path):
    f = tmp_path / "student.yaml"
    f.write_text("kd:\n  method: ot\n  teacher: t.pt\n  weight: 2\n")
    with pytest.raises(BopkdError, match=r"'kd.weight' \(from .*student.yaml\).*set kd.options.weight") as e:
        build_config(config_file=f)
    assert "\n" not in str(e.value)
    with pytest.raises(BopkdError, match=r"'kd.weight' \(from --set kd.weight=2\)"):
        build_config(overrides=["kd.weight=2"])


def test_a_stored_config_with_kd_weight_is_read_with_the_weight_in_the_options():
    old = to_dict(build_config(options={"kd": {"method": "ot", "teacher": "t.pt"}}))
    old["kd"] = {"method": "ot", "teacher": "t.pt", "weight": 2.0, "options": {"detach_scores": True}}
    cfg = build_config(base=old)
    assert cfg.kd.options == {"detach_scores": True, "weight": 2.0}
    old["kd"]["weight"] = None
    assert build_config(base=old).kd.options == {"detach_scores": True}
