"""Tests of the dense family's stages (bopkd/pipeline/dense_plan.py, ``--family``): names, dependencies,
settings, scoped overrides, and that a sparse run's stages keep their settings hashes."""

from __future__ import annotations

import pytest

from bopkd.errors import BopkdError
from bopkd.pipeline import PipelineOptions, build_plan
from bopkd.pipeline.options import parse_sets
from bopkd.pipeline.presets import PIPELINE_PRESETS
from tests.pipeline.tiny_demo import tiny_options


def test_both_families_plan_dense_stages_beside_unchanged_sparse_ones():
    sparse = build_plan(tiny_options(methods=["none", "ot"]))
    both = build_plan(tiny_options(methods=["none", "ot"], family="both"))
    names = [s.name for s in both.stages]
    dense = [n for n in names if "dense" in n]
    assert dense == [
        "teacher-dense", "predict-teacher-dense", "score-teacher-dense",
        "student-dense-tiny-cpu-none-s0", "predict-dense-tiny-cpu-none-s0", "score-dense-tiny-cpu-none-s0",
        "student-dense-tiny-cpu-ot-s0", "predict-dense-tiny-cpu-ot-s0", "score-dense-tiny-cpu-ot-s0",
    ]  # fmt: skip
    for s in sparse.stages:  # every sparse stage but the report is as a sparse-only run plans it
        if s.name != "report":
            assert both.stage(s.name).config_hash == s.config_hash, s.name
    assert both.stage("student-dense-tiny-cpu-ot-s0").deps == ["data", "teacher-dense"]
    assert both.stage("student-dense-tiny-cpu-ot-s0").params["teacher"] == "teacher-dense"
    assert both.stage("student-dense-tiny-cpu-none-s0").deps == ["data"]
    t = both.stage("teacher-dense").params["full"]
    assert t["family"] == "dense" and t["model"]["backbone"] == "darknet-tiny-h"
    assert t["data"]["crop_size"] == 2 * t["dense"]["out_size"] == 64 and t["data"]["mode"] == "crop"
    assert t["iters"] == 4  # teacher.iters of TINY_SETS: the teacher scope sets both families' teachers
    plain = build_plan(PipelineOptions(dataset="demo", device="cpu", methods=["none"], family="both"))
    assert (
        plain.stage("teacher-dense").params["full"]["iters"]
        == PIPELINE_PRESETS["demo"].dense["teacher"]["iters"]
    )
    assert plain.stage("teacher").params["full"]["iters"] == PIPELINE_PRESETS["demo"].teacher["iters"]
    assert both.stage("teacher-dense").config["family"] == "dense"  # in the hashed settings
    assert both.stage("predict-dense-tiny-cpu-ot-s0").config["method"] == "bopkd-dense-ot-tinycpu-s0"
    assert both.stage("predict-teacher-dense").config["method"] == "bopkd-dense-teacher-darknettinyh-s0"
    report = both.stage("report")
    assert "predict-teacher-dense" in report.deps and "predict-teacher" in report.deps
    assert (
        "Dense family" in report.config["summary"]
        and "Dense family" not in sparse.stage("report").config["summary"]
    )


def test_dense_only_plan_and_family_scoped_overrides():
    plan = build_plan(tiny_options(methods=["none"], family="dense", sets=["teacher@dense.iters=9"]))
    assert [s.name for s in plan.stages if s.kind == "teacher"] == ["teacher-dense"]
    assert plan.stage("teacher-dense").params["full"]["iters"] == 9
    assert plan.stage("report").config["summary"].startswith("Settings: synthetic dataset demo")
    both = build_plan(tiny_options(methods=["none"], family="both", sets=["teacher@dense.iters=9"]))
    assert both.stage("teacher").params["full"]["iters"] == 4  # TINY_SETS' teacher.iters, not teacher@dense's
    st = build_plan(tiny_options(methods=["none"], family="both", sets=["student@dense.iters=5"]))
    assert st.stage("student-dense-tiny-cpu-none-s0").params["full"]["iters"] == 5
    assert st.stage("student-tiny-cpu-none-s0").params["full"]["iters"] == 2


def test_bad_family_options_are_one_line_errors():
    with pytest.raises(BopkdError, match="--family 'dens': use one of sparse, dense, both"):
        build_plan(tiny_options(methods=["none"], family="dens"))
    with pytest.raises(BopkdError, match="teacher@sparse\\|dense"):
        parse_sets(["teacher@ot.iters=3"])
    with pytest.raises(BopkdError, match="must be 2 \\* dense.out_size"):
        build_plan(tiny_options(methods=["none"], family="dense", sets=["train.data.crop_size=96"]))


@pytest.mark.parametrize("name", sorted(PIPELINE_PRESETS))
def test_the_demo_plans_both_families_the_other_presets_the_sparse_one(name):
    p = PIPELINE_PRESETS[name]
    assert p.family == ("both" if name == "demo" else "sparse")
    assert {"teacher_backbone", "students", "out_size"} <= set(p.dense)
    families = {
        st.config.get("family", "sparse")
        for st in build_plan(
            PipelineOptions(dataset="demo", preset=name, device="cpu", progress=False)
        ).stages
        if st.kind == "student"
    }
    assert families == ({"sparse", "dense"} if name == "demo" else {"sparse"})


def test_the_dense_section_s_seeds_apply_unless_seeds_are_given():
    """The study's dense students use the dense section's seeds (0-2) beside the sparse ones (0-4); --seeds
    sets both."""

    def seeds(plan, family):
        return {
            st.config["seed"]
            for st in plan.stages
            if st.kind == "student" and st.config.get("family", "sparse") == family and "-none-" in st.name
        }

    opts = {"dataset": "lmosynth", "preset": "study", "device": "cpu", "progress": False, "family": "both"}
    sets = ["synth.models=procedural"]
    plan = build_plan(PipelineOptions(**opts, sets=sets))
    assert seeds(plan, "sparse") == {0, 1, 2, 3, 4} and seeds(plan, "dense") == {0, 1, 2}
    assert "seeds 0, 1, 2; inputs" in plan.stage("report").config["summary"]
    plan = build_plan(PipelineOptions(**opts, sets=sets, seeds=[3]))
    assert seeds(plan, "sparse") == seeds(plan, "dense") == {3}


def test_dense_variants_are_their_own_stages_and_names():
    """The study's dense variants (OT without the cell position, OT over the teacher mask's cells) are planned
    for the dense family only, with their options merged over the OT defaults and their tag in the names."""
    plan = build_plan(
        PipelineOptions(
            dataset="lmosynth", preset="study", device="cpu", progress=False, family="dense",
            sets=["synth.models=procedural"],
        )
    )  # fmt: skip
    st = plan.stage("student-dense-tiny-cpu-ot-noposition-s2")
    # as hashed (the weight a key of its own): the former default left out, so the stage keeps the settings
    # hash that OT with the then default had
    assert st.config["family"] == "dense" and st.config["kd"]["options"] == {}
    assert (
        plan.stage("student-dense-tiny-cpu-ot-maskcells-s0").config["kd"]["options"]["mask_threshold"] == 0.5
    )
    # hashed options: the former default (position off) is left out, a changed default written out
    assert plan.stage("student-dense-tiny-cpu-ot-s0").config["kd"]["options"] == {"position": True}
    names = [s.name for s in plan.stages if s.kind == "student"]
    assert len(names) == 15 + 6 and not any("-w10-" in n for n in names)
    pred = plan.stage("predict-dense-tiny-cpu-ot-maskcells-s1")
    assert "bopkd-dense-ot-maskcells-tinycpu-s1" in pred.title
