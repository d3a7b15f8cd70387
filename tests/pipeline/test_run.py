"""Tests of ``bopkd run-pipeline`` (bopkd/pipeline/run.py): the demo end to end at a tiny size, skipping on
rerun, rerunning exactly what a changed setting affects, resuming after a kill, the lock, and lmo via a
local mirror serving archives built from the real LM-O sample."""

from __future__ import annotations

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
from bopkd.pipeline import PipelineOptions, run_pipeline
from tests.pipeline.tiny_demo import inside, records, tiny_args, tiny_options
from tests.zip_helpers import HF, make_lmo_archives, make_zip_from_dir, served_sizes

#: Method names in the result files where they differ from the KD method's name.
SITE_NAMES = {"fkd+ot": "fkdot"}


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


def test_the_demo_runs_both_families_by_default(tmp_path):
    """Without ``--family`` the demo plans both families: the dense stages run beside the sparse ones, their
    submissions pass the BOP checks and the report shows both families side by side."""
    with inside(tmp_path):
        sets = ["--set", "train.dense.min_vertices=1024", "--set", "predict.dense.pnp.mask_threshold=0.01"]
        r = CliRunner().invoke(app, tiny_args(*sets, methods="none,ot", family=None))
        assert r.exit_code == 0, r.output
        recs = records(tmp_path)
        dense = {"teacher-dense", "predict-teacher-dense", "score-teacher-dense"}
        for m in ("none", "ot"):
            dense |= {f"{k}-dense-tiny-cpu-{m}-s0" for k in ("student", "predict", "score")}
        assert dense <= set(recs) and "student-tiny-cpu-ot-s0" in recs
        assert set(recs["student-dense-tiny-cpu-ot-s0"]["inputs"]) == {"data", "teacher-dense"}
        csvs = sorted(Path("results").glob("*.csv"))
        assert len(csvs) == 6 and "bopkd-dense-ot-tinycpu-s0-oracle-gt-boxes_demo-test.csv" in {
            c.name for c in csvs
        }
        table = pd.read_csv(Path("reports") / "demo-demo" / "table.csv")
        assert list(table["family"]) == ["sparse"] * 3 + ["dense"] * 3
        assert list(table["kd"]) == ["-", "none", "ot"] * 2
        r = CliRunner().invoke(app, ["check", *map(str, csvs)])
    assert r.exit_code == 0, r.output


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


# --- one-line errors of the command ----------------------------------------------------------------------


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
    from bopkd.data.registry import DATASETS
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
    monkeypatch.setitem(DATASETS, "lmo", served_sizes(DATASETS["lmo"], lmo_mirror))
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
