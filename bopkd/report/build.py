"""Write a comparison report: Markdown, CSV, LaTeX and one self-contained HTML page (figures inlined).

``build_report(results_dir, out_dir)`` reads every scored submission of ``results_dir``
(:mod:`bopkd.report.collect`; rows labelled by their training settings, :mod:`bopkd.report.settings`), times
each architecture once (:mod:`bopkd.report.speed`), aggregates seeds (:mod:`bopkd.report.table`,
:mod:`bopkd.report.stats`), draws the figures (:mod:`bopkd.report.figures`) and writes::

    OUT/table.md, table.csv (numbers), table.tex, runs.csv (one row per submission, not aggregated)
    OUT/summary.csv, summary.md         mean and sample std over seeds of every score, n, seeds
    OUT/paired_vs_direct.csv, .md       paired difference to direct training, 95 % t interval
    OUT/paired_ot_vs_pred_fkd.csv, .md  paired difference of the OT rows to pred and FKD (when both ran)
    OUT/paired_variants.csv, .md        paired difference of each variant to its method's default row (if any)
    OUT/settings.csv, settings.md       the training settings of each row
    OUT/speed.csv, speed.md             one speed per architecture and how it was obtained
    OUT/README_results.md               summary, paired differences, settings and speed, for README.md
                                        (bopkd.report.readme)
    OUT/fig_per_object.png, fig_recall_curves.png, fig_loss_curves.png, fig_accuracy_vs_cost.png,
    OUT/fig_seeds.png, fig_paired.png
    OUT/report.md (title, notes, tables, figures, submissions) and
    OUT/report.html (the same in one self-contained file, figures inlined)
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bopkd.report import figures
from bopkd.report.collect import ModelResult, collect_results, results_frame
from bopkd.report.settings import settings_table
from bopkd.report.speed import Speed, architecture_speeds
from bopkd.report.stats import (
    KD_ORDER,
    ot_vs_baselines,
    paired_differences,
    paired_display,
    summary_display,
    summary_over_seeds,
    variants_vs_default,
)
from bopkd.report.table import comparison_table, display_table
from bopkd.utils.atomic import atomic_write_bytes, atomic_write_text

#: What the protocols of ``bopkd predict`` mean, for readers of a report.
PROTOCOLS = {
    "oracle-gt-boxes": "crops around the ground-truth boxes: an oracle protocol, not comparable with "
    "detector-based BOP results and not valid for submission to the BOP site (give --detections)",
    "detections": "crops around the boxes of a detections file",
    "full-image": "whole images, no boxes",
}

#: Figure file -> caption (the per-object one is replaced by what it draws, figures.per_object_metric).
CAPTIONS = {
    "fig_seeds.png": "Each row's seeds (points) and their mean (bar)",
    "fig_paired.png": "Paired difference to direct training, with 95 % t intervals",
    "fig_per_object.png": "Per-object accuracy by model",
    "fig_recall_curves.png": "Recall versus correctness threshold (MSSD, MSPD, VSD averaged over tau)",
    "fig_loss_curves.png": "Training loss per model",
    "fig_accuracy_vs_cost.png": "Accuracy versus model size and speed",
}

SUMMARY_TEXT = (
    "Recalls in percent: mean ± sample standard deviation over seeds (n seeds). Paired difference: "
    "distilled minus direct training (kd = none, same other settings) over the seeds both have, in "
    "percentage points, mean [95 % interval of Student's t with n-1 degrees of freedom]; with one common "
    "seed there is no interval (n=1). The OT rows are also compared, in the same way, with prediction KD and "
    "FKD of the same settings."
)


@dataclass
class Report:
    out_dir: Path
    table: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired_ot: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired_variants: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: pd.DataFrame = field(default_factory=pd.DataFrame)
    speed: pd.DataFrame = field(default_factory=pd.DataFrame)
    files: dict[str, Path] = field(default_factory=dict)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _arch_name(r: ModelResult) -> str:
    name = f"dense {r.backbone}" if r.family == "dense" else r.backbone
    if not r.input_size:
        return name
    return f"{name} ({r.input_mode or 'input'} {r.input_size[0]}x{r.input_size[1]})"


def speed_frame(results: list[ModelResult], speeds: dict[str, Speed]) -> pd.DataFrame:
    """One row per architecture: its backbone and input, the methods of the rows that use it and their
    number, parameters, MACs, ms/image, FPS, the device, how the time was obtained, and the median of the
    predict sidecars."""
    rows: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: (r.role != "teacher", KD_ORDER.get(r.kd, 9))):
        sp = speeds[r.arch_key]
        row = rows.setdefault(
            r.arch_key,
            {
                "architecture": _arch_name(r),
                "methods": [],
                "rows": set(),
                "params": r.params,
                "MACs": r.macs,
                "ms/image": sp.ms_per_image,
                "FPS": 1000.0 / sp.ms_per_image if sp.ms_per_image else None,
                "device": sp.device,
                "how": sp.method,
                "predict ms/image": sp.predict_ms_per_image,
                "predict sidecars": sp.n_sidecars,
            },
        )
        row["rows"].add(r.row_key)
        method = "teacher" if r.role == "teacher" else r.kd
        if method not in row["methods"]:
            row["methods"].append(method)
    df = pd.DataFrame(list(rows.values()))
    df["methods"] = [", ".join(x) for x in df["methods"]]
    df["rows"] = [len(x) for x in df["rows"]]
    return df


def _speed_display(speed: pd.DataFrame) -> pd.DataFrame:
    out = speed[["architecture", "methods", "rows"]].copy()
    for c in ("ms/image", "FPS", "predict ms/image"):
        out[c] = ["–" if pd.isna(v) else f"{v:.2f}" for v in speed[c]]
    out["device"] = speed["device"]
    out["how"] = speed["how"]
    return out


def _md(df: pd.DataFrame) -> str:
    """A display frame as a Markdown table (strings kept as formatted)."""
    return df.to_markdown(index=False, disable_numparse=True) if len(df) else "(none)"


def _tables(results: list[ModelResult], speed_device: str | None):
    speeds = architecture_speeds(results, speed_device)
    runs = results_frame(results, speeds)
    summary = summary_over_seeds(runs)
    order = list(summary["model"])
    settings = pd.DataFrame(settings_table(results))
    settings = settings.set_index("model").loc[order].reset_index()
    return (
        runs,
        comparison_table(runs),
        summary,
        paired_differences(runs),
        ot_vs_baselines(runs),
        variants_vs_default(runs),
        settings,
        speed_frame(results, speeds),
    )


def _figures(rep: Report, results: list[ModelResult]) -> dict[str, tuple[str, bytes]]:
    """File name -> (caption, PNG) of the figures that have data."""
    captions = dict(CAPTIONS)
    per_object = figures.per_object_metric(rep.table)
    if per_object is not None:
        captions["fig_per_object.png"] = per_object[2]
    figs = {
        "fig_seeds.png": figures.seed_points(rep.runs, list(rep.summary["model"])),
        "fig_paired.png": figures.paired_intervals(rep.paired),
        "fig_per_object.png": figures.per_object_bars(rep.table),
        "fig_recall_curves.png": figures.recall_curves(results),
        "fig_loss_curves.png": figures.loss_curves(results),
        "fig_accuracy_vs_cost.png": figures.accuracy_vs_cost(rep.table),
    }
    return {name: (captions[name], _png(fig)) for name, fig in figs.items() if fig is not None}


def _sections(rep: Report) -> list[tuple[str, pd.DataFrame]]:
    """(heading, display frame) of the tables shown in report.md, report.html and README_results.md."""
    out = [
        ("Mean ± std over seeds", summary_display(rep.summary)),
        ("Paired difference to direct training (points, 95 % t interval)", paired_display(rep.paired)),
    ]
    if not rep.paired_ot.empty:
        out.append(
            (
                "Paired difference of OT to prediction KD and FKD (points, 95 % t interval)",
                paired_display(rep.paired_ot),
            )
        )
    if not rep.paired_variants.empty:
        out.append(
            (
                "Paired difference of each variant to its method's default settings (points, 95 % t interval)",
                paired_display(rep.paired_variants),
            )
        )
    return out + [
        ("Settings of each row", rep.settings.drop(columns=["config"])),
        ("Speed (one measurement per architecture)", _speed_display(rep.speed)),
    ]


def readme_results(rep: Report, header: str) -> str:
    """The Markdown block for README.md (:mod:`bopkd.report.readme`): no timestamps or machine paths, so
    regenerating from the same results gives the same text."""
    md = [header, "", SUMMARY_TEXT, ""]
    for heading, df in _sections(rep):
        md += [f"**{heading}**", ""]
        md += [_md(df), ""]
    return "\n".join(md)


def _wide(table_html: str) -> str:
    """A table in a box that scrolls sideways when it is wider than the page, so the page keeps its width."""
    return f"<div class='wide'>{table_html}</div>"


def _html(rep: Report, title: str, intro: str, notes, protocol_text: str, pngs: dict, results) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;"
        "white-space:nowrap}td:first-child{white-space:normal;min-width:22em}th{background:#f3f3f3}"
        "img{max-width:100%}.note{color:#555}.wide{overflow-x:auto}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. {html.escape(intro)}</p>",
    ]
    if protocol_text:
        parts.append(f"<p><b>Protocol:</b> {html.escape(protocol_text)}</p>")
    parts += [f"<p class='note'><b>Note:</b> {html.escape(n)}</p>" for n in notes]
    parts.append(f"<p class='note'>{html.escape(SUMMARY_TEXT)}</p>")
    for heading, df in _sections(rep):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_wide(df.to_html(index=False, escape=True, na_rep="–")) if len(df) else "<p>(none)</p>")
    parts.append("<h2>Comparison</h2>")
    parts.append(_wide(display_table(rep.table).to_html(index=False, escape=True, na_rep="–")))
    for caption, data in pngs.values():
        b64 = base64.b64encode(data).decode("ascii")
        cap = html.escape(caption)
        parts.append(f"<h2>{cap}</h2><img alt='{cap}' src='data:image/png;base64,{b64}'>")
    parts.append("<h2>Submissions</h2><p class='note'>BOP CSV files, ready to upload:</p><ul>")
    parts += [f"<li><code>{html.escape(str(r.csv_path))}</code></li>" for r in results]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def _markdown(rep: Report, title: str, intro: str, notes, protocol_text: str, pngs: dict, results) -> str:
    md = [f"# {title}", "", intro, ""]
    if protocol_text:
        md += [f"**Protocol:** {protocol_text}", ""]
    md += [f"**Note:** {n}" + "\n" for n in notes]
    md += [SUMMARY_TEXT, ""]
    for heading, df in _sections(rep):
        md += [f"## {heading}", "", _md(df), ""]
    md += ["## Comparison", "", display_table(rep.table).to_markdown(index=False), ""]
    md += [f"## {cap}\n\n![{cap}]({name})\n" for name, (cap, _) in pngs.items()]
    md += ["## Submissions (BOP CSV, ready to upload)", ""] + [f"- `{r.csv_path}`" for r in results] + [""]
    return "\n".join(md)


def build_report(
    results_dir: str | Path,
    out_dir: str | Path,
    scores_dir: str | Path | None = None,
    title: str = "",
    csvs: list[str | Path] | None = None,
    notes: list[str] | tuple[str, ...] = (),
    speed_device: str | None = "auto",
) -> Report:
    """Build the report of all scored submissions in ``results_dir`` into ``out_dir``.

    Args:
        csvs: only these submissions (default: every scored CSV of ``results_dir``).
        notes: sentences shown under the title (e.g. missing test images, the protocol).
        speed_device: where to time each architecture's forward pass (``auto``: CUDA when available, else
            the CPU; :mod:`bopkd.report.speed`); None: use the median of the predict sidecars.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    results = collect_results(
        results_dir,
        Path(scores_dir) if scores_dir else None,
        None if csvs is None else [Path(c) for c in csvs],
    )
    runs, table, summary, paired, paired_ot, variants, settings, speed = _tables(results, speed_device)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir, table, runs, summary, paired, paired_ot, variants, settings, speed)

    def put(name: str, data: str | bytes) -> None:
        (atomic_write_bytes if isinstance(data, bytes) else atomic_write_text)(out_dir / name, data)
        rep.files[name] = out_dir / name

    shown = display_table(table)
    put("table.csv", table.to_csv(index=False))
    put("runs.csv", runs.to_csv(index=False))
    put("table.md", shown.to_markdown(index=False) + "\n")
    put("table.tex", shown.to_latex(index=False, escape=True))
    for name, df, display in (
        ("summary", summary, summary_display(summary)),
        ("paired_vs_direct", paired, paired_display(paired)),
        *([("paired_ot_vs_pred_fkd", paired_ot, paired_display(paired_ot))] if not paired_ot.empty else []),
        *([("paired_variants", variants, paired_display(variants))] if not variants.empty else []),
        ("settings", settings, settings),
        ("speed", speed, _speed_display(speed)),
    ):
        put(f"{name}.csv", df.to_csv(index=False))
        put(f"{name}.md", _md(display) + "\n")
    pngs = _figures(rep, results)
    for name, (_cap, data) in pngs.items():
        put(name, data)

    protocols = sorted({p for p in runs["protocol"].dropna().unique() if p})
    engines = sorted({r.engine for r in results if r.engine})
    protocol_text = ", ".join(f"{p} ({PROTOCOLS[p]})" if p in PROTOCOLS else p for p in protocols)
    title = title or f"bopkd comparison: {results_dir}"
    intro = (
        f"{len(runs)} scored submissions in {len(summary)} rows (one per model configuration; seeds "
        f"aggregated). Scores by engine: {', '.join(engines) or '?'}. Speed: one figure per architecture, on "
        f"{', '.join(sorted(set(speed['device']))) or '?'} (see Speed)."
    )
    put("report.html", _html(rep, title, intro, notes, protocol_text, pngs, results))
    put("report.md", _markdown(rep, title, intro, notes, protocol_text, pngs, results))
    header = intro + (f" Protocol: {protocol_text}." if protocol_text else "")
    put("README_results.md", readme_results(rep, header))
    return rep
