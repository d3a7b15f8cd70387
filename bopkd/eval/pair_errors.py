"""MSSD and MSPD of many (estimate, GT) pose pairs, grouped by object; shared by BOP'19 and BOP'24 scoring.

As ``scripts/eval_calc_errors.py`` (error types ``mssd`` and ``mspd``): MSSD is infinite when the object's
bounding spheres in the two poses do not overlap (``|t_e - t_g| >= diameter``), MSPD is always computed;
both use the evaluation models and the symmetry transforms of ``misc.get_symmetry_transformations`` with
``max_sym_disc_step = 0.01`` (the value of ``eval_bop19_pose.py`` and ``eval_bop24_pose.py``). The error
kernels are :func:`bopkd.eval.pose_error.mssd` and :func:`~bopkd.eval.pose_error.mspd`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

#: ``max_sym_disc_step`` of ``eval_bop19_pose.py`` and ``eval_bop24_pose.py``.
MAX_SYM_DISC_STEP = 0.01


def mssd_mspd(
    R_e: np.ndarray,
    t_e: np.ndarray,
    R_g: np.ndarray,
    t_g: np.ndarray,
    K: np.ndarray,
    obj: np.ndarray,
    infos: Mapping,
    model: Callable[[int], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Raw MSSD (mm) and MSPD (px) of P pose pairs.

    Args:
        R_e, t_e, R_g, t_g: (P, 3, 3) / (P, 3) estimated and GT poses (mm).
        K: (P, 3, 3) intrinsics of each pair's image.
        obj: (P,) object id of each pair.
        infos: obj_id -> ``ObjectInfo`` (``models_eval/models_info.json``: diameter, symmetries).
        model: obj_id -> ``(pts, faces)`` of the evaluation model.

    Returns:
        ``(mssd, mspd)``, each (P,) float64 (MSSD ``inf`` where the spheres do not overlap).
    """
    from bopkd.eval.pose_error import mspd, mssd, spheres_overlap
    from bopkd.geometry.symmetry import symmetry_transforms

    P = len(obj)
    e_mssd = np.full(P, np.inf)
    e_mspd = np.full(P, np.inf)
    for o in np.unique(obj):
        idx = np.flatnonzero(obj == o)
        info = infos[int(o)]
        pts = model(int(o))[0]
        sR, st = symmetry_transforms(info, MAX_SYM_DISC_STEP)
        ok = idx[spheres_overlap(t_e[idx], t_g[idx], info.diameter)]
        if len(ok):
            e_mssd[ok] = mssd(R_e[ok], t_e[ok], R_g[ok], t_g[ok], pts, sR, st)
        e_mspd[idx] = mspd(R_e[idx], t_e[idx], R_g[idx], t_g[idx], K[idx], pts, sR, st)
    return e_mssd, e_mspd
