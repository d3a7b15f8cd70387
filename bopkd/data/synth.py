"""Synthetic BOP datasets: RGB-D images of posed objects with every file the BOP format has.

``build_synthetic_dataset(cfg)`` writes ``root/NAME/`` with ``camera.json``, ``models/`` and
``models_eval/`` (PLY + ``models_info.json``), ``train_pbr/`` and ``test/`` scenes (rgb, depth as uint16
times ``depth_scale`` in mm, mask, mask_visib, scene_camera, scene_gt, scene_gt_info),
``test_targets_bop19.json`` and the descriptor ``bopkd_dataset.json`` that lets
``BopDataset(NAME, root)`` read it. Layout and units follow the BOP format document
(https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md).

How an image is made:

- objects: bopkd's procedural models (:mod:`bopkd.data.procedural`) or the models of an existing BOP
  dataset; several distinct objects per image, placed without interpenetrating so that they occlude
  each other in the image;
- poses: ``linemod`` viewpoints (the objects stand on a table, z up; the camera is on the upper
  hemisphere around the first object, elevation 0-80 deg, uniform on the sphere cap, azimuth uniform,
  in-plane rotation within +-15 deg, distance uniform in LM's test range 600-1100 mm, as in Hinterstoisser
  et al., ACCV 2012) or ``free`` viewpoints (uniform random rotations, positions uniform in the image at a
  depth in 450-1100 mm). The distances are for LM-O's camera at 640x480; another camera or image size
  scales them by its focal length relative to the image width, so objects cover the same fraction of
  the image;
- rendering: one ray per pixel centre with :class:`~bopkd.geometry.render.Renderer`, each object alone
  in its box (so its full silhouette comes for free), composed by nearest hit; RGB is the barycentric
  interpolation of the model's vertex colours, shaded Lambertian + ambient with a random light, over a
  random procedural background (noise, stripes, checker), with sensor noise;
- GT: masks and ``scene_gt_info`` are computed from the *stored* depth with the definitions of the BOP
  toolkit's ``calc_gt_masks.py`` / ``calc_gt_info.py`` (:mod:`bopkd.data.gt_info`; its renderer is the
  same ray caster as the images', which differs from the toolkit's OpenGL one by about one edge pixel in
  a few instances: on the minibop oracle, 20 of 25 instances match exactly); the BOP'19 test targets are
  the instances with ``visib_fract >= 0.1`` (the BOP'19 rule; for real datasets the published file is
  not reproducible that way, for ours it is the definition).

Every image draws from its own random stream, seeded by ``(seed, split, image index)``: the same
config gives byte-identical files. Files are written atomically (temporary file + rename). A scene's
``scene_gt_info.json`` is written last, so an interrupted build resumes at the first unfinished scene.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from bopkd.data import bop_json
from bopkd.data.gt_info import VISIB_DELTA, canvas_window, instance_masks
from bopkd.data.records import Camera, GTInfo, GTInstance, ObjectInfo, ObjectModel, Target
from bopkd.data.registry import DESCRIPTOR_NAME, DatasetSpec
from bopkd.errors import BopkdError
from bopkd.geometry.render import Renderer
from bopkd.utils.atomic import atomic_write_json

#: Intrinsics of registered datasets' default cameras, at their native image size (BOP camera files:
#: ``camera.json`` of lm/lmo, ``camera_uw.json`` of ycbv, ``camera_primesense.json`` of tless).
CAMERAS: dict[str, dict[str, float]] = {
    "lm": {"fx": 572.4114, "fy": 573.57043, "cx": 325.2611, "cy": 242.04899, "width": 640, "height": 480},
    "lmo": {"fx": 572.4114, "fy": 573.57043, "cx": 325.2611, "cy": 242.04899, "width": 640, "height": 480},
    "ycbv": {"fx": 1066.778, "fy": 1067.487, "cx": 312.9869, "cy": 241.3109, "width": 640, "height": 480},
    "tless": {
        "fx": 1075.65091572,
        "fy": 1073.90347929,
        "cx": 360.0,
        "cy": 270.0,
        "width": 720,
        "height": 540,
    },
}

#: Object distances (mm) of each viewpoint mode for LM-O's camera at 640x480 (fx / width = 0.894).
DEPTH_RANGES = {"linemod": (600.0, 1100.0), "free": (450.0, 1100.0)}
_REF_FX_PER_WIDTH = 572.4114 / 640.0

SPLITS = ("train_pbr", "test")
_BUILDING_MARKER = ".bopkd_synth_building.json"


@dataclass
class SynthConfig:
    """Settings of a synthetic dataset (``bopkd synth``). Loadable from YAML via :meth:`from_dict`.

    Attributes:
        name: dataset name, the folder under ``root``.
        root: folder that holds the datasets.
        models: ``"procedural"`` (bopkd's objects 1-8) or the path of a BOP ``models/`` folder with
            ``models_info.json`` (its ``models_eval`` sibling, if any, becomes ``models_eval/``).
        objects: object ids to use (default: all).
        train: number of ``train_pbr`` images.
        test: number of ``test`` images.
        width, height: image size in px (0: the camera's own size).
        camera: registered dataset whose camera to use (lm, lmo, ycbv, tless), a dataset folder under
            ``root``, or a ``camera.json`` path; K is scaled when the image size differs.
        viewpoints: ``"linemod"`` (upper hemisphere, small in-plane rotation: an easy setting) or
            ``"free"`` (any rotation).
        objects_per_image: inclusive range of the number of distinct objects per image.
        depth_range: object distance range in mm at LM-O's focal length per image width (default: by
            viewpoint mode), scaled to the camera.
        max_elevation_deg: largest camera elevation above the table in ``linemod`` mode.
        inplane_deg: largest in-plane rotation of the camera in ``linemod`` mode.
        table_radius: radius (mm) of the table area objects are placed on in ``linemod`` mode.
        seed: random seed; same seed, same files.
        images_per_scene: images per scene folder (BOP's PBR scenes hold 1000).
        train_rgb_ext, test_rgb_ext: ``"jpg"`` or ``"png"`` (BOP: jpg for PBR, png for test).
        jpeg_quality: JPEG quality, 0-100.
        png_compression: zlib level of PNG files, 0-9 (1: fast).
        train_depth_scale, test_depth_scale: mm per stored depth unit (BOP PBR: 0.1, LM test: 1.0).
        visib_delta: visibility tolerance in mm of the GT info (BOP: 15).
        min_visib_fract: smallest ``visib_fract`` of a BOP'19 test target.
        edge_length: longest edge (mm) of the procedural meshes.
    """

    name: str = "demo"
    root: str = "bop_data"
    models: str = "procedural"
    objects: tuple[int, ...] | None = None
    train: int = 200
    test: int = 40
    width: int = 0
    height: int = 0
    camera: str = "lmo"
    viewpoints: str = "linemod"
    objects_per_image: tuple[int, int] = (3, 6)
    depth_range: tuple[float, float] | None = None
    max_elevation_deg: float = 80.0
    inplane_deg: float = 15.0
    table_radius: float = 220.0
    seed: int = 0
    images_per_scene: int = 1000
    train_rgb_ext: str = "jpg"
    test_rgb_ext: str = "png"
    jpeg_quality: int = 95
    png_compression: int = 1
    train_depth_scale: float = 0.1
    test_depth_scale: float = 1.0
    visib_delta: float = VISIB_DELTA
    min_visib_fract: float = 0.1
    edge_length: float = 6.0

    def __post_init__(self) -> None:
        if self.objects is not None:
            self.objects = tuple(int(i) for i in self.objects)
        self.objects_per_image = tuple(int(v) for v in self.objects_per_image)
        if self.depth_range is not None:
            self.depth_range = tuple(float(v) for v in self.depth_range)
        self.root = str(self.root)
        self.models = str(self.models)
        # Paths count by what they point to, so a rerun from another folder finds the same settings.
        if self.models != "procedural" and Path(self.models).exists():
            self.models = str(Path(self.models).resolve())
        if self.camera not in CAMERAS and Path(self.camera).exists():
            self.camera = str(Path(self.camera).resolve())
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BopkdError` naming the first bad setting and what it should be."""

        def bad(msg: str) -> BopkdError:
            return BopkdError(f"synth config for {self.name!r}: {msg}")

        if not self.name or "/" in self.name or self.name.startswith("."):
            raise bad("name must be a plain folder name (no '/', not starting with '.')")
        if self.train < 0 or self.test < 0:
            raise bad("--train and --test must be >= 0")
        if self.width < 0 or self.height < 0 or (self.width == 0) != (self.height == 0):
            raise bad("--size must be WxH with both > 0 (or omitted for the camera's size)")
        if self.viewpoints not in ("linemod", "free"):
            raise bad(f"viewpoints {self.viewpoints!r} unknown; use linemod or free")
        lo, hi = self.objects_per_image if len(self.objects_per_image) == 2 else (0, -1)
        if not 1 <= lo <= hi:
            raise bad("objects_per_image must be (min, max) with 1 <= min <= max")
        if self.depth_range is not None and not (
            len(self.depth_range) == 2 and 0 < self.depth_range[0] <= self.depth_range[1]
        ):
            raise bad("depth_range must be (near, far) in mm with 0 < near <= far")
        if not 0 <= self.max_elevation_deg <= 89.0:
            raise bad("max_elevation_deg must be in [0, 89]")
        if self.images_per_scene < 1:
            raise bad("images_per_scene must be >= 1")
        for ext in (self.train_rgb_ext, self.test_rgb_ext):
            if ext not in ("jpg", "png"):
                raise bad(f"rgb extension {ext!r} unknown; use jpg or png")
        if not 0 <= self.png_compression <= 9 or not 0 <= self.jpeg_quality <= 100:
            raise bad("png_compression must be 0-9 and jpeg_quality 0-100")
        if self.train_depth_scale <= 0 or self.test_depth_scale <= 0:
            raise bad("depth scales must be > 0")
        if self.objects is not None and len(self.objects) == 0:
            raise bad("--objects is empty")

    @classmethod
    def from_dict(cls, d: dict) -> SynthConfig:
        """Build from a plain dict (e.g. loaded from YAML), rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BopkdError(
                f"synth config: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("objects", "objects_per_image", "depth_range"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def identity(self) -> dict:
        """The settings that decide the files' content (all but where they go)."""
        d = self.to_dict()
        d.pop("root")
        d.pop("name")
        return d


# --- camera ----------------------------------------------------------------------------------------


def resolve_camera(spec: str, width: int = 0, height: int = 0, root: str | Path | None = None) -> Camera:
    """The camera named by ``spec`` (registered dataset, dataset folder under ``root``, or camera.json),
    at ``width x height`` when given.

    Resizing scales K with the image: ``fx' = fx * W'/W``, ``cx' = cx * W'/W`` (and likewise in y), so
    the image point ``(x, y)`` of the original maps to ``(x W'/W, y H'/H)`` with the pixel-centre
    convention of :class:`~bopkd.geometry.render.Renderer` (pixel ``u`` spans ``[u, u + 1)``).
    """
    if spec in CAMERAS:
        c = CAMERAS[spec]
        K = np.array([[c["fx"], 0.0, c["cx"]], [0.0, c["fy"], c["cy"]], [0.0, 0.0, 1.0]])
        cam = Camera(K=K, width=int(c["width"]), height=int(c["height"]))
    else:
        p = Path(spec)
        if root is not None and not p.exists() and (Path(root) / spec / "camera.json").is_file():
            p = Path(root) / spec / "camera.json"
        elif p.is_dir():
            p = p / "camera.json"
        if not p.is_file():
            raise BopkdError(
                f"camera {spec!r}: not a registered dataset ({', '.join(CAMERAS)}), a dataset folder with "
                f"camera.json, or a camera.json file; pass --camera lmo or a path"
            )
        cam = bop_json.load_camera(p)
        if cam.width <= 0 or cam.height <= 0:
            raise BopkdError(f"{p}: camera file lacks width/height; add them or pass --size WxH")
    if width and height and (width, height) != (cam.width, cam.height):
        sx, sy = width / cam.width, height / cam.height
        K = cam.K.copy()
        K[0] *= sx
        K[1] *= sy
        cam = Camera(K=K, width=int(width), height=int(height))
    return Camera(K=cam.K, width=cam.width, height=cam.height, depth_scale=1.0)


# --- models ----------------------------------------------------------------------------------------


@dataclass
class ModelSet:
    """The objects of a dataset: model and info per id, and how to write ``models``/``models_eval``."""

    models: dict[int, ObjectModel]
    infos: dict[int, ObjectInfo]
    write: Callable[[Path], None]
    source: str


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


def load_models(cfg: SynthConfig) -> ModelSet:
    """The objects ``cfg`` asks for, with a writer of the dataset's ``models/`` and ``models_eval/``."""
    if cfg.models == "procedural":
        from bopkd.data.procedural import PROCEDURAL_OBJECTS, procedural_models

        ids = list(cfg.objects) if cfg.objects is not None else sorted(PROCEDURAL_OBJECTS)
        unknown = [i for i in ids if i not in PROCEDURAL_OBJECTS]
        if unknown:
            raise BopkdError(
                f"--objects {unknown}: no such procedural object; ids are {sorted(PROCEDURAL_OBJECTS)}"
            )
        built = procedural_models(ids, cfg.edge_length)
        models = {i: m for i, (m, _) in built.items()}
        infos = {i: inf for i, (_, inf) in built.items()}

        def write(ds_dir: Path) -> None:
            from bopkd.data.ply import save_ply

            for sub, eval_ in (("models", False), ("models_eval", True)):
                d = ds_dir / sub
                d.mkdir(parents=True, exist_ok=True)
                for i, m in models.items():
                    # models_eval: geometry only, as BOP's evaluation models.
                    save_ply(
                        d / f"obj_{i:06d}.ply", ObjectModel(m.pts, m.faces, m.normals, None) if eval_ else m
                    )
                bop_json.save_models_info(d / "models_info.json", infos)

        return ModelSet(models, infos, write, "procedural")

    src = Path(cfg.models)
    if (
        src.is_dir()
        and not (src / "models_info.json").is_file()
        and (src / "models" / "models_info.json").is_file()
    ):
        src = src / "models"
    info_path = src / "models_info.json"
    if not info_path.is_file():
        raise BopkdError(
            f"{info_path}: missing; --models needs 'procedural' or a BOP models/ folder holding models_info.json"
        )
    raw = bop_json.load_json(info_path)
    all_infos = bop_json.load_models_info(info_path)
    ids = list(cfg.objects) if cfg.objects is not None else sorted(all_infos)
    unknown = [i for i in ids if i not in all_infos]
    if unknown:
        raise BopkdError(f"{info_path}: no object(s) {unknown}; it has {sorted(all_infos)}")
    from bopkd.data.ply import load_ply

    models = {}
    for i in ids:
        m = load_ply(src / f"obj_{i:06d}.ply")
        if len(m.faces) == 0:
            raise BopkdError(
                f"{src / f'obj_{i:06d}.ply'}: the model has no faces and cannot be rendered; use a mesh"
            )
        models[i] = m
    infos = {i: all_infos[i] for i in ids}
    eval_src = src.parent / "models_eval"
    eval_src = eval_src if (eval_src / "models_info.json").is_file() else src

    def write(ds_dir: Path) -> None:
        for sub, s in (("models", src), ("models_eval", eval_src)):
            d = ds_dir / sub
            d.mkdir(parents=True, exist_ok=True)
            for i in ids:
                _copy_file(s / f"obj_{i:06d}.ply", d / f"obj_{i:06d}.ply")
            raw_s = raw if s == src else bop_json.load_json(s / "models_info.json")
            keep = {str(i): raw_s[str(i)] for i in ids if str(i) in raw_s}
            if len(keep) == len(raw_s):
                _copy_file(s / "models_info.json", d / "models_info.json")
            else:
                bop_json.save_json(d / "models_info.json", keep)

    return ModelSet(models, infos, write, str(src))


def _copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --- poses -----------------------------------------------------------------------------------------


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


# --- appearance ------------------------------------------------------------------------------------


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 255]: smooth noise, stripes or a checker, two random colours and an
    illumination gradient. Made at half resolution and upsampled; no image files are needed."""
    w2, h2 = (width + 1) // 2, (height + 1) // 2
    c0, c1 = rng.uniform(20, 235, size=3), rng.uniform(20, 235, size=3)
    kind = int(rng.integers(3))
    ys, xs = np.mgrid[0:h2, 0:w2].astype(np.float32)
    if kind == 0:  # multi-octave value noise
        a = np.zeros((h2, w2), np.float32)
        amp = 1.0
        for cells in (4, 9, 20):
            g = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
            a += amp * cv2.resize(g, (w2, h2), interpolation=cv2.INTER_CUBIC)
            amp *= 0.5
        a = (a - a.min()) / max(float(np.ptp(a)), 1e-6)
    elif kind == 1:  # stripes
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        a = 0.5 + 0.5 * np.sin((xs * math.cos(ang) + ys * math.sin(ang)) * (2 * math.pi / period))
    else:  # rotated checker
        ang = rng.uniform(0, math.pi)
        cell = rng.uniform(8, 40)
        u = xs * math.cos(ang) + ys * math.sin(ang)
        v = -xs * math.sin(ang) + ys * math.cos(ang)
        a = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    img = c0[None, None, :].astype(np.float32) + a[..., None] * (c1 - c0)[None, None, :].astype(np.float32)
    gx, gy = rng.uniform(-0.4, 0.4, size=2)
    img *= (1.0 + gx * (xs / w2 - 0.5) + gy * (ys / h2 - 0.5))[..., None]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


class TextureBank:
    """Backgrounds and sensor-noise tiles, made lazily from ``(seed, kind, index)``.

    Making a full-size texture per image costs more than rendering it; an image instead takes one of
    ``n_backgrounds`` textures (1.25x the image size) at a random offset, flipped and tinted at random,
    and a window of one of ``n_noise`` unit Gaussian tiles. Each entry depends only on the seed and its
    index, so an image's look does not depend on which images were made before it.
    """

    def __init__(self, seed: int, width: int, height: int, n_backgrounds: int = 32, n_noise: int = 4):
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.n_backgrounds, self.n_noise = n_backgrounds, n_noise
        self.bw, self.bh = int(round(width * 1.25)), int(round(height * 1.25))
        self._bg: dict[int, np.ndarray] = {}
        self._noise: dict[int, np.ndarray] = {}

    def _entry_rng(self, kind: int, k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, 100 + kind, k]))

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) float32 background for one image (a new array)."""
        k = int(rng.integers(self.n_backgrounds))
        if k not in self._bg:
            bg = random_background(self._entry_rng(0, k), self.bw, self.bh)
            self._bg[k] = np.clip(bg + 0.5, 0, 255).astype(np.uint8)  # 8 bits: 1/4 of the memory
        ox = int(rng.integers(self.bw - self.width + 1))
        oy = int(rng.integers(self.bh - self.height + 1))
        img = self._bg[k][oy : oy + self.height, ox : ox + self.width]
        flip = int(rng.integers(4))  # none, vertical, horizontal, both
        if flip:
            img = cv2.flip(img, (None, 0, 1, -1)[flip])
        gain = rng.uniform(0.7, 1.3, size=3)
        return cv2.multiply(img, tuple(float(g) for g in gain) + (0.0,), dtype=cv2.CV_32F)

    def add_noise(self, rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
        """``img + sigma * N(0, 1)`` per pixel and channel, from a window of a noise tile."""
        k = int(rng.integers(self.n_noise))
        if k not in self._noise:
            self._noise[k] = self._entry_rng(1, k).standard_normal(
                (self.height + 32, self.width + 32, 3), dtype=np.float32
            )
        ox, oy = int(rng.integers(33)), int(rng.integers(33))
        return cv2.scaleAdd(self._noise[k][oy : oy + self.height, ox : ox + self.width], float(sigma), img)


def _light(rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """A random light: unit direction towards it (camera frame, from the camera's side), ambient, diffuse."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.5, 1.5)])
    return d / np.linalg.norm(d), float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.5, 0.85))


# --- images ----------------------------------------------------------------------------------------


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
        W, H = self.cam.width, self.cam.height
        K = self.cam.K
        plan = self.sampler.sample(rng)
        rgb = self.textures.background(rng)
        light, ambient, diffuse = _light(rng)
        light32 = light.astype(np.float32)
        noise_sigma = float(rng.uniform(0.0, 4.0))

        inst_list = [(g.obj_id, g.R, g.t) for g in plan.instances]
        layers = self.renderer.render_layers(K, inst_list, window=canvas_window(W, H), uv=True)
        # Keep the instances that cover some pixel of the image.
        gts, kept, crops = [], [], []
        for g, lay in zip(plan.instances, layers, strict=True):
            c = None if lay is None else lay.crop_to((0, 0, W, H))
            if c is not None and lay.mask[c[1]].any():
                gts.append(g)
                kept.append(lay)
                crops.append(c)

        # Compose: nearest hit wins (earlier instance on ties), as one ray cast of all would give.
        depth = np.zeros((H, W), np.float64)
        inst = np.full((H, W), -1, np.int32)
        for i, (lay, ((x0, y0, x1, y1), sl)) in enumerate(zip(kept, crops, strict=True)):
            d = lay.depth[sl]
            cur = depth[y0:y1, x0:x1]
            win = (d > 0) & ((cur == 0) | (d < cur))
            cur[win] = d[win]
            inst[y0:y1, x0:x1][win] = i

        # Shade the visible pixels of each instance: interpolated vertex colour, Lambertian + ambient.
        for i, (lay, ((x0, y0, x1, y1), sl)) in enumerate(zip(kept, crops, strict=True)):
            sel = inst[y0:y1, x0:x1] == i
            if not sel.any():
                continue
            obj_id = gts[i].obj_id
            prim = lay.prim[sl][sel]
            uv = lay.uv[sl][sel]
            tri = self.faces[obj_id][prim]
            col = self.colors[obj_id]
            b1, b2 = uv[:, 0:1], uv[:, 1:2]
            albedo = (1.0 - b1 - b2) * col[tri[:, 0]] + b1 * col[tri[:, 1]] + b2 * col[tri[:, 2]]
            n = self.face_normals[obj_id][prim] @ gts[i].R.T.astype(np.float32)
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
        if noise_sigma > 0:
            rgb = self.textures.add_noise(rng, rgb, noise_sigma)
        rgb8 = cv2.add(rgb, (0.0, 0.0, 0.0, 0.0), dtype=cv2.CV_8U)  # round and saturate to 0..255

        # Depth as stored (uint16, depth / depth_scale) and as a reader gets it back.
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
        infos, masks = [], []
        for lay in kept:
            im = instance_masks(lay, depth_read, K, self.cfg.visib_delta)
            infos.append(im.info)
            masks.append((im.box, im.mask, im.mask_visib))
        return RenderedImage(rgb8, stored, gts, infos, masks, plan.R_w2c, plan.t_w2c)


class FileWriter:
    """Encodes and writes images atomically (temporary sibling + rename) on a small thread pool.

    OpenCV's encoders release the GIL, so encoding overlaps with rendering the next image. Errors
    surface at :meth:`wait`.
    """

    def __init__(self, threads: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.pending: list = []

    @staticmethod
    def _write(path: Path, im: np.ndarray | Callable[[], np.ndarray], params: list[int]) -> None:
        ok, buf = cv2.imencode(path.suffix, im() if callable(im) else im, params)
        if not ok:
            raise BopkdError(f"{path}: could not encode the image")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise BopkdError(
                f"{path}: could not write ({e.strerror}); check the folder is writable and the disk has room"
            ) from None

    def submit(self, path: Path, im: np.ndarray | Callable[[], np.ndarray], params: list[int]) -> None:
        """Queue a write of ``im`` (or of what ``im()`` returns, computed on the writer thread)."""
        self.pending.append(self.pool.submit(self._write, path, im, params))
        if len(self.pending) > 256:
            self.wait()

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        """Wait for every pending write (raising the first error), then stop the threads."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Drop the writes not yet started and stop the threads (on an error or Ctrl-C elsewhere)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending = []


def _full_mask(box: tuple[int, int, int, int], m: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask image, 255 inside: ``m`` pasted at ``box`` ``(x0, y0, x1, y1)``."""
    full = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    full[y0:y1, x0:x1][m] = 255
    return full


def _png_params(level: int, filt: int = cv2.IMWRITE_PNG_FILTER_NONE, rle: bool = False) -> list[int]:
    """PNG settings: zlib ``level``, one row filter (NONE for masks and depth, where filters cost more
    than they save; SUB for RGB), and the RLE strategy for masks and depth (long runs of zeros)."""
    p = [cv2.IMWRITE_PNG_COMPRESSION, int(level), cv2.IMWRITE_PNG_FILTER, int(filt)]
    if rle:
        p += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    return p


# --- the builder -----------------------------------------------------------------------------------


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def _scene_plan(n: int, per_scene: int) -> list[tuple[int, range]]:
    """``(scene_id, global image indices)`` of a split of ``n`` images."""
    return [
        (s, range(s * per_scene, min(n, (s + 1) * per_scene)))
        for s in range((n + per_scene - 1) // per_scene)
    ]


def _write_scene(
    maker: ImageMaker,
    writer: FileWriter,
    cfg: SynthConfig,
    split: str,
    scene_dir: Path,
    indices: range,
    tick: Callable[[int], None],
) -> None:
    ext = cfg.train_rgb_ext if split == "train_pbr" else cfg.test_rgb_ext
    depth_scale = cfg.train_depth_scale if split == "train_pbr" else cfg.test_depth_scale
    if ext == "jpg":
        rgb_params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    else:
        rgb_params = _png_params(cfg.png_compression, cv2.IMWRITE_PNG_FILTER_SUB)
    depth_params = mask_params = _png_params(cfg.png_compression, rle=True)
    for sub in ("rgb", "depth", "mask", "mask_visib"):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)
    cams: dict[int, Camera] = {}
    gts: dict[int, list[GTInstance]] = {}
    infos: dict[int, list[GTInfo]] = {}
    H, W = maker.cam.height, maker.cam.width
    for im_id, idx in enumerate(indices):
        img = maker.make(_rng(cfg.seed, split, idx), depth_scale)
        writer.submit(
            scene_dir / "rgb" / f"{im_id:06d}.{ext}",
            partial(cv2.cvtColor, img.rgb, cv2.COLOR_RGB2BGR),
            rgb_params,
        )
        writer.submit(scene_dir / "depth" / f"{im_id:06d}.png", img.depth_stored, depth_params)
        for gt_id, (box, mask, mask_visib) in enumerate(img.masks):
            for sub, m in (("mask", mask), ("mask_visib", mask_visib)):
                path = scene_dir / sub / f"{im_id:06d}_{gt_id:06d}.png"
                writer.submit(path, partial(_full_mask, box, m, H, W), mask_params)
        cams[im_id] = Camera(K=maker.cam.K, depth_scale=depth_scale, R_w2c=img.R_w2c, t_w2c=img.t_w2c)
        gts[im_id] = img.gts
        infos[im_id] = img.infos
        tick(1)
    writer.wait()
    bop_json.save_scene_camera(scene_dir / "scene_camera.json", cams)
    bop_json.save_scene_gt(scene_dir / "scene_gt.json", gts)
    bop_json.save_scene_gt_info(scene_dir / "scene_gt_info.json", infos)  # last: marks the scene complete


def _targets(ds_dir: Path, scenes: list[int], min_visib: float) -> list[Target]:
    """BOP'19 targets: per image and object, the number of instances with ``visib_fract >= min_visib``."""
    out = []
    for s in scenes:
        d = ds_dir / "test" / f"{s:06d}"
        gts = bop_json.load_scene_gt(d / "scene_gt.json")
        infos = bop_json.load_scene_gt_info(d / "scene_gt_info.json")
        for im_id in sorted(gts):
            counts: dict[int, int] = {}
            for g, inf in zip(gts[im_id], infos[im_id], strict=True):
                if inf.visib_fract >= min_visib:
                    counts[g.obj_id] = counts.get(g.obj_id, 0) + 1
            out += [Target(s, im_id, o, c) for o, c in sorted(counts.items())]
    return out


def _depth_range(ds_dir: Path, scenes: list[int]) -> tuple[float, float] | None:
    zs = [
        float(g.t[2])
        for s in scenes
        for insts in bop_json.load_scene_gt(ds_dir / "test" / f"{s:06d}" / "scene_gt.json").values()
        for g in insts
    ]
    return (round(min(zs), 2), round(max(zs), 2)) if zs else None


def _is_ours(ds_dir: Path) -> bool:
    return (ds_dir / DESCRIPTOR_NAME).is_file() or (ds_dir / _BUILDING_MARKER).is_file()


def _clear(ds_dir: Path) -> None:
    """Remove what a build writes (only called on a folder that a build made)."""
    for sub in ("models", "models_eval", *SPLITS):
        if (ds_dir / sub).is_dir():
            shutil.rmtree(ds_dir / sub)
    for f in ("camera.json", "test_targets_bop19.json", DESCRIPTOR_NAME, _BUILDING_MARKER):
        (ds_dir / f).unlink(missing_ok=True)


def build_synthetic_dataset(
    cfg: SynthConfig, force: bool = False, log: Callable[[str], None] | None = None, progress=None
) -> Path:
    """Write the synthetic BOP dataset ``cfg.root/cfg.name`` and return its folder.

    A complete dataset built with the same settings is left as it is (a message says so) unless
    ``force``; one built with other settings is an error unless ``force``. An interrupted build with the
    same settings resumes at its first unfinished scene.

    Args:
        cfg: the settings.
        force: rebuild from scratch even if the dataset exists.
        log: called with one-line messages (default: silent).
        progress: optional ``(total) -> callable(n)`` factory for a progress bar.
    """
    log = log or (lambda _m: None)
    ds_dir = Path(cfg.root) / cfg.name
    ident = cfg.identity()
    if ds_dir.exists() and any(ds_dir.iterdir()):
        if not _is_ours(ds_dir):
            raise BopkdError(
                f"{ds_dir}: exists and was not made by bopkd synth; choose another name or --root, or remove it"
            )
        desc = ds_dir / DESCRIPTOR_NAME
        if desc.is_file():
            try:
                old = json.loads(desc.read_text()).get("synth")
            except json.JSONDecodeError:
                old = None
            if not force:
                if old == ident:
                    log(
                        f"{ds_dir} exists and is complete (same settings); nothing to do (--force rebuilds it)"
                    )
                    return ds_dir
                raise BopkdError(
                    f"{ds_dir}: exists, built with other settings; pass --force to rebuild it or choose another name"
                )
            _clear(ds_dir)
        else:
            marker = ds_dir / _BUILDING_MARKER
            try:
                old = json.loads(marker.read_text())
            except (json.JSONDecodeError, OSError):
                old = None
            if force or old != ident:
                _clear(ds_dir)
            else:
                log(f"{ds_dir}: resuming an interrupted build")
    ds_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ds_dir / _BUILDING_MARKER, ident)

    t0 = time.perf_counter()
    cam = resolve_camera(cfg.camera, cfg.width, cfg.height, cfg.root)
    mset = load_models(cfg)
    bop_json.save_camera(ds_dir / "camera.json", cam)
    mset.write(ds_dir)
    maker = ImageMaker(cfg, cam, mset)

    total = cfg.train + cfg.test
    tick = progress(total) if progress is not None else (lambda _n: None)
    writer = FileWriter()
    try:
        for split, n in (("train_pbr", cfg.train), ("test", cfg.test)):
            for scene_id, indices in _scene_plan(n, cfg.images_per_scene):
                scene_dir = ds_dir / split / f"{scene_id:06d}"
                if (scene_dir / "scene_gt_info.json").is_file():
                    tick(len(indices))
                    continue
                _write_scene(maker, writer, cfg, split, scene_dir, indices, tick)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    test_scenes = [s for s, _ in _scene_plan(cfg.test, cfg.images_per_scene)]
    bop_json.save_targets(
        ds_dir / "test_targets_bop19.json", _targets(ds_dir, test_scenes, cfg.min_visib_fract)
    )
    splits = tuple(s for s, n in (("train_pbr", cfg.train), ("test", cfg.test)) if n > 0)
    spec = DatasetSpec(
        name=cfg.name,
        title=f"synthetic {cfg.name} ({'procedural objects' if mset.source == 'procedural' else 'models of ' + mset.source})",
        obj_ids=tuple(sorted(mset.infos)),
        symmetric_obj_ids=tuple(i for i in sorted(mset.infos) if mset.infos[i].is_symmetric),
        im_size=(cam.width, cam.height),
        test_scene_ids=tuple(test_scenes),
        splits=splits,
        depth_range=_depth_range(ds_dir, test_scenes),
        vsd_delta=15.0,
        registered=False,
    )
    desc = spec.to_descriptor()
    desc["synth"] = ident
    atomic_write_json(ds_dir / DESCRIPTOR_NAME, desc)  # last: marks the dataset complete
    (ds_dir / _BUILDING_MARKER).unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    log(
        f"wrote {ds_dir}: {cfg.train} train_pbr + {cfg.test} test images of {cam.width}x{cam.height} in {dt:.1f} s"
    )
    return ds_dir


def synth_config_from_options(
    name: str,
    root: str | Path,
    config: str | Path | None = None,
    models: str | None = None,
    train: int | None = None,
    test: int | None = None,
    size: str | None = None,
    seed: int | None = None,
    camera: str | None = None,
    objects: str | None = None,
    viewpoints: str | None = None,
    per_image: str | None = None,
) -> SynthConfig:
    """A :class:`SynthConfig` from ``bopkd synth`` options (None: not given) over an optional YAML file."""
    d: dict = {}
    if config is not None:
        import yaml

        p = Path(config)
        if not p.is_file():
            raise BopkdError(f"{p}: no such config file; pass --config with an existing YAML file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise BopkdError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
        if not isinstance(loaded, dict):
            raise BopkdError(f"{p}: expected a mapping of SynthConfig settings")
        d.update(loaded)
    d["name"] = name
    d["root"] = str(root)
    given = {
        "models": models,
        "train": train,
        "test": test,
        "seed": seed,
        "camera": camera,
        "viewpoints": viewpoints,
    }
    d.update({k: v for k, v in given.items() if v is not None})
    if size is not None:
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise BopkdError(f"--size {size!r}: expected WxH, e.g. 640x480") from None
        d["width"], d["height"] = w, h
    if objects is not None:
        try:
            d["objects"] = [int(v) for v in objects.replace(" ", "").split(",") if v]
        except ValueError:
            raise BopkdError(f"--objects {objects!r}: expected comma-separated ids, e.g. 1,2,5") from None
    if per_image is not None:
        try:
            parts = [int(v) for v in per_image.split("-")]
        except ValueError:
            raise BopkdError(f"--per-image {per_image!r}: expected MIN-MAX or N, e.g. 3-6") from None
        if len(parts) not in (1, 2):
            raise BopkdError(f"--per-image {per_image!r}: expected MIN-MAX or N, e.g. 3-6")
        d["objects_per_image"] = (parts[0], parts[-1])
    try:
        return SynthConfig.from_dict(d)
    except TypeError as e:
        raise BopkdError(f"synth config: {e}") from None
