"""The pairs a BOP'19 scoring evaluates: each evaluated estimate with each GT instance of its object in its image.

Kept apart from :mod:`bopkd.eval.scoring`, which fills it, so that tests and tools can read the errors
in the layout of the toolkit's ``errors_SCENE.json`` files (``eval_calc_errors.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PairTable:
    """All (evaluated estimate, GT instance of the same object in the same image) pairs of a submission.

    Estimates (``est_*``, M rows): the rows the toolkit evaluates (:func:`~bopkd.eval.matching.
    select_top_estimates`), grouped by (scene, image, object) in descending score order. Pairs
    (``pair_*``, P rows): ``pair_est`` indexes the estimates, ``pair_gt`` is the GT instance's index in
    the image's ``scene_gt`` list. ``errors`` maps an error type to (P,) raw errors (mm or px; VSD: (P,
    10), one column per tau), before normalisation.
    """

    est_row: np.ndarray
    est_scene: np.ndarray
    est_im: np.ndarray
    est_obj: np.ndarray
    est_id: np.ndarray
    est_score: np.ndarray
    pair_est: np.ndarray
    pair_gt: np.ndarray
    pair_visib: np.ndarray
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    def toolkit_errors(self, error_type: str, column: int | None = None) -> list[dict]:
        """The errors of one type as the toolkit's ``errors_SCENE.json`` lists them (all scenes together).

        One dict per evaluated estimate: ``scene_id, im_id, obj_id, est_id, score, errors {gt_id: [e]},
        gt_visib_fracts {gt_id: v}``; ``column`` picks a VSD tau.
        """
        err = self.errors[error_type]
        if err.ndim == 2:
            err = err[:, 0 if column is None else column]
        out = []
        by_est: dict[int, list[int]] = {}
        for p, e in enumerate(self.pair_est):
            by_est.setdefault(int(e), []).append(p)
        for m in range(len(self.est_row)):
            ps = by_est.get(m, [])
            out.append(
                {
                    "scene_id": int(self.est_scene[m]),
                    "im_id": int(self.est_im[m]),
                    "obj_id": int(self.est_obj[m]),
                    "est_id": int(self.est_id[m]),
                    "score": float(self.est_score[m]),
                    "errors": {int(self.pair_gt[p]): [float(err[p])] for p in ps},
                    "gt_visib_fracts": {int(self.pair_gt[p]): float(self.pair_visib[p]) for p in ps},
                }
            )
        return out
