"""Zoom-in crops with the dense (ZebraPose-style) targets: per output pixel, visibility and surface-code bits.

:class:`DenseTorchDataset` is :class:`~bopkd.data.torch_dataset.BopTorchDataset` in crop mode (every item,
augmentation and meta the same) with two more entries per item::

    dense_mask  (S, S) bool     the crop's instance is the nearest surface at the output pixel
    dense_bits  (bits, S, S) uint8  the bits of the surface code there (bit 0 the coarsest), 0 outside the mask

on the network's output grid of ``S = out_size`` px (ZebraPose, Su et al. CVPR 2022, Sec. 3: a 256 px crop,
targets at 128 px; suyz526/ZebraPose ``BoundingBox_CropSize_GT``). :func:`bopkd.data.collate.collate_batch`
stacks them as float32 ``batch["dense_mask"]`` (B, S, S) and ``batch["dense_bits"]`` (B, bits, S, S).

The targets are rendered through the item's final affine ``A`` (3, 3), original px -> input px
(``meta["affine"]``: the crop, its random scale, shift and rotation, and the whole-image warp of
``augment.crop_frame = "image"``), so they follow the augmented image exactly: with ``A K0 = K' Rz``
(:func:`bopkd.data.augment.warp_camera_pose`, ``K'`` upper triangular, ``Rz`` a rotation about the optical
axis) every GT instance of the image is rendered with pose ``(Rz R, Rz t)`` and the output camera
``K_out = diag(s, s, 1) K'``, ``s = out_size / crop_size`` (the output pixel ``i`` spans input pixels
``[i / s, (i + 1) / s)``). For an unrotated crop ``(x0, y0, side)`` this is
:func:`bopkd.data.dense_targets.output_camera`. All GT instances are rendered, so that the others occlude the
target (:func:`bopkd.data.dense_targets.code_targets`); occluders outside ``obj_ids`` are rendered from their
plain models.

The surface codes (:func:`bopkd.data.surface_codes.load_or_encode`, cached beside the dataset) are read once
per dataset; the code renderer (open3d ray-casting scenes) is built once per process, on the first item a
DataLoader worker loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from bopkd.data import augment as aug
from bopkd.data.dense_targets import code_renderer, code_targets
from bopkd.data.surface_codes import load_or_encode
from bopkd.data.torch_dataset import BopTorchDataset, DataConfig
from bopkd.errors import BopkdError
from bopkd.geometry.render import Renderer
from bopkd.geometry.surface_code import SurfaceCode


def crop_output_camera(affine: np.ndarray, K0: np.ndarray, crop_size: int, out_size: int) -> tuple:
    """``(K_out (3, 3), Rz (3, 3))``: the output grid's camera and the rotation of the poses for a crop affine.

    Args:
        affine: (3, 3) or (2, 3) map original px -> input px (the crop's, augmentation included).
        K0: (3, 3) intrinsics of the original image, px.
        crop_size: side of the input crop, px.
        out_size: side of the output grid, px.
    Returns:
        ``K_out = diag(s, s, 1) K'`` with ``A K0 = K' Rz`` (:func:`bopkd.data.augment.warp_camera_pose`) and
        ``s = out_size / crop_size``; a model point X in the original camera frame projects to the output
        grid at ``K_out Rz X`` (up to the homogeneous scale).
    """
    A = np.asarray(affine, dtype=np.float64)
    if A.shape == (2, 3):
        A = np.vstack([A, [0.0, 0.0, 1.0]])
    K_in, Rz, _, _ = aug.warp_camera_pose(A, K0)
    s = float(out_size) / float(crop_size)
    return np.diag([s, s, 1.0]) @ K_in, Rz


class DenseTorchDataset(BopTorchDataset):
    """Crop-mode :class:`BopTorchDataset` whose items also hold the dense targets (see the module docstring).

    Args:
        cfg: data settings; ``cfg.mode`` must be ``crop`` and ``cfg.crop_size`` a multiple of ``out_size``.
        obj_ids: the model's objects.
        out_size: side of the network's output grid, px (``dense.out_size``; the crop is 2x that).
        bits: code bits per pixel (``dense.bits``).
        min_vertices: subdivision of the surface encoding (``dense.min_vertices``).
        codes: ``{obj_id: SurfaceCode}`` to use instead of reading/encoding them.
        code_cache_dir: where the encoded models are cached (default ``MODELS_DIR/../surface_codes``).
        **kwargs: the other arguments of :class:`BopTorchDataset` (split, train, augment, seed, ...).
    """

    def __init__(
        self,
        cfg: DataConfig,
        obj_ids: Sequence[int],
        *,
        out_size: int = 128,
        bits: int = 16,
        min_vertices: int = 2**16,
        codes: Mapping[int, SurfaceCode] | None = None,
        code_cache_dir: str | Path | None = None,
        **kwargs,
    ):
        if cfg.mode != "crop":
            raise BopkdError(
                f"data.mode = {cfg.mode!r}: dense targets are made for zoom-in crops only; set data.mode=crop"
            )
        if out_size < 1 or cfg.crop_size % out_size:
            raise BopkdError(
                f"data.crop_size = {cfg.crop_size} is not a multiple of the output size {out_size} px: set "
                f"data.crop_size={2 * out_size} (the dense network outputs at stride 2)"
            )
        super().__init__(cfg, obj_ids, **kwargs)
        self.out_size = int(out_size)
        if codes is None:
            codes = load_or_encode(
                self.bop.models_dir(), self.obj_ids, code_cache_dir, bits=bits, min_vertices=min_vertices
            )
        self.codes = {int(o): c for o, c in codes.items()}
        wrong = {o: c.bits for o, c in self.codes.items() if c.bits != bits}
        missing = [o for o in self.obj_ids if o not in self.codes]
        if wrong or missing:
            raise BopkdError(
                f"surface codes: objects {missing} have none and {wrong} (obj_id: bits) have not {bits} bits; "
                "encode every object of the model with dense.bits"
            )
        self.bits = int(bits)
        self._code_renderer: Renderer | None = None
        self._code_renderer_pid = -1

    def code_renderer(self) -> Renderer:
        """This process's renderer of the encoded meshes on the output grid (built on first use, and again in
        a forked worker, whose copy of the open3d scenes is not its own)."""
        if self._code_renderer is None or self._code_renderer_pid != os.getpid():
            self._code_renderer = code_renderer(self.codes, (self.out_size, self.out_size))
            self._code_renderer_pid = os.getpid()
        return self._code_renderer

    def dense_targets(self, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(mask (S, S) bool, bits (bits, S, S) uint8)`` of the crop an item's ``meta`` describes (all zero
        for a detection crop, which has no GT instance)."""
        S = self.out_size
        gt_id = int(meta.get("gt_id", -1))
        if gt_id < 0:
            return np.zeros((S, S), bool), np.zeros((self.bits, S, S), np.uint8)
        K_out, Rz = crop_output_camera(meta["affine"], meta["K_orig"], self.cfg.crop_size, S)
        gts = self.bop.scene_gt(self.split, int(meta["scene_id"]))[int(meta["im_id"])]
        renderer = self.code_renderer()
        for g in gts:
            if not renderer.has_object(g.obj_id):  # an occluder the network does not serve
                renderer.add_object(g.obj_id, self.bop.model(g.obj_id))
        instances = [
            (g.obj_id, Rz @ np.asarray(g.R, np.float64), Rz @ np.asarray(g.t, np.float64).reshape(3))
            for g in gts
        ]
        return code_targets(renderer, instances, gt_id, K_out, (S, S), self.codes)

    def __getitem__(self, key) -> dict:
        item = super().__getitem__(key)
        mask, bits = self.dense_targets(item["meta"])
        item["dense_mask"] = torch.from_numpy(mask)
        item["dense_bits"] = torch.from_numpy(np.ascontiguousarray(bits, dtype=np.uint8))
        return item


__all__ = ["DenseTorchDataset", "crop_output_camera"]
