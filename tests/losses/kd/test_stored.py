"""Recorded kd options (bopkd.losses.kd.stored): resolved at training time, read with the former default of a
changed option, hashed so that a stage keeps its settings hash exactly when it would train the same network."""

from __future__ import annotations

import dataclasses

import pytest

from bopkd.config import to_dict
from bopkd.errors import BopkdError
from bopkd.losses.kd.dense_ot import DenseOTKDConfig
from bopkd.losses.kd.ot_kd import OTKDConfig
from bopkd.losses.kd.registry import get_entry, register_kd, unregister_kd
from bopkd.losses.kd.stored import canonical_options, resolved_options, with_former_defaults
from bopkd.train import checkpoint as ckpt
from bopkd.train.command import config_for_run, prepare_config
from bopkd.train.config import build_config


def test_the_dense_ot_position_default_changed_and_its_former_value_is_registered():
    assert DenseOTKDConfig().position is True
    assert get_entry("ot", family="dense").former_defaults == {"position": False}
    assert get_entry("fkd+ot", family="dense").former_defaults == {"ot.position": False}
    assert get_entry("ot").former_defaults == {}  # the sparse OT changed none


def test_resolved_options_write_every_field_out():
    got = resolved_options("ot", {"weight": 2.5}, "dense")
    assert got == {**dataclasses.asdict(DenseOTKDConfig()), "weight": 2.5}
    nested = resolved_options("fkd+ot", {"ot": {"position": False}}, "dense")
    assert nested["ot"]["position"] is False and nested["ot"]["pool"] == 4 and "weight" in nested["fkd"]
    assert resolved_options("none", {}, "dense") == {}
    assert resolved_options("ot", None) == dataclasses.asdict(OTKDConfig())


def test_a_recorded_run_without_the_option_reads_with_its_former_default():
    assert with_former_defaults("ot", {"weight": 5.0}, "dense") == {"weight": 5.0, "position": False}
    assert with_former_defaults("ot", {"position": True}, "dense") == {"position": True}
    assert with_former_defaults("fkd+ot", {"fkd": {"weight": 1.0}}, "dense") == {
        "fkd": {"weight": 1.0},
        "ot": {"position": False},
    }
    resolved = resolved_options("ot", {}, "dense")
    assert with_former_defaults("ot", resolved, "dense") == resolved  # new runs state it: nothing to fill
    assert with_former_defaults("ot", {"weight": 5.0}) == {"weight": 5.0}


@pytest.mark.parametrize(
    ("method", "given", "hashed"),
    [
        ("ot", {"weight": 5.0}, {"weight": 5.0, "position": True}),  # the new default, written out
        ("ot", {"position": True}, {"position": True}),  # as a variant of the former default hashed it
        ("ot", {"weight": 5.0, "position": False}, {"weight": 5.0}),  # as the former default hashed it
        ("fkd+ot", {}, {"ot": {"position": True}}),
        ("fkd+ot", {"ot": {"position": False, "weight": 2.0}}, {"ot": {"weight": 2.0}}),
        ("fkd+ot", {"ot": {"position": False}}, {}),  # a mapping left empty is dropped
    ],
)
def test_hashed_options_keep_the_hash_of_runs_that_train_the_same_network(method, given, hashed):
    assert canonical_options(method, given, "dense") == hashed


def test_sparse_options_hash_as_given():
    for opts in ({}, {"weight": 2.0, "detach_scores": True}):
        assert canonical_options("ot", opts) == opts


def test_former_defaults_must_name_fields():
    from bopkd.losses.kd.base import KDMethod

    with pytest.raises(BopkdError, match="former_defaults key .* names no field"):
        register_kd("probe-former", config=OTKDConfig, summary="-", former_defaults={"nope": 1})(
            type("Probe", (KDMethod,), {})
        )
    register_kd("probe-former", config=OTKDConfig, summary="-", former_defaults={"blur": 0.01})(
        type("Probe", (KDMethod,), {})
    )
    try:
        assert with_former_defaults("probe-former", {}) == {"blur": 0.01}
        assert canonical_options("probe-former", {}) == {"blur": OTKDConfig().blur}
    finally:
        unregister_kd("probe-former")


def _dense_student(out, options: dict) -> dict:
    cfg = build_config(
        options={
            "role": "student",
            "family": "dense",
            "data": {"mode": "crop"},
            "kd": {"method": "ot", "teacher": "teacher.pt", "options": options},
            "out": str(out),
        }
    )
    return to_dict(cfg)


def test_resume_of_a_run_recorded_before_the_change_keeps_its_setting(tmp_path):
    """A checkpoint whose kd.options lack ``position`` resumes with position off (the default of its day)."""
    run = tmp_path / "run"
    recorded = _dense_student(run, {"weight": 5.0})
    assert recorded["kd"]["options"] == {"weight": 5.0}  # what runs recorded before
    ckpt.save_checkpoint(run / "checkpoints" / ckpt.LAST, {"iteration": 1, "model": {}, "config": recorded})
    again = config_for_run(options={"out": str(run), "role": "student"}, resume=True)
    assert again.kd.options == {"weight": 5.0, "position": False}
    # a new run takes today's defaults, written out when training starts
    fresh = build_config(base={**recorded, "out": str(tmp_path / "new"), "model": {"obj_ids": [1]}})
    assert prepare_config(fresh).kd.options == resolved_options("ot", {"weight": 5.0}, "dense")
    assert fresh.kd.options["position"] is True
