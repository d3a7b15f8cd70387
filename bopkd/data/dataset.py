"""A BOP dataset on disk: paths and cached loading of its files.

Layout as in the BOP format document::

    ROOT/NAME/camera.json
    ROOT/NAME/models[_eval]/models_info.json, obj_OBJID.ply
    ROOT/NAME/test_targets_bop19.json
    ROOT/NAME/SPLIT/SCENEID/{scene_camera,scene_gt,scene_gt_info}.json
    ROOT/NAME/SPLIT/SCENEID/{rgb,depth}/IMID.png  (rgb may be .jpg, as in train_pbr)
    ROOT/NAME/SPLIT/SCENEID/{mask,mask_visib}/IMID_GTID.png

IDs are zero-padded to 6 digits. Files that are missing raise
:class:`~bopkd.errors.MissingFileError` naming the ``bopkd download`` command that brings them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from bopkd.data import bop_json
from bopkd.data.images import load_depth, load_mask, load_rgb
from bopkd.data.ply import load_ply
from bopkd.data.registry import DatasetSpec, get_spec
from bopkd.errors import BopkdError, MissingFileError
from bopkd.records import Camera, GTInfo, GTInstance, ObjectInfo, ObjectModel, Target

_SPLIT_PART = {
    "test": "test_bop19",
    "train_pbr": "train_pbr",
    "train": "train",
    "models": "models",
    "base": "base",
}


class BopDataset:
    """Access to one BOP dataset ``root/name``.

    Args:
        name: dataset name (registered, or a folder under ``root``).
        root: folder that holds the dataset folder (``bop_data``).
    """

    def __init__(self, name: str, root: str | Path = "bop_data"):
        self.root = Path(root)
        self.name = name
        self.spec: DatasetSpec = get_spec(name, self.root)
        self.path = self.root / name
        if not self.path.is_dir():
            raise MissingFileError(self.path, self._hint("base"))

    def __repr__(self) -> str:
        return f"BopDataset({self.name!r}, root={str(self.root)!r})"

    # --- helpers -----------------------------------------------------------------------------------

    def _hint(self, part: str) -> str:
        if self.spec.registered:
            return f"run: bopkd download {self.name} --root {self.root} --parts {part}"
        return f"rebuild it with: bopkd synth {self.name} --root {self.root}"

    def _need(self, path: Path, part: str) -> Path:
        if not path.exists():
            raise MissingFileError(path, self._hint(part))
        return path

    @property
    def test_split(self) -> str:
        return self.spec.test_split

    # --- dataset-level files -----------------------------------------------------------------------

    @functools.cached_property
    def camera(self) -> Camera:
        """The dataset's default camera (``camera.json``, or the sensor file the registry names)."""
        p = self.path / self.spec.camera_file
        if not p.is_file() and (self.path / "camera.json").is_file():
            p = self.path / "camera.json"
        return bop_json.load_camera(self._need(p, "base"))

    def models_dir(self, eval: bool = False) -> Path:
        """``models/`` (for training and rendering) or the evaluation models folder."""
        if eval:
            p = self.path / self.spec.eval_models
            if p.is_dir():
                return p
        return self.path / "models"

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one dataset object lives for the run
    def models_info(self, eval: bool = False) -> dict[int, ObjectInfo]:
        """obj_id -> :class:`ObjectInfo` from ``models_info.json``."""
        return bop_json.load_models_info(self._need(self.models_dir(eval) / "models_info.json", "models"))

    def model_path(self, obj_id: int, eval: bool = False) -> Path:
        return self.models_dir(eval) / f"obj_{obj_id:06d}.ply"

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def model(self, obj_id: int, eval: bool = False) -> ObjectModel:
        """The PLY model of ``obj_id`` (vertices in mm)."""
        return load_ply(self._need(self.model_path(obj_id, eval), "models"))

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return self.spec.obj_ids

    @functools.cached_property
    def targets(self) -> list[Target]:
        """The BOP'19 test targets (``test_targets_bop19.json``), read, never recomputed."""
        return bop_json.load_targets(self._need(self.path / "test_targets_bop19.json", "base"))

    # --- splits and scenes -------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """Split folders present on disk (``test``, ``train_pbr`` ...)."""
        return sorted(
            p.name for p in self.path.iterdir() if p.is_dir() and p.name.startswith(("train", "test", "val"))
        )

    def split_dir(self, split: str) -> Path:
        return self.path / split

    def scene_ids(self, split: str) -> list[int]:
        d = self.split_dir(split)
        if not d.is_dir():
            raise MissingFileError(d, self._hint(_SPLIT_PART.get(split, split)))
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def scene_dir(self, split: str, scene_id: int) -> Path:
        return self.split_dir(split) / f"{scene_id:06d}"

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def scene_camera(self, split: str, scene_id: int) -> dict[int, Camera]:
        p = self.scene_dir(split, scene_id) / "scene_camera.json"
        return bop_json.load_scene_camera(self._need(p, _SPLIT_PART.get(split, split)))

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def scene_gt(self, split: str, scene_id: int) -> dict[int, list[GTInstance]]:
        p = self.scene_dir(split, scene_id) / "scene_gt.json"
        return bop_json.load_scene_gt(self._need(p, _SPLIT_PART.get(split, split)))

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def scene_gt_info(self, split: str, scene_id: int) -> dict[int, list[GTInfo]]:
        p = self.scene_dir(split, scene_id) / "scene_gt_info.json"
        return bop_json.load_scene_gt_info(self._need(p, _SPLIT_PART.get(split, split)))

    def im_ids(self, split: str, scene_id: int) -> list[int]:
        return sorted(self.scene_camera(split, scene_id))

    # --- images ------------------------------------------------------------------------------------

    def rgb_path(self, split: str, scene_id: int, im_id: int) -> Path:
        d = self.scene_dir(split, scene_id)
        for sub, ext in (("rgb", ".png"), ("rgb", ".jpg"), ("gray", ".png"), ("gray", ".tif")):
            p = d / sub / f"{im_id:06d}{ext}"
            if p.is_file():
                return p
        return d / "rgb" / f"{im_id:06d}.png"

    def depth_path(self, split: str, scene_id: int, im_id: int) -> Path:
        d = self.scene_dir(split, scene_id) / "depth"
        p = d / f"{im_id:06d}.png"
        return p if p.is_file() or not (d / f"{im_id:06d}.tif").is_file() else d / f"{im_id:06d}.tif"

    def mask_path(self, split: str, scene_id: int, im_id: int, gt_id: int, visib: bool = True) -> Path:
        sub = "mask_visib" if visib else "mask"
        return self.scene_dir(split, scene_id) / sub / f"{im_id:06d}_{gt_id:06d}.png"

    def has_depth(self, split: str) -> bool:
        """True when every scene of the split has a ``depth/`` folder."""
        try:
            scenes = self.scene_ids(split)
        except MissingFileError:
            return False
        return bool(scenes) and all((self.scene_dir(split, s) / "depth").is_dir() for s in scenes)

    def rgb(self, split: str, scene_id: int, im_id: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image."""
        return load_rgb(self._need(self.rgb_path(split, scene_id, im_id), _SPLIT_PART.get(split, split)))

    def depth(self, split: str, scene_id: int, im_id: int) -> np.ndarray:
        """(H, W) float64 depth in mm (stored value times the image's ``depth_scale``)."""
        scale = self.scene_camera(split, scene_id)[im_id].depth_scale
        return load_depth(
            self._need(self.depth_path(split, scene_id, im_id), _SPLIT_PART.get(split, split)), scale
        )

    def mask(self, split: str, scene_id: int, im_id: int, gt_id: int, visib: bool = True) -> np.ndarray:
        """(H, W) bool mask of GT instance ``gt_id`` (visible part when ``visib``)."""
        p = self.mask_path(split, scene_id, im_id, gt_id, visib)
        return load_mask(self._need(p, _SPLIT_PART.get(split, split)))

    # --- summaries ---------------------------------------------------------------------------------

    def count(self, split: str) -> dict[str, int]:
        """Scenes, images and GT instances of a split."""
        scenes = self.scene_ids(split)
        n_im = n_gt = 0
        for s in scenes:
            gt_path = self.scene_dir(split, s) / "scene_gt.json"
            if gt_path.is_file():
                gts = self.scene_gt(split, s)
                n_im += len(gts)
                n_gt += sum(len(v) for v in gts.values())
            else:
                n_im += len(self.scene_camera(split, s))
        return {"scenes": len(scenes), "images": n_im, "instances": n_gt}

    def check_obj_id(self, obj_id: int) -> None:
        if obj_id not in self.obj_ids:
            raise BopkdError(f"object {obj_id} is not in dataset {self.name} (objects: {list(self.obj_ids)})")
