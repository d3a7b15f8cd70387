"""Toolkit-exact selection of estimates, GT validity and greedy matching."""

from __future__ import annotations

import numpy as np
import pytest

from bopkd.eval.matching import (
    MatchingProblem,
    greedy_match,
    recall,
    select_top_estimates,
    valid_gt_mask,
)

INF = np.inf


def test_greedy_takes_estimates_in_order_and_the_lowest_error():
    # Rows: estimates by descending score; columns: GT instances.
    err = np.array([[0.3, 0.1], [0.2, 0.05]])
    # First estimate takes GT 1 (lowest), the second gets GT 0 although GT 1 suits it better.
    np.testing.assert_array_equal(greedy_match(err, np.array([True, True]), 0.5), [1, 0])
    # With a lower threshold the second estimate's only free GT is too far.
    np.testing.assert_array_equal(greedy_match(err, np.array([True, True]), 0.15), [1, -1])
    # Invalid GT are never matched.
    np.testing.assert_array_equal(greedy_match(err, np.array([True, False]), 0.5), [0, -1])


def test_threshold_is_strict_and_ties_go_to_the_lowest_gt_id():
    err = np.array([[0.2, 0.2]])
    np.testing.assert_array_equal(greedy_match(err, np.array([True, True]), 0.2), [-1])
    np.testing.assert_array_equal(greedy_match(err, np.array([True, True]), 0.2000001), [0])
    np.testing.assert_array_equal(greedy_match(np.array([[INF]]), np.array([True]), 1e300), [-1])


def test_select_top_estimates_order_ties_and_inst_count():
    # Rows of one file: (scene, im, obj, score).
    rows = [
        (1, 0, 5, 0.5),  # 0
        (1, 0, 5, 0.9),  # 1
        (1, 0, 6, 0.7),  # 2  obj 6 is not a target of image 0
        (1, 0, 5, 0.9),  # 3  tie with row 1: file order decides
        (1, 1, 5, 0.1),  # 4
        (1, 0, 5, 0.95),  # 5
    ]
    s, i, o, sc = (np.array(c) for c in zip(*rows, strict=True))
    keep, est_id = select_top_estimates(s, i, o, sc, [(1, 0, 5, 2), (1, 1, 5, 1), (1, 2, 5, 1)])
    # Image 0, obj 5: scores 0.95 (row 5), then the first 0.9 (row 1); image 1: row 4.
    assert keep.tolist() == [5, 1, 4]
    # est_id: index among the (scene, im, obj) rows in file order.
    assert est_id.tolist() == [3, 1, 0]
    keep, _ = select_top_estimates(s, i, o, sc, [(1, 0, 5, 10)])
    assert keep.tolist() == [5, 1, 3, 0]  # more allowed than present: all, by score
    keep, _ = select_top_estimates(s, i, o, sc, [])
    assert keep.tolist() == []


def test_valid_gt_most_visible_first_ties_in_gt_order():
    objs = [5, 5, 6, 5, 7]
    vis = [0.2, 0.9, 0.5, 0.9, 1.0]
    # Two instances of 5 wanted: the two 0.9 ones (gt 1 and 3); one of 6; 7 is not a target.
    np.testing.assert_array_equal(valid_gt_mask(objs, vis, {5: 2, 6: 1}), [False, True, True, True, False])
    # One instance of 5: gt 1 (tie with gt 3, lower gt_id first).
    np.testing.assert_array_equal(valid_gt_mask(objs, vis, {5: 1}), [False, True, False, False, False])
    # More wanted than present: all of them.
    np.testing.assert_array_equal(valid_gt_mask(objs, vis, {6: 3}), [False, False, True, False, False])


def _problem_from_groups(groups, obj_ids):
    """Build a MatchingProblem from [(obj, errors (E, G), valid (G,))] and brute-force reference counts."""
    pair_group, pair_est, pair_gt, pair_valid, errs = [], [], [], [], []
    for gi, (_, e, v) in enumerate(groups):
        E, G = e.shape
        for a in range(E):
            for b in range(G):
                pair_group.append(gi)
                pair_est.append(a)
                pair_gt.append(b)
                pair_valid.append(v[b])
                errs.append(e[a, b])
    n_targets = np.array([sum(int(v.sum()) for o, _, v in groups if o == oo) for oo in obj_ids])
    prob = MatchingProblem(
        n_groups=len(groups),
        group_obj=np.array([g[0] for g in groups]),
        group_n_est=np.array([g[1].shape[0] for g in groups]),
        group_n_gt=np.array([g[1].shape[1] for g in groups]),
        pair_group=np.array(pair_group, np.int64),
        pair_est=np.array(pair_est, np.int64),
        pair_gt=np.array(pair_gt, np.int64),
        pair_valid=np.array(pair_valid, bool),
        obj_ids=tuple(obj_ids),
        n_targets=n_targets,
    )
    return prob, np.array(errs)


def test_vectorised_counts_equal_greedy_matching_everywhere():
    rng = np.random.default_rng(3)
    obj_ids = (1, 2, 3)
    groups = []
    for _ in range(60):
        E, G = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        e = rng.uniform(0, 1, (E, G))
        e[rng.uniform(size=(E, G)) < 0.15] = INF
        v = rng.uniform(size=G) < 0.8
        groups.append((int(rng.choice(obj_ids)), e, v))
    prob, errs = _problem_from_groups(groups, obj_ids)
    ths = np.linspace(0.05, 0.95, 7)
    tp = prob.true_positives(errs, ths)
    assert tp.shape == (1, 7, 3)
    for k, th in enumerate(ths):
        ref = np.zeros(3, np.int64)
        for o, e, v in groups:
            ref[obj_ids.index(o)] += int(np.count_nonzero(greedy_match(e, v, th) >= 0))
        np.testing.assert_array_equal(tp[0, k], ref)
    # Several error variants at once (as the VSD taus) give the per-variant counts.
    tp2 = prob.true_positives(np.stack([errs, errs * 2], axis=1), ths)
    np.testing.assert_array_equal(tp2[0], tp[0])
    np.testing.assert_array_equal(tp2[1], prob.true_positives(errs * 2, ths)[0])


def test_duplicates_missing_and_extra_estimates():
    # Group A: two estimates (wrong one scores higher) for one GT; group B: no estimate (missing);
    # group C: an estimate for an object with no valid GT.
    groups = [
        (1, np.array([[0.9], [0.01]]), np.array([True])),  # only one GT: the wrong top estimate loses it
        (2, np.array([[0.01]]), np.array([False])),
    ]
    prob, errs = _problem_from_groups(groups, (1, 2, 3))
    prob.n_targets = np.array([1, 1, 1])  # obj 2 has a valid GT elsewhere, obj 3 is missing entirely
    tp = prob.true_positives(errs, np.array([0.5]))
    # Group A: the first estimate fails (0.9), the second (0.01) still matches the free GT.
    np.testing.assert_array_equal(tp[0, 0], [1, 0, 0])
    np.testing.assert_allclose(recall(tp[0, 0], prob.n_targets), [1.0, 0.0, 0.0])


def test_recall_with_no_targets_is_zero():
    assert recall(0, 0) == 0.0
    assert recall(3, 4) == 0.75


@pytest.mark.parametrize("n_est", [1, 2])
def test_inf_errors_are_never_matched(n_est):
    groups = [(1, np.full((n_est, 2), INF), np.array([True, True]))]
    prob, errs = _problem_from_groups(groups, (1,))
    assert prob.true_positives(errs, np.array([1e308])).sum() == 0
