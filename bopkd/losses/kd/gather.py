"""Vectorised gathering of local predictions for distillation (no Python loop over images/objects).

Shared by the prediction-level distillation methods (:mod:`~bopkd.losses.kd.pred`,
:mod:`~bopkd.losses.kd.ot_kd`). Everything here works on index tensors on the training device:

* the batch's objects are flattened to ``G`` instances (``obj_img`` (G,), ``obj_cls`` (G,)), an
  instance ``g`` being object ``o`` of image ``b`` with ``g = offset[b] + o``;
* keypoints are mapped from input-image px back to original-image px with the inverse of the
  augmentation's affine (``meta["affine"]``: original px -> input px) and divided by the original
  image's width and height (``meta["orig_size"]`` = (W, H)), as the keypoint sets of Guo et al.
  (CVPR 2023, ``losses/loss_libs.py::kd_loss_2d`` of GUOShuxuan/kd-6d-pose-adlp) are normalised;
* the teacher's confident cells of an instance are chosen as at inference (WDR's multi-level
  selection, Hu et al. CVPR 2021 / ``postprocess_kd.py::pose_infer_ml`` of the reference code): cells
  whose score exceeds a threshold, restricted to the instance (cell centre inside its visible mask),
  then per pyramid level the ``n_l`` most confident with
  ``n_l = round(num_cells * exp(-lambda d_l^2) / sum_l exp(-lambda d_l^2))``,
  ``d_l = log2(box / anchor_size_l)`` and ``box`` the larger side of the 2D box of the keypoints
  predicted at the most confident cell;
* variable-size point sets are packed into zero-padded (G, N_max, ...) tensors (zero weight = padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bopkd.errors import BopkdError
from bopkd.models.levels import level_quota


@dataclass
class Instances:
    """The batch's object instances flattened over images.

    Attributes:
        img: (G,) long, image index of each instance.
        cls: (G,) long, class index.
        offset: (B,) long, index of the first instance of each image.
        count: (B,) long, instances per image.
    """

    img: torch.Tensor
    cls: torch.Tensor
    offset: torch.Tensor
    count: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.img.shape[0])


def flatten_instances(batch: dict, device: torch.device) -> Instances:
    """Flatten ``batch["objects"]`` (list of B dicts with ``cls`` (n,)) into :class:`Instances`."""
    objs = batch["objects"]
    counts = torch.tensor([int(o["cls"].shape[0]) for o in objs], dtype=torch.long)
    cls = (
        torch.cat([torch.as_tensor(o["cls"]).long().reshape(-1) for o in objs])
        if objs
        else torch.zeros(0, dtype=torch.long)
    )
    img = torch.repeat_interleave(torch.arange(len(objs)), counts)
    offset = torch.cumsum(counts, 0) - counts
    return Instances(img.to(device), cls.to(device), offset.to(device), counts.to(device))


def orig_normalisation(
    batch: dict, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the map from input px to normalised original-image coordinates.

    Returns ``M`` (B, 2, 3) with ``u_norm = M[:, :, :2] @ u_input + M[:, :, 2]``: the inverse of
    ``meta["affine"]`` (original px -> input px) followed by division by ``meta["orig_size"]`` (W, H).
    A batch without ``meta``/``affine`` uses the identity and the input size.
    """
    metas = batch.get("meta")
    B = int(batch["images"].shape[0])
    H, W = batch["images"].shape[-2:]
    A = torch.eye(3, dtype=torch.float64).repeat(B, 1, 1)
    size = torch.tensor([[float(W), float(H)]], dtype=torch.float64).repeat(B, 1)
    if metas is not None:
        if "affine" in batch and torch.is_tensor(batch["affine"]):
            A = batch["affine"].detach().to("cpu", torch.float64).reshape(B, 3, 3)
        else:
            A = torch.stack(
                [
                    torch.as_tensor(m["affine"], dtype=torch.float64).reshape(3, 3)
                    if "affine" in m
                    else torch.eye(3, dtype=torch.float64)
                    for m in metas
                ]
            )
        size = torch.stack(
            [
                torch.as_tensor(m["orig_size"], dtype=torch.float64).reshape(2)
                if "orig_size" in m
                else size[0]
                for m in metas
            ]
        )
    Ainv = torch.linalg.inv(A)[:, :2, :]  # (B, 2, 3)
    if not torch.isfinite(Ainv).all() or (size <= 0).any():
        raise BopkdError(
            "a batch's meta has a singular 'affine' or a non-positive 'orig_size': check the data loader's augmentation"
        )
    M = Ainv / size[:, :, None]
    return M.to(device=device, dtype=dtype)


def normalise_points(pts: torch.Tensor, img: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Map input-px points to normalised original-image coordinates.

    Args:
        pts: (P, ..., 2) input px.
        img: (P,) long, image of each row.
        M: (B, 2, 3) from :func:`orig_normalisation`.
    Returns: (P, ..., 2), dimensionless (x / W_orig, y / H_orig).
    """
    m = M[img]  # (P, 2, 3)
    shape = pts.shape
    inner = 1
    for d in shape[1:-1]:
        inner *= int(d)
    flat = pts.reshape(shape[0], inner, 2)
    out = torch.einsum("pij,pnj->pni", m[:, :, :2], flat) + m[:, None, :, 2]
    return out.reshape(shape)


def pack(group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Slots of items in their groups for packing into a padded tensor.

    Args:
        group: (P,) long, group of each item (0..n_groups-1), any order.
    Returns:
        slot (P,) long (position of each item within its group, in input order), counts (n_groups,) long,
        n_max (int, the largest group size, at least 1).
    """
    counts = torch.bincount(group, minlength=n_groups)
    if group.numel() == 0:
        return group.clone(), counts, 1
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot_sorted = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    slot = torch.empty_like(group)
    slot[order] = slot_sorted
    return slot, counts, max(int(counts.max()), 1)


def scatter_padded(
    values: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, n_groups: int, n_max: int
) -> torch.Tensor:
    """Place ``values`` (P, ...) at ``[group, slot]`` of a zero tensor (n_groups, n_max, ...) (differentiable)."""
    out = values.new_zeros((n_groups, n_max, *values.shape[1:]))
    return out.index_put((group, slot), values)


def instance_region(
    batch: dict, inst: Instances, centers: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """(G, A) bool: whether each cell's centre lies inside the instance's visible mask.

    Args:
        centers: (A, 2) cell centres, input px (x, y).
        image_size: (H, W) of the input (centres beyond it, e.g. padding, are outside).
    """
    G, A = inst.n, centers.shape[0]
    device = centers.device
    if G == 0:
        return torch.zeros(0, A, dtype=torch.bool, device=device)
    masks = torch.cat(
        [torch.as_tensor(o["mask_visib"]).to(device=device, dtype=torch.bool) for o in batch["objects"]]
    )
    Hm, Wm = masks.shape[-2:]
    H, W = image_size
    x = torch.floor(centers[:, 0]).long()
    y = torch.floor(centers[:, 1]).long()
    inside = (x >= 0) & (y >= 0) & (x < min(W, Wm)) & (y < min(H, Hm))
    xi = x.clamp(0, Wm - 1)
    yi = y.clamp(0, Hm - 1)
    return masks[:, yi, xi] & inside[None, :]


def level_bounds(anchors: dict) -> list[int]:
    """First cell of every level followed by A (``level_start`` with or without the trailing A)."""
    L = len(anchors["strides"])
    A = int(anchors["centers"].shape[0])
    starts = [int(v) for v in anchors["level_start"]][:L]
    return [*starts, A]


def level_anchor_sizes(anchors: dict) -> torch.Tensor:
    """(L,) anchor size (px) of each pyramid level, from an anchors dict (``sizes``, ``level_start``)."""
    starts = torch.tensor(level_bounds(anchors)[:-1], device=anchors["sizes"].device, dtype=torch.long)
    return anchors["sizes"][starts].float()


def select_teacher_cells(
    t_logits: torch.Tensor,
    t_kpts: torch.Tensor,
    anchors: dict,
    inst: Instances,
    region: torch.Tensor | None,
    score_th: float,
    num_cells: int,
    positive_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's confident cells of every instance, chosen as at inference.

    Args:
        t_logits: (B, A, C) teacher classification logits.
        t_kpts: (B, A, C, 8, 2) teacher keypoints, input px.
        anchors: the teacher's anchors dict (``sizes``, ``level_start``, ``shapes``).
        inst: the instances (class of each decides the score channel).
        region: (G, A) bool cells allowed for each instance, or None (all cells).
        score_th: minimum sigmoid score (exclusive), 0.1 at inference.
        num_cells, positive_lambda: WDR's per-level cell budget
            (:func:`bopkd.models.levels.level_quota`, the rule of the positive sampling).
    Returns:
        g (M,) instance index, cell (M,) cell index, score (M,) teacher sigmoid score (detached).
    """
    device = t_logits.device
    G = inst.n
    A = t_logits.shape[1]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if G == 0:
        return empty, empty, t_logits.new_zeros(0)
    with torch.no_grad():
        cells = torch.arange(A, device=device)
        s = torch.sigmoid(t_logits[inst.img[:, None], cells[None, :], inst.cls[:, None]].float())  # (G, A)
        cand = s > score_th
        if region is not None:
            cand &= region
        sc = torch.where(cand, s, torch.full_like(s, -1.0))
        best = sc.argmax(1)
        k = t_kpts[inst.img, best, inst.cls].float()  # (G, 8, 2)
        box = (k.amax(1) - k.amin(1)).amax(1)  # (G,)
        nk = level_quota(box, level_anchor_sizes(anchors), num_cells, positive_lambda)  # (G, L)
        starts = level_bounds(anchors)
        gs, cs = [], []
        for lv in range(len(starts) - 1):  # pyramid levels (at most a handful), not images or objects
            a0, a1 = int(starts[lv]), int(starts[lv + 1])
            kmax = min(int(nk[:, lv].max()) if G else 0, a1 - a0)
            if kmax <= 0:
                continue
            vals, idx = sc[:, a0:a1].topk(kmax, dim=1)  # (G, kmax)
            keep = (torch.arange(kmax, device=device)[None, :] < nk[:, lv : lv + 1]) & (vals > score_th)
            gi, ri = keep.nonzero(as_tuple=True)
            gs.append(gi)
            cs.append(idx[gi, ri] + a0)
        if not gs:
            return empty, empty, t_logits.new_zeros(0)
        g = torch.cat(gs)
        c = torch.cat(cs)
        return g, c, s[g, c]


def grid_match(student_anchors: dict, teacher_anchors: dict) -> torch.Tensor:
    """(A_s,) long: the teacher cell at the same position on the level with the same stride, or -1.

    Student and teacher may have different pyramid levels (matched by stride) and, when their inputs are
    padded to different multiples (right/bottom zero padding, e.g. 16 for darknet-tiny, 32 for darknet53),
    grids of different sizes at one stride: cell (i, j) has the same centre ((j + 0.5) s, (i + 0.5) s) in
    both, so cells are matched by (i, j) where both grids have it.
    """
    s_strides, t_strides = list(student_anchors["strides"]), list(teacher_anchors["strides"])
    s_shapes = [tuple(int(v) for v in x) for x in student_anchors["shapes"]]
    t_shapes = [tuple(int(v) for v in x) for x in teacher_anchors["shapes"]]
    s_start, t_start = list(student_anchors["level_start"]), list(teacher_anchors["level_start"])
    A_s = int(student_anchors["centers"].shape[0])
    out = torch.full((A_s,), -1, dtype=torch.long)
    for ls, (st, (hs, ws)) in enumerate(zip(s_strides, s_shapes, strict=True)):
        for lt, (tt, (ht, wt)) in enumerate(zip(t_strides, t_shapes, strict=True)):
            if st != tt:
                continue
            i = torch.arange(hs)[:, None].expand(hs, ws)
            j = torch.arange(ws)[None, :].expand(hs, ws)
            ok = (i < ht) & (j < wt)
            out[int(s_start[ls]) + (i * ws + j)[ok]] = int(t_start[lt]) + (i * wt + j)[ok]
    return out.to(student_anchors["centers"].device)
