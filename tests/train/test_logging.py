"""Run metrics files (bopkd.train.logging)."""

from __future__ import annotations

import csv

from bopkd.train.logging import MetricsLogger, read_metrics


def _rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_rows_go_to_csv_and_jsonl_and_resume_drops_later_rows(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for it in range(1, 6):
        log.log({"iter": it, "lr": 0.1 * it, "loss": 1.0 / it, "loss_kpt": float("nan") if it == 5 else 0.5})
    log.close()
    rows = _rows(tmp_path)
    assert [int(r["iter"]) for r in rows] == [1, 2, 3, 4, 5] and rows[4]["loss_kpt"] == "nan"
    assert [r["iter"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    # A run resumed from iteration 3 forgets rows 4 and 5, then appends.
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"iter": 6, "lo')  # a line cut by a kill
    log = MetricsLogger(tmp_path, resume_from=3, tensorboard=False)
    log.log({"iter": 4, "lr": 9.0, "loss": 0.0, "loss_kpt": 0.0})
    rows = _rows(tmp_path)
    assert [(int(r["iter"]), float(r["lr"])) for r in rows][-2:] == [(3, 0.30000000000000004), (4, 9.0)]
    assert [r["iter"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    # A new run (not resumed) starts the files afresh; rank != 0 writes nothing.
    MetricsLogger(tmp_path, tensorboard=False).log({"iter": 1, "loss": 2.0})
    assert [r["loss"] for r in read_metrics(tmp_path)] == [2.0]
    MetricsLogger(tmp_path / "other", enabled=False).log({"iter": 1})
    assert not (tmp_path / "other").exists()
