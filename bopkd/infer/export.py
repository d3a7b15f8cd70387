"""BOP'19 result CSV export: per-image times, the toolkit's per-image limit, and the CSV writer.

Layout of the file (``scene_id,im_id,obj_id,score,R,t,time``; BOP toolkit ``docs/bop_challenge_2019.md``,
``bop_toolkit_lib/inout.py: save_bop_results``) and its reader: :mod:`bopkd.eval.submission`. Values are
written with ``repr`` of Python floats (the shortest string that parses back to the same double), so a
write/read round trip is exact; files are written atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError
from bopkd.eval.bop_site import keep_best_per_image, max_estimates_per_image
from bopkd.eval.submission import HEADER, Estimate, validate_arrays
from bopkd.utils.atomic import atomic_open

#: One pose found by inference: ``((scene_id, im_id), obj_id, score, R (3, 3), t (3,) mm)``.
Found = tuple[tuple[int, int], int, float, np.ndarray, np.ndarray]


def image_times(
    own_s: dict[tuple[int, int], float], det_times: dict[tuple[int, int], float] | None
) -> dict[tuple[int, int], float]:
    """The CSV's time per image, s: our own seconds plus the detector's from the detections file (BOP asks
    for the whole image's time, detection included); -1 where the detector's time is unknown."""
    if det_times is None:
        return dict(own_s)
    out = {}
    for k, v in own_s.items():
        d = det_times.get(k, 0.0)
        out[k] = -1.0 if d < 0 else v + d
    return out


def best_estimates(found: list[Found], times: dict[tuple[int, int], float], dataset: str) -> list[Estimate]:
    """The CSV rows: per image at most the toolkit's ``max_num_estimates_per_image`` (100; 200 for xyzibd)
    highest-scored poses (the toolkit evaluates no more), in ``found`` order, with the image's time."""
    keep = keep_best_per_image([f[0] for f in found], [f[2] for f in found], max_estimates_per_image(dataset))
    return [Estimate(k[0], k[1], o, s, R, t, times[k]) for k, o, s, R, t in (found[i] for i in keep)]


def mean_ms_per_image(times: dict[tuple[int, int], float], own_s: dict[tuple[int, int], float]) -> float:
    """Mean CSV time per image in ms over the images of known time (all unknown: our own time)."""
    known = [v for v in times.values() if v >= 0]
    return 1000.0 * float(np.mean(known or list(own_s.values())))


def _fmt(x: float) -> str:
    # repr of a Python float is the shortest text that parses back to the same double (exact round trip).
    return repr(float(x))


def format_row(e: Estimate) -> str:
    """One CSV row (no newline) for an estimate, in the toolkit's layout."""
    R = " ".join(map(_fmt, e.R.reshape(9).tolist()))
    t = " ".join(map(_fmt, e.t.reshape(3).tolist()))
    time = "-1" if e.time == -1.0 else _fmt(e.time)
    return f"{e.scene_id},{e.im_id},{e.obj_id},{_fmt(e.score)},{R},{t},{time}"


def write_submission(path: str | Path, estimates: Iterable[Estimate], check_rotation: bool = False) -> None:
    """Write estimates as a BOP'19 result CSV (header + one row each, ``\\n`` line ends), atomically.

    The values are checked first (finite, ids >= 0, one time per image, and rotations when
    ``check_rotation``) so that a written file always reads back; an empty list is an error because the
    toolkit rejects an empty result file.
    """
    path = Path(path)
    ests = list(estimates)
    if not ests:
        raise BopkdError(f"{path}: no estimates to write; the BOP toolkit rejects an empty result file")
    arrays = {
        "scene_id": np.array([e.scene_id for e in ests], dtype=np.int64),
        "im_id": np.array([e.im_id for e in ests], dtype=np.int64),
        "obj_id": np.array([e.obj_id for e in ests], dtype=np.int64),
        "score": np.array([e.score for e in ests], dtype=np.float64),
        "R": np.stack([e.R for e in ests]),
        "t": np.stack([e.t for e in ests]),
        "time": np.array([e.time for e in ests], dtype=np.float64),
    }
    validate_arrays(
        arrays, check_rotation=check_rotation, where=f"{path} (estimate to write)", fix="fix the estimates"
    )
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(HEADER + "\n")
        f.writelines(format_row(e) + "\n" for e in ests)
