"""Write a comparison report: Markdown, CSV, LaTeX and one self-contained HTML page (figures inlined).

``build_report(results_dir, out_dir)`` reads every scored submission of ``results_dir``
(:mod:`bopkd.report.collect`), aggregates seeds (:mod:`bopkd.report.table`), draws the figures
(:mod:`bopkd.report.figures`) and writes::

    OUT/table.md, table.csv (numbers), table.tex, runs.csv (one row per submission, not aggregated)
    OUT/fig_per_object.png, fig_recall_curves.png, fig_loss_curves.png, fig_accuracy_vs_cost.png
    OUT/report.md (title, notes, table, figures, submissions) and
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
from bopkd.report.collect import collect_results, results_frame
from bopkd.report.table import comparison_table, display_table
from bopkd.utils.atomic import atomic_write_bytes, atomic_write_text

#: What the protocols of ``bopkd predict`` mean, for readers of a report.
PROTOCOLS = {
    "oracle-gt-boxes": "crops around the ground-truth boxes: an oracle protocol, not comparable with "
    "detector-based BOP results",
    "detections": "crops around the boxes of a detections file",
    "full-image": "whole images, no boxes",
}


@dataclass
class Report:
    out_dir: Path
    table: pd.DataFrame
    runs: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build_report(
    results_dir: str | Path,
    out_dir: str | Path,
    scores_dir: str | Path | None = None,
    title: str = "",
    csvs: list[str | Path] | None = None,
    notes: list[str] | tuple[str, ...] = (),
) -> Report:
    """Build the report of all scored submissions in ``results_dir`` into ``out_dir``.

    Args:
        csvs: only these submissions (default: every scored CSV of ``results_dir``).
        notes: sentences shown under the title (e.g. missing test images, the protocol).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    results = collect_results(
        results_dir,
        Path(scores_dir) if scores_dir else None,
        None if csvs is None else [Path(c) for c in csvs],
    )
    runs = results_frame(results)
    table = comparison_table(runs)
    shown = display_table(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir=out_dir, table=table, runs=runs)

    def put_text(name: str, text: str) -> None:
        atomic_write_text(out_dir / name, text)
        rep.files[name] = out_dir / name

    put_text("table.csv", table.to_csv(index=False))
    put_text("runs.csv", runs.to_csv(index=False))
    put_text("table.md", shown.to_markdown(index=False) + "\n")
    put_text("table.tex", shown.to_latex(index=False, escape=True))

    figs = {
        "fig_per_object.png": figures.per_object_bars(table),
        "fig_recall_curves.png": figures.recall_curves(results),
        "fig_loss_curves.png": figures.loss_curves(results),
        "fig_accuracy_vs_cost.png": figures.accuracy_vs_cost(table),
    }
    pngs = {}
    for name, fig in figs.items():
        if fig is None:
            continue
        pngs[name] = _png(fig)
        atomic_write_bytes(out_dir / name, pngs[name])
        rep.files[name] = out_dir / name

    protocols = sorted({p for p in runs["protocol"].dropna().unique() if p})
    devices = sorted({d for d in runs["device"].dropna().unique() if d})
    engines = sorted({r.engine for r in results if r.engine})
    title = title or f"bopkd comparison: {results_dir}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}.note{color:#555}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(runs)} scored "
        f"submissions. Accuracy in percent (mean ± std over seeds); gains in points over the direct student "
        f"(kd = none) of the same backbone. Scores by engine: {html.escape(', '.join(engines) or '?')}. "
        f"Speed measured on: {html.escape(', '.join(devices) or '?')}.</p>",
    ]
    protocol_text = ", ".join(f"{p} ({PROTOCOLS[p]})" if p in PROTOCOLS else p for p in protocols)
    if protocols:
        parts.append(f"<p><b>Protocol:</b> {html.escape(protocol_text)}</p>")
    for n in notes:
        parts.append(f"<p class='note'><b>Note:</b> {html.escape(n)}</p>")
    parts.append("<h2>Comparison</h2>")
    parts.append(shown.to_html(index=False, escape=True, na_rep="–"))
    captions = {
        "fig_per_object.png": "Per-object ADD(-S)-0.1d by model",
        "fig_recall_curves.png": "Recall versus correctness threshold (MSSD, MSPD, VSD averaged over tau)",
        "fig_loss_curves.png": "Training loss per model",
        "fig_accuracy_vs_cost.png": "Accuracy versus model size and speed",
    }
    for name, data in pngs.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<h2>{captions[name]}</h2><img alt='{captions[name]}' src='data:image/png;base64,{b64}'>"
        )
    parts.append("<h2>Submissions</h2><p class='note'>BOP CSV files, ready to upload:</p><ul>")
    for r in results:
        parts.append(f"<li><code>{html.escape(str(r.csv_path))}</code></li>")
    parts.append("</ul></body></html>")
    put_text("report.html", "\n".join(parts) + "\n")

    md = [f"# {title}", ""]
    md.append(
        f"{len(runs)} scored submissions; accuracy in percent (mean ± std over seeds), gains in points over the "
        f"direct student (kd = none) of the same backbone. Scores by engine: {', '.join(engines) or '?'}; "
        f"speed measured on: {', '.join(devices) or '?'}."
    )
    md.append("")
    if protocols:
        md += [f"**Protocol:** {protocol_text}", ""]
    md += [f"**Note:** {n}" + "\n" for n in notes]
    md += ["## Comparison", "", shown.to_markdown(index=False), ""]
    md += [f"## {captions[name]}\n\n![{captions[name]}]({name})\n" for name in pngs]
    md += ["## Submissions (BOP CSV, ready to upload)", ""] + [f"- `{r.csv_path}`" for r in results] + [""]
    put_text("report.md", "\n".join(md))
    return rep
