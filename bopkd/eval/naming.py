"""Names of BOP result files: ``METHOD_DATASET-SPLIT[-SPLITTYPE][_SUFFIX].csv``.

The BOP toolkit (``bop_toolkit_lib/inout.py``: ``parse_result_filename`` and ``create_pose_result_filename``,
used by ``scripts/eval_bop19_pose.py``) reads a result file name as follows: the *result name* is the base
name up to its first ``.``; it is split at ``_``; the first part is the method, the second part is split at
``-`` into dataset, split and an optional split type (``tless-test-primesense``); any further ``_`` parts are
an optional id (a submission UUID, for example) that the toolkit ignores except as part of the result name,
which names the evaluation folder.

So the method may contain ``-`` but not ``_``; the dataset and split may contain neither; the split type is
joined with ``-`` (the toolkit's own separator; ``tless-test-primesense`` means split folder
``test_primesense``). Names are parsed and built only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bopkd.errors import BopkdError

#: Characters allowed in a name part (letters, digits, ``-`` where allowed); no ``.``, ``_``, ``/``, spaces.
_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+-]*$")
_PART_RE = re.compile(r"^[A-Za-z0-9]+$")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9+-]+(?:_[A-Za-z0-9+-]+)*$")

FORMAT_HINT = (
    "METHOD_DATASET-SPLIT[-SPLITTYPE][_SUFFIX].csv, e.g. bopkd-ot-student_lmo-test.csv (METHOD without '_')"
)


@dataclass(frozen=True)
class ResultName:
    """The parts of a BOP result file name.

    Attributes:
        method: method name; may contain ``-`` but not ``_`` (``bopkd-ot-student``).
        dataset: BOP dataset short name (``lmo``).
        split: split name (``test``).
        split_type: optional split type (``primesense`` for T-LESS), joined to the split with ``-``.
        suffix: optional id after a further ``_`` (may itself contain ``_``); the toolkit ignores it.
    """

    method: str
    dataset: str
    split: str
    split_type: str | None = None
    suffix: str = ""

    def __post_init__(self) -> None:
        if not _METHOD_RE.match(self.method):
            raise BopkdError(
                f"method name {self.method!r} is not allowed in a BOP result file name: use letters, digits, "
                f"'+' and '-' only (no '_' or '.'), e.g. bopkd-ot-student"
            )
        for what, v in (("dataset", self.dataset), ("split", self.split)):
            if not _PART_RE.match(v):
                raise BopkdError(
                    f"{what} name {v!r} is not allowed in a BOP result file name: use letters and digits only"
                )
        if self.split_type is not None and not _PART_RE.match(self.split_type):
            raise BopkdError(
                f"split type {self.split_type!r} is not allowed in a BOP result file name: use letters and digits only"
            )
        if self.suffix and not _SUFFIX_RE.match(self.suffix):
            raise BopkdError(
                f"suffix {self.suffix!r} is not allowed in a BOP result file name: use letters, digits, '+', '-' and '_'"
            )

    def __str__(self) -> str:
        """The result name (the file name without ``.csv``); the toolkit names its eval folder after it."""
        s = f"{self.method}_{self.dataset}-{self.split}"
        if self.split_type:
            s += f"-{self.split_type}"
        if self.suffix:
            s += f"_{self.suffix}"
        return s

    @property
    def result_name(self) -> str:
        return str(self)

    @property
    def filename(self) -> str:
        """The file name, ``str(self) + ".csv"``."""
        return f"{self}.csv"

    @property
    def split_folder(self) -> str:
        """The dataset's split folder: ``test``, or ``test_primesense`` when a split type is given (BOP layout)."""
        return f"{self.split}_{self.split_type}" if self.split_type else self.split


def parse_result_name(path_or_name: str | Path) -> ResultName:
    """Parse a result file name or path (with or without ``.csv``) into its parts.

    Accepts what ``bop_toolkit_lib.inout.parse_result_filename`` accepts for pose results, but is stricter
    about the characters of each part (see :class:`ResultName`). Raises :class:`BopkdError` when malformed.
    """
    base = Path(str(path_or_name)).name
    stem, dot, ext = base.partition(".")
    if dot and ext != "csv":
        raise BopkdError(
            f"{path_or_name}: a BOP pose result file must end in .csv (and have no other '.'): rename it to {FORMAT_HINT}"
        )
    parts = stem.split("_")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BopkdError(f"{path_or_name}: malformed result file name; rename it to {FORMAT_HINT}")
    method, ds_info, suffix_parts = parts[0], parts[1], parts[2:]
    ds = ds_info.split("-")
    if len(ds) not in (2, 3) or not all(ds):
        raise BopkdError(
            f"{path_or_name}: malformed result file name: {ds_info!r} should be DATASET-SPLIT or DATASET-SPLIT-SPLITTYPE; "
            f"rename it to {FORMAT_HINT}"
        )
    if not all(suffix_parts):
        raise BopkdError(
            f"{path_or_name}: malformed result file name: empty part between '_'; rename it to {FORMAT_HINT}"
        )
    suffix = "_".join(suffix_parts)
    try:
        return ResultName(
            method=method,
            dataset=ds[0],
            split=ds[1],
            split_type=ds[2] if len(ds) == 3 else None,
            suffix=suffix,
        )
    except BopkdError as e:
        raise BopkdError(f"{path_or_name}: {e}; rename it to {FORMAT_HINT}") from None
