"""Readers and writers of the JSON files of a BOP dataset.

Formats as in the BOP format document
(https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md). Readers turn the
files into the typed records of :mod:`bopkd.records`; writers write what the readers read (and
what the official toolkit reads). Malformed files raise :class:`~bopkd.errors.BopkdError` naming the
file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bopkd.errors import BopkdError, MissingFileError
from bopkd.records import Camera, GTInfo, GTInstance, ObjectInfo, Target
from bopkd.utils.atomic import atomic_write_text


def load_json(path: str | Path, hint: str = "") -> Any:
    """Load a JSON file, with a one-line error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, hint)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BopkdError(f"{path}: not valid JSON ({e}); restore the file or download it again") from None


def save_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, one top-level key per line (the layout of the BOP files)."""
    if isinstance(obj, dict):
        lines = [f"  {json.dumps(str(k))}: {json.dumps(v)}" for k, v in obj.items()]
        text = "{\n" + ",\n".join(lines) + "\n}\n"
    elif isinstance(obj, list):
        text = "[\n" + ",\n".join(f"  {json.dumps(v)}" for v in obj) + "\n]\n"
    else:
        text = json.dumps(obj) + "\n"
    atomic_write_text(path, text)


def _field(path: Path, d: dict, key: str) -> Any:
    try:
        return d[key]
    except (KeyError, TypeError):
        raise BopkdError(f"{path}: entry lacks the field {key!r}; the file is not in BOP format") from None


# --- camera.json / scene_camera.json ---------------------------------------------------------------


def load_camera(path: str | Path) -> Camera:
    """Read a dataset's ``camera.json`` (fx, fy, cx, cy, width, height, depth_scale)."""
    path = Path(path)
    d = load_json(path)
    K = np.array(
        [
            [_field(path, d, "fx"), 0.0, _field(path, d, "cx")],
            [0.0, _field(path, d, "fy"), _field(path, d, "cy")],
            [0, 0, 1],
        ],
        dtype=np.float64,
    )
    return Camera(
        K=K,
        width=int(d.get("width", 0)),
        height=int(d.get("height", 0)),
        depth_scale=float(d.get("depth_scale", 1.0)),
    )


def save_camera(path: str | Path, cam: Camera) -> None:
    d = {
        "cx": cam.cx,
        "cy": cam.cy,
        "depth_scale": cam.depth_scale,
        "fx": cam.fx,
        "fy": cam.fy,
        "height": cam.height,
        "width": cam.width,
    }
    atomic_write_text(path, json.dumps(d, indent=2) + "\n")


def _camera_from_scene_entry(path: Path, e: dict) -> Camera:
    K = np.asarray(_field(path, e, "cam_K"), dtype=np.float64).reshape(3, 3)
    R = e.get("cam_R_w2c")
    t = e.get("cam_t_w2c")
    return Camera(
        K=K,
        depth_scale=float(e.get("depth_scale", 1.0)),
        R_w2c=None if R is None else np.asarray(R, dtype=np.float64).reshape(3, 3),
        t_w2c=None if t is None else np.asarray(t, dtype=np.float64).reshape(3),
    )


def load_scene_camera(path: str | Path) -> dict[int, Camera]:
    """Read ``scene_camera.json``: im_id -> :class:`Camera` (K in px, depth_scale, optional w2c pose)."""
    path = Path(path)
    d = load_json(path)
    return {int(k): _camera_from_scene_entry(path, v) for k, v in d.items()}


def save_scene_camera(path: str | Path, cams: dict[int, Camera]) -> None:
    out = {}
    for im_id in sorted(cams):
        c = cams[im_id]
        e: dict[str, Any] = {"cam_K": c.K.reshape(-1).tolist(), "depth_scale": c.depth_scale}
        if c.R_w2c is not None:
            e["cam_R_w2c"] = c.R_w2c.reshape(-1).tolist()
        if c.t_w2c is not None:
            e["cam_t_w2c"] = c.t_w2c.reshape(-1).tolist()
        out[str(im_id)] = e
    save_json(path, out)


# --- scene_gt.json / scene_gt_info.json -------------------------------------------------------------


def load_scene_gt(path: str | Path) -> dict[int, list[GTInstance]]:
    """Read ``scene_gt.json``: im_id -> list of :class:`GTInstance` (list index = gt_id)."""
    path = Path(path)
    d = load_json(path)
    out = {}
    for k, insts in d.items():
        out[int(k)] = [
            GTInstance(
                obj_id=int(_field(path, e, "obj_id")),
                R=np.asarray(_field(path, e, "cam_R_m2c"), dtype=np.float64).reshape(3, 3),
                t=np.asarray(_field(path, e, "cam_t_m2c"), dtype=np.float64).reshape(3),
            )
            for e in insts
        ]
    return out


def save_scene_gt(path: str | Path, gts: dict[int, list[GTInstance]]) -> None:
    out = {}
    for im_id in sorted(gts):
        out[str(im_id)] = [
            {
                "cam_R_m2c": g.R.reshape(-1).tolist(),
                "cam_t_m2c": g.t.reshape(-1).tolist(),
                "obj_id": int(g.obj_id),
            }
            for g in gts[im_id]
        ]
    save_json(path, out)


def load_scene_gt_info(path: str | Path) -> dict[int, list[GTInfo]]:
    """Read ``scene_gt_info.json``: im_id -> list of :class:`GTInfo` (same order as scene_gt)."""
    path = Path(path)
    d = load_json(path)
    out = {}
    for k, infos in d.items():
        out[int(k)] = [
            GTInfo(
                bbox_obj=tuple(int(v) for v in _field(path, e, "bbox_obj")),
                bbox_visib=tuple(int(v) for v in _field(path, e, "bbox_visib")),
                px_count_all=int(_field(path, e, "px_count_all")),
                px_count_valid=int(_field(path, e, "px_count_valid")),
                px_count_visib=int(_field(path, e, "px_count_visib")),
                visib_fract=float(_field(path, e, "visib_fract")),
            )
            for e in infos
        ]
    return out


def save_scene_gt_info(path: str | Path, infos: dict[int, list[GTInfo]]) -> None:
    out = {}
    for im_id in sorted(infos):
        out[str(im_id)] = [
            {
                "bbox_obj": [int(v) for v in i.bbox_obj],
                "bbox_visib": [int(v) for v in i.bbox_visib],
                "px_count_all": int(i.px_count_all),
                "px_count_valid": int(i.px_count_valid),
                "px_count_visib": int(i.px_count_visib),
                "visib_fract": float(i.visib_fract),
            }
            for i in infos[im_id]
        ]
    save_json(path, out)


# --- models_info.json ------------------------------------------------------------------------------


def load_models_info(path: str | Path) -> dict[int, ObjectInfo]:
    """Read ``models_info.json``: obj_id -> :class:`ObjectInfo` (diameter and box in mm, symmetries)."""
    path = Path(path)
    d = load_json(path)
    out = {}
    for k, e in d.items():
        out[int(k)] = ObjectInfo(
            obj_id=int(k),
            diameter=float(_field(path, e, "diameter")),
            min_xyz=np.array(
                [_field(path, e, "min_x"), _field(path, e, "min_y"), _field(path, e, "min_z")],
                dtype=np.float64,
            ),
            size_xyz=np.array(
                [_field(path, e, "size_x"), _field(path, e, "size_y"), _field(path, e, "size_z")],
                dtype=np.float64,
            ),
            symmetries_discrete=[
                np.asarray(s, dtype=np.float64).reshape(4, 4) for s in e.get("symmetries_discrete", [])
            ],
            symmetries_continuous=[
                {
                    "axis": np.asarray(s["axis"], dtype=np.float64),
                    "offset": np.asarray(s["offset"], dtype=np.float64),
                }
                for s in e.get("symmetries_continuous", [])
            ],
        )
    return dict(sorted(out.items()))


def save_models_info(path: str | Path, infos: dict[int, ObjectInfo]) -> None:
    save_json(path, {str(k): infos[k].to_json() for k in sorted(infos)})


# --- test_targets_bop19.json -----------------------------------------------------------------------


def load_targets(path: str | Path) -> list[Target]:
    """Read ``test_targets_bop19.json``: the list of :class:`Target` (scene, image, object, count)."""
    path = Path(path)
    d = load_json(path)
    if not isinstance(d, list):
        raise BopkdError(f"{path}: expected a JSON list of targets; the file is not in BOP format")
    return [
        Target(
            scene_id=int(_field(path, e, "scene_id")),
            im_id=int(_field(path, e, "im_id")),
            obj_id=int(_field(path, e, "obj_id")),
            inst_count=int(_field(path, e, "inst_count")),
        )
        for e in d
    ]


def save_targets(path: str | Path, targets: list[Target]) -> None:
    rows = [
        {"im_id": t.im_id, "inst_count": t.inst_count, "obj_id": t.obj_id, "scene_id": t.scene_id}
        for t in sorted(targets, key=lambda t: (t.scene_id, t.im_id, t.obj_id))
    ]
    save_json(path, rows)
