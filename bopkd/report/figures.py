"""Report figures (matplotlib, Agg backend): per-object accuracy, recall-vs-threshold curves, training
loss curves and accuracy versus model size and speed. Each function returns a Figure (or None when the
data it needs is absent) that the caller saves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bopkd.report.collect import ModelResult  # noqa: E402

_KD_COLORS = {
    "-": "#444444",
    "none": "#9e9e9e",
    "pred": "#1f77b4",
    "fkd": "#2ca02c",
    "ot": "#d62728",
    "fkd+ot": "#9467bd",
}


def per_object_bars(table: pd.DataFrame):
    """Grouped bars: per-object accuracy (x) for each model (colour by distillation method, the teacher
    hatched): AR per object (``AR obj k``: BOP'19 recalls of the object's targets averaged over thresholds
    and metrics) when the scores have it, else ADD(-S)-0.1d per object."""
    choices = (("AR obj ", "AR per object (%)"), ("ADD(-S) obj ", "ADD(-S)-0.1d (%)"))
    found = [
        (p, label, [c for c in table.columns if c.startswith(p) and not c.endswith(" std")])
        for p, label in choices
    ]
    found = [f for f in found if f[2]]
    if not found:
        return None
    prefix, ylabel, cols = found[0]
    objs = [c.replace(prefix, "") for c in cols]
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(objs) + 2), 3.8))
    width = 0.8 / max(n, 1)
    x = np.arange(len(objs))
    top = 0.0
    for i, (_, row) in enumerate(table.iterrows()):
        vals = np.asarray([row[c] for c in cols], float)
        errs = np.asarray([row.get(f"{c} std", np.nan) for c in cols], float)
        top = max(top, np.nanmax(vals + np.nan_to_num(errs)) if np.isfinite(vals).any() else 0.0)
        ax.bar(
            x + (i - (n - 1) / 2) * width,
            vals,
            width,
            label=row["model"],
            color=_KD_COLORS.get(row["kd"]),
            hatch="//" if row.get("role") == "teacher" else None,
            edgecolor="white",
            yerr=None if np.all(np.isnan(errs)) else errs,
            capsize=2,
        )
    ax.set_xticks(x, [f"obj {o}" for o in objs])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, min(100.0, max(10.0, 1.25 * top)))
    ax.set_title("Per-object accuracy by model")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _overall_recall(recalls: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    df = recalls[recalls["metric"].str.lower() == metric.lower()]
    if df.empty:
        return None
    if "obj_id" in df.columns:
        df = df[df["obj_id"].astype(str) != "all"]
    if "tau" in df.columns and df["tau"].notna().any():
        g = df.groupby(["tau", "threshold"])[["tp", "n_targets"]].sum().reset_index()
        g["recall"] = g["tp"] / g["n_targets"].clip(lower=1)
        return g.groupby("threshold")["recall"].mean().reset_index()
    g = df.groupby("threshold")[["tp", "n_targets"]].sum().reset_index()
    g["recall"] = g["tp"] / g["n_targets"].clip(lower=1)
    return g


def recall_curves(results: list[ModelResult]):
    """Recall versus correctness threshold for MSSD, MSPD and VSD (VSD averaged over tau), one line per model
    (first seed)."""
    seen = {}
    for r in results:
        if r.recalls_csv is not None and r.model not in seen:
            seen[r.model] = r
    if not seen:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, xlabel in zip(
        axes,
        ("mssd", "mspd", "vsd"),
        ("threshold (fraction of diameter)", "threshold (px)", "threshold"),
        strict=True,
    ):
        drawn = False
        for label, r in seen.items():
            rec = _overall_recall(pd.read_csv(r.recalls_csv), metric)
            if rec is None:
                continue
            ax.plot(
                rec["threshold"],
                100 * rec["recall"],
                marker="o",
                ms=3,
                label=label,
                color=_KD_COLORS.get(r.kd),
            )
            drawn = True
        ax.set_title(metric.upper() + ("" if drawn else " (not computed)"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _read_metrics(run_dir: Path) -> pd.DataFrame | None:
    for name in ("metrics.csv",):
        p = Path(run_dir) / name
        if p.is_file():
            try:
                return pd.read_csv(p)
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                return None
    return None


def loss_curves(results: list[ModelResult]):
    """Total training loss versus iteration per model (first seed), read from each run's metrics.csv."""
    seen = {}
    for r in results:
        if r.run_dir is not None and r.model not in seen:
            m = _read_metrics(r.run_dir)
            if m is not None and len(m):
                seen[r.model] = (r, m)
    if not seen:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, (r, m) in seen.items():
        it = m["iter"] if "iter" in m else np.arange(len(m))
        loss_col = "loss" if "loss" in m else next((c for c in m.columns if c.startswith("loss")), None)
        if loss_col is None:
            continue
        y = m[loss_col].rolling(max(1, len(m) // 50), min_periods=1).mean()
        ax.plot(it, y, label=label, color=_KD_COLORS.get(r.kd))
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_yscale("log")
    ax.set_title("Training loss per model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_vs_cost(table: pd.DataFrame):
    """AR (else AR_MSSD_MSPD, else ADD(-S)-0.1d) versus parameters and versus ms/image, one marker per model
    (colour by distillation method, the teacher a square), named in the legend."""
    from matplotlib.ticker import ScalarFormatter

    metric = next(
        (m for m in ("AR", "AR_MSSD_MSPD", "ADD(-S)-0.1d") if m in table and table[m].notna().any()), "AR"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    handles = {}
    for ax, col, xlabel in zip(axes, ("params", "ms/image"), ("parameters", "ms / image"), strict=True):
        xs = []
        for _, row in table.iterrows():
            if pd.isna(row[col]) or pd.isna(row[metric]):
                continue
            std = row.get(f"{metric} std")
            h = ax.errorbar(
                row[col],
                row[metric],
                yerr=None if std is None or pd.isna(std) else std,
                fmt="s" if row.get("role") == "teacher" else "o",
                ms=7,
                color=_KD_COLORS.get(row["kd"]),
                capsize=3,
            )
            handles.setdefault(row["model"], h)
            xs.append(float(row[col]))
        if xs and max(xs) > 0 and min(xs) > 0 and max(xs) / min(xs) > 5:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    dev = next((d for d in table["device"] if isinstance(d, str) and d), "")
    axes[1].set_title(f"speed on {dev}" if dev else "speed")
    axes[0].set_title("size")
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
        fig.tight_layout(rect=(0, 0, 0.84, 1))
    else:
        fig.tight_layout()
    return fig
