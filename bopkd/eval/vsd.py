"""Visible Surface Discrepancy (VSD) with BOP'19 visibility masks.

Definition: Hodan et al., "On Evaluation of 6D Object Pose Estimation", ECCVW 2016 (visibility masks,
eq. 14), and Hodan, Michel et al., "BOP: Benchmark for 6D Object Pose Estimation", ECCV 2018, Sec. 2.2
(VSD with the step cost), as implemented in ``bop_toolkit_lib/pose_error.py: vsd`` with
``bop_toolkit_lib/visibility.py`` (``visib_mode="bop19"``) and ``misc.depth_im_to_dist_im_fast``::

    dist(I)  = sqrt((X)^2 + (Y)^2 + Z^2) per pixel, X = (x - cx) / fx * Z, Y = (y - cy) / fy * Z
               (x, y the integer pixel coordinates, Z the depth in mm): depth -> distance images
    V_g      = { p : D_g(p) > 0 and (D_g(p) - D_I(p) <= delta or D_I(p) = 0) }      (BOP'19 mode)
    V_e      = { p : D_e(p) > 0 and (D_e(p) - D_I(p) <= delta or D_I(p) = 0) } | (V_g & {D_e > 0})
    VSD_tau  = ( #{ p in V_g & V_e : |D_g(p) - D_e(p)| / diameter >= tau } + #(V_g ^ V_e) ) / #(V_g | V_e)

with D_I, D_g, D_e the distance images of the test depth, and of the object rendered in the GT and the
estimated pose; VSD is 1 when the union is empty. The visibility differences are taken in float32 and
the rest in float64, as the toolkit does. BOP'19 evaluates taus 0.05..0.5 of the diameter (step 0.05)
with delta from ``eval_bop19_pose.py`` (``vsd_deltas``: 15 mm for LM-O).

Renders come from :class:`bopkd.eval.raster.ToolkitDepthRenderer` (the toolkit's renderer reproduced
pixel for pixel) and are handled as crops over the object's pixel box: outside the union of the two
boxes every mask is empty, so nothing else is touched. All taus are counted in one pass.

Why by hand: no library implements VSD; the per-pixel pass is compiled with numba so that one
estimate costs one render and a few microseconds.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from bopkd.eval.raster import DepthCrop, ToolkitDepthRenderer

#: BOP'19 misalignment tolerances tau (fractions of the diameter), as ``list(np.arange(0.05, 0.51, 0.05))``
#: in ``eval_bop19_pose.py`` (the exact float64 values, e.g. 0.15000000000000002).
BOP19_TAUS = np.arange(0.05, 0.51, 0.05)


def pixel_rays(K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``((x - cx) / fx for x in 0..W-1, (y - cy) / fy for y in 0..H-1)``, float64, as ``misc.Precomputer``."""
    K = np.asarray(K, np.float64)
    return (np.arange(width) - K[0, 2]) / np.float64(K[0, 0]), (np.arange(height) - K[1, 2]) / np.float64(
        K[1, 1]
    )


def dist_image(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) float64 distance image of a depth image (mm), ``misc.depth_im_to_dist_im_fast``."""
    depth = np.asarray(depth)
    rx, ry = pixel_rays(K, depth.shape[1], depth.shape[0])
    return np.sqrt(
        np.multiply(rx[None, :], depth) ** 2
        + np.multiply(ry[:, None], depth) ** 2
        + depth.astype(np.float64) ** 2
    )


@nb.njit(cache=True, nogil=True)
def _dist(rx, ry, d):  # pragma: no cover - compiled
    a = rx * d
    b = ry * d
    return np.sqrt((a * a + b * b) + d * d)


@nb.njit(cache=True, nogil=True)
def _vsd_counts(dt, dg, de, rx, ry, delta, taus, diameter, counts):  # pragma: no cover - compiled
    """Count over aligned crops; returns (union, complement); ``counts[k]`` = #inter with dist >= taus[k]."""
    h, w = dt.shape
    union = 0
    inter = 0
    for k in range(taus.shape[0]):
        counts[k] = 0
    for i in range(h):
        for j in range(w):
            zg = np.float64(dg[i, j])
            ze = np.float64(de[i, j])
            if zg <= 0.0 and ze <= 0.0:
                continue
            zt = np.float64(dt[i, j])
            tt = _dist(rx[j], ry[i], zt)
            g = False
            e = False
            dgg = 0.0
            dee = 0.0
            if zg > 0.0:
                dgg = _dist(rx[j], ry[i], zg)
                g = (np.float32(dgg) - np.float32(tt) <= delta) or tt == 0.0
            if ze > 0.0:
                dee = _dist(rx[j], ry[i], ze)
                e = (np.float32(dee) - np.float32(tt) <= delta) or tt == 0.0 or g
            if g or e:
                union += 1
            if g and e:
                inter += 1
                d = abs(dgg - dee) / diameter
                for k in range(taus.shape[0]):
                    if d >= taus[k]:
                        counts[k] += 1
    return union, union - inter


def _aligned(crop: DepthCrop, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    if crop.depth.size:
        cx0, cy0, cx1, cy1 = crop.box
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = crop.depth
    return out


def vsd_from_renders(
    depth_test: np.ndarray,
    gt: DepthCrop,
    est: DepthCrop,
    K: np.ndarray,
    delta: float,
    taus: np.ndarray,
    diameter: float,
    rays: tuple[np.ndarray, np.ndarray] | None = None,
    depth_scale: float | None = None,
) -> np.ndarray:
    """(T,) VSD for each tau from the test depth and the two rendered crops.

    ``depth_test`` is (H, W) float32 mm, or the stored uint16 values with ``depth_scale``: the needed
    crop is then converted as the toolkit loads depth (``float32(u16) * float32(depth_scale)``).
    """
    taus = np.asarray(taus, np.float64)
    boxes = [c.box for c in (gt, est) if c.depth.size]
    if not boxes:
        return np.ones(len(taus))
    box = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    x0, y0, x1, y1 = box
    if rays is None:
        rays = pixel_rays(K, depth_test.shape[1], depth_test.shape[0])
    rx, ry = rays
    if depth_scale is None:
        dt = np.ascontiguousarray(depth_test[y0:y1, x0:x1], dtype=np.float32)
    else:
        dt = depth_test[y0:y1, x0:x1].astype(np.float32) * np.float32(depth_scale)
    counts = np.zeros(len(taus), np.int64)
    union, comp = _vsd_counts(
        dt,
        _aligned(gt, box),
        _aligned(est, box),
        np.ascontiguousarray(rx[x0:x1]),
        np.ascontiguousarray(ry[y0:y1]),
        np.float32(delta),
        taus,
        float(diameter),
        counts,
    )
    if union == 0:
        return np.ones(len(taus))
    return (counts + comp) / float(union)


def vsd(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    depth_test: np.ndarray,
    K: np.ndarray,
    delta: float,
    taus: np.ndarray,
    diameter: float,
    renderer: ToolkitDepthRenderer,
    obj_id: int,
) -> np.ndarray:
    """(T,) VSD of one estimate, as ``pose_error.vsd(..., normalized_by_diameter=True, cost_type="step")``.

    Args:
        R_e, t_e, R_g, t_g: estimated and GT pose (t in mm).
        depth_test: (H, W) test depth in mm (float32 as the toolkit loads it; 0 = no measurement).
        K: (3, 3) intrinsics; delta: visibility tolerance in mm; taus: (T,) fractions of the diameter.
        renderer: renderer holding ``obj_id``.
    """
    gt = renderer.render(obj_id, R_g, t_g, K)
    est = renderer.render(obj_id, R_e, t_e, K)
    return vsd_from_renders(np.asarray(depth_test, np.float32), gt, est, K, delta, taus, diameter)
