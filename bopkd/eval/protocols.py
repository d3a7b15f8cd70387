"""``bopkd score --protocol``: BOP'19 average recall and BOP'24/'25 mAP of result files, their files and tables.

- ``bop19``: :class:`bopkd.eval.scoring.SubmissionScorer` (``eval_bop19_pose.py``; with ``metrics`` also
  ADD(-S)/ADI/ADD), files of :mod:`bopkd.eval.scores_io`.
- ``bop24`` and ``bop25``: :class:`bopkd.eval.bop24_scoring.DetectionScorer` (``eval_bop24_pose.py``, which
  reports both families in one ``scores_bop24.json``: ``bop24_mAP``, ``bop24_mAP_mssd``,
  ``bop24_mAP_mssd_mm``, ``bop24_mAP_mspd``, ``bop25_mAP``, ``bop25_mAP_mm``,
  ``bop24_average_time_per_image``). Either protocol writes that file; they differ in the table columns.
  With ``bop19`` in the same run the MSSD/MSPD errors of the pairs both evaluate are computed once.

Per result file, beside the BOP'19 files in ``OUT/<result name>/``: ``scores_bop24.json`` (the toolkit's
keys + ``"engine": "bopkd"``; a mAP is null when no object has GT to find) and ``aps_bop24.csv``
(``series, obj_id, threshold, ap, n_gt``: AP per object and threshold, ``threshold = mean`` rows with the
mean over thresholds, and ``obj_id = all`` rows with the mAP).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError

PROTOCOLS = ("bop19", "bop24", "bop25")
AP_COLUMNS = ["series", "obj_id", "threshold", "ap", "n_gt"]


def parse_protocols(text: str) -> tuple[str, ...]:
    """``bop19``, ``bop24``, ``bop25``, ``all`` or a comma list of them -> protocols in canonical order."""
    asked = {p.strip().lower() for p in str(text).split(",") if p.strip()}
    if "all" in asked:
        asked = (asked - {"all"}) | set(PROTOCOLS)
    bad = sorted(asked - set(PROTOCOLS))
    if bad or not asked:
        raise BopkdError(
            f"unknown --protocol {', '.join(bad) or repr(text)}; use bop19, bop24, bop25, all or a comma list"
        )
    return tuple(p for p in PROTOCOLS if p in asked)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else repr(float(x))


def ap_rows(series: dict) -> list[dict]:
    """Rows of ``aps_bop24.csv`` (see the module doc)."""
    rows = []
    for s in series.values():
        for j, o in enumerate(s.obj_ids):
            n = int(s.n_gt[j])
            for t, th in enumerate(s.thresholds):
                rows.append(_ap_row(s.name, o, f"{float(th):g}", s.ap[t, j] if n else None, n))
            rows.append(_ap_row(s.name, o, "mean", np.mean(list(s.ap[:, j])) if n else None, n))
        rows.append(_ap_row(s.name, "all", "mean", s.m_ap, int(s.n_gt.sum())))
    return rows


def _ap_row(series, obj, th, ap, n) -> dict:
    return {"series": series, "obj_id": obj, "threshold": th, "ap": _fmt(ap), "n_gt": n}


def write_bop24_files(res: dict, dest: Path) -> list[Path]:
    """Write ``scores_bop24.json`` and ``aps_bop24.csv`` of one result into the folder ``dest``."""
    scores = dest / "scores_bop24.json"
    scores.write_text(
        json.dumps({**res["scores_bop24"], "engine": "bopkd"}, indent=2) + "\n", encoding="utf-8"
    )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=AP_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(ap_rows(res["series"]))
    aps = dest / "aps_bop24.csv"
    aps.write_text(buf.getvalue(), encoding="utf-8")
    return [scores, aps]


def score_protocols(
    csv_paths: Sequence[str | Path],
    root: str | Path,
    out_dir: str | Path = "results/scores",
    protocols: Sequence[str] = ("bop19",),
    metrics: Sequence[str] = ("bop19", "ad"),
    targets_file: str | None = None,
    log: Callable[[str], None] | None = None,
    on_result: Callable[[str, str, dict], None] | None = None,
    workers: int | None = None,
) -> dict[str, dict[str, dict]]:
    """Score result files for the given protocols and write their files (one file at a time; the files
    of all protocols of one result file appear together, see :func:`bopkd.eval.score_files.publish_scores`).

    Args:
        protocols: any of :data:`PROTOCOLS`; metrics: the BOP'19 metrics (``bop19``, ``ad``, ``adi``,
            ``add``), used with ``bop19``; targets_file: the BOP'24 targets file name (see
            :func:`bopkd.eval.bop24_scoring.load_target_images`).
        on_result: called as ``(result name, "bop19" | "bop24", result)`` after each result is written.
        workers: threads of the BOP'19 scoring (:class:`~bopkd.eval.scoring.SubmissionScorer`).

    Returns:
        result name -> ``{"bop19": ..., "bop24": ...}`` (the protocols asked for): the dicts of
        :meth:`SubmissionScorer.run` and :meth:`DetectionScorer.run`, each with ``files``.
    """
    from bopkd.eval.bop24_scoring import DetectionScorer
    from bopkd.eval.score_files import publish_scores
    from bopkd.eval.scoring import SubmissionScorer

    protocols = parse_protocols(",".join(protocols))
    out: dict[str, dict[str, dict]] = {}
    for path in csv_paths:
        sc19 = None
        res: dict[str, dict] = {}
        if "bop19" in protocols:
            sc19 = SubmissionScorer(path, root, metrics, log=log, workers=workers)
            res["bop19"] = sc19.run()
        if "bop24" in protocols or "bop25" in protocols:
            res["bop24"] = DetectionScorer(path, root, targets_file=targets_file, bop19=sc19, log=log).run()
        name = next(iter(res.values()))["result_name"]
        files = publish_scores(out_dir, name, bop19=res.get("bop19"), bop24=res.get("bop24"))
        for family, r in res.items():
            r["files"] = [str(p) for p in files[family]]
            out.setdefault(name, {})[family] = r
            if on_result:
                on_result(name, family, r)
    return out


def table_bop24(results: dict[str, dict], protocols: Sequence[str] = ("bop24", "bop25")):
    """A rich table of BOP'24 (mAP, MSSD, MSPD) and/or BOP'25 (mAP, mAP_mm) scores of several results."""
    from rich.table import Table

    cols = []
    if "bop24" in protocols:
        cols += [("bop24_mAP", "mAP"), ("bop24_mAP_mssd", "MSSD"), ("bop24_mAP_mspd", "MSPD")]
    if "bop25" in protocols:
        cols += [("bop25_mAP", "mAP'25"), ("bop25_mAP_mm", "mm'25")]
    title = ["mAP = mean(MSSD, MSPD)"] if "bop24" in protocols else []
    title += ["mAP'25 = MSSD; mm'25 = MSSD at 2..20 mm"] if "bop25" in protocols else []
    t = Table(title=f"BOP'24/'25 6D detection (bopkd engine): {'; '.join(title)}")
    t.add_column("result", overflow="fold", min_width=16)
    for _, label in cols:
        t.add_column(label, justify="right", no_wrap=True)
    t.add_column("s/img", justify="right", no_wrap=True)
    for name, r in results.items():
        s = r["scores_bop24"]
        row = [name] + ["-" if s[k] is None else f"{s[k]:.4f}" for k, _ in cols]
        tpi = r["average_time_per_image"]  # None for a file without estimates
        t.add_row(*row, "-" if tpi is None or tpi < 0 else f"{tpi:.3f}")
    return t
