"""Depth, instance and normal rendering of posed meshes by ray casting with open3d (CPU, no OpenGL).

One ray per pixel ``(u, v)`` leaves the camera centre through the image point
``(u + pixel_offset, v + pixel_offset)``; with ``pixel_offset = 0.5`` this samples pixel centres, as
OpenGL rasterisation does (and so as the BOP toolkit's renderer does). Directions are
``K^-1 [u', v', 1]^T`` (not normalised), so open3d's hit parameter ``t_hit`` is directly the depth ``z``
in mm.

Each object's mesh is put once into its own open3d ``RaycastingScene`` in model coordinates; a posed
instance is rendered by moving the rays into the model frame (origin ``-R^T t``, directions
``R^T d``; a rigid motion keeps the ray parameter, so ``t_hit`` is still the camera depth). This avoids
rebuilding a BVH per image, and renders each instance alone inside the box of its projected vertices
(:meth:`Renderer.render_layers`); :meth:`Renderer.render` composes the layers by taking the nearest
hit per pixel, which is exactly what one ray cast of all instances together gives.

Used by the synthetic dataset builder (RGB-D, masks, GT info) and by VSD scoring (object depth maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bopkd.records import ObjectModel


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


@dataclass
class InstanceLayer:
    """One instance rendered alone (not occluded by the others) inside its pixel box.

    Attributes:
        box: ``(x0, y0, x1, y1)`` end-exclusive pixel box of the layer in image coordinates; it may
            reach outside the image when the render window does.
        depth: (h, w) float64 depth in mm, 0 where the ray misses the object.
        prim: (h, w) int64 index of the hit triangle in the model's faces, -1 on a miss.
        uv: (h, w, 2) float32 barycentric coordinates ``(b1, b2)`` of the hit in its triangle (the point
            is ``(1 - b1 - b2) v0 + b1 v1 + b2 v2``), or None when not asked for.
        normals: (h, w, 3) float32 unit face normals in camera coordinates, turned towards the camera
            (zeros on a miss), or None when not asked for.
    """

    box: tuple[int, int, int, int]
    depth: np.ndarray
    prim: np.ndarray
    uv: np.ndarray | None = None
    normals: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: where the object is hit."""
        return self.depth > 0

    def crop_to(
        self, box: tuple[int, int, int, int]
    ) -> tuple[tuple[int, int, int, int], tuple[slice, slice]] | None:
        """Intersect the layer with ``box``: ``(common box, slices into the layer arrays)``, or None."""
        x0, y0 = max(self.box[0], box[0]), max(self.box[1], box[1])
        x1, y1 = min(self.box[2], box[2]), min(self.box[3], box[3])
        if x0 >= x1 or y0 >= y1:
            return None
        bx, by = self.box[0], self.box[1]
        return (x0, y0, x1, y1), (slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx))


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
        self._hull: dict[int, np.ndarray] = {}
        self._scenes: dict[int, object] = {}

    def add_object(self, obj_id: int, model: ObjectModel) -> None:
        """Register a mesh (vertices in mm, triangle faces)."""
        if len(model.faces) == 0:
            raise ValueError(f"object {obj_id}: the model has no faces and cannot be rendered")
        obj_id = int(obj_id)
        pts = np.ascontiguousarray(model.pts, dtype=np.float32)
        self._meshes[obj_id] = (pts, np.ascontiguousarray(model.faces, dtype=np.uint32))
        self._hull[obj_id] = _hull_points(np.asarray(model.pts, dtype=np.float64))
        self._scenes.pop(obj_id, None)

    def has_object(self, obj_id: int) -> bool:
        return int(obj_id) in self._meshes

    def _scene(self, obj_id: int):
        import open3d as o3d

        s = self._scenes.get(obj_id)
        if s is None:
            pts, faces = self._meshes[obj_id]
            s = o3d.t.geometry.RaycastingScene()
            s.add_triangles(o3d.core.Tensor(pts), o3d.core.Tensor(faces))
            self._scenes[obj_id] = s
        return s

    def _box(
        self, K: np.ndarray, obj_id: int, R: np.ndarray, t: np.ndarray, window: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1), end-exclusive, covering the projected vertices, within ``window``.

        The projected box of a convex hull's vertices covers the projection of the whole mesh when it
        lies in front of the camera (a perspective projection maps segments to segments there).
        """
        v = self._hull[obj_id] @ R.T + t.reshape(1, 3)
        z = v[:, 2]
        front = z > 1e-6
        if not np.any(front):
            return None
        if not np.all(front):  # a mesh crossing the camera plane may cover anything
            return window
        u = (K[0, 0] * v[:, 0] + K[0, 1] * v[:, 1]) / z + K[0, 2]
        w = K[1, 1] * v[:, 1] / z + K[1, 2]
        xa = max(window[0], int(np.floor(u.min() - self.pixel_offset)) - 1)
        ya = max(window[1], int(np.floor(w.min() - self.pixel_offset)) - 1)
        xb = min(window[2], int(np.ceil(u.max() - self.pixel_offset)) + 2)
        yb = min(window[3], int(np.ceil(w.max() - self.pixel_offset)) + 2)
        if xa >= xb or ya >= yb:
            return None
        return xa, ya, xb, yb

    def render_layers(
        self,
        K: np.ndarray,
        instances: Sequence[tuple[int, np.ndarray, np.ndarray]],
        window: tuple[int, int, int, int] | None = None,
        uv: bool = False,
        normals: bool = False,
    ) -> list[InstanceLayer | None]:
        """Render each instance ``(obj_id, R (3,3), t (3,) mm)`` alone, inside its projected box.

        Args:
            K: (3, 3) intrinsics in px.
            instances: model-to-camera poses of registered objects.
            window: ``(x0, y0, x1, y1)`` pixel window to render in, end-exclusive; defaults to the image.
                It may reach beyond the image, e.g. ``(-W, -H, 2W, 2H)`` to see truncated parts as the
                BOP toolkit's ``calc_gt_info.py`` does with its 3x larger canvas.
            uv: also return barycentric coordinates of the hits (for vertex-colour shading).
            normals: also return camera-frame face normals.

        Returns:
            One :class:`InstanceLayer` per instance, or None where the instance covers no pixel.
        """
        import open3d as o3d

        K = np.asarray(K, dtype=np.float64)
        Kinv = np.linalg.inv(K)
        win = (0, 0, self.width, self.height) if window is None else tuple(int(v) for v in window)
        out: list[InstanceLayer | None] = []
        for obj_id, R, t in instances:
            obj_id = int(obj_id)
            R = np.asarray(R, dtype=np.float64).reshape(3, 3)
            t = np.asarray(t, dtype=np.float64).reshape(3)
            box = self._box(K, obj_id, R, t, win)
            if box is None:
                out.append(None)
                continue
            x0, y0, x1, y1 = box
            h, w = y1 - y0, x1 - x0
            us = (np.arange(x0, x1, dtype=np.float64) + self.pixel_offset).astype(np.float32)
            vs = (np.arange(y0, y1, dtype=np.float64) + self.pixel_offset).astype(np.float32)
            # Model-frame directions d_m = R^T K^-1 [u, v, 1]^T = M [u, v, 1]^T (camera z component 1).
            M = (R.T @ Kinv).astype(np.float32)
            rays = np.empty((h, w, 6), np.float32)
            rays[..., :3] = (-R.T @ t).astype(np.float32)
            for k in range(3):
                rays[..., 3 + k] = M[k, 0] * us[None, :] + (M[k, 1] * vs + M[k, 2])[:, None]
            ans = self._scene(obj_id).cast_rays(o3d.core.Tensor(rays))
            t_hit = ans["t_hit"].numpy()
            hit = np.isfinite(t_hit)
            depth = np.where(hit, t_hit, 0.0).astype(np.float64)
            prim_raw = ans["primitive_ids"].numpy()
            prim = np.where(hit, prim_raw.astype(np.int64), -1)
            layer = InstanceLayer(box=box, depth=depth, prim=prim)
            if uv:
                layer.uv = ans["primitive_uvs"].numpy()
            if normals:
                n = ans["primitive_normals"].numpy() @ R.T.astype(np.float32)
                # Face the camera: flip normals that point away from the viewer (d_cam = R d_m).
                facing = np.einsum("hwk,hwk->hw", n, rays[..., 3:] @ R.T.astype(np.float32))
                n[facing > 0] *= -1.0
                n[~hit] = 0.0
                layer.normals = n.astype(np.float32)
            out.append(layer)
        return out

    def compose(self, layers: Sequence[InstanceLayer | None], normals: bool = False) -> RenderOutput:
        """Compose instance layers into one image: the nearest hit wins (earlier instance on ties)."""
        H, W = self.height, self.width
        depth = np.zeros((H, W), np.float64)
        inst = np.full((H, W), -1, np.int32)
        nrm = np.zeros((H, W, 3), np.float32) if normals else None
        for i, layer in enumerate(layers):
            if layer is None:
                continue
            c = layer.crop_to((0, 0, W, H))
            if c is None:
                continue
            (x0, y0, x1, y1), sl = c
            d = layer.depth[sl]
            cur = depth[y0:y1, x0:x1]
            win = (d > 0) & ((cur == 0) | (d < cur))
            cur[win] = d[win]
            inst[y0:y1, x0:x1][win] = i
            if normals and layer.normals is not None:
                nrm[y0:y1, x0:x1][win] = layer.normals[sl][win]
        return RenderOutput(depth, inst, nrm)

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
        return self.compose(self.render_layers(K, instances, normals=normals), normals=normals)

    def render_depth(self, obj_id: int, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
        """(H, W) float64 depth (mm) of one object alone, 0 where it is not hit."""
        return self.render(K, [(obj_id, R, t)]).depth


def _hull_points(pts: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of ``pts`` (N, 3) mm; all points when the hull is degenerate."""
    from scipy.spatial import ConvexHull, QhullError

    if len(pts) < 5:
        return pts
    try:
        return pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):
        return pts
