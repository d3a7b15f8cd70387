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



def main() -> None:
    """Entry point of the ``bopkd`` console script: one-line errors, no tracebacks."""
    try:
        app(standalone_mode=False)
    except BopkdError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]: partial outputs were left as temporary files or removed; rerun to continue")
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


if __name__ == "__main__":
    main()
