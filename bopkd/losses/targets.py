"""Positive cell sampling (target assignment) for the pose network.

WDR (Hu et al., CVPR 2021, ``PoseLoss.prepare_targets`` in cvlab-epfl/wide-depth-range-pose; same in
GUOShuxuan/kd-6d-pose-adlp): a cell is a candidate for an object when the pixel under its centre lies
in the object's visible mask. About ``positive_num`` (10) positives per object are spread over the
levels by comparing the object's size ``S`` (the larger side of the box of its projected 3D bounding
box corners) with each level's anchor size ``a_l``::

    d_l = |log2(S / a_l)|,   n_l = round(positive_num * exp(-lambda d_l^2) / sum_k exp(-lambda d_k^2))

and ``n_l`` candidates are drawn at random without replacement on level l (fewer if the level has
fewer). Candidates of an object that are not drawn are *ignored* (excluded from the focal loss); cells
outside every visible mask are background. A cell drawn by two objects goes to the first one.

Vectorised: one random key per (object, cell), ranked within each level; no per-pixel Python loop
(loops only over images and levels).
"""

from __future__ import annotations

import torch

from bopkd.models.levels import level_quota, object_sizes

LABEL_BACKGROUND = -1
LABEL_IGNORED = -2


def _anchors_of(outputs_or_anchors: dict) -> dict:
    return outputs_or_anchors.get("anchors", outputs_or_anchors)


def assign_targets(
    outputs_or_anchors: dict, batch: dict, cfg=None, generator: torch.Generator | None = None
) -> dict:
    """Choose the positive cells of every image.

    Args:
        outputs_or_anchors: the network's outputs (with ``"anchors"``) or the anchors dict of
            :meth:`bopkd.models.posenet.PoseNet.anchors`.
        batch: the training batch; uses ``objects[b]`` ``cls`` (n,), ``corners_2d`` (n, 8, 2) px and
            ``mask_visib`` (n, H, W) bool, all in the network input image.
        cfg: anything with ``positive_num`` and ``positive_lambda`` (a ``LossConfig``); None = 10 and 1.0.
        generator: torch random generator (CPU) for reproducible sampling.

    Returns:
        dict with
        ``labels`` (B, A) long: class index of a positive, -1 background, -2 ignored;
        ``obj_index`` (B, A) long: index into ``batch["objects"][b]`` of a positive's object, else -1;
        ``pos_batch``, ``pos_cell``, ``pos_cls``, ``pos_obj`` (P,) long: the positives, image by image;
        ``num_pos`` int.
    """
    num = int(getattr(cfg, "positive_num", 10))
    lam = float(getattr(cfg, "positive_lambda", 1.0))
    anchors = _anchors_of(outputs_or_anchors)
    centers = anchors["centers"]
    device = centers.device
    starts = anchors["level_start"]
    L = len(starts) - 1
    A = centers.shape[0]
    level_sizes = anchors["sizes"][torch.tensor(starts[:-1], device=device)]
    objects = batch["objects"]
    B = len(objects)
    labels = torch.full((B, A), LABEL_BACKGROUND, dtype=torch.long, device=device)
    obj_index = torch.full((B, A), -1, dtype=torch.long, device=device)
    pb, pc, pk, po = [], [], [], []
    for b, objs in enumerate(objects):
        masks = objs["mask_visib"]
        n = int(masks.shape[0]) if masks.dim() == 3 else 0
        if n == 0:
            continue
        masks = masks.to(device=device, dtype=torch.bool)
        H, W = masks.shape[-2:]
        px = torch.floor(centers[:, 0]).long()
        py = torch.floor(centers[:, 1]).long()
        inside = (px >= 0) & (px < W) & (py >= 0) & (py < H)
        inmask = masks[:, py.clamp(0, H - 1), px.clamp(0, W - 1)] & inside.unsqueeze(0)  # (n, A)
        quota = level_quota(object_sizes(objs["corners_2d"].to(device)), level_sizes, num, lam)  # (n, L)
        keys = torch.rand((n, A), generator=generator).to(device)
        keys = torch.where(inmask, keys, torch.full_like(keys, 2.0))
        selected = torch.zeros((n, A), dtype=torch.bool, device=device)
        for lv in range(L):
            s, e = starts[lv], starts[lv + 1]
            k = keys[:, s:e]
            order = k.argsort(dim=1)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(e - s, device=device).expand(n, -1).contiguous())
            selected[:, s:e] = (rank < quota[:, lv : lv + 1]) & (k < 2.0)
        chosen = selected.any(dim=0)
        first = selected.to(torch.uint8).argmax(dim=0)  # first object that drew the cell
        cls = objs["cls"].to(device=device, dtype=torch.long)
        labels[b, inmask.any(dim=0)] = LABEL_IGNORED
        labels[b, chosen] = cls[first[chosen]]
        obj_index[b, chosen] = first[chosen]
        cells = torch.nonzero(chosen).view(-1)
        pb.append(torch.full_like(cells, b))
        pc.append(cells)
        pk.append(cls[first[cells]])
        po.append(first[cells])
    empty = torch.zeros(0, dtype=torch.long, device=device)
    cat = lambda xs: torch.cat(xs) if xs else empty  # noqa: E731
    pos_cell = cat(pc)
    return {
        "labels": labels,
        "obj_index": obj_index,
        "pos_batch": cat(pb),
        "pos_cell": pos_cell,
        "pos_cls": cat(pk),
        "pos_obj": cat(po),
        "num_pos": int(pos_cell.numel()),
    }


__all__ = ["LABEL_BACKGROUND", "LABEL_IGNORED", "assign_targets"]
