"""The comparison table: one row per model configuration (teacher, each student backbone x method x
settings, :mod:`bopkd.report.settings`), seeds aggregated.

Accuracy columns are recalls in percent (mean and, with several seeds, sample standard deviation over seeds,
``ddof=1``); ``gain`` columns are the mean paired difference to the direct student (``kd = none``) with the
same other settings over their common seeds, in percentage points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bopkd.report.stats import has_dense, paired_differences, row_order

METRICS = ["AR", "AR_VSD", "AR_MSSD", "AR_MSPD", "AR_MSSD_MSPD", "ADD(-S)-0.1d"]
#: Shown only when some submission has it (test splits without depth: VSD and the full AR are undefined).
OPTIONAL_METRICS = ("AR_MSSD_MSPD",)


def gain_metrics(t: pd.DataFrame) -> list[str]:
    """Metrics with a ``gain`` column: AR (or AR_MSSD_MSPD when AR is undefined) and ADD(-S)-0.1d."""
    ms = ["AR"]
    if "AR_MSSD_MSPD" in t and pd.to_numeric(t["AR_MSSD_MSPD"], errors="coerce").notna().any():
        ms.append("AR_MSSD_MSPD")
    return [*ms, "ADD(-S)-0.1d"]


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per-submission rows (:func:`bopkd.report.collect.results_frame`) over seeds.

    Returns a frame with one row per row key (every training setting but the seed,
    :mod:`bopkd.report.settings`): ``model`` (the row label), ``seeds``, ``<metric>`` mean and ``<metric> std``
    (percent), per-object ADD(-S) and AR means (``ADD(-S) obj k``, ``AR obj k``), ``params``, ``MACs``,
    ``ms/image`` (the architecture's, :mod:`bopkd.report.speed`), ``predict ms/image``, ``FPS``, ``device``,
    ``protocol``, and ``gain <metric>``: the mean paired difference to the direct-training row (``kd = none``)
    with the same other settings over the seeds both have (:func:`bopkd.report.stats.paired_differences`,
    which also gives its interval); 0 for direct training, NaN without a direct row.
    """
    obj_cols = [c for c in runs.columns if c.startswith(("ADD(-S) obj ", "AR obj "))]
    value_cols = [c for c in METRICS + obj_cols if c in runs.columns]
    num = runs.copy()
    for c in value_cols:
        num[c] = pd.to_numeric(num[c], errors="coerce") * 100.0
    for c in ("params", "MACs", "ms/image", "predict ms/image"):
        num[c] = pd.to_numeric(num.get(c), errors="coerce")
    rows = []
    for key, g in num.groupby("row_key", sort=False, dropna=False):
        row = {c: g[c].iloc[0] for c in ("model", "role", "backbone", "kd", "base_key", "family") if c in g}
        row.update(row_key=key, seeds=len(g))
        for c in value_cols:
            vals = g[c].dropna()
            row[c] = vals.mean() if len(vals) else np.nan
            row[f"{c} std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
        for c in ("params", "MACs", "ms/image", "predict ms/image"):
            # one value per architecture (ms/image) or identical per run (params, MACs)
            row[c] = float(g[c].dropna().median()) if g[c].notna().any() else np.nan
        row["FPS"] = 1000.0 / row["ms/image"] if row["ms/image"] > 0 else np.nan
        row["device"] = next((d for d in g["device"] if isinstance(d, str)), "")
        row["protocol"] = next((p for p in g["protocol"] if isinstance(p, str)), "")
        rows.append(row)
    t = pd.DataFrame(rows)
    paired = paired_differences(runs).set_index(["model", "metric"])
    for m in gain_metrics(t):
        if m not in t:
            t[m] = np.nan
        t[f"gain {m}"] = [
            paired.loc[(r["model"], m), "mean diff"] if (r["model"], m) in paired.index else np.nan
            for _, r in t.iterrows()
        ]
        t.loc[(t["role"] == "student") & (t["kd"] == "none"), f"gain {m}"] = 0.0
    return row_order(t)


def _fmt(mean: float, std: float | None, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    s = f"{mean:.{digits}f}"
    if std is not None and not np.isnan(std):
        s += f" ± {std:.{digits}f}"
    return s


def _human(n: float, unit: str = "") -> str:
    if n is None or np.isnan(n):
        return "–"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def display_table(t: pd.DataFrame, per_object: bool = True) -> pd.DataFrame:
    """Formatted strings for Markdown, LaTeX and HTML: ``mean ± std`` in percent, sizes humanised; the
    per-object columns are ADD(-S)-0.1d (``ADD(-S) obj k``)."""
    out = pd.DataFrame({"model": t["model"], "seeds": t["seeds"]})
    if has_dense(t):
        out.insert(1, "family", t["family"])
    for m in METRICS:
        if m in OPTIONAL_METRICS and (m not in t or not pd.to_numeric(t[m], errors="coerce").notna().any()):
            continue
        if m in t:
            out[m] = [_fmt(a, b) for a, b in zip(t[m], t.get(f"{m} std", [np.nan] * len(t)), strict=True)]
    for m in gain_metrics(t):
        out[f"gain {m}"] = ["–" if np.isnan(g) else f"{g:+.1f}" for g in t[f"gain {m}"].astype(float)]
    if per_object:
        for c in [c for c in t.columns if c.startswith("ADD(-S) obj ") and not c.endswith(" std")]:
            out[c] = [_fmt(v, None) for v in t[c]]
    out["params"] = [_human(v) for v in t["params"].astype(float)]
    out["MACs"] = [_human(v) for v in t["MACs"].astype(float)]
    out["ms/image"] = [_fmt(v, None, 2) for v in t["ms/image"].astype(float)]
    out["FPS"] = [_fmt(v, None, 1) for v in t["FPS"].astype(float)]
    if "predict ms/image" in t:
        out["predict ms/image"] = [_fmt(v, None, 2) for v in t["predict ms/image"].astype(float)]
    out["device"] = t["device"]
    return out
