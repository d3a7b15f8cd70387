"""The torch Dataset over BOP splits (bopkd.data.torch_dataset) and its collate (bopkd.data.collate).

Checked against independent references: the GT poses and masks read straight from the dataset files,
the convex hull of the projected 3D box (which contains every visible pixel of the object), and the
targets file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.path import Path as MplPath

from bopkd.data import augment as aug
from bopkd.data.collate import batch_to_device, collate_batch
from bopkd.data.dataset import BopDataset
from bopkd.data.images import load_mask
from bopkd.data.torch_dataset import BopTorchDataset, DataConfig, load_detections
from bopkd.errors import BopkdError, MissingFileError

LMO_IDS = [1, 5, 6, 8, 9, 10, 11, 12]
STRONG = aug.AugmentConfig(shift=0.15, scale=0.2, rotation=40.0, bg_replace=0.0)


def _cfg(root, **kw) -> DataConfig:
    base = {"dataset": "lmo", "root": str(root), "split": "test", "num_workers": 0}
    base.update(kw)
    return DataConfig(**base)


def _hull_contains(corners_2d: np.ndarray, pts: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    hull = corners_2d[ConvexHull(corners_2d).vertices]
    return MplPath(hull).contains_points(pts, radius=1.0)


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_full_mode_augmented_items_agree_with_the_files(oracle_root, epoch):
    ds = BopTorchDataset(
        _cfg(oracle_root, input_size=(320, 240)), LMO_IDS, train=True, augment=STRONG, seed=5
    )
    bop = BopDataset("lmo", oracle_root)
    item = ds[(epoch % len(ds), epoch)]
    meta, obj = item["meta"], item["objects"]
    assert item["image"].shape == (3, 240, 320) and item["K"].shape == (3, 3)
    assert meta["orig_size"] == (640, 480)
    gts = bop.scene_gt("test", meta["scene_id"])[meta["im_id"]]
    infos = bop.scene_gt_info("test", meta["scene_id"])[meta["im_id"]]
    models = bop.models_info()
    A, K0 = meta["affine"], meta["K_orig"]
    np.testing.assert_allclose(K0, bop.scene_camera("test", meta["scene_id"])[meta["im_id"]].K)
    assert len(obj["cls"]) >= 1
    for i in range(len(obj["cls"])):
        g = int(obj["gt_id"][i])
        gt = gts[g]
        assert infos[g].visib_fract > 0.1
        assert int(obj["obj_id"][i]) == gt.obj_id and LMO_IDS[int(obj["cls"][i])] == gt.obj_id
        c3 = models[gt.obj_id].bbox_corners()
        np.testing.assert_allclose(obj["corners_3d"][i].numpy(), c3, atol=1e-4)
        assert float(obj["diameter"][i]) == pytest.approx(models[gt.obj_id].diameter, rel=1e-6)
        # corners_2d = the file's pose projected with the file's K, then warped by the affine ...
        ref = aug.apply_affine(A, aug.project(K0, gt.R, gt.t, c3))
        np.testing.assert_allclose(obj["corners_2d"][i].numpy(), ref, atol=1e-3)
        # ... = the augmented pose projected with the augmented K.
        got = aug.project(
            item["K"].double().numpy(), obj["R"][i].double().numpy(), obj["t"][i].double().numpy(), c3
        )
        np.testing.assert_allclose(got, ref, atol=2e-3)
        # Every visible pixel lies inside the projected 3D box.
        ys, xs = np.nonzero(obj["mask_visib"][i].numpy())
        assert len(xs) >= ds.cfg.min_visib_px
        inside = _hull_contains(obj["corners_2d"][i].numpy(), np.stack([xs + 0.5, ys + 0.5], 1))
        assert inside.mean() > 0.995


def test_image_and_mask_move_together(oracle_root):
    """Without colour jitter, the mean colour under each warped mask is that under the original mask."""
    cfg_aug = aug.AugmentConfig(
        shift=0.1, scale=0.2, rotation=30.0, brightness=0, contrast=0, saturation=0, hue=0
    )
    ds = BopTorchDataset(_cfg(oracle_root), LMO_IDS, train=True, augment=cfg_aug, seed=1)
    bop = BopDataset("lmo", oracle_root)
    item = ds[(1, 3)]
    img = aug.denormalize_image(item["image"].numpy()).astype(float)
    rgb = bop.rgb("test", item["meta"]["scene_id"], item["meta"]["im_id"]).astype(float)
    for i in range(len(item["objects"]["cls"])):
        g = int(item["objects"]["gt_id"][i])
        m0 = load_mask(bop.mask_path("test", item["meta"]["scene_id"], item["meta"]["im_id"], g))
        m1 = item["objects"]["mask_visib"][i].numpy()
        if m1.sum() < 200:
            continue
        np.testing.assert_allclose(img[m1].mean(0), rgb[m0].mean(0), atol=8.0)


def test_items_are_reproducible_per_seed_and_epoch(oracle_root):
    ds = BopTorchDataset(
        _cfg(oracle_root, input_size=(160, 128)), LMO_IDS, train=True, augment=STRONG, seed=3
    )
    a, b, c = ds[(2, 7)], ds[(2, 7)], ds[(2, 8)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["K"], b["K"])
    assert not torch.equal(a["image"], c["image"])
    test = BopTorchDataset(_cfg(oracle_root, input_size=(160, 128)), LMO_IDS, train=False)
    np.testing.assert_allclose(test[2]["meta"]["affine"], np.diag([0.25, 128 / 480, 1.0]))


def test_crop_mode_one_item_per_instance(oracle_root):
    bop = BopDataset("lmo", oracle_root)
    cfg = _cfg(oracle_root, mode="crop", crop_size=96, crop_pad=1.5, min_visib_fract=0.0)
    ds = BopTorchDataset(cfg, LMO_IDS, train=False)
    targets = {(t.scene_id, t.im_id, t.obj_id) for t in bop.targets}
    n_expected = 0
    for s in bop.scene_ids("test"):
        for im, infos in bop.scene_gt_info("test", s).items():
            gts = bop.scene_gt("test", s)[im]
            n_expected += sum(
                1
                for g, inf in zip(gts, infos, strict=True)
                if inf.visib_fract > 0 and (s, im, g.obj_id) in targets
            )
    assert len(ds) == n_expected
    item = ds[4]
    meta, obj = item["meta"], item["objects"]
    assert item["image"].shape == (3, 96, 96)
    assert meta["box_source"] == "gt" and len(obj["cls"]) == 1 and int(obj["gt_id"][0]) == meta["gt_id"]
    info = bop.scene_gt_info("test", meta["scene_id"])[meta["im_id"]][meta["gt_id"]]
    assert meta["box"] == tuple(float(v) for v in info.bbox_visib)
    # K of the crop is A @ K_orig, and the box centre is the crop centre.
    np.testing.assert_allclose(item["K"].double().numpy(), meta["affine"] @ meta["K_orig"], rtol=1e-6)
    x, y, w, h = meta["box"]
    np.testing.assert_allclose(aug.apply_affine(meta["affine"], [x + w / 2, y + h / 2]), [48, 48], atol=1e-9)
    assert meta["affine"][0, 0] == pytest.approx(96 / (max(w, h) * 1.5))
    assert obj["mask_visib"].shape == (1, 96, 96) and obj["mask_visib"].any()


def test_crop_mode_train_time_jitter_keeps_geometry(oracle_root):
    cfg = _cfg(oracle_root, mode="crop", crop_size=64)
    ds = BopTorchDataset(cfg, LMO_IDS, train=True, augment=aug.AugmentConfig(rotation=30.0), seed=0)
    for k in range(3):
        item = ds[(k, k)]
        o = item["objects"]
        got = aug.project(
            item["K"].double().numpy(),
            o["R"][0].double().numpy(),
            o["t"][0].double().numpy(),
            o["corners_3d"][0].double().numpy(),
        )
        np.testing.assert_allclose(got, o["corners_2d"][0].numpy(), atol=2e-3)


def test_detections_give_crops_of_target_objects(oracle_root, tmp_path):
    bop = BopDataset("lmo", oracle_root)
    t0 = bop.targets[0]
    dets = [
        {
            "scene_id": t0.scene_id,
            "image_id": t0.im_id,
            "category_id": t0.obj_id,
            "bbox": [10, 20, 30, 40],
            "score": 0.9,
            "time": 0.5,
        },
        {
            "scene_id": t0.scene_id,
            "image_id": t0.im_id,
            "category_id": t0.obj_id,
            "bbox": [11, 20, 30, 40],
            "score": 0.4,
            "time": 0.5,
        },
        {
            "scene_id": t0.scene_id,
            "image_id": t0.im_id,
            "category_id": 999,
            "bbox": [0, 0, 5, 5],
            "score": 1.0,
            "time": 0.5,
        },
    ]
    p = tmp_path / "dets.json"
    p.write_text(json.dumps(dets))
    assert len(load_detections(p)[(t0.scene_id, t0.im_id)]) == 3
    ds = BopTorchDataset(
        _cfg(oracle_root, mode="crop", crop_size=64),
        LMO_IDS,
        train=False,
        box_source="detections",
        detections=p,
        need_masks=False,
    )
    # inst_count of the target is 1: only the best detection of the object is kept; 999 is not a target.
    assert len(ds) == t0.inst_count == 1
    item = ds[0]
    assert item["meta"]["box_source"] == "detections" and item["meta"]["box"] == (10.0, 20.0, 30.0, 40.0)
    assert (
        item["meta"]["score"] == 0.9 and item["meta"]["det_time"] == 0.5 and len(item["objects"]["cls"]) == 0
    )
    p.write_text('[{"scene_id": 2}]')
    with pytest.raises(BopkdError, match="detection #0 is malformed"):
        load_detections(p)


def test_test_split_uses_only_the_targets(lmo_sample_root):
    """The real LM-O sample: 200 target images, RGB for 20 of them; objects restricted to the targets."""
    bop = BopDataset("lmo", lmo_sample_root)
    ds = BopTorchDataset(
        _cfg(lmo_sample_root, skip_missing_images=False, min_visib_fract=0.0),
        LMO_IDS,
        train=False,
        need_masks=False,
    )
    target_images = {(t.scene_id, t.im_id) for t in bop.targets}
    assert set(ds.image_keys()) == target_images and len(ds) == 200
    with pytest.warns(UserWarning, match="skipped 180 images"):
        ds = BopTorchDataset(
            _cfg(lmo_sample_root, skip_missing_images=True, min_visib_fract=0.0),
            LMO_IDS,
            train=False,
            need_masks=False,
        )
    assert len(ds) == 20
    item = ds[0]
    wanted = {
        t.obj_id
        for t in bop.targets
        if (t.scene_id, t.im_id) == (item["meta"]["scene_id"], item["meta"]["im_id"])
    }
    assert set(item["objects"]["obj_id"].tolist()) <= wanted and len(item["objects"]["obj_id"]) > 0
    # Training needs masks; this split has none, and rendering them is the documented way.
    with (
        pytest.warns(UserWarning, match="skipped"),
        pytest.raises(MissingFileError, match="data.masks=render"),
    ):
        BopTorchDataset(_cfg(lmo_sample_root, skip_missing_images=True, masks="file"), LMO_IDS, train=True)[0]


def test_rendered_masks_match_the_mask_files(oracle_root):
    """masks=render (for splits without mask_visib/) reproduces the toolkit-made masks of the oracle."""
    file_ds = BopTorchDataset(_cfg(oracle_root), LMO_IDS, train=False)
    rend_ds = BopTorchDataset(_cfg(oracle_root, masks="render"), LMO_IDS, train=False)
    a, b = file_ds[0]["objects"]["mask_visib"], rend_ds[0]["objects"]["mask_visib"]
    for ma, mb in zip(a, b, strict=True):
        iou = (ma & mb).sum().item() / max(1, (ma | mb).sum().item())
        assert iou > 0.95


def test_collate_and_loader_with_workers(oracle_root):
    ds = BopTorchDataset(_cfg(oracle_root, input_size=(128, 96)), LMO_IDS, train=True, augment=STRONG, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_batch)
    batch = next(iter(loader))
    assert batch["images"].shape == (3, 3, 96, 128) and batch["K"].shape == (3, 3, 3)
    assert len(batch["objects"]) == 3 and len(batch["meta"]) == 3
    ns = [len(o["cls"]) for o in batch["objects"]]
    for o, n in zip(batch["objects"], ns, strict=True):
        assert (
            o["R"].shape == (n, 3, 3)
            and o["corners_2d"].shape == (n, 8, 2)
            and o["mask_visib"].shape == (n, 96, 128)
        )
    moved = batch_to_device(batch, "cpu", channels_last=True)
    assert moved["images"].is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="one size"):
        collate_batch([ds[(0, 0)], BopTorchDataset(_cfg(oracle_root), LMO_IDS, train=False)[0]])


def test_bad_inputs_give_one_line_errors(oracle_root):
    with pytest.raises(MissingFileError, match="train_pbr"):
        BopTorchDataset(_cfg(oracle_root, split="train_pbr"), LMO_IDS)
    with pytest.raises(BopkdError, match="objects \\[99\\]"):
        BopTorchDataset(_cfg(oracle_root), [1, 99])
    with pytest.raises(BopkdError, match="data.crop_pad_range"):
        BopTorchDataset(_cfg(oracle_root, crop_pad_range=(1.5, 1.2)), LMO_IDS)
    with pytest.raises(BopkdError, match="no target instances"):
        BopTorchDataset(_cfg(oracle_root, min_visib_fract=1.0), LMO_IDS)
    with pytest.raises(BopkdError, match="crop mode only"):
        BopTorchDataset(_cfg(oracle_root), LMO_IDS, train=False, box_source="detections", detections="x.json")
