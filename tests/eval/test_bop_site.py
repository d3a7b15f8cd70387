"""``bopkd check`` (bopkd.eval.bop_site): the rules of the BOP site's upload, one line per problem, exit 2;
BOP default-detections files (bopkd.data.detections) and the detector's time in the CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bopkd.cli import app
from bopkd.data.detections import detection_times, load_detections
from bopkd.errors import BopkdError
from bopkd.eval.bop_site import SITE_METHOD_RE, check_for_site, site_method_name
from bopkd.eval.submission import HEADER, Estimate
from bopkd.infer.export import image_times, write_submission
from bopkd.pipeline.presets import DEFAULT_METHODS

R = np.eye(3)
T = np.array([0.0, 0.0, 500.0])


def _write(path: Path, rows: list[tuple[int, int, int, float]], time: float = 0.5) -> Path:
    """Estimates ``(scene, im, obj, score)`` of LM-O's test split (a registered dataset: no folder needed)."""
    write_submission(path, [Estimate(s, i, o, c, R, T, time) for s, i, o, c in rows])
    return path


def test_a_valid_file_passes(tmp_path):
    p = _write(
        tmp_path / "bopkd-fkdot-tinycpu-s0_lmo-test.csv", [(2, 3, 1, 0.9), (2, 3, 5, 0.8), (2, 4, 1, 0.7)]
    )
    rep = check_for_site(p, tmp_path)
    assert rep.ok and rep.summary.startswith(f"OK {p}: 3 estimates, 2 images, 2 objects")
    r = CliRunner().invoke(app, ["check", str(p), "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output


def test_every_problem_is_one_line_naming_file_and_line_and_the_exit_status_is_2(tmp_path):
    rows = [(2, 3, 1, 0.9)]
    files = {
        "method": _write(tmp_path / "fkd+ot_lmo-test.csv", rows),
        "suffix": _write(tmp_path / "m_lmo-test_abc.csv", rows),
        "split": _write(tmp_path / "m_lmo-train.csv", rows),
        "dataset": _write(tmp_path / "m_nope-test.csv", rows),
        # line 2 is object 1; lines 3-4 are object 2 (not an LM-O object); 101 rows of image 7 from line 5
        "content": _write(
            tmp_path / "m2_lmo-test.csv",
            [(2, 3, 1, 0.9), (2, 3, 2, 0.8), (2, 4, 2, 0.8)] + [(2, 7, 5, k / 200) for k in range(101)],
        ),
    }
    times = tmp_path / "m3_lmo-test.csv"
    times.write_text(
        f"{HEADER}\n2,3,1,0.9,1 0 0 0 1 0 0 0 1,0 0 500,0.5\n2,3,5,0.8,1 0 0 0 1 0 0 0 1,0 0 500,0.7\n"
    )
    header = tmp_path / "m4_lmo-test.csv"
    header.write_text("2,3,1,0.9,1 0 0 0 1 0 0 0 1,0 0 500,0.5\n")
    problems = {k: check_for_site(p, tmp_path).problems for k, p in files.items()}
    assert problems["method"] == [
        f"{files['method']}: method 'fkd+ot' has characters the BOP site does not accept: use letters, digits "
        "and '-' only; rename it to fkdot_lmo-test.csv"
    ]
    assert "rename it to m_lmo-test.csv" in problems["suffix"][0] and len(problems["suffix"]) == 1
    assert (
        "not the BOP test split of lmo" in problems["split"][0] and "m_lmo-test.csv" in problems["split"][0]
    )
    assert "unknown dataset 'nope'" in problems["dataset"][0]
    content = problems["content"]
    assert len(content) == 2
    assert content[0].startswith(f"{files['content']}:3: column obj_id: object 2 is not an object of lmo")
    assert "2 row(s)" in content[0]
    assert content[1].startswith(f"{files['content']}:5: scene 2 image 7 has 101 estimates")
    assert "at most 100 per image" in content[1]
    (t,) = check_for_site(times, tmp_path).problems
    assert t.startswith(f"{times}:3: column time:") and "same time" in t
    (h,) = check_for_site(header, tmp_path).problems
    assert h.startswith(f"{header}:1: wrong header")

    all_files = [*files.values(), times, header]
    r = CliRunner().invoke(app, ["check", *map(str, all_files), "--root", str(tmp_path)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1] == f"{len(all_files)} of {len(all_files)} files would not be accepted by the BOP site"
    assert len(lines) == 1 + sum(map(len, problems.values())) + 2
    assert "Traceback" not in r.output


def test_gt_box_results_pass_with_a_note(tmp_path):
    p = _write(tmp_path / "m-oracle-gt-boxes_lmo-test.csv", [(2, 3, 1, 0.9)])
    p.with_name(p.name + ".json").write_text(json.dumps({"protocol": "oracle-gt-boxes"}))
    rep = check_for_site(p, tmp_path)
    assert rep.ok and any("not valid for submission" in n for n in rep.notes)


def test_method_names_are_mapped_to_what_the_site_accepts():
    from bopkd.pipeline.plan import result_method

    assert site_method_name("bopkd-fkd+ot-tinycpu-s0") == "bopkd-fkdot-tinycpu-s0"
    assert site_method_name("a_b.c--d-") == "abc-d"
    for m in DEFAULT_METHODS:
        name = result_method("student", "tiny-cpu", m, 0, "w2")
        assert SITE_METHOD_RE.match(name), name
    assert result_method("student", "tiny-cpu", "fkd+ot", 0) == "bopkd-fkdot-tinycpu-s0"
    with pytest.raises(BopkdError, match="no letter or digit"):
        site_method_name("+_")


def _det(**kw) -> dict:
    return {"scene_id": 2, "image_id": 3, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.5, **kw}


def test_bop_default_detections_are_read_and_their_time_is_added(tmp_path):
    p = tmp_path / "dets.json"
    seg = {"counts": "abc", "size": [480, 640]}  # RLE masks of segmentation detections are ignored
    rows = [_det(time=0.2, segmentation=seg), _det(score=0.9, time=0.2), _det(image_id=4, time=0.1)]
    rows.append(_det(image_id=5))  # no time: unknown
    p.write_text(json.dumps(rows))
    dets = load_detections(p)
    assert [d["score"] for d in dets[(2, 3)]] == [0.9, 0.5] and dets[(2, 3)][0]["box"] == (
        10.0,
        20.0,
        30.0,
        40.0,
    )
    times = detection_times(dets)
    assert times == {(2, 3): 0.2, (2, 4): 0.1, (2, 5): -1.0}
    own = {(2, 3): 0.05, (2, 4): 0.01, (2, 5): 0.02, (2, 6): 0.03}
    assert image_times(own, times) == pytest.approx({(2, 3): 0.25, (2, 4): 0.11, (2, 5): -1.0, (2, 6): 0.03})
    assert image_times(own, None) == own


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "not valid JSON"),
        ('{"annotations": []}', "a JSON dict, expected a list of detections"),
        ("[]", "no detections"),
        (json.dumps([_det(), 3]), "detection #1 is malformed \\(int 3, not an object\\)"),
        (json.dumps([{k: v for k, v in _det().items() if k != "category_id"}]), "no key 'category_id'"),
        (json.dumps([_det(bbox=[1, 2, 3])]), "bbox \\[1, 2, 3\\] is not \\[x, y, width, height\\]"),
        (json.dumps([_det(scene_id=-1)]), "scene_id -1 is not an id"),
        (json.dumps([_det(score="high")]), "score 'high' is not a finite number"),
    ],
)
def test_malformed_detections_are_one_line_naming_the_file_and_the_format(tmp_path, content, match):
    p = tmp_path / "dets.json"
    p.write_text(content)
    with pytest.raises(BopkdError, match=match) as e:
        load_detections(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)) and '"bbox": [x, y, width, height]' in msg
