"""Tests of the multi-seed statistics of the report (bopkd/report/stats.py, settings.py, speed.py): mean and
sample std over seeds, paired differences to direct training with the t interval, rows labelled by the
settings of their run config (not by the result name), one speed per architecture, and the written files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bopkd.errors import BopkdError
from bopkd.report.build import build_report
from bopkd.report.collect import collect_results
from bopkd.report.stats import t_interval
from tests.report.test_report import write_submission

#: t quantile 0.975 with 2 degrees of freedom, from a printed table of Student's t (4.303).
T_975_2 = 4.30265

LIVE = "small / ot (w=5, live scores, no teacher-PnP filter — deviation)"
DETACHED = "small / ot (w=5, detached scores — ablation, no teacher-PnP filter — deviation)"
HALF = "small / ot (w=2.5, live scores, no teacher-PnP filter — deviation)"


def _sub(r, method, kd, seed, ar, add, config=None, role="student", backbone="small", **kw):
    return write_submission(
        r,
        method,
        role=role,
        backbone=backbone,
        kd=kd,
        seed=seed,
        ar=ar,
        add=add,
        vsd=0.1,
        mssd=0.2,
        mspd=0.6,
        per_obj={1: add},
        config=config,
        **kw,
    )


@pytest.fixture
def study(tmp_path):
    """Teacher; direct training and OT with live scores over seeds 0-2; OT with detached scores (result name
    that does not say so) over seeds 0-2; OT at weight 2.5 with one seed; pred with the per-positive task loss
    (no direct row with that loss); a config without loss.reduction (older code)."""
    r = tmp_path / "results"
    r.mkdir()
    _sub(r, "bopkd-teacher-big-s0", "-", 0, 0.5, 0.6, role="teacher", backbone="big")
    for s, (a, b) in enumerate([(0.20, 0.10), (0.25, 0.12), (0.30, 0.14)]):
        _sub(r, f"bopkd-none-small-s{s}", "none", s, a, b)
    for s, (a, b) in enumerate([(0.26, 0.10), (0.27, 0.15), (0.40, 0.20)]):
        _sub(r, f"bopkd-ot-small-s{s}", "ot", s, a, b)
    for s, a in enumerate([0.21, 0.22, 0.23]):
        _sub(r, f"bopkd-ot-small-s{s}-b", "ot", s, a, 0.1, {"kd": {"options": {"detach_scores": True}}})
    _sub(r, "bopkd-ot-otherweight-small-s2", "ot", 2, 0.35, 0.1, {"kd": {"weight": 2.5}})
    mpp = {"loss": {"reduction": "mean_per_positive"}}
    for s in (0, 1):
        _sub(r, f"bopkd-pred-small-s{s}", "pred", s, 0.3, 0.1, mpp)
    _sub(r, "bopkd-fkdot-small-s0-old", "fkd+ot", 0, 0.3, 0.1, {"loss": {"reduction": None}})
    # an older config: no loss.reduction key at all
    old = r.parent / "runs" / "bopkd-fkdot-small-s0-old" / "config.yaml"
    old.write_text(old.read_text().replace("  reduction: null\n", ""))
    return r


def test_t_interval_by_hand():
    mean, sd, q, lo, hi = t_interval(np.array([1.0, 2.0, 3.0]))
    assert (mean, sd) == (2.0, 1.0)
    assert q == pytest.approx(T_975_2, rel=1e-5)
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(2.0 - half, rel=1e-5), pytest.approx(2.0 + half, rel=1e-5))
    one = t_interval(np.array([4.0]))
    assert one[0] == 4.0 and all(np.isnan(v) for v in one[1:])


def test_rows_are_labelled_by_their_config(study):
    labels = {r.result_name.split("_")[0]: r.model for r in collect_results(study)}
    assert labels["bopkd-ot-small-s0"] == LIVE
    assert labels["bopkd-ot-small-s1-b"] == DETACHED  # from the config, not the name
    assert labels["bopkd-ot-otherweight-small-s2"] == HALF
    assert labels["bopkd-none-small-s0"] == "small / none"
    assert labels["bopkd-pred-small-s0"] == "small / pred (w=5, task loss per positive cell — ablation)"
    assert labels["bopkd-fkdot-small-s0-old"] == (
        "small / fkd+ot (fkd w=1, ot w=5, task loss per positive cell — ablation, teacher cells in GT mask — "
        "deviation, no teacher-PnP filter — deviation)"
    )
    assert labels["bopkd-teacher-big-s0"] == "teacher (big)"


def test_summary_and_paired_differences_by_hand(study, tmp_path):
    rep = build_report(study, tmp_path / "rep")
    s = rep.summary.set_index("model")
    assert s.loc["small / none", "n"] == 3 and s.loc["small / none", "seeds"] == "0,1,2"
    assert s.loc["small / none", "AR mean"] == pytest.approx(25.0)
    assert s.loc["small / none", "AR std"] == pytest.approx(5.0)  # sqrt(((-5)^2 + 0 + 5^2) / 2)
    assert s.loc["small / none", "ADD(-S)-0.1d std"] == pytest.approx(2.0)
    assert s.loc[HALF, "n"] == 1 and np.isnan(s.loc[HALF, "AR std"])
    assert list(s.index[:2]) == ["teacher (big)", "small / none"]

    p = rep.paired.set_index(["model", "metric"])
    # live OT minus direct, AR: 26-20, 27-25, 40-30 = 6, 2, 10 points
    live = p.loc[(LIVE, "AR")]
    assert (live["n"], live["seeds"], live["direct"]) == (3, "0,1,2", "small / none")
    assert live["mean diff"] == pytest.approx(6.0) and live["sd diff"] == pytest.approx(4.0)
    half = T_975_2 * 4.0 / math.sqrt(3)
    assert live["ci low"] == pytest.approx(6.0 - half, rel=1e-4)
    assert live["ci high"] == pytest.approx(6.0 + half, rel=1e-4)
    # ADD(-S): 10-10, 15-12, 20-14 = 0, 3, 6
    add = p.loc[(LIVE, "ADD(-S)-0.1d")]
    assert add["mean diff"] == pytest.approx(3.0) and add["sd diff"] == pytest.approx(3.0)
    assert p.loc[(DETACHED, "AR"), "mean diff"] == pytest.approx(-3.0)  # 1, -3, -7
    one = p.loc[(HALF, "AR")]
    assert (one["n"], one["seeds"], one["note"]) == (1, "2", "n=1: no interval")
    assert one["mean diff"] == pytest.approx(5.0) and np.isnan(one["ci low"])
    pred = p.loc[("small / pred (w=5, task loss per positive cell — ablation)", "AR")]
    assert pred["n"] == 0 and "no direct-training row" in pred["note"]

    md = rep.files["paired_vs_direct.md"].read_text()
    assert f"+6.0 [{6.0 - half:+.1f}, {6.0 + half:+.1f}]" in md
    assert "+5.0 (n=1, no interval)" in md
    assert "25.0 ± 5.0" in rep.files["summary.md"].read_text()


def test_files_and_columns(study, tmp_path):
    rep = build_report(study, tmp_path / "rep")
    summary = pd.read_csv(rep.files["summary.csv"])
    assert list(summary.columns[:6]) == ["model", "role", "backbone", "kd", "n", "seeds"]
    for m in ("AR", "AR_VSD", "AR_MSSD", "AR_MSPD", "ADD(-S)-0.1d"):
        assert f"{m} mean" in summary and f"{m} std" in summary
    paired = pd.read_csv(rep.files["paired_vs_direct.csv"])
    assert {
        "model",
        "direct",
        "metric",
        "n",
        "seeds",
        "mean diff",
        "sd diff",
        "t",
        "ci low",
        "ci high",
    } <= set(paired.columns)
    st = pd.read_csv(rep.files["settings.csv"]).set_index("model")
    assert st.loc[DETACHED, "OT student scores"] == "detached (ablation)"
    assert st.loc[LIVE, "OT student scores"] == "live" and st.loc[LIVE, "teacher cells"] == "all"
    assert st.loc[LIVE, "seeds"] == "0,1,2"
    old = st.loc[st.index.str.startswith("small / fkd+ot")].iloc[0]
    assert old["task loss"] == "mean_per_positive (ablation)" and old["teacher cells"] == "mask (deviation)"
    assert "without loss.reduction" in old["assumed"]
    assert st.loc["small / none", "OT student scores"] == "–"
    readme = rep.files["README_results.md"].read_text()
    for text in ("25.0 ± 5.0", "(n=1, no interval)", "detached (ablation)", "Settings of each row"):
        assert text in readme
    assert str(tmp_path) not in readme  # no machine paths in the README block


def test_one_seed_twice_is_an_error(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    _sub(r, "bopkd-none-small-s0", "none", 0, 0.2, 0.1)
    _sub(r, "bopkd-none-small-s0-again", "none", 0, 0.3, 0.1)
    with pytest.raises(BopkdError, match="same settings and seed 0"):
        collect_results(r)


def test_speed_is_one_figure_per_architecture(tmp_path, monkeypatch):
    """Sidecars of identical students say 23.6, 30.0 and 38.2 ms; the report gives them one figure."""
    r = tmp_path / "results"
    r.mkdir()
    for s, ms in enumerate((23.6, 38.2, 30.0)):
        _sub(r, f"bopkd-ot-small-s{s}", "ot", s, 0.3, 0.1, ms=ms)
    rep = build_report(r, tmp_path / "rep", speed_device=None)  # no model section: sidecar median
    assert rep.runs["ms/image"].tolist() == [30.0] * 3
    assert rep.runs["sidecar ms/image"].tolist() == [23.6, 38.2, 30.0]
    assert "median over 3 predict sidecars" in rep.speed.loc[0, "how"]

    # with a model section and the input size, the report times each architecture once
    import bopkd.report.speed as speed

    calls = []
    monkeypatch.setattr(
        speed,
        "measure_forwards",
        lambda items, dev, **kw: [calls.append(size) or (7.0, "dev") for _, size, _ in items],
    )
    model = {"model": {"obj_ids": [1], "backbone": "tiny-cpu", "levels": [3, 4, 5], "fpn_channels": 16}}
    r2 = tmp_path / "results2"
    r2.mkdir()
    for s in range(3):
        for kd in ("none", "ot"):
            _sub(r2, f"bopkd-{kd}-small-s{s}", kd, s, 0.3, 0.1, model, side_extra={"input_size": [32, 32]})
    big = {"input_size": [64, 64]}
    _sub(r2, "bopkd-teacher-big-s0", "-", 0, 0.5, 0.5, model, role="teacher", backbone="big", side_extra=big)
    rep = build_report(r2, tmp_path / "rep2")
    assert sorted(calls) == [(32, 32), (64, 64)]
    assert set(rep.table["ms/image"]) == {7.0} and set(rep.table["device"]) == {"dev"}

    # a network this install cannot build: the sidecars' median, and the table says why
    monkeypatch.undo()
    bad = {"model": {"obj_ids": [1], "backbone": "no-such-backbone"}}
    r3 = tmp_path / "results3"
    r3.mkdir()
    _sub(r3, "bopkd-none-small-s0", "none", 0, 0.3, 0.1, bad, ms=12.0, side_extra={"input_size": [32, 32]})
    rep = build_report(r3, tmp_path / "rep3")
    assert rep.runs["ms/image"].tolist() == [12.0] and "timing failed" in rep.speed.loc[0, "how"]


def test_measure_forward_times_a_real_network():
    from bopkd.report.speed import measure_forward

    cfg = {"model": {"obj_ids": [1, 2], "backbone": "tiny-cpu", "levels": [3, 4, 5], "fpn_channels": 8}}
    ms, dev = measure_forward(cfg, (32, 32), "cpu")
    assert 0 < ms < 10_000 and dev.startswith("cpu")
    with pytest.raises(BopkdError, match="at least 20"):
        measure_forward(cfg, (32, 32), "cpu", batches=5)
    with pytest.raises(BopkdError, match="no model section"):
        measure_forward({}, (32, 32), "cpu")


def test_an_intermediate_checkpoint_is_its_own_row(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    iters = {"iters": 600}
    _sub(r, "bopkd-none-small-s0", "none", 0, 0.2, 0.1, iters, side_extra={"iteration": 600})
    _sub(r, "bopkd-none-small-s0-at300", "none", 0, 0.1, 0.1, iters, side_extra={"iteration": 300})
    models = sorted({x.model for x in collect_results(r)})
    assert models == ["small / none", "small / none at iteration 300"]


def test_ot_rows_are_compared_with_pred_and_fkd_by_hand(tmp_path):
    """OT minus pred and OT minus FKD on the seeds they share, with the paired t interval."""
    r = tmp_path / "results"
    r.mkdir()
    ars = {
        "none": [0.20, 0.25, 0.30],
        "pred": [0.22, 0.24, 0.35],
        "fkd": [0.21, 0.27, 0.33],
        "ot": [0.26, 0.27, 0.40],
    }
    for kd, vals in ars.items():
        for s, a in enumerate(vals):
            _sub(r, f"bopkd-{kd}-small-s{s}", kd, s, a, 0.1)
    rep = build_report(r, tmp_path / "rep")
    p = rep.paired_ot.set_index(["model", "direct", "metric"])
    ot, pred, fkd = (
        "small / ot (w=5, no teacher-PnP filter — deviation)",
        "small / pred (w=5)",
        "small / fkd (w=1)",
    )
    vs_pred = p.loc[(ot, pred, "AR")]  # 26-22, 27-24, 40-35 = 4, 3, 5 points
    assert (vs_pred["n"], vs_pred["seeds"]) == (3, "0,1,2")
    assert vs_pred["mean diff"] == pytest.approx(4.0) and vs_pred["sd diff"] == pytest.approx(1.0)
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert vs_pred["ci low"] == pytest.approx(4.0 - half, rel=1e-4)
    vs_fkd = p.loc[(ot, fkd, "AR")]  # 5, 0, 7
    assert vs_fkd["mean diff"] == pytest.approx(4.0)
    assert set(rep.paired_ot["model"]) == {ot}  # pred and fkd rows are baselines here, not compared
    md = rep.files["paired_ot_vs_pred_fkd.md"].read_text()
    assert f"+4.0 [{4.0 - half:+.1f}, {4.0 + half:+.1f}]" in md
    assert "Paired difference of OT to prediction KD and FKD" in rep.files["README_results.md"].read_text()
    # A model's comparisons are listed together: vs pred, then vs FKD.
    assert list(dict.fromkeys(zip(rep.paired_ot["model"], rep.paired_ot["direct"], strict=True))) == [
        (ot, pred),
        (ot, fkd),
    ]


def test_a_baseline_at_two_weights_gives_one_comparison_each(tmp_path):
    """pred at weights 5 and 2: the OT row is compared with each of them, over the seeds each shares."""
    r = tmp_path / "results"
    r.mkdir()
    for s, (a, p5, p2) in enumerate([(0.30, 0.20, 0.25), (0.32, 0.22, 0.31), (0.40, 0.30, 0.30)]):
        _sub(r, f"bopkd-ot-small-s{s}", "ot", s, a, 0.1)
        _sub(r, f"bopkd-pred-small-s{s}", "pred", s, p5, 0.1)
        if s < 2:
            _sub(r, f"bopkd-pred-w2-small-s{s}", "pred", s, p2, 0.1, {"kd": {"weight": 2.0}})
    rep = build_report(r, tmp_path / "rep")
    p = rep.paired_ot[rep.paired_ot["metric"] == "AR"].set_index("direct")
    assert set(p.index) == {"small / pred (w=5)", "small / pred (w=2)"}
    w5, w2 = p.loc["small / pred (w=5)"], p.loc["small / pred (w=2)"]
    assert (w5["n"], w5["mean diff"]) == (3, pytest.approx(10.0))  # 10, 10, 10
    assert (w2["n"], w2["seeds"], w2["mean diff"]) == (2, "0,1", pytest.approx(3.0))  # 5, 1


def test_variants_are_paired_with_their_method_s_default_row_by_hand(study, tmp_path):
    """OT with detached scores (seeds 0-2) and OT at weight 2.5 (seed 2) against OT with its default options;
    the fkd+ot row of an older config (teacher cells read as the mask) has no default row beside it."""
    rep = build_report(study, tmp_path / "rep")
    v = rep.paired_variants.set_index(["model", "metric"])
    assert set(rep.paired_variants["direct"]) == {LIVE}
    assert set(rep.paired_variants["model"]) == {DETACHED, HALF}
    det = v.loc[(DETACHED, "AR")]  # 21-26, 22-27, 23-40 = -5, -5, -17 points
    assert (det["n"], det["seeds"]) == (3, "0,1,2")
    assert det["mean diff"] == pytest.approx(-9.0) and det["sd diff"] == pytest.approx(math.sqrt(48))
    half = T_975_2 * math.sqrt(48) / math.sqrt(3)
    assert det["ci high"] == pytest.approx(-9.0 + half, rel=1e-4)
    one = v.loc[(HALF, "AR")]  # 35 - 40
    assert (one["n"], one["mean diff"]) == (1, pytest.approx(-5.0))
    md = rep.files["paired_variants.md"].read_text()
    assert f"-9.0 [{-9.0 - half:+.1f}, {-9.0 + half:+.1f}]" in md
    readme = rep.files["README_results.md"].read_text()
    assert "Paired difference of each variant to its method's default settings" in readme
    runs = pd.read_csv(rep.files["runs.csv"]).set_index("model")
    assert runs.loc[LIVE, "kd_default"].all() and not runs.loc[DETACHED, "kd_default"].any()
    assert runs.loc["small / none", "kd_default"].isna().all()


def test_no_variant_no_variant_section(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    for s in (0, 1):
        _sub(r, f"bopkd-none-small-s{s}", "none", s, 0.2, 0.1)
        _sub(r, f"bopkd-ot-small-s{s}", "ot", s, 0.3, 0.1)
    rep = build_report(r, tmp_path / "rep")
    assert rep.paired_variants.empty and "paired_variants.md" not in rep.files
    assert "each variant" not in rep.files["README_results.md"].read_text()
