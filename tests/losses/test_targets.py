"""Positive cell sampling: positives lie in the visible mask, about 10 per object, spread over levels by
object size as WDR's rule, the rest of the mask ignored, reproducible with a generator."""

from __future__ import annotations

import math

import torch

from bopkd.losses.targets import LABEL_BACKGROUND, LABEL_IGNORED, assign_targets
from bopkd.models.levels import level_quota, object_sizes
from bopkd.models.posenet import ModelConfig, PoseNet

H = W = 256


def _anchors(size=(H, W)):
    return PoseNet(ModelConfig(obj_ids=[1, 2, 3], backbone="tiny-cpu")).anchors(size)


def _obj(cls: int, box: tuple[int, int, int, int], size=(H, W)) -> dict:
    """An object whose visible mask is the rectangle box (x0, y0, x1, y1) and whose projected 3D box is it."""
    x0, y0, x1, y1 = box
    mask = torch.zeros(1, *size, dtype=torch.bool)
    mask[0, y0:y1, x0:x1] = True
    c2 = torch.tensor([[[x0 if i & 4 else x1, y0 if i & 2 else y1] for i in range(8)]], dtype=torch.float32)
    return {"cls": torch.tensor([cls]), "corners_2d": c2, "mask_visib": mask}


def _merge(*objs) -> dict:
    return {k: torch.cat([o[k] for o in objs]) for k in objs[0]}


def _check_in_mask(anchors, batch, asg):
    centers = anchors["centers"]
    for b, cell, obj in zip(asg["pos_batch"], asg["pos_cell"], asg["pos_obj"], strict=True):
        x, y = (int(math.floor(float(v))) for v in centers[cell])
        assert batch["objects"][int(b)]["mask_visib"][int(obj), y, x]


def test_level_quota_matches_the_formula():
    sizes = torch.tensor([64.0, 300.0])
    level_sizes = torch.tensor([32.0, 64.0, 128.0, 256.0, 512.0])
    got = level_quota(sizes, level_sizes, num=10, lam=1.0)
    for i, s in enumerate(sizes.tolist()):
        w = [math.exp(-((math.log2(s / a)) ** 2)) for a in level_sizes.tolist()]
        expected = [int(10 * v / sum(w) + 0.5) for v in w]
        assert got[i].tolist() == expected
    assert got[0].tolist() == [2, 6, 2, 0, 0]


def test_object_sizes_is_the_larger_box_side():
    c = torch.tensor([[[0.0, 0.0], [30.0, 5.0], [10.0, 50.0], [2.0, 2.0]] * 2])
    assert object_sizes(c).tolist() == [50.0]


def test_positives_inside_mask_about_ten_per_object_rest_ignored():
    anchors = _anchors()
    objs = [_merge(_obj(0, (20, 30, 120, 110)), _obj(2, (140, 150, 250, 250))), _obj(1, (60, 60, 100, 90))]
    batch = {"objects": objs}
    asg = assign_targets(anchors, batch, generator=torch.Generator().manual_seed(0))
    _check_in_mask(anchors, batch, asg)
    labels = asg["labels"]
    for b, o in enumerate(objs):
        for j in range(len(o["cls"])):
            n = int(((asg["pos_batch"] == b) & (asg["pos_obj"] == j)).sum())
            assert 8 <= n <= 12, n
        # positives carry their object's class
        pos = labels[b] >= 0
        assert (labels[b][pos] == o["cls"][asg["obj_index"][b][pos]]).all()
    # in-mask cells that were not drawn are ignored; cells outside every mask are background
    centers = anchors["centers"].floor().long()
    for b, o in enumerate(objs):
        inmask = o["mask_visib"][:, centers[:, 1], centers[:, 0]].any(0)
        assert (labels[b][~inmask] == LABEL_BACKGROUND).all()
        assert ((labels[b][inmask] >= 0) | (labels[b][inmask] == LABEL_IGNORED)).all()
        assert (labels[b][inmask] == LABEL_IGNORED).sum() > 0
    assert asg["num_pos"] == len(asg["pos_cell"]) == int((labels >= 0).sum())
    assert (asg["obj_index"][labels < 0] == -1).all()


def test_level_follows_object_size():
    anchors = _anchors()
    small = _obj(0, (100, 100, 130, 128))  # ~30 px: anchor 32 of level P3
    large = _obj(0, (10, 10, 250, 250))  # 240 px: anchors 128 / 256
    for obj, want in ((small, {0}), (large, {2, 3, 4})):
        asg = assign_targets(anchors, {"objects": [obj]}, generator=torch.Generator().manual_seed(1))
        levels = anchors["level"][asg["pos_cell"]]
        counts = torch.bincount(levels, minlength=5)
        top = set(torch.nonzero(counts == counts.max()).view(-1).tolist())
        assert top <= want, counts


def test_reproducible_with_generator_and_random_without():
    anchors = _anchors()
    batch = {"objects": [_obj(1, (20, 20, 200, 180))]}
    a = assign_targets(anchors, batch, generator=torch.Generator().manual_seed(3))
    b = assign_targets(anchors, batch, generator=torch.Generator().manual_seed(3))
    c = assign_targets(anchors, batch, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])


def test_accepts_outputs_dict_and_handles_empty_images_and_padding():
    # a 100x100 input is padded to 128x128 by the network: cells centred outside the image are never used
    size = (100, 100)
    anchors = _anchors(size)
    full = _obj(0, (0, 0, 100, 100), size)
    empty = {
        "cls": torch.zeros(0, dtype=torch.long),
        "corners_2d": torch.zeros(0, 8, 2),
        "mask_visib": torch.zeros(0, *size, dtype=torch.bool),
    }
    asg = assign_targets({"anchors": anchors, "kpts": None}, {"objects": [full, empty]})
    outside = (anchors["centers"] >= 100).any(1)
    assert (asg["labels"][0][outside] == LABEL_BACKGROUND).all()
    assert (asg["labels"][0][~outside] != LABEL_BACKGROUND).all()
    assert (asg["labels"][1] == LABEL_BACKGROUND).all()
    assert int((asg["pos_batch"] == 1).sum()) == 0
    assert asg["num_pos"] > 0


def test_cell_drawn_by_two_objects_goes_to_one():
    anchors = _anchors()
    o = _merge(_obj(0, (40, 40, 80, 80)), _obj(1, (40, 40, 80, 80)))  # identical masks
    asg = assign_targets(anchors, {"objects": [o]}, generator=torch.Generator().manual_seed(0))
    assert len(set(asg["pos_cell"].tolist())) == asg["num_pos"]  # a cell is positive once
    assert set(asg["pos_obj"].tolist()) <= {0, 1}
