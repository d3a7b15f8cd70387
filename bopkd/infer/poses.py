"""Poses from network outputs: decode confident cells, map their keypoints back to the original image,
solve EPnP + RANSAC against the 3D bounding box corners.

WDR / Guo et al. inference (``postprocess.py``): all keypoints of the selected cells of a class go into
one ``cv2.solvePnPRansac`` (EPnP, 5 px). When the network input was made from the original image by a
2D map ``A`` (crop / resize / rotation, original px -> input px, 3x3), keypoints are mapped back with
``A^-1`` and PnP uses the original intrinsics, as the reference code does with its ``bbox_trans``.
Score of a pose = the largest sigmoid score among its cells (the reference keeps the largest too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from bopkd.errors import BopkdError
from bopkd.geometry.pnp import solve_pnp
from bopkd.geometry.projection import apply_affine_2d
from bopkd.models.decode import Detections, decode
from bopkd.records import ObjectInfo

if TYPE_CHECKING:
    from bopkd.train.config import PredictConfig


@dataclass
class PoseEstimate:
    """One estimated pose.

    Attributes:
        obj_id: object id; cls: class index in the model.
        R: (3, 3) float64 model -> camera; t: (3,) float64 mm.
        score: largest sigmoid score of the cells used.
        n_cells: cells whose keypoints went into PnP; n_inliers: RANSAC inlier keypoints.
    """

    obj_id: int
    cls: int
    R: np.ndarray
    t: np.ndarray
    score: float
    n_cells: int
    n_inliers: int


def class_corners(obj_ids: Sequence[int], obj_infos: Mapping[int, ObjectInfo]) -> np.ndarray:
    """(C, 8, 3) mm bounding-box corners (``ObjectInfo.bbox_corners`` order) of each class."""
    missing = [o for o in obj_ids if int(o) not in obj_infos]
    if missing:
        raise BopkdError(
            f"models_info.json has no entry for object ids {missing}: use the dataset the model was trained on"
        )
    return np.stack([obj_infos[int(o)].bbox_corners() for o in obj_ids])


def poses_from_detections(
    dets: Mapping[int, Detections],
    corners_3d: np.ndarray,
    obj_ids: Sequence[int],
    K: np.ndarray,
    affine: np.ndarray | None = None,
    reproj_err: float = 5.0,
    pnp_iters: int = 100,
    seed: int = 0,
    refine: bool = False,
) -> list[PoseEstimate]:
    """Solve one pose per detected class of one image.

    Args:
        dets: class index -> detections (keypoints in input px), from :func:`decode`.
        corners_3d: (C, 8, 3) mm corners per class.
        obj_ids: class index -> object id.
        K: (3, 3) intrinsics of the image the poses refer to (the original image when ``affine`` is given).
        affine: (3, 3) original px -> input px, or None when K is the input image's.
    """
    out = []
    A_inv = None if affine is None else np.linalg.inv(np.asarray(affine, np.float64))
    for c, d in sorted(dets.items()):
        if len(d) == 0:
            continue
        uv = d.kpts.detach().cpu().double().numpy().reshape(-1, 2)
        if A_inv is not None:
            uv = apply_affine_2d(uv, A_inv)
        pts = np.tile(np.asarray(corners_3d[c], np.float64), (len(d), 1))
        res = solve_pnp(pts, uv, K, reproj_err=reproj_err, iters=pnp_iters, seed=seed, refine=refine)
        if res is None:
            continue
        out.append(
            PoseEstimate(
                obj_id=int(obj_ids[c]),
                cls=int(c),
                R=res.R,
                t=res.t,
                score=float(d.scores.max()),
                n_cells=len(d),
                n_inliers=res.n_inliers,
            )
        )
    return out


@torch.no_grad()
def predict_poses(
    model: torch.nn.Module,
    images: torch.Tensor,
    K: torch.Tensor | np.ndarray,
    obj_infos: Mapping[int, ObjectInfo],
    affines: torch.Tensor | np.ndarray | None = None,
    score_th: float = 0.1,
    num_cells: int = 10,
    topk_per_level: int | None = None,
    reproj_err: float = 5.0,
    pnp_iters: int = 100,
    seed: int = 0,
    refine: bool = False,
    outputs: dict | None = None,
) -> list[list[PoseEstimate]]:
    """Run the model (eval mode) and estimate the poses of every image.

    Args:
        model: a :class:`~bopkd.models.posenet.PoseNet` (its ``obj_ids`` name the classes).
        images: (B, 3, H, W) normalised network inputs.
        K: (B, 3, 3) (or (3, 3) for all) intrinsics of the original images when ``affines`` is given,
            else of the inputs.
        obj_infos: obj_id -> ObjectInfo (models_info) for the 3D corners.
        affines: (B, 3, 3) original px -> input px maps (``meta["affine"]``), or None.
        outputs: precomputed outputs of ``model(images)`` (then the model is not run).

    Returns:
        per image, the list of :class:`PoseEstimate` (at most one per class).
    """
    if outputs is None:
        was_training = model.training
        model.eval()
        try:
            outputs = model(images)
        finally:
            model.train(was_training)
    dets = decode(outputs, score_th=score_th, num_cells=num_cells, topk_per_level=topk_per_level)
    obj_ids = list(model.obj_ids)
    corners = class_corners(obj_ids, obj_infos)
    Ks = torch.as_tensor(K).double().cpu().numpy()
    if Ks.ndim == 2:
        Ks = np.broadcast_to(Ks, (len(dets), 3, 3))
    As = None if affines is None else torch.as_tensor(affines).double().cpu().numpy()
    return [
        poses_from_detections(
            d, corners, obj_ids, Ks[b], None if As is None else As[b], reproj_err, pnp_iters, seed, refine
        )
        for b, d in enumerate(dets)
    ]


def estimate_poses(
    outputs: dict,
    metas: list[dict],
    targets: dict[tuple[int, int], set[int]],
    obj_ids: list[int],
    corners: np.ndarray,
    p: PredictConfig,
    seed: int = 0,
    positive_lambda: float = 1.0,
) -> list[list[PoseEstimate]]:
    """Poses of one batch of network outputs: decode the confident cells, then EPnP-RANSAC per class.

    Only the target objects of each image are solved; a crop (``meta["obj_id"]``) answers for its own
    object only (its class is known from its box, as in WDRNet+'s zoom-in inference).

    Args:
        outputs: the network's outputs for a batch of B inputs (float32 ``cls_logits`` and ``kpts``, the
            layout of ``bopkd/models/README_CONTRACT.md``).
        metas: the B meta dicts (``K_orig`` (3, 3) of the original image, ``affine`` (3, 3) original px ->
            input px, ``scene_id``, ``im_id``[, ``obj_id`` of a crop]).
        targets: (scene_id, im_id) -> target object ids.
        obj_ids: class index -> object id; corners: (C, 8, 3) mm box corners per class.
        p: cell selection and PnP-RANSAC settings; seed: RANSAC seed; positive_lambda: sharpness of the
            level distribution of the selected cells (``loss.positive_lambda``; :func:`decode`).
    Returns:
        per input, a list of :class:`PoseEstimate`.
    """
    dets = decode(outputs, score_th=p.score_th, num_cells=p.num_cells, positive_lambda=positive_lambda)
    cls_of = {o: c for c, o in enumerate(obj_ids)}
    out = []
    for b, m in enumerate(metas):
        wanted = targets.get((int(m["scene_id"]), int(m["im_id"])), set())
        if "obj_id" in m:
            keep = {cls_of[int(m["obj_id"])]} if int(m["obj_id"]) in wanted else set()
        else:
            keep = {c for c, o in enumerate(obj_ids) if o in wanted}
        out.append(
            poses_from_detections(
                {c: d for c, d in dets[b].items() if c in keep},
                corners,
                obj_ids,
                m["K_orig"],
                m["affine"],
                reproj_err=p.reproj_err,
                pnp_iters=p.ransac_iters,
                seed=seed,
                refine=p.refine,
            )
        )
    return out
