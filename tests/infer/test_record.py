"""The prediction sidecar (bopkd.infer.record): JSON round trip, a sidecar written by bopkd predict, and
one-line errors for files that are not one."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from bopkd.config import to_dict
from bopkd.errors import BopkdError
from bopkd.infer.record import PredictionRecord, read_record, sidecar_path

DATA = Path(__file__).parent / "data"
#: A sidecar of the distillation study, as bopkd predict wrote it (the key order is the record's).
REAL = DATA / "bopkd-ot-tinycpu-s0-study-oracle-gt-boxes_lmosynth-test.csv.json"
REPO_RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_a_real_sidecar_parses_and_writes_back_byte_identical(tmp_path):
    rec = read_record(REAL)
    assert (rec.role, rec.backbone, rec.kd_method, rec.protocol) == (
        "student",
        "tiny-cpu",
        "ot",
        "oracle-gt-boxes",
    )
    assert rec.input_size == (96, 96) and rec.macs == 23585472 and rec.n_time_unknown == 0
    assert rec.predict["score_th"] == 0.1 and rec.versions["bopkd"] == "0.1.0"
    assert rec.run_dir() == Path("/work/study/runs/lmosynth-study/train/student-tiny-cpu-ot-s0-034581e85f")
    assert rec.family == "sparse"  # a sidecar written before the dense family existed
    assert [*json.loads(REAL.read_text()), "family"] == [f.name for f in fields(PredictionRecord)]
    out = tmp_path / "copy.csv.json"
    rec.write(out)
    assert out.read_bytes() == REAL.read_bytes()
    assert read_record(out) == rec


def test_the_sidecars_in_the_results_folder_parse():
    """Every sidecar in the repository's results/ (git-ignored: a user's own runs) and the checked-in one."""
    for path in [*sorted(REPO_RESULTS.glob("*.csv.json")), REAL]:
        assert read_record(path).result_name == path.name[: -len(".csv.json")]


def test_round_trip_of_a_detections_run(tmp_path):
    d = {
        **json.loads(REAL.read_text()),
        "protocol": "detections",
        "oracle": False,
        "box_source": "detections",
        "detections": "dets.json",
        "macs": None,
        "n_time_unknown": 3,
    }
    rec = read_record(_write(tmp_path / "a.csv.json", d))
    assert rec.detections == "dets.json" and rec.macs is None and rec.box_source == "detections"
    assert to_dict(rec) == {**d, "family": "sparse"}
    assert sidecar_path(tmp_path / "a.csv") == tmp_path / "a.csv.json"


def _write(path: Path, d) -> Path:
    path.write_text(d if isinstance(d, str) else json.dumps(d))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_estimates": None}, "'n_estimates'.*expected an integer"),
        ({"protocol": "oracle"}, "'protocol'.*not allowed.*'oracle-gt-boxes'"),
        ({"input_size": [96]}, "'input_size'.*a list of 2"),
        ({"oracle": False}, "oracle=False contradicts protocol 'oracle-gt-boxes'"),
        ({"speed": {"ms_per_image": 1.0}}, "'speed'.*unknown"),
        ({"time_include": "x"}, "did you mean 'time_includes'"),
    ],
)
def test_a_malformed_sidecar_is_a_one_line_error_naming_the_file_and_the_fix(tmp_path, change, message):
    path = _write(tmp_path / "x.csv.json", {**json.loads(REAL.read_text()), **change})
    with pytest.raises(BopkdError, match=message) as e:
        read_record(path)
    _one_line_naming(e.value, path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "unreadable prediction sidecar"),
        ("[]", "holds a JSON object, got list"),
        (
            json.dumps({"protocol": "oracle-gt-boxes", "role": "teacher"}),
            "without key.*result_name.*n_time_unknown",
        ),
    ],
)
def test_a_file_that_is_not_a_sidecar_is_a_one_line_error(tmp_path, text, message):
    path = _write(tmp_path / "x.csv.json", text)
    with pytest.raises(BopkdError, match=message) as e:
        read_record(path)
    _one_line_naming(e.value, path)


def _one_line_naming(err: BopkdError, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg and msg.startswith(str(path)) and "re-run `bopkd predict`" in msg


def test_a_dense_run_states_its_family_and_a_sparse_one_is_written_as_before(tmp_path):
    rec = read_record(REAL)
    dense = PredictionRecord(**{**to_dict(rec), "family": "dense", "input_size": (64, 64)})
    dense.write(tmp_path / "d.csv.json")
    written = json.loads((tmp_path / "d.csv.json").read_text())
    assert list(written)[-1] == "family" and written["family"] == "dense"
    assert read_record(tmp_path / "d.csv.json") == dense
    rec.write(tmp_path / "s.csv.json")
    assert "family" not in json.loads((tmp_path / "s.csv.json").read_text())
    with pytest.raises(BopkdError, match="family"):
        read_record(_write(tmp_path / "bad.csv.json", {**json.loads(REAL.read_text()), "family": "both"}))
