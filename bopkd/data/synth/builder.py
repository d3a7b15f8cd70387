"""The builder of synthetic BOP datasets: scenes of rendered images, targets, descriptor, resume."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from bopkd.data import bop_json
from bopkd.data.registry import DESCRIPTOR_NAME, DatasetSpec
from bopkd.data.synth.camera import resolve_camera
from bopkd.data.synth.config import SynthConfig
from bopkd.data.synth.images import ImageMaker
from bopkd.data.synth.models import ModelSet, load_models
from bopkd.data.synth.writer import FileWriter, full_mask, png_params
from bopkd.errors import BopkdError
from bopkd.records import Camera, GTInfo, GTInstance, Target
from bopkd.utils.atomic import atomic_write_json

SPLITS = ("train_pbr", "test")
_BUILDING_MARKER = ".bopkd_synth_building.json"


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
        rgb_params = png_params(cfg.png_compression, cv2.IMWRITE_PNG_FILTER_SUB)
    depth_params = mask_params = png_params(cfg.png_compression, rle=True)
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
                writer.submit(path, partial(full_mask, box, m, H, W), mask_params)
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


def _prepare_folder(ds_dir: Path, ident: dict, force: bool, log: Callable[[str], None]) -> bool:
    """Make ``ds_dir`` ready for a build; True when a complete build with the same settings is there.

    A folder not made by this builder is an error; a complete one with other settings needs ``force``; an
    interrupted one with the same settings is kept (the build resumes), with other settings cleared.
    """
    if not (ds_dir.exists() and any(ds_dir.iterdir())):
        return False
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
                log(f"{ds_dir} exists and is complete (same settings); nothing to do (--force rebuilds it)")
                return True
            raise BopkdError(
                f"{ds_dir}: exists, built with other settings; pass --force to rebuild it or choose another name"
            )
        _clear(ds_dir)
        return False
    marker = ds_dir / _BUILDING_MARKER
    try:
        old = json.loads(marker.read_text())
    except (json.JSONDecodeError, OSError):
        old = None
    if force or old != ident:
        _clear(ds_dir)
    else:
        log(f"{ds_dir}: resuming an interrupted build")
    return False


def _write_splits(maker: ImageMaker, cfg: SynthConfig, ds_dir: Path, tick: Callable[[int], None]) -> None:
    """Write every unfinished scene of ``train_pbr`` and ``test`` (a scene with ``scene_gt_info.json`` is
    complete and skipped)."""
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


def _write_descriptor(cfg: SynthConfig, ds_dir: Path, cam: Camera, mset: ModelSet) -> None:
    """Write ``test_targets_bop19.json`` and, last, the descriptor that marks the dataset complete."""
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
    desc["synth"] = cfg.identity()
    atomic_write_json(ds_dir / DESCRIPTOR_NAME, desc)  # last: marks the dataset complete


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
    if _prepare_folder(ds_dir, ident, force, log):
        return ds_dir
    ds_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ds_dir / _BUILDING_MARKER, ident)

    t0 = time.perf_counter()
    cam = resolve_camera(cfg.camera, cfg.width, cfg.height, cfg.root)
    mset = load_models(cfg)
    bop_json.save_camera(ds_dir / "camera.json", cam)
    mset.write(ds_dir)
    maker = ImageMaker(cfg, cam, mset)
    tick = progress(cfg.train + cfg.test) if progress is not None else (lambda _n: None)
    _write_splits(maker, cfg, ds_dir, tick)
    _write_descriptor(cfg, ds_dir, cam, mset)
    (ds_dir / _BUILDING_MARKER).unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    log(
        f"wrote {ds_dir}: {cfg.train} train_pbr + {cfg.test} test images of {cam.width}x{cam.height} in {dt:.1f} s"
    )
    return ds_dir
