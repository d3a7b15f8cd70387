"""Tests of the comparison report (bopkd/report): collecting scored submissions with the sidecar keys
``bopkd predict`` writes, aggregating seeds, gains over the direct student, test splits without depth,
restricting to given files, notes, and the written files and figures."""

from __future__ import annotations

import json
from dataclasses import fields as fields_of
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from bopkd.errors import BopkdError
from bopkd.infer.record import PredictionRecord
from bopkd.report.build import build_report
from bopkd.report.collect import collect_results, load_result


def write_run(run: Path, role: str, kd: str, seed: int, config: dict | None) -> Path:
    """A run folder: config.yaml (the reference's task loss, the method's default kd options, sections
    updated by ``config``) and metrics.csv."""
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    cfg = {
        "seed": seed,
        "role": role,
        "loss": {"weight_cls": 0.1, "reduction": "sum"},
        "kd": {"method": kd if role == "student" else "none", "weight": None, "options": {}},
        "out": str(run),
    }
    for k, v in (config or {}).items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    pd.DataFrame({"iter": [10, 20, 30], "loss": [1.0, 0.5 + seed * 0.1, 0.25]}).to_csv(
        run / "metrics.csv", index=False
    )
    return run


def predict_sidecar(result_name: str, **fields) -> dict:
    """A complete ``bopkd predict`` sidecar (:class:`PredictionRecord` as JSON) of an oracle-GT-box run on
    32x32 crops, with ``fields`` replaced."""
    method, _, rest = result_name.partition("_")
    dataset, _, split = rest.partition("-")
    rec = {
        "result_name": result_name,
        "method": method,
        "dataset": dataset,
        "split": split,
        "protocol": "oracle-gt-boxes",
        "oracle": True,
        "box_source": "gt",
        "detections": None,
        "checkpoint": "run/checkpoints/final.pt",
        "iteration": 30,
        "role": "student",
        "backbone": "small",
        "kd_method": "none",
        "input_mode": "crop",
        "input_size": [32, 32],
        "params": 1000,
        "macs": 10000,
        "ms_per_image": 5.0,
        "time_includes": "forward (batched, shared per input), decoding, PnP-RANSAC",
        "time_excludes": "reading the image file, crop/resize (DataLoader)",
        "device": "cpu (test)",
        "batch_size": 8,
        "amp": "fp32",
        "n_images": 1,
        "n_inputs": 1,
        "n_estimates": 1,
        "predict": {
            "score_th": 0.1,
            "num_cells": 10,
            "reproj_err": 5.0,
            "ransac_iters": 100,
            "refine": False,
            "batch_size": 8,
            "crop_pad": None,
        },
        "trained_iterations": 30,
        "versions": {"bopkd": "0.1.0"},
        "n_time_unknown": 0,
    }
    # every field but ``family`` (added with the dense family: a sidecar without it reads as sparse)
    assert [*rec, "family"] == [f.name for f in fields_of(PredictionRecord)]
    return {**rec, **fields}


def write_submission(
    results: Path,
    method: str,
    *,
    role: str,
    backbone: str,
    kd: str,
    seed: int,
    ar: float | None,
    mssd: float,
    mspd: float,
    vsd: float | None,
    add: float,
    per_obj: dict[int, float],
    dataset: str = "demo",
    params: int = 1000,
    ms: float = 5.0,
    config: dict | None = None,
    side_extra: dict | None = None,
) -> str:
    """A fake scored submission: CSV, sidecar (:func:`predict_sidecar`, updated by ``side_extra``), run
    folder (:func:`write_run`; no ``model`` section unless ``config`` gives one, so the report takes the
    sidecars' speed) and scores (:func:`write_scores`)."""
    name = f"{method}_{dataset}-test"
    (results / f"{name}.csv").write_text("scene_id,im_id,obj_id,score,R,t,time\n")
    run = write_run(results.parent / "runs" / method, role, kd, seed, config)
    side = predict_sidecar(
        name,
        role=role,
        backbone=backbone,
        kd_method=kd if role == "student" else "none",
        params=params,
        macs=10 * params,
        ms_per_image=ms,
        checkpoint=str(run / "checkpoints" / "final.pt"),
        iteration=(config or {}).get("iters", 30),
    )
    (results / f"{name}.csv.json").write_text(json.dumps({**side, **(side_extra or {})}))
    s = {
        "bop19_average_recall": ar,
        "bop19_average_recall_vsd": vsd,
        "bop19_average_recall_mssd": mssd,
        "bop19_average_recall_mspd": mspd,
        "bop19_average_time_per_image": ms / 1000,
        "engine": "bopkd",
    }
    if vsd is None:
        s["bop19_average_recall_mssd_mspd"] = (mssd + mspd) / 2
    write_scores(results / "scores" / name, s, add, per_obj)
    return name


def write_scores(sdir: Path, bop19: dict, add: float, per_obj: dict[int, float]) -> None:
    """Score files as bopkd score writes them: scores_bop19.json, scores_ad.json and recalls.csv (MSSD and
    MSPD recalls 0.1, 0.2 ... 1.0 over their 10 thresholds, for every object)."""
    sdir.mkdir(parents=True)
    (sdir / "scores_bop19.json").write_text(json.dumps(bop19))
    (sdir / "scores_ad.json").write_text(
        json.dumps({"recall": add, "obj_recalls": {str(k): v for k, v in per_obj.items()}})
    )
    rows = []
    for metric, ths in (("mssd", np.arange(0.05, 0.51, 0.05)), ("mspd", np.arange(5, 51, 5))):
        for k, th in enumerate(ths):
            for o in per_obj:
                rows.append(
                    {
                        "metric": metric,
                        "obj_id": o,
                        "tau": None,
                        "threshold": th,
                        "tp": k + 1,
                        "n_targets": 10,
                        "recall": 0.1 * (k + 1),
                    }
                )
    pd.DataFrame(rows).to_csv(sdir / "recalls.csv", index=False)


@pytest.fixture
def results(tmp_path) -> Path:
    r = tmp_path / "results"
    r.mkdir()
    common = {"vsd": 0.1, "mssd": 0.2, "mspd": 0.6}
    write_submission(
        r,
        "bopkd-teacher-big-s0",
        role="teacher",
        backbone="big",
        kd="-",
        seed=0,
        ar=0.5,
        add=0.6,
        per_obj={1: 0.5, 2: 0.7},
        params=5000,
        **common,
    )
    write_submission(
        r,
        "bopkd-none-small-s0",
        role="student",
        backbone="small",
        kd="none",
        seed=0,
        ar=0.20,
        add=0.30,
        per_obj={1: 0.2, 2: 0.4},
        **common,
    )
    write_submission(
        r,
        "bopkd-ot-small-s0",
        role="student",
        backbone="small",
        kd="ot",
        seed=0,
        ar=0.30,
        add=0.35,
        per_obj={1: 0.3, 2: 0.4},
        **common,
    )
    write_submission(
        r,
        "bopkd-ot-small-s1",
        role="student",
        backbone="small",
        kd="ot",
        seed=1,
        ar=0.40,
        add=0.45,
        per_obj={1: 0.5, 2: 0.4},
        **common,
    )
    return r


def test_collect_reads_predict_sidecars_and_derives_seed_and_run_dir(results):
    r = load_result(results / "bopkd-ot-small-s0_demo-test.csv", results / "scores")
    assert (r.role, r.backbone, r.kd, r.seed) == ("student", "small", "ot", 0)
    assert r.run_dir == results.parent / "runs" / "bopkd-ot-small-s0"  # from checkpoints/final.pt
    assert (r.params, r.macs, r.ms_per_image, r.device) == (1000, 10000, 5.0, "cpu (test)")
    assert r.ar == 0.30 and r.add_01d == 0.35 and r.per_object_add == {1: 0.3, 2: 0.4}
    t = load_result(results / "bopkd-teacher-big-s0_demo-test.csv", results / "scores")
    assert (t.role, t.kd, t.model) == ("teacher", "-", "teacher (big)")
    s1 = load_result(results / "bopkd-ot-small-s1_demo-test.csv", results / "scores")
    assert (s1.kd, s1.seed) == ("ot", 1)  # the seed from the run's config.yaml
    assert s1.model == "small / ot (w=5, no teacher-PnP filter — deviation)"  # default kd options
    # not scored yet: skipped
    (results / "bopkd-fkd-small-s0_demo-test.csv").write_text("x")
    assert load_result(results / "bopkd-fkd-small-s0_demo-test.csv", results / "scores") is None


def test_a_sidecar_that_is_not_a_prediction_record_is_a_one_line_error(results):
    csv = results / "bopkd-ot-small-s1_demo-test.csv"
    side = csv.with_name(csv.name + ".json")
    good = json.loads(side.read_text())
    nested = {"model": {"role": "student", "kd": "ot"}, "speed": {"ms_per_image": 5.0}, "protocol": "x"}
    for bad, what in (
        (nested, "without key.*result_name"),
        ({**good, "ms_per_image": "fast"}, "ms_per_image.*expected a number"),
        ({**good, "speed": {}}, "'speed'.*unknown"),
        ("[1, 2]", "holds a JSON object"),
        ("{", "unreadable prediction sidecar"),
    ):
        side.write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(BopkdError, match=what) as e:
            load_result(csv, results / "scores")
        msg = str(e.value)
        assert "\n" not in msg and str(side) in msg and "re-run `bopkd predict`" in msg
    # a CSV without a sidecar is another method's result: reported under its name
    side.unlink()
    other = load_result(csv, results / "scores")
    assert (other.role, other.seed, other.run_dir) == ("other", None, None)
    assert other.model == "bopkd-ot-small-s1_demo-test (settings unknown: no run config)"


def test_table_aggregates_seeds_and_paired_gains_over_the_direct_student(results, tmp_path):
    rep = build_report(results, tmp_path / "rep", title="T")
    t = rep.table.set_index("kd")
    assert list(rep.table["kd"]) == ["-", "none", "ot"]
    assert t.loc["ot", "seeds"] == 2
    assert t.loc["ot", "AR"] == pytest.approx(35.0)
    assert t.loc["ot", "AR std"] == pytest.approx(np.std([30.0, 40.0], ddof=1))
    # gains are paired: only seed 0 has both ot (30, 35) and direct training (20, 30)
    assert t.loc["ot", "gain AR"] == pytest.approx(30.0 - 20.0)
    assert t.loc["ot", "gain ADD(-S)-0.1d"] == pytest.approx(35.0 - 30.0)
    assert t.loc["ot", "ADD(-S) obj 1"] == pytest.approx(40.0)
    # per-object AR from recalls.csv: recalls 0.1 .. 1.0 over the 10 thresholds of MSSD and of MSPD
    assert t.loc["ot", "AR obj 2"] == pytest.approx(55.0)
    assert np.isnan(t.loc["-", "gain AR"]) and t.loc["none", "gain AR"] == 0
    assert "AR_MSSD_MSPD" not in rep.files["table.md"].read_text()  # VSD was computed: not shown
    md = rep.files["table.md"].read_text()
    assert "35.0 ± 7.1" in md and "+10.0" in md and "teacher (big)" in md and "small / ot (w=5" in md


def test_report_files_notes_and_figures(results, tmp_path):
    rep = build_report(results, tmp_path / "rep", title="My title", notes=["first note", "second <note>"])
    for f in ("table.md", "table.csv", "table.tex", "runs.csv", "report.html", "report.md"):
        assert rep.files[f].is_file()
    for f in (
        "fig_per_object.png",
        "fig_recall_curves.png",
        "fig_loss_curves.png",
        "fig_accuracy_vs_cost.png",
        "fig_seeds.png",
        "fig_paired.png",
    ):
        img = mpimg.imread(rep.files[f])
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
        assert img[..., :3].std() > 0.01  # not blank
    html = rep.files["report.html"].read_text()
    assert "My title" in html and "first note" in html and "second &lt;note&gt;" in html
    assert html.count("data:image/png;base64,") == 6
    # the per-object figure draws AR per object (recalls.csv present) and is captioned so
    assert "<h2>Per-object AR by model" in html and "Per-object ADD(-S)" not in html
    md = rep.files["report.md"].read_text()
    assert md.startswith("# My title") and "**Note:** first note" in md and "![" in md
    assert "oracle-gt-boxes" in md
    assert "bopkd-ot-small-s1_demo-test.csv" in md


def test_only_the_given_csvs_and_depthless_scores(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    kw = {"vsd": None, "mssd": 0.2, "mspd": 0.6, "per_obj": {1: 0.2}, "dataset": "lmo"}
    write_submission(
        r, "bopkd-teacher-big-s0", role="teacher", backbone="big", kd="-", seed=0, ar=None, add=0.5, **kw
    )
    a = write_submission(
        r, "bopkd-none-small-s0", role="student", backbone="small", kd="none", seed=0, ar=None, add=0.2, **kw
    )
    b = write_submission(
        r,
        "bopkd-ot-small-s0",
        role="student",
        backbone="small",
        kd="ot",
        seed=0,
        ar=None,
        add=0.3,
        **{**kw, "mssd": 0.3},
    )
    rep = build_report(r, tmp_path / "rep", csvs=[r / f"{a}.csv", r / f"{b}.csv"])
    assert list(rep.runs["result"]) == [a, b]  # the teacher's file was not asked for
    t = rep.table.set_index("kd")
    assert t["AR"].isna().all()
    assert t.loc["ot", "AR_MSSD_MSPD"] == pytest.approx(45.0)
    assert t.loc["ot", "gain AR_MSSD_MSPD"] == pytest.approx(5.0)  # seed 0 of both
    md = rep.files["table.md"].read_text()
    assert "AR_MSSD_MSPD" in md and "gain AR_MSSD_MSPD" in md
    assert rep.files["fig_accuracy_vs_cost.png"].is_file()


def test_errors_are_one_line(tmp_path):
    with pytest.raises(BopkdError, match="no such results folder"):
        collect_results(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "bopkd-x_demo-test.csv").write_text("x")
    with pytest.raises(BopkdError, match="no scored submissions"):
        collect_results(tmp_path / "r")


def test_per_object_ar_averages_thresholds_then_metrics(tmp_path):
    from bopkd.report.collect import per_object_ar

    rows = [
        ("vsd", 1, 0.05, 0.05, 0.2),
        ("vsd", 1, 0.10, 0.05, 0.4),
        ("mssd", 1, None, 0.05, 0.5),
        ("mssd", 1, None, 0.10, 0.7),
        ("mspd", 1, None, 5.0, 0.9),
        ("mspd", "all", None, 5.0, 0.0),  # totals are not an object
        ("ad", 1, None, 0.1, 0.0),  # not a BOP'19 metric
        ("mssd", 7, None, 0.05, 0.25),
    ]
    df = pd.DataFrame(rows, columns=["metric", "obj_id", "tau", "threshold", "recall"])
    df.assign(tp=0, n_targets=1).to_csv(tmp_path / "recalls.csv", index=False)
    got = per_object_ar(tmp_path / "recalls.csv")
    assert got == {1: pytest.approx((0.3 + 0.6 + 0.9) / 3), 7: pytest.approx(0.25)}
