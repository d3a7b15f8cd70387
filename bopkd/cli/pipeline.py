"""``bopkd run-pipeline`` (:mod:`bopkd.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bopkd.cli.app import RootOpt, app, console


@app.command("run-pipeline")
def run_pipeline_cmd(
    dataset: Annotated[
        str,
        typer.Argument(
            help="demo (synthetic, the default), a registered BOP dataset (lmo, lm, ycbv, tless; "
            "downloaded) or the name of a synthetic dataset to build."
        ),
    ] = "demo",
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="demo (minutes on a CPU), experiment (the README's first KD comparison: 3 seeds, about an "
            "hour on a CPU), quick (a real dataset at reduced scale) or paper (Guo et al.'s settings, for GPUs). "
            "Default: demo for the dataset demo, else quick.",
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--methods",
            help="Distillation methods, comma-separated or repeated (default: none,pred,fkd,ot,fkd+ot).",
        ),
    ] = None,
    students: Annotated[
        list[str] | None,
        typer.Option(
            "--students",
            help="Student backbones (darknet-tiny, darknet-tiny-h, tiny-cpu or timm names); "
            "default: the preset's.",
        ),
    ] = None,
    seeds: Annotated[
        list[str] | None,
        typer.Option(
            "--seeds", help="Student seeds, e.g. 0,1,2 (default: the preset's; the teacher uses the first)."
        ),
    ] = None,
    root: RootOpt = Path("bop_data"),
    results: Annotated[
        Path, typer.Option("--results", help="Folder of the BOP CSV submissions (scores in RESULTS/scores).")
    ] = Path("results"),
    reports: Annotated[
        Path, typer.Option("--reports", help="Folder of reports (this run's: REPORTS/<dataset>-<preset>).")
    ] = Path("reports"),
    runs: Annotated[
        Path, typer.Option("--runs", help="Folder of run state: RUNS/<dataset>-<preset>/{stages,logs,train}.")
    ] = Path("runs"),
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
    ] = "auto",
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs (DDP processes) per training run.")] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="Torch CPU threads (default: the cores not busy with other work)."
        ),
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            "--force",
            help="Run these stages even if done: a stage name, a kind (data, teacher, student, "
            "predict, score, report), a glob (student-*-ot-*) or all; repeatable.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a setting: SCOPE.key=value with SCOPE synth, train, teacher, student, "
            "student@BACKBONE|METHOD, predict or score; e.g. --set teacher.iters=300; repeatable.",
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option("--mirror", help="Download mirror for registered datasets (default: $BOPKD_MIRROR)."),
    ] = None,
    detections: Annotated[
        Path | None,
        typer.Option(
            "--detections",
            help="BOP default-detections JSON of the dataset's test split: crop-mode models predict on its "
            "boxes (else on GT boxes: oracle-gt-boxes results, not valid for submission).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the stage plan and what is already done; run nothing.")
    ] = False,
    family: Annotated[
        str | None,
        typer.Option(
            "--family",
            help="sparse (WDR-style keypoint networks), dense (ZebraPose-style surface-code networks, stages "
            "named teacher-dense, student-dense-...) or both, side by side in one report. Default: the preset's "
            "(both for demo, sparse for the other presets).",
        ),
    ] = None,
) -> None:
    """Run every stage, from the dataset to a BOP-scored comparison report of all distillation methods.

    Stages: data (download or synthesise), teacher, each student x method x seed, predict, score, report.
    A rerun skips the stages that are done and reruns exactly those whose settings or inputs changed; an
    interrupted run (Ctrl-C, kill) resumes, training from its last checkpoint. State and logs are in
    RUNS/<dataset>-<preset>/; the BOP CSVs in RESULTS/ are ready to upload.
    """
    from bopkd.pipeline import PipelineOptions, run_pipeline

    opts = PipelineOptions.from_command_line(
        methods,
        students,
        seeds,
        force,
        set_,
        dataset=dataset,
        preset=preset,
        root=root,
        results=results,
        reports=reports,
        runs=runs,
        device=device,
        gpus=gpus,
        threads=threads,
        mirror=mirror,
        detections=detections,
        dry_run=dry_run,
        family=family,
    )
    res = run_pipeline(opts, console=console)
    if not dry_run:
        console.print(
            f"pipeline finished in {res.seconds:.1f} s: {len(res.executed)} stages run, {len(res.skipped)} already done; "
            f"report: {res.report_dir / 'report.html'}",
            highlight=False,
            soft_wrap=True,
        )
