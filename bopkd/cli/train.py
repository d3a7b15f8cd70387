"""``bopkd train teacher|student`` (:mod:`bopkd.train`) and ``bopkd predict`` (:mod:`bopkd.infer`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bopkd.cli.app import RootOpt, SetOpt, app, console

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
FamilyOpt = Annotated[
    str | None,
    typer.Option(
        "--family",
        help="Pose family: sparse (WDRNet-style keypoints, default) or dense (ZebraPose-style surface codes on "
        "zoom-in crops; needs data.mode=crop and data.crop_size = 2 * dense.out_size). Writes 'family'.",
    ),
]


def _train_options(
    dataset, root, iters, batch_size, lr, device, out, backbone=None, kd=None, teacher=None, family=None
) -> dict:
    return {
        "family": family,
        "data": {"dataset": dataset, "root": None if root is None else str(root)},
        "model": {"backbone": backbone},
        "optim": {"lr": lr},
        "kd": {"method": kd, "teacher": None if teacher is None else str(teacher)},
        "iters": iters,
        "batch_size": batch_size,
        "device": device,
        "out": None if out is None else str(out),
    }


def _run_train(role: str, preset, config, options: dict, sets, resume: bool, gpus, kd_weight=None) -> None:
    from bopkd.train.command import summary_line, train_command

    summary = train_command(
        role,
        preset=preset,
        config_file=config,
        options=options,
        sets=sets or [],
        resume=resume,
        gpus=gpus,
        argv=sys.argv[1:],
        kd_weight=kd_weight,
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
    family: FamilyOpt = None,
) -> None:
    """Train a teacher network (default darknet53) on a BOP dataset's training split.

    Writes RUN_DIR/config.yaml, metrics.csv/.jsonl, checkpoints/last.pt (every ckpt_every iterations)
    and checkpoints/final.pt. A killed run continues with --resume.
    """
    _run_train(
        "teacher",
        preset,
        config,
        _train_options(dataset, root, iters, batch_size, lr, device, out, backbone, family=family),
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
            help="Weight of the distillation loss, written into kd.options.weight (kd.options.ot.weight for "
            "fkd+ot); default: the method's (ot 5, pred 5, fkd 1).",
        ),
    ] = None,
    family: FamilyOpt = None,
) -> None:
    """Train a compact student network, distilled from a frozen teacher with --kd/--teacher, or the baseline
    without distillation (--kd none). Method options: --set kd.options.NAME=VALUE (e.g. kd.options.detach_scores=true)."""
    _run_train(
        "student",
        preset,
        config,
        _train_options(dataset, root, iters, batch_size, lr, device, out, backbone, kd, teacher, family),
        set_,
        resume,
        gpus,
        kd_weight,
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
    from bopkd.infer.predict import predict as run_predict

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
