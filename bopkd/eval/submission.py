"""BOP'19 pose result files (CSV): read and validate (written by :mod:`bopkd.infer.export`).

Format (BOP Challenge 2019 onwards, ``docs/bop_challenge_2019.md`` of the BOP toolkit; read by
``bop_toolkit_lib/inout.py: load_bop_results`` and written by ``save_bop_results``)::

    scene_id,im_id,obj_id,score,R,t,time
    2,3,5,0.81,r11 r12 r13 r21 r22 r23 r31 r32 r33,tx ty tz,-1

one row per estimate: ``R`` is the 3x3 model-to-camera rotation, 9 floats row-major separated by spaces;
``t`` the translation in mm, 3 floats; ``time`` the wall time in seconds spent on the whole image (the
same on every row of one image, ``-1`` when unknown). The toolkit's ``check_consistent_timings`` allows
times of one image to differ by at most :data:`TIME_TOL` s; we use the same tolerance.

We are stricter than the toolkit's reader in ways that only reject files the toolkit would misread or
score wrongly: the header is required, blank lines, NaN/inf, negative ids and R that are not rotations
are rejected (the toolkit does not check R at all; :data:`ROTATION_TOL` is ours). Every problem raises
:class:`~bopkd.errors.BopkdError` with ``FILE:LINE: column COL: problem; fix``.

The writer (:func:`bopkd.infer.export.write_submission`) checks its rows with :func:`validate_arrays`, so
every file it writes reads back here exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError, MissingFileError

HEADER = "scene_id,im_id,obj_id,score,R,t,time"
COLUMNS: tuple[str, ...] = tuple(HEADER.split(","))

#: Times of one image may differ by at most this many seconds (``bop_toolkit_lib/inout.py:
#: check_consistent_timings`` uses ``abs(a - b) > 0.001``).
TIME_TOL = 1e-3

#: R is accepted as a rotation when ``max |R R^T - I| <= ROTATION_TOL`` and ``det R > 0``. The toolkit has no
#: such check. The official LM-O ground truth itself (``test/000002/scene_gt.json``, 8 decimals) deviates by
#: up to 0.0096 (measured on the shared fixture), so 0.02 admits it and float32 output while rejecting scaled
#: (x1.1 gives 0.21), sheared and reflected matrices.
ROTATION_TOL = 2e-2

_FIX = "fix the row or regenerate the file"


@dataclass(frozen=True, eq=False)
class Estimate:
    """One pose estimate of a BOP result file.

    Attributes:
        scene_id, im_id, obj_id: BOP ids.
        score: confidence (higher is better).
        R: (3, 3) float64 model-to-camera rotation (read-only copy).
        t: (3,) float64 translation in mm (read-only copy; (3, 1) input is accepted).
        time: seconds spent on the whole image, -1 when unknown.
    """

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray
    t: np.ndarray
    time: float = -1.0

    def __post_init__(self) -> None:
        R = np.array(self.R, dtype=np.float64).reshape(3, 3)
        t = np.array(self.t, dtype=np.float64).reshape(3)
        R.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)
        for k in ("scene_id", "im_id", "obj_id"):
            object.__setattr__(self, k, int(getattr(self, k)))
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "time", float(self.time))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Estimate):
            return NotImplemented
        return (
            (self.scene_id, self.im_id, self.obj_id) == (other.scene_id, other.im_id, other.obj_id)
            and self.score == other.score
            and self.time == other.time
            and bool(np.array_equal(self.R, other.R))
            and bool(np.array_equal(self.t, other.t))
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays


# --------------------------------------------------------------------------------------------- reading


class _RowError(Exception):
    def __init__(self, column: str | None, msg: str):
        self.column = column
        self.msg = msg


def _err(path: Path, line: int | None, column: str | None, msg: str, fix: str = _FIX) -> BopkdError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    col = f" column {column}:" if column else ""
    return BopkdError(f"{where}:{col} {msg}; {fix}")


def _parse_int(s: str, column: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise _RowError(column, f"{s.strip()!r} is not an integer") from None
    if v < 0:
        raise _RowError(column, f"{v} is negative, BOP ids are >= 0")
    return v


def _parse_floats(s: str, column: str, n: int) -> list[float]:
    toks = s.split()
    if len(toks) != n:
        what = "value" if len(toks) == 1 else "values"
        raise _RowError(
            column, f"{len(toks)} {what}, expected {n}" + (" separated by spaces" if n > 1 else "")
        )
    out = []
    for tok in toks:
        try:
            v = float(tok)
        except ValueError:
            raise _RowError(column, f"{tok!r} is not a number") from None
        if not math.isfinite(v):
            raise _RowError(column, f"{tok!r} is not a finite number")
        out.append(v)
    return out


def _parse_row(line: str) -> tuple:
    """Parse one data line carefully; raises :class:`_RowError` naming the column."""
    if not line.strip():
        raise _RowError(None, "empty line (the toolkit rejects it)")
    if line.strip() == HEADER:
        raise _RowError(None, "duplicate header (files were concatenated?)")
    f = line.split(",")
    if len(f) != 7:
        raise _RowError(None, f"{len(f)} comma-separated columns, expected 7 ({HEADER})")
    scene, im, obj = (_parse_int(f[i], COLUMNS[i]) for i in range(3))
    (score,) = _parse_floats(f[3], "score", 1)
    R = _parse_floats(f[4], "R", 9)
    t = _parse_floats(f[5], "t", 3)
    (time,) = _parse_floats(f[6], "time", 1)
    return scene, im, obj, score, R, t, time


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        if path.exists():
            raise BopkdError(f"{path}: not a file; pass a BOP result .csv file")
        raise MissingFileError(path, "pass an existing BOP result .csv file (see bopkd export)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BopkdError(
            f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); regenerate the file"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise _err(
            path,
            None,
            None,
            f"empty file, expected the header {HEADER} and one row per estimate",
            "regenerate the file",
        )
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last row
    return [ln.removesuffix("\r") for ln in lines]


def _fast_parse(rows: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Vectorised parse of the data rows; None when anything looks off (the careful parse then locates it)."""
    n = len(rows)
    fields = [r.split(",") for r in rows]
    if any(len(f) != 7 for f in fields):
        return None
    cols = list(zip(*fields, strict=True))
    try:
        ids = [np.array(cols[i], dtype=object).astype(np.int64) for i in range(3)]
        r_str, t_str = cols[4], cols[5]
        if any(len(s.split()) != 9 for s in r_str) or any(len(s.split()) != 3 for s in t_str):
            return None
        R = np.array(" ".join(r_str).split(), dtype=np.float64).reshape(n, 3, 3)
        t = np.array(" ".join(t_str).split(), dtype=np.float64).reshape(n, 3)
        score = np.array(cols[3], dtype=np.float64)
        time = np.array(cols[6], dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if any((a < 0).any() for a in ids):
        return None
    if not all(np.isfinite(a).all() for a in (R, t, score, time)):
        return None
    return {
        "scene_id": ids[0],
        "im_id": ids[1],
        "obj_id": ids[2],
        "score": score,
        "R": R,
        "t": t,
        "time": time,
    }


def _careful_parse(path: Path, rows: Sequence[str], first_line: int) -> dict[str, np.ndarray]:
    out: list[tuple] = []
    for k, row in enumerate(rows):
        try:
            out.append(_parse_row(row))
        except _RowError as e:
            raise _err(path, first_line + k, e.column, e.msg) from None
    scene, im, obj, score, R, t, time = zip(*out, strict=True)
    return {
        "scene_id": np.array(scene, dtype=np.int64),
        "im_id": np.array(im, dtype=np.int64),
        "obj_id": np.array(obj, dtype=np.int64),
        "score": np.array(score, dtype=np.float64),
        "R": np.array(R, dtype=np.float64).reshape(-1, 3, 3),
        "t": np.array(t, dtype=np.float64).reshape(-1, 3),
        "time": np.array(time, dtype=np.float64),
    }


def rotation_errors(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per matrix: ``max |R R^T - I|`` and ``det R``. R: (N, 3, 3) -> two (N,) arrays."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    orth = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    return orth, np.linalg.det(R)


def _image_keys(scene_id: np.ndarray, im_id: np.ndarray) -> np.ndarray:
    """One int64 per (scene_id, im_id) (1-D np.unique is much faster than unique rows); ids are >= 0."""
    scene = np.asarray(scene_id, dtype=np.int64)
    im = np.asarray(im_id, dtype=np.int64)
    if len(im) and (im.max() >= 2**32 or scene.max() >= 2**31):
        return np.unique(np.stack([scene, im], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    return (scene << 32) | im


def first_inconsistent_time(
    scene_id: np.ndarray, im_id: np.ndarray, time: np.ndarray
) -> tuple[int, int] | None:
    """Index of the first row whose time differs (by > :data:`TIME_TOL`) from the first row of its image.

    Returns ``(row, first_row_of_that_image)`` or None when every image has one time.
    """
    if len(time) == 0:
        return None
    _, inv = np.unique(_image_keys(scene_id, im_id), return_inverse=True)
    inv = inv.reshape(-1)
    first = np.full(inv.max() + 1, len(time), dtype=np.int64)
    np.minimum.at(first, inv, np.arange(len(time)))
    ref = first[inv]
    bad = np.flatnonzero(np.abs(time - time[ref]) > TIME_TOL)
    if len(bad) == 0:
        return None
    return int(bad[0]), int(ref[bad[0]])


def average_time_per_image(scene_id: np.ndarray, im_id: np.ndarray, time: np.ndarray) -> float:
    """Mean over images of the per-image time (s), or -1 when any row has a negative (unknown) time.

    As ``scripts/eval_bop19_pose.py`` computes ``bop19_average_time_per_image`` (times of one image are
    equal after validation, so the image's first row gives its time).
    """
    time = np.asarray(time, dtype=np.float64)
    if len(time) == 0 or (time < 0).any():
        return -1.0
    _, first = np.unique(_image_keys(scene_id, im_id), return_index=True)
    return float(np.mean(time[first]))


def validate_arrays(
    arrays: dict[str, np.ndarray],
    obj_ids: Iterable[int] | None = None,
    check_rotation: bool = True,
    where: str = "estimates",
    lines: np.ndarray | None = None,
    fix: str = _FIX,
) -> None:
    """Check the semantics of parsed estimates (times, rotations, object ids, finiteness, ids >= 0).

    Raises :class:`BopkdError` ``WHERE:LINE: column COL: problem; fix``; ``lines`` maps rows to line numbers
    (without it, the message says ``row K``, 0-based).
    """

    def at(i: int) -> str:
        return f"{where}:{int(lines[i])}" if lines is not None else f"{where}: row {i}"

    for c in ("scene_id", "im_id", "obj_id"):
        bad = np.flatnonzero(arrays[c] < 0)
        if len(bad):
            i = bad[0]
            raise BopkdError(f"{at(i)}: column {c}: {int(arrays[c][i])} is negative, BOP ids are >= 0; {fix}")
    for c in ("score", "R", "t", "time"):
        a = arrays[c].reshape(len(arrays[c]), -1)
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        if len(bad):
            raise BopkdError(f"{at(bad[0])}: column {c}: not a finite number; {fix}")
    time = arrays["time"]
    bad = np.flatnonzero((time < 0) & (time != -1.0))
    if len(bad):
        i = bad[0]
        raise BopkdError(
            f"{at(i)}: column time: {float(time[i])!r} is negative; use -1 when the time is unknown; {fix}"
        )
    inc = first_inconsistent_time(arrays["scene_id"], arrays["im_id"], time)
    if inc is not None:
        i, j = inc
        other = f"line {int(lines[j])}" if lines is not None else f"row {j}"
        raise BopkdError(
            f"{at(i)}: column time: {float(time[i])!r} differs from {float(time[j])!r} on {other} for the same image "
            f"(scene {int(arrays['scene_id'][i])}, im {int(arrays['im_id'][i])}); every row of one image must carry "
            f"the same time (seconds for the whole image, -1 if unknown); {fix}"
        )
    if obj_ids is not None:
        known = np.array(sorted({int(o) for o in obj_ids}), dtype=np.int64)
        bad = np.flatnonzero(~np.isin(arrays["obj_id"], known))
        if len(bad):
            i = bad[0]
            raise BopkdError(
                f"{at(i)}: column obj_id: object {int(arrays['obj_id'][i])} is not an object of the dataset "
                f"(objects: {', '.join(map(str, known.tolist()))}); {fix}"
            )
    if check_rotation and len(time):
        orth, det = rotation_errors(arrays["R"])
        bad = np.flatnonzero(~((orth <= ROTATION_TOL) & (det > 0)))
        if len(bad):
            i = bad[0]
            why = (
                f"det {det[i]:.4g}" if det[i] <= 0 else f"max |R R^T - I| = {orth[i]:.3g} > {ROTATION_TOL:g}"
            )
            raise BopkdError(
                f"{at(i)}: column R: not a rotation matrix ({why}); write a proper rotation (9 floats, row-major); {fix}"
            )


def read_submission_arrays(
    path: str | Path,
    obj_ids: Iterable[int] | None = None,
    check_rotation: bool = True,
    allow_empty: bool = False,
) -> dict[str, np.ndarray]:
    """Read and validate a BOP'19 result CSV into arrays, in file order.

    Returns a dict: ``scene_id``, ``im_id``, ``obj_id`` (N,) int64; ``score`` (N,) float64; ``R`` (N, 3, 3)
    float64; ``t`` (N, 3) float64 mm; ``time`` (N,) float64 s (-1 unknown); ``line`` (N,) int64, the 1-based
    line number of each row (for error messages).

    Args:
        obj_ids: the dataset's object ids; rows of other objects are an error. None: not checked.
        check_rotation: reject R that are not rotations (see :data:`ROTATION_TOL`).
        allow_empty: a header without estimates gives empty arrays (as the toolkit reads it) instead of
            an error.

    Raises :class:`BopkdError` (``FILE:LINE: column COL: ...``) on the first problem.
    """
    path = Path(path)
    lines = _read_lines(path)
    if lines[0].strip() != HEADER:
        msg = f"wrong header {lines[0][:80]!r}, expected {HEADER!r}"
        raise _err(path, 1, None, msg, "put the header on the first line or regenerate the file")
    rows = lines[1:]
    if not rows and allow_empty:
        z = np.zeros(0, np.int64)
        f = np.zeros(0, np.float64)
        return {
            "scene_id": z,
            "im_id": z,
            "obj_id": z,
            "score": f,
            "R": np.zeros((0, 3, 3)),
            "t": np.zeros((0, 3)),
            "time": f,
            "line": z,
        }
    if not rows:
        raise _err(path, None, None, "no estimates after the header", "regenerate the file")
    arrays = _fast_parse(rows)
    if arrays is None:
        arrays = _careful_parse(path, rows, first_line=2)
    arrays["line"] = np.arange(2, 2 + len(rows), dtype=np.int64)
    validate_arrays(
        arrays, obj_ids=obj_ids, check_rotation=check_rotation, where=str(path), lines=arrays["line"]
    )
    return arrays


def estimates_from_arrays(arrays: dict[str, np.ndarray]) -> list[Estimate]:
    """Arrays as returned by :func:`read_submission_arrays` -> list of :class:`Estimate`."""
    return [
        Estimate(int(s), int(i), int(o), float(c), R, t, float(tm))
        for s, i, o, c, R, t, tm in zip(
            arrays["scene_id"].tolist(),
            arrays["im_id"].tolist(),
            arrays["obj_id"].tolist(),
            arrays["score"].tolist(),
            arrays["R"],
            arrays["t"],
            arrays["time"].tolist(),
            strict=True,
        )
    ]


def read_submission(
    path: str | Path, obj_ids: Iterable[int] | None = None, check_rotation: bool = True
) -> list[Estimate]:
    """Read and validate a BOP'19 result CSV into :class:`Estimate` objects, in file order.

    See :func:`read_submission_arrays` (faster for scoring) for the checks and errors.
    """
    return estimates_from_arrays(read_submission_arrays(path, obj_ids=obj_ids, check_rotation=check_rotation))
