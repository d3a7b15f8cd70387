"""Depth, instance and normal rendering of posed meshes by ray casting with open3d (CPU, no OpenGL).

One ray per pixel ``(u, v)`` leaves the camera centre through the image point
``(u + pixel_offset, v + pixel_offset)``; with ``pixel_offset = 0.5`` this samples pixel centres, as
OpenGL rasterisation does (and so as the BOP toolkit's renderer does). Directions are
``K^-1 [u', v', 1]^T`` (not normalised), so open3d's hit distance ``t_hit`` is directly the depth ``z``
in mm. Rendering is restricted to a region of interest, by default the box of the projected vertices,
so an object costs rays only where it can appear.

Used by the synthetic dataset builder (RGB-D, masks) and by VSD scoring (object depth maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bopkd.data.records import ObjectModel


@dataclass
class RenderOutput:
    """What :meth:`Renderer.render` returns, all (H, W) over the whole image.

    Attributes:
        depth: float64 depth in mm, 0 where no object is hit.
        inst: int32 index into the rendered instance list, -1 where no object is hit.
        normals: (H, W, 3) float32 unit normals in camera coordinates (zeros where nothing is hit),
            or None when not asked for.
    """

    depth: np.ndarray
    inst: np.ndarray
    normals: np.ndarray | None = None


class Renderer:
    """A CPU ray-casting renderer of posed triangle meshes.

    Args:
        width, height: image size in px.
        pixel_offset: where a pixel's ray passes, relative to its integer coordinate (0.5 = centre).
    """

    def __init__(self, width: int, height: int, pixel_offset: float = 0.5):
        self.width = int(width)
        self.height = int(height)
        self.pixel_offset = float(pixel_offset)
        self._meshes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add_object(self, obj_id: int, model: ObjectModel) -> None:
        """Register a mesh (vertices in mm, triangle faces)."""
        if len(model.faces) == 0:
            raise ValueError(f"object {obj_id}: the model has no faces and cannot be rendered")
        self._meshes[int(obj_id)] = (
            np.ascontiguousarray(model.pts, dtype=np.float32),
            np.ascontiguousarray(model.faces, dtype=np.uint32),
        )

    def has_object(self, obj_id: int) -> bool:
        return int(obj_id) in self._meshes

    def _roi(self, K: np.ndarray, posed: list[np.ndarray]) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1), end-exclusive, covering the projected vertices; None if empty."""
        x0 = y0 = np.inf
        x1 = y1 = -np.inf
        for v in posed:
            z = v[:, 2]
            front = z > 1e-6
            if not np.any(front):
                continue
            if not np.all(front):  # a mesh crossing the camera plane may cover anything
                return 0, 0, self.width, self.height
            u = K[0, 0] * v[:, 0] / z + K[0, 1] * v[:, 1] / z + K[0, 2]
            w = K[1, 1] * v[:, 1] / z + K[1, 2]
            x0, x1 = min(x0, u.min()), max(x1, u.max())
            y0, y1 = min(y0, w.min()), max(y1, w.max())
        if not np.isfinite(x0):
            return None
        xa = max(0, int(np.floor(x0 - self.pixel_offset)) - 1)
        ya = max(0, int(np.floor(y0 - self.pixel_offset)) - 1)
        xb = min(self.width, int(np.ceil(x1 - self.pixel_offset)) + 2)
        yb = min(self.height, int(np.ceil(y1 - self.pixel_offset)) + 2)
        if xa >= xb or ya >= yb:
            return None
        return xa, ya, xb, yb

    def render(
        self,
        K: np.ndarray,
        instances: Sequence[tuple[int, np.ndarray, np.ndarray]],
        normals: bool = False,
    ) -> RenderOutput:
        """Render instances ``(obj_id, R (3,3), t (3,) mm)`` together, with mutual occlusion.

        Args:
            K: (3, 3) intrinsics in px.
            instances: model-to-camera poses of registered objects.
            normals: also return camera-frame surface normals.
        """
        import open3d as o3d

        H, W = self.height, self.width
        depth = np.zeros((H, W), np.float64)
        inst = np.full((H, W), -1, np.int32)
        nrm = np.zeros((H, W, 3), np.float32) if normals else None
        K = np.asarray(K, dtype=np.float64)
        posed = []
        for obj_id, R, t in instances:
            pts, _ = self._meshes[int(obj_id)]
            posed.append(
                (
                    pts.astype(np.float64) @ np.asarray(R, np.float64).T
                    + np.asarray(t, np.float64).reshape(1, 3)
                ).astype(np.float32)
            )
        roi = self._roi(K, posed)
        if roi is None:
            return RenderOutput(depth, inst, nrm)
        scene = o3d.t.geometry.RaycastingScene()
        geom_to_inst = {}
        for i, ((obj_id, _, _), v) in enumerate(zip(instances, posed, strict=True)):
            gid = scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(self._meshes[int(obj_id)][1]))
            geom_to_inst[gid] = i
        x0, y0, x1, y1 = roi
        us, vs = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
        Kinv = np.linalg.inv(K)
        pix = np.stack([us + self.pixel_offset, vs + self.pixel_offset, np.ones_like(us)], axis=-1)
        dirs = pix @ Kinv.T  # z component is 1, so t_hit is the depth
        rays = np.concatenate([np.zeros_like(dirs), dirs], axis=-1).astype(np.float32)
        ans = scene.cast_rays(o3d.core.Tensor(rays))
        t_hit = ans["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        gids = ans["geometry_ids"].numpy()
        lut = np.full(max(geom_to_inst) + 2, -1, np.int32)
        for g, i in geom_to_inst.items():
            lut[g] = i
        sub_inst = np.where(hit, lut[np.where(hit, gids, len(lut) - 1).astype(np.int64)], -1)
        depth[y0:y1, x0:x1] = np.where(hit, t_hit, 0.0)
        inst[y0:y1, x0:x1] = sub_inst
        if normals:
            n = ans["primitive_normals"].numpy()
            # Face the camera: flip normals that point away from the viewer.
            flip = np.sum(n * dirs, axis=-1) > 0
            n = np.where(flip[..., None], -n, n)
            nrm[y0:y1, x0:x1] = np.where(hit[..., None], n, 0.0)
        return RenderOutput(depth, inst, nrm)

    def render_depth(self, obj_id: int, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
        """(H, W) float64 depth (mm) of one object alone, 0 where it is not hit."""
        return self.render(K, [(obj_id, R, t)]).depth
