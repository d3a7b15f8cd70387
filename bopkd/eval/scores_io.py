"""Score files written by ``bopkd score`` (engine ``bopkd``), and the terminal table.

Per result file, in ``OUT/<result name>/`` (the layout :mod:`bopkd.eval.toolkit_engine` writes for the
official toolkit, so ``bopkd report`` reads either), written together as one set (a reader never sees
files of two runs mixed: :func:`bopkd.eval.score_files.publish_scores`):

- ``scores_bop19.json``: the toolkit's keys (``bop19_average_recall``, ``bop19_average_recall_vsd``,
  ``..._mssd``, ``..._mspd``, ``bop19_average_time_per_image``) plus ``"engine": "bopkd"``; without depth
  images ``..._vsd`` and ``bop19_average_recall`` are null and ``bop19_average_recall_mssd_mspd`` is added.
- ``scores_ad.json`` (and ``scores_adi.json``, ``scores_add.json`` when asked): the toolkit's
  ``score.calc_localization_scores`` dict at 0.1 of the diameter (``recall``, ``obj_recalls``,
  ``mean_obj_recall``, ``scene_recalls``, ``mean_scene_recall``, ``gt_count``, ``targets_count``,
  ``tp_count``) plus ``obj_tp_counts``, ``obj_targets_counts``, ``threshold``, ``engine``.
- ``recalls.csv``: ``metric, obj_id, tau, threshold, tp, n_targets, recall``: one row per object and
  per threshold (and tau for VSD), plus ``obj_id = all`` rows with the totals.
- ``scores_bopkd.json``: a summary record (as ``scores_bop_toolkit.json`` of the toolkit engine):
  ``scores`` (AR, AR_VSD, AR_MSSD, AR_MSPD, ADD(-S)_0.1d, ADI_0.1d, ADD_0.1d), ``recall_per_threshold``
  keyed by the toolkit's error signatures and ``"%.3f"`` thresholds, notes and timings.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

ENGINE = "bopkd"
RECALL_COLUMNS = ["metric", "obj_id", "tau", "threshold", "tp", "n_targets", "recall"]


def _recall(tp: int, n: int) -> float:
    return int(tp) / float(n) if n else 0.0


def localization_scores(m, variant: int = 0, th_index: int = 0) -> dict:
    """``score.calc_localization_scores`` of one metric at one threshold (see the module doc)."""
    tp_obj = m.tp[variant, th_index]
    obj_recalls = {int(o): _recall(tp_obj[k], m.n_targets[k]) for k, o in enumerate(m.obj_ids)}
    tp_sc = m.tp_scene[variant, th_index]
    scene_recalls = {
        int(s): float(_recall(tp_sc[k], m.n_targets_scene[k])) for k, s in enumerate(m.scene_ids)
    }
    tps, tars = int(tp_obj.sum()), int(m.n_targets.sum())
    return {
        "recall": float(_recall(tps, tars)),
        "obj_recalls": obj_recalls,
        "mean_obj_recall": float(np.mean(list(obj_recalls.values()))),
        "scene_recalls": scene_recalls,
        "mean_scene_recall": float(np.mean(list(scene_recalls.values()))),
        "targets_count": tars,
        "tp_count": tps,
        "obj_tp_counts": {int(o): int(tp_obj[k]) for k, o in enumerate(m.obj_ids)},
        "obj_targets_counts": {int(o): int(m.n_targets[k]) for k, o in enumerate(m.obj_ids)},
    }


def recall_per_threshold(metrics: dict) -> dict[str, dict[str, float]]:
    """``{error signature: {"%.3f" threshold: recall}}``, as the toolkit's score files are named."""
    out: dict[str, dict[str, float]] = {}
    for m in metrics.values():
        rec = m.recalls()
        for v, sign in enumerate(m.error_signs()):
            out[sign] = {f"{th:.3f}": float(rec[v, k]) for k, th in enumerate(m.thresholds)}
    return out


def recall_rows(metrics: dict) -> list[dict]:
    """Rows of ``recalls.csv`` (per object, then ``all``)."""
    rows = []
    for m in metrics.values():
        taus = m.taus if m.taus is not None else [None]
        for v, tau in enumerate(taus):
            for k, th in enumerate(m.thresholds):
                for j, o in enumerate(m.obj_ids):
                    tp, n = int(m.tp[v, k, j]), int(m.n_targets[j])
                    rows.append(_row(m.name, o, tau, th, tp, n))
                rows.append(_row(m.name, "all", tau, th, int(m.tp[v, k].sum()), int(m.n_targets.sum())))
    return rows


def _row(metric, obj, tau, th, tp, n) -> dict:
    return {
        "metric": metric,
        "obj_id": obj,
        "tau": "" if tau is None else f"{float(tau):.3f}",
        "threshold": f"{float(th):g}",
        "tp": tp,
        "n_targets": n,
        "recall": repr(_recall(tp, n)),
    }


def summary(res: dict) -> dict:
    """Headline scores: AR, AR_VSD, AR_MSSD, AR_MSPD, ADD(-S)_0.1d, ADI_0.1d, ADD_0.1d (None if not computed)."""
    b = res.get("scores_bop19") or {}
    m = res["metrics"]

    def ad(k):
        return float(m[k].recalls()[0, 0]) if k in m else None

    return {
        "AR": b.get("bop19_average_recall"),
        "AR_VSD": b.get("bop19_average_recall_vsd"),
        "AR_MSSD": b.get("bop19_average_recall_mssd"),
        "AR_MSPD": b.get("bop19_average_recall_mspd"),
        "ADD(-S)_0.1d": ad("ad"),
        "ADI_0.1d": ad("adi"),
        "ADD_0.1d": ad("add"),
    }


def write_outputs(res: dict, out_dir: str | Path) -> list[Path]:
    """Write the score files of one scored result into ``out_dir/<result name>/`` as one set (see
    :func:`bopkd.eval.score_files.publish_scores`); returns their paths."""
    from bopkd.eval.score_files import publish_scores

    return publish_scores(out_dir, res["result_name"], bop19=res)["bop19"]


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_bop19_files(res: dict, dest: Path) -> list[Path]:
    """Write the score files of one scored result into the folder ``dest``; returns their paths."""
    from bopkd.eval.naming import parse_result_name

    name = parse_result_name(res["result_name"])
    written: list[Path] = []
    if "scores_bop19" in res:
        written.append(dest / "scores_bop19.json")
        _write_json(written[-1], {**res["scores_bop19"], "engine": ENGINE})
    ad = {}
    for k in ("ad", "adi", "add"):
        if k in res["metrics"]:
            s = localization_scores(res["metrics"][k])
            s["gt_count"] = res["gt_count"]
            ad[k] = {"recall": s["recall"], "tp_count": s["tp_count"], "targets_count": s["targets_count"]}
            written.append(dest / f"scores_{k}.json")
            _write_json(written[-1], {**s, "threshold": 0.1, "error": k, "engine": ENGINE})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RECALL_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(recall_rows(res["metrics"]))
    written.append(dest / "recalls.csv")
    written[-1].write_text(buf.getvalue(), encoding="utf-8")
    record = {
        "engine": ENGINE,
        "result_name": res["result_name"],
        "method": name.method,
        "dataset": name.dataset,
        "split": name.split,
        "split_type": name.split_type,
        "file": res["csv"],
        "scores": summary(res),
        "average_time_per_image": res["average_time_per_image"],
        "scores_bop19": res.get("scores_bop19"),
        "recall_per_threshold": recall_per_threshold(res["metrics"]),
        "ad_recall_th0.1": ad,
        "counts": {
            "estimates": res["n_estimates"],
            "evaluated": res["n_evaluated"],
            "targets": res["n_targets"],
        },
        "notes": res["notes"],
        "warnings": res.get("warnings", []),
        "timings_s": res["timings"],
    }
    written.append(dest / "scores_bopkd.json")
    _write_json(written[-1], record)
    return written


def table(results: dict[str, dict]):
    """A rich table of the headline scores of several scored results."""
    from rich.table import Table

    t = Table(title="BOP scores (bopkd engine; AR = mean of VSD, MSSD, MSPD; 0.1d = 10 % of the diameter)")
    cols = {
        "AR": "AR",
        "AR_VSD": "VSD",
        "AR_MSSD": "MSSD",
        "AR_MSPD": "MSPD",
        "ADD(-S)_0.1d": "ADD(-S)",
        "ADI_0.1d": "ADI",
        "ADD_0.1d": "ADD",
    }
    present = [c for c in cols if any(summary(r)[c] is not None for r in results.values())]
    t.add_column("result", overflow="fold")
    for c in present:
        t.add_column(cols[c], justify="right")
    t.add_column("s/img", justify="right")
    t.add_column("targets", justify="right")
    for name, r in results.items():
        s = summary(r)
        row = [name] + ["-" if s[c] is None else f"{s[c]:.4f}" for c in present]
        tpi = r["average_time_per_image"]  # None for a file without estimates
        row += ["-" if tpi is None or tpi < 0 else f"{tpi:.3f}", str(r["n_targets"])]
        t.add_row(*row)
    return t
