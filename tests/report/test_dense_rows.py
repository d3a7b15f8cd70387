"""Tests of the dense family in the report: rows labelled and ordered by family, a family column, gains of a
dense student over the dense direct student (not the sparse one), and the README block generated from it."""

from __future__ import annotations

import dataclasses

import pandas as pd

from bopkd.losses.kd.dense_ot import DenseOTKDConfig
from bopkd.report.build import build_report
from bopkd.report.collect import collect_results
from tests.report.test_report import write_submission

COMMON = {"vsd": 0.1, "mssd": 0.2, "mspd": 0.6, "per_obj": {1: 0.5}}
DENSE = {"family": "dense", "dense": {"bits": 16, "out_size": 32, "decoder_channels": [8, 8]}}


def _both_families(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    rows = [  # (method, role, kd, ar, family)
        ("bopkd-teacher-small-s0", "teacher", "-", 0.5, "sparse"),
        ("bopkd-none-small-s0", "student", "none", 0.2, "sparse"),
        ("bopkd-dense-teacher-small-s0", "teacher", "-", 0.4, "dense"),
        ("bopkd-dense-none-small-s0", "student", "none", 0.1, "dense"),
        ("bopkd-dense-ot-small-s0", "student", "ot", 0.15, "dense"),
    ]
    for method, role, kd, ar, family in rows:
        dense = family == "dense"
        write_submission(
            r, method, role=role, backbone="small", kd=kd, seed=0, ar=ar, add=ar,
            config=DENSE if dense else None, side_extra={"family": "dense"} if dense else None, **COMMON,
        )  # fmt: skip
    return r


def test_dense_rows_are_labelled_ordered_and_compared_within_their_family(tmp_path):
    results = _both_families(tmp_path)
    res = {r.result_name.split("_")[0]: r for r in collect_results(results)}
    assert res["bopkd-dense-teacher-small-s0"].model == "dense teacher (small)"
    assert res["bopkd-dense-ot-small-s0"].model.startswith("dense small / ot")
    assert res["bopkd-teacher-small-s0"].model == "teacher (small)"
    assert res["bopkd-dense-none-small-s0"].row_key != res["bopkd-none-small-s0"].row_key
    # the dense run's architecture is another one than the sparse run of the same backbone
    assert res["bopkd-dense-none-small-s0"].arch_key != res["bopkd-none-small-s0"].arch_key
    rep = build_report(results, tmp_path / "rep")
    t = rep.table
    assert list(t["family"]) == ["sparse", "sparse", "dense", "dense", "dense"]
    gain = dict(zip(t["model"], t["gain AR"], strict=True))
    assert abs(gain[res["bopkd-dense-ot-small-s0"].model] - 5.0) < 1e-9  # 15 - 10 (dense direct), not 15 - 20
    md = rep.files["README_results.md"].read_text()
    assert "| family" in md.replace("|   family", "| family") and "dense teacher (small)" in md
    summary = pd.read_csv(rep.files["summary.csv"])
    assert list(summary.columns[:6]) == ["model", "role", "backbone", "kd", "n", "seeds"]
    assert summary["family"].tolist() == ["sparse", "sparse", "dense", "dense", "dense"]


def test_a_sparse_only_report_has_no_family_column(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    write_submission(r, "bopkd-none-small-s0", role="student", backbone="small", kd="none", seed=0, ar=0.2,
                     add=0.2, **COMMON)  # fmt: skip
    rep = build_report(r, tmp_path / "rep")
    assert "family" not in rep.files["README_results.md"].read_text()


def test_dense_rows_state_the_code_loss_and_the_ot_cells(tmp_path):
    """A dense row states which pixels its code loss covers (ZebraPose's predicted-mask, all-pixel mean is
    the reference; the GT mask is a deviation) and a dense OT row its pooling and cell choice."""
    r = tmp_path / "results"
    r.mkdir()
    gt_loss = {**DENSE, "dense": {**DENSE["dense"], "loss": {"code_mask": "gt", "code_reduction": "mask"}}}
    runs = [  # (method, kd, config)
        ("bopkd-dense-none-small-s0", "none", DENSE),
        ("bopkd-dense-ot-small-s0", "ot", {**DENSE, "kd": {"method": "ot", "options": {"pool": 8}}}),
        (
            "bopkd-dense-ot-gt-small-s0",
            "ot",
            {**gt_loss, "kd": {"method": "ot", "options": {"mask_threshold": 0.5}}},
        ),
    ]
    for method, kd, config in runs:
        write_submission(r, method, role="student", backbone="small", kd=kd, seed=0, ar=0.1, add=0.1,
                         config=config, side_extra={"family": "dense"}, **COMMON)  # fmt: skip
    res = {x.result_name.split("_")[0]: x for x in collect_results(r)}
    assert res["bopkd-dense-none-small-s0"].model == "dense small / none"
    # the code loss differs between the two OT rows, so both state it
    assert res["bopkd-dense-ot-small-s0"].model == "dense small / ot (w=5, ZebraPose's code loss, pool 8)"
    gt = res["bopkd-dense-ot-gt-small-s0"].model
    assert "code loss over the GT mask — deviation" in gt and "pool 4, teacher mask > 0.5" in gt, gt
    md = build_report(r, tmp_path / "rep").files["README_results.md"].read_text()
    assert "mask L1 + code loss over the GT mask (deviation)" in md and "live masses" in md


def test_a_dense_ot_run_recorded_before_the_position_default_reads_without_it(tmp_path):
    """Run configs record the resolved options (position on, the default now); a config recorded before,
    without the key, had the former default (off): two rows, each labelled with its own setting."""
    r = tmp_path / "results"
    r.mkdir()
    resolved = dataclasses.asdict(DenseOTKDConfig())
    runs = [
        ("bopkd-dense-ot-small-s0", {**DENSE, "kd": {"method": "ot", "options": resolved}}),
        ("bopkd-dense-ot-old-small-s0", {**DENSE, "kd": {"method": "ot", "options": {"weight": 5.0}}}),
    ]
    for method, config in runs:
        write_submission(r, method, role="student", backbone="small", kd="ot", seed=0, ar=0.1, add=0.1,
                         config=config, side_extra={"family": "dense"}, **COMMON)  # fmt: skip
    res = {x.result_name.split("_")[0]: x for x in collect_results(r)}
    assert res["bopkd-dense-ot-small-s0"].model == "dense small / ot (w=5, pool 4, + position x1)"
    assert res["bopkd-dense-ot-old-small-s0"].model == "dense small / ot (w=5, pool 4)"
    assert res["bopkd-dense-ot-small-s0"].row_key != res["bopkd-dense-ot-old-small-s0"].row_key
