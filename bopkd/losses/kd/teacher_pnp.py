"""The reference's test of a teacher set: does PnP-RANSAC find a pose from the teacher's keypoints?

Guo et al.'s code (GUOShuxuan/kd-6d-pose-adlp, ``postprocess/postprocess_kd.py::pose_infer_ml``) runs
``cv2.solvePnPRansac`` (EPnP, reprojection threshold 5 px in the original image) on the 8 keypoints
of every selected teacher cell against the object's 3D box corners, and drops the teacher's
predictions of an image when the solver fails or returns NaN, so that image takes no part in the OT
loss. :func:`teacher_pnp_keep` reproduces that test per instance.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from bopkd.losses.kd.gather import Instances, normalise_points, orig_normalisation


def _original_px(batch: dict, img: torch.Tensor, pts: torch.Tensor) -> np.ndarray:
    """(M, 8, 2) input-px points of images ``img`` -> original-image px (float64 numpy)."""
    M = orig_normalisation(batch, torch.device("cpu"), torch.float64)
    xn = normalise_points(pts.detach().to("cpu", torch.float64), img.cpu(), M)
    metas = batch.get("meta")
    if metas is None:
        H, W = batch["images"].shape[-2:]
        size = torch.tensor([[float(W), float(H)]], dtype=torch.float64).repeat(len(batch["objects"]), 1)
    else:
        size = torch.stack([torch.as_tensor(m["orig_size"], dtype=torch.float64).reshape(2) for m in metas])
    return (xn * size[img.cpu()][:, None, :]).numpy()


def _original_K(batch: dict, b: int) -> np.ndarray:
    metas = batch.get("meta")
    if metas is not None and "K_orig" in metas[b]:
        return np.asarray(metas[b]["K_orig"], dtype=np.float64).reshape(3, 3)
    return batch["K"][b].detach().cpu().double().numpy().reshape(3, 3)


def teacher_pnp_keep(batch: dict, inst: Instances, g: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Which teacher cells belong to an instance whose teacher set gives a PnP-RANSAC pose.

    Args:
        batch: the collated batch (``objects[b]["corners_3d"]`` (n, 8, 3) mm, ``meta`` with ``affine``,
            ``orig_size`` and ``K_orig``).
        inst: the batch's instances.
        g: (M,) long, instance of each selected teacher cell.
        pts: (M, 8, 2) the cells' keypoints of the instance's class, input px.
    Returns:
        (M,) bool on ``g``'s device.
    """
    keep = torch.zeros(g.shape[0], dtype=torch.bool)
    if g.numel() == 0:
        return keep.to(g.device)
    corners = torch.cat([torch.as_tensor(o["corners_3d"]).reshape(-1, 8, 3) for o in batch["objects"]])
    corners = corners.detach().cpu().double().numpy()
    img = inst.img[g]
    px = _original_px(batch, img, pts)
    g_cpu, img_cpu = g.cpu(), img.cpu()
    for gi in torch.unique(g_cpu).tolist():  # instances with teacher cells (a handful per batch)
        sel = (g_cpu == gi).nonzero().view(-1)
        obj = np.ascontiguousarray(np.tile(corners[gi], (int(sel.numel()), 1)))
        uv = np.ascontiguousarray(px[sel.numpy()].reshape(-1, 2))
        K = _original_K(batch, int(img_cpu[sel[0]]))
        ok, rvec, tvec, _ = cv2.solvePnPRansac(
            obj, uv, K, None, flags=cv2.SOLVEPNP_EPNP, reprojectionError=5.0
        )
        if ok and np.isfinite(rvec).all() and np.isfinite(tvec).all():
            keep[sel] = True
    return keep.to(g.device)
