"""BOP'24 detection: per-image cap, selection, greedy matching, ignored GT and the 101-point AP."""

from __future__ import annotations

import numpy as np
import pytest

from bopkd.eval.bop24 import (
    IGNORED,
    RECALL_POINTS,
    TRUE_POSITIVE,
    average_precision,
    build_problem,
    cap_per_image,
    mean_average_precision,
    select_estimates,
)
from bopkd.eval.final_scores import bop24_scores

INF = np.inf


def _ap_by_definition(tp: list[bool], n_gt: int) -> float:
    """``score.calc_ap`` as written: sentinels (0, 0) and (1, 0), max precision at recall >= r, 101 points."""
    tp = np.asarray(tp, bool)
    rec = np.cumsum(tp) / float(n_gt)
    pre = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    mrec = np.concatenate(([0], rec, [1]))
    mpre = np.concatenate(([0], pre, [0]))
    return float(np.mean([np.max(mpre[mrec >= r]) for r in RECALL_POINTS]))


def _problem(images, ests, obj_ids=(1, 2, 3), limit=100):
    """Problem from images ``[[(obj, visib), ...], ...]`` (scene 0, im k) and file rows
    ``[(im, obj, score, {gt_id: error})]``; returns (problem, pair errors, evaluated rows)."""
    s = np.zeros(len(ests), np.int64)
    i = np.array([e[0] for e in ests], np.int64)
    o = np.array([e[1] for e in ests], np.int64)
    sc = np.array([e[2] for e in ests], np.float64)
    objs = [{ob for ob, _ in im} for im in images]
    rows, im_k, _ = select_estimates(s, i, o, sc, [(0, k) for k in range(len(images))], objs, limit)
    prob, pair_est, pair_gt = build_problem(
        im_k, o[rows], sc[rows], [[ob for ob, _ in im] for im in images], [np.array([v for _, v in im]) for im in images], obj_ids
    )  # fmt: skip
    errors = np.array([ests[rows[m]][3].get(int(g), INF) for m, g in zip(pair_est, pair_gt, strict=True)])
    return prob, errors, rows


def _reference_aps(images, ests, thresholds, obj_ids=(1, 2, 3), visib_min=0.1):
    """The toolkit's steps with plain Python lists, in its data layout (see bopkd/eval/bop24.py)."""
    # eval_calc_errors: per image (targets order), per object in GT, estimates sorted by score (stable).
    listed = []
    for k, im in enumerate(images):
        for obj in dict.fromkeys(ob for ob, _ in im):
            mine = [(r, e) for r, e in enumerate(ests) if e[0] == k and e[1] == obj]
            mine = sorted(mine, key=lambda x: x[1][2], reverse=True)
            listed += [(r, e) for r, e in mine]
    out = np.full((len(thresholds), len(obj_ids)), np.nan)
    for t, th in enumerate(thresholds):
        matched, ignored = set(), set()
        for k, im in enumerate(images):
            for obj in {ob for ob, _ in im}:
                taken: set[int] = set()
                for r, e in sorted(
                    [x for x in listed if x[1][0] == k and x[1][1] == obj], key=lambda x: -x[1][2]
                ):
                    best, best_err = -1, th
                    for g in sorted(e[3]):
                        if im[g][0] == obj and g not in taken and e[3][g] < best_err:
                            best, best_err = g, e[3][g]
                    if best >= 0:
                        taken.add(best)
                        (matched if im[best][1] >= visib_min else ignored).add(r)
        for j, obj in enumerate(obj_ids):
            n = sum(v >= visib_min for im in images for ob, v in im if ob == obj)
            if n == 0:
                continue
            seq = sorted(
                [x for x in listed if x[1][1] == obj and x[0] not in ignored], key=lambda x: -x[1][2]
            )
            out[t, j] = _ap_by_definition([r in matched for r, _ in seq], n)
    return out


def test_cap_keeps_the_best_scored_of_each_image_ties_in_file_order():
    s = np.array([1, 1, 1, 1, 2, 1])
    i = np.array([0, 0, 0, 0, 0, 0])
    sc = np.array([0.5, 0.9, 0.5, 0.7, 0.1, 0.95])
    # Image (1, 0): 0.95 (row 5), 0.9 (row 1), 0.7 (row 3), then the tie 0.5: row 0 before row 2.
    assert cap_per_image(s, i, sc, 4).tolist() == [5, 1, 3, 0, 4]
    assert cap_per_image(s, i, sc, 100).tolist() == [5, 1, 3, 0, 2, 4]
    assert cap_per_image(s, i, sc, 1).tolist() == [5, 4]


def test_selection_skips_absent_objects_and_non_target_images():
    images = [[(1, 1.0), (2, 1.0)], [(3, 0.5)]]
    ests = [
        (0, 1, 0.5, {0: 0.0}),
        (0, 3, 0.9, {}),  # object 3 has no GT in image 0: not evaluated (not a false positive)
        (1, 3, 0.2, {0: 0.0}),
        (5, 1, 0.9, {}),  # image 5 is not a target
        (0, 2, 0.7, {1: 0.0}),
    ]
    prob, _, rows = _problem(images, ests)
    assert rows.tolist() == [0, 4, 2]  # image order, then object, then score
    aps = prob.average_precisions(np.zeros(3), np.array([0.5]))
    np.testing.assert_array_equal(aps, [[1.0, 1.0, 1.0]])


def test_higher_score_takes_the_gt_and_ties_go_in_file_order():
    images = [[(1, 1.0)]]
    # Two estimates for one GT, both within the threshold: the higher-scored one is the match.
    for scores, first_wins in (((0.9, 0.4), True), ((0.4, 0.9), False), ((0.6, 0.6), True)):
        ests = [(0, 1, scores[0], {0: 0.2}), (0, 1, scores[1], {0: 0.1})]
        prob, err, rows = _problem(images, ests)
        res = prob.outcomes(prob.match(err, np.array([0.5])))[0]
        winner = rows[res == TRUE_POSITIVE].tolist()
        assert winner == ([0] if first_wins else [1])


def test_greedy_takes_the_lowest_error_even_on_an_invisible_gt():
    # Object 1 twice in the image; GT 0 barely visible. The estimate's lowest error is on GT 0: matched
    # there, so it is ignored (neither true nor false positive) and GT 1 stays a miss.
    images = [[(1, 0.05), (1, 0.8)]]
    prob, err, _ = _problem(images, [(0, 1, 0.9, {0: 0.1, 1: 0.2})])
    assert prob.n_gt.tolist() == [1, 0, 0]
    assert prob.outcomes(prob.match(err, np.array([0.5]))).tolist() == [[IGNORED]]
    assert prob.average_precisions(err, np.array([0.5]))[0, 0] == 0.0
    # At 0.15 GT 0 (error 0.1) still wins; at 0.05 no error passes.
    assert prob.match(err, np.array([0.15, 0.05])).tolist() == [[0], [-1]]
    # Equal errors: the lower gt_id.
    prob, err, _ = _problem(images, [(0, 1, 0.9, {0: 0.2, 1: 0.2})])
    assert prob.match(err, np.array([0.5])).tolist() == [[0]]


def test_a_duplicate_is_a_false_positive_that_lowers_later_precision():
    images = [[(1, 1.0)], [(1, 1.0)]]
    exact = [(0, 1, 0.9, {0: 0.0}), (1, 1, 0.7, {0: 0.0})]
    prob, err, _ = _problem(images, exact)
    assert prob.average_precisions(err, np.array([0.1]))[0, 0] == 1.0
    dup = [*exact, (0, 1, 0.8, {0: 0.0})]  # same pose as the first, lower score: the GT is taken
    prob, err, _ = _problem(images, dup)
    ap = prob.average_precisions(err, np.array([0.1]))[0, 0]
    # Ranking T, F, T: precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1.
    assert ap == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101, abs=1e-15)
    assert ap == _ap_by_definition([True, False, True], 2)


def test_score_ties_across_images_follow_the_targets_order():
    # A true positive in image 0 and a false positive in image 1 with the same score: image 0 ranks
    # first (the toolkit's list is in targets order), whatever the file order.
    images = [[(1, 1.0)], [(1, 1.0)]]
    for ests in (
        [(0, 1, 0.5, {0: 0.0}), (1, 1, 0.5, {0: 9.0})],
        [(1, 1, 0.5, {0: 9.0}), (0, 1, 0.5, {0: 0.0})],
    ):
        prob, err, _ = _problem(images, ests)
        assert prob.average_precisions(err, np.array([1.0]))[0, 0] == _ap_by_definition([True, False], 2)
    images = images[::-1]  # now the false positive's image is first
    ests = [(1, 1, 0.5, {0: 0.0}), (0, 1, 0.5, {0: 9.0})]
    prob, err, _ = _problem(images, ests)
    assert prob.average_precisions(err, np.array([1.0]))[0, 0] == _ap_by_definition([False, True], 2)
    assert _ap_by_definition([False, True], 2) < _ap_by_definition([True, False], 2)


def test_objects_without_gt_are_left_out_of_the_mean():
    ap = np.array([[0.5, np.nan, 1.0], [0.25, np.nan, 1.0]])
    assert mean_average_precision(ap, np.array([3, 0, 1])) == np.mean([np.mean([0.5, 0.25]), 1.0])
    assert mean_average_precision(ap, np.array([0, 0, 0])) is None
    s = bop24_scores({"mssd": 0.4, "mssd_mm": 0.1, "mspd": 0.6}, -1.0)
    assert s["bop24_mAP"] == 0.5 and s["bop25_mAP"] == 0.4 and s["bop25_mAP_mm"] == 0.1
    assert bop24_scores({"mssd": None, "mssd_mm": None, "mspd": None}, 1.0)["bop24_mAP"] is None


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    tp = rng.uniform(size=int(rng.integers(0, 60))) < rng.uniform()
    n_gt = max(n, int(tp.sum()))
    assert average_precision(tp, n_gt) == _ap_by_definition(list(tp), n_gt)


@pytest.mark.parametrize("seed", range(8))
def test_random_problems_equal_the_toolkit_steps(seed):
    """Ties (3 score values), duplicates, several instances, invisible GT, inf errors, absent objects."""
    rng = np.random.default_rng(seed)
    images = [
        [
            (int(rng.integers(1, 4)), float(rng.choice([0.0, 0.05, 0.1, 0.5, 1.0])))
            for _ in range(rng.integers(1, 5))
        ]
        for _ in range(5)
    ]
    ests = []
    for _ in range(40):
        k = int(rng.integers(0, 6))  # image 5 is not a target
        obj = int(rng.integers(1, 4))  # may be absent from the image
        errs = (
            {g: float(rng.uniform(0, 1)) for g, (o, _) in enumerate(images[k]) if o == obj} if k < 5 else {}
        )
        errs = {g: (INF if rng.uniform() < 0.15 else e) for g, e in errs.items()}
        ests.append((k, obj, float(rng.choice([0.3, 0.6, 0.9])), errs))
    ths = np.array([0.1, 0.3, 0.5, 0.9])
    prob, err, _ = _problem(images, ests)
    ours = prob.average_precisions(err, ths)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(_reference_aps(images, ests, ths)))
    np.testing.assert_array_equal(np.nan_to_num(ours), np.nan_to_num(_reference_aps(images, ests, ths)))
