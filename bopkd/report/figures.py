"""Report figures (matplotlib, Agg backend): per-object accuracy, recall-vs-threshold curves, training
loss curves, accuracy versus model size and speed, each row's seeds as points, and the paired differences
to direct training with their 95 % intervals. Each function returns a Figure (or None when the
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

_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINES = ("-", "--", ":", "-.")
_HATCHES = (None, "..", "xx", "\\\\", "++", "oo")


def _styles(models) -> dict[str, dict]:
    """Per row label (``models``: (label, kd) pairs in order): the method's colour; rows of one method told
    apart by marker, line style and bar hatch."""
    count: dict[str, int] = {}
    out: dict[str, dict] = {}
    for label, kd in models:
        if label in out:
            continue
        i = count.get(kd, 0)
        count[kd] = i + 1
        out[label] = {
            "color": _KD_COLORS.get(kd),
            "marker": _MARKERS[i % len(_MARKERS)],
            "ls": _LINES[i % len(_LINES)],
            "hatch": "//" if kd == "-" else _HATCHES[i % len(_HATCHES)],
        }
    return out


def _legend_below(fig, handles, labels, axes_height: float) -> None:
    """A legend under the axes, one label per line (row labels are long), the figure made taller for it."""
    leg_h = 0.19 * len(labels) + 0.25
    fig.set_size_inches(fig.get_size_inches()[0], axes_height + leg_h)
    fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.01, 0.0), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, leg_h / (axes_height + leg_h), 1, 1))


#: Per-object columns, in order of preference: (column prefix, axis label, caption).
PER_OBJECT = (
    (
        "AR obj ",
        "AR per object (%)",
        "Per-object AR by model (each object's BOP'19 recalls, averaged over thresholds and metrics)",
    ),
    ("ADD(-S) obj ", "ADD(-S)-0.1d (%)", "Per-object ADD(-S)-0.1d by model"),
)


def per_object_metric(table: pd.DataFrame) -> tuple[str, str, str, list[str]] | None:
    """``(prefix, axis label, caption, columns)`` of the per-object accuracy :func:`per_object_bars` draws:
    AR per object when the scores have it, else ADD(-S)-0.1d; None when there is neither."""
    for prefix, label, caption in PER_OBJECT:
        cols = [c for c in table.columns if c.startswith(prefix) and not c.endswith(" std")]
        if cols:
            return prefix, label, caption, cols
    return None


def per_object_bars(table: pd.DataFrame):
    """Grouped bars: per-object accuracy (x) for each model (colour by distillation method, the teacher
    hatched), the metric of :func:`per_object_metric` (named on the axis and in the title)."""
    found = per_object_metric(table)
    if found is None:
        return None
    prefix, ylabel, _caption, cols = found
    objs = [c.replace(prefix, "") for c in cols]
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(objs) + 2), 3.8))
    styles = _styles(zip(table["model"], table["kd"], strict=True))
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
            color=styles[row["model"]]["color"],
            hatch=styles[row["model"]]["hatch"],
            edgecolor="white",
            yerr=None if np.all(np.isnan(errs)) else errs,
            capsize=2,
        )
    ax.set_xticks(x, [f"obj {o}" for o in objs])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, min(100.0, max(10.0, 1.25 * top)))
    ax.set_title(f"{ylabel.replace(' (%)', '')} by model")
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, *ax.get_legend_handles_labels(), 3.8)
    return fig


def _wrap(label: str, width: int = 44) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width)) or label


def _main_metrics(frame: pd.DataFrame, have) -> list[str]:
    first = next((m for m in ("AR", "AR_MSSD_MSPD") if have(m)), None)
    return [m for m in (first, "ADD(-S)-0.1d") if m is not None and have(m)]


def seed_points(runs: pd.DataFrame, order: list[str]):
    """Each row's seeds as points (one panel per score: AR, else AR_MSSD_MSPD, and ADD(-S)-0.1d), the mean
    over seeds a vertical bar, ``n`` written at the right; rows in ``order`` (labels, top to bottom)."""

    def have(m):
        return m in runs and pd.to_numeric(runs[m], errors="coerce").notna().any()

    metrics = _main_metrics(runs, have)
    if not metrics or not order:
        return None
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(6.5 * len(metrics), 0.55 * len(order) + 1.6), squeeze=False
    )
    for ax, m in zip(axes[0], metrics, strict=True):
        for i, label in enumerate(order):
            g = runs[runs["model"] == label]
            v = 100.0 * pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(float)
            color = _KD_COLORS.get(g["kd"].iloc[0]) if len(g) else None
            y = len(order) - 1 - i
            offs = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(len(v))
            ax.scatter(v, y + offs, s=28, color=color, alpha=0.85, zorder=3)
            if len(v):
                ax.plot([v.mean()] * 2, [y - 0.3, y + 0.3], color="black", lw=2, zorder=4)
            ax.annotate(
                f"n={len(v)}",
                (1.0, y),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_yticks(range(len(order)), [_wrap(o) for o in reversed(order)], fontsize=7)
        ax.set_xlabel(f"{m} (%): points = seeds, bar = mean")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{m} per seed")
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    return fig


def paired_intervals(paired: pd.DataFrame):
    """Paired difference to direct training per distilled row (:func:`bopkd.report.stats.paired_differences`):
    the mean as a point and its 95 % t interval as a line; a hollow point and ``n=1`` where one seed is
    shared (no interval); one panel per score (AR, else AR_MSSD_MSPD, and ADD(-S)-0.1d)."""
    if paired is None or paired.empty or not (paired["n"] > 0).any():
        return None

    def have(m):
        return ((paired["metric"] == m) & (paired["n"] > 0)).any()

    metrics = _main_metrics(paired, have)
    order = list(dict.fromkeys(paired["model"]))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(6.5 * len(metrics), 0.55 * len(order) + 1.6), squeeze=False
    )
    for ax, m in zip(axes[0], metrics, strict=True):
        sub = paired[paired["metric"] == m].set_index("model")
        for i, label in enumerate(order):
            y = len(order) - 1 - i
            if label not in sub.index or sub.loc[label, "n"] == 0:
                ax.annotate("no direct row", (0, y), fontsize=7, va="center", color="#777777")
                continue
            r = sub.loc[label]
            color = _KD_COLORS.get(r["kd"])
            if r["n"] >= 2:
                ax.plot([r["ci low"], r["ci high"]], [y, y], color=color, lw=2)
                ax.plot(r["mean diff"], y, "o", color=color, ms=6)
            else:
                ax.plot(r["mean diff"], y, "o", mfc="white", color=color, ms=6)
            ax.annotate(
                f"n={int(r['n'])}" + (" (no interval)" if r["n"] == 1 else ""),
                (1.0, y),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(range(len(order)), [_wrap(o) for o in reversed(order)], fontsize=7)
        ax.set_ylim(-0.7, len(order) - 0.3)
        ax.set_xlabel(f"{m}: distilled minus direct (points), 95 % t interval")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"Paired difference in {m}")
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
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
    styles = _styles((label, r.kd) for label, r in seen.items())
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
                marker=styles[label]["marker"],
                ls=styles[label]["ls"],
                ms=3,
                label=label,
                color=styles[label]["color"],
            )
            drawn = True
        ax.set_title(metric.upper() + ("" if drawn else " (not computed)"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    _legend_below(fig, *axes[0].get_legend_handles_labels(), 3.6)
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
    fig, ax = plt.subplots(figsize=(9, 3.8))
    styles = _styles((label, r.kd) for label, (r, _m) in seen.items())
    for label, (_r, m) in seen.items():
        it = m["iter"] if "iter" in m else np.arange(len(m))
        loss_col = "loss" if "loss" in m else next((c for c in m.columns if c.startswith("loss")), None)
        if loss_col is None:
            continue
        y = m[loss_col].rolling(max(1, len(m) // 50), min_periods=1).mean()
        ax.plot(it, y, label=label, color=styles[label]["color"], ls=styles[label]["ls"])
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_yscale("log")
    ax.set_title("Training loss per model")
    ax.grid(alpha=0.3)
    _legend_below(fig, *ax.get_legend_handles_labels(), 3.8)
    return fig


def accuracy_vs_cost(table: pd.DataFrame):
    """AR (else AR_MSSD_MSPD, else ADD(-S)-0.1d) versus parameters and versus ms/image, one marker per model
    (colour by distillation method, marker by row within a method), named in the legend."""
    from matplotlib.ticker import ScalarFormatter

    metric = next(
        (m for m in ("AR", "AR_MSSD_MSPD", "ADD(-S)-0.1d") if m in table and table[m].notna().any()), "AR"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    styles = _styles(zip(table["model"], table["kd"], strict=True))
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
                fmt=styles[row["model"]]["marker"],
                ms=7,
                color=styles[row["model"]]["color"],
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
        _legend_below(fig, list(handles.values()), list(handles), 3.8)
    else:
        fig.tight_layout()
    return fig
