"""Tests of ``bopkd run-pipeline`` (bopkd/pipeline.py): the demo end to end at a tiny size, skipping on
rerun, rerunning exactly what a changed setting affects, resuming after a kill, the lock, and lmo via a
local mirror serving archives built from the real LM-O sample."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bopkd.cli import app
from bopkd.errors import BopkdError
from bopkd.pipeline import (
    PipelineOptions,
    RunLock,
    _Tee,
    build_plan,
    forced_names,
    parse_sets,
    run_pipeline,
)
from tests.zip_helpers import HF, make_lmo_archives, make_zip_from_dir, served_sizes

REPO = Path(__file__).resolve().parents[1]
#: Method names in the result files where they differ from the KD method's name.
SITE_NAMES = {"fkd+ot": "fkdot"}

#: A demo small enough for a test: 3 objects, 10 train + 3 test images, a few iterations; score_th 0 so
#: that the barely trained networks still output a pose for every target.
TINY_SETS = [
    "synth.train=10",
    "synth.test=3",
    "synth.width=320",
    "synth.height=240",
    "train.data.num_workers=0",
    "train.data.crop_size=64",
    "train.batch_size=2",
    "train.ckpt_every=2",
    "teacher.iters=4",
    "student.iters=2",
    "predict.predict.score_th=0.0",
]


@contextlib.contextmanager
def inside(folder: Path):
    """Run in ``folder``: the pipeline gets relative paths, so a copied folder is a valid run folder too."""
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


def tiny_args(*extra: str, methods: str | None = None) -> list[str]:
    args = [
        "run-pipeline",
        "demo",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    for s in TINY_SETS:
        args += ["--set", s]
    if methods:
        args += ["--methods", methods]
    return args + list(extra)


def tiny_options(methods=None, sets=(), **kw) -> PipelineOptions:
    return PipelineOptions(
        dataset="demo",
        device="cpu",
        threads=1,
        methods=methods,
        sets=[*TINY_SETS, *sets],
        progress=False,
        **kw,
    )


def records(tmp: Path, preset: str = "demo", dataset: str = "demo") -> dict[str, dict]:
    d = tmp / "runs" / f"{dataset}-{preset}" / "stages"
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The whole tiny demo (every method), run once through the CLI."""
    tmp = tmp_path_factory.mktemp("demo")
    with inside(tmp):
        r = CliRunner().invoke(app, tiny_args())
    assert r.exit_code == 0, r.output
    return tmp, r.output


# --- end to end ----------------------------------------------------------------------------------------


def test_demo_end_to_end_writes_every_stage_and_a_report(demo_run):
    tmp, output = demo_run
    recs = records(tmp)
    methods = ["none", "pred", "fkd", "ot", "fkd+ot"]
    expected = {"data", "teacher", "predict-teacher", "score-teacher", "report"}
    for m in methods:
        expected |= {f"student-tiny-cpu-{m}-s0", f"predict-tiny-cpu-{m}-s0", f"score-tiny-cpu-{m}-s0"}
    assert set(recs) == expected
    # every record names its settings hash, its inputs' and outputs' checksums, and the outputs exist
    for name, rec in recs.items():
        assert rec["config_hash"] and rec["fingerprint"], name
        for p, e in rec["outputs"].items():
            assert (tmp / p).is_file() and len(e["sha256"]) == 64, (name, p)
        assert set(rec["inputs"]) == set(build_deps(recs, name)), name
    # a direct student does not consume the teacher; distilled students do
    assert set(recs["student-tiny-cpu-none-s0"]["inputs"]) == {"data"}
    assert set(recs["student-tiny-cpu-ot-s0"]["inputs"]) == {"data", "teacher"}
    teacher_ckpt = recs["teacher"]["info"]["checkpoint"]
    assert recs["student-tiny-cpu-ot-s0"]["inputs"]["teacher"] == {
        teacher_ckpt: recs["teacher"]["outputs"][teacher_ckpt]["sha256"]
    }
    # BOP-named submissions in results/, one per model, with their sidecars and scores
    csvs = sorted((tmp / "results").glob("*.csv"))
    names = {c.name for c in csvs}
    assert "bopkd-teacher-darknettinyh-s0-oracle-gt-boxes_demo-test.csv" in names
    for m in methods:  # method names in the characters the BOP site accepts
        assert f"bopkd-{SITE_NAMES.get(m, m)}-tinycpu-s0-oracle-gt-boxes_demo-test.csv" in names
    assert len(csvs) == 6
    for c in csvs:
        assert c.with_name(c.name + ".json").is_file()
        assert (tmp / "results" / "scores" / c.stem / "scores_bop19.json").is_file()
    # logs: one per stage, and the pipeline's own
    logs = tmp / "runs" / "demo-demo" / "logs"
    assert {p.stem for p in logs.glob("*.log")} == expected | {"pipeline"}
    assert "resuming" not in (logs / "teacher.log").read_text()
    assert "trained 4 iterations" in (logs / "teacher.log").read_text()
    # the report
    rep = tmp / "reports" / "demo-demo"
    for f in ("report.html", "report.md", "table.md", "table.csv", "runs.csv", "fig_loss_curves.png"):
        assert (rep / f).is_file(), f
    assert "oracle-gt-boxes" in (rep / "report.md").read_text()
    assert "not valid for submission" in (rep / "report.md").read_text()


def build_deps(recs: dict, name: str) -> list[str]:
    """The deps a stage is planned with (from the plan itself, independent of the records)."""
    kind = recs[name]["kind"]
    if kind == "data":
        return []
    if kind == "teacher":
        return ["data"]
    if kind == "student":
        return ["data"] if name.endswith("-none-s0") else ["data", "teacher"]
    if kind == "report":
        return [n for n in recs if n.startswith(("predict-", "score-"))]
    label = name.split("-", 1)[1]
    if kind == "predict":
        return ["teacher" if label == "teacher" else f"student-{label}", "data"]
    return [f"predict-{label}", "data"]


def test_report_lists_every_method_with_the_numbers_of_the_score_files(demo_run):
    tmp, _ = demo_run
    table = pd.read_csv(tmp / "reports" / "demo-demo" / "table.csv")
    runs = pd.read_csv(tmp / "reports" / "demo-demo" / "runs.csv")
    assert list(table["kd"]) == ["-", "none", "pred", "fkd", "ot", "fkd+ot"]
    assert list(table["role"]) == ["teacher"] + ["student"] * 5
    assert set(table["backbone"]) == {"darknet-tiny-h", "tiny-cpu"}
    for _, row in runs.iterrows():
        sdir = tmp / "results" / "scores" / row["result"]
        s = json.loads((sdir / "scores_bop19.json").read_text())
        ad = json.loads((sdir / "scores_ad.json").read_text())
        t = table[(table["backbone"] == row["backbone"]) & (table["kd"] == row["kd"])].iloc[0]
        assert t["AR"] == pytest.approx(100 * s["bop19_average_recall"])
        assert t["AR_MSSD"] == pytest.approx(100 * s["bop19_average_recall_mssd"])
        assert t["AR_MSPD"] == pytest.approx(100 * s["bop19_average_recall_mspd"])
        assert t["AR_VSD"] == pytest.approx(100 * s["bop19_average_recall_vsd"])
        assert t["ADD(-S)-0.1d"] == pytest.approx(100 * ad["recall"])
        assert row["seed"] == 0
        side = json.loads((tmp / "results" / f"{row['result']}.csv.json").read_text())
        assert row["params"] == side["params"]
    md = (tmp / "reports" / "demo-demo" / "table.md").read_text()
    for label in ["teacher (darknet-tiny-h)"] + [
        f"tiny-cpu / {m}" for m in ("none", "pred", "fkd", "ot", "fkd+ot")
    ]:
        assert label in md


def test_rerun_executes_no_stage(demo_run):
    tmp, _ = demo_run
    before = {n: r["finished"] for n, r in records(tmp).items()}
    with inside(tmp):
        res = run_pipeline(tiny_options())
        assert res.executed == []
        assert len(res.skipped) == len(before)
        assert {n: r["finished"] for n, r in records(tmp).items()} == before
        # the dry run says the same
        r = CliRunner().invoke(app, [*tiny_args(), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "20 of 20 stages done" in r.output


def test_changed_student_setting_reruns_only_that_student_and_downstream(demo_run, tmp_path):
    src, _ = demo_run
    tmp = tmp_path / "copy"
    shutil.copytree(src, tmp)  # relative paths in the records: the copy is a run folder of its own
    with inside(tmp):
        _changed_settings(tmp)


def _changed_settings(tmp: Path) -> None:
    res = run_pipeline(tiny_options(sets=["student@ot.optim.lr=5e-4"]))
    assert res.executed == [
        "student-tiny-cpu-ot-s0",
        "predict-tiny-cpu-ot-s0",
        "score-tiny-cpu-ot-s0",
        "report",
    ]
    # the old training folder is kept (a changed setting trains in a new one)
    assert len(list((tmp / "runs" / "demo-demo" / "train").glob("student-tiny-cpu-ot-s0-*"))) == 2
    # a changed teacher reruns the teacher and every distilled student, not the direct one
    res = run_pipeline(tiny_options(sets=["student@ot.optim.lr=5e-4", "teacher.optim.lr=2e-3"]))
    ran = set(res.executed)
    assert {"teacher", "predict-teacher", "score-teacher", "report"} <= ran
    for m in ("pred", "fkd", "ot", "fkd+ot"):
        assert f"student-tiny-cpu-{m}-s0" in ran
    assert not any("-none-" in n for n in ran) and "data" not in ran
    # --force of one stage reruns it and what its changed outputs feed
    res = run_pipeline(
        tiny_options(sets=["student@ot.optim.lr=5e-4", "teacher.optim.lr=2e-3"], force=["report"])
    )
    assert res.executed == ["report"]
    # a removed output is noticed
    csv = tmp / records(tmp)["predict-tiny-cpu-none-s0"]["info"]["csv"]
    csv.unlink()
    res = run_pipeline(tiny_options(sets=["student@ot.optim.lr=5e-4", "teacher.optim.lr=2e-3"]))
    assert res.executed[0] == "predict-tiny-cpu-none-s0" and "report" in res.executed


# --- detections: BOP-valid submissions ------------------------------------------------------------------


def write_gt_detections(root: Path, dataset: str, path: Path, time: float) -> Path:
    """A BOP default-detections file of the test targets' GT boxes (amodal), score 0.9, ``time`` s per image."""
    from bopkd.data.dataset import BopDataset

    bop = BopDataset(dataset, root)
    dets = []
    for t in bop.targets:
        gts = bop.scene_gt(bop.test_split, t.scene_id)[t.im_id]
        infos = bop.scene_gt_info(bop.test_split, t.scene_id)[t.im_id]
        for g, inf in zip(gts, infos, strict=True):
            if g.obj_id == t.obj_id:
                box = [float(v) for v in inf.bbox_obj]
                dets.append(
                    {
                        "scene_id": t.scene_id,
                        "image_id": t.im_id,
                        "category_id": t.obj_id,
                        "bbox": box,
                        "score": 0.9,
                        "time": time,
                    }  # fmt: skip
                )
    path.write_text(json.dumps(dets))
    return path


def test_detections_rerun_only_predictions_and_every_csv_passes_bopkd_check(demo_run, tmp_path):
    src, _ = demo_run
    tmp = tmp_path / "copy"
    shutil.copytree(src, tmp)
    before = records(tmp)
    with inside(tmp):
        dets = write_gt_detections(Path("bop_data"), "demo", Path("dets.json"), time=3.0)
        r = CliRunner().invoke(app, [*tiny_args(), "--detections", str(dets)])
        assert r.exit_code == 0, r.output
        assert "GT-box results" not in r.output  # a synthetic dataset: nothing to say
        recs = records(tmp)
        for name, rec in recs.items():  # the detections change the predictions only, and what they feed
            same = rec["finished"] == before[name]["finished"]
            assert same == (rec["kind"] in ("data", "teacher", "student")), name
        new = [Path(recs[n]["info"]["csv"]) for n in recs if n.startswith("predict-")]
        assert all(recs[n]["info"]["protocol"] == "detections" for n in recs if n.startswith("predict-"))
        assert len(new) == 6 and not any("oracle" in c.name for c in new)
        assert "bopkd-fkdot-tinycpu-s0_demo-test.csv" in {c.name for c in new}
        for c in new:  # BOP's time includes the detector's
            times = [float(line.rsplit(",", 1)[1]) for line in c.read_text().splitlines()[1:]]
            assert times and all(3.0 < t < 6.0 for t in times), c
        csvs = sorted(Path("results").glob("*.csv"))
        assert len(csvs) == 12  # the GT-box results of the first run are still there
        r = CliRunner().invoke(app, ["check", *map(str, csvs)])
    assert r.exit_code == 0, r.output
    assert r.output.count("OK results/") == 12 and r.output.count("not valid for submission") == 6


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


# --- resume after a kill; the lock ---------------------------------------------------------------------


def test_killed_during_training_resumes_from_the_checkpoint_and_a_second_run_is_locked_out(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # one DataLoader worker: a worker forked after the synth stage must not hang (OpenCV's pool and fork)
    args = tiny_args(
        "--set",
        "teacher.iters=100",
        "--set",
        "train.ckpt_every=1",
        "--set",
        "train.data.num_workers=1",
        methods="none",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bopkd", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    run = tmp_path / "runs" / "demo-demo"
    try:
        deadline = time.time() + 240
        last = None
        while time.time() < deadline and proc.poll() is None:
            found = list((run / "train").glob("teacher-*/checkpoints/last.pt"))
            metrics = list((run / "train").glob("teacher-*/metrics.csv"))
            if found and metrics and len(metrics[0].read_text().splitlines()) >= 4:
                last = found[0]
                break
            time.sleep(0.5)
        assert last is not None, (
            proc.stdout.read().decode() if proc.poll() is not None else "no checkpoint in time"
        )
        # a second run on the same folders is refused with the first one's pid
        r = CliRunner().invoke(app, args)
        assert r.exit_code != 0
        assert isinstance(r.exception, BopkdError)
        msg = str(r.exception)
        assert f"pid {proc.pid}" in msg and "in use by another bopkd run-pipeline" in msg
        assert "\n" not in msg
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (run / "stages" / "teacher.json").exists()
    assert (run / "stages" / "data.json").exists()
    data_before = (run / "stages" / "data.json").read_text()
    from bopkd.train.checkpoint import load_checkpoint

    it_killed = int(load_checkpoint(last)["iteration"])
    assert 0 < it_killed < 100
    # the same settings: the same training folder, continued from its checkpoint
    res = run_pipeline(
        tiny_options(
            methods=["none"], sets=["teacher.iters=100", "train.ckpt_every=1", "train.data.num_workers=1"]
        )
    )
    assert res.executed[0] == "teacher" and "data" in res.skipped
    assert (run / "stages" / "data.json").read_text() == data_before
    log = (run / "logs" / "teacher.log").read_text()
    assert f"resuming from {last.relative_to(tmp_path)}" in log
    m = pd.read_csv(last.parent.parent / "metrics.csv")
    assert list(m["iter"]) == sorted(set(m["iter"])) and m["iter"].iloc[-1] == 100
    assert int(load_checkpoint(last.parent / "final.pt")["iteration"]) == 100
    assert (tmp_path / "reports" / "demo-demo" / "report.html").is_file()


def test_lock_names_the_holder_and_is_released_on_exit(tmp_path):
    paths = [tmp_path / "runs" / "x" / ".lock"]
    code = (
        "import sys, time; from pathlib import Path; from bopkd.pipeline import RunLock\n"
        f"with RunLock([Path({str(paths[0])!r})]):\n    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(BopkdError, match=rf"in use by another bopkd run-pipeline \(pid {holder.pid},"),
            RunLock(paths),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(paths):  # released by the OS when the holder died
        assert json.loads(paths[0].read_text())["pid"] == os.getpid()


# --- planning, options and logs (no training) ----------------------------------------------------------


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
    assert forced_names(plan, ["student"]) == {"student-tiny-cpu-none-s0", "student-tiny-cpu-ot-s0"}
    assert forced_names(plan, ["score-*"]) == {
        "score-teacher",
        "score-tiny-cpu-none-s0",
        "score-tiny-cpu-ot-s0",
    }
    with pytest.raises(BopkdError, match="matches no stage"):
        forced_names(plan, ["nope"])


@pytest.mark.parametrize("preset", ["demo", "experiment", "study", "quick", "paper"])
def test_every_preset_plans_a_synthetic_run(preset):
    """Every preset's settings validate (synth, training, KD options) into a plan of 5 methods x its seeds
    (plus its variants); no preset trains the paper's OT with detached scores except a variant named so."""
    from bopkd.pipeline_presets import get_preset

    plan = build_plan(PipelineOptions(dataset="mysynth", preset=preset, device="cpu", progress=False))
    p = get_preset(preset)
    students = [s for s in plan.stages if s.name.startswith("student-")]
    n_variants = sum(len(v.seeds) for v in p.variants)
    assert len(students) == (5 * len(p.seeds) + n_variants) * len(p.students)
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


@pytest.mark.parametrize(
    "bad, match",
    [
        (["iters=3"], "SCOPE.key=value"),
        (["teacher@x.iters=3"], "SCOPE.key=value"),
        (["synth.a.b=1"], "flat"),
    ],
)
def test_bad_sets_are_one_line_errors(bad, match):
    with pytest.raises(BopkdError, match=match):
        parse_sets(bad)


def test_bad_options_are_one_line_cli_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for extra, match in (
        (["--methods", "nope"], "unknown distillation method"),
        (["--preset", "huge"], "unknown pipeline preset"),
        (["--set", "teacher.optim.lr=-1"], "learning rate"),
        (["--set", "synth.nope=1"], "unknown setting"),
    ):
        r = CliRunner().invoke(app, [*tiny_args(), *extra, "--dry-run"])
        assert r.exit_code != 0 and isinstance(r.exception, BopkdError), (extra, r.output)
        assert match in str(r.exception) and "\n" not in str(r.exception)
    r = subprocess.run(
        [sys.executable, "-m", "bopkd", *tiny_args(), "--methods", "nope", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "unknown distillation method" in r.stderr


def test_tee_keeps_the_last_state_of_progress_lines(tmp_path):
    import io

    console, log = io.StringIO(), io.StringIO()
    t = _Tee(console, log)
    t.write("start\n\r 10%|#  |\r 50%|### |")
    t.write("\r100%|#####|\n\x1b[32mgreen\x1b[0m line\npartial")
    t.close_line()
    assert log.getvalue() == "start\n100%|#####|\ngreen line\npartial\n"
    assert console.getvalue().startswith("start\n\r 10%")


# --- lmo --preset quick against a local mirror -----------------------------------------------------------


@pytest.fixture(scope="module")
def lmo_mirror(lmo_sample_root, tmp_path_factory):
    """A folder laid out as the BOP Hugging Face repositories: lmo_base/models/test_bop19 zips built from the
    real LM-O sample, and an lm_train_pbr.zip of ``train_pbr/`` images rendered by the synth builder from
    the sample's models (the sample has no training images)."""
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    srv = make_lmo_archives(lmo_sample_root, tmp_path_factory.mktemp("mirror"))
    lmo = lmo_sample_root / "lmo"
    work = tmp_path_factory.mktemp("lmpbr")
    cfg = SynthConfig(
        name="lmpbr",
        root=str(work),
        models=str(lmo / "models"),
        train=8,
        test=0,
        width=320,
        height=240,
        camera="lmo",
        objects_per_image=(3, 4),
        seed=3,
    )
    build_synthetic_dataset(cfg)
    make_zip_from_dir(srv / "lm" / HF / "lm_train_pbr.zip", work / "lmpbr", ["train_pbr"])
    return srv


@pytest.mark.slow
def test_lmo_quick_against_a_local_mirror(lmo_mirror, tmp_path, monkeypatch):
    from bopkd.data.registry import REGISTRY
    from tests.http_server import TestHTTPServer

    monkeypatch.chdir(tmp_path)
    sets = [
        "train.data.num_workers=0",
        "train.data.crop_size=64",
        "train.batch_size=2",
        "train.ckpt_every=2",
        "teacher.iters=2",
        "student.iters=2",
        "predict.predict.score_th=0.0",
    ]
    monkeypatch.setitem(REGISTRY, "lmo", served_sizes(REGISTRY["lmo"], lmo_mirror))
    with TestHTTPServer(lmo_mirror) as server:
        monkeypatch.setenv("BOPKD_MIRROR", server.url)
        args = ["run-pipeline", "lmo", "--device", "cpu", "--threads", "1", "--methods", "none,ot"]
        for s in sets:
            args += ["--set", s]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "these are GT-box results (protocol oracle-gt-boxes" in r.output
        served = {rec.path for rec in server.log}
    assert served == {f"lmo/{HF}/lmo_{p}.zip" for p in ("base", "models", "test_bop19")} | {
        f"lm/{HF}/lm_train_pbr.zip"
    }
    assert (tmp_path / "bop_data" / "lmo" / "train_pbr" / "000000" / "scene_gt.json").is_file()
    recs = records(tmp_path, preset="quick", dataset="lmo")
    assert len(recs["data"]["outputs"]) == 4  # one completion marker per part
    # 180 of the 200 test images are absent from the sample: predicted on the 20 present, with a note
    info = recs["predict-teacher"]["info"]
    assert info["n_images"] == 20
    assert any("180 of the 200 test images" in n for n in info["notes"])
    # no depth: VSD and the full AR are undefined; the report shows AR over MSSD and MSPD
    rep = tmp_path / "reports" / "lmo-quick"
    table = pd.read_csv(rep / "table.csv")
    assert list(table["kd"]) == ["-", "none", "ot"]
    assert table["AR"].isna().all() and table["AR_MSSD_MSPD"].notna().all()
    for _, row in pd.read_csv(rep / "runs.csv").iterrows():
        s = json.loads((tmp_path / "results" / "scores" / row["result"] / "scores_bop19.json").read_text())
        assert s["bop19_average_recall"] is None
        t = table[table["kd"] == row["kd"]].iloc[0]
        assert t["AR_MSSD_MSPD"] == pytest.approx(100 * s["bop19_average_recall_mssd_mspd"])
        assert row["result"].endswith("_lmo-test")
    md = (rep / "report.md").read_text()
    assert "180 of the 200 test images" in md and "AR_MSSD_MSPD" in md
    assert len(list((tmp_path / "results").glob("bopkd-*_lmo-test.csv"))) == 3
    # a rerun downloads nothing and runs nothing
    with TestHTTPServer(lmo_mirror) as server:
        monkeypatch.setenv("BOPKD_MIRROR", server.url)
        res = run_pipeline(
            PipelineOptions(
                dataset="lmo", device="cpu", threads=1, methods=["none", "ot"], sets=sets, progress=False
            )
        )
        assert res.executed == [] and server.log == []


def test_lock_of_a_killed_run_held_by_its_forked_children_is_waited_for(tmp_path):
    lock = tmp_path / "runs" / "x" / ".lock"
    code = (
        "import os, sys, time; from pathlib import Path; from bopkd.pipeline import RunLock\n"
        f"with RunLock([Path({str(lock)!r})]):\n"
        "    if os.fork() == 0:\n        time.sleep(4); os._exit(0)\n"  # a child sharing the lock, like a DataLoader worker
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with (
        pytest.raises(BopkdError, match=rf"processes left by a killed run \(pid {holder.pid},"),
        RunLock([lock], orphan_wait_s=0),
    ):
        pass
    t0 = time.monotonic()
    with RunLock([lock], orphan_wait_s=30):
        assert time.monotonic() - t0 > 0.5  # waited for the orphan to exit


def test_multi_gpu_training_runs_bopkd_train_under_its_own_launcher(tmp_path, monkeypatch):
    """--gpus N: a training stage runs ``bopkd train ROLE --config CFG --resume --gpus N`` (which re-launches
    under torchrun) with the stage's full config; no GPU is needed to check the command and the config."""
    import bopkd.pipeline as pl
    from bopkd.pipeline import StageContext
    from bopkd.train.config import build_config

    monkeypatch.chdir(tmp_path)
    plan = build_plan(tiny_options(methods=["ot"], seeds=[3, 4], gpus=2))
    assert [s.name for s in plan.stages if s.kind == "student"] == [
        "student-tiny-cpu-ot-s3",
        "student-tiny-cpu-ot-s4",
    ]
    assert plan.stage("teacher").config["seed"] == 3 and plan.stage("teacher").config["gpus"] == 2
    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        run_dir = Path(cmd[cmd.index("--config") + 1]).parent
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "final.pt").write_bytes(b"x")

    monkeypatch.setattr(pl, "_run_subprocess", fake_run)
    st = plan.stage("student-tiny-cpu-ot-s4")
    teacher_rec = {"info": {"checkpoint": "runs/t/checkpoints/final.pt"}, "outputs": {}}
    ctx = StageContext(
        st,
        {"data": {}, "teacher": teacher_rec},
        "f" * 64,
        Path("runs/demo-demo"),
        False,
        None,
        False,
        print,
        plan.options,
    )
    out = st.action(ctx)
    (cmd,) = calls
    assert cmd[:5] == [sys.executable, "-m", "bopkd", "train", "student"]
    assert cmd[5] == "--config" and cmd[-3:] == ["--resume", "--gpus", "2"]
    assert cmd[7:-3] == ["--backbone", "tiny-cpu", "--kd", "ot", "--teacher", "runs/t/checkpoints/final.pt"]
    # the command line parses (typer) into the same config: run it with a training stub
    import bopkd.train.trainer as trainer_mod

    seen = {}
    monkeypatch.setattr(
        trainer_mod, "train", lambda c, resume=False, **k: seen.update(cfg=c, resume=resume) or None
    )
    monkeypatch.setattr(trainer_mod.dist_utils, "launched_by_torchrun", lambda: True)
    r = CliRunner().invoke(app, cmd[3:])
    assert r.exit_code == 0, r.output
    assert (
        seen["resume"] and seen["cfg"].kd.teacher == "runs/t/checkpoints/final.pt" and seen["cfg"].seed == 4
    )
    cfg = build_config(config_file=cmd[cmd.index("--config") + 1])
    assert cfg.gpus == 2 and cfg.seed == 4 and cfg.kd.method == "ot"
    assert cfg.kd.teacher == "runs/t/checkpoints/final.pt"
    assert cfg.out == str(Path("runs/demo-demo/train") / f"student-tiny-cpu-ot-s4-{'f' * 10}")
    assert out.files == [Path(cfg.out) / "checkpoints" / "final.pt"]


def test_settings_added_later_keep_old_hashes_at_their_neutral_value():
    """A stage recorded before a setting existed stays done while the setting keeps its neutral value."""
    from bopkd.pipeline import NEUTRAL_TRAIN_DEFAULTS, canonical_hash, hashed_train_config

    plan = build_plan(PipelineOptions(dataset="mysynth", preset="demo", device="cpu", progress=False))
    cfg = plan.stage("teacher").params["full"]
    old = copy.deepcopy(cfg)
    for k in NEUTRAL_TRAIN_DEFAULTS:  # the config as written before these keys existed
        section, key = k.split(".")
        old[section].pop(key)
    assert canonical_hash(hashed_train_config(cfg)) == canonical_hash(hashed_train_config(old))
    changed = copy.deepcopy(cfg)
    changed["optim"]["anneal"] = "linear"
    assert canonical_hash(hashed_train_config(changed)) != canonical_hash(hashed_train_config(cfg))
