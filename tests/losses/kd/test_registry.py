"""The distillation registry: names, typed configs, errors, and every method on real (tiny) networks."""

from __future__ import annotations

import pytest
import torch
import yaml

from bopkd.config import to_dict
from bopkd.errors import BopkdError
from bopkd.losses.kd import KD_METHODS, build_kd, kd_names, make_spec, spec_from_dict
from bopkd.losses.kd.registry import fold_legacy_kd_weight, get_entry, register_kd, unregister_kd
from bopkd.losses.targets import assign_targets
from bopkd.losses.task import LossConfig, PoseLoss
from bopkd.models.posenet import ModelConfig, PoseNet

NAMES = ["none", "pred", "fkd", "ot", "fkd+ot"]


def test_exactly_the_five_names():
    assert kd_names() == NAMES
    assert list(KD_METHODS) == NAMES
    assert [e.needs_teacher for e in KD_METHODS.values()] == [False, True, True, True, True]


@pytest.mark.parametrize("bad", ["bogus", "OT2", ""])
def test_unknown_method_is_a_one_line_error_listing_the_names(bad):
    for call in (
        lambda: make_spec(bad),
        lambda: spec_from_dict({"method": bad}, "cfg.yaml"),
        lambda: build_kd(bad),
    ):
        with pytest.raises(BopkdError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "none, pred, fkd, ot, fkd+ot" in msg


def test_names_are_case_insensitive():
    assert make_spec("FKD+OT").method == "fkd+ot"


def test_options_types_and_unknown_keys():
    s = make_spec("ot", {"blur": 0.01, "reach": 1, "detach_scores": True, "num_cells": 20})
    assert s.config.blur == 0.01 and s.config.reach == 1.0 and isinstance(s.config.reach, float)
    assert s.config.detach_scores is True and s.config.num_cells == 20
    with pytest.raises(BopkdError, match="blur"):
        make_spec("ot", {"blur": "small"})
    with pytest.raises(BopkdError, match="detach_scores"):
        make_spec("ot", {"detach_scores": "maybe"})
    with pytest.raises(BopkdError, match=r"'kd.options.reech' .*is unknown: did you mean 'reach'"):
        make_spec("ot", {"reech": 1})
    with pytest.raises(BopkdError, match="fkd.temprature"):
        make_spec("fkd+ot", {"fkd": {"temprature": 1}})
    with pytest.raises(BopkdError, match="allowed keys"):
        spec_from_dict({"method": "ot", "wieght": 2})


def test_kd_weight_goes_to_each_methods_weight():
    assert make_spec("pred", weight=2).config.weight == 2.0
    assert make_spec("ot", weight=7).config.weight == 7.0
    assert make_spec("fkd", weight=0.5).config.weight == 0.5
    s = make_spec("fkd+ot", weight=3)
    assert s.config.ot.weight == 3.0 and s.config.fkd.weight == 1.0
    assert make_spec("none", weight=1).method == "none"  # a shared config's weight is ignored by none
    with pytest.raises(BopkdError, match=">= 0"):
        make_spec("ot", weight=-1)


def test_defaults_are_the_papers():
    ot = make_spec("ot").config
    assert (ot.weight, ot.blur, ot.reach, ot.scaling, ot.score_th, ot.detach_scores) == (
        5.0,
        0.001,
        0.5,
        0.5,
        0.1,
        False,
    )
    fkd = make_spec("fkd").config
    assert (fkd.feat_weight, fkd.att_weight, fkd.nonlocal_weight, fkd.temperature) == (7e-5, 4e-3, 7e-5, 0.5)


def test_yaml_round_trip():
    text = "kd:\n  method: fkd+ot\n  options:\n    fkd: {temperature: 0.25}\n    ot: {weight: 4, detach_scores: true}\n"
    spec = spec_from_dict(yaml.safe_load(text)["kd"], "train.yaml")
    assert (
        spec.config.ot.weight == 4.0 and spec.config.fkd.temperature == 0.25 and spec.config.ot.detach_scores
    )
    again = spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again == spec
    assert spec_from_dict("pred").method == "pred" and spec_from_dict(None).method == "none"
    assert to_dict(spec.config)["ot"]["detach_scores"] is True
    with pytest.raises(BopkdError, match="kd.weight is not a key: set the weight in kd.options.weight"):
        spec_from_dict({"method": "ot", "weight": 2}, "train.yaml")


def test_weight_key_says_where_each_method_keeps_its_weight():
    assert {n: e.weight_key for n, e in KD_METHODS.items()} == {
        "none": None,
        "pred": ("weight",),
        "fkd": ("weight",),
        "ot": ("weight",),
        "fkd+ot": ("ot", "weight"),
    }
    assert [e.default_weight() for e in KD_METHODS.values()] == [None, 5.0, 1.0, 5.0, 5.0]
    assert get_entry("fkd+ot").weight_options(2) == {"ot": {"weight": 2.0}}
    assert get_entry("none").weight_options(2) == {}


def test_stored_kd_weight_is_folded_into_the_options():
    old = {"iters": 3, "kd": {"method": "fkd+ot", "teacher": "t.pt", "weight": 2.0, "options": {"fkd": {}}}}
    new = fold_legacy_kd_weight(old, "last.pt")
    assert new["kd"] == {"method": "fkd+ot", "teacher": "t.pt", "options": {"fkd": {}, "ot": {"weight": 2.0}}}
    assert old["kd"]["weight"] == 2.0  # the input is not changed
    unset = {"kd": {"method": "ot", "teacher": None, "weight": None, "options": {}}}
    assert fold_legacy_kd_weight(unset, "x")["kd"] == {"method": "ot", "teacher": None, "options": {}}
    same = {"kd": {"method": "pred", "weight": 2, "options": {"weight": 2.0}}}
    assert fold_legacy_kd_weight(same, "x")["kd"]["options"] == {"weight": 2.0}
    assert fold_legacy_kd_weight({"kd": {"method": "none", "weight": 3}}, "x")["kd"] == {
        "method": "none",
        "options": {},
    }
    with pytest.raises(BopkdError, match=r"last.pt: kd.weight = 2 and kd.options.weight = 3 differ"):
        fold_legacy_kd_weight({"kd": {"method": "ot", "weight": 2, "options": {"weight": 3}}}, "last.pt")


def test_registration_rejects_duplicates_and_bad_weight_keys():
    with pytest.raises(BopkdError, match="'ot' is registered twice"):
        register_kd("OT", config=type(get_entry("ot").config_cls()), summary="again")(type("Again", (), {}))
    with pytest.raises(BopkdError, match="weight_key .* names no field"):
        register_kd("toy", config=get_entry("fkd+ot").config_cls, summary="x", weight_key=("weight",))
    with pytest.raises(BopkdError, match="unknown distillation method"):
        unregister_kd("toy")
    assert kd_names() == NAMES


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    student = PoseNet(
        ModelConfig(obj_ids=[1, 2], backbone="tiny-cpu", levels=[3, 4, 5], fpn_channels=16, head_convs=1)
    )
    teacher = PoseNet(
        ModelConfig(obj_ids=[1, 2], backbone="tiny-cpu", levels=[3, 4, 5, 6], fpn_channels=24, head_convs=1)
    )
    with torch.no_grad():
        teacher.head.cls_logits.bias.fill_(1.0)  # an (untrained) teacher that is confident everywhere
    return student, teacher.eval().requires_grad_(False)


def test_every_method_builds_and_runs_on_real_networks(nets, kd_synth):
    student, teacher = nets
    batch = kd_synth.batch(
        B=2, H=64, W=64, boxes=[[(0, 8, 8, 40, 40), (1, 36, 30, 64, 62)], [(1, 10, 20, 50, 60)]]
    )
    images = torch.rand(2, 3, 64, 64)
    loss_cfg = LossConfig()
    for name in NAMES:
        method = build_kd(
            name, student=student, teacher=None if name == "none" else teacher, loss_cfg=loss_cfg
        )
        assert method.name == name and isinstance(method, torch.nn.Module)
        s_out = student(images)
        with torch.no_grad():
            t_out = teacher(images)
        asg = assign_targets(s_out, batch, loss_cfg, torch.Generator().manual_seed(0))
        task = PoseLoss(loss_cfg)(s_out, batch, assignment=asg)
        terms = method(s_out, batch, None if name == "none" else t_out, assignment=asg)
        assert set(terms) == set(KD_METHODS[name].terms)
        assert all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
        if name != "none":
            assert all(float(v.detach()) > 0 for v in terms.values()), (name, terms)
        student.zero_grad()
        (sum(task.values()) + sum(terms.values(), torch.zeros(()))).backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in student.parameters())
        has_params = len(list(method.parameters())) > 0
        assert has_params == (name in ("fkd", "fkd+ot"))  # FKD's adapters join the optimiser


def test_fkd_adapters_sized_from_the_networks(nets):
    student, teacher = nets
    m = build_kd("fkd", student=student, teacher=teacher)
    assert m.strides == [8, 16, 32]  # levels both networks have
    assert m.adapters["8"].weight.shape == (24, 16, 1, 1)
    mb = build_kd(make_spec("fkd", {"features": "backbone"}), student=student, teacher=teacher)
    assert mb.strides == [8, 16]


def test_methods_needing_a_teacher_refuse_to_build_without(nets):
    student, _ = nets
    for name in NAMES[1:]:
        with pytest.raises(BopkdError, match="--teacher"):
            build_kd(name, student=student, teacher=None)
    assert build_kd("none").needs_teacher is False
