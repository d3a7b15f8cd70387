"""``bopkd info``, ``bopkd download`` and ``bopkd synth``: BOP datasets (:mod:`bopkd.data`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bopkd.cli.app import RootOpt, app, console


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
