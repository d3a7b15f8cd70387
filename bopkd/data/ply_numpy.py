"""Fast reading of the vertices and triangles of BOP evaluation models (PLY).

Why by hand: scoring needs only vertices and faces, and importing open3d (which
:func:`bopkd.data.ply.load_ply` uses) takes seconds, longer than scoring a whole submission. This reader
handles what BOP models are written as (PLY 1.0, ``ascii`` or ``binary_little_endian``/``big_endian``,
scalar vertex properties of any type, one ``vertex_indices``/``vertex_index`` list per face, other
elements skipped) with numpy alone, and falls back to :func:`bopkd.data.ply.load_ply` for anything else
(polygons with more than three corners, list properties on vertices). Values are those stored in the
file, as the toolkit's ``inout.load_ply`` reads them (float64; binary float32 coordinates exactly). A file
whose body is shorter than its header declares is refused first (:func:`bopkd.data.ply_check.check_ply`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bopkd.data.ply_check import PLY_TYPES, check_ply
from bopkd.errors import BopkdError, MissingFileError

_TYPES = PLY_TYPES


class _Unsupported(Exception):
    pass


def _parse_header(f) -> tuple[str, list[tuple[str, int, list[tuple]]]]:
    if f.readline().strip() != b"ply":
        raise _Unsupported("not a PLY file")
    fmt = None
    elements: list[tuple[str, int, list[tuple]]] = []
    while True:
        line = f.readline()
        if not line:
            raise _Unsupported("no end_header")
        tok = line.decode("ascii", "replace").split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if tok[1] == "list":
                elements[-1][2].append(("list", tok[4], _TYPES[tok[2]], _TYPES[tok[3]]))
            else:
                elements[-1][2].append(("scalar", tok[2], _TYPES[tok[1]]))
        elif tok[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _Unsupported(f"format {fmt}")
    return fmt, elements


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        fmt, elements = _parse_header(f)
        if fmt == "ascii":
            return _read_ascii(f, elements)
        return _read_binary(f, elements, "<" if fmt == "binary_little_endian" else ">")


def _read_binary(f, elements, endian: str) -> tuple[np.ndarray, np.ndarray]:
    data = f.read()
    off = 0
    pts = faces = None
    for name, count, props in elements:
        if all(p[0] == "scalar" for p in props):
            dt = np.dtype([(p[1], endian + p[2]) for p in props])
            arr = np.frombuffer(data, dtype=dt, count=count, offset=off)
            off += count * dt.itemsize
            if name == "vertex":
                pts = np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64)
            continue
        if name != "face" or len(props) != 1:
            raise _Unsupported(f"element {name} with list properties")
        _, _, ctype, itype = props[0]
        cdt, idt = np.dtype(endian + ctype), np.dtype(endian + itype)
        # Fast path: every face a triangle -> fixed-size records.
        rec = np.dtype([("n", cdt), ("i", idt, (3,))])
        if off + count * rec.itemsize <= len(data):
            arr = np.frombuffer(data, dtype=rec, count=count, offset=off)
            if np.all(arr["n"] == 3):
                faces = arr["i"].astype(np.int64)
                off += count * rec.itemsize
                continue
        raise _Unsupported("faces that are not all triangles")
    if pts is None:
        raise _Unsupported("no vertex element")
    return pts, np.zeros((0, 3), np.int64) if faces is None else faces


def _read_ascii(f, elements) -> tuple[np.ndarray, np.ndarray]:
    lines = f.read().decode("ascii", "replace").split("\n")
    pos = 0
    pts = faces = None
    for name, count, props in elements:
        block = lines[pos : pos + count]
        pos += count
        if name == "vertex":
            if any(p[0] != "scalar" for p in props):
                raise _Unsupported("list property on vertices")
            names = [p[1] for p in props]
            vals = np.array(" ".join(block).split(), dtype=np.float64).reshape(count, len(props))
            # As the toolkit's inout.load_ply and open3d: the decimal text as float64.
            pts = vals[:, [names.index("x"), names.index("y"), names.index("z")]]
        elif name == "face":
            vals = np.array(" ".join(block).split(), dtype=np.int64)
            if len(vals) != 4 * count or np.any(vals.reshape(count, 4)[:, 0] != 3):
                raise _Unsupported("faces that are not all triangles")
            faces = vals.reshape(count, 4)[:, 1:]
    if pts is None:
        raise _Unsupported("no vertex element")
    return pts, np.zeros((0, 3), np.int64) if faces is None else faces


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pts (N, 3) float64 mm, faces (F, 3) int64)`` of a PLY model."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "download the models part: bopkd download DATASET --parts models")
    check_ply(path)
    try:
        return _read(path)
    except (_Unsupported, KeyError, ValueError, IndexError):
        from bopkd.data.ply import load_ply

        m = load_ply(path)
        if len(m.pts) == 0:  # pragma: no cover - load_ply raises first
            raise BopkdError(f"{path}: no vertices; download the models again") from None
        return m.pts, m.faces
