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

Why by hand: no library computes these symmetry-aware maxima over model vertices. The per-pair loops
are compiled with numba; MSSD and MSPD abandon a symmetry as soon as one vertex shows it cannot give
the minimum (symmetries tried in order of rotational closeness, far vertices first), which changes
only the speed. Results agree with the toolkit's to floating-point rounding (about 1e-13 relative), and
an exact pose has error exactly 0.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Upper bound on the number of doubles one chunk of k-d tree queries of :func:`adi` holds (about 64 MB).
CHUNK_ELEMS = 8_000_000


def _as_batch(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.ascontiguousarray(R, dtype=np.float64).reshape(-1, 3, 3)
    t = np.ascontiguousarray(t, dtype=np.float64).reshape(-1, 3)
    return R, t


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


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _matmul3(A, B, out):  # pragma: no cover - compiled
    for i in range(3):
        for k in range(3):
            out[i, k] = A[i, 0] * B[0, k] + A[i, 1] * B[1, k] + A[i, 2] * B[2, k]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _matvec3(A, v, out):  # pragma: no cover - compiled
    for i in range(3):
        out[i] = A[i, 0] * v[0] + A[i, 1] * v[1] + A[i, 2] * v[2]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _sym_order(Re, Rg, sym_R):  # pragma: no cover - compiled
    """Symmetries by decreasing trace(R_e^T R_g S_R): the likely best first (only affects speed)."""
    S = sym_R.shape[0]
    key = np.empty(S)
    Rgs = np.empty((3, 3))
    for s in range(S):
        _matmul3(Rg, sym_R[s], Rgs)
        tr = 0.0
        for i in range(3):
            for j in range(3):
                tr += Re[i, j] * Rgs[i, j]
        key[s] = -tr
    return np.argsort(key)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _mssd_kernel(R_e, t_e, R_g, t_g, pts, sym_R, sym_t, out):  # pragma: no cover - compiled
    Rgs = np.empty((3, 3))
    tgs = np.empty(3)
    for n in range(R_e.shape[0]):
        best = np.inf
        for s in _sym_order(R_e[n], R_g[n], sym_R):
            _matmul3(R_g[n], sym_R[s], Rgs)
            _matvec3(R_g[n], sym_t[s], tgs)
            # Distance of a vertex x: |(R_e - R_g S_R) x + (t_e - (R_g S_t + t_g))|.
            a00 = R_e[n, 0, 0] - Rgs[0, 0]
            a01 = R_e[n, 0, 1] - Rgs[0, 1]
            a02 = R_e[n, 0, 2] - Rgs[0, 2]
            a10 = R_e[n, 1, 0] - Rgs[1, 0]
            a11 = R_e[n, 1, 1] - Rgs[1, 1]
            a12 = R_e[n, 1, 2] - Rgs[1, 2]
            a20 = R_e[n, 2, 0] - Rgs[2, 0]
            a21 = R_e[n, 2, 1] - Rgs[2, 1]
            a22 = R_e[n, 2, 2] - Rgs[2, 2]
            b0 = t_e[n, 0] - (tgs[0] + t_g[n, 0])
            b1 = t_e[n, 1] - (tgs[1] + t_g[n, 1])
            b2 = t_e[n, 2] - (tgs[2] + t_g[n, 2])
            m = 0.0
            for p in range(pts.shape[0]):
                x = pts[p, 0]
                y = pts[p, 1]
                z = pts[p, 2]
                dx = a00 * x + a01 * y + a02 * z + b0
                dy = a10 * x + a11 * y + a12 * z + b1
                dz = a20 * x + a21 * y + a22 * z + b2
                d2 = dx * dx + dy * dy + dz * dz
                if d2 > m:
                    m = d2
                    if m >= best:  # this symmetry cannot give the minimum
                        break
            if m < best:
                best = m
        out[n] = np.sqrt(best)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _mspd_kernel(R_e, t_e, R_g, t_g, K, pts, sym_R, sym_t, out):  # pragma: no cover - compiled
    P = pts.shape[0]
    ue = np.empty(P)
    ve = np.empty(P)
    KR = np.empty((3, 3))
    Kt = np.empty(3)
    Rgs = np.empty((3, 3))
    tgs = np.empty(3)
    for n in range(R_e.shape[0]):
        # The estimate's projections, K (R_e x + t_e) / third row; the GT's below with the same operations.
        _matmul3(K[n], R_e[n], KR)
        _matvec3(K[n], t_e[n], Kt)
        for p in range(P):
            x = pts[p, 0]
            y = pts[p, 1]
            z = pts[p, 2]
            h = KR[2, 0] * x + KR[2, 1] * y + KR[2, 2] * z + Kt[2]
            ue[p] = (KR[0, 0] * x + KR[0, 1] * y + KR[0, 2] * z + Kt[0]) / h
            ve[p] = (KR[1, 0] * x + KR[1, 1] * y + KR[1, 2] * z + Kt[1]) / h
        best = np.inf
        for s in _sym_order(R_e[n], R_g[n], sym_R):
            _matmul3(R_g[n], sym_R[s], Rgs)
            _matvec3(R_g[n], sym_t[s], tgs)
            for i in range(3):
                tgs[i] = tgs[i] + t_g[n, i]
            _matmul3(K[n], Rgs, KR)
            _matvec3(K[n], tgs, Kt)
            m = 0.0
            for p in range(P):
                x = pts[p, 0]
                y = pts[p, 1]
                z = pts[p, 2]
                h = KR[2, 0] * x + KR[2, 1] * y + KR[2, 2] * z + Kt[2]
                du = ue[p] - (KR[0, 0] * x + KR[0, 1] * y + KR[0, 2] * z + Kt[0]) / h
                dv = ve[p] - (KR[1, 0] * x + KR[1, 1] * y + KR[1, 2] * z + Kt[1]) / h
                d2 = du * du + dv * dv
                if d2 > m:
                    m = d2
                    if m >= best:
                        break
            if m < best:
                best = m
        out[n] = np.sqrt(best)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _add_kernel(R_e, t_e, R_g, t_g, pts, out):  # pragma: no cover - compiled
    for n in range(R_e.shape[0]):
        a00 = R_e[n, 0, 0] - R_g[n, 0, 0]
        a01 = R_e[n, 0, 1] - R_g[n, 0, 1]
        a02 = R_e[n, 0, 2] - R_g[n, 0, 2]
        a10 = R_e[n, 1, 0] - R_g[n, 1, 0]
        a11 = R_e[n, 1, 1] - R_g[n, 1, 1]
        a12 = R_e[n, 1, 2] - R_g[n, 1, 2]
        a20 = R_e[n, 2, 0] - R_g[n, 2, 0]
        a21 = R_e[n, 2, 1] - R_g[n, 2, 1]
        a22 = R_e[n, 2, 2] - R_g[n, 2, 2]
        b0 = t_e[n, 0] - t_g[n, 0]
        b1 = t_e[n, 1] - t_g[n, 1]
        b2 = t_e[n, 2] - t_g[n, 2]
        acc = 0.0
        for p in range(pts.shape[0]):
            x = pts[p, 0]
            y = pts[p, 1]
            z = pts[p, 2]
            dx = a00 * x + a01 * y + a02 * z + b0
            dy = a10 * x + a11 * y + a12 * z + b1
            dz = a20 * x + a21 * y + a22 * z + b2
            acc += np.sqrt(dx * dx + dy * dy + dz * dz)
        out[n] = acc / pts.shape[0]


def _far_first(pts: np.ndarray) -> np.ndarray:
    """Vertices ordered by decreasing distance from their centroid, so maxima are found early."""
    pts = np.asarray(pts, np.float64)
    c = pts - pts.mean(axis=0)
    return np.ascontiguousarray(pts[np.argsort(-np.einsum("ij,ij->i", c, c), kind="stable")])


def _syms(sym_R: np.ndarray, sym_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(sym_R, np.float64).reshape(-1, 3, 3),
        np.ascontiguousarray(sym_t, np.float64).reshape(-1, 3),
    )


def mssd(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    sym_R: np.ndarray,
    sym_t: np.ndarray,
) -> np.ndarray:
    """(N,) MSSD in mm of N pose pairs (no sphere gating; the scorer applies it).

    Args:
        R_e, t_e, R_g, t_g: (N, 3, 3) / (N, 3) estimated and GT poses (t in mm).
        pts: (P, 3) model vertices in mm.
        sym_R, sym_t: (S, 3, 3) / (S, 3) symmetry transforms.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    out = np.empty(len(R_e))
    _mssd_kernel(R_e, t_e, R_g, t_g, _far_first(pts), *_syms(sym_R, sym_t), out)
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

    Projection as ``bop_toolkit_lib/misc.py: project_pts``: ``K (R x + t)`` divided by its third row. A
    vertex on the camera plane projects to infinity (an inf or nan error, as in the toolkit).
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    N = len(R_e)
    K = np.ascontiguousarray(np.broadcast_to(np.asarray(K, np.float64).reshape(-1, 3, 3), (N, 3, 3)))
    out = np.empty(N)
    _mspd_kernel(R_e, t_e, R_g, t_g, K, _far_first(pts), *_syms(sym_R, sym_t), out)
    return out


def add(R_e: np.ndarray, t_e: np.ndarray, R_g: np.ndarray, t_g: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N,) ADD in mm: mean distance between the model vertices in the two poses."""
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    out = np.empty(len(R_e))
    _add_kernel(R_e, t_e, R_g, t_g, np.ascontiguousarray(pts, np.float64), out)
    return out


class ModelNN:
    """Nearest-neighbour search among an object's vertices (model frame), for :func:`adi`.

    Two exact methods: a uniform grid of cells of side ``h`` (about two vertex spacings), used when every
    nearest distance is small, and ``scipy.spatial.cKDTree`` otherwise. In the grid a query ``q`` (a moved
    copy of vertex ``x``) starts from an upper bound on its nearest distance (its distance to ``x`` itself
    or to the previous query's nearest vertex) and scans only the cells of the box within that bound; a
    close pair, or one related by a symmetry, costs a few dozen distance evaluations per vertex. A pair
    whose bounds exceed :attr:`GRID_MAX` cells too often goes to the tree.

    Why by hand: the grid walk is several times faster than a k-d tree query for the common case of a
    nearly correct pose; the k-d tree keeps far poses fast.
    """

    #: Largest search radius (in cells) handled by the grid.
    GRID_MAX = 2.0

    def __init__(self, pts: np.ndarray):
        pts = np.ascontiguousarray(pts, np.float64)
        self.pts = pts
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        ext = np.maximum(hi - lo, 1e-9)
        # Vertex spacing of a surface sampling: sqrt(area / n), area ~ that of the box.
        area = 2.0 * (ext[0] * ext[1] + ext[1] * ext[2] + ext[0] * ext[2])
        h = max(2.0 * np.sqrt(area / max(len(pts), 1)), float(ext.max()) / 200.0)
        dims = np.floor(ext / h).astype(np.int64) + 1
        cell = np.minimum(np.floor((pts - lo) / h).astype(np.int64), dims - 1)
        flat = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
        order = np.argsort(flat, kind="stable")
        self.sorted_pts = np.ascontiguousarray(pts[order])
        self.start = np.searchsorted(flat[order], np.arange(int(dims.prod()) + 1)).astype(np.int64)
        self.lo = lo
        self.h = float(h)
        self.dims = dims
        self._tree = None

    @property
    def tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree  # imported here: scipy.spatial takes ~1 s to import

            self._tree = cKDTree(self.pts)
        return self._tree


@nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _scan_nearest(spts, m0, m1, q0, q1, q2, best, arg):  # pragma: no cover - compiled
    """Closest of the vertices ``spts[m0:m1]`` to ``(q0, q1, q2)`` if closer than ``best`` (squared mm)."""
    for m in range(m0, m1):
        e0 = spts[m, 0] - q0
        e1 = spts[m, 1] - q1
        e2 = spts[m, 2] - q2
        dd = e0 * e0 + e1 * e1 + e2 * e2
        if dd < best:
            best = dd
            arg = m
    return best, arg


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _grid_adi(spts, start, lo, h, dims, A, b, rcap):  # pragma: no cover - compiled
    """Mean over vertices x of the nearest distance from ``q = A x + b`` to the vertices; -1 if abandoned.

    Vertices are visited in grid order, so consecutive queries are close: the upper bound of a query is
    the smaller of its distance to its own vertex and to the previous query's nearest vertex. Only
    cells of the box within that bound are scanned; a bound above ``rcap`` means an exhaustive search for
    that vertex, and more than 32 of those abandon the pair.
    """
    d0, d1, d2 = dims[0], dims[1], dims[2]
    acc = 0.0
    last = -1
    n_full = 0
    for p in range(spts.shape[0]):
        x = spts[p, 0]
        y = spts[p, 1]
        z = spts[p, 2]
        q0 = A[0, 0] * x + A[0, 1] * y + A[0, 2] * z + b[0]
        q1 = A[1, 0] * x + A[1, 1] * y + A[1, 2] * z + b[1]
        q2 = A[2, 0] * x + A[2, 1] * y + A[2, 2] * z + b[2]
        e0 = x - q0
        e1 = y - q1
        e2 = z - q2
        best = e0 * e0 + e1 * e1 + e2 * e2
        arg = p
        if last >= 0:
            e0 = spts[last, 0] - q0
            e1 = spts[last, 1] - q1
            e2 = spts[last, 2] - q2
            dd = e0 * e0 + e1 * e1 + e2 * e2
            if dd < best:
                best = dd
                arg = last
        r = np.sqrt(best)
        if r > rcap:
            # No small bound (the first vertex, a jump in the grid order, or a far pose): exhaustive
            # search for this vertex; too many of them and the pair goes to the k-d tree.
            n_full += 1
            if n_full > 32:
                return -1.0
            best, arg = _scan_nearest(spts, 0, spts.shape[0], q0, q1, q2, best, arg)
            last = arg
            acc += np.sqrt(best)
            continue
        i0 = min(max(int(np.floor((q0 - r - lo[0]) / h)), 0), d0 - 1)
        i1 = min(max(int(np.floor((q0 + r - lo[0]) / h)), 0), d0 - 1)
        j0 = min(max(int(np.floor((q1 - r - lo[1]) / h)), 0), d1 - 1)
        j1 = min(max(int(np.floor((q1 + r - lo[1]) / h)), 0), d1 - 1)
        k0 = min(max(int(np.floor((q2 - r - lo[2]) / h)), 0), d2 - 1)
        k1 = min(max(int(np.floor((q2 + r - lo[2]) / h)), 0), d2 - 1)
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                base = (i * d1 + j) * d2
                best, arg = _scan_nearest(spts, start[base + k0], start[base + k1 + 1], q0, q1, q2, best, arg)
        last = arg
        acc += np.sqrt(best)
    return acc / spts.shape[0]


def model_tree(pts: np.ndarray) -> ModelNN:
    """The nearest-neighbour search structure of the model vertices for :func:`adi`; build once per object."""
    return ModelNN(pts)


def adi(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    tree: ModelNN | None = None,
    workers: int = 1,
) -> np.ndarray:
    """(N,) ADI (ADD-S) in mm: mean over GT-posed vertices of the distance to the nearest estimate-posed vertex.

    The toolkit builds a k-d tree of the estimate-posed vertices per pair and queries the GT-posed
    ones; distances are invariant to the rigid motion ``x -> R_e^T (x - t_e)``, so here one search
    structure of the model vertices (``tree``, from :func:`model_tree`) is queried with the GT-posed
    vertices mapped into the estimate's model frame. Same nearest neighbours, same distances up to
    rounding. ``workers``: threads of the k-d tree queries.
    """
    R_e, t_e = _as_batch(R_e, t_e)
    R_g, t_g = _as_batch(R_g, t_g)
    nn = tree if tree is not None else ModelNN(pts)
    pts = nn.pts
    out = np.empty(len(R_e))
    # q = R_e^T (R_g x + t_g - t_e) = (R_e^T R_g) x + R_e^T (t_g - t_e)
    Rt = np.transpose(R_e, (0, 2, 1))
    A = np.ascontiguousarray(Rt @ R_g)
    b = np.ascontiguousarray(np.einsum("nij,nj->ni", Rt, t_g - t_e))
    rcap = ModelNN.GRID_MAX * nn.h
    for n in range(len(R_e)):
        out[n] = _grid_adi(nn.sorted_pts, nn.start, nn.lo, nn.h, nn.dims, A[n], b[n], rcap)
    far = np.flatnonzero(out < 0)
    step = max(1, CHUNK_ELEMS // (3 * len(pts)))
    for k in range(0, len(far), step):
        idx = far[k : k + step]
        q = pts[None] @ np.transpose(A[idx], (0, 2, 1)) + b[idx, None, :]
        d, _ = nn.tree.query(q.reshape(-1, 3), k=1, workers=workers)
        out[idx] = d.reshape(len(idx), -1).mean(axis=1)
    return out


def ad(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    pts: np.ndarray,
    symmetric: bool,
    tree: ModelNN | None = None,
) -> np.ndarray:
    """(N,) AD in mm: :func:`adi` when the object is symmetric (the dataset's list), else :func:`add`."""
    if symmetric:
        return adi(R_e, t_e, R_g, t_g, pts, tree=tree)
    return add(R_e, t_e, R_g, t_g, pts)
