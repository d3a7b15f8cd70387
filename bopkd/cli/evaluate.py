"""``bopkd score``, ``bopkd check`` and ``bopkd report``: BOP scoring (:mod:`bopkd.eval`) and reports
(:mod:`bopkd.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bopkd.cli.app import RootOpt, app, console, err_console


@app.command()
def score(
    csvs: Annotated[
        list[Path],
        typer.Argument(help="BOP result files named METHOD_DATASET-SPLIT[-SPLITTYPE][_SUFFIX].csv."),
    ],
    root: RootOpt = Path("bop_data"),
    check_only: Annotated[
        bool,
        typer.Option(
            "--check-only",
            help="Only validate the files (format, object ids, rotations, times) and report their coverage of "
            "the BOP'19 targets; exit 2 if any file is invalid.",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="bopkd (built in) or bop_toolkit (the official toolkit, bop19 only; needs $BOPKD_TOOLKIT_PYTHON "
            "and $BOPKD_TOOLKIT_PATH or the options below).",
        ),
    ] = "bopkd",
    out: Annotated[Path, typer.Option("--out", help="Folder for the score files.")] = Path("results/scores"),
    toolkit_python: Annotated[
        str | None, typer.Option(help="Python that imports bop_toolkit_lib (default: $BOPKD_TOOLKIT_PYTHON).")
    ] = None,
    toolkit_path: Annotated[
        Path | None, typer.Option(help="bop_toolkit checkout with scripts/ (default: $BOPKD_TOOLKIT_PATH).")
    ] = None,
    renderer: Annotated[str, typer.Option(help="bop_toolkit's VSD renderer: vispy, cpp, python.")] = "vispy",
    metrics: Annotated[
        str | None,
        typer.Option(help="bop19 protocol's: bop19 (AR: VSD, MSSD, MSPD), ad (ADD(-S)), adi, add (bop19,ad)"),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(help="bop19 (AR), bop24 (mAP MSSD+MSPD), bop25 (MSSD mAP; 2..20 mm), all, or a list"),
    ] = "bop19",
    targets_file: Annotated[
        str | None,
        typer.Option(help="BOP'24 target images: file in the dataset folder (test_targets_bop24/19.json)"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Threads for VSD and ADI (0: every core); with --engine bop_toolkit, its --num_workers.",
        ),
    ] = 0,
) -> None:
    """Score BOP result files (BOP'19 AR and ADD(-S)/ADI/ADD; BOP'24/'25 mAP), or only check them.

    Writes OUT/<result name>/: bop19: scores_bop19.json, scores_ad.json (adi, add), recalls.csv,
    scores_bopkd.json; bop24/bop25: scores_bop24.json, aps_bop24.csv. Without depth images VSD is skipped:
    AR is null, MSSD and MSPD are exact.
    """
    from bopkd.eval.score_command import run_score

    run_score(
        csvs, root, out, console=console, err_console=err_console, check_only=check_only, engine=engine,
        metrics=metrics, protocol=protocol, targets_file=targets_file, toolkit_python=toolkit_python,
        toolkit_path=toolkit_path, renderer=renderer, workers=workers,
    )  # fmt: skip


@app.command()
def check(
    csvs: Annotated[
        list[Path], typer.Argument(help="BOP pose result files named METHOD_DATASET-SPLIT[-SPLITTYPE].csv.")
    ],
    root: RootOpt = Path("bop_data"),
) -> None:
    """Check result files against what the BOP site accepts on upload; exit 2 if any fails.

    The name (method of letters, digits and '-'; the dataset's test split), the header, one time per
    image, at most 100 estimates per image (200 for xyzibd) and only the dataset's objects. Each problem
    is one line FILE[:LINE]: problem; fix.
    """
    from bopkd.eval.bop_site import check_for_site

    failed = 0
    for csv in csvs:
        rep = check_for_site(csv, root)
        for p in rep.problems:
            err_console.print(p, highlight=False, soft_wrap=True, markup=False)
        if rep.ok:
            console.print(rep.summary, highlight=False, soft_wrap=True, markup=False)
        for n in rep.notes:
            console.print(f"  note: {n}", highlight=False, soft_wrap=True, markup=False)
        failed += not rep.ok
    if failed:
        err_console.print(
            f"{failed} of {len(csvs)} files would not be accepted by the BOP site", highlight=False
        )
        raise typer.Exit(2)


def parse_name(name: str):
    """Parse a result name (used by ``score``); lazily imported so ``bopkd --help`` stays fast."""
    from bopkd.eval.naming import parse_result_name

    return parse_result_name(name)


@app.command()
def report(
    results_dir: Annotated[
        Path, typer.Argument(help="Folder with BOP CSV submissions and their sidecar .json files.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports/latest"),
    scores: Annotated[
        Path | None,
        typer.Option("--scores", help="Folder of bopkd score outputs (default RESULTS_DIR/scores)."),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="Report title.")] = "",
    update_readme: Annotated[
        Path | None,
        typer.Option(
            "--update-readme",
            help="Also copy OUT/README_results.md into this README's block "
            "'<!-- results:begin OUT/README_results.md -->' ... '<!-- results:end ... -->'.",
        ),
    ] = None,
) -> None:
    """Write the comparison report (Markdown, CSV, LaTeX, HTML with figures) of all scored submissions."""
    from bopkd.report.build import build_report

    rep = build_report(results_dir, out, scores, title)
    console.print(rep.files["table.md"].read_text())
    console.print(f"report written to {rep.files['report.html']}")
    if update_readme is not None:
        from bopkd.report.readme import update_readme as update

        name = update(update_readme, rep.files["README_results.md"])
        console.print(f"{update_readme}: block {name} updated")
