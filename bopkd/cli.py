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


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """bopkd: BOP datasets, 6D pose networks, knowledge distillation and BOP scoring."""
    if version:
        from bopkd import __version__

        console.print(f"bopkd {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


RootOpt = Annotated[Path, typer.Option("--root", help="Folder that holds the BOP datasets.")]


@app.command()
def info(
    dataset: Annotated[
        str, typer.Argument(help="Dataset name: registered (lmo, lm, ycbv, tless) or a folder under --root.")
    ],
    root: RootOpt = Path("bop_data"),
) -> None:
    """Print a dataset's objects, splits, scenes, images, GT instances and test targets."""
    from bopkd.data.dataset import BopDataset
    from bopkd.data.summary import summarize

    ds = BopDataset(dataset, root)
    s = summarize(ds)
    console.print(
        f"[bold]{s.title}[/bold] ({s.name}, {'registered' if s.registered else 'described by its folder'}) at {ds.path}"
    )
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
        t.add_row(
            sp["split"],
            str(sp["scenes"]),
            str(sp["images"]),
            str(sp["instances"]),
            "yes" if sp["depth"] else "no",
        )
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
        typer.Option(
            "--models",
            help="'procedural' (bopkd's objects 1-8) or a BOP models/ folder with models_info.json.",
        ),
    ] = None,
    train: Annotated[
        int | None, typer.Option("--train", min=0, help="Number of train_pbr images (default: 200).")
    ] = None,
    test: Annotated[
        int | None, typer.Option("--test", min=0, help="Number of test images (default: 40).")
    ] = None,
    size: Annotated[
        str | None,
        typer.Option("--size", help="Image size WxH, e.g. 320x240 (K is scaled) (default: the camera's)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed; same seed, same files (default: 0).")
    ] = None,
    camera: Annotated[
        str | None,
        typer.Option(
            "--camera",
            help="Intrinsics of: lm, lmo, ycbv, tless, a dataset under --root or a camera.json (default: lmo).",
        ),
    ] = None,
    objects: Annotated[
        str | None,
        typer.Option("--objects", help="Object ids to use, comma-separated, e.g. 1,2,5 (default: all)."),
    ] = None,
    viewpoints: Annotated[
        str | None,
        typer.Option(
            "--viewpoints",
            help="linemod (upper hemisphere, small in-plane rotation) or free (any rotation) (default: linemod).",
        ),
    ] = None,
    per_image: Annotated[
        str | None, typer.Option("--per-image", help="Objects per image, MIN-MAX or N (default: 3-6).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file with SynthConfig settings; options given here override it."),
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
            cfg,
            force=force,
            log=lambda m: console.print(m, highlight=False, soft_wrap=True),
            progress=progress,
        )
    finally:
        for b in bars:
            b.close()


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


# --- training and prediction (bopkd.train) -----------------------------------------------------------

train_app = typer.Typer(
    help="Train a pose network: a teacher, or a student (optionally distilled from a teacher).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(train_app, name="train")

TrainDatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="Dataset name (registered or a folder under --root). Default: lmo."),
]
TrainRootOpt = Annotated[
    Path | None, typer.Option("--root", help="Folder that holds the BOP datasets. Default: bop_data.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML run config (e.g. a run's config.yaml).")
]
PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="Settings preset: paper, paper-crop, cpu-quick or demo.")
]
ItersOpt = Annotated[int | None, typer.Option("--iters", min=1, help="Optimiser steps.")]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Images (crops) per step and process.")
]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Peak learning rate (AdamW, one-cycle).")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Run directory (default runs/<role>-<dataset>-<backbone>).")
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in the run directory from its last checkpoint.")
]
GpusOpt = Annotated[
    int | None, typer.Option("--gpus", min=1, help="Processes (GPUs) for DDP; >1 re-launches under torchrun.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any config key, repeatable: --set optim.weight_decay=0 --set data.mode=crop"
    ),
]


def _train_options(
    dataset, root, iters, batch_size, lr, device, out, backbone=None, kd=None, teacher=None, kd_weight=None
) -> dict:
    return {
        "data": {"dataset": dataset, "root": None if root is None else str(root)},
        "model": {"backbone": backbone},
        "optim": {"lr": lr},
        "kd": {"method": kd, "teacher": None if teacher is None else str(teacher), "weight": kd_weight},
        "iters": iters,
        "batch_size": batch_size,
        "device": device,
        "out": None if out is None else str(out),
    }


def _run_train(role: str, preset, config, options: dict, sets, resume: bool, gpus) -> None:
    from bopkd.train.trainer import summary_line, train_command

    summary = train_command(
        role,
        preset=preset,
        config_file=config,
        options=options,
        sets=sets or [],
        resume=resume,
        gpus=gpus,
        argv=sys.argv[1:],
    )
    if summary is not None:
        console.print(summary_line(summary, Path(summary["run_dir"])), highlight=False, soft_wrap=True)


@train_app.command("teacher")
def train_teacher(
    dataset: TrainDatasetOpt = None,
    root: TrainRootOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    gpus: GpusOpt = None,
    set_: SetOpt = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Backbone preset or timm name (default darknet53).")
    ] = None,
) -> None:
    """Train a teacher network (default darknet53) on a BOP dataset's training split.

    Writes RUN_DIR/config.yaml, metrics.csv/.jsonl, checkpoints/last.pt (every ckpt_every iterations)
    and checkpoints/final.pt. A killed run continues with --resume.
    """
    _run_train(
        "teacher",
        preset,
        config,
        _train_options(dataset, root, iters, batch_size, lr, device, out, backbone),
        set_,
        resume,
        gpus,
    )


@train_app.command("student")
def train_student(
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone", help="Student backbone: darknet-tiny, darknet-tiny-h, tiny-cpu or a timm name."
        ),
    ],
    dataset: TrainDatasetOpt = None,
    root: TrainRootOpt = None,
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    iters: ItersOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    gpus: GpusOpt = None,
    set_: SetOpt = None,
    kd: Annotated[
        str | None,
        typer.Option(
            "--kd",
            help="Distillation method (bopkd.losses.kd registry): none (the student baseline, default), pred "
            "(prediction-to-prediction), fkd (Zhang & Ma's feature distillation), ot (Guo et al.'s OT "
            "distillation of keypoint distributions) or fkd+ot.",
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher", help="Teacher checkpoint or run directory (frozen; needed by every --kd but none)."
        ),
    ] = None,
    kd_weight: Annotated[
        float | None,
        typer.Option(
            "--kd-weight",
            min=0.0,
            help="Weight of the distillation loss (default: the method's; ot 5, pred 5, fkd 1).",
        ),
    ] = None,
) -> None:
    """Train a compact student network, distilled from a frozen teacher with --kd/--teacher, or the baseline
    without distillation (--kd none). Method options: --set kd.options.NAME=VALUE (e.g. kd.options.detach_scores=true)."""
    _run_train(
        "student",
        preset,
        config,
        _train_options(dataset, root, iters, batch_size, lr, device, out, backbone, kd, teacher, kd_weight),
        set_,
        resume,
        gpus,
    )


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint .pt file or run directory.")],
    dataset: Annotated[
        str, typer.Option("--dataset", help="Dataset to run on (its objects must include the model's).")
    ],
    root: RootOpt = Path("bop_data"),
    split: Annotated[
        str | None, typer.Option("--split", help="Split folder (default: the dataset's test split).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Output folder for the CSV and its .json sidecar.")
    ] = Path("results"),
    method: Annotated[
        str | None,
        typer.Option("--method", help="Method name in the file name (letters, digits, '-', '+'; no '_')."),
    ] = None,
    detections: Annotated[
        Path | None,
        typer.Option(
            "--detections",
            help="BOP default-detections JSON for crop-mode models (else GT boxes: oracle protocol).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
    ] = "auto",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Images (crops) per forward pass.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="DataLoader workers (default: the run's).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Estimate poses of the test targets and write OUT/<method>_<dataset>-<split>.csv (BOP'19 format).

    Also writes <csv>.json with the model's parameters, MACs, ms/image, device and protocol.
    """
    from bopkd.train.predict import predict as run_predict

    res = run_predict(
        checkpoint,
        dataset=dataset,
        root=root,
        split=split,
        out=out,
        method=method,
        detections=detections,
        device=device,
        batch_size=batch_size,
        num_workers=workers,
        sets=set_ or [],
        progress=sys.stderr.isatty(),
    )
    console.print(
        f"{res.n_estimates} estimates for {res.n_images} images ({res.protocol}, {res.ms_per_image:.1f} ms/image) "
        f"-> {res.csv} (+ {res.sidecar.name})",
        highlight=False,
        soft_wrap=True,
    )


def _split_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


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
        detections=detections,
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
