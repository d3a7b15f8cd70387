"""Crop-mode augmentation in the image frame (``AugmentConfig.crop_frame = "image"``): the whole image is
shifted, scaled and rotated, then the dynamic zoom-in crop is taken around the moved box, as in Guo et al.'s
code (``libs/dataset.py``: the transforms, then ``dzi_train``).

Checked on the minibop oracle from each item's affine (original px -> crop px) and box alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bopkd.data import augment as aug
from bopkd.data.torch_dataset import BopTorchDataset, DataConfig
from bopkd.errors import BopkdError
from bopkd.train.presets import PAPER_AUGMENT, PAPER_CROPS

LMO_IDS = [1, 5, 6, 8, 9, 10, 11, 12]
SIZE = 64


def _dataset(root, augment: aug.AugmentConfig, **data) -> BopTorchDataset:
    cfg = DataConfig(
        **{"dataset": "lmo", "root": str(root), "split": "test", "num_workers": 0, "crop_size": SIZE, **data}
    )
    cfg.mode = "crop"
    return BopTorchDataset(cfg, LMO_IDS, train=True, augment=augment, seed=4)


def _moved_box(item) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) in crop px of the axis-aligned box around the item's box corners under its affine."""
    x, y, w, h = item["meta"]["box"]
    corners = aug.apply_affine(item["meta"]["affine"], [[x, y], [x + w, y], [x, y + h], [x + w, y + h]])
    lo, hi = corners.min(0), corners.max(0)
    return (lo + hi) / 2, hi - lo


def _angle_deg(A: np.ndarray) -> float:
    return math.degrees(math.atan2(A[1, 0], A[0, 0]))


def test_image_frame_crops_the_moved_box_without_a_second_rotation(oracle_root):
    """Without DZI jitter, the box of the moved object fills the crop's centre with side / 1.5 exactly; the
    rotation of the whole image shows in the affine. (In the crop frame the crop itself is rotated, so the
    box of the rotated corners is larger than side / 1.5.)"""
    image = aug.AugmentConfig(crop_frame="image", shift=0.05, scale=0.05, rotation=10.0, hue=0.0)
    ds = _dataset(oracle_root, image, crop_pad=1.5, crop_pad_range=(1.5, 1.5), crop_shift=0.0)
    angles = []
    for k in range(6):
        item = ds[(k, 1)]
        centre, wh = _moved_box(item)
        np.testing.assert_allclose(centre, [SIZE / 2, SIZE / 2], atol=1e-6)
        assert wh.max() == pytest.approx(SIZE / 1.5, rel=1e-9)
        angles.append(_angle_deg(item["meta"]["affine"]))
        # The pose, intrinsics and 2D corners of the item agree.
        o = item["objects"]
        got = aug.project(
            item["K"].double().numpy(),
            o["R"][0].double().numpy(),
            o["t"][0].double().numpy(),
            o["corners_3d"][0].double().numpy(),
        )
        np.testing.assert_allclose(got, o["corners_2d"][0].numpy(), atol=2e-3)
    assert max(abs(a) for a in angles) <= 10.0 + 1e-9 and len({round(a, 6) for a in angles}) > 1

    crop = aug.AugmentConfig(crop_frame="crop", rotation=10.0, hue=0.0)
    ds = _dataset(oracle_root, crop, crop_pad=1.5, crop_pad_range=(1.5, 1.5), crop_shift=0.0)
    sides = [_moved_box(ds[(k, 1)])[1].max() for k in range(6)]
    assert max(sides) > SIZE / 1.5 * 1.01


def test_paper_crops_follow_dynamic_zoom_in(oracle_root):
    """The paper preset's crops: side = max(w', h') of the moved box x U(1.125, 1.875), centre moved by up to
    0.25 (w', h') (``aug_bbox_DZI`` of the reference), after the image-frame augmentation."""
    ds = _dataset(
        oracle_root,
        aug.AugmentConfig(**PAPER_AUGMENT),
        **{k: v for k, v in PAPER_CROPS.items() if k not in ("mode", "crop_size")},
    )
    pads = []
    for k in range(12):
        item = ds[(k % len(ds), k)]
        centre, wh = _moved_box(item)
        pad = SIZE / wh.max()
        pads.append(pad)
        # The crop's centre (SIZE / 2) is the box centre moved by at most 0.25 of the box.
        assert np.all(np.abs(centre - SIZE / 2) <= 0.25 * wh + 1e-6), (centre, wh)
    # (The side cap at the image size never binds for these objects.)
    assert all(1.125 - 1e-9 <= p <= 1.875 + 1e-9 for p in pads)
    assert max(pads) - min(pads) > 0.1


def test_bad_crop_frame_is_one_line_error():
    with pytest.raises(BopkdError, match="augment.crop_frame"):
        aug.AugmentConfig(crop_frame="tile").validate()
