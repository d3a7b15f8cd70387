"""The ``bopkd`` Typer application, its consoles and the options its commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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


SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any config key, repeatable: --set optim.weight_decay=0 --set data.mode=crop"
    ),
]
