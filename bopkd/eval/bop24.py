"""BOP'24 6D detection: matching of pose estimates to ground truth and mAP, exactly as the BOP toolkit.

Sources: ``scripts/eval_bop24_pose.py`` (parameters, averaging), ``scripts/eval_calc_errors.py`` and
``scripts/eval_calc_scores.py`` with ``--eval_mode=detection``, ``bop_toolkit_lib/inout.py:
load_bop_results, get_im_targets``, ``bop_toolkit_lib/pose_matching.py: match_poses`` and
``bop_toolkit_lib/score.py: calc_pose_detection_scores, calc_ap``; the AP follows COCO's 101 recall
points (``pycocotools/cocoeval.py: COCOeval.accumulate``).

1. Estimates: per image, the ``max_num_estimates_per_image`` (100; 200 for xyzibd) highest-scored rows
   (descending score, ties in file order). Of those, only rows of a target image (an image listed in the
   targets file) whose object has at least one GT instance in that image are evaluated; the others are
   not counted at all (neither true nor false positives).
2. Pairs: each evaluated estimate against every GT instance of its object in its image, whatever the
   instance's visibility.
3. Matching, per image, object and threshold: estimates in descending score order (ties in file order)
   each take, among the GT instances not matched yet, the one with the lowest error if that error is
   ``< threshold`` (strict; on equal errors the lowest gt_id).
4. Outcomes: an estimate matched to a GT instance with ``visib_fract >= visib_gt_min`` (0.1) is a true
   positive, one matched to a less visible instance is ignored, an unmatched one is a false positive.
   An object's GT count is its instances with ``visib_fract >= 0.1`` in all target images.
5. AP per object and threshold: the object's non-ignored estimates sorted by descending score (ties in
   the toolkit's list order: targets-file order of the images, then file order), recall =
   ``cumsum(tp) / n_gt``, precision = ``cumsum(tp) / (cumsum(tp) + cumsum(fp))``; AP is the mean over the
   101 recall points ``r = 0, 0.01, ..., 1`` of the highest precision at a recall ``>= r`` (0 if none).
6. mAP: per object the mean AP over the thresholds, then the mean over the objects that have GT.

Why by hand: this is the benchmark's own protocol; no library implements it. The greedy matching of all
(image, object) groups and thresholds runs in one compiled loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np

#: ``visib_gt_min`` of ``eval_bop24_pose.py``.
VISIB_GT_MIN = 0.1
#: ``max_num_estimates_per_image`` of ``eval_bop24_pose.py`` (200 for the dataset ``xyzibd``).
MAX_ESTIMATES_PER_IMAGE = 100

#: Correctness thresholds of ``eval_bop24_pose.py``, built as there.
MSSD_THRESHOLDS = np.array([th for th in np.arange(0.05, 0.51, 0.05)], np.float64)  # fraction of diameter
MSSD_MM_THRESHOLDS = np.array([th for th in range(2, 21, 2)], np.float64)  # mm
MSPD_THRESHOLDS = np.array([th for th in np.arange(5, 51, 5)], np.float64)  # px at 640 px width

#: COCO's recall points, as ``score.calc_ap``.
RECALL_POINTS = np.linspace(0.0, 1.00, 101, endpoint=True)

#: Outcome codes of :meth:`DetectionProblem.outcomes`.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, -1


def max_estimates_per_image(dataset: str) -> int:
    """The toolkit's per-image limit for a dataset (``eval_bop24_pose.py``: 200 for xyzibd, else 100)."""
    return 200 if dataset == "xyzibd" else MAX_ESTIMATES_PER_IMAGE


def cap_per_image(scene_id: np.ndarray, im_id: np.ndarray, score: np.ndarray, limit: int) -> np.ndarray:
    """Rows kept by ``inout.load_bop_results(..., max_num_estimates_per_image=limit)``, in its order.

    Images in order of first appearance; inside an image the ``limit`` highest scores, descending, ties in
    file order (Python's stable ``sorted(..., reverse=True)``).
    """
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64)
    keys = np.stack([np.asarray(scene_id), np.asarray(im_id)], axis=1).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # Image rank = order of first appearance in the file.
    rank_of_image = np.empty(len(first), np.int64)
    rank_of_image[np.argsort(first, kind="stable")] = np.arange(len(first))
    im_rank = rank_of_image[inverse]
    idx = np.arange(n)
    order = np.lexsort((idx, -np.asarray(score, np.float64), im_rank))
    starts = np.searchsorted(im_rank[order], np.arange(len(first)))
    pos = np.arange(n) - starts[im_rank[order]]
    return order[pos < int(limit)]


def select_estimates(
    scene_id: np.ndarray,
    im_id: np.ndarray,
    obj_id: np.ndarray,
    score: np.ndarray,
    images: Sequence[tuple[int, int]],
    im_objs: Sequence[set[int]],
    limit: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluated rows of a result file (steps 1 of the module doc) and the rows kept by the cap.

    Args:
        scene_id, im_id, obj_id, score: (N,) columns of the file, in file order.
        images: the target images in the toolkit's order; im_objs: the objects with GT in each.
        limit: estimates kept per image.

    Returns:
        ``(rows, im_k, capped)``: evaluated rows ordered by (target image, object, descending score, file
        row), the index in ``images`` of each, and the rows kept by :func:`cap_per_image` in its order.
    """
    capped = cap_per_image(scene_id, im_id, score, limit)
    im_index = {(int(s), int(i)): k for k, (s, i) in enumerate(images)}
    keep, im_k = [], []
    for r, s, i, o in zip(
        capped.tolist(),
        np.asarray(scene_id)[capped].tolist(),
        np.asarray(im_id)[capped].tolist(),
        np.asarray(obj_id)[capped].tolist(),
        strict=True,
    ):
        k = im_index.get((s, i))
        if k is not None and o in im_objs[k]:
            keep.append(r)
            im_k.append(k)
    rows, im_k = np.array(keep, np.int64), np.array(im_k, np.int64)
    order = np.lexsort((rows, -np.asarray(score, np.float64)[rows], np.asarray(obj_id)[rows], im_k))
    return rows[order], im_k[order], capped


@nb.njit(cache=True, nogil=True)
def _greedy_all(errors, thresholds, group_est_start, group_n_gt, est_pair_start, out):  # pragma: no cover
    """``pose_matching.match_poses`` for every (image, object) group and threshold; ``out`` (T, M)."""
    n_groups = len(group_n_gt)
    max_g = 1
    for g in range(n_groups):
        max_g = max(max_g, group_n_gt[g])
    taken = np.zeros(max_g, np.bool_)
    for t in range(len(thresholds)):
        th = thresholds[t]
        for g in range(n_groups):
            G = group_n_gt[g]
            for c in range(G):
                taken[c] = False
            for m in range(group_est_start[g], group_est_start[g + 1]):
                best = -1
                best_err = th
                p0 = est_pair_start[m]
                for c in range(G):
                    e = errors[p0 + c]
                    if e < best_err and not taken[c]:
                        best = c
                        best_err = e
                out[t, m] = best
                if best >= 0:
                    taken[best] = True


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """``score.calc_ap`` of one object: ``tp`` (E,) bool of its non-ignored estimates in ranking order.

    The 101-point interpolated precision: at each recall point r the highest precision among the points
    with recall ``>= r`` (recall never decreases along the ranking, so these form a suffix).
    """
    tp = np.asarray(tp, bool)
    cum_tp = np.cumsum(tp)
    recalls = cum_tp / float(n_gt)
    precisions = cum_tp / (cum_tp + np.cumsum(~tp))
    best_after = np.zeros(len(tp) + 1)
    if len(tp):
        best_after[:-1] = np.maximum.accumulate(precisions[::-1])[::-1]
    interpolated = best_after[np.searchsorted(recalls, RECALL_POINTS, side="left")]
    return float(np.mean(list(interpolated)))


def mean_average_precision(ap: np.ndarray, n_gt: np.ndarray) -> float | None:
    """``eval_bop24_pose.py``: mean over thresholds per object, then over objects with GT (None if none).

    Args:
        ap: (T, n_obj) AP per threshold and object (ascending obj_id, the order the toolkit's score files
            list them in).
        n_gt: (n_obj,) GT count per object.
    """
    per_object = [np.mean(list(ap[:, j])) for j in range(ap.shape[1]) if n_gt[j] > 0]
    return float(np.mean(per_object)) if per_object else None


@dataclass
class DetectionProblem:
    """The evaluated estimates of one submission, grouped for matching; independent of the error type.

    Estimates (M) are ordered by group, and by descending score (ties in file order) inside a group. The
    errors of estimate ``m`` against its group's GT instances (columns in gt_id order) are
    ``errors[est_pair_start[m] : est_pair_start[m] + group_n_gt[group]]``.

    Attributes:
        group_est_start: (n_groups + 1,) first estimate of each group.
        group_n_gt: (n_groups,) GT instances of the group's object in its image.
        group_gt_start: (n_groups,) first entry of the group's GT instances in ``gt_visib``.
        gt_visib: visib_fract of every group's GT instances.
        est_pair_start: (M,) first pair of each estimate.
        est_obj, est_score: (M,) object id and score.
        est_list_rank: (M,) position in the toolkit's list of estimates (targets-file order of the images,
            then file order): breaks score ties in the AP ranking.
        obj_ids: the dataset's objects, ascending; n_gt: (n_obj,) GT instances with visib_fract >=
            ``visib_gt_min`` in the target images.
    """

    group_est_start: np.ndarray
    group_n_gt: np.ndarray
    group_gt_start: np.ndarray
    gt_visib: np.ndarray
    est_pair_start: np.ndarray
    est_obj: np.ndarray
    est_score: np.ndarray
    est_list_rank: np.ndarray
    obj_ids: tuple[int, ...]
    n_gt: np.ndarray
    visib_gt_min: float = VISIB_GT_MIN

    @property
    def n_estimates(self) -> int:
        return len(self.est_obj)

    def match(self, errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(T, M) the GT column each estimate is matched to at each threshold, -1 for none."""
        thresholds = np.ascontiguousarray(thresholds, np.float64)
        out = np.full((len(thresholds), self.n_estimates), -1, np.int64)
        if self.n_estimates:
            _greedy_all(
                np.ascontiguousarray(errors, np.float64),
                thresholds,
                np.ascontiguousarray(self.group_est_start, np.int64),
                np.ascontiguousarray(self.group_n_gt, np.int64),
                np.ascontiguousarray(self.est_pair_start, np.int64),
                out,
            )
        return out

    def outcomes(self, matched: np.ndarray) -> np.ndarray:
        """(T, M) int8: :data:`TRUE_POSITIVE`, :data:`FALSE_POSITIVE` or :data:`IGNORED` (see the module doc)."""
        counts = np.diff(self.group_est_start)
        est_group = np.repeat(np.arange(len(counts)), counts)
        out = np.full(matched.shape, FALSE_POSITIVE, np.int8)
        hit = matched >= 0
        gt = self.group_gt_start[np.broadcast_to(est_group, matched.shape)[hit]] + matched[hit]
        out[hit] = np.where(self.gt_visib[gt] >= self.visib_gt_min, TRUE_POSITIVE, IGNORED)
        return out

    def average_precisions(self, errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(T, n_obj) AP per threshold and object; NaN for objects without GT (left out of the mean)."""
        res = self.outcomes(self.match(errors, thresholds))
        index = {o: j for j, o in enumerate(self.obj_ids)}
        est_j = np.array([index.get(int(o), -1) for o in self.est_obj], np.int64)
        ranking = np.lexsort((self.est_list_rank, -np.asarray(self.est_score, np.float64), est_j))
        bounds = np.searchsorted(est_j[ranking], np.arange(len(self.obj_ids) + 1))
        ap = np.full((len(thresholds), len(self.obj_ids)), np.nan)
        for j in range(len(self.obj_ids)):
            if self.n_gt[j] <= 0:
                continue
            rows = ranking[bounds[j] : bounds[j + 1]]
            for t in range(len(thresholds)):
                r = res[t, rows]
                ap[t, j] = average_precision(r[r != IGNORED] == TRUE_POSITIVE, int(self.n_gt[j]))
        return ap


def build_problem(
    est_im: np.ndarray,
    est_obj: np.ndarray,
    est_score: np.ndarray,
    im_gt_obj: Sequence[Sequence[int]],
    im_gt_visib: Sequence[np.ndarray],
    obj_ids: Sequence[int],
    visib_gt_min: float = VISIB_GT_MIN,
) -> tuple[DetectionProblem, np.ndarray, np.ndarray]:
    """The :class:`DetectionProblem` of evaluated estimates ordered as :func:`select_estimates` returns them.

    An estimate's position in that order breaks score ties in the AP ranking: restricted to one object it
    is the toolkit's list order (targets-file order of the images, then descending score, then file row).

    Args:
        est_im, est_obj, est_score: (M,) target image index, object and score of each estimate.
        im_gt_obj, im_gt_visib: per target image, the object id and visib_fract of each GT instance.
        obj_ids: the dataset's objects.

    Returns:
        ``(problem, pair_est, pair_gt)``: pairs in the problem's order, each an estimate and the gt_id (index
        in its image's GT list) of a GT instance of the estimate's object.
    """
    M = len(est_obj)
    new = np.ones(M, bool)
    if M > 1:
        new[1:] = (est_im[1:] != est_im[:-1]) | (est_obj[1:] != est_obj[:-1])
    starts = np.flatnonzero(new)
    est_group = np.cumsum(new) - 1
    ids_of = [
        [g for g, o in enumerate(im_gt_obj[int(est_im[s])]) if o == int(est_obj[s])] for s in starts.tolist()
    ]
    n_gt_g = np.array([len(ids) for ids in ids_of], np.int64)
    gt_id = np.array([g for ids in ids_of for g in ids], np.int64)
    gt_vis = [
        im_gt_visib[int(est_im[s])][g] for s, ids in zip(starts.tolist(), ids_of, strict=True) for g in ids
    ]
    group_gt_start = np.cumsum(n_gt_g) - n_gt_g
    per_est = n_gt_g[est_group]
    est_pair_start = np.cumsum(per_est) - per_est
    pair_est = np.repeat(np.arange(M), per_est)
    pair_flat = group_gt_start[est_group[pair_est]] + np.arange(len(pair_est)) - est_pair_start[pair_est]
    obj_ids = tuple(sorted(int(o) for o in obj_ids))
    index = {o: j for j, o in enumerate(obj_ids)}
    n_gt = np.zeros(len(obj_ids), np.int64)
    for objs, vis in zip(im_gt_obj, im_gt_visib, strict=True):
        for o, v in zip(objs, vis, strict=True):
            if v >= visib_gt_min and int(o) in index:
                n_gt[index[int(o)]] += 1
    problem = DetectionProblem(
        group_est_start=np.append(starts, M).astype(np.int64),
        group_n_gt=n_gt_g,
        group_gt_start=group_gt_start,
        gt_visib=np.array(gt_vis, np.float64),
        est_pair_start=est_pair_start,
        est_obj=np.asarray(est_obj),
        est_score=np.asarray(est_score, np.float64),
        est_list_rank=np.arange(M),
        obj_ids=obj_ids,
        n_gt=n_gt,
        visib_gt_min=visib_gt_min,
    )
    return problem, pair_est, gt_id[pair_flat]
