"""PLY object models (BOP ``models/`` and ``models_eval/``), read and written with open3d.

Vertices are in millimetres as the BOP format prescribes. open3d reads ASCII and binary PLY with
normals and vertex colours (the alpha channel of RGBA colours is dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bopkd.data.ply_check import check_ply
from bopkd.errors import BopkdError, MissingFileError
from bopkd.records import ObjectModel


def load_ply(path: str | Path) -> ObjectModel:
    """Read a PLY mesh: vertices (mm), faces, and normals and colours when the file has them."""
    import open3d as o3d

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "download the models part: bopkd download DATASET --parts models")
    check_ply(path)  # open3d reads a truncated file in part and only warns
    mesh = o3d.io.read_triangle_mesh(str(path))
    pts = np.asarray(mesh.vertices, dtype=np.float64)
    if pts.size == 0:
        raise BopkdError(
            f"{path}: no vertices could be read; the PLY file is empty or broken, download it again"
        )
    faces = np.asarray(mesh.triangles, dtype=np.int64).reshape(-1, 3)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64) if mesh.has_vertex_normals() else None
    colors = None
    if mesh.has_vertex_colors():
        colors = np.clip(np.round(np.asarray(mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    return ObjectModel(pts=pts, faces=faces, normals=normals, colors=colors)


def save_ply(path: str | Path, model: ObjectModel, ascii: bool = False) -> None:
    """Write a PLY mesh atomically (binary little-endian unless ``ascii``)."""
    import open3d as o3d

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh = o3d.geometry.TriangleMesh()
    mesh.vertices = o3d.utility.Vector3dVector(np.asarray(model.pts, dtype=np.float64))
    mesh.triangles = o3d.utility.Vector3iVector(np.asarray(model.faces, dtype=np.int32))
    if model.normals is not None:
        mesh.vertex_normals = o3d.utility.Vector3dVector(np.asarray(model.normals, dtype=np.float64))
    if model.colors is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(model.colors, dtype=np.float64) / 255.0)
    tmp = path.with_name(f".{path.stem}.tmp.ply")
    ok = o3d.io.write_triangle_mesh(
        str(tmp),
        mesh,
        write_ascii=ascii,
        write_vertex_normals=model.normals is not None,
        write_vertex_colors=model.colors is not None,
    )
    if not ok:
        tmp.unlink(missing_ok=True)
        raise BopkdError(
            f"{path}: could not write the PLY file; check the folder is writable and the disk has room"
        )
    tmp.replace(path)
