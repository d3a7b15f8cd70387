"""Typed records for the files of a BOP dataset.

Units and conventions follow the BOP format document
(https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md): poses map model
coordinates to camera coordinates, ``x_cam = R @ x_model + t``, R is stored row-major, t and every
length are in millimetres, pixel coordinates have x to the right and y down, and 2D boxes are ``(x, y, width, height)`` in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of one image (``scene_camera.json``) or of a dataset (``camera.json``).

    Attributes:
        K: (3, 3) float64 intrinsic matrix in px.
        width, height: image size in px (0 when the file does not say, as in ``scene_camera.json``).
        depth_scale: multiply a stored uint16 depth value by this to get millimetres.
        R_w2c, t_w2c: optional world-to-camera pose of the image, (3, 3) and (3,) mm.
    """

    K: np.ndarray
    width: int = 0
    height: int = 0
    depth_scale: float = 1.0
    R_w2c: np.ndarray | None = None
    t_w2c: np.ndarray | None = None

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])


@dataclass(frozen=True)
class GTInstance:
    """One annotated object instance in an image (an entry of ``scene_gt.json``).

    Attributes:
        obj_id: object id.
        R: (3, 3) float64 rotation, model to camera.
        t: (3,) float64 translation in mm, model to camera.
    """

    obj_id: int
    R: np.ndarray
    t: np.ndarray

    @property
    def T(self) -> np.ndarray:
        """(4, 4) homogeneous model-to-camera transform, t in mm."""
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T


@dataclass(frozen=True)
class GTInfo:
    """Meta information about one GT instance (an entry of ``scene_gt_info.json``).

    Boxes are ``(x, y, w, h)`` in px; ``-1`` entries mean empty. ``visib_fract`` is
    ``px_count_visib / px_count_all`` (0 when ``px_count_all`` is 0), as the BOP toolkit computes it.
    """

    bbox_obj: tuple[int, int, int, int]
    bbox_visib: tuple[int, int, int, int]
    px_count_all: int
    px_count_valid: int
    px_count_visib: int
    visib_fract: float


@dataclass(frozen=True)
class ObjectInfo:
    """An entry of ``models_info.json``: diameter, 3D bounding box and symmetries of one object.

    Attributes:
        obj_id: object id.
        diameter: largest distance between two model vertices, mm.
        min_xyz: (3,) minimum corner of the axis-aligned model box, mm.
        size_xyz: (3,) size of the box along x, y, z, mm.
        symmetries_discrete: list of (4, 4) transforms (t in mm) that leave the model's look unchanged.
        symmetries_continuous: list of ``{"axis": (3,), "offset": (3,) mm}`` rotation axes.
    """

    obj_id: int
    diameter: float
    min_xyz: np.ndarray
    size_xyz: np.ndarray
    symmetries_discrete: list[np.ndarray] = field(default_factory=list)
    symmetries_continuous: list[dict] = field(default_factory=list)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.symmetries_discrete or self.symmetries_continuous)

    @property
    def symmetry_kind(self) -> str:
        """``"none"``, ``"discrete"``, ``"continuous"`` or ``"discrete+continuous"``."""
        kinds = []
        if self.symmetries_discrete:
            kinds.append("discrete")
        if self.symmetries_continuous:
            kinds.append("continuous")
        return "+".join(kinds) or "none"

    def bbox_corners(self) -> np.ndarray:
        """(8, 3) corners of the model's 3D bounding box in mm, in the fixed order of bopkd.

        Corner ``i`` takes ``min`` or ``max`` along x, y, z by the bits of ``i`` (bit 2: x, bit 1: y,
        bit 0: z), so corner 0 is ``min_xyz`` and corner 7 is ``min_xyz + size_xyz``.
        """
        lo = np.asarray(self.min_xyz, dtype=np.float64)
        hi = lo + np.asarray(self.size_xyz, dtype=np.float64)
        bits = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=bool)
        return np.where(bits, hi, lo)

    def to_json(self) -> dict:
        d = {
            "diameter": float(self.diameter),
            "min_x": float(self.min_xyz[0]),
            "min_y": float(self.min_xyz[1]),
            "min_z": float(self.min_xyz[2]),
            "size_x": float(self.size_xyz[0]),
            "size_y": float(self.size_xyz[1]),
            "size_z": float(self.size_xyz[2]),
        }
        if self.symmetries_discrete:
            d["symmetries_discrete"] = [
                np.asarray(s, dtype=float).reshape(-1).tolist() for s in self.symmetries_discrete
            ]
        if self.symmetries_continuous:
            d["symmetries_continuous"] = [
                {"axis": [float(v) for v in s["axis"]], "offset": [float(v) for v in s["offset"]]}
                for s in self.symmetries_continuous
            ]
        return d


@dataclass
class ObjectModel:
    """A triangle mesh of an object (a PLY file of ``models/`` or ``models_eval/``).

    Attributes:
        pts: (N, 3) float64 vertices in mm.
        faces: (F, 3) int64 vertex indices of triangles (may be empty for point clouds).
        normals: (N, 3) float64 unit vertex normals, or None.
        colors: (N, 3) uint8 RGB vertex colours, or None.
    """

    pts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None


@dataclass(frozen=True)
class Target:
    """One entry of ``test_targets_bop19.json``: ``inst_count`` instances of ``obj_id`` to localise."""

    scene_id: int
    im_id: int
    obj_id: int
    inst_count: int
