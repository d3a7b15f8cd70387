"""What ``bopkd score`` does: check result files, or score them (bopkd engine, any protocol; or the toolkit).

The command line (``bopkd/cli/evaluate.py``) only declares the options; see :mod:`bopkd.eval.protocols` for the
protocols and their files, :mod:`bopkd.eval.check` for ``--check-only`` and :mod:`bopkd.eval.toolkit_engine`
for ``--engine bop_toolkit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bopkd.errors import BopkdError


def _print(console, text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def check_files(csvs: Sequence[Path], root: Path, console, err_console) -> None:
    """``--check-only``: validate each file and print its counts; one error line per failed file."""
    from bopkd.eval.check import check_submission

    failed = 0
    for csv in csvs:
        try:
            rep = check_submission(csv, root)
        except BopkdError as e:
            failed += 1
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            continue
        _print(console, rep.summary())
        for n in rep.notes:
            _print(console, f"  note: {n}")
    if failed:
        raise BopkdError(f"{failed} of {len(csvs)} result files failed the check (see the lines above)")


def score_with_official_toolkit(
    csvs, root, out, toolkit_python, toolkit_path, renderer, console, workers: int | None = None
) -> None:
    """``--engine bop_toolkit`` (BOP'19 only): run the official scripts and print their scores."""
    from bopkd.eval.naming import parse_result_name
    from bopkd.eval.scoring import resolve_workers
    from bopkd.eval.toolkit_engine import output_path, score_with_toolkit

    for rec in score_with_toolkit(
        csvs,
        root,
        out,
        python=toolkit_python,
        toolkit_path=toolkit_path,
        renderer_type=renderer,
        num_workers=resolve_workers(workers),
    ):
        vals = ", ".join(f"{k} {v:.4f}" for k, v in rec["scores"].items() if v is not None)
        _print(console, f"{rec['result_name']} (bop_toolkit): {vals}")
        _print(console, f"  -> {output_path(out, parse_result_name(rec['result_name']))}")


def run_score(
    csvs: Sequence[Path],
    root: Path,
    out: Path,
    *,
    console,
    err_console,
    check_only: bool = False,
    engine: str = "bopkd",
    metrics: str | None = None,
    protocol: str = "bop19",
    targets_file: str | None = None,
    toolkit_python: str | None = None,
    toolkit_path: Path | None = None,
    renderer: str = "vispy",
    workers: int | None = None,
) -> None:
    """The ``bopkd score`` command (options as there; ``metrics`` None means ``bop19,ad``)."""
    from bopkd.eval.protocols import parse_protocols, score_protocols, table_bop24
    from bopkd.eval.scores_io import table

    if check_only:
        return check_files(csvs, root, console, err_console)
    protocols = parse_protocols(protocol)
    if metrics is not None and "bop19" not in protocols:
        raise BopkdError("--metrics applies to --protocol bop19; add bop19 to --protocol or drop --metrics")
    if engine == "bop_toolkit":
        if protocols != ("bop19",):
            raise BopkdError(
                "--engine bop_toolkit scores --protocol bop19 only; use --engine bopkd for bop24/bop25"
            )
        return score_with_official_toolkit(
            csvs, root, out, toolkit_python, toolkit_path, renderer, console, workers
        )
    if engine != "bopkd":
        raise BopkdError(f"unknown --engine {engine!r}; use bopkd or bop_toolkit")
    wanted = tuple(m.strip() for m in (metrics or "bop19,ad").split(",") if m.strip())
    results: dict[str, dict] = {"bop19": {}, "bop24": {}}
    warned: set[str] = set()

    def done(name: str, family: str, r: dict) -> None:  # printed as each file's scores are written
        results[family][name] = r
        for w in r.get("warnings", []):
            if w not in warned:  # once per file, not once per protocol
                warned.add(w)
                err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
        for n in r["notes"]:
            _print(console, f"[yellow]note:[/yellow] {name} ({family}): {n}")
        _print(console, f"{name}: {family} scored in {r['timings']['total']:.2f} s -> {out / name}")

    score_protocols(
        csvs, root, out, protocols, wanted, targets_file=targets_file, on_result=done, workers=workers
    )
    if results["bop19"]:
        console.print(table(results["bop19"]))
    if results["bop24"]:
        console.print(table_bop24(results["bop24"], protocols))
