"""Rendering of one synthetic image: RGB, depth as stored, GT poses, masks and GT info."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bopkd.data.gt_info import canvas_window, instance_masks
from bopkd.data.synth.appearance import TextureBank, random_light
from bopkd.data.synth.config import SynthConfig
from bopkd.data.synth.models import ModelSet
from bopkd.data.synth.poses import PoseSampler
from bopkd.errors import BopkdError
from bopkd.geometry.render import Renderer
from bopkd.records import Camera, GTInfo, GTInstance

_FALLBACK_COLORS = np.array(
    [
        [200, 60, 60],
        [60, 160, 70],
        [60, 90, 210],
        [220, 180, 40],
        [170, 70, 190],
        [40, 180, 190],
        [230, 120, 40],
    ],
    dtype=np.uint8,
)


@dataclass
class RenderedImage:
    """What one image needs on disk."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth_stored: np.ndarray  # (H, W) uint16, depth / depth_scale
    gts: list[GTInstance]
    infos: list[GTInfo]
    masks: list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]  # box, mask, mask_visib
    R_w2c: np.ndarray | None = None
    t_w2c: np.ndarray | None = None


class ImageMaker:
    """Renders the images of a model set with one camera."""

    def __init__(self, cfg: SynthConfig, cam: Camera, mset: ModelSet):
        self.cfg = cfg
        self.cam = cam
        self.renderer = Renderer(cam.width, cam.height)
        self.faces: dict[int, np.ndarray] = {}
        self.face_normals: dict[int, np.ndarray] = {}
        self.colors: dict[int, np.ndarray] = {}
        for i, m in mset.models.items():
            self.renderer.add_object(i, m)
            f = np.asarray(m.faces, dtype=np.int64)
            self.faces[i] = f
            v = np.asarray(m.pts, dtype=np.float64)
            fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            self.face_normals[i] = (fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)).astype(
                np.float32
            )
            if m.colors is not None:
                self.colors[i] = np.asarray(m.colors, dtype=np.float32)
            else:
                self.colors[i] = np.tile(
                    _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)].astype(np.float32), (len(m.pts), 1)
                )
        self.sampler = PoseSampler(cfg, cam, mset.infos)
        self.Kinv = np.linalg.inv(cam.K).astype(np.float32)
        self.textures = TextureBank(cfg.seed, cam.width, cam.height)

    def make(self, rng: np.random.Generator, depth_scale: float) -> RenderedImage:
        """Render one image from ``rng`` (poses, background, light, noise drawn in this order).

        Returns the (H, W, 3) uint8 RGB, the (H, W) uint16 depth ``round(depth_mm / depth_scale)``, the
        GT instances that cover a pixel, their masks and GT info (BOP toolkit definitions).
        """
        W, H = self.cam.width, self.cam.height
        K = self.cam.K
        plan = self.sampler.sample(rng)
        rgb = self.textures.background(rng)
        light, ambient, diffuse = random_light(rng)
        light32 = light.astype(np.float32)
        noise_sigma = float(rng.uniform(0.0, 4.0))

        inst_list = [(g.obj_id, g.R, g.t) for g in plan.instances]
        layers = self.renderer.render_layers(K, inst_list, window=canvas_window(W, H), uv=True)
        gts, kept, crops = _visible_layers(plan.instances, layers, W, H)
        depth, inst = _compose(kept, crops, H, W)
        for i, (lay, crop) in enumerate(zip(kept, crops, strict=True)):
            self._shade(rgb, lay, crop, inst, i, gts[i], (light32, ambient, diffuse))
        if noise_sigma > 0:
            rgb = self.textures.add_noise(rng, rgb, noise_sigma)
        rgb8 = cv2.add(rgb, (0.0, 0.0, 0.0, 0.0), dtype=cv2.CV_8U)  # round and saturate to 0..255

        stored, depth_read = self._stored_depth(depth, crops, depth_scale)
        infos, masks = [], []
        for lay in kept:
            im = instance_masks(lay, depth_read, K, self.cfg.visib_delta)
            infos.append(im.info)
            masks.append((im.box, im.mask, im.mask_visib))
        return RenderedImage(rgb8, stored, gts, infos, masks, plan.R_w2c, plan.t_w2c)

    def _shade(
        self,
        rgb: np.ndarray,
        lay,
        crop: tuple[tuple[int, int, int, int], tuple[slice, slice]],
        inst: np.ndarray,
        i: int,
        g: GTInstance,
        lighting: tuple[np.ndarray, float, float],
    ) -> None:
        """Paint the visible pixels of one instance into ``rgb`` (H, W, 3) float32, in place.

        Colour: the barycentric interpolation of the model's vertex colours, shaded Lambertian + ambient,
        ``albedo * (ambient + diffuse * max(n . l, 0))`` with the face normal ``n`` turned towards the
        camera. ``inst``: (H, W) index of the nearest instance per pixel, this one being ``i``;
        ``lighting``: (unit direction (3,) float32 towards the light, ambient, diffuse).
        """
        (x0, y0, x1, y1), sl = crop
        light32, ambient, diffuse = lighting
        sel = inst[y0:y1, x0:x1] == i
        if not sel.any():
            return
        obj_id = g.obj_id
        prim = lay.prim[sl][sel]
        uv = lay.uv[sl][sel]
        tri = self.faces[obj_id][prim]
        col = self.colors[obj_id]
        b1, b2 = uv[:, 0:1], uv[:, 1:2]
        albedo = (1.0 - b1 - b2) * col[tri[:, 0]] + b1 * col[tri[:, 1]] + b2 * col[tri[:, 2]]
        n = self.face_normals[obj_id][prim] @ g.R.T.astype(np.float32)
        # Turn normals towards the camera (ray direction K^-1 [u + 0.5, v + 0.5, 1]).
        vv, uu = np.nonzero(sel)
        ray = np.stack(
            [
                self.Kinv[0, 0] * (uu + x0 + 0.5) + self.Kinv[0, 1] * (vv + y0 + 0.5) + self.Kinv[0, 2],
                self.Kinv[1, 1] * (vv + y0 + 0.5) + self.Kinv[1, 2],
                np.ones(len(uu), np.float32),
            ],
            axis=1,
        )
        n[np.einsum("ij,ij->i", n, ray) > 0] *= -1.0
        lambert = np.clip(n @ light32, 0.0, None)
        rgb[y0:y1, x0:x1][sel] = albedo * (ambient + diffuse * lambert)[:, None]

    def _stored_depth(
        self, depth: np.ndarray, crops: list, depth_scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth (H, W) in mm as stored, uint16 ``round(depth / depth_scale)``, and as a reader gets it back
        (float64 mm, ``stored * depth_scale``); only the union box of the instances is non-zero."""
        H, W = depth.shape
        stored = np.zeros((H, W), np.uint16)
        depth_read = np.zeros((H, W), np.float64)
        if crops:
            bx0 = min(c[0][0] for c in crops)
            by0 = min(c[0][1] for c in crops)
            bx1 = max(c[0][2] for c in crops)
            by1 = max(c[0][3] for c in crops)
            q = np.round(depth[by0:by1, bx0:bx1] / depth_scale)
            if q.max() > 65535:
                raise BopkdError(
                    f"synth {self.cfg.name}: depth exceeds uint16 at depth_scale {depth_scale}; use a larger depth scale"
                )
            stored[by0:by1, bx0:bx1] = q
            depth_read[by0:by1, bx0:bx1] = q * depth_scale
        return stored, depth_read


def _visible_layers(instances: list[GTInstance], layers: list, W: int, H: int) -> tuple[list, list, list]:
    """The instances that cover some pixel of the W x H image: (GT instances, their layers, their crops)."""
    gts, kept, crops = [], [], []
    for g, lay in zip(instances, layers, strict=True):
        c = None if lay is None else lay.crop_to((0, 0, W, H))
        if c is not None and lay.mask[c[1]].any():
            gts.append(g)
            kept.append(lay)
            crops.append(c)
    return gts, kept, crops


def _compose(kept: list, crops: list, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit wins (earlier instance on ties), as one ray cast of all instances would give.

    Returns the (H, W) float64 depth in mm (0: no hit) and the (H, W) int32 index into ``kept`` (-1).
    """
    depth = np.zeros((H, W), np.float64)
    inst = np.full((H, W), -1, np.int32)
    for i, (lay, ((x0, y0, x1, y1), sl)) in enumerate(zip(kept, crops, strict=True)):
        d = lay.depth[sl]
        cur = depth[y0:y1, x0:x1]
        win = (d > 0) & ((cur == 0) | (d < cur))
        cur[win] = d[win]
        inst[y0:y1, x0:x1][win] = i
    return depth, inst
