"""Tests of the plan (bopkd/pipeline/plan.py) and the presets (bopkd/pipeline/presets.py): stage order,
scoped overrides, every preset's settings, detections settings and the settings hashes of recorded runs."""

from __future__ import annotations

import copy
import json

import pytest

from bopkd.errors import BopkdError
from bopkd.pipeline import PipelineOptions, build_plan, plan_forced
from tests.pipeline.tiny_demo import tiny_options


def test_gt_box_notice_and_detections_settings_of_a_bop_dataset(tmp_path):
    base = {"dataset": "lmo", "device": "cpu", "progress": False, "methods": ["none"]}
    plan = build_plan(PipelineOptions(**base))
    assert "GT-box results (protocol oracle-gt-boxes" in plan.notice
    assert "not valid for submission" in plan.notice and "--detections FILE" in plan.notice
    assert "detections" not in plan.stage("predict-teacher").config  # earlier runs' settings hashes stand
    dets = tmp_path / "dets.json"
    dets.write_text(
        json.dumps([{"scene_id": 2, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}])
    )
    with_dets = build_plan(PipelineOptions(**base, detections=dets))
    assert with_dets.notice is None
    for name in ("predict-teacher", "predict-tiny-cpu-none-s0"):
        c = with_dets.stage(name).config
        assert c["detections"] == str(dets) and len(c["detections_sha256"]) == 64
        assert with_dets.stage(name).config_hash != plan.stage(name).config_hash
    assert with_dets.stage("teacher").config_hash == plan.stage("teacher").config_hash
    # a whole-image preset takes no boxes: nothing to say, and detections are refused
    full = ["train.data.mode=full", "train.data.input_size=[160,128]"]
    assert build_plan(PipelineOptions(**base, sets=full)).notice is None
    with pytest.raises(BopkdError, match="whole images.*drop --detections"):
        build_plan(PipelineOptions(**base, sets=full, detections=dets))
    # a bad detections file stops the run before any training
    dets.write_text("{}")
    with pytest.raises(BopkdError, match=f"{dets}: a JSON dict, expected a list of detections"):
        build_plan(PipelineOptions(**base, detections=dets))
    with pytest.raises(BopkdError, match="missing file"):
        build_plan(PipelineOptions(**base, detections=tmp_path / "nope.json"))


def test_plan_orders_stages_and_scopes_overrides(tmp_path):
    plan = build_plan(
        tiny_options(methods=["none", "ot"], sets=["student@ot.iters=7", "student@tiny-cpu.optim.lr=3e-3"])
    )
    names = [s.name for s in plan.stages]
    assert names == [
        "data",
        "teacher",
        "predict-teacher",
        "score-teacher",
        "student-tiny-cpu-none-s0",
        "predict-tiny-cpu-none-s0",
        "score-tiny-cpu-none-s0",
        "student-tiny-cpu-ot-s0",
        "predict-tiny-cpu-ot-s0",
        "score-tiny-cpu-ot-s0",
        "report",
    ]
    none, ot = plan.stage("student-tiny-cpu-none-s0"), plan.stage("student-tiny-cpu-ot-s0")
    assert none.config["iters"] == 2 and ot.config["iters"] == 7
    assert none.config["optim"]["lr"] == ot.config["optim"]["lr"] == 3e-3
    assert ot.config["kd"]["method"] == "ot" and ot.config["kd"]["weight"] == 5.0
    assert "teacher" not in ot.config["kd"] and "device" not in ot.config  # not part of the settings hash
    assert plan.stage("teacher").config["model"]["backbone"] == "darknet-tiny-h"
    assert plan.stage("data").config["synth"]["train"] == 10
    assert plan_forced(plan, ["student"]) == {"student-tiny-cpu-none-s0", "student-tiny-cpu-ot-s0"}
    assert plan_forced(plan, ["score-*"]) == {
        "score-teacher",
        "score-tiny-cpu-none-s0",
        "score-tiny-cpu-ot-s0",
    }
    with pytest.raises(BopkdError, match="matches no stage"):
        plan_forced(plan, ["nope"])


@pytest.mark.parametrize("preset", ["demo", "experiment", "study", "quick", "paper"])
def test_every_preset_plans_a_synthetic_run(preset):
    """Every preset's settings validate (synth, training, KD options) into a plan of 5 methods x its seeds
    (plus its variants); no preset trains the paper's OT with detached scores except a variant named so."""
    from bopkd.pipeline.presets import get_preset

    plan = build_plan(PipelineOptions(dataset="mysynth", preset=preset, device="cpu", progress=False))
    p = get_preset(preset)
    students = [
        s for s in plan.stages if s.kind == "student" and s.config.get("family", "sparse") == "sparse"
    ]
    dense = [s for s in plan.stages if s.kind == "student" and s.config.get("family") == "dense"]
    n_variants = sum(len(v.seeds) for v in p.variants)
    assert len(students) == (5 * len(p.seeds) + n_variants) * len(p.students)
    assert len(dense) == (5 * len(p.seeds) * len(p.dense["students"]) if p.family == "both" else 0)
    assert plan.stage("data").config["synth"]["name"] == "mysynth"
    for st in students:
        kd = st.config["kd"]
        opts = kd.get("options") or {}
        detached = opts.get("detach_scores") or (opts.get("ot") or {}).get("detach_scores")
        assert not detached or "-detached-" in st.name, st.name
        assert st.config["loss"]["reduction"] == "sum"


def test_study_preset_runs_five_seeds_a_weight_sweep_and_the_detached_ablation():
    plan = build_plan(
        PipelineOptions(
            dataset="lmosynth", preset="study", device="cpu", progress=False, sets=["synth.models=procedural"]
        )
    )
    students = {s.name: s.config for s in plan.stages if s.kind == "student"}
    for m in ("none", "pred", "fkd", "ot", "fkd+ot"):
        assert {c["seed"] for n, c in students.items() if n.startswith(f"student-tiny-cpu-{m}-s")} == set(
            range(5)
        )
    weights = {
        c["kd"]["weight"]
        for n, c in students.items()
        if "-ot-w" in n or n.startswith("student-tiny-cpu-ot-s")
    }
    assert weights == {2.0, 5.0, 10.0}
    det = [c for n, c in students.items() if "-ot-detached-" in n]
    assert len(det) == 3 and all(
        c["kd"]["options"]["detach_scores"] is True and c["kd"]["weight"] == 5.0 for c in det
    )
    # the variants share the study's teacher and data; their results carry the variant's tag
    pred = plan.stage("predict-tiny-cpu-ot-w10-s2").config
    assert pred["method"] == "bopkd-ot-w10-tinycpu-s2-study"
    assert plan.stage("student-tiny-cpu-ot-w10-s2").deps == ["data", "teacher"]


def test_experiment_preset_is_the_first_experiments_setting():
    """The README's first experiment: 3 seeds, GT-box crops, LINEMOD-like views, the teacher wider than the students."""
    plan = build_plan(
        PipelineOptions(
            dataset="lmosynth",
            preset="experiment",
            device="cpu",
            progress=False,
            sets=["synth.models=procedural"],
        )
    )
    seeds = {s.config["seed"] for s in plan.stages if s.name.startswith("student-")}
    assert seeds == {0, 1, 2}
    synth = plan.stage("data").config["synth"]
    assert synth["viewpoints"] == "linemod" and len(synth["objects"]) == 3
    teacher, ot = plan.stage("teacher").config, plan.stage("student-tiny-cpu-ot-s1").config
    assert teacher["data"]["mode"] == ot["data"]["mode"] == "crop"
    assert ot["kd"]["weight"] == 5.0 and not ot["kd"].get("options", {}).get("detach_scores")


def test_settings_added_later_keep_old_hashes_at_their_neutral_value():
    """A stage recorded before a setting existed stays done while the setting keeps its neutral value."""
    from bopkd.pipeline.engine import canonical_hash
    from bopkd.pipeline.plan import NEUTRAL_TRAIN_DEFAULTS, _drop_keys, hashed_train_config

    plan = build_plan(PipelineOptions(dataset="mysynth", preset="demo", device="cpu", progress=False))
    cfg = plan.stage("teacher").params["full"]
    old = _drop_keys(cfg, tuple(NEUTRAL_TRAIN_DEFAULTS))  # the config as written before these keys existed
    assert old != cfg
    assert canonical_hash(hashed_train_config(cfg)) == canonical_hash(hashed_train_config(old))
    changed = copy.deepcopy(cfg)
    changed["optim"]["anneal"] = "linear"
    assert canonical_hash(hashed_train_config(changed)) != canonical_hash(hashed_train_config(cfg))


def test_kd_weight_lives_in_the_method_options_and_hashes_as_recorded_runs_did():
    """A student's weight is an option of its method (``fkd+ot``: of its OT term); the settings hash keeps
    the form of recorded runs, ``{method, weight, options}`` with the weight taken out of the options."""
    base = {"dataset": "lmosynth", "preset": "study", "device": "cpu", "progress": False}
    plan = build_plan(PipelineOptions(**base, sets=["synth.models=procedural"]))
    w2 = plan.stage("student-tiny-cpu-ot-w2-s0")
    assert w2.params["full"]["kd"]["options"] == {"weight": 2.0} and "weight" not in w2.params["full"]["kd"]
    assert w2.config["kd"] == {"method": "ot", "weight": 2.0, "options": {}}
    fkdot = plan.stage("student-tiny-cpu-fkd+ot-s0")
    assert fkdot.params["full"]["kd"]["options"] == {"ot": {"weight": 5.0}}
    assert fkdot.config["kd"] == {"method": "fkd+ot", "weight": 5.0, "options": {}}
    det = plan.stage("student-tiny-cpu-ot-detached-s0").config["kd"]
    assert det == {"method": "ot", "weight": 5.0, "options": {"detach_scores": True}}
    assert plan.stage("student-tiny-cpu-fkd-s0").config["kd"]["weight"] == 1.0
    assert plan.stage("teacher").config["kd"] == {"method": "none", "weight": None, "options": {}}
    assert "kd ot (weight 2), variant w2" in w2.title
    # the weight set on the command line (an integer in YAML) hashes as the variant's 2.0
    sets = ["synth.models=procedural", "student@ot.kd.options.weight=2"]
    again = build_plan(PipelineOptions(**base, sets=sets))
    assert again.stage("student-tiny-cpu-ot-s0").config_hash == w2.config_hash
