"""The score folder of one result file, ``OUT/<result name>/``, written as one set.

Each protocol's files (:data:`BOP19_FILES`, :data:`BOP24_FILES`) come from one run: a run writes the
files of the protocols it scores into a staging folder and swaps it in with
:func:`bopkd.utils.atomic.replace_folder`, which lets concurrent writers take turns and leaves the
previous folder, never a part of the new one, when the process dies. Files of the protocols the run does
not score (and files bopkd does not write, such as the toolkit engine's ``scores_bop_toolkit.json``) are
kept; files of a scored protocol that the run does not write (``scores_adi.json`` of an earlier run with
``--metrics bop19,ad,adi``) are dropped with the rest of that earlier set.
"""

from __future__ import annotations

from pathlib import Path

from bopkd.utils.atomic import replace_folder

#: Files of the BOP'19 protocol (``bopkd.eval.scores_io``), and of BOP'24/'25 (``bopkd.eval.protocols``).
BOP19_FILES = (
    "scores_bop19.json",
    "scores_ad.json",
    "scores_adi.json",
    "scores_add.json",
    "recalls.csv",
    "scores_bopkd.json",
)
BOP24_FILES = ("scores_bop24.json", "aps_bop24.csv")


def publish_scores(
    out_dir: str | Path, result_name: str, bop19: dict | None = None, bop24: dict | None = None
) -> dict[str, list[Path]]:
    """Write the files of the given results of one result file into ``out_dir/result_name/`` together.

    Returns ``{"bop19": paths, "bop24": paths}`` for the results given.
    """
    from bopkd.eval.protocols import write_bop24_files
    from bopkd.eval.scores_io import write_bop19_files

    own = set(BOP19_FILES if bop19 is not None else ()) | set(BOP24_FILES if bop24 is not None else ())
    dest = Path(out_dir) / result_name
    names: dict[str, list[str]] = {}
    with replace_folder(dest, keep=lambda name: name not in own) as stage:
        if bop19 is not None:
            names["bop19"] = [p.name for p in write_bop19_files(bop19, stage)]
        if bop24 is not None:
            names["bop24"] = [p.name for p in write_bop24_files(bop24, stage)]
    return {k: [dest / n for n in v] for k, v in names.items()}
