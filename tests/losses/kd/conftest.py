"""Hand-made network outputs and batches for the distillation tests (shapes of the model contract).

``kd_synth`` gives factories:

* ``anchors(H, W, strides)``: the anchors dict of ``PoseNet.anchors`` (centres at (j + 0.5) s, size 4 s,
  ``level_start`` with A at the end);
* ``outputs(B, H, W, strides, C, seed)``: ``cls_logits`` (B, A, C) at -8 (score 3e-4, below any
  threshold), ``kpts`` (B, A, C, 8, 2) near the cell centres, FPN-like ``features`` and ``backbone_features``;
* ``batch(B, H, W, boxes)``: objects with box-shaped visible masks, corners and an original-image
  affine/size per image;
* ``assignment(A, cells)``: an ``assign_targets``-like dict from explicit (b, cell, cls, obj) tuples.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch


def make_anchors(H: int, W: int, strides=(8, 16)) -> dict:
    centers, sizes, level, starts, shapes = [], [], [], [0], []
    for li, s in enumerate(strides):
        h, w = math.ceil(H / s), math.ceil(W / s)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
        )
        centers.append(torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], 1))
        sizes.append(torch.full((h * w,), 4.0 * s))
        level.append(torch.full((h * w,), li, dtype=torch.long))
        starts.append(starts[-1] + h * w)
        shapes.append((h, w))
    return {
        "centers": torch.cat(centers),
        "sizes": torch.cat(sizes),
        "level": torch.cat(level),
        "strides": list(strides),
        "shapes": shapes,
        "levels": [int(round(math.log2(s))) for s in strides],
        "level_start": starts,
    }


def make_outputs(B=2, H=64, W=64, strides=(8, 16), C=2, seed=0, F=8, noise=3.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    an = make_anchors(H, W, strides)
    A = an["centers"].shape[0]
    kpts = an["centers"][None, :, None, None, :] + noise * torch.randn(B, A, C, 8, 2, generator=g)
    feats = [torch.randn(B, F, h, w, generator=g) for (h, w) in an["shapes"]]
    return {
        "cls_logits": torch.full((B, A, C), -8.0),
        "kpts": kpts,
        "features": feats,
        "backbone_features": [f.clone() for f in feats],
        "anchors": an,
        "image_size": (H, W),
    }


def make_batch(B=2, H=64, W=64, boxes=None, affines=None, orig_size=(128, 96)) -> dict:
    """``boxes[b]`` = list of (cls, x0, y0, x1, y1) input-px boxes (visible mask = the box)."""
    boxes = boxes if boxes is not None else [[(0, 8, 8, 40, 40)] for _ in range(B)]
    objects, metas = [], []
    for b in range(B):
        items = boxes[b]
        n = len(items)
        masks = torch.zeros(n, H, W, dtype=torch.bool)
        c2 = torch.zeros(n, 8, 2)
        for i, (_, x0, y0, x1, y1) in enumerate(items):
            masks[i, y0:y1, x0:x1] = True
            c2[i] = torch.tensor([[x0, y0], [x1, y0], [x0, y1], [x1, y1]] * 2, dtype=torch.float32)
        objects.append(
            {
                "cls": torch.tensor([it[0] for it in items], dtype=torch.long),
                "obj_id": torch.tensor([it[0] + 1 for it in items], dtype=torch.long),
                "R": torch.eye(3).repeat(n, 1, 1),
                "t": torch.tensor([[0.0, 0.0, 500.0]]).repeat(n, 1),
                "corners_3d": torch.randn(n, 8, 3) * 30,
                "corners_2d": c2,
                "mask_visib": masks,
                "diameter": torch.full((n,), 100.0),
            }
        )
        A = np.eye(3) if affines is None else np.asarray(affines[b], dtype=np.float64)
        metas.append({"scene_id": 1, "im_id": b, "affine": A, "K_orig": np.eye(3), "orig_size": orig_size})
    return {
        "images": torch.zeros(B, 3, H, W),
        "K": torch.eye(3).repeat(B, 1, 1),
        "objects": objects,
        "meta": metas,
    }


def make_assignment(B: int, A: int, cells) -> dict:
    """cells: iterable of (b, cell, cls, obj)."""
    cells = list(cells)
    t = torch.tensor(cells, dtype=torch.long).reshape(-1, 4)
    labels = torch.full((B, A), -1, dtype=torch.long)
    obj_index = torch.full((B, A), -1, dtype=torch.long)
    labels[t[:, 0], t[:, 1]] = t[:, 2]
    obj_index[t[:, 0], t[:, 1]] = t[:, 3]
    return {
        "labels": labels,
        "obj_index": obj_index,
        "pos_batch": t[:, 0].clone(),
        "pos_cell": t[:, 1].clone(),
        "pos_cls": t[:, 2].clone(),
        "pos_obj": t[:, 3].clone(),
        "num_pos": int(t.shape[0]),
    }


def cells_in_box(anchors: dict, x0, y0, x1, y1) -> list[int]:
    c = anchors["centers"]
    inside = (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1)
    return torch.nonzero(inside).view(-1).tolist()


@pytest.fixture
def kd_synth() -> SimpleNamespace:
    return SimpleNamespace(
        anchors=make_anchors,
        outputs=make_outputs,
        batch=make_batch,
        assignment=make_assignment,
        cells_in_box=cells_in_box,
    )
