"""Score result files with the official BOP toolkit (``bopkd score --engine bop_toolkit``).

The toolkit (github.com/thodan/bop_toolkit) is not a dependency of bopkd: it pins ``numpy<2`` and needs
vispy/OpenGL for VSD. A user who has it tells bopkd where it is:

- ``BOPKD_TOOLKIT_PYTHON`` (or ``--toolkit-python``): a python that can ``import bop_toolkit_lib``;
- ``BOPKD_TOOLKIT_PATH`` (or ``--toolkit-path``): the toolkit checkout, with ``scripts/eval_bop19_pose.py``
  (found from the python's ``bop_toolkit_lib`` when the toolkit is installed editable).

Each result file is copied into a temporary ``results/`` folder and the toolkit's own scripts run there
as subprocesses (argument lists, never a shell) with ``BOP_PATH``, ``BOP_RESULTS_PATH`` and
``BOP_EVAL_PATH`` set (``bop_toolkit_lib/config.py`` reads them):

- ``scripts/eval_bop19_pose.py`` (BOP'19 6D localization: AR = mean of AR_VSD, AR_MSSD, AR_MSPD) when the
  test split has depth; without depth VSD cannot be computed, and the MSSD and MSPD recalls are computed
  with ``eval_calc_errors.py`` + ``eval_calc_scores.py`` using the arguments ``eval_bop19_pose.py`` passes
  (n_top -1, visib_gt_min -1, thresholds 0.05..0.5 d and 5..50 px) and averaged as it does;
- ``eval_calc_errors.py --error_type=ad|adi`` + ``eval_calc_scores.py --correct_th_ad=0.1`` for ADD(-S) and
  ADI recall at 0.1 d (Hinterstoisser et al., ACCV 2012; Hodan et al., ECCVW 2016).

``eval_bop19_pose.py`` starts its sub-scripts as ``python ...``, so the toolkit python's folder goes first on
``PATH`` (with a small ``python`` launcher when that folder has none). Without a display, ``EGL_PLATFORM`` is
set to ``surfaceless`` (unless already set) so that the vispy/EGL renderer of VSD works headless with Mesa. The toolkit's ``scores_bop19.json``
and every ``scores_th=*.json`` it wrote are read back and converted by :func:`convert_scores` into one JSON
per result file with ``"engine": "bop_toolkit"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError
from bopkd.eval.naming import ResultName, parse_result_name
from bopkd.utils.atomic import atomic_write_json, atomic_write_text

ENV_PYTHON = "BOPKD_TOOLKIT_PYTHON"
ENV_PATH = "BOPKD_TOOLKIT_PATH"
TARGETS_FILE = "test_targets_bop19.json"
ENGINE = "bop_toolkit"

#: Correctness thresholds of BOP'19, as ``scripts/eval_bop19_pose.py`` builds them.
MSSD_THRESHOLDS = [float(th) for th in np.arange(0.05, 0.51, 0.05)]
MSPD_THRESHOLDS = [float(th) for th in np.arange(5, 51, 5)]
#: ADD(-S)/ADI correctness threshold, fraction of the object diameter.
AD_THRESHOLD = 0.1

_INSTALL_HINT = (
    f"install the toolkit (git clone https://github.com/thodan/bop_toolkit; python3.11 -m venv VENV; "
    f"VENV/bin/pip install -e bop_toolkit) and set {ENV_PYTHON}=VENV/bin/python and {ENV_PATH}=bop_toolkit, "
    f"or score with the default --engine bopkd"
)


@dataclass(frozen=True)
class ToolkitInstall:
    """Where the official toolkit is: its python, its checkout, and the checkout's commit (when a git repo)."""

    python: str
    path: Path
    commit: str | None = None

    def script(self, name: str) -> Path:
        return self.path / "scripts" / name


def _probe(python: str) -> str:
    """Ask ``python`` where ``bop_toolkit_lib`` is; BopkdError when it cannot import it."""
    code = "import os, bop_toolkit_lib as b; print(os.path.dirname(os.path.dirname(os.path.abspath(b.__file__))))"
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BopkdError(f"{ENV_PYTHON}={python}: cannot run it ({e}); {_INSTALL_HINT}") from None
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise BopkdError(f"{ENV_PYTHON}={python}: cannot import bop_toolkit_lib ({last}); {_INSTALL_HINT}")
    return r.stdout.strip().splitlines()[-1]


def _git_commit(path: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        r = subprocess.run(
            [git, "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
        if r.returncode == 0:
            return r.stdout.strip()
    return None


def find_toolkit(python: str | Path | None = None, path: str | Path | None = None) -> ToolkitInstall:
    """Locate the toolkit from the arguments or ``BOPKD_TOOLKIT_PYTHON`` / ``BOPKD_TOOLKIT_PATH``.

    Raises :class:`BopkdError` naming what is missing and how to install it.
    """
    python = str(python or os.environ.get(ENV_PYTHON) or "")
    if not python:
        raise BopkdError(
            f"--engine bop_toolkit needs {ENV_PYTHON} (a python that imports bop_toolkit_lib); {_INSTALL_HINT}"
        )
    exe = shutil.which(python)
    if exe is None:
        raise BopkdError(f"{ENV_PYTHON}={python}: no such executable; {_INSTALL_HINT}")
    # keep the path as given (a venv's python may be a symlink whose location selects the venv)
    python = str(Path(python).absolute()) if os.sep in python else exe
    lib_parent = _probe(python)
    path = path or os.environ.get(ENV_PATH) or lib_parent
    tk = Path(path).expanduser().absolute()
    if not (tk / "scripts" / "eval_bop19_pose.py").is_file():
        raise BopkdError(
            f"{tk / 'scripts' / 'eval_bop19_pose.py'} not found: set {ENV_PATH} to the bop_toolkit checkout (the folder "
            f"with scripts/); {_INSTALL_HINT}"
        )
    return ToolkitInstall(python=python, path=tk, commit=_git_commit(tk))


# --------------------------------------------------------------------------------------------- running


class _Runner:
    """Runs toolkit scripts with the BOP_* environment, appending their output to a log file."""

    def __init__(
        self, tk: ToolkitInstall, root: Path, work: Path, log: Path, num_workers: int, timeout: float | None
    ):
        self.tk = tk
        self.results = work / "results"
        self.eval = work / "eval"
        self.results.mkdir(parents=True, exist_ok=True)
        self.eval.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timeout = timeout
        self.num_workers = num_workers
        bindir = Path(tk.python).parent
        if not (bindir / "python").exists():
            # eval_bop19_pose.py runs its sub-scripts as "python": give it one that is the toolkit's python.
            bindir = work / "bin"
            bindir.mkdir(exist_ok=True)
            shim = bindir / "python"
            shim.write_text(f'#!/bin/sh\nexec "{tk.python}" "$@"\n')
            shim.chmod(0o755)
        self.env = {
            **os.environ,
            "BOP_PATH": str(root.absolute()),
            "BOP_RESULTS_PATH": str(self.results),
            "BOP_EVAL_PATH": str(self.eval),
            "BOP_NUM_WORKERS": str(num_workers),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("PYTHONPATH", None)  # bopkd's environment must not leak into the toolkit's python
        if not os.environ.get("DISPLAY") and "EGL_PLATFORM" not in os.environ:
            # Headless: the toolkit's vispy renderer uses EGL; Mesa needs the surfaceless platform without a
            # display ("Could not import backend EGL: Could not initialize" otherwise).
            self.env["EGL_PLATFORM"] = "surfaceless"

    def __call__(self, script: str, args: list[str], what: str) -> None:
        cmd = [self.tk.python, str(self.tk.script(script)), *args]
        with open(self.log, "a", encoding="utf-8") as logf:
            logf.write("$ " + " ".join(cmd) + "\n")
            logf.flush()
            try:
                r = subprocess.run(
                    cmd,
                    cwd=self.tk.path,
                    env=self.env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BopkdError(
                    f"bop_toolkit {script} ({what}) ran past {self.timeout:.0f} s; see {self.log}; raise --timeout"
                ) from None
        if r.returncode != 0:
            raise BopkdError(
                f"bop_toolkit {script} ({what}) failed with exit {r.returncode}: {_last_error(self.log)}; see {self.log}"
            )


def _last_error(log: Path) -> str:
    lines = [
        ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
    ]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _errors_and_scores(
    run: _Runner, name: ResultName, error_type: str, thresholds: list[float], renderer_type: str
) -> None:
    """``eval_calc_errors.py`` then ``eval_calc_scores.py`` per threshold, as ``eval_bop19_pose.py`` calls them."""
    run(
        "eval_calc_errors.py",
        [
            "--n_top=-1",
            f"--error_type={error_type}",
            f"--result_filenames={name.filename}",
            f"--renderer_type={renderer_type}",
            f"--results_path={run.results}",
            f"--eval_path={run.eval}",
            f"--targets_filename={TARGETS_FILE}",
            "--max_sym_disc_step=0.01",
            "--skip_missing=1",
            f"--num_workers={run.num_workers}",
        ],
        f"{error_type} errors",
    )
    for th in thresholds:
        run(
            "eval_calc_scores.py",
            [
                f"--error_dir_paths={name}/error={error_type}_ntop=-1",
                f"--eval_path={run.eval}",
                f"--targets_filename={TARGETS_FILE}",
                "--visib_gt_min=-1",
                f"--correct_th_{error_type}={th}",
            ],
            f"{error_type} scores at {th}",
        )


def read_toolkit_eval(eval_dir: Path, name: ResultName) -> dict:
    """Collect what the toolkit wrote under ``eval_dir/RESULT_NAME``.

    Returns ``{"scores_bop19": dict | None, "recall_per_threshold": {error_sign: {"%.3f" th: recall}},
    "scores_per_threshold": {error_sign: {th: full scores dict}}}``.
    """
    base = eval_dir / str(name)
    out: dict = {"scores_bop19": None, "recall_per_threshold": {}, "scores_per_threshold": {}}
    p = base / "scores_bop19.json"
    if p.is_file():
        out["scores_bop19"] = json.loads(p.read_text())
    if base.is_dir():
        for d in sorted(base.iterdir()):
            if not (d.is_dir() and d.name.startswith("error=")):
                continue
            for f in sorted(d.glob("scores_th=*.json")):
                # scores_th=0.050_min-visib=-1.000.json -> "0.050" (misc.get_score_signature)
                th = f.name.removeprefix("scores_th=").split("_min-visib=")[0]
                s = json.loads(f.read_text())
                out["recall_per_threshold"].setdefault(d.name, {})[th] = float(s["recall"])
                out["scores_per_threshold"].setdefault(d.name, {})[th] = s
    return out


def _mean_recall(rpt: dict, prefix: str) -> float | None:
    vals = [r for sign, ths in rpt.items() if sign.startswith(prefix) for r in ths.values()]
    return float(np.mean(vals)) if vals else None


def convert_scores(
    name: ResultName,
    raw: dict,
    tk: ToolkitInstall | None = None,
    renderer_type: str = "",
    csv: Path | None = None,
) -> dict:
    """The toolkit's outputs (:func:`read_toolkit_eval`) -> bopkd's score record, ``"engine": "bop_toolkit"``.

    ``scores``: ``AR`` (mean of the three ARs, BOP'19), ``AR_VSD``, ``AR_MSSD``, ``AR_MSPD`` (mean recall over
    the thresholds, and over VSD's taus), ``ADD(-S)_0.1d`` and ``ADI_0.1d`` (recall at 0.1 d); None where the
    toolkit did not compute it. ``average_time_per_image`` is the toolkit's (-1 when unknown).
    """
    rpt = raw["recall_per_threshold"]
    b19 = raw.get("scores_bop19") or {}
    ar_vsd = b19.get("bop19_average_recall_vsd", _mean_recall(rpt, "error=vsd_"))
    ar_mssd = b19.get("bop19_average_recall_mssd", _mean_recall(rpt, "error=mssd_"))
    ar_mspd = b19.get("bop19_average_recall_mspd", _mean_recall(rpt, "error=mspd_"))
    ar = b19.get("bop19_average_recall")
    ad = {}
    for et in ("ad", "adi"):
        s = raw["scores_per_threshold"].get(f"error={et}_ntop=-1", {}).get(f"{AD_THRESHOLD:.3f}")
        if s is not None:
            ad[et] = {
                "recall": float(s["recall"]),
                "tp_count": int(s["tp_count"]),
                "targets_count": int(s["targets_count"]),
            }
    notes = []
    if ar is None and ar_vsd is None and ar_mssd is not None:
        notes.append(
            "no depth in the test split: VSD not computed, so no BOP'19 AR; AR_MSSD and AR_MSPD only"
        )
    return {
        "engine": ENGINE,
        "result_name": str(name),
        "method": name.method,
        "dataset": name.dataset,
        "split": name.split,
        "split_type": name.split_type,
        "file": None if csv is None else str(csv),
        "scores": {
            "AR": None if ar is None else float(ar),
            "AR_VSD": None if ar_vsd is None else float(ar_vsd),
            "AR_MSSD": None if ar_mssd is None else float(ar_mssd),
            "AR_MSPD": None if ar_mspd is None else float(ar_mspd),
            "ADD(-S)_0.1d": ad["ad"]["recall"] if "ad" in ad else None,
            "ADI_0.1d": ad["adi"]["recall"] if "adi" in ad else None,
        },
        "average_time_per_image": float(b19["bop19_average_time_per_image"])
        if "bop19_average_time_per_image" in b19
        else None,
        "scores_bop19": raw.get("scores_bop19"),
        "recall_per_threshold": rpt,
        "ad_recall_th0.1": ad,
        "toolkit": {
            "python": None if tk is None else tk.python,
            "path": None if tk is None else str(tk.path),
            "commit": None if tk is None else tk.commit,
            "renderer_type": renderer_type,
        },
        "notes": notes,
    }


def recalls_table(raw: dict) -> list[dict]:
    """Rows of ``recalls.csv``: ``metric, obj_id ("all"), tau, threshold, tp, n_targets, recall``, one per score
    file the toolkit wrote (VSD has one row per tau and threshold)."""
    rows = []
    for sign, ths in raw["scores_per_threshold"].items():
        # error=vsd_ntop=-1_delta=15.000_tau=0.050 / error=mssd_ntop=-1
        metric = sign.removeprefix("error=").split("_ntop=")[0]
        tau = float(sign.split("_tau=")[1]) if "_tau=" in sign else None
        for th, sc in ths.items():
            rows.append(
                {
                    "metric": metric,
                    "obj_id": "all",
                    "tau": tau,
                    "threshold": float(th),
                    "tp": sc.get("tp_count"),
                    "n_targets": sc.get("targets_count"),
                    "recall": float(sc["recall"]),
                }
            )
    return rows


def write_layout(dest_dir: Path, rec: dict, raw: dict) -> list[Path]:
    """Write the score files ``bopkd report`` reads, in ``dest_dir`` (``OUT/RESULT_NAME``).

    ``scores_bop19.json`` (the toolkit's keys plus ``engine``; without depth the VSD and AR entries are None),
    ``scores_ad.json`` and ``scores_adi.json`` (the toolkit's score dict at 0.1 d plus ``engine``) and
    ``recalls.csv`` (:func:`recalls_table`). Returns the paths written.
    """
    import pandas as pd

    sc = rec["scores"]
    b19 = dict(rec["scores_bop19"] or {})
    b19.setdefault("bop19_average_recall_vsd", sc["AR_VSD"])
    b19.setdefault("bop19_average_recall_mssd", sc["AR_MSSD"])
    b19.setdefault("bop19_average_recall_mspd", sc["AR_MSPD"])
    b19.setdefault("bop19_average_recall", sc["AR"])
    b19.setdefault("bop19_average_time_per_image", rec["average_time_per_image"])
    if sc["AR"] is None and sc["AR_MSSD"] is not None and sc["AR_MSPD"] is not None:
        # no VSD (no depth): the official AR is undefined; same extra key as bopkd's engine (scores_io)
        b19["bop19_average_recall_mssd_mspd"] = float(np.mean([sc["AR_MSSD"], sc["AR_MSPD"]]))
    b19["engine"] = ENGINE
    written = [dest_dir / "scores_bop19.json"]
    atomic_write_json(written[-1], b19)
    for et in ("ad", "adi"):
        s = raw["scores_per_threshold"].get(f"error={et}_ntop=-1", {}).get(f"{AD_THRESHOLD:.3f}")
        if s is not None:
            written.append(dest_dir / f"scores_{et}.json")
            atomic_write_json(written[-1], {**s, "threshold": AD_THRESHOLD, "engine": ENGINE})
    rows = recalls_table(raw)
    if rows:
        written.append(dest_dir / "recalls.csv")
        cols = ["metric", "obj_id", "tau", "threshold", "tp", "n_targets", "recall"]
        atomic_write_text(written[-1], pd.DataFrame(rows, columns=cols).to_csv(index=False))
    return written


def output_path(out_dir: str | Path, name: ResultName) -> Path:
    """Where :func:`score_with_toolkit` writes the record of one result file."""
    return Path(out_dir) / str(name) / "scores_bop_toolkit.json"


def score_with_toolkit(
    csv_paths: list[str | Path],
    root: str | Path,
    out_dir: str | Path,
    *,
    python: str | Path | None = None,
    toolkit_path: str | Path | None = None,
    renderer_type: str = "vispy",
    ad: bool = True,
    num_workers: int = 1,
    timeout: float | None = None,
    keep_eval: bool = False,
) -> list[dict]:
    """Score BOP result CSVs with the official toolkit; write and return one record per file.

    Args:
        csv_paths: result files named ``METHOD_DATASET-SPLIT[...].csv``; checked with bopkd's reader first.
        root: folder holding the BOP datasets (the toolkit's ``BOP_PATH``).
        out_dir: records go to ``out_dir/RESULT_NAME/scores_bop_toolkit.json`` (see :func:`output_path`),
            beside them the files ``bopkd report`` reads (:func:`write_layout`: ``scores_bop19.json``,
            ``scores_ad.json``, ``scores_adi.json``, ``recalls.csv``), the toolkit's log ``bop_toolkit.log``,
            and with ``keep_eval`` the toolkit's whole eval folder ``bop_toolkit_eval/``.
        python, toolkit_path: see :func:`find_toolkit`.
        renderer_type: the toolkit's VSD renderer (``vispy``, ``cpp`` or ``python``).
        ad: also compute ADD(-S) and ADI recall at 0.1 d.
        timeout: seconds per toolkit script (None: no limit).
    """
    from bopkd.eval.result_inputs import result_dataset
    from bopkd.eval.submission import average_time_per_image, read_submission_arrays

    tk = find_toolkit(python, toolkit_path)
    root = Path(root).absolute()
    records = []
    for csv in map(Path, csv_paths):
        name = parse_result_name(csv)
        ds = result_dataset(csv, name.dataset, root)
        arrays = read_submission_arrays(csv, obj_ids=ds.obj_ids)  # fail early, with a located message
        if not (ds.path / TARGETS_FILE).is_file():
            raise BopkdError(
                f"missing file {ds.path / TARGETS_FILE}: the toolkit needs it; run: bopkd download {name.dataset}"
            )
        dest = output_path(out_dir, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        log = dest.parent / "bop_toolkit.log"
        atomic_write_text(log, f"# bop_toolkit {tk.path} (commit {tk.commit}) with {tk.python}\n")
        with tempfile.TemporaryDirectory(prefix="bopkd_toolkit_") as tmp:
            run = _Runner(tk, root, Path(tmp), log, num_workers, timeout)
            shutil.copyfile(csv, run.results / name.filename)
            if ds.has_depth(name.split_folder):
                run(
                    "eval_bop19_pose.py",
                    [
                        f"--renderer_type={renderer_type}",
                        f"--result_filenames={name.filename}",
                        f"--results_path={run.results}",
                        f"--eval_path={run.eval}",
                        f"--targets_filename={TARGETS_FILE}",
                        f"--num_workers={num_workers}",
                    ],
                    "BOP'19 VSD, MSSD, MSPD",
                )
            else:
                _errors_and_scores(run, name, "mssd", MSSD_THRESHOLDS, renderer_type)
                _errors_and_scores(run, name, "mspd", MSPD_THRESHOLDS, renderer_type)
            if ad:
                _errors_and_scores(run, name, "ad", [AD_THRESHOLD], renderer_type)
                _errors_and_scores(run, name, "adi", [AD_THRESHOLD], renderer_type)
            raw = read_toolkit_eval(run.eval, name)
            rec = convert_scores(name, raw, tk, renderer_type, csv)
            if rec["average_time_per_image"] is None:  # eval_bop19_pose.py did not run (no depth)
                rec["average_time_per_image"] = average_time_per_image(
                    arrays["scene_id"], arrays["im_id"], arrays["time"]
                )
            if rec["scores_bop19"] is None and ds.has_depth(name.split_folder):
                raise BopkdError(f"bop_toolkit wrote no scores_bop19.json for {csv}; see {log}")
            if keep_eval:
                kept = dest.parent / "bop_toolkit_eval"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(run.eval / str(name), kept)
        write_layout(dest.parent, rec, raw)
        atomic_write_json(dest, rec)
        records.append(rec)
    return records
