"""The synthetic dataset builder, checked against computations independent of how it made its files."""

from __future__ import annotations

import filecmp
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bopkd.data import BopDataset
from bopkd.data.bop_json import load_json
from bopkd.data.gt_info import depth_to_dist
from bopkd.data.registry import DESCRIPTOR_NAME, get_spec
from bopkd.data.synth import SynthConfig, build_synthetic_dataset
from bopkd.errors import BopkdError
from bopkd.geometry.render import Renderer

SMALL = {"width": 160, "height": 120, "train": 5, "test": 5, "images_per_scene": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two tiny datasets: LINEMOD-like viewpoints (the default) and free viewpoints (truncations)."""
    root = tmp_path_factory.mktemp("synth")
    lm = build_synthetic_dataset(SynthConfig(name="lm", root=str(root), seed=3, **SMALL))
    fr = build_synthetic_dataset(
        SynthConfig(name="fr", root=str(root), seed=4, viewpoints="free", objects_per_image=(4, 6), **SMALL)
    )
    return root, {"lm": lm, "fr": fr}


def _images(ds: BopDataset):
    for split in ds.splits():
        for scene in ds.scene_ids(split):
            for im in ds.im_ids(split, scene):
                yield split, scene, im


def _disk_renderer(ds: BopDataset) -> Renderer:
    """A renderer of the models as read back from the dataset's PLY files."""
    r = Renderer(ds.camera.width, ds.camera.height)
    for o in ds.obj_ids:
        r.add_object(o, ds.model(o))
    return r


@pytest.mark.parametrize("name", ["lm", "fr"])
def test_round_trip_through_the_readers(built, name):
    root, _ = built
    ds = BopDataset(name, root)
    assert not ds.spec.registered and ds.spec.obj_ids == tuple(range(1, 9))
    assert set(ds.spec.symmetric_obj_ids) == {7, 8}
    assert ds.spec.im_size == (160, 120) and ds.splits() == ["test", "train_pbr"]
    # K of LM-O scaled to 160x120.
    np.testing.assert_allclose(ds.camera.K[0], [572.4114 / 4, 0, 325.2611 / 4])
    np.testing.assert_allclose(ds.camera.K[1], [0, 573.57043 / 4, 242.04899 / 4])
    # 5 images in scenes of 3.
    for split in ("train_pbr", "test"):
        assert ds.scene_ids(split) == [0, 1]
        assert sum(len(ds.im_ids(split, s)) for s in ds.scene_ids(split)) == 5
        assert ds.has_depth(split)
    assert ds.rgb_path("train_pbr", 0, 0).suffix == ".jpg" and ds.rgb_path("test", 0, 0).suffix == ".png"
    assert (
        ds.scene_camera("train_pbr", 0)[0].depth_scale == 0.1
        and ds.scene_camera("test", 0)[0].depth_scale == 1.0
    )
    for split, scene, im in _images(ds):
        gts = ds.scene_gt(split, scene)[im]
        infos = ds.scene_gt_info(split, scene)[im]
        assert len(gts) == len(infos) >= 1
        assert len({g.obj_id for g in gts}) == len(gts)  # distinct objects per image
        assert ds.rgb(split, scene, im).shape == (120, 160, 3)
        assert ds.depth(split, scene, im).shape == (120, 160)
        for g in gts:
            np.testing.assert_allclose(g.R @ g.R.T, np.eye(3), atol=1e-9)
            assert np.linalg.det(g.R) == pytest.approx(1.0)
    # Models: procedural ones are written to both models/ and models_eval/ with the same info.
    m, e = ds.models_dir() / "models_info.json", ds.models_dir(eval=True) / "models_info.json"
    assert m != e and m.read_bytes() == e.read_bytes()
    assert ds.model(1).colors is not None and ds.model(1, eval=True).colors is None


def test_linemod_viewpoints_are_on_the_upper_hemisphere_with_small_inplane_rotation(built):
    root, _ = built
    ds = BopDataset("lm", root)
    for split, scene, im in _images(ds):
        cam = ds.scene_camera(split, scene)[im]
        assert cam.R_w2c is not None
        for g in ds.scene_gt(split, scene)[im]:
            # Model z is the table normal: up in the world; the camera sees it from above (elevation >= 0).
            R_m2w = cam.R_w2c.T @ g.R
            np.testing.assert_allclose(R_m2w[:, 2], [0, 0, 1], atol=1e-9)
            centre_w = -cam.R_w2c.T @ cam.t_w2c
            pos_w = cam.R_w2c.T @ (g.t - cam.t_w2c)
            assert centre_w[2] > 0  # camera above the table
            assert pos_w[2] + ds.models_info()[g.obj_id].min_xyz[2] == pytest.approx(0.0, abs=1e-6)  # on it
        # In-plane rotation: the image's up direction (-y) is the world's up, tilted by at most 15 deg.
        z_c = cam.R_w2c[2]
        up_img = -cam.R_w2c[1]
        up_w = np.array([0.0, 0, 1]) - z_c * z_c[2]
        cos = up_img @ up_w / np.linalg.norm(up_w)
        assert cos >= np.cos(np.radians(15)) - 1e-9
        assert -1e-9 <= np.degrees(np.arcsin(-z_c[2])) <= 80 + 1e-6  # elevation


@pytest.mark.parametrize("name", ["lm", "fr"])
def test_depth_and_masks_match_an_independent_render(built, name):
    """Depth file = nearest of the GT models rendered alone (read back from the PLY files), masks = their
    silhouettes, mask_visib = the toolkit's visibility rule recomputed here, and the silhouettes agree with
    the pinhole projection of the model vertices."""
    root, _ = built
    ds = BopDataset(name, root)
    r = _disk_renderer(ds)
    for split, scene, im in _images(ds):
        cam = ds.scene_camera(split, scene)[im]
        K, scale = cam.K, cam.depth_scale
        gts = ds.scene_gt(split, scene)[im]
        depth = ds.depth(split, scene, im)
        alone = [r.render(K, [(g.obj_id, g.R, g.t)]).depth for g in gts]
        nearest = np.min(np.stack([np.where(a > 0, a, np.inf) for a in alone]), axis=0)
        nearest[~np.isfinite(nearest)] = 0
        assert np.abs(depth - nearest).max() <= 0.5 * scale + 1e-9
        dist_scene = depth_to_dist(depth, K)
        for gt_id, (g, a) in enumerate(zip(gts, alone, strict=True)):
            mask = ds.mask(split, scene, im, gt_id, visib=False)
            mask_visib = ds.mask(split, scene, im, gt_id, visib=True)
            np.testing.assert_array_equal(mask, a > 0)
            d = depth_to_dist(a, K)
            expect = (((d.astype(np.float32) - dist_scene.astype(np.float32)) <= 15) | (dist_scene == 0)) & (
                d > 0
            )
            np.testing.assert_array_equal(mask_visib, expect)
            # Where the object is the nearest surface, the depth file holds its depth.
            front = mask & (a <= nearest)
            assert np.abs(depth[front] - a[front]).max() <= 0.5 * scale + 1e-9
            # The depth file's 3D points lie on the model surface (a closest-point query, not a ray cast).
            vs, us = np.nonzero(front)
            rays = np.linalg.inv(K) @ np.stack([us + 0.5, vs + 0.5, np.ones(len(us))])
            X = (rays * depth[vs, us]).T
            dist = _distance_to_model(ds.model(g.obj_id), (X - g.t) @ g.R)
            assert dist.max() <= 0.5 * scale * np.linalg.norm(rays, axis=0).max() + 1e-3
            # Pinhole projection of the vertices: those projecting into the image lie on the silhouette
            # (within a pixel; tips thinner than a pixel may fall between pixel centres).
            pts = ds.model(g.obj_id).pts @ g.R.T + g.t
            ui = np.floor(K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]).astype(int)
            vi = np.floor(K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]).astype(int)
            inside = (ui >= 1) & (vi >= 1) & (ui < mask.shape[1] - 1) & (vi < mask.shape[0] - 1)
            near = np.zeros_like(mask)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    near |= np.roll(np.roll(mask, dy, 0), dx, 1)
            if inside.any():
                assert near[vi[inside], ui[inside]].mean() > 0.99


def _distance_to_model(model, pts: np.ndarray) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(model.pts.astype(np.float32)), o3d.core.Tensor(model.faces.astype(np.uint32))
    )
    return scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()


@pytest.mark.parametrize("name", ["lm", "fr"])
def test_gt_info_recomputed_from_the_masks(built, name):
    root, _ = built
    ds = BopDataset(name, root)
    W, H = ds.spec.im_size
    truncated = 0
    for split, scene, im in _images(ds):
        infos = ds.scene_gt_info(split, scene)[im]
        depth = ds.depth(split, scene, im)
        for gt_id, inf in enumerate(infos):
            mask = ds.mask(split, scene, im, gt_id, visib=False)
            mv = ds.mask(split, scene, im, gt_id, visib=True)
            assert inf.px_count_visib == mv.sum()
            assert inf.px_count_valid == (mask & (depth > 0)).sum()
            assert inf.px_count_all >= mask.sum() > 0
            assert inf.visib_fract == pytest.approx(inf.px_count_visib / inf.px_count_all)
            if mv.any():
                ys, xs = np.nonzero(mv)
                assert inf.bbox_visib == (xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())
                ys, xs = np.nonzero(mask)
                in_image = (xs.min(), ys.min(), xs.max(), ys.max())
                x, y, w, h = inf.bbox_obj
                if x >= 0 and y >= 0 and x + w < W and y + h < H:
                    assert inf.px_count_all == mask.sum()
                    assert (x, y, x + w, y + h) == in_image
                else:  # truncated: the box reaches outside and its in-image part is the mask's box
                    truncated += 1
                    assert inf.px_count_all > mask.sum()
                    assert (max(x, 0), max(y, 0), min(x + w, W - 1), min(y + h, H - 1)) == in_image
            else:
                assert inf.bbox_visib == inf.bbox_obj == (-1, -1, -1, -1)
    if name == "fr":
        assert truncated > 0  # free viewpoints do put objects across the border


def test_targets_are_the_visible_instances(built):
    root, _ = built
    ds = BopDataset("lm", root)
    expect = {}
    for scene in ds.scene_ids("test"):
        for im in ds.im_ids("test", scene):
            for g, inf in zip(
                ds.scene_gt("test", scene)[im], ds.scene_gt_info("test", scene)[im], strict=True
            ):
                if inf.visib_fract >= 0.1:
                    expect[(scene, im, g.obj_id)] = expect.get((scene, im, g.obj_id), 0) + 1
    got = {(t.scene_id, t.im_id, t.obj_id): t.inst_count for t in ds.targets}
    assert got == expect and len(got) > 0
    for scene, im, obj in got:
        assert obj in {g.obj_id for g in ds.scene_gt("test", scene)[im]}


def test_descriptor_and_info_command(built):
    root, _ = built
    d = json.loads((root / "lm" / DESCRIPTOR_NAME).read_text())
    spec = get_spec("lm", root)
    assert d["name"] == "lm" and spec.test_scene_ids == (0, 1) and spec.vsd_delta == 15.0
    near, far = spec.depth_range
    assert 400 < near <= far < 1400
    from typer.testing import CliRunner

    from bopkd.cli import app

    r = CliRunner().invoke(app, ["info", "lm", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert "train_pbr" in r.output and "continuous" in r.output


def _tree(p: Path) -> list[str]:
    return sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file())


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    cfg = {"name": "d", "width": 96, "height": 72, "train": 2, "test": 2, "seed": 11, "objects": (1, 3, 8)}
    a = build_synthetic_dataset(SynthConfig(root=str(tmp_path / "a"), **cfg))
    b = build_synthetic_dataset(SynthConfig(root=str(tmp_path / "b"), **cfg))
    c = build_synthetic_dataset(SynthConfig(root=str(tmp_path / "c"), **{**cfg, "seed": 12}))
    files = _tree(a)
    assert files == _tree(b) and any(f.endswith(".ply") for f in files)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert (a / "train_pbr/000000/rgb/000000.jpg").read_bytes() != (
        c / "train_pbr/000000/rgb/000000.jpg"
    ).read_bytes()
    assert (a / "models/obj_000001.ply").read_bytes() == (c / "models/obj_000001.ply").read_bytes()


def test_rerun_does_nothing_other_settings_need_force(tmp_path):
    cfg = SynthConfig(name="d", root=str(tmp_path), width=64, height=48, train=1, test=1, objects=(2,))
    msgs = []
    out = build_synthetic_dataset(cfg, log=msgs.append)
    rgb = out / "test/000000/rgb/000000.png"
    mtime = rgb.stat().st_mtime_ns
    build_synthetic_dataset(cfg, log=msgs.append)
    assert "exists" in msgs[-1] and "nothing to do" in msgs[-1] and rgb.stat().st_mtime_ns == mtime
    other = SynthConfig(name="d", root=str(tmp_path), width=64, height=48, train=1, test=2, objects=(2,))
    with pytest.raises(BopkdError, match="built with other settings; pass --force"):
        build_synthetic_dataset(other)
    build_synthetic_dataset(other, force=True)
    assert len(BopDataset("d", tmp_path).im_ids("test", 0)) == 2
    # A folder bopkd did not make is never touched.
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("x")
    with pytest.raises(BopkdError, match="not made by bopkd synth"):
        build_synthetic_dataset(SynthConfig(name="foreign", root=str(tmp_path), train=0, test=1), force=True)
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "x"


def test_interrupted_build_resumes_at_the_first_unfinished_scene(tmp_path, monkeypatch):
    import bopkd.data.synth.builder as synth

    cfg = SynthConfig(
        name="r", root=str(tmp_path), width=64, height=48, train=4, test=0, images_per_scene=2, objects=(1, 2)
    )
    real = synth._write_scene
    calls = []

    def failing(maker, writer, cfg_, split, scene_dir, indices, tick):
        calls.append(scene_dir.name)
        if scene_dir.name == "000001":
            raise KeyboardInterrupt
        return real(maker, writer, cfg_, split, scene_dir, indices, tick)

    monkeypatch.setattr(synth, "_write_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        build_synthetic_dataset(cfg)
    assert not (tmp_path / "r" / DESCRIPTOR_NAME).exists()
    first = (tmp_path / "r/train_pbr/000000/scene_gt.json").read_bytes()
    calls.clear()
    monkeypatch.setattr(synth, "_write_scene", real)
    seen = []
    monkeypatch.setattr(synth, "_write_scene", lambda *a: (seen.append(a[4].name), real(*a))[1])
    build_synthetic_dataset(cfg)
    assert seen == ["000001"]  # scene 0 was complete and kept
    assert (tmp_path / "r/train_pbr/000000/scene_gt.json").read_bytes() == first
    assert (tmp_path / "r" / DESCRIPTOR_NAME).exists()


def test_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    from bopkd.cli import main

    monkeypatch.setattr(sys, "argv", ["bopkd", "synth", "x", "--root", str(tmp_path), "--size", "big"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--size 'big'" in err and "Traceback" not in err


def test_cli_builds(monkeypatch, capsys, tmp_path):
    from bopkd.cli import main

    args = ["bopkd", "synth", "c", "--root", str(tmp_path), "--size", "64x48", "--train", "1", "--test", "1"]
    monkeypatch.setattr(sys, "argv", [*args, "--objects", "5", "--viewpoints", "free", "--seed", "2"])
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    assert "wrote" in capsys.readouterr().out
    assert BopDataset("c", tmp_path).spec.obj_ids == (5,)


def test_models_of_an_existing_dataset(lmo_sample_root, tmp_path):
    src = lmo_sample_root / "lmo" / "models"
    out = build_synthetic_dataset(
        SynthConfig(
            name="lm2",
            root=str(tmp_path),
            models=str(src),
            objects=(1, 5, 10),
            width=160,
            height=120,
            train=2,
            test=2,
        )
    )
    for sub in ("models", "models_eval"):
        for o in (1, 5, 10):
            assert (out / sub / f"obj_{o:06d}.ply").read_bytes() == (
                src.parent / sub / f"obj_{o:06d}.ply"
            ).read_bytes()
        info = load_json(out / sub / "models_info.json")
        ref = load_json(src.parent / sub / "models_info.json")
        assert info == {k: ref[k] for k in ("1", "5", "10")}
    ds = BopDataset("lm2", tmp_path)
    assert ds.spec.obj_ids == (1, 5, 10) and 10 in ds.spec.symmetric_obj_ids
    r = _disk_renderer(ds)
    for split, scene, im in _images(ds):
        gts = ds.scene_gt(split, scene)[im]
        assert {g.obj_id for g in gts} <= {1, 5, 10}
        out_r = r.render(ds.scene_camera(split, scene)[im].K, [(g.obj_id, g.R, g.t) for g in gts])
        scale = ds.scene_camera(split, scene)[im].depth_scale
        assert np.abs(ds.depth(split, scene, im) - out_r.depth).max() <= 0.5 * scale + 1e-9
