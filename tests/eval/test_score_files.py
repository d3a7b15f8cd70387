"""A result's score folder is one set: concurrent ``bopkd score`` runs and a run killed mid-write never leave
files of two runs mixed, or part of a set (bopkd.eval.score_files, bopkd.utils.atomic.replace_folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

NAME = "few_lmo-test"

#: Runs ``bopkd`` with a pause while the score files are being written (inside ``recall_rows``, which the
#: writer calls after ``scores_bop19.json`` and ``scores_ad.json`` and before ``recalls.csv``).
SLOW_BOPKD = """
import sys, time
import bopkd.eval.scores_io as scores_io
from bopkd.cli import main

delay, rows = float(sys.argv[1]), scores_io.recall_rows

def slow(metrics):
    print("WRITING", flush=True)
    time.sleep(delay)
    return rows(metrics)

scores_io.recall_rows = slow
sys.argv = ["bopkd", *sys.argv[2:]]
main()
"""


def _start(delay: float, csv: Path, root: Path, out: Path, metrics: str) -> subprocess.Popen:
    args = [str(delay), "score", str(csv), "--root", str(root), "--out", str(out), "--metrics", metrics]
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_BOPKD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_while_writing(p: subprocess.Popen) -> None:
    for line in p.stdout:
        if line.startswith("WRITING"):
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def inputs(oracle_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "lmo").symlink_to(oracle_root / "lmo")
    lines = (oracle_root / "results" / "gtcheck_lmo-test.csv").read_text().splitlines(keepends=True)
    return root, lines


def test_killed_run_leaves_the_previous_set_or_none(inputs, tmp_path):
    root, lines = inputs
    csv, out = tmp_path / f"{NAME}.csv", tmp_path / "out"
    dest = out / NAME
    csv.write_text("".join(lines[:4]))
    _kill_while_writing(_start(60, csv, root, out, "bop19,ad"))
    assert not dest.exists()  # the first run died: no folder, not a partial one

    first = _start(0, csv, root, out, "bop19,ad")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    before = _files(dest)
    assert set(before) == {"scores_bop19.json", "scores_ad.json", "recalls.csv", "scores_bopkd.json"}

    csv.write_text("".join(lines[:8]))  # another file of the same name: other scores
    _kill_while_writing(_start(60, csv, root, out, "bop19,ad"))
    assert _files(dest) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(f".{NAME}.")]  # the dead run's staging folder

    last = _start(0, csv, root, out, "bop19,ad")
    assert last.wait(timeout=120) == 0, last.stderr.read()
    after = _files(dest)
    assert set(after) == set(before) and after["scores_bop19.json"] != before["scores_bop19.json"]
    assert sorted(p.name for p in out.iterdir()) == [NAME]  # staging folders of dead runs removed


def test_concurrent_runs_leave_one_complete_set(inputs, tmp_path):
    """Two runs of one file into one folder, with ADD(-S) and with ADI: the folder holds one run's set."""
    import csv as csv_module
    import json

    root, lines = inputs
    csv, out = tmp_path / f"{NAME}.csv", tmp_path / "out"
    csv.write_text("".join(lines[:4]))
    runs = [_start(2.0, csv, root, out, "bop19,ad"), _start(0.5, csv, root, out, "bop19,adi")]
    for p in runs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    files = _files(out / NAME)
    (kind,) = {"ad", "adi"} & {n.removeprefix("scores_").removesuffix(".json") for n in files}
    assert set(files) == {"scores_bop19.json", f"scores_{kind}.json", "recalls.csv", "scores_bopkd.json"}
    record = json.loads(files["scores_bopkd.json"])
    assert set(record["ad_recall_th0.1"]) == {kind}
    assert json.loads(files[f"scores_{kind}.json"])["error"] == kind
    rows = list(csv_module.DictReader(files["recalls.csv"].decode().splitlines()))
    assert {r["metric"] for r in rows} == {"vsd", "mssd", "mspd", kind}
    scores = json.loads(files["scores_bop19.json"])
    assert scores["bop19_average_time_per_image"] == record["average_time_per_image"]
    assert sorted(p.name for p in out.iterdir()) == [NAME]


def test_other_protocols_and_foreign_files_are_kept(tmp_path, monkeypatch):
    """A BOP'19 run replaces the BOP'19 set (a stale scores_adi.json goes) and keeps BOP'24 and other files."""
    import bopkd.eval.scores_io as scores_io
    from bopkd.eval.score_files import publish_scores

    dest = tmp_path / NAME
    dest.mkdir()
    for n in ("scores_adi.json", "scores_bop24.json", "scores_bop_toolkit.json"):
        (dest / n).write_text("{}\n")

    def write(res, folder):
        paths = [folder / "scores_bop19.json", folder / "scores_ad.json"]
        for p in paths:
            p.write_text("new")
        return paths

    monkeypatch.setattr(scores_io, "write_bop19_files", write)
    files = publish_scores(tmp_path, NAME, bop19={})
    assert files == {"bop19": [dest / "scores_bop19.json", dest / "scores_ad.json"]}
    assert sorted(p.name for p in dest.iterdir()) == [
        "scores_ad.json",
        "scores_bop19.json",
        "scores_bop24.json",
        "scores_bop_toolkit.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_a_file_in_the_way_is_one_line_error(tmp_path):
    from bopkd.errors import BopkdError
    from bopkd.utils.atomic import replace_folder

    (tmp_path / NAME).write_text("x")
    with (
        pytest.raises(BopkdError, match=f"{NAME}: a file is where the output folder goes"),
        replace_folder(tmp_path / NAME),
    ):
        pass
    assert (tmp_path / NAME).read_text() == "x"
