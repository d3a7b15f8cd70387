"""BOP'19 result CSV export (bopkd.infer.export): the toolkit's layout, checked atomic writes, per-image
times with the detector's, the per-image limit, the mean time of the sidecar."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bopkd.errors import BopkdError
from bopkd.eval.submission import HEADER, Estimate, read_submission
from bopkd.infer.export import best_estimates, format_row, image_times, mean_ms_per_image, write_submission
from tests.eval.test_submission import random_estimates


def test_written_layout_matches_bop19(tmp_path):
    e = Estimate(2, 3, 5, 0.5, np.eye(3), [1.0, 2.5, 1000.0], -1)
    p = tmp_path / "m_lmo-test.csv"
    write_submission(p, [e])
    text = p.read_text()
    assert text == HEADER + "\n" + "2,3,5,0.5,1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0,1.0 2.5 1000.0,-1\n"
    # independent reader: what the toolkit's load_bop_results does (split at ',' then at whitespace)
    elems = text.splitlines()[1].split(",")
    assert len(elems) == 7 and len(elems[4].split()) == 9 and len(elems[5].split()) == 3


def test_write_is_atomic_and_checks_values(tmp_path):
    p = tmp_path / "m_lmo-test.csv"
    write_submission(p, random_estimates(3))
    before = p.read_bytes()
    bad = Estimate(2, 0, 1, 1.0, np.eye(3), [0, 0, math.nan], -1)
    with pytest.raises(BopkdError, match=r"row 1: column t: not a finite number"):
        write_submission(p, [random_estimates(1)[0], bad])
    assert p.read_bytes() == before  # nothing lost
    with pytest.raises(BopkdError, match="no estimates to write"):
        write_submission(p, [])
    t1 = Estimate(2, 7, 1, 1.0, np.eye(3), [0, 0, 1], 0.5)
    t2 = Estimate(2, 7, 5, 1.0, np.eye(3), [0, 0, 1], 0.7)
    with pytest.raises(BopkdError, match="column time"):
        write_submission(p, [t1, t2])
    assert list(tmp_path.iterdir()) == [p]  # no temporary files left


def test_format_row_is_the_shortest_exact_text():
    e = Estimate(1, 2, 3, 0.1 + 0.2, np.eye(3), [1.0 / 3, 0.0, -5.0], 1e-4)
    assert format_row(e) == (
        "1,2,3,0.30000000000000004,1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0,0.3333333333333333 0.0 -5.0,0.0001"
    )


def test_image_times_add_the_detector_time_and_mark_unknown_ones():
    own = {(2, 3): 0.05, (2, 4): 0.01, (2, 5): 0.02}
    det = {(2, 3): 0.2, (2, 5): -1.0}
    assert image_times(own, det) == pytest.approx({(2, 3): 0.25, (2, 4): 0.01, (2, 5): -1.0})
    assert image_times(own, None) == own and image_times(own, None) is not own
    # the sidecar's ms/image: images of unknown time left out; all unknown: our own time
    assert mean_ms_per_image({(2, 3): 0.25, (2, 5): -1.0}, own) == pytest.approx(250.0)
    assert mean_ms_per_image({(2, 5): -1.0}, {(2, 5): 0.02}) == pytest.approx(20.0)


def test_best_estimates_keep_the_toolkits_limit_per_image_in_input_order(tmp_path):
    R, t = np.eye(3), np.array([0.0, 0.0, 500.0])
    found = [((0, 1), 1 + k % 8, float(k % 7), R, t) for k in range(130)] + [((0, 2), 5, 0.5, R, t)]
    ests = best_estimates(found, {(0, 1): 0.1, (0, 2): -1.0}, "lmo")
    # the BOP toolkit evaluates 100 per image: scores 6..2 (92 rows), the first 8 of score 1, in input order
    kept = sorted([k for k in range(130) if k % 7 >= 2] + [k for k in range(130) if k % 7 == 1][:8])
    assert [(e.obj_id, e.score) for e in ests[:100]] == [(1 + k % 8, float(k % 7)) for k in kept]
    assert len(ests) == 101 and {e.time for e in ests[:100]} == {0.1} and ests[-1].time == -1.0
    write_submission(tmp_path / "m_lmo-test.csv", ests)
    assert read_submission(tmp_path / "m_lmo-test.csv") == ests
