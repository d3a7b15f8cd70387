"""The ``bopkd`` command line (Typer). Each command is a thin layer over the package's functions.

User errors (:class:`~bopkd.errors.BopkdError`) print one line and exit with status 2; Ctrl-C exits
with status 130 after the interrupted stage has cleaned up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bopkd.errors import BopkdError

app = typer.Typer(
    name="bopkd",
    help="From a BOP dataset to a BOP-scored comparison of knowledge-distillation methods for 6D pose.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)



@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """bopkd: BOP datasets, 6D pose networks, knowledge distillation and BOP scoring."""
    if version:
        from bopkd import __version__

        console.print(f"bopkd {__version__}")
        raise typer.Exit()


RootOpt = Annotated[Path, typer.Option("--root", help="Folder that holds the BOP datasets.")]


@app.command()
def info(
    dataset: Annotated[str, typer.Argument(help="Dataset name: registered (lmo, lm, ycbv, tless) or a folder under --root.")],
    root: RootOpt = Path("bop_data"),
) -> None:
    """Print a dataset's objects, splits, scenes, images, GT instances and test targets."""
    from bopkd.data.dataset import BopDataset
    from bopkd.data.summary import summarize

    ds = BopDataset(dataset, root)
    s = summarize(ds)
    console.print(f"[bold]{s.title}[/bold] ({s.name}, {'registered' if s.registered else 'described by its folder'}) at {ds.path}")
    t = Table(title=f"objects ({len(s.objects)})")
    for col in ("obj_id", "diameter (mm)", "symmetry", "pose error"):
        t.add_column(col, justify="right" if col != "symmetry" else "left")
    for o in s.objects:
        t.add_row(str(o["obj_id"]), f"{o['diameter_mm']:.3f}", o["symmetry"], o["pose_error"])
    console.print(t)
    t = Table(title="splits")
    for col in ("split", "scenes", "images", "GT instances", "depth"):
        t.add_column(col, justify="right" if col != "split" else "left")
    for sp in s.splits:
        t.add_row(sp["split"], str(sp["scenes"]), str(sp["images"]), str(sp["instances"]), "yes" if sp["depth"] else "no")
    console.print(t)
    console.print(
        f"test targets (BOP'19): {s.n_targets} targets, {s.n_target_instances} instances in {s.n_target_images} images"
    )
    for n in s.notes:
        console.print(f"[yellow]note:[/yellow] {n}")


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="Registered dataset: lmo, lm, ycbv or tless.")],
    root: RootOpt = Path("bop_data"),
    parts: Annotated[
        list[str] | None,
        typer.Option(
            "--parts",
            "-p",
            help="Parts to fetch, repeated or comma-separated: base, models, test_bop19, test_all, train_pbr, "
            "train (as the dataset has them), or 'all'. Default: base, models, test_bop19.",
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            help="Base URL replacing https://huggingface.co/datasets/bop-benchmark (layout "
            "{URL}/{repo}/resolve/main/{file}), or a template containing {file} (and {repo}). "
            "Default: $BOPKD_MIRROR if set.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch and extract parts again even if marked complete.")
    ] = False,
    keep_archives: Annotated[
        bool,
        typer.Option(
            "--keep-archives", help="Keep the downloaded zips in ROOT/.bopkd/downloads after extracting."
        ),
    ] = False,
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            min=0,
            help="Consecutive failed attempts to retry (with backoff) on transient network errors; "
            "an attempt that made progress resets the count.",
        ),
    ] = 4,
) -> None:
    """Download, verify (size, SHA-256) and extract parts of a BOP dataset into ROOT/DATASET.

    Interrupted downloads resume (HTTP Range) on the next run; completed parts are marked in
    ROOT/DATASET/.bopkd/parts/ and skipped on reruns.
    """
    from bopkd.data.download import download_dataset

    results = download_dataset(
        dataset, root, parts, mirror=mirror, force=force, keep_archives=keep_archives, retries=retries
    )
    done = [r.part for r in results if not r.skipped]
    skipped = [r.part for r in results if r.skipped]
    what = []
    if done:
        what.append(f"downloaded {', '.join(done)}")
    if skipped:
        what.append(f"already complete: {', '.join(skipped)}")
    console.print(f"{dataset}: {'; '.join(what)} (in {root / dataset})", highlight=False)


@app.command()
def synth(
    name: Annotated[str, typer.Argument(help="Name of the dataset folder to write under --root.")] = "demo",
    root: RootOpt = Path("bop_data"),
    models: Annotated[
        str | None,
        typer.Option("--models", help="'procedural' (bopkd's objects 1-8) or a BOP models/ folder with models_info.json."),
    ] = None,
    train: Annotated[int | None, typer.Option("--train", min=0, help="Number of train_pbr images (default: 200).")] = None,
    test: Annotated[int | None, typer.Option("--test", min=0, help="Number of test images (default: 40).")] = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Image size WxH, e.g. 320x240 (K is scaled) (default: the camera's).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed; same seed, same files (default: 0).")] = None,
    camera: Annotated[
        str | None,
        typer.Option("--camera", help="Intrinsics of: lm, lmo, ycbv, tless, a dataset under --root or a camera.json (default: lmo)."),
    ] = None,
    objects: Annotated[
        str | None, typer.Option("--objects", help="Object ids to use, comma-separated, e.g. 1,2,5 (default: all).")
    ] = None,
    viewpoints: Annotated[
        str | None,
        typer.Option("--viewpoints", help="linemod (upper hemisphere, small in-plane rotation) or free (any rotation) (default: linemod)."),
    ] = None,
    per_image: Annotated[
        str | None, typer.Option("--per-image", help="Objects per image, MIN-MAX or N (default: 3-6).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with SynthConfig settings; options given here override it.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the dataset exists.")] = False,
) -> None:
    """Write a synthetic BOP dataset (RGB-D, masks, GT info, targets, models) to ROOT/NAME.

    Deterministic for a seed. A rerun over a complete dataset with the same settings does nothing; an
    interrupted build resumes at its first unfinished scene.
    """
    from bopkd.data.synth import build_synthetic_dataset, synth_config_from_options

    cfg = synth_config_from_options(
        name=name,
        root=root,
        config=config,
        models=models,
        train=train,
        test=test,
        size=size,
        seed=seed,
        camera=camera,
        objects=objects,
        viewpoints=viewpoints,
        per_image=per_image,
    )
    from tqdm import tqdm

    bars = []

    def progress(total: int):
        bar = tqdm(total=total, unit="img", desc=f"synth {name}", disable=not sys.stderr.isatty())
        bars.append(bar)
        return bar.update

    try:
        build_synthetic_dataset(
            cfg, force=force, log=lambda m: console.print(m, highlight=False, soft_wrap=True), progress=progress
        )
    finally:
        for b in bars:
            b.close()


@app.command()
def score(
    csvs: Annotated[
        list[Path], typer.Argument(help="BOP result files named METHOD_DATASET-SPLIT[-SPLITTYPE][_SUFFIX].csv.")
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
            help="bopkd (built in) or bop_toolkit (the official toolkit; needs $BOPKD_TOOLKIT_PYTHON and "
            "$BOPKD_TOOLKIT_PATH or the options below).",
        ),
    ] = "bopkd",
    out: Annotated[Path, typer.Option("--out", help="Folder for the score files.")] = Path("results/scores"),
    toolkit_python: Annotated[
        str | None, typer.Option("--toolkit-python", help="Python that imports bop_toolkit_lib (default: $BOPKD_TOOLKIT_PYTHON).")
    ] = None,
    toolkit_path: Annotated[
        Path | None, typer.Option("--toolkit-path", help="bop_toolkit checkout with scripts/ (default: $BOPKD_TOOLKIT_PATH).")
    ] = None,
    renderer: Annotated[
        str, typer.Option("--renderer", help="bop_toolkit's VSD renderer: vispy, cpp or python.")
    ] = "vispy",
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Comma-separated: bop19 (AR of VSD, MSSD, MSPD), ad (ADD(-S)-0.1d), adi, add.",
        ),
    ] = "bop19,ad",
) -> None:
    """Score BOP result files (BOP'19 AR: VSD, MSSD, MSPD; ADD(-S), ADI, ADD), or only check them.

    Writes OUT/<result name>/: scores_bop19.json, scores_ad.json (adi, add), recalls.csv, scores_bopkd.json.

    Without depth images VSD is skipped: AR is null, MSSD and MSPD are exact.
    """
    if check_only:
        from bopkd.eval.check import check_submission

        failed = 0
        for csv in csvs:
            try:
                rep = check_submission(csv, root)
            except BopkdError as e:
                failed += 1
                err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
                continue
            console.print(rep.summary(), highlight=False, soft_wrap=True)
            for n in rep.notes:
                console.print(f"  note: {n}", highlight=False, soft_wrap=True)
        if failed:
            raise BopkdError(f"{failed} of {len(csvs)} result files failed the check (see the lines above)")
        return
    if engine == "bop_toolkit":
        from bopkd.eval.toolkit_engine import output_path, score_with_toolkit

        for rec in score_with_toolkit(
            csvs, root, out, python=toolkit_python, toolkit_path=toolkit_path, renderer_type=renderer
        ):
            s = rec["scores"]
            vals = ", ".join(f"{k} {v:.4f}" for k, v in s.items() if v is not None)
            console.print(f"{rec['result_name']} (bop_toolkit): {vals}", highlight=False, soft_wrap=True)
            console.print(f"  -> {output_path(out, parse_name(rec['result_name']))}", highlight=False, soft_wrap=True)
        return
    if engine != "bopkd":
        raise BopkdError(f"unknown --engine {engine!r}; use bopkd or bop_toolkit")
    from bopkd.eval.scores_io import table
    from bopkd.eval.scoring import score_submissions

    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip())
    results = {}
    for csv in csvs:  # one at a time, so that each file's scores are written before the next starts
        res = score_submissions([csv], root=root, out_dir=out, metrics=wanted)
        for name, r in res.items():
            results[name] = r
            for n in r["notes"]:
                console.print(f"[yellow]note:[/yellow] {name}: {n}", highlight=False, soft_wrap=True)
            console.print(f"{name}: scored in {r['timings']['total']:.2f} s -> {out / name}", highlight=False)
    console.print(table(results))


def parse_name(name: str):
    """Parse a result name (used by ``score``); lazily imported so ``bopkd --help`` stays fast."""
    from bopkd.eval.naming import parse_result_name

    return parse_result_name(name)



def _split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


@app.command("run-pipeline")
def run_pipeline_cmd(
    dataset: Annotated[
        str,
        typer.Argument(help="demo (synthetic, the default), a registered BOP dataset (lmo, lm, ycbv, tless; "
                       "downloaded) or the name of a synthetic dataset to build."),
    ] = "demo",
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="demo (minutes on a CPU), quick (a real dataset at reduced scale) or paper "
                     "(Guo et al.'s settings, for GPUs). Default: demo for the dataset demo, else quick."),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option("--methods", help="Distillation methods, comma-separated or repeated (default: none,pred,fkd,ot,fkd+ot)."),
    ] = None,
    students: Annotated[
        list[str] | None,
        typer.Option("--students", help="Student backbones (darknet-tiny, darknet-tiny-h, tiny-cpu or timm names); "
                     "default: the preset's."),
    ] = None,
    seeds: Annotated[
        list[str] | None, typer.Option("--seeds", help="Student seeds, e.g. 0,1,2 (default: the preset's; the teacher uses the first).")
    ] = None,
    root: RootOpt = Path("bop_data"),
    results: Annotated[Path, typer.Option("--results", help="Folder of the BOP CSV submissions (scores in RESULTS/scores).")] = Path("results"),
    reports: Annotated[Path, typer.Option("--reports", help="Folder of reports (this run's: REPORTS/<dataset>-<preset>).")] = Path("reports"),
    runs: Annotated[Path, typer.Option("--runs", help="Folder of run state: RUNS/<dataset>-<preset>/{stages,logs,train}.")] = Path("runs"),
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")] = "auto",
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs (DDP processes) per training run.")] = 1,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Torch CPU threads (default: the cores not busy with other work).")
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option("--force", help="Run these stages even if done: a stage name, a kind (data, teacher, student, "
                     "predict, score, report), a glob (student-*-ot-*) or all; repeatable."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting: SCOPE.key=value with SCOPE synth, train, teacher, student, "
                     "student@BACKBONE|METHOD, predict or score; e.g. --set teacher.iters=300; repeatable."),
    ] = None,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Download mirror for registered datasets (default: $BOPKD_MIRROR).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the stage plan and what is already done; run nothing.")] = False,
) -> None:
    """Run every stage, from the dataset to a BOP-scored comparison report of all distillation methods.

    Stages: data (download or synthesise), teacher, each student x method x seed, predict, score, report.
    A rerun skips the stages that are done and reruns exactly those whose settings or inputs changed; an
    interrupted run (Ctrl-C, kill) resumes, training from its last checkpoint. State and logs are in
    RUNS/<dataset>-<preset>/; the BOP CSVs in RESULTS/ are ready to upload.
    """
    from bopkd.pipeline import PipelineOptions, run_pipeline

    seed_list = None
    if seeds:
        try:
            seed_list = [int(v) for v in _split_list(seeds) or []]
        except ValueError:
            raise BopkdError(f"--seeds {','.join(seeds)!r}: give integers, e.g. --seeds 0,1,2") from None
    opts = PipelineOptions(
        dataset=dataset,
        preset=preset,
        methods=_split_list(methods),
        students=_split_list(students),
        seeds=seed_list,
        root=root,
        results=results,
        reports=reports,
        runs=runs,
        device=device,
        gpus=gpus,
        threads=threads,
        force=_split_list(force) or [],
        sets=list(set_ or []),
        mirror=mirror,
        dry_run=dry_run,
    )
    res = run_pipeline(opts, console=console)
    if not dry_run:
        console.print(
            f"pipeline finished in {res.seconds:.1f} s: {len(res.executed)} stages run, {len(res.skipped)} already done; "
            f"report: {res.report_dir / 'report.html'}",
            highlight=False,
            soft_wrap=True,
        )


def main() -> None:
    """Entry point of the ``bopkd`` console script: one-line errors, no tracebacks."""
    try:
        rc = app(standalone_mode=False)
    except BopkdError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(
            "[red]interrupted[/red]: partial outputs were left as temporary files or removed; rerun to continue",
            soft_wrap=True,
        )
        sys.exit(130)
    except Exception as e:
        # Typer vendors click; its usage errors carry ``show`` and ``exit_code``.
        name = type(e).__name__
        if name == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        if name == "Abort":
            sys.exit(130)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise
    # Outside standalone mode Typer turns Ctrl-C into Exit(130) and returns exit codes instead of exiting.
    if rc == 130:
        err_console.print(
            "[red]interrupted[/red]: partial outputs were left as temporary files or removed; rerun to continue",
            soft_wrap=True,
        )
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
