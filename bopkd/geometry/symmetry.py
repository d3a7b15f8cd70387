"""Symmetry transforms of an object from its ``models_info.json`` annotations.

The discretisation is that of the BOP toolkit (``bop_toolkit_lib/misc.py``,
``get_symmetry_transformations``; Hodan et al., "BOP Challenge 2020 on 6D Object Localization",
ECCVW 2020, Sec. 2.2): the identity plus every discrete symmetry; a continuous symmetry around an axis
through ``offset`` is sampled at ``n = ceil(pi / max_sym_disc_step)`` equal steps of ``2 pi / n``,
steps ``0 .. n-1`` (so the vertex farthest from the axis moves at most ``max_sym_disc_step`` of the
diameter between samples), and each sample is composed with each discrete symmetry. As in the
toolkit at thodan/bop_toolkit commit cea62d65 (``range(0, discrete_steps_count)``; some older versions
started at step 1 and so lost the identity), an object with a continuous symmetry gets ``n``
samples per discrete symmetry, the first being the identity.

The rotation is built with the same floating-point operations, in the same order, as the toolkit's
``transform.rotation_matrix`` (unit axis by ``sqrt(a . a)``, ``cos I + (1 - cos) a a^T + skew(sin a)``),
so the transforms agree with the toolkit's to the last bit.
"""

from __future__ import annotations

import math

import numpy as np

from bopkd.records import ObjectInfo


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians around ``axis`` (normalised), Rodrigues' formula."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / math.sqrt(np.dot(a, a))
    s, c = math.sin(angle), math.cos(angle)
    sa = a * s
    Kx = np.array([[0.0, -sa[2], sa[1]], [sa[2], 0.0, -sa[0]], [-sa[1], sa[0], 0.0]])
    return np.diag([c, c, c]) + np.outer(a, a) * (1.0 - c) + Kx


def symmetry_transforms(info: ObjectInfo, max_sym_disc_step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """All symmetry transforms of an object.

    Args:
        info: the object's models_info entry.
        max_sym_disc_step: largest step along a continuous symmetry, as a fraction of the diameter.

    Returns:
        ``(R, t)`` with R (S, 3, 3) and t (S, 3) in mm: ``x -> R x + t`` maps the model onto itself.
        S = 1 (the identity) for an object without symmetries.
    """
    disc_R = [np.eye(3)]
    disc_t = [np.zeros(3)]
    for sym in info.symmetries_discrete:
        m = np.asarray(sym, dtype=np.float64).reshape(4, 4)
        disc_R.append(m[:3, :3])
        disc_t.append(m[:3, 3])

    cont_R: list[np.ndarray] = []
    cont_t: list[np.ndarray] = []
    for sym in info.symmetries_continuous:
        axis = np.asarray(sym["axis"], dtype=np.float64)
        offset = np.asarray(sym["offset"], dtype=np.float64).reshape(3)
        n = int(np.ceil(np.pi / max_sym_disc_step))
        step = 2.0 * np.pi / n
        for i in range(0, n):
            R = axis_angle_matrix(axis, i * step)
            cont_R.append(R)
            cont_t.append(-R @ offset + offset)

    Rs, ts = [], []
    for Rd, td in zip(disc_R, disc_t, strict=True):
        if cont_R:
            for Rc, tc in zip(cont_R, cont_t, strict=True):
                Rs.append(Rc @ Rd)
                ts.append(Rc @ td + tc)
        else:
            Rs.append(Rd)
            ts.append(td)
    return np.stack(Rs), np.stack(ts)
