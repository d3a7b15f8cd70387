"""Result files the scorers must name in their messages: an unknown dataset, and a file without estimates
(scored as the official toolkit scores it: every recall and AP 0, the average time NaN there, null here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bopkd.errors import BopkdError
from bopkd.eval.submission import HEADER

ROW = "2,3,1,1,1 0 0 0 1 0 0 0 1,0 0 1000,-1\n"


def _bopkd(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bopkd", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _strict_json(path: Path) -> dict:
    def no_nan(c):
        raise AssertionError(f"{path}: {c} is not JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


@pytest.fixture
def root(oracle_root, tmp_path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "lmo").symlink_to(oracle_root / "lmo")
    return r


def test_unknown_dataset_names_the_result_file(tmp_path):
    from bopkd.eval.bop24_scoring import DetectionScorer
    from bopkd.eval.check import check_submission
    from bopkd.eval.scoring import SubmissionScorer

    csv = tmp_path / "mymethod_lmoo-test.csv"
    csv.write_text(HEADER + "\n" + ROW)
    for make in (SubmissionScorer, DetectionScorer, check_submission):
        with pytest.raises(BopkdError) as e:
            make(csv, tmp_path)
        msg = str(e.value)
        assert msg.startswith(f"{csv}: unknown dataset 'lmoo' (from the file name)"), msg
        assert "known: lm, lmo, tless, ycbv" in msg and "rename the file" in msg and "\n" not in msg


def test_cli_unknown_dataset_is_one_line_naming_the_file(tmp_path):
    csv = tmp_path / "mymethod_lmoo-test.csv"
    csv.write_text(HEADER + "\n" + ROW)
    r = _bopkd("score", str(csv), "--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {csv}: unknown dataset 'lmoo'") and "known: " in line


def test_empty_file_scores_zero_as_the_toolkit(root, tmp_path):
    from bopkd.eval.protocols import score_protocols

    csv = tmp_path / "empty_lmo-test.csv"
    csv.write_text(HEADER + "\n")
    out = tmp_path / "out"
    res = score_protocols([csv], root, out, ("bop19", "bop24"), ("bop19", "ad"))["empty_lmo-test"]
    b19, b24 = res["bop19"], res["bop24"]
    assert b19["n_targets"] == 25 and b19["n_estimates"] == 0
    for m in b19["metrics"].values():
        assert np.all(m.recalls() == 0.0), m.name
    for warnings in (b19["warnings"], b24["warnings"]):
        assert warnings == [warnings[0]] and warnings[0].startswith(f"{csv}: no estimates after the header")
    s19 = _strict_json(out / "empty_lmo-test" / "scores_bop19.json")
    assert s19["bop19_average_time_per_image"] is None
    assert all(s19[f"bop19_average_recall{k}"] == 0.0 for k in ("", "_vsd", "_mssd", "_mspd"))
    s24 = _strict_json(out / "empty_lmo-test" / "scores_bop24.json")
    assert s24["bop24_average_time_per_image"] is None
    assert all(v == 0.0 for k, v in s24.items() if "mAP" in k)
    rec = _strict_json(out / "empty_lmo-test" / "scores_bopkd.json")
    assert rec["average_time_per_image"] is None and rec["warnings"] == b19["warnings"]
    assert _strict_json(out / "empty_lmo-test" / "scores_ad.json")["recall"] == 0.0


def test_cli_empty_file_is_scored_with_one_warning(root, tmp_path):
    csv = tmp_path / "empty_lmo-test.csv"
    csv.write_text(HEADER + "\n")
    r = _bopkd("score", str(csv), "--root", str(root), "--out", str(tmp_path / "o"), "--protocol", "all")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == [f"warning: {csv}: " + warnings[0].split(f"{csv}: ", 1)[1]]
    assert "no estimates after the header" in warnings[0]
    assert (tmp_path / "o" / "empty_lmo-test" / "scores_bop24.json").is_file()
