"""Dense targets in crop batches (bopkd.data.dense_dataset): the output camera, agreement with the warped
mask files and with the surface code's own points, augmentation followed, batching, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bopkd.data import augment as aug
from bopkd.data.collate import batch_to_device, collate_batch
from bopkd.data.dense_dataset import DenseTorchDataset, crop_output_camera
from bopkd.data.dense_targets import output_camera
from bopkd.data.torch_dataset import DataConfig
from bopkd.errors import BopkdError

OUT, BITS = 32, 8


def _cfg(root, **kw) -> DataConfig:
    base = dict(dataset="learn", root=str(root), split="test", mode="crop", crop_size=2 * OUT, num_workers=0)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def plain(synth_root) -> DenseTorchDataset:
    """Unaugmented crops (test-time boxes), 8-bit codes of the procedural objects."""
    return DenseTorchDataset(
        _cfg(synth_root), [1, 2, 3], train=False, out_size=OUT, bits=BITS, min_vertices=4096
    )


def _pool_mask(mask_in: np.ndarray) -> np.ndarray:
    """(2S, 2S) bool input-resolution mask -> (S, S): at least half of each 2x2 block set."""
    m = mask_in.reshape(OUT, 2, OUT, 2).mean(axis=(1, 3))
    return m >= 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_output_camera_of_an_axis_aligned_crop_is_output_camera():
    K0 = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
    x0, y0, side = 101.5, 57.25, 143.0
    s = 2 * OUT / side
    A = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0], [0.0, 0.0, 1.0]])
    K_out, Rz = crop_output_camera(A, K0, 2 * OUT, OUT)
    np.testing.assert_allclose(K_out, output_camera(K0, (x0, y0, side), (OUT, OUT)), atol=1e-9)
    np.testing.assert_allclose(Rz, np.eye(3), atol=1e-12)
    # A rotated crop: K_out Rz X projects where the affine sends K0 X, halved (output stride 2).
    c, sn = np.cos(0.4), np.sin(0.4)
    Ar = np.array([[c, -sn, 30.0], [sn, c, -12.0], [0.0, 0.0, 1.0]]) @ A
    K_out, Rz = crop_output_camera(Ar[:2], K0, 2 * OUT, OUT)
    X = np.array([[12.0, -40.0, 700.0], [-55.0, 20.0, 820.0]])
    got = (K_out @ Rz @ X.T).T
    want = (Ar @ K0 @ X.T).T
    np.testing.assert_allclose(got[:, :2] / got[:, 2:], 0.5 * want[:, :2] / want[:, 2:], atol=1e-9)


def test_targets_agree_with_the_mask_files_and_the_code_points(plain):
    ious, dists = [], []
    for i in range(len(plain)):
        item = plain[i]
        mask, bits = item["dense_mask"].numpy(), item["dense_bits"].numpy()
        assert mask.shape == (OUT, OUT) and bits.shape == (BITS, OUT, OUT) and bits.dtype == np.uint8
        assert not bits[:, ~mask].any()
        # Independent: the dataset's mask_visib files (from the synthetic depth), warped to the input crop.
        ious.append(_iou(mask, _pool_mask(item["objects"]["mask_visib"][0].numpy())))
        # The code's point (mm, model frame) of each masked pixel projects back near that pixel.
        meta, obj = item["meta"], int(item["meta"]["obj_id"])
        code = (bits[:, mask].T.astype(np.int64) << np.arange(BITS - 1, -1, -1)).sum(axis=1)
        R, t = item["objects"]["R"][0].double().numpy(), item["objects"]["t"][0].double().numpy()
        K_out = np.diag([0.5, 0.5, 1.0]) @ item["K"].double().numpy()
        uv = aug.project(K_out, R, t, plain.codes[obj].points[code])
        rows, cols = np.nonzero(mask)
        dists.append(np.hypot(uv[:, 0] - (cols + 0.5), uv[:, 1] - (rows + 0.5)))
        assert meta["gt_id"] >= 0
    d = np.concatenate(dists)
    assert np.median(ious) > 0.85 and min(ious) > 0.6, ious
    assert np.median(d) < 1.0 and np.percentile(d, 90) < 2.5, (np.median(d), np.percentile(d, 90))


def test_augmented_targets_follow_the_rotated_crop(synth_root):
    augment = aug.AugmentConfig(rotation=40.0, bg_replace=0.0)
    ds = DenseTorchDataset(
        _cfg(synth_root),
        [1, 2, 3],
        train=True,
        augment=augment,
        seed=3,
        out_size=OUT,
        bits=BITS,
        min_vertices=4096,
    )
    ious, ious_unrotated = [], []
    for i in range(6):
        item = ds[(i, 1)]
        A = item["meta"]["affine"]
        assert abs(np.arctan2(A[1, 0], A[0, 0])) > 1e-3  # the crop is rotated
        want = _pool_mask(item["objects"]["mask_visib"][0].numpy())
        ious.append(_iou(item["dense_mask"].numpy(), want))
        # Rendering through the unrotated crop (a wrong implementation) disagrees with the warped masks.
        meta = dict(item["meta"])
        theta = np.arctan2(A[1, 0], A[0, 0])
        c, s = np.cos(-theta), np.sin(-theta)
        ctr = np.array([OUT, OUT, 1.0])
        T = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        shift = ctr - T @ ctr
        T[:2, 2] = shift[:2]
        meta["affine"] = T @ A
        ious_unrotated.append(_iou(ds.dense_targets(meta)[0], want))
    assert np.median(ious) > 0.8, ious
    assert np.median(ious_unrotated) < np.median(ious) - 0.1, (ious, ious_unrotated)


def test_batches_stack_float_targets_and_move_them(plain):
    batch = collate_batch([plain[0], plain[1]])
    assert batch["dense_mask"].shape == (2, OUT, OUT) and batch["dense_mask"].dtype == torch.float32
    assert batch["dense_bits"].shape == (2, BITS, OUT, OUT) and batch["dense_bits"].dtype == torch.float32
    assert set(batch["dense_bits"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(batch["dense_mask"][1], plain[1]["dense_mask"].float())
    moved = batch_to_device(batch, "cpu")
    assert torch.equal(moved["dense_bits"], batch["dense_bits"]) and "images" in moved and "meta" in moved
    sparse = collate_batch([{k: v for k, v in plain[0].items() if not k.startswith("dense_")}])
    assert "dense_mask" not in sparse and "dense_mask" not in batch_to_device(sparse, "cpu")


def test_bad_settings_are_one_line_errors(synth_root, plain):
    with pytest.raises(BopkdError, match="set data.mode=crop"):
        DenseTorchDataset(_cfg(synth_root, mode="full"), [1], out_size=OUT, bits=BITS)
    with pytest.raises(BopkdError, match="data.crop_size=64"):
        DenseTorchDataset(_cfg(synth_root, crop_size=48), [1], out_size=OUT, bits=BITS)
    with pytest.raises(BopkdError, match="encode every object"):
        DenseTorchDataset(_cfg(synth_root), [1, 2], out_size=OUT, bits=BITS, codes={1: plain.codes[1]})
