"""Pose error functions of the BOP benchmark, vectorised over many (estimate, GT) pairs.

Definitions (all distances in mm, projections in px):

- MSSD, Maximum Symmetry-aware Surface Distance, and MSPD, Maximum Symmetry-aware Projection Distance:
  Hodan et al., "BOP Challenge 2020 on 6D Object Localization", ECCVW 2020, Sec. 2.2 (eqs. 2 and 3);
  ``bop_toolkit_lib/pose_error.py: mssd, mspd``::

      MSSD = min_{S in T} max_{x in V} || P_e x - P_g S x ||_2
      MSPD = min_{S in T} max_{x in V} || proj(K, P_e x) - proj(K, P_g S x) ||_2

  with V the vertices of the evaluation model (``models_eval``) and T the symmetry transforms of
  :func:`bopkd.geometry.symmetry.symmetry_transforms` (``misc.get_symmetry_transformations``).
- ADD (Average Distance of model points) and ADI (ADD-S, indistinguishable views): Hinterstoisser et al.,
  "Model Based Training, Detection and Pose Estimation of Texture-Less 3D Objects in Heavily Cluttered
  Scenes", ACCV 2012; ``pose_error.add, adi``::

      ADD = mean_{x in V} || P_e x - P_g x ||_2
      ADI = mean_{x_g in V} min_{x_e in V} || P_g x_g - P_e x_e ||_2

- AD: ADI for the dataset's symmetric objects, ADD for the others (``scripts/eval_calc_errors.py``,
  error type ``ad``).

As in ``scripts/eval_calc_errors.py``, MSSD, AD, ADD and ADI are infinite when the object's bounding
spheres in the two poses do not overlap (``|t_e - t_g| >= diameter``, :func:`spheres_overlap`); MSPD is
always computed. Poses are ``x_cam = R x + t``; R (N, 3, 3), t (N, 3) mm.

Why by hand: no library computes these symmetry-aware maxima over model vertices; the loops over
symmetries that the toolkit runs per pair are replaced here by one matrix product per chunk of pairs.
Results agree with the toolkit's to floating-point rounding (about 1e-13 relative).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

#: Upper bound on the number of doubles one chunk of a vectorised error may allocate (about 64 MB).
CHUNK_ELEMS = 8_000_000


def _as_batch(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 3)
    return R, t


def _chunks(n: int, per_item: int):
    step = max(1, CHUNK_ELEMS // max(1, per_item))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def spheres_overlap(t_e: np.ndarray, t_g: np.ndarray, diameter: float) -> np.ndarray:
    """(N,) bool: the bounding spheres of the object in the two poses overlap, ``|t_e - t_g| < diameter``.

    As ``eval_calc_errors.py`` (``center_dist = np.linalg.norm(t_e - t_g)``; ``spheres_overlap``).
    """
    d = np.asarray(t_e, np.float64).reshape(-1, 3) - np.asarray(t_g, np.float64).reshape(-1, 3)
    return np.sqrt(np.einsum("ni,ni->n", d, d)) < float(diameter)


def sphere_projections_overlap(t_e: np.ndarray, t_g: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: the image projections of the bounding spheres (radius mm) overlap (approximately).

    ``bop_toolkit_lib/misc.py: overlapping_sphere_projections``: centres ``t / t_z`` on the normalised
    image plane closer than ``radius (1 / z_e + 1 / z_g)``; False when a centre has ``z == 0``. VSD is 1
    for every tau when this is False (``eval_calc_errors.py``).
    """
    te = np.asarray(t_e, np.float64).reshape(-1, 3)
    tg = np.asarray(t_g, np.float64).reshape(-1, 3)
    out = np.zeros(len(te), dtype=bool)
    ok = (te[:, 2] != 0) & (tg[:, 2] != 0)
    if not np.any(ok):
        return out
    pe = te[ok, :2] / te[ok, 2:3]
    pg = tg[ok, :2] / tg[ok, 2:3]
    d = pe - pg
    dist = np.sqrt(np.einsum("ni,ni->n", d, d))
    out[ok] = dist < radius * (1.0 / te[ok, 2] + 1.0 / tg[ok, 2])
    return out


def _sym_gt_poses(R_g: np.ndarray, t_g: np.ndarray, sym_R: np.ndarray, sym_t: np.ndarray):
    """GT poses composed with every symmetry: ``R_g S_R`` (N, S, 3, 3) and ``R_g S_t + t_g`` (N, S, 3)."""
    Rs = np.einsum("nij,sjk->nsik", R_g, sym_R)
    ts = np.einsum("nij,sj->nsi", R_g, sym_t) + t_g[:, None, :]
    return Rs, ts


def mssd(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    sym_R: np.ndarray,
    sym_t: np.ndarray,
) -> np.ndarray:
    """(N,) MSSD in mm of N pose pairs (no sphere gating; see :func:`pair_errors`).

    Args:
        R_e, t_e, R_g, t_g: (N, 3, 3) / (N, 3) estimated and GT poses (t in mm).
        pts: (P, 3) model vertices in mm.
        sym_R, sym_t: (S, 3, 3) / (S, 3) symmetry transforms.

    Per pair and symmetry, ``max_x |(R_e - R_g S_R) x + (t_e - R_g S_t - t_g)|`` is one row block of a
    single matrix product with the vertices, chunked to :data:`CHUNK_ELEMS`.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    pts = np.asarray(pts, np.float64)
    sym_R = np.asarray(sym_R, np.float64).reshape(-1, 3, 3)
    sym_t = np.asarray(sym_t, np.float64).reshape(-1, 3)
    N, S, P = len(R_e), len(sym_R), len(pts)
    out = np.empty(N)
    ptsT = np.ascontiguousarray(pts.T)
    for sl in _chunks(N, S * 3 * P):
        Rs, ts = _sym_gt_poses(R_g[sl], t_g[sl], sym_R, sym_t)
        A = R_e[sl, None] - Rs  # (n, S, 3, 3)
        b = t_e[sl, None] - ts  # (n, S, 3)
        n = len(A)
        D = (A.reshape(n * S * 3, 3) @ ptsT).reshape(n, S, 3, P) + b[..., None]
        d2 = np.einsum("nsip,nsip->nsp", D, D)
        out[sl] = np.sqrt(d2.max(axis=2)).min(axis=1)
    return out


def mspd(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    K: np.ndarray,
    pts: np.ndarray,
    sym_R: np.ndarray,
    sym_t: np.ndarray,
) -> np.ndarray:
    """(N,) MSPD in px of N pose pairs.

    Args:
        K: (3, 3) or (N, 3, 3) intrinsics in px (one per pair: the pair's image).
        Others as in :func:`mssd`.

    Projection as ``bop_toolkit_lib/misc.py: project_pts``: ``K (R x + t)`` divided by its third row.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    N = len(R_e)
    K = np.broadcast_to(np.asarray(K, np.float64).reshape(-1, 3, 3), (N, 3, 3))
    pts = np.asarray(pts, np.float64)
    sym_R = np.asarray(sym_R, np.float64).reshape(-1, 3, 3)
    sym_t = np.asarray(sym_t, np.float64).reshape(-1, 3)
    S, P = len(sym_R), len(pts)
    out = np.empty(N)
    ptsT = np.ascontiguousarray(pts.T)
    for sl in _chunks(N, (S + 1) * 3 * P):
        Kc = K[sl]
        n = len(Kc)
        # Estimate: (n, 3, P) homogeneous image points.
        He = (Kc @ R_e[sl]) @ ptsT + (Kc @ t_e[sl, :, None])
        pe = He[:, :2] / He[:, 2:3]
        Rs, ts = _sym_gt_poses(R_g[sl], t_g[sl], sym_R, sym_t)
        KR = np.einsum("nij,nsjk->nsik", Kc, Rs)
        Kt = np.einsum("nij,nsj->nsi", Kc, ts)
        Hg = (KR.reshape(n * S * 3, 3) @ ptsT).reshape(n, S, 3, P) + Kt[..., None]
        pg = Hg[:, :, :2] / Hg[:, :, 2:3]
        D = pe[:, None] - pg
        d2 = np.einsum("nsip,nsip->nsp", D, D)
        out[sl] = np.sqrt(d2.max(axis=2)).min(axis=1)
    return out


def add(R_e: np.ndarray, t_e: np.ndarray, R_g: np.ndarray, t_g: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) ADD in mm: mean distance between the model vertices in the two poses."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    pts = np.asarray(pts, np.float64)
    N, P = len(R_e), len(pts)
    out = np.empty(N)
    ptsT = np.ascontiguousarray(pts.T)
    for sl in _chunks(N, 3 * P):
        A = R_e[sl] - R_g[sl]
        D = A @ ptsT + (t_e[sl] - t_g[sl])[..., None]
        out[sl] = np.sqrt(np.einsum("nip,nip->np", D, D)).mean(axis=1)
    return out


def model_tree(pts: np.ndarray) -> cKDTree:
    """A k-d tree of the model vertices (model frame) for :func:`adi`; build once per object."""
    return cKDTree(np.asarray(pts, np.float64))


def adi(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    tree: cKDTree | None = None,
    workers: int = 1,
) -> np.ndarray:
    """(N,) ADI (ADD-S) in mm: mean over GT-posed vertices of the distance to the nearest estimate-posed vertex.

    The toolkit builds a k-d tree of the estimate-posed vertices per pair and queries the GT-posed
    ones; distances are invariant to the rigid motion ``x -> R_e^T (x - t_e)``, so here one tree of the
    model vertices (``tree``, from :func:`model_tree`) is queried with the GT-posed vertices mapped into
    the estimate's model frame. Same nearest neighbours, same distances up to rounding.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    pts = np.asarray(pts, np.float64)
    if tree is None:
        tree = model_tree(pts)
    out = np.empty(len(R_e))
    for sl in _chunks(len(R_e), 3 * len(pts)):
        # q = R_e^T (R_g x + t_g - t_e) = (R_e^T R_g) x + R_e^T (t_g - t_e)
        Rt = np.transpose(R_e[sl], (0, 2, 1))
        A = Rt @ R_g[sl]
        b = np.einsum("nij,nj->ni", Rt, t_g[sl] - t_e[sl])
        q = pts[None] @ np.transpose(A, (0, 2, 1)) + b[:, None, :]
        n = len(q)
        d, _ = tree.query(q.reshape(-1, 3), k=1, workers=workers)
        out[sl] = d.reshape(n, -1).mean(axis=1)
    return out


def ad(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    symmetric: bool,
    tree: cKDTree | None = None,
) -> np.ndarray:
    """(N,) AD in mm: :func:`adi` when the object is symmetric (the dataset's list), else :func:`add`."""
    if symmetric:
        return adi(R_e, t_e, R_g, t_g, pts, tree=tree)
    return add(R_e, t_e, R_g, t_g, pts)
