"""Objects and poses of one synthetic image: LINEMOD-like viewpoints on a table, or free viewpoints.

See :mod:`bopkd.data.synth` for the two modes and their sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bopkd.data.synth.config import SynthConfig
from bopkd.records import Camera, GTInstance, ObjectInfo

#: Object distances (mm) of each viewpoint mode for LM-O's camera at 640x480 (fx / width = 0.894).
DEPTH_RANGES = {"linemod": (600.0, 1100.0), "free": (450.0, 1100.0)}
_REF_FX_PER_WIDTH = 572.4114 / 640.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (a normalised Gaussian quaternion; Shoemake, Graphics Gems III, 1992)."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class ImagePlan:
    """The poses of one image: GT instances (model-to-camera) and the optional world-to-camera pose."""

    instances: list[GTInstance]
    R_w2c: np.ndarray | None = None
    t_w2c: np.ndarray | None = None


class PoseSampler:
    """Draws the objects and poses of an image (see the module docstring for the two modes)."""

    def __init__(self, cfg: SynthConfig, cam: Camera, infos: dict[int, ObjectInfo]):
        self.cfg = cfg
        self.cam = cam
        self.ids = sorted(infos)
        self.infos = infos
        near, far = cfg.depth_range or DEPTH_RANGES[cfg.viewpoints]
        scale = (cam.fx / cam.width) / _REF_FX_PER_WIDTH
        self.depth_range = (near * scale, far * scale)
        # Bounding radii (mm) around the model origin (3D), and around the z axis (table footprint).
        self.radius3 = {}
        self.radius_xy = {}
        for i, inf in infos.items():
            c = inf.bbox_corners()
            self.radius3[i] = float(np.linalg.norm(c, axis=1).max())
            self.radius_xy[i] = float(np.linalg.norm(c[:, :2], axis=1).max())

    def _choose(self, rng: np.random.Generator) -> list[int]:
        lo, hi = self.cfg.objects_per_image
        n = int(rng.integers(min(lo, len(self.ids)), min(hi, len(self.ids)) + 1))
        return [self.ids[k] for k in rng.permutation(len(self.ids))[:n]]

    def sample(self, rng: np.random.Generator) -> ImagePlan:
        return self._linemod(rng) if self.cfg.viewpoints == "linemod" else self._free(rng)

    def _free(self, rng: np.random.Generator) -> ImagePlan:
        K, W, H = self.cam.K, self.cam.width, self.cam.height
        near, far = self.depth_range
        placed: list[GTInstance] = []
        for obj_id in self._choose(rng):
            for _ in range(30):
                z = rng.uniform(near, far)
                u = rng.uniform(0.1 * W, 0.9 * W)
                v = rng.uniform(0.1 * H, 0.9 * H)
                t = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
                # Bounding spheres apart: no two objects interpenetrate.
                if all(
                    np.linalg.norm(t - g.t) >= self.radius3[obj_id] + self.radius3[g.obj_id] for g in placed
                ):
                    placed.append(GTInstance(obj_id, _random_rotation(rng), t))
                    break
        return ImagePlan(placed)

    def _linemod(self, rng: np.random.Generator) -> ImagePlan:
        cfg = self.cfg
        chosen = self._choose(rng)
        # Objects stand on the table z = 0 (model z up), footprints (circles around z) apart.
        world: list[tuple[int, np.ndarray, np.ndarray]] = []
        for k, obj_id in enumerate(chosen):
            zmin = float(self.infos[obj_id].min_xyz[2])
            for _ in range(50):
                if k == 0:
                    xy = np.zeros(2)
                else:
                    r = cfg.table_radius * math.sqrt(rng.uniform())
                    a = rng.uniform(0, 2 * math.pi)
                    xy = np.array([r * math.cos(a), r * math.sin(a)])
                ok = all(
                    np.linalg.norm(xy - t[:2]) >= self.radius_xy[obj_id] + self.radius_xy[o]
                    for o, _, t in world
                )
                if ok:
                    world.append(
                        (obj_id, _rot_z(rng.uniform(0, 2 * math.pi)), np.array([xy[0], xy[1], -zmin]))
                    )
                    break
        # Camera on the upper hemisphere around the first object's centre.
        first, _, t0 = world[0]
        target = np.array(
            [t0[0], t0[1], t0[2] + float(self.infos[first].min_xyz[2] + 0.5 * self.infos[first].size_xyz[2])]
        )
        near, far = self.depth_range
        dist = rng.uniform(near, far)
        s_max = math.sin(math.radians(cfg.max_elevation_deg))
        elev = math.asin(rng.uniform(0.0, s_max))  # uniform on the sphere cap
        azim = rng.uniform(0, 2 * math.pi)
        centre = target + dist * np.array(
            [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)]
        )
        z_c = (target - centre) / np.linalg.norm(target - centre)
        x_c = np.cross(z_c, [0.0, 0.0, 1.0])
        x_c /= np.linalg.norm(x_c)
        y_c = np.cross(z_c, x_c)
        psi = math.radians(rng.uniform(-cfg.inplane_deg, cfg.inplane_deg))
        x_r = math.cos(psi) * x_c + math.sin(psi) * y_c
        y_r = -math.sin(psi) * x_c + math.cos(psi) * y_c
        R_w2c = np.stack([x_r, y_r, z_c])
        t_w2c = -R_w2c @ centre
        inst = [GTInstance(o, R_w2c @ R, R_w2c @ t + t_w2c) for o, R, t in world]
        return ImagePlan(inst, R_w2c, t_w2c)
