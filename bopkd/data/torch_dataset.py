"""A torch ``Dataset`` over one split of a BOP dataset, in whole-image or zoom-in crop mode.

Each item is a dict (batched by :func:`bopkd.data.collate.collate_batch` into the batch contract of
``bopkd/models/README_CONTRACT.md``)::

    image    (3, H, W) float32, ImageNet-normalised network input
    K        (3, 3) float32 intrinsics of the input image (px; see bopkd.data.augment for the convention)
    objects  dict of tensors for the n annotated instances kept in the input:
             cls (n,) long (index of obj_id in obj_ids), obj_id (n,) long, gt_id (n,) long,
             R (n, 3, 3), t (n, 3) mm, corners_3d (n, 8, 3) mm (ObjectInfo.bbox_corners()),
             corners_2d (n, 8, 2) px in the input, mask_visib (n, H, W) bool, diameter (n,) mm
    meta     scene_id, im_id, split, affine (3, 3) original px -> input px, K_orig (3, 3),
             orig_size (W, H); in crop mode also gt_id, obj_id, box (x, y, w, h) original px,
             box_source ("gt" | "detections"), score, det_time (s)

Modes (``DataConfig.mode``):

- ``full``: the whole image, resized to ``input_size`` when given; one item per image; all instances
  with ``visib_fract > min_visib_fract``.
- ``crop``: the zoom-in crop of WDRNet+ (Di et al. 2021 / Guo et al., CVPR 2023, which use the dynamic
  zoom-in of CDPN, Li et al. ICCV 2019): a ``crop_size``-square crop of the square box around an
  object's box enlarged ``crop_pad`` times (``U(crop_pad_range)`` and a centre shift at train time);
  one item per instance. Boxes are the GT visible boxes (``bbox_visib``) or, at test time, the boxes
  of a BOP default-detections JSON (``scene_id, image_id, category_id, bbox, score, time``).

On a test split (the dataset's ``test_split``) only the images and objects of the BOP'19 targets are
used, and the GT may be absent (hidden test sets). At train time every item is augmented by
:mod:`bopkd.data.augment` with a generator seeded by ``(seed, epoch, index)``: items are reproducible
whichever worker loads them, which makes resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bopkd.data import augment as aug
from bopkd.data.dataset import BopDataset
from bopkd.data.detections import Detections, load_detections
from bopkd.errors import BopkdError, MissingFileError


@dataclass
class DataConfig:
    """Which data a run reads and how it is shaped into network inputs.

    Attributes:
        dataset: dataset name (registered or a folder under ``root``).
        root: folder that holds the BOP datasets.
        split: training split (``train_pbr``, ``train``, or ``test`` to overfit on the targets).
        mode: ``full`` (whole image) or ``crop`` (zoom-in crop around each object's box).
        input_size: full mode: network input ``(W, H)`` px; None keeps the image size.
        crop_size: crop mode: side of the square network input, px.
        crop_pad: crop mode, test time: the square box side is ``max(w, h) * crop_pad``.
        crop_pad_range: crop mode, train time: the pad is drawn from this range.
        crop_shift: crop mode, train time: the box centre moves by up to this fraction of (w, h).
        min_visib_fract: only instances with ``visib_fract`` (``scene_gt_info.json``) above this are used.
        min_visib_px: train time: instances with fewer visible pixels left after augmentation are dropped.
        scene_ids: restrict to these scenes (None: all scenes of the split).
        max_images: use only the first N images (sorted by scene, image), for quick runs.
        masks: where visible masks come from: ``file`` (mask_visib/), ``render`` (render the GT
            instances with the models), ``auto`` (files when the split has them, else render).
        skip_missing_images: leave out images whose RGB file is absent instead of failing.
        num_workers: DataLoader worker processes (0 loads in the main process).
        pin_memory: pin batches in page-locked memory (used only when training on CUDA).
    """

    dataset: str = "lmo"
    root: str = "bop_data"
    split: str = "train_pbr"
    mode: Literal["full", "crop"] = "full"
    input_size: tuple[int, int] | None = None
    crop_size: int = 256
    crop_pad: float = 1.35
    crop_pad_range: tuple[float, float] = (1.2, 1.5)
    crop_shift: float = 0.1
    min_visib_fract: float = 0.1
    min_visib_px: int = 16
    scene_ids: list[int] | None = None
    max_images: int | None = None
    masks: Literal["auto", "file", "render"] = "auto"
    skip_missing_images: bool = False
    num_workers: int = 2
    pin_memory: bool = True

    def validate(self) -> None:
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 8):
            raise BopkdError(f"data.input_size = {self.input_size}: give [width, height] in px, each >= 8")
        if self.crop_size < 8:
            raise BopkdError(f"data.crop_size = {self.crop_size}: use at least 8 px (the paper uses 256)")
        lo, hi = self.crop_pad_range
        if not (0 < lo <= hi) or self.crop_pad <= 0:
            raise BopkdError(
                f"data.crop_pad_range = {self.crop_pad_range}: give [low, high] with 0 < low <= high"
            )
        if not 0.0 <= self.min_visib_fract <= 1.0:
            raise BopkdError(f"data.min_visib_fract = {self.min_visib_fract}: use a value in [0, 1]")
        if not 0.0 <= self.crop_shift <= 1.0:
            raise BopkdError(f"data.crop_shift = {self.crop_shift}: use a value in [0, 1]")
        if self.num_workers < 0:
            raise BopkdError(f"data.num_workers = {self.num_workers}: use 0 or more")
        if self.max_images is not None and self.max_images < 1:
            raise BopkdError(
                f"data.max_images = {self.max_images}: use 1 or more (or leave it empty for all)"
            )


@dataclass(frozen=True)
class _Image:
    scene_id: int
    im_id: int
    #: (gt_id, obj_id) of the instances kept for this image.
    instances: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Crop:
    image: int  # index into the image list
    gt_id: int  # -1 for a detection
    obj_id: int
    box: tuple[float, float, float, float]
    box_source: str
    score: float
    det_time: float


class BopTorchDataset(torch.utils.data.Dataset):
    """Network inputs and per-object ground truth from one split of a BOP dataset.

    Args:
        cfg: data settings.
        obj_ids: the model's objects; ``cls`` is the position of an ``obj_id`` in this list. Instances of
            other objects are ignored.
        split: split to read (defaults to ``cfg.split``).
        train: apply augmentation and drop instances that augmentation hides.
        augment: augmentation settings (train only; None: no augmentation).
        seed: base seed of the per-item generators.
        targets_only: restrict to the BOP'19 targets (default: when ``split`` is the test split).
        box_source: crop mode: ``gt`` (oracle boxes from the GT) or ``detections``.
        detections: crop mode with ``box_source="detections"``: path of the detections JSON, or its
            content as read by :func:`bopkd.data.detections.load_detections`.
        det_min_score: detections below this score are ignored.
        need_masks: load visible masks (inference does not need them).
        bop: an open :class:`BopDataset` to reuse.
    """

    def __init__(
        self,
        cfg: DataConfig,
        obj_ids: Sequence[int],
        *,
        split: str | None = None,
        train: bool = True,
        augment: aug.AugmentConfig | None = None,
        seed: int = 0,
        targets_only: bool | None = None,
        box_source: Literal["gt", "detections"] = "gt",
        detections: str | Path | Detections | None = None,
        det_min_score: float = 0.0,
        need_masks: bool = True,
        bop: BopDataset | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.bop = bop if bop is not None else BopDataset(cfg.dataset, cfg.root)
        self.split = split or cfg.split
        self.obj_ids = [int(o) for o in obj_ids]
        self.cls_of = {o: i for i, o in enumerate(self.obj_ids)}
        self.train = train
        self.augment = augment if (train and augment is not None and augment.enabled) else None
        if self.augment is not None:
            self.augment.validate()
        self.seed = int(seed)
        self.targets_only = (
            (self.split == self.bop.test_split) if targets_only is None else bool(targets_only)
        )
        if box_source not in ("gt", "detections"):
            raise BopkdError(f"box source {box_source!r}: use 'gt' or 'detections'")
        if box_source == "detections" and cfg.mode != "crop":
            raise BopkdError(
                "detections are used in crop mode only: add --set data.mode=crop (or drop --detections)"
            )
        if box_source == "detections" and detections is None:
            raise BopkdError("box source 'detections' needs a detections JSON (--detections FILE)")
        self.box_source = box_source
        self.need_masks = need_masks
        infos = self.bop.models_info()
        missing = [o for o in self.obj_ids if o not in infos]
        if missing:
            raise BopkdError(
                f"{self.bop.models_dir() / 'models_info.json'}: objects {missing} of the model are not in the dataset "
                f"{self.bop.name}; train with the dataset's objects"
            )
        self.corners = {o: infos[o].bbox_corners() for o in self.obj_ids}
        self.diameters = {o: float(infos[o].diameter) for o in self.obj_ids}
        self._renderer = None
        self._bg_files = aug.list_backgrounds(self.augment.bg_dir) if self.augment is not None else []
        self.images: list[_Image] = []
        self.crops: list[_Crop] = []
        self._build_index(detections, det_min_score)
        if len(self) == 0:
            what = "target instances" if self.targets_only else "instances"
            raise BopkdError(
                f"{self.bop.split_dir(self.split)}: no {what} of objects {self.obj_ids} with visib_fract > "
                f"{cfg.min_visib_fract} in split {self.split}; check --dataset/--root, data.split, data.scene_ids "
                "and data.min_visib_fract"
            )

    # --- index -------------------------------------------------------------------------------------------

    def _build_index(self, detections: str | Path | Detections | None, det_min_score: float) -> None:
        """Fill ``self.images`` (and, in crop mode, ``self.crops``) from the split's scenes."""
        bop, cfg = self.bop, self.cfg
        targets: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        if self.targets_only:
            for t in bop.targets:
                targets[(t.scene_id, t.im_id)][t.obj_id] = t.inst_count
        scenes = bop.scene_ids(self.split)
        if cfg.scene_ids is not None:
            scenes = [s for s in scenes if s in set(cfg.scene_ids)]
        dets = None
        if self.box_source == "detections":
            dets = load_detections(detections) if isinstance(detections, (str, Path)) else detections
        n_missing_rgb = 0
        for scene_id in scenes:
            n_missing, full = self._index_scene(scene_id, targets, dets, det_min_score)
            n_missing_rgb += n_missing
            if full:
                return
        if n_missing_rgb:
            warnings.warn(
                f"{self.bop.split_dir(self.split)}: skipped {n_missing_rgb} images without an RGB file",
                stacklevel=2,
            )

    def _index_scene(
        self,
        scene_id: int,
        targets: dict[tuple[int, int], dict[int, int]],
        dets: Detections | None,
        det_min_score: float,
    ) -> tuple[int, bool]:
        """Index the images of one scene; returns (images skipped for a missing RGB file, whether
        ``data.max_images`` was reached)."""
        bop, cfg = self.bop, self.cfg
        gt_path = bop.scene_dir(self.split, scene_id) / "scene_gt.json"
        has_gt = gt_path.is_file()
        if not has_gt and (self.train or (cfg.mode == "crop" and self.box_source == "gt")):
            raise MissingFileError(gt_path, "training and oracle GT boxes need the split's ground truth")
        gts = bop.scene_gt(self.split, scene_id) if has_gt else {}
        infos = bop.scene_gt_info(self.split, scene_id) if has_gt else {}
        n_missing_rgb = 0
        for im_id in bop.im_ids(self.split, scene_id):
            if cfg.max_images is not None and len(self.images) >= cfg.max_images:
                return n_missing_rgb, True
            wanted = targets.get((scene_id, im_id)) if self.targets_only else None
            if self.targets_only and not wanted:
                continue
            if cfg.skip_missing_images and not bop.rgb_path(self.split, scene_id, im_id).is_file():
                n_missing_rgb += 1
                continue
            gt_list = gts.get(im_id, [])
            info_list = infos.get(im_id, [])
            if has_gt and len(info_list) != len(gt_list):
                raise BopkdError(
                    f"{bop.scene_dir(self.split, scene_id)}: scene_gt_info.json and scene_gt.json disagree on "
                    f"image {im_id}; regenerate scene_gt_info.json"
                )
            kept = self._kept_instances(gt_list, info_list, wanted)
            if self.train and not kept:
                continue
            image_index = len(self.images)
            self.images.append(_Image(scene_id, im_id, tuple(kept)))
            if cfg.mode != "crop":
                continue
            if self.box_source == "gt":
                self._add_gt_crops(image_index, kept, info_list)
            else:
                self._add_detection_crops(image_index, dets.get((scene_id, im_id), []), wanted, det_min_score)
        return n_missing_rgb, False

    def _kept_instances(self, gt_list: list, info_list: list, wanted: dict[int, int] | None) -> list:
        """(gt_id, obj_id) of the image's instances of the dataset's objects (and targets, when
        ``wanted``) with ``visib_fract > data.min_visib_fract``."""
        kept = []
        for gt_id, (gt, info) in enumerate(zip(gt_list, info_list, strict=True)):
            if gt.obj_id not in self.cls_of or (wanted is not None and gt.obj_id not in wanted):
                continue
            if not info.visib_fract > self.cfg.min_visib_fract:
                continue
            kept.append((gt_id, gt.obj_id))
        return kept

    def _add_gt_crops(self, image_index: int, kept: list, info_list: list) -> None:
        """One crop per kept instance around its GT box: ``bbox_visib``, else ``bbox_obj`` (x, y, w, h px)."""
        for gt_id, obj_id in kept:
            info = info_list[gt_id]
            box = info.bbox_visib if info.bbox_visib[2] > 0 and info.bbox_visib[3] > 0 else info.bbox_obj
            if box[2] <= 0 or box[3] <= 0:
                continue
            self.crops.append(_Crop(image_index, gt_id, obj_id, tuple(float(v) for v in box), "gt", 1.0, 0.0))

    def _add_detection_crops(
        self, image_index: int, image_dets: list[dict], wanted: dict[int, int] | None, det_min_score: float
    ) -> None:
        """One crop per detection of the dataset's objects scoring at least ``det_min_score``."""
        per_obj: dict[int, int] = defaultdict(int)
        for d in image_dets:
            o = d["obj_id"]
            if o not in self.cls_of or (wanted is not None and o not in wanted) or d["score"] < det_min_score:
                continue
            # Keep the best inst_count detections of each target object (BOP'19: the
            # evaluation uses the top inst_count estimates per target anyway).
            if wanted is not None and per_obj[o] >= wanted[o]:
                continue
            per_obj[o] += 1
            if d["box"][2] <= 0 or d["box"][3] <= 0:
                continue
            self.crops.append(_Crop(image_index, -1, o, d["box"], "detections", d["score"], d["time"]))

    def __len__(self) -> int:
        return len(self.crops) if self.cfg.mode == "crop" else len(self.images)

    @property
    def input_size(self) -> tuple[int, int]:
        """Network input ``(W, H)`` px."""
        if self.cfg.mode == "crop":
            return (self.cfg.crop_size, self.cfg.crop_size)
        if self.cfg.input_size is not None:
            return (int(self.cfg.input_size[0]), int(self.cfg.input_size[1]))
        return tuple(int(v) for v in self.bop.spec.im_size)

    def image_keys(self) -> list[tuple[int, int]]:
        """(scene_id, im_id) of every image the dataset reads, in order."""
        return [(im.scene_id, im.im_id) for im in self.images]

    # --- loading -------------------------------------------------------------------------------------------

    def _camera(self, scene_id: int, im_id: int) -> np.ndarray:
        cams = self.bop.scene_camera(self.split, scene_id)
        cam = cams.get(im_id)
        return np.asarray(cam.K if cam is not None else self.bop.camera.K, dtype=np.float64)

    def _mask_mode(self, scene_id: int) -> str:
        if self.cfg.masks != "auto":
            return self.cfg.masks
        return "file" if (self.bop.scene_dir(self.split, scene_id) / "mask_visib").is_dir() else "render"

    def _masks(self, scene_id: int, im_id: int, gt_ids: Sequence[int], size: tuple[int, int]) -> np.ndarray:
        """(n, H, W) bool visible masks of GT instances ``gt_ids`` in the original image."""
        W, H = size
        if not gt_ids:
            return np.zeros((0, H, W), dtype=bool)
        if self._mask_mode(scene_id) == "file":
            try:
                return np.stack([self.bop.mask(self.split, scene_id, im_id, g, visib=True) for g in gt_ids])
            except MissingFileError as e:
                raise MissingFileError(
                    e.path,
                    "this split has no visible masks; set data.masks=render to render them from the models",
                ) from None
        return self._render_masks(scene_id, im_id, gt_ids, size)

    def _render_masks(
        self, scene_id: int, im_id: int, gt_ids: Sequence[int], size: tuple[int, int]
    ) -> np.ndarray:
        """Visible masks from rendering all GT instances of the image together (mutual occlusion only;
        occluders without GT are not known)."""
        from bopkd.geometry.render import Renderer

        W, H = size
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (W, H):
            self._renderer = Renderer(W, H)
        gts = self.bop.scene_gt(self.split, scene_id)[im_id]
        for g in gts:
            if not self._renderer.has_object(g.obj_id):
                self._renderer.add_object(g.obj_id, self.bop.model(g.obj_id))
        out = self._renderer.render(self._camera(scene_id, im_id), [(g.obj_id, g.R, g.t) for g in gts])
        return np.stack([out.inst == g for g in gt_ids])

    def _rng(self, key) -> np.random.Generator | None:
        if not self.train:
            return None
        if isinstance(key, (tuple, list)):
            idx, epoch = int(key[0]), int(key[1])
            return np.random.default_rng([self.seed, epoch, idx])
        # A plain index (a DataLoader with an ordinary sampler): draw from the worker's seeded state.
        draw = int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002 - the worker's state, seeded by seed_worker
        return np.random.default_rng([self.seed, draw, int(key)])

    def _crop_affine(
        self,
        box: tuple[float, float, float, float],
        rng: np.random.Generator | None,
        augment: aug.AugmentConfig | None,
        image_size: tuple[int, int],
        K0: np.ndarray,
    ) -> np.ndarray:
        """The affine original px -> crop px of one crop (see ``AugmentConfig.crop_frame``)."""
        cfg = self.cfg
        pre = np.eye(3)
        if augment is not None and augment.crop_frame == "image":
            # Shift, scale and rotate the whole image, then crop around the box of the moved object: the
            # axis-aligned box around the moved box's corners.
            pre = aug.sample_full_affine(rng, augment, image_size, image_size, K0)
            box = aug.affine_box(pre, box)
            augment = None  # no second rotation of the crop
        A, _, _ = aug.sample_crop_affine(
            rng,
            box,
            cfg.crop_size,
            cfg.crop_pad,
            cfg.crop_pad_range,
            cfg.crop_shift,
            augment,
            max_side=max(image_size),
        )
        return A @ pre

    def __getitem__(self, key) -> dict:
        idx = int(key[0]) if isinstance(key, (tuple, list)) else int(key)
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        rng = self._rng(key)
        cfg = self.cfg
        crop = self.crops[idx] if cfg.mode == "crop" else None
        im = self.images[crop.image] if crop is not None else self.images[idx]
        rgb = self.bop.rgb(self.split, im.scene_id, im.im_id)
        H0, W0 = rgb.shape[:2]
        K0 = self._camera(im.scene_id, im.im_id)
        if crop is not None:
            inst = [(crop.gt_id, crop.obj_id)] if crop.gt_id >= 0 else []
        else:
            inst = list(im.instances)
        gt_ids = [g for g, _ in inst]
        gts = self.bop.scene_gt(self.split, im.scene_id)[im.im_id] if inst else []
        R = np.array([gts[g].R for g in gt_ids], dtype=np.float64).reshape(-1, 3, 3)
        t = np.array([gts[g].t for g in gt_ids], dtype=np.float64).reshape(-1, 3)

        augment = self.augment if rng is not None else None
        if augment is not None and augment.bg_replace > 0 and rng.random() < augment.bg_replace:
            rgb = self._replace_background(rgb, im, rng)
        size = self.input_size
        A = self._input_affine(crop, rng, augment, (W0, H0), K0)
        K, _, R_new, t_new = aug.warp_camera_pose(A, K0, R, t)

        img = aug.warp_image(rgb, A, size)
        if augment is not None:
            img = aug.color_jitter(img, rng, augment)
            img = aug.blur_and_noise(img, rng, augment)

        obj_ids = [o for _, o in inst]
        corners_3d = np.array([self.corners[o] for o in obj_ids], dtype=np.float64).reshape(-1, 8, 3)
        corners_2d = np.array(
            [aug.apply_affine(A, aug.project(K0, R[i], t[i], corners_3d[i])) for i in range(len(inst))],
            dtype=np.float64,
        ).reshape(-1, 8, 2)
        if self.need_masks:
            masks = aug.warp_masks(self._masks(im.scene_id, im.im_id, gt_ids, (W0, H0)), A, size)
        else:
            masks = np.zeros((len(inst), 0, 0), dtype=bool)
        keep = np.ones(len(inst), dtype=bool)
        if self.train and crop is None and self.need_masks:
            keep = masks.reshape(len(inst), -1).sum(axis=1) >= cfg.min_visib_px

        objects = {
            "cls": torch.tensor([self.cls_of[o] for o in obj_ids], dtype=torch.long)[keep],
            "obj_id": torch.tensor(obj_ids, dtype=torch.long)[keep],
            "gt_id": torch.tensor(gt_ids, dtype=torch.long)[keep],
            "R": torch.from_numpy(R_new.astype(np.float32))[keep],
            "t": torch.from_numpy(t_new.astype(np.float32))[keep],
            "corners_3d": torch.from_numpy(corners_3d.astype(np.float32))[keep],
            "corners_2d": torch.from_numpy(corners_2d.astype(np.float32))[keep],
            "mask_visib": torch.from_numpy(masks)[keep],
            "diameter": torch.tensor([self.diameters[o] for o in obj_ids], dtype=torch.float32)[keep],
        }
        return {
            "image": torch.from_numpy(aug.normalize_image(img)),
            "K": torch.from_numpy(K.astype(np.float32)),
            "objects": objects,
            "meta": self._meta(im, crop, A, K0, (W0, H0)),
        }

    def _replace_background(self, rgb: np.ndarray, im: _Image, rng: np.random.Generator) -> np.ndarray:
        """Background replacement on the original (H0, W0, 3) image; the foreground is the union of the
        masks of every instance in it."""
        H0, W0 = rgb.shape[:2]
        all_ids = list(range(len(self.bop.scene_gt(self.split, im.scene_id).get(im.im_id, []))))
        fg = (
            self._masks(im.scene_id, im.im_id, all_ids, (W0, H0)).any(axis=0)
            if all_ids
            else np.zeros((H0, W0), bool)
        )
        return aug.replace_background(rgb, fg, rng, self._bg_files)

    def _input_affine(self, crop, rng, augment, orig_size: tuple[int, int], K0: np.ndarray) -> np.ndarray:
        """The (2, 3) affine original px -> input px: a zoom-in crop, an augmented or a plain resize."""
        if crop is not None:
            return self._crop_affine(crop.box, rng, augment, orig_size, K0)
        if augment is not None:
            return aug.sample_full_affine(rng, augment, orig_size, self.input_size, K0)
        return aug.resize_affine(orig_size, self.input_size)

    def _meta(self, im: _Image, crop, A: np.ndarray, K0: np.ndarray, orig_size: tuple[int, int]) -> dict:
        """Where a sample comes from: image ids, the affine, the original camera and size, the crop's box."""
        meta = {
            "scene_id": im.scene_id,
            "im_id": im.im_id,
            "split": self.split,
            "affine": A,
            "K_orig": K0,
            "orig_size": orig_size,
        }
        if crop is not None:
            meta.update(
                gt_id=crop.gt_id,
                obj_id=crop.obj_id,
                box=crop.box,
                box_source=crop.box_source,
                score=crop.score,
                det_time=crop.det_time,
            )
        return meta
