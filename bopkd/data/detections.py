"""BOP default-detections files: 2D boxes that crop-mode models are run on at test time.

The format is the one of the BOP Challenge's 2D detection results and of the default detections it
publishes (BOP'22 onwards, ``bop_toolkit_lib/inout.py: check_coco_results``): a JSON list of ::

    {"scene_id": int, "image_id": int, "category_id": int, "score": float,
     "bbox": [x, y, width, height], "time": float, "segmentation": RLE (optional, ignored)}

``category_id`` is the object id, ``bbox`` the amodal box in px (top-left corner and size) and ``time``
the seconds the detector spent on the whole image (the same on every detection of an image; the
toolkit's ``check_consistent_timings`` allows 1 ms of difference). The toolkit treats a missing or
negative ``time`` as unknown; so do we: the image's detection time is then unknown, and so is the total
time the pose CSV reports for it (``-1``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from bopkd.errors import BopkdError, MissingFileError

#: ``(scene_id, im_id) -> [{"obj_id", "box", "score", "time"}]``, per image by descending score.
Detections = Mapping[tuple[int, int], list[dict]]

_FIX = (
    "give the BOP default-detections JSON of this dataset's test split: a list of "
    '{"scene_id", "image_id", "category_id", "bbox": [x, y, width, height], "score", "time"}'
)


def _int(r: dict, key: str) -> int:
    v = r[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
        raise ValueError(f"{key} {v!r} is not an id (an integer >= 0)")
    return int(v)


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} {v!r} is not a finite number")
    return float(v)


def _parse(r) -> tuple[tuple[int, int], dict]:
    if not isinstance(r, dict):
        raise ValueError(f"{type(r).__name__} {r!r}, not an object")
    key = (_int(r, "scene_id"), _int(r, "image_id"))
    box = r["bbox"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"bbox {box!r} is not [x, y, width, height]")
    box = tuple(_number(v, "bbox value") for v in box)
    time = r.get("time")
    return key, {
        "obj_id": _int(r, "category_id"),
        "box": box,
        "score": _number(r["score"], "score") if "score" in r else 1.0,
        "time": -1.0 if time is None else _number(time, "time"),
    }


def load_detections(path: str | Path) -> dict[tuple[int, int], list[dict]]:
    """Read a BOP default-detections JSON: ``(scene_id, im_id) -> [{obj_id, box, score, time}]``.

    Per image, detections are sorted by descending score. A detection without ``time`` (or with a
    negative one) has time ``-1`` (unknown). Raises :class:`BopkdError` naming the file, the first bad
    detection and the expected format.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, _FIX + " (--detections)")
    try:
        rows = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BopkdError(f"{path}: not valid JSON ({e}); {_FIX}") from None
    if not isinstance(rows, list):
        raise BopkdError(f"{path}: a JSON {type(rows).__name__}, expected a list of detections; {_FIX}")
    out: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for i, r in enumerate(rows):
        try:
            key, det = _parse(r)
        except KeyError as e:
            raise BopkdError(f"{path}: detection #{i} is malformed (no key {e}); {_FIX}") from None
        except (TypeError, ValueError) as e:
            raise BopkdError(f"{path}: detection #{i} is malformed ({e}); {_FIX}") from None
        out[key].append(det)
    if not out:
        raise BopkdError(f"{path}: no detections; {_FIX}")
    for v in out.values():
        v.sort(key=lambda d: -d["score"])
    return dict(out)


def detection_times(dets: Detections) -> dict[tuple[int, int], float]:
    """Seconds the detector spent on each image: the largest ``time`` of the image's detections, or
    ``-1`` (unknown) when any of them has no time."""
    out = {}
    for key, ds in dets.items():
        times = [d["time"] for d in ds]
        out[key] = -1.0 if not times or min(times) < 0 else max(times)
    return out
