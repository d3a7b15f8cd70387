"""WDR's 3D object-space keypoint loss.

Hu et al., "Wide-Depth-Range 6D Object Pose Estimation in Space", CVPR 2021, Sec. 3.3 and
``PoseLoss.ObjectSpaceLoss`` in cvlab-epfl/wide-depth-range-pose (also used by Guo et al., CVPR 2023):
a predicted 2D keypoint ``u`` defines the camera ray ``b = K^-1 [u, 1]``; the GT 3D keypoint ``X``
(camera frame, mm) is projected orthogonally onto that ray, ``p = b b^T X / (b^T b)``; the loss is the
smooth-L1 distance between ``p`` and ``X``, both divided by the object's diameter d, with the quadratic
zone ``beta = 0.02`` (the reference code scales by 50 = 1 / 0.02 before a unit smooth-L1 and divides
by 50 after, which is exactly ``smooth_l1(p/d, X/d, beta=0.02)``), averaged over the 8 x 3 coordinates of
a cell. The loss is 0 exactly when every predicted keypoint lies on the projection of its GT corner,
and it weighs a pixel error by the depth of the object, so near and far objects count alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bopkd.geometry.projection import backproject_rays_torch


def ray_projection(kpts_2d: torch.Tensor, points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of camera-frame points onto the rays of 2D keypoints.

    Args:
        kpts_2d: (P, N, 2) px.
        points_cam: (P, N, 3) mm, camera frame.
        K: (P, 3, 3) intrinsics of the image the keypoints live in.

    Returns:
        (P, N, 3) mm: ``b (b . X) / (b . b)`` with ``b = K^-1 [u, v, 1]``.
    """
    b = backproject_rays_torch(kpts_2d, K)
    return b * ((b * points_cam).sum(-1, keepdim=True) / (b * b).sum(-1, keepdim=True))


def wdr_keypoint_loss(
    kpts_2d: torch.Tensor,
    points_cam: torch.Tensor,
    K: torch.Tensor,
    diameter: torch.Tensor,
    beta: float = 0.02,
) -> torch.Tensor:
    """Per-cell object-space loss.

    Args:
        kpts_2d: (P, 8, 2) predicted keypoints, px.
        points_cam: (P, 8, 3) GT 3D corners in the camera frame, mm.
        K: (P, 3, 3) intrinsics, px.
        diameter: (P,) object diameters, mm.
        beta: smooth-L1 transition, in diameters.

    Returns:
        (P,) loss of every cell (mean over its keypoints and coordinates).
    """
    p = ray_projection(kpts_2d, points_cam, K)
    d = diameter.to(p.dtype).view(-1, 1, 1)
    loss = F.smooth_l1_loss(p / d, points_cam / d, beta=beta, reduction="none")
    return loss.flatten(1).mean(1)
