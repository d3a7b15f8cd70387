"""Matching of pose estimates to ground truth and recall, exactly as the BOP toolkit does for BOP'19.

Sources: ``scripts/eval_calc_errors.py`` (which estimates are evaluated), ``scripts/eval_calc_scores.py``
(which GT instances count), ``bop_toolkit_lib/pose_matching.py`` (greedy matching) and
``bop_toolkit_lib/score.py: calc_localization_scores`` (recall); Hodan et al., "BOP: Benchmark for 6D
Object Pose Estimation", ECCV 2018, Sec. 2.4, and "BOP Challenge 2020", ECCVW 2020, Sec. 2.4.

1. Estimates (``n_top = -1``): for every target ``(scene, im, obj, inst_count)`` of
   ``test_targets_bop19.json``, the estimates of that object in that image sorted by score, descending,
   ties kept in file order (Python's stable ``sorted(..., reverse=True)``), and the first ``inst_count``
   kept. ``est_id`` is an estimate's index among the rows of its (scene, im, obj) in file order.
2. Valid GT (``visib_gt_min = -1``): in each target image, GT instances sorted by ``visib_fract``,
   descending (stable), and for each target object the first ``inst_count`` of its instances are valid.
3. Matching, per image and object: estimates in score order each take, among the valid GT instances not
   matched yet, the one with the lowest error if that error is ``< threshold`` (strict; on equal errors
   the lowest gt_id).
4. Recall = matched valid GT / valid GT (0 when there is none), in total and per object.

Why by hand: this is the benchmark's own protocol; no library implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def select_top_estimates(
    scene_id: np.ndarray,
    im_id: np.ndarray,
    obj_id: np.ndarray,
    score: np.ndarray,
    targets: Sequence[tuple[int, int, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a result file that the toolkit evaluates, in its order, and their ``est_id``.

    Args:
        scene_id, im_id, obj_id, score: (N,) columns of the result file, in file order.
        targets: ``(scene_id, im_id, obj_id, inst_count)`` tuples.

    Returns:
        ``(rows, est_id)``: (M,) indices into the file rows, grouped by (scene, im, obj) and sorted by
        descending score inside a group (stable), at most ``inst_count`` per target; and each row's
        index among its group's rows in file order.
    """
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.stack([np.asarray(scene_id), np.asarray(im_id), np.asarray(obj_id)], axis=1).astype(np.int64)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    idx = np.arange(n)
    # est_id: position within the group in file order.
    order_file = np.lexsort((idx, group))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    est_id = np.empty(n, np.int64)
    est_id[order_file] = idx - starts[group[order_file]]
    # Rank by descending score within the group, ties in file order.
    order = np.lexsort((idx, -np.asarray(score, np.float64), group))
    rank = np.empty(n, np.int64)
    rank[order] = idx - starts[group[order]]
    wanted = {(int(s), int(i), int(o)): int(c) for s, i, o, c in targets}
    limit = np.array(
        [wanted.get((int(k[0]), int(k[1]), int(k[2])), 0) for k in np.unique(keys, axis=0)], dtype=np.int64
    )
    keep = order[rank[order] < limit[group[order]]]
    return keep, est_id[keep]


def valid_gt_mask(
    obj_ids: Sequence[int], visib_fract: Sequence[float], im_targets: dict[int, int]
) -> np.ndarray:
    """(G,) bool: which GT instances of one image count (``eval_calc_scores.py``, ``visib_gt_min < 0``).

    Args:
        obj_ids, visib_fract: per GT instance of the image (gt_id order).
        im_targets: obj_id -> inst_count for the image's targets.
    """
    order = sorted(range(len(obj_ids)), key=lambda g: visib_fract[g], reverse=True)
    to_add = dict(im_targets)
    valid = np.zeros(len(obj_ids), dtype=bool)
    for g in order:
        o = int(obj_ids[g])
        if to_add.get(o, 0) > 0:
            valid[g] = True
            to_add[o] -= 1
    return valid


def greedy_match(errors: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Toolkit-exact greedy matching in one (image, object) group (``pose_matching.match_poses``).

    Args:
        errors: (E, G) errors of the group's estimates (rows in descending score order) against its GT
            instances (columns in gt_id order); ``inf`` is never matched.
        valid: (G,) which GT instances may be matched.
        threshold: correctness threshold (an error must be strictly lower).

    Returns:
        (E,) matched column per estimate, -1 for none.
    """
    E, G = errors.shape
    out = np.full(E, -1, np.int64)
    taken = np.zeros(G, dtype=bool)
    for e in range(E):
        best, best_err = -1, threshold
        for g in range(G):
            if valid[g] and not taken[g] and errors[e, g] < best_err:
                best, best_err = g, errors[e, g]
        if best >= 0:
            taken[best] = True
            out[e] = best
    return out


@dataclass
class MatchingProblem:
    """Everything about one scored submission that matching needs, independent of the error type.

    Attributes:
        n_groups: number of (image, object) groups with evaluated estimates.
        group_obj: (n_groups,) object id of each group.
        group_n_est: (n_groups,) estimates per group.
        pair_group, pair_est, pair_gt: (P,) for each (estimate, GT) pair: its group, the estimate's rank in
            the group (0 = highest score), and the GT's column in the group.
        pair_valid: (P,) whether the pair's GT instance counts.
        group_n_gt: (n_groups,) GT instances (of the group's object in its image).
        obj_ids: object ids of the dataset (recall is reported for each).
        n_targets: (len(obj_ids),) valid GT instances per object (recall denominators).
    """

    n_groups: int
    group_obj: np.ndarray
    group_n_est: np.ndarray
    group_n_gt: np.ndarray
    pair_group: np.ndarray
    pair_est: np.ndarray
    pair_gt: np.ndarray
    pair_valid: np.ndarray
    obj_ids: tuple[int, ...]
    n_targets: np.ndarray

    def group_true_positives(self, errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(V, T, n_groups) matched valid GT per error variant, threshold and (image, object) group.

        Args:
            errors: (P,) or (P, V) errors per pair (already normalised as the toolkit does), V variants
                (e.g. the VSD taus).
            thresholds: (T,) correctness thresholds.
        """
        errors = np.asarray(errors, np.float64)
        if errors.ndim == 1:
            errors = errors[:, None]
        thresholds = np.asarray(thresholds, np.float64)
        V, T = errors.shape[1], len(thresholds)
        tp = np.zeros((V, T, self.n_groups), np.int64)
        if len(errors) == 0:
            return tp
        single = self.group_n_est[self.pair_group] == 1
        # Groups with one estimate: matched iff the lowest error over valid GT is below the threshold.
        if np.any(single):
            pg = self.pair_group[single]
            err_valid = np.where(self.pair_valid[single, None], errors[single], np.inf)
            mins = np.full((self.n_groups, V), np.inf)
            np.minimum.at(mins, pg, err_valid)
            ok = mins[:, :, None] < thresholds[None, None, :]  # (groups, V, T)
            one = self.group_n_est == 1
            tp[:, :, one] = ok[one].transpose(1, 2, 0)
        # Groups with several estimates: greedy matching.
        multi = np.flatnonzero(self.group_n_est > 1)
        if len(multi):
            sel = np.flatnonzero(~single)
            for gi in multi:
                rows = sel[self.pair_group[sel] == gi]
                E, G = int(self.group_n_est[gi]), int(self.group_n_gt[gi])
                valid = np.zeros(G, bool)
                valid[self.pair_gt[rows]] = self.pair_valid[rows]
                for v in range(V):
                    m = np.full((E, G), np.inf)
                    m[self.pair_est[rows], self.pair_gt[rows]] = errors[rows, v]
                    for ti, th in enumerate(thresholds):
                        tp[v, ti, gi] = int(np.count_nonzero(greedy_match(m, valid, th) >= 0))
        return tp

    def true_positives(self, errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(V, T, n_obj) matched valid GT per error variant, threshold and object of :attr:`obj_ids`."""
        return self.per_object(self.group_true_positives(errors, thresholds))

    def per_object(self, tpg: np.ndarray) -> np.ndarray:
        """Sum (V, T, n_groups) group counts into (V, T, n_obj) per object of :attr:`obj_ids`."""
        obj_index = {o: i for i, o in enumerate(self.obj_ids)}
        g_obj = np.array([obj_index.get(int(o), -1) for o in self.group_obj], np.int64)
        tp = np.zeros((*tpg.shape[:2], len(self.obj_ids)), np.int64)
        keep = g_obj >= 0
        np.add.at(tp.transpose(2, 0, 1), g_obj[keep], tpg[:, :, keep].transpose(2, 0, 1))
        return tp


def recall(tp: int | np.ndarray, n_targets: int | np.ndarray) -> float | np.ndarray:
    """``score.calc_recall``: tp / targets, 0 when there are no targets."""
    tp = np.asarray(tp, np.float64)
    n = np.asarray(n_targets, np.float64)
    out = np.divide(tp, n, out=np.zeros(np.broadcast(tp, n).shape), where=n > 0)
    return float(out) if out.ndim == 0 else out
