"""Statistics over seeds: per-row mean and standard deviation, and paired differences to a baseline method.

Rows are model configurations (:mod:`bopkd.report.settings`); scores are recalls in percent.

* Summary (:func:`summary_over_seeds`): per row and score column, the mean over seeds and the sample standard
  deviation ``s = sqrt(sum (x_i - mean)^2 / (n - 1))`` (Bessel's correction; undefined for n = 1).
* Paired difference (:func:`paired_differences`): for a distilled student and the direct training
  (``kd = none``) of the same settings otherwise (same backbone, architecture, task loss, schedule, data),
  over the seeds both have: ``d_i = x_i - y_i``, the mean ``d̄``, ``s_d`` as above, and the 95 % interval
  ``d̄ ± t_{0.975, n-1} s_d / sqrt(n)`` with the quantile of Student's t distribution with n - 1 degrees of
  freedom (``scipy.stats.t.ppf``): the paired t interval (Student, Biometrika 6(1), 1908; Montgomery &
  Runger, *Applied Statistics and Probability for Engineers*, Sec. 10-4 "Paired t-test"). With one common
  seed there is no interval (no estimate of the spread); the tables say ``n=1``. The same paired interval
  compares the OT rows (``ot``, ``fkd+ot``) with prediction KD and FKD of the same settings otherwise
  (:func:`ot_vs_baselines`), so that "does OT beat pred and FKD beyond seed noise" is read off an interval.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: The score columns (recalls) summarised; AR_MSSD_MSPD appears where VSD could not be computed.
SCORES = ["AR", "AR_VSD", "AR_MSSD", "AR_MSPD", "AR_MSSD_MSPD", "ADD(-S)-0.1d"]
LEVEL = 0.95

KD_ORDER = {"-": 0, "none": 1, "pred": 2, "fkd": 3, "ot": 4, "fkd+ot": 5}


def present_scores(runs: pd.DataFrame) -> list[str]:
    """The score columns with at least one value."""
    return [m for m in SCORES if m in runs and pd.to_numeric(runs[m], errors="coerce").notna().any()]


def row_order(df: pd.DataFrame) -> pd.DataFrame:
    """The sparse family's rows, then the dense family's (``family`` column; sparse without one); within a
    family the teacher first, then students by method (none, pred, fkd, ot, fkd+ot), then by label."""
    fam = df["family"].map({"sparse": 0, "dense": 1}).fillna(0) if "family" in df else pd.Series(0, df.index)
    role = df["role"].map({"teacher": 0, "student": 1}).fillna(2)
    kd = df["kd"].map(KD_ORDER).fillna(9)
    key = pd.DataFrame({"f": fam, "a": role, "b": kd, "c": df["model"]})
    return df.loc[key.sort_values(["f", "a", "b", "c"], kind="stable").index].reset_index(drop=True)


def has_dense(df: pd.DataFrame) -> bool:
    """Whether a frame has rows of the dense family (then tables show a ``family`` column)."""
    return "family" in df and bool((df["family"] == "dense").any())


def _seeds_text(seeds) -> str:
    s = sorted(int(x) for x in seeds if x is not None and not (isinstance(x, float) and math.isnan(x)))
    return ",".join(map(str, s))


def summary_over_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ``row_key``: model, role, backbone, kd, n, seeds, and ``<score> mean`` / ``<score> std``
    (percent; std NaN with fewer than two values), then ``family`` (``sparse`` or ``dense``)."""
    scores = present_scores(runs)
    rows = []
    for _key, g in runs.groupby("row_key", sort=False):
        row = {c: g[c].iloc[0] for c in ("model", "role", "backbone", "kd")}
        row["n"] = len(g)
        row["seeds"] = _seeds_text(g["seed"])
        for m in scores:
            v = 100.0 * pd.to_numeric(g[m], errors="coerce").dropna().to_numpy(float)
            row[f"{m} mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{m} std"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
        row["family"] = g["family"].iloc[0] if "family" in g else "sparse"
        rows.append(row)
    return row_order(pd.DataFrame(rows))


def t_interval(d: np.ndarray, level: float = LEVEL) -> tuple[float, float, float, float, float]:
    """``(mean, sd, t quantile, low, high)`` of the paired t interval of differences ``d`` (module
    docstring); sd, t and the bounds are NaN for fewer than two differences."""
    from scipy.stats import t

    d = np.asarray(d, float)
    n = len(d)
    mean = float(d.mean()) if n else np.nan
    if n < 2:
        return mean, np.nan, np.nan, np.nan, np.nan
    sd = float(d.std(ddof=1))
    q = float(t.ppf(0.5 + level / 2, n - 1))
    half = q * sd / math.sqrt(n)
    return mean, sd, q, mean - half, mean + half


def _baseline_rows(runs: pd.DataFrame, kd: str) -> dict[str, list[pd.DataFrame]]:
    """The student rows of method ``kd`` by ``base_key`` (the other settings), one frame per row label (a
    method run at several weights has several rows, and each is a baseline of its own)."""
    base = runs[(runs["role"] == "student") & (runs["kd"] == kd)]
    return {
        k: [m for _, m in g.groupby("model", sort=False)] for k, g in base.groupby("base_key", sort=False)
    }


#: Columns of the paired-difference frames (:func:`paired_differences`, :func:`variants_vs_default`).
PAIRED_COLUMNS = ["model", "kd", "backbone", "direct", "metric", "n", "seeds"]
PAIRED_COLUMNS += ["mean diff", "sd diff", "t", "ci low", "ci high", "note"]


def paired_differences(
    runs: pd.DataFrame, baseline: str = "none", methods: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """One row per student row of ``methods`` (default: every method but the baseline) and score: ``model``,
    ``direct`` (the baseline row it is compared with: direct training, kd = none, unless ``baseline`` names
    another method), ``metric``, ``n`` (common seeds), ``seeds``, ``mean diff``, ``sd diff``, ``t``, ``ci low``,
    ``ci high`` (percentage points; 95 % paired t interval) and ``note`` (``n=1: no interval``, or why there
    is no pair).
    """
    scores = present_scores(runs)
    direct = _baseline_rows(runs, baseline)
    students = runs[(runs["role"] == "student") & (runs["kd"] != baseline)]
    if methods is not None:
        students = students[students["kd"].isin(methods)]
    no_base = _NO_DIRECT if baseline == "none" else f"no {baseline} row with the same other settings"
    out = []
    for _key, g in students.groupby("row_key", sort=False):
        head = {"model": g["model"].iloc[0], "kd": g["kd"].iloc[0], "backbone": g["backbone"].iloc[0]}
        bases = direct.get(g["base_key"].iloc[0])
        if not bases:
            for m in scores:
                out.append({**head, "direct": "", "metric": m, "n": 0, "seeds": "", "note": no_base})
            continue
        for base in bases:
            out += _paired_rows(head, g, base, scores)
    df = pd.DataFrame(out, columns=PAIRED_COLUMNS)
    if df.empty:
        return df
    order = row_order(df.drop_duplicates("model").assign(role="student"))["model"].tolist()
    df["_o"] = df["model"].map({m: i for i, m in enumerate(order)})
    df["_m"] = df["metric"].map({m: i for i, m in enumerate(SCORES)})
    return df.sort_values(["_o", "_m"], kind="stable").drop(columns=["_o", "_m"]).reset_index(drop=True)


_NO_DIRECT = "no direct-training row (kd = none) with the same other settings"


def _paired_rows(head: dict, g: pd.DataFrame, base: pd.DataFrame, scores: list[str]) -> list[dict]:
    """The rows of :func:`paired_differences` for student rows ``g`` against baseline rows ``base``."""
    pair = g.dropna(subset=["seed"]).merge(base.dropna(subset=["seed"]), on="seed", suffixes=("", " direct"))
    out = []
    for m in scores:
        x = pd.to_numeric(pair[m], errors="coerce")
        y = pd.to_numeric(pair[f"{m} direct"], errors="coerce")
        ok = x.notna() & y.notna()
        d = 100.0 * (x[ok] - y[ok]).to_numpy(float)
        mean, sd, q, lo, hi = t_interval(d)
        note = "" if len(d) > 1 else ("n=1: no interval" if len(d) == 1 else "no common seed")
        out.append(
            {
                **head,
                "direct": base["model"].iloc[0],
                "metric": m,
                "n": int(len(d)),
                "seeds": _seeds_text(pair.loc[ok, "seed"]),
                "mean diff": mean,
                "sd diff": sd,
                "t": q,
                "ci low": lo,
                "ci high": hi,
                "note": note,
            }
        )
    return out


def ot_vs_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences of the OT rows (``ot``, ``fkd+ot``) to prediction KD and to FKD (same columns as
    :func:`paired_differences`; ``direct`` names the pred or FKD row)."""
    parts = [paired_differences(runs, b, ("ot", "fkd+ot")) for b in ("pred", "fkd")]
    parts = [p for p in parts if not p.empty and (p["n"] > 0).any()]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    first = {m: i for i, m in enumerate(dict.fromkeys(df["model"]))}  # a model's comparisons together
    return df.sort_values("model", key=lambda c: c.map(first), kind="stable").reset_index(drop=True)


def variants_vs_default(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences of each variant row (a student whose kd options differ from its method's defaults:
    another weight, detached scores, a dense OT cell choice) to the row of the same method with the default
    options and the same other settings (same columns as :func:`paired_differences`; ``direct`` names the
    default row). Empty when no run has a variant with a default row beside it."""
    if "kd_default" not in runs or runs.empty:
        return pd.DataFrame()
    students = runs[(runs["role"] == "student") & (runs["kd"] != "none")]
    is_default = students["kd_default"].eq(True)
    defaults = {key: g for key, g in students[is_default].groupby(["base_key", "kd"], sort=False)}
    scores = present_scores(runs)
    out = []
    for _key, g in students[students["kd_default"].eq(False)].groupby("row_key", sort=False):
        base = defaults.get((g["base_key"].iloc[0], g["kd"].iloc[0]))
        if base is not None:
            head = {"model": g["model"].iloc[0], "kd": g["kd"].iloc[0], "backbone": g["backbone"].iloc[0]}
            out += _paired_rows(head, g, base, scores)
    return pd.DataFrame(out, columns=PAIRED_COLUMNS) if out else pd.DataFrame()


def fmt_mean_std(mean: float, std: float, digits: int = 1) -> str:
    """``"35.0 ± 7.1"``; the mean alone when there is no std; ``–`` when there is no value."""
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None or np.isnan(std) else f" ± {std:.{digits}f}")


def fmt_diff(row: pd.Series, digits: int = 1) -> str:
    """``"+3.2 [-1.0, +7.4]"``, ``"+3.2 (n=1, no interval)"`` or ``"–"``."""
    if row["n"] == 0 or pd.isna(row.get("mean diff")):
        return "–"
    s = f"{row['mean diff']:+.{digits}f}"
    if row["n"] == 1:
        return s + " (n=1, no interval)"
    return s + f" [{row['ci low']:+.{digits}f}, {row['ci high']:+.{digits}f}]"


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings: model, n, seeds, ``mean ± std`` per score."""
    scores = [m for m in SCORES if f"{m} mean" in summary]
    out = pd.DataFrame({"model": summary["model"], "n": summary["n"], "seeds": summary["seeds"]})
    if has_dense(summary):
        out.insert(1, "family", summary["family"])
    for m in scores:
        out[m] = [fmt_mean_std(a, b) for a, b in zip(summary[f"{m} mean"], summary[f"{m} std"], strict=True)]
    return out


def paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    """Paired differences as strings: one line per distilled row (the direct row it is compared with, n,
    seeds), ``mean [95 % CI]`` per score; empty when there is no distilled row."""
    rows = []
    for (model, _vs), g in paired.groupby(["model", "direct"], sort=False):
        n = int(g["n"].max())
        row = {"model": model, "vs": g["direct"].iloc[0] if n else g["note"].iloc[0], "n": n}
        row["seeds"] = g.loc[g["n"].idxmax(), "seeds"]
        for _, r in g.iterrows():
            row[r["metric"]] = fmt_diff(r)
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")
