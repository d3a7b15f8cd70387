"""BOP'19 result CSVs: exact round trips, every validation error with its line and column, real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from bopkd.errors import BopkdError, MissingFileError
from bopkd.eval import submission as sub
from bopkd.eval.submission import (
    HEADER,
    Estimate,
    read_submission,
    read_submission_arrays,
)
from bopkd.infer.export import write_submission

LMO_IDS = (1, 5, 6, 8, 9, 10, 11, 12)
FIXTURE_ROWS = {
    "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv": 1645,
    "gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv": 1445,
    "unittest-minVisib0_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv": 1517,
    "results_lmo-test.csv": 1427,
}


def random_estimates(n: int, seed: int = 0) -> list[Estimate]:
    rng = np.random.default_rng(seed)
    Rs = Rotation.random(n, random_state=seed).as_matrix()
    out = []
    for k in range(n):
        im = int(rng.integers(0, 5))
        out.append(
            Estimate(
                scene_id=2,
                im_id=im,
                obj_id=int(rng.choice(LMO_IDS)),
                score=float(rng.random() * 10.0 ** rng.integers(-8, 3)),
                R=Rs[k],
                t=rng.normal(0, 300, 3) + [0, 0, 1000],
                time=-1.0 if im % 2 else 0.1 * (im + 1) / 3,
            )
        )
    return out


# --------------------------------------------------------------------------------------------- round trip


def test_round_trip_is_exact(tmp_path):
    ests = random_estimates(200)
    p = tmp_path / "m_lmo-test.csv"
    write_submission(p, ests)
    back = read_submission(p, obj_ids=LMO_IDS)
    assert back == ests
    # bit-exact, field by field (Estimate.__eq__ uses array_equal; check dtype too)
    for a, b in zip(ests, back, strict=True):
        assert b.R.dtype == np.float64 and b.R.shape == (3, 3) and b.t.shape == (3,)
        assert a.R.tobytes() == b.R.tobytes() and a.t.tobytes() == b.t.tobytes()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_round_trip_any_finite_floats(tmp_path_factory, t, score, time):
    p = tmp_path_factory.mktemp("rt") / "m_lmo-test.csv"
    R = Rotation.from_rotvec([t[0] % 3, 0.3, -1.0]).as_matrix()
    e = Estimate(1, 2, 3, score, R, t, time)
    write_submission(p, [e])
    assert read_submission(p) == [e]


def test_estimate_accepts_toolkit_shapes_and_is_readonly():
    e = Estimate(1, 2, 3, 1, np.eye(3).reshape(9), np.array([[1.0], [2.0], [3.0]]))
    assert e.R.shape == (3, 3) and e.t.shape == (3,) and e.time == -1.0
    with pytest.raises(ValueError):
        e.t[0] = 5


def test_fast_and_careful_parsers_agree(tmp_path):
    p = tmp_path / "m_lmo-test.csv"
    write_submission(p, random_estimates(50, seed=3))
    rows = p.read_text().splitlines()[1:]
    fast = sub._fast_parse(rows)
    careful = sub._careful_parse(p, rows, first_line=2)
    assert fast is not None
    for k in careful:
        assert np.array_equal(fast[k], careful[k]), k
        assert fast[k].dtype == careful[k].dtype


def test_crlf_no_final_newline_and_bom_are_read(tmp_path):
    p = tmp_path / "m_lmo-test.csv"
    rows = [HEADER, "2,3,5,0.5,1 0 0 0 1 0 0 0 1,1 2 3,-1", "2,4,5,0.25,1 0 0 0 1 0 0 0 1,1 2 3,0.5"]
    p.write_bytes(("\ufeff" + "\r\n".join(rows)).encode())
    a = read_submission_arrays(p)
    assert a["im_id"].tolist() == [3, 4] and a["line"].tolist() == [2, 3]
    assert a["time"].tolist() == [-1.0, 0.5]


# --------------------------------------------------------------------------------------------- errors

GOOD = [
    "2,3,5,0.9,1 0 0 0 1 0 0 0 1,10 20 1000,0.5",
    "2,3,6,0.8,0 -1 0 1 0 0 0 0 1,-10 20 900,0.5",
    "2,4,5,0.7,1 0 0 0 -1 0 0 0 -1,0 0 800,0.25",
]


def _file(tmp_path: Path, lines: list[str], name: str = "x_lmo-test.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _with_row(k: int, row: str) -> list[str]:
    rows = list(GOOD)
    rows[k] = row
    return [HEADER, *rows]


@pytest.mark.parametrize(
    ("lines", "where", "pattern"),
    [
        (["scene_id,im_id,obj_id,score,R,t", *GOOD], 1, r"wrong header"),
        (GOOD, 1, r"wrong header"),  # header missing
        ([HEADER, GOOD[0], HEADER, GOOD[1]], 3, r"duplicate header"),
        ([HEADER, GOOD[0], "", GOOD[1]], 3, r"empty line"),
        (
            _with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0 1,-10 20 900"),
            3,
            r"6 comma-separated columns, expected 7",
        ),
        (_with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0,-10 20 900,0.5"), 3, r"column R: 8 values, expected 9"),
        (_with_row(2, "2,4,5,0.7,1 0 0 0 -1 0 0 0 -1,0 0 800 1,0.25"), 4, r"column t: 4 values, expected 3"),
        (
            _with_row(0, "2,3,5,high,1 0 0 0 1 0 0 0 1,10 20 1000,0.5"),
            2,
            r"column score: 'high' is not a number",
        ),
        (
            _with_row(0, "2,3.0,5,0.9,1 0 0 0 1 0 0 0 1,10 20 1000,0.5"),
            2,
            r"column im_id: '3.0' is not an integer",
        ),
        (
            _with_row(0, "2,3,x5,0.9,1 0 0 0 1 0 0 0 1,10 20 1000,0.5"),
            2,
            r"column obj_id: 'x5' is not an integer",
        ),
        (_with_row(0, "-2,3,5,0.9,1 0 0 0 1 0 0 0 1,10 20 1000,0.5"), 2, r"column scene_id: -2 is negative"),
        (
            _with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0 1,-10 nan 900,0.5"),
            3,
            r"column t: 'nan' is not a finite number",
        ),
        (
            _with_row(2, "2,4,5,inf,1 0 0 0 -1 0 0 0 -1,0 0 800,0.25"),
            4,
            r"column score: 'inf' is not a finite",
        ),
        (
            _with_row(2, "2,4,5,0.7,1 0 0 0 -1 0 0 0 -1,0 0 800,-inf"),
            4,
            r"column time: '-inf' is not a finite",
        ),
        (
            _with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0 1,-10 20 900,0.6"),
            3,
            r"column time: 0.6 differs from 0.5 on line 2",
        ),
        (
            _with_row(2, "2,4,5,0.7,1 0 0 0 -1 0 0 0 -1,0 0 800,-2"),
            4,
            r"column time: -2.0 is negative; use -1",
        ),
        (
            _with_row(1, "2,3,6,0.8,0 -1.1 0 1.1 0 0 0 0 1,-10 20 900,0.5"),
            3,
            r"column R: not a rotation matrix \(max",
        ),
        (
            _with_row(2, "2,4,5,0.7,1 0 0 0 1 0 0 0 -1,0 0 800,0.25"),
            4,
            r"column R: not a rotation matrix \(det -1",
        ),
        (
            _with_row(2, "2,4,7,0.7,1 0 0 0 -1 0 0 0 -1,0 0 800,0.25"),
            4,
            r"column obj_id: object 7 is not an object",
        ),
    ],
)
def test_each_error_names_file_line_and_column(tmp_path, lines, where, pattern):
    p = _file(tmp_path, lines)
    with pytest.raises(BopkdError) as ei:
        read_submission_arrays(p, obj_ids=LMO_IDS)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{where}: "), msg
    assert "\n" not in msg and "; " in msg  # one line, with a fix
    assert re.search(pattern, msg), msg


def test_time_within_toolkit_tolerance_is_consistent(tmp_path):
    p = _file(tmp_path, _with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0 1,-10 20 900,0.5009"))
    assert len(read_submission(p)) == 3


def test_rotation_check_can_be_disabled(tmp_path):
    p = _file(tmp_path, _with_row(2, "2,4,5,0.7,2 0 0 0 1 0 0 0 1,0 0 800,0.25"))
    with pytest.raises(BopkdError, match="not a rotation"):
        read_submission(p)
    assert read_submission(p, check_rotation=False)[2].R[0, 0] == 2.0


def test_error_message_matches_the_spec_example(tmp_path):
    p = _file(tmp_path, _with_row(1, "2,3,6,0.8,0 -1 0 1 0 0 0 0,-10 20 900,0.5"))
    with pytest.raises(BopkdError) as ei:
        read_submission(p)
    assert (
        str(ei.value)
        == f"{p}:3: column R: 8 values, expected 9 separated by spaces; fix the row or regenerate the file"
    )


def test_missing_empty_and_header_only_files(tmp_path):
    with pytest.raises(MissingFileError, match="missing file"):
        read_submission(tmp_path / "nope_lmo-test.csv")
    with pytest.raises(BopkdError, match="not a file"):
        read_submission(tmp_path)
    empty = tmp_path / "e_lmo-test.csv"
    empty.write_text("")
    with pytest.raises(BopkdError, match=rf"^{empty}: empty file"):
        read_submission(empty)
    empty.write_text("\n\n")
    with pytest.raises(BopkdError, match="empty file"):
        read_submission(empty)
    hdr = _file(tmp_path, [HEADER])
    with pytest.raises(BopkdError, match="no estimates after the header"):
        read_submission(hdr)
    binary = tmp_path / "b_lmo-test.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BopkdError, match="not a UTF-8 text file"):
        read_submission(binary)


# --------------------------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def results_dir(lmo_sample_root):
    return lmo_sample_root / "results"


@pytest.mark.parametrize(("name", "n"), sorted(FIXTURE_ROWS.items()))
def test_real_result_files_read_and_match_pandas(results_dir, name, n):
    p = results_dir / name
    a = read_submission_arrays(p, obj_ids=LMO_IDS)
    assert len(a["score"]) == n
    # independent reference: pandas parses the same columns
    df = pd.read_csv(p)
    assert list(df.columns) == HEADER.split(",")
    for c in ("scene_id", "im_id", "obj_id"):
        assert np.array_equal(a[c], df[c].to_numpy())
    assert np.array_equal(a["score"], df["score"].to_numpy(dtype=np.float64))
    assert np.array_equal(a["time"], df["time"].to_numpy(dtype=np.float64))
    R = np.array([[float(v) for v in s.split()] for s in df["R"]]).reshape(-1, 3, 3)
    t = np.array([[float(v) for v in s.split()] for s in df["t"]])
    assert np.array_equal(a["R"], R) and np.array_equal(a["t"], t)
    assert a["line"][0] == 2 and a["line"][-1] == n + 1
    ests = read_submission(p)
    assert len(ests) == n and ests[5].obj_id == a["obj_id"][5]


def test_real_file_round_trips(results_dir, tmp_path):
    src = results_dir / "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv"
    ests = read_submission(src)
    out = tmp_path / src.name
    write_submission(out, ests)
    assert read_submission(out) == ests


@pytest.mark.parametrize("big", [0, 2**40])
def test_time_consistency_per_image_with_any_ids(big):
    a = {
        "scene_id": np.array([1, 1, 2, 1], dtype=np.int64),
        "im_id": np.array([5, 6, 5, 5], dtype=np.int64) + big,
        "obj_id": np.array([1, 1, 1, 1], dtype=np.int64),
        "score": np.ones(4),
        "R": np.tile(np.eye(3), (4, 1, 1)),
        "t": np.zeros((4, 3)),
        "time": np.array([0.5, 0.7, 0.9, 0.5]),
    }
    sub.validate_arrays(a)  # three images, each with one time
    a["time"][3] = 0.6
    with pytest.raises(BopkdError, match=r"row 3: column time: 0.6 differs from 0.5 on row 0"):
        sub.validate_arrays(a)
    assert sub.average_time_per_image(
        a["scene_id"], a["im_id"], np.array([0.5, 0.7, 0.9, 0.5])
    ) == pytest.approx(0.7)
