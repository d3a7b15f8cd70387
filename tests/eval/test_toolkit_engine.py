"""The official-toolkit engine: plumbing with a stand-in toolkit, conversion against the oracle's toolkit
outputs, and (when BOPKD_TOOLKIT_PYTHON points at a real install) the real toolkit on the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bopkd.errors import BopkdError
from bopkd.eval import toolkit_engine as te
from bopkd.eval.naming import parse_result_name

# A stand-in for bop_toolkit's scripts: records its argv and environment, checks that "python" on PATH is
# the toolkit's python (eval_bop19_pose.py starts its sub-scripts that way), and writes score files in the
# toolkit's layout with recalls given by a formula the test knows.
FAKE_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from pathlib import Path
    import bop_toolkit_lib  # the toolkit python must import it
    script = Path(sys.argv[0]).name
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    rec = {"script": script, "args": args, "cwd": os.getcwd(),
           "env": {k: os.environ.get(k) for k in ("BOP_PATH", "BOP_RESULTS_PATH", "BOP_EVAL_PATH", "EGL_PLATFORM",
                                                   "BOP_NUM_WORKERS")}}
    with open(os.environ["FAKE_TK_LOG"], "a") as f:
        f.write(json.dumps(rec) + "\\n")
    if os.environ.get("FAKE_TK_FAIL") == script:
        print("ValueError: fake failure in " + script, file=sys.stderr)
        sys.exit(3)
    ev = Path(os.environ["BOP_EVAL_PATH"])
    def recall(error_type, th):
        return round({"mssd": 2 * th, "mspd": th / 50, "vsd": th, "ad": 0.25, "adi": 0.75}[error_type] * 0.9, 6)
    if script == "eval_bop19_pose.py":
        out = subprocess.run(["python", "-c", "import bop_toolkit_lib, sys; print(sys.executable)"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip(), "python on PATH must import bop_toolkit_lib"
        name = args["result_filenames"].rsplit(".", 1)[0]
        base = ev / name
        for et, ths in (("mssd", [0.05, 0.1]), ("mspd", [5, 10])):
            d = base / f"error={et}_ntop=-1"
            d.mkdir(parents=True, exist_ok=True)
            for th in ths:
                (d / f"scores_th={th:.3f}_min-visib=-1.000.json").write_text(json.dumps({"recall": recall(et, th)}))
        (base / "scores_bop19.json").write_text(json.dumps({
            "bop19_average_recall_vsd": 0.3, "bop19_average_recall_mssd": 0.4, "bop19_average_recall_mspd": 0.5,
            "bop19_average_recall": 0.4, "bop19_average_time_per_image": 0.07}))
    elif script == "eval_calc_errors.py":
        name = args["result_filenames"].rsplit(".", 1)[0]
        assert (Path(args["results_path"]) / args["result_filenames"]).is_file()
        (ev / name / f"error={args['error_type']}_ntop=-1").mkdir(parents=True, exist_ok=True)
    elif script == "eval_calc_scores.py":
        et = args["error_dir_paths"].split("error=")[1].split("_ntop")[0]
        th = float(args["correct_th_" + et])
        d = ev / args["error_dir_paths"]
        (d / f"scores_th={th:.3f}_min-visib=-1.000.json").write_text(
            json.dumps({"recall": recall(et, th), "tp_count": 3, "targets_count": 4}))
    """
)


@pytest.fixture(scope="module")
def fake_toolkit(tmp_path_factory):
    """A venv whose python imports a stand-in bop_toolkit_lib (via .pth), and a checkout with scripts/."""
    base = tmp_path_factory.mktemp("fake_tk")
    tk = base / "bop_toolkit"
    (tk / "bop_toolkit_lib").mkdir(parents=True)
    (tk / "bop_toolkit_lib" / "__init__.py").write_text("")
    (tk / "scripts").mkdir()
    for s in ("eval_bop19_pose.py", "eval_calc_errors.py", "eval_calc_scores.py"):
        (tk / "scripts" / s).write_text(FAKE_SCRIPT)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "fake_tk.pth").write_text(str(tk) + "\n")
    # a launcher in a folder without a "python": the engine must then provide one on PATH
    other = base / "launcher"
    other.mkdir()
    launcher = other / "tkpy"
    launcher.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" "$@"\n')
    launcher.chmod(0o755)
    return {"tk": tk, "python": venv / "bin" / "python", "launcher": launcher}


def _calls(log: Path) -> list[dict]:
    return [json.loads(ln) for ln in log.read_text().splitlines()]


@pytest.mark.parametrize("which", ["python", "launcher"])
def test_depth_dataset_runs_eval_bop19_pose_and_ad(fake_toolkit, oracle_root, tmp_path, monkeypatch, which):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TK_LOG", str(log))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("EGL_PLATFORM", raising=False)
    monkeypatch.setenv(te.ENV_PYTHON, str(fake_toolkit[which]))
    monkeypatch.setenv(te.ENV_PATH, str(fake_toolkit["tk"]))
    csv = oracle_root / "results" / "synthpert_lmo-test.csv"
    out = tmp_path / "scores"
    [rec] = te.score_with_toolkit([csv], oracle_root, out)

    calls = _calls(log)
    assert [c["script"] for c in calls] == ["eval_bop19_pose.py"] + [
        s for _ in ("ad", "adi") for s in ("eval_calc_errors.py", "eval_calc_scores.py")
    ]
    first = calls[0]
    assert first["args"]["result_filenames"] == "synthpert_lmo-test.csv"
    assert (
        first["args"]["renderer_type"] == "vispy"
        and first["args"]["targets_filename"] == "test_targets_bop19.json"
    )
    assert first["env"]["BOP_PATH"] == str(oracle_root.absolute())
    assert first["env"]["BOP_RESULTS_PATH"] == first["args"]["results_path"]
    assert first["env"]["BOP_EVAL_PATH"] == first["args"]["eval_path"]
    assert first["env"]["EGL_PLATFORM"] == "surfaceless"
    assert Path(first["cwd"]) == fake_toolkit["tk"]
    ad_scores = [c for c in calls if c["script"] == "eval_calc_scores.py"]
    assert [c["args"]["error_dir_paths"] for c in ad_scores] == [
        "synthpert_lmo-test/error=ad_ntop=-1",
        "synthpert_lmo-test/error=adi_ntop=-1",
    ]
    assert ad_scores[0]["args"]["correct_th_ad"] == "0.1" and ad_scores[0]["args"]["visib_gt_min"] == "-1"

    assert rec["engine"] == "bop_toolkit" and rec["result_name"] == "synthpert_lmo-test"
    assert rec["scores"] == {
        "AR": 0.4,
        "AR_VSD": 0.3,
        "AR_MSSD": 0.4,
        "AR_MSPD": 0.5,
        "ADD(-S)_0.1d": 0.225,
        "ADI_0.1d": 0.675,
    }
    assert rec["average_time_per_image"] == 0.07
    assert rec["recall_per_threshold"]["error=mssd_ntop=-1"] == {"0.050": 0.09, "0.100": 0.18}
    assert rec["ad_recall_th0.1"]["ad"] == {"recall": 0.225, "tp_count": 3, "targets_count": 4}
    assert rec["toolkit"]["path"] == str(fake_toolkit["tk"])
    on_disk = json.loads(te.output_path(out, parse_result_name(csv)).read_text())
    assert on_disk == rec
    assert (out / "synthpert_lmo-test" / "bop_toolkit.log").is_file()

    # the files bopkd report reads
    d = out / "synthpert_lmo-test"
    b19 = json.loads((d / "scores_bop19.json").read_text())
    assert b19["engine"] == "bop_toolkit" and b19["bop19_average_recall"] == 0.4
    assert json.loads((d / "scores_ad.json").read_text())["recall"] == 0.225
    recalls = pd.read_csv(d / "recalls.csv")
    assert sorted(recalls["metric"]) == ["ad", "adi", "mspd", "mspd", "mssd", "mssd"]
    assert recalls.set_index(["metric", "threshold"]).loc[("mssd", 0.1), "recall"] == 0.18
    from bopkd.report.collect import load_result

    r = load_result(csv, out)
    assert (r.ar, r.ar_vsd, r.add_01d, r.engine) == (0.4, 0.3, 0.225, "bop_toolkit")


def test_no_depth_dataset_runs_mssd_mspd_per_threshold(fake_toolkit, lmo_sample_root, tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TK_LOG", str(log))
    csv = lmo_sample_root / "results" / "results_lmo-test.csv"
    [rec] = te.score_with_toolkit(
        [csv],
        lmo_sample_root,
        tmp_path / "o",
        python=fake_toolkit["python"],
        toolkit_path=fake_toolkit["tk"],
        ad=False,
    )
    calls = _calls(log)
    assert "eval_bop19_pose.py" not in {c["script"] for c in calls}
    errs = [c for c in calls if c["script"] == "eval_calc_errors.py"]
    assert [c["args"]["error_type"] for c in errs] == ["mssd", "mspd"]
    assert all(c["args"]["n_top"] == "-1" and c["args"]["skip_missing"] == "1" for c in errs)
    ths = [float(c["args"]["correct_th_mssd"]) for c in calls if "correct_th_mssd" in c["args"]]
    assert np.allclose(ths, np.arange(0.05, 0.51, 0.05))
    ths = [float(c["args"]["correct_th_mspd"]) for c in calls if "correct_th_mspd" in c["args"]]
    assert np.allclose(ths, np.arange(5, 51, 5))
    # AR_MSSD/MSPD: mean recall over the 10 thresholds, as eval_bop19_pose.py averages them
    assert rec["scores"]["AR_MSSD"] == pytest.approx(
        np.mean([round(2 * t * 0.9, 6) for t in np.arange(0.05, 0.51, 0.05)])
    )
    assert rec["scores"]["AR_MSPD"] == pytest.approx(
        np.mean([round(t / 50 * 0.9, 6) for t in np.arange(5, 51, 5)])
    )
    assert (
        rec["scores"]["AR"] is None
        and rec["scores"]["AR_VSD"] is None
        and rec["scores"]["ADD(-S)_0.1d"] is None
    )
    assert rec["average_time_per_image"] == -1.0  # the file has no times
    assert any("VSD not computed" in n for n in rec["notes"])
    b19 = json.loads((tmp_path / "o" / "results_lmo-test" / "scores_bop19.json").read_text())
    assert b19["bop19_average_recall"] is None and b19["bop19_average_recall_vsd"] is None
    assert b19["bop19_average_recall_mssd"] == rec["scores"]["AR_MSSD"]
    assert b19["bop19_average_time_per_image"] == -1.0
    assert b19["bop19_average_recall_mssd_mspd"] == pytest.approx(
        (rec["scores"]["AR_MSSD"] + rec["scores"]["AR_MSPD"]) / 2
    )
    assert not (tmp_path / "o" / "results_lmo-test" / "scores_ad.json").exists()


def test_script_failure_is_one_line_with_the_log(fake_toolkit, oracle_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TK_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_TK_FAIL", "eval_calc_errors.py")
    with pytest.raises(BopkdError) as ei:
        te.score_with_toolkit(
            [oracle_root / "results" / "gtcheck_lmo-test.csv"],
            oracle_root,
            tmp_path / "o",
            python=fake_toolkit["python"],
            toolkit_path=fake_toolkit["tk"],
        )
    msg = str(ei.value)
    assert "\n" not in msg and "eval_calc_errors.py" in msg and "exit 3" in msg
    assert "ValueError: fake failure in eval_calc_errors.py" in msg and "bop_toolkit.log" in msg


def test_find_toolkit_errors(fake_toolkit, tmp_path, monkeypatch):
    monkeypatch.delenv(te.ENV_PYTHON, raising=False)
    monkeypatch.delenv(te.ENV_PATH, raising=False)
    with pytest.raises(BopkdError, match="needs BOPKD_TOOLKIT_PYTHON"):
        te.find_toolkit()
    with pytest.raises(BopkdError, match="no such executable"):
        te.find_toolkit(python=tmp_path / "nope")
    with pytest.raises(BopkdError, match="cannot import bop_toolkit_lib"):
        te.find_toolkit(python=sys.executable)  # bopkd's python has no toolkit
    with pytest.raises(BopkdError, match="eval_bop19_pose.py not found"):
        te.find_toolkit(python=fake_toolkit["python"], path=tmp_path)
    # without a path, the checkout is found from the python's bop_toolkit_lib
    found = te.find_toolkit(python=fake_toolkit["python"])
    assert found.path == fake_toolkit["tk"] and found.python == str(fake_toolkit["python"])


def test_convert_scores_matches_the_toolkits_own_averages(oracle_root):
    """From the oracle's recall per threshold, the averages equal the toolkit's scores_bop19.json."""
    for n in ("synthpert", "gtcheck"):
        exp = json.loads((oracle_root / "expected" / f"{n}_lmo-test.json").read_text())
        name = parse_result_name(f"{n}_lmo-test.csv")
        raw = {
            "scores_bop19": None,
            "recall_per_threshold": exp["recall_per_threshold"],
            "scores_per_threshold": {},
        }
        rec = te.convert_scores(name, raw)
        b19 = exp["scores_bop19"]
        for ours, theirs in (("AR_VSD", "vsd"), ("AR_MSSD", "mssd"), ("AR_MSPD", "mspd")):
            assert rec["scores"][ours] == pytest.approx(b19[f"bop19_average_recall_{theirs}"], abs=1e-12)
        full = te.convert_scores(name, {**raw, "scores_bop19": b19})
        assert full["scores"]["AR"] == b19["bop19_average_recall"]
        assert full["average_time_per_image"] == b19["bop19_average_time_per_image"]


def _real_toolkit() -> str:
    py = os.environ.get(te.ENV_PYTHON)
    if not py:
        pytest.skip(f"official bop_toolkit not installed (set {te.ENV_PYTHON} and {te.ENV_PATH})")
    return py


@pytest.mark.slow
def test_real_toolkit_reproduces_the_oracle(oracle_root, tmp_path):
    """The real toolkit through bopkd's wrapper gives the oracle's recorded scores exactly.

    Runs only with BOPKD_TOOLKIT_PYTHON set; the toolkit starts one process per threshold (measured 529 s on
    2 shared cores at load ~10).
    """
    _real_toolkit()
    [rec] = te.score_with_toolkit([oracle_root / "results" / "synthpert_lmo-test.csv"], oracle_root, tmp_path)
    exp = json.loads((oracle_root / "expected" / "synthpert_lmo-test.json").read_text())
    assert rec["scores_bop19"] == exp["scores_bop19"]
    assert {k: v for k, v in rec["recall_per_threshold"].items() if k in exp["recall_per_threshold"]} == exp[
        "recall_per_threshold"
    ]
    assert rec["ad_recall_th0.1"] == exp["ad_recall_th0.1"]


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_real_toolkit_reproduces_the_golden_case(tmp_path):
    """``bopkd score --engine bop_toolkit`` with the real toolkit on tests/golden (in every clone).

    Runs only with BOPKD_TOOLKIT_PYTHON and BOPKD_TOOLKIT_PATH set (tests/golden/README.md says how to
    install the toolkit); about 40 s on 2 cores. The numbers are the ones tests/golden/expected recorded.
    """
    from typer.testing import CliRunner

    from bopkd.cli import app

    _real_toolkit()
    name = "perturbed_lmo-test"
    args = ["score", str(GOLDEN / "results" / f"{name}.csv"), "--root", str(GOLDEN), "--out", str(tmp_path)]
    r = CliRunner().invoke(app, [*args, "--engine", "bop_toolkit"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / name / "scores_bop_toolkit.json").read_text())
    exp = json.loads((GOLDEN / "expected" / f"{name}.json").read_text())
    assert rec["engine"] == "bop_toolkit" and rec["scores_bop19"] == exp["scores_bop19"]
    assert rec["ad_recall_th0.1"] == exp["ad_recall_th0.1"]
    assert {k: v for k, v in rec["recall_per_threshold"].items() if k in exp["recall_per_threshold"]} == exp[
        "recall_per_threshold"
    ]
    assert f"AR {exp['scores_bop19']['bop19_average_recall']:.4f}" in r.output
