"""Augmentation keeps images, masks, intrinsics and poses consistent (bopkd.data.augment)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bopkd.data import augment as aug
from bopkd.errors import BopkdError

K_LM = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _random_pose(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    R = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    t = np.array([rng.uniform(-100, 100), rng.uniform(-80, 80), rng.uniform(500, 1200)])
    return R, t


@pytest.mark.parametrize("seed", range(6))
def test_warped_camera_and_pose_project_like_the_warped_image_points(seed):
    """Projecting 3D points with (K', R', t') equals warping their original projections by A."""
    rng = np.random.default_rng(seed)
    cfg = aug.AugmentConfig(shift=0.2, scale=0.3, rotation=60.0)
    A = aug.sample_full_affine(rng, cfg, (640, 480), (320, 256), K_LM)
    R, t = _random_pose(rng)
    pts = rng.uniform(-60, 60, size=(50, 3))
    K2, Rz, R2, t2 = aug.warp_camera_pose(A, K_LM, R[None], t[None])
    expected = aug.apply_affine(A, aug.project(K_LM, R, t, pts))
    got = aug.project(K2, R2[0], t2[0], pts)
    np.testing.assert_allclose(got, expected, atol=1e-8)
    # K' is an intrinsic matrix (upper triangular, positive focal lengths) and R' a rotation.
    assert K2[1, 0] == 0.0 and np.allclose(K2[2], [0, 0, 1]) and K2[0, 0] > 0 and K2[1, 1] > 0
    np.testing.assert_allclose(R2[0] @ R2[0].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R2[0]) == pytest.approx(1.0)
    # Rz is a rotation about the optical axis: z is unchanged.
    np.testing.assert_allclose(Rz[:, 2], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(t2[0, 2], t[2])


def test_rotation_about_principal_point_is_a_camera_roll():
    """With fx == fy an in-plane image rotation about the principal point keeps K and rolls the camera."""
    K = np.array([[600.0, 0, 320.0], [0, 600.0, 240.0], [0, 0, 1]])
    A = aug.rotation_2d(25.0, (320.0, 240.0))
    K2, Rz, _, _ = aug.warp_camera_pose(A, K)
    np.testing.assert_allclose(K2, K, atol=1e-9)
    np.testing.assert_allclose(Rz, Rotation.from_euler("z", 25.0, degrees=True).as_matrix(), atol=1e-12)


def test_crop_without_rotation_gives_A_times_K():
    A = aug.crop_affine((300.0, 200.0), 120.0, 256)
    K2, Rz, _, _ = aug.warp_camera_pose(A, K_LM)
    np.testing.assert_allclose(Rz, np.eye(3))
    np.testing.assert_allclose(K2, A @ K_LM, atol=1e-12)


def test_reflections_are_refused():
    with pytest.raises(ValueError, match="reflect"):
        aug.warp_camera_pose(aug.scaling(-1.0, 1.0), K_LM)


def test_square_box_and_crop_map_the_box_centre_to_the_crop_centre():
    box = (100.0, 50.0, 40.0, 80.0)
    A, center, side = aug.sample_crop_affine(None, box, 256, pad=1.5)
    assert side == pytest.approx(120.0)
    np.testing.assert_allclose(center, [120.0, 90.0])
    np.testing.assert_allclose(aug.apply_affine(A, center), [128.0, 128.0])
    # The square's corners map to the crop's corners.
    np.testing.assert_allclose(aug.apply_affine(A, center - side / 2), [0, 0], atol=1e-12)
    np.testing.assert_allclose(aug.apply_affine(A, center + side / 2), [256, 256], atol=1e-12)


def test_train_time_crop_jitter_stays_in_range():
    rng = np.random.default_rng(0)
    box = (200.0, 100.0, 50.0, 30.0)
    for _ in range(50):
        _, center, side = aug.sample_crop_affine(rng, box, 128, 1.3, (1.2, 1.5), 0.1, max_side=640)
        assert 50 * 1.2 - 1e-9 <= side <= 50 * 1.5 + 1e-9
        assert abs(center[0] - 225.0) <= 5.0 + 1e-9 and abs(center[1] - 115.0) <= 3.0 + 1e-9


def test_scaling_warp_matches_cv2_resize():
    """The half-pixel convention: a pure scaling by warp_image is what cv2.resize computes."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    A = aug.resize_affine((64, 48), (128, 96))
    warped = aug.warp_image(img, A, (128, 96))
    ref = cv2.resize(img, (128, 96), interpolation=cv2.INTER_LINEAR)
    # Inside (the outermost output pixels sample beyond the image: resize replicates, we pad with zeros).
    assert np.abs(warped.astype(int) - ref.astype(int))[1:-1, 1:-1].max() <= 1
    A = aug.resize_affine((64, 48), (32, 24))
    warped = aug.warp_image(img, A, (32, 24))
    ref = cv2.resize(img, (32, 24), interpolation=cv2.INTER_LINEAR)
    assert np.abs(warped.astype(int) - ref.astype(int)).max() <= 1


def test_warped_mask_lands_where_the_affine_maps_its_points():
    """A disc drawn around continuous point p ends up centred at A p (within a fraction of a pixel)."""
    H, W = 240, 320
    p = np.array([140.3, 97.8])
    vv, uu = np.mgrid[0:H, 0:W]
    mask = (uu + 0.5 - p[0]) ** 2 + (vv + 0.5 - p[1]) ** 2 <= 12.0**2
    A = aug.translation(7.0, -3.0) @ aug.rotation_2d(33.0, (150, 110)) @ aug.scaling(1.4)
    out = aug.warp_mask(mask, A, (W * 2, H * 2))
    ys, xs = np.nonzero(out)
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(centroid, aug.apply_affine(A, p), atol=0.3)
    many = aug.warp_masks(np.stack([mask] * 6), A, (W * 2, H * 2))
    assert many.shape == (6, H * 2, W * 2) and all((m == out).all() for m in many)


def test_color_jitter_is_seeded_and_changes_colours():
    rng_img = np.random.default_rng(2)
    img = rng_img.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    cfg = aug.AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    a = aug.color_jitter(img, np.random.default_rng(7), cfg)
    b = aug.color_jitter(img, np.random.default_rng(7), cfg)
    c = aug.color_jitter(img, np.random.default_rng(8), cfg)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, img)
    off = aug.AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0)
    assert np.array_equal(aug.color_jitter(img, np.random.default_rng(7), off), img)


def test_background_replacement_keeps_the_objects(tmp_path):
    rng = np.random.default_rng(3)
    img = np.full((60, 80, 3), 77, dtype=np.uint8)
    fg = np.zeros((60, 80), dtype=bool)
    fg[10:30, 20:50] = True
    out = aug.replace_background(img, fg, rng)
    assert np.array_equal(out[fg], img[fg])
    assert (out[~fg] != 77).any(axis=-1).mean() > 0.9
    # From a folder of backgrounds.
    bg = np.zeros((40, 50, 3), dtype=np.uint8)
    bg[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "b.png"), bg)
    out = aug.replace_background(img, fg, rng, aug.list_backgrounds(tmp_path))
    assert np.array_equal(out[fg], img[fg]) and (out[~fg][:, 0] == 200).all() and (out[~fg][:, 2] == 0).all()


def test_normalize_round_trip():
    img = np.random.default_rng(4).integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    x = aug.normalize_image(img)
    assert x.shape == (3, 8, 9) and x.dtype == np.float32
    assert np.array_equal(aug.denormalize_image(x), img)


def test_config_validation_names_the_key():
    with pytest.raises(BopkdError, match="augment.scale"):
        aug.AugmentConfig(scale=1.5).validate()
    with pytest.raises(BopkdError, match="augment.bg_dir"):
        aug.AugmentConfig(bg_dir="/no/such/folder").validate()
