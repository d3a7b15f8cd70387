"""The comparison table: one row per model (teacher, each student backbone x method), seeds aggregated.

Accuracy columns are recalls in percent (mean and, with several seeds, standard deviation over seeds,
``ddof=1``); ``gain`` columns are the difference to the direct student (``kd = none``) of the same
backbone, in percentage points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ["AR", "AR_VSD", "AR_MSSD", "AR_MSPD", "AR_MSSD_MSPD", "ADD(-S)-0.1d"]
#: Shown only when some submission has it (test splits without depth: VSD and the full AR are undefined).
OPTIONAL_METRICS = ("AR_MSSD_MSPD",)


def gain_metrics(t: pd.DataFrame) -> list[str]:
    """Metrics with a ``gain`` column: AR (or AR_MSSD_MSPD when AR is undefined) and ADD(-S)-0.1d."""
    ms = ["AR"]
    if "AR_MSSD_MSPD" in t and pd.to_numeric(t["AR_MSSD_MSPD"], errors="coerce").notna().any():
        ms.append("AR_MSSD_MSPD")
    return [*ms, "ADD(-S)-0.1d"]


_KD_ORDER = {"-": 0, "none": 1, "pred": 2, "fkd": 3, "ot": 4, "fkd+ot": 5}


def _order_key(df: pd.DataFrame) -> pd.Series:
    role = df["role"].map({"teacher": 0, "student": 1}).fillna(2)
    kd = df["kd"].map(_KD_ORDER).fillna(9)
    return role * 1000 + kd


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per-submission rows (:func:`bopkd.report.collect.results_frame`) over seeds.

    Returns a frame with one row per (role, backbone, kd): ``seeds``, ``<metric>`` mean and
    ``<metric> std`` (percent), per-object ADD(-S) and AR means (``ADD(-S) obj k``, ``AR obj k``), ``params``, ``MACs``, ``ms/image``, ``FPS``,
    ``device``, ``protocol``, and ``gain AR`` / ``gain ADD(-S)-0.1d`` over the direct student.
    """
    obj_cols = [c for c in runs.columns if c.startswith(("ADD(-S) obj ", "AR obj "))]
    value_cols = [c for c in METRICS + obj_cols if c in runs.columns]
    num = runs.copy()
    for c in value_cols:
        num[c] = pd.to_numeric(num[c], errors="coerce") * 100.0
    for c in ("params", "MACs", "ms/image"):
        num[c] = pd.to_numeric(num.get(c), errors="coerce")
    rows = []
    for (role, backbone, kd), g in num.groupby(["role", "backbone", "kd"], sort=False, dropna=False):
        row = {"model": g["model"].iloc[0], "role": role, "backbone": backbone, "kd": kd, "seeds": len(g)}
        for c in value_cols:
            vals = g[c].dropna()
            row[c] = vals.mean() if len(vals) else np.nan
            row[f"{c} std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
        for c in ("params", "MACs"):
            row[c] = g[c].dropna().iloc[0] if g[c].notna().any() else np.nan
        ms = g["ms/image"].dropna()
        row["ms/image"] = ms.mean() if len(ms) else np.nan
        row["FPS"] = 1000.0 / row["ms/image"] if len(ms) and row["ms/image"] > 0 else np.nan
        row["device"] = next((d for d in g["device"] if isinstance(d, str)), "")
        row["protocol"] = next((p for p in g["protocol"] if isinstance(p, str)), "")
        rows.append(row)
    t = pd.DataFrame(rows)
    for m in gain_metrics(t):
        if m not in t:
            t[m] = np.nan
        base = t[(t["role"] == "student") & (t["kd"] == "none")].set_index("backbone")[m]
        t[f"gain {m}"] = [
            (r[m] - base[r["backbone"]]) if r["role"] == "student" and r["backbone"] in base.index else np.nan
            for _, r in t.iterrows()
        ]
    t = t.iloc[np.argsort(_order_key(t).to_numpy(), kind="stable")].reset_index(drop=True)
    return t


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
    """Formatted strings for Markdown, LaTeX and HTML: ``mean ± std`` in percent, sizes humanised."""
    out = pd.DataFrame({"model": t["model"], "seeds": t["seeds"]})
    for m in METRICS:
        if m in OPTIONAL_METRICS and (m not in t or not pd.to_numeric(t[m], errors="coerce").notna().any()):
            continue
        if m in t:
            out[m] = [_fmt(a, b) for a, b in zip(t[m], t.get(f"{m} std", [np.nan] * len(t)), strict=True)]
    for m in gain_metrics(t):
        out[f"gain {m}"] = ["–" if np.isnan(g) else f"{g:+.1f}" for g in t[f"gain {m}"].astype(float)]
    if per_object:
        for c in [c for c in t.columns if c.startswith("ADD(-S) obj ") and not c.endswith(" std")]:
            out[c.replace("ADD(-S) ", "")] = [_fmt(v, None) for v in t[c]]
    out["params"] = [_human(v) for v in t["params"].astype(float)]
    out["MACs"] = [_human(v) for v in t["MACs"].astype(float)]
    out["ms/image"] = [_fmt(v, None, 2) for v in t["ms/image"].astype(float)]
    out["FPS"] = [_fmt(v, None, 1) for v in t["FPS"].astype(float)]
    out["device"] = t["device"]
    return out
