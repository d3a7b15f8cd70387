"""Result file names, parsed as bop_toolkit_lib.inout.parse_result_filename does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bopkd.errors import BopkdError
from bopkd.eval.naming import ResultName, parse_result_name


@pytest.mark.parametrize(
    ("name", "method", "dataset", "split", "split_type", "suffix"),
    [
        ("bopkd-ot-student_lmo-test.csv", "bopkd-ot-student", "lmo", "test", None, ""),
        (
            "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv",
            "cnos-fastsammegapose",
            "lmo",
            "test",
            None,
            "16ab01bd-f020-4194-9750-d42fc7f875d2",
        ),
        ("gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv", "gt-pbrreal-rgb-mmodel", "lmo", "test", None, "lmo"),
        ("results_lmo-test.csv", "results", "lmo", "test", None, ""),
        ("some-method_tless-val-primesense.csv", "some-method", "tless", "val", "primesense", ""),
        ("m_tless-test-primesense_a_b.csv", "m", "tless", "test", "primesense", "a_b"),
        ("m_lmo-test", "m", "lmo", "test", None, ""),  # a result name without the extension
    ],
)
def test_parse_and_round_trip(name, method, dataset, split, split_type, suffix):
    for arg in (name, Path("/some/dir") / name):
        r = parse_result_name(arg)
        assert (r.method, r.dataset, r.split, r.split_type, r.suffix) == (
            method,
            dataset,
            split,
            split_type,
            suffix,
        )
    stem = name.removesuffix(".csv")
    assert str(r) == r.result_name == stem
    assert r.filename == stem + ".csv"
    assert parse_result_name(r.filename) == r


def test_fixture_names_parse(lmo_sample_root):
    for p in sorted((lmo_sample_root / "results").glob("*.csv")):
        r = parse_result_name(p)
        assert r.dataset == "lmo" and r.split == "test" and r.filename == p.name


def test_split_folder():
    assert ResultName("m", "tless", "test", "primesense").split_folder == "test_primesense"
    assert ResultName("m", "lmo", "test").split_folder == "test"


@pytest.mark.parametrize(
    "bad",
    [
        "lmo-test.csv",  # no method
        "m_lmo.csv",  # no split
        "m_lmo-test-a-b.csv",  # too many '-' parts
        "m_lmo-test.json",  # not a pose CSV
        "m_lmo-test.csv.bak",
        "m_-test.csv",
        "_lmo-test.csv",
        "my_method_lmo-test.csv",  # '_' in the method: 'method' is read as DATASET-SPLIT
        "m_lmo-test_.csv",
    ],
)
def test_malformed_names_raise_one_line(bad):
    with pytest.raises(BopkdError) as ei:
        parse_result_name(bad)
    msg = str(ei.value)
    assert msg.startswith(bad) and "\n" not in msg and "METHOD_DATASET-SPLIT" in msg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "my_method", "dataset": "lmo", "split": "test"},
        {"method": "m.v2", "dataset": "lmo", "split": "test"},
        {"method": "m", "dataset": "lm-o", "split": "test"},
        {"method": "m", "dataset": "lmo", "split": "te_st"},
        {"method": "m", "dataset": "lmo", "split": "test", "split_type": "a-b"},
        {"method": "m", "dataset": "lmo", "split": "test", "suffix": "a.b"},
    ],
)
def test_building_a_bad_name_raises(kwargs):
    with pytest.raises(BopkdError, match="not allowed in a BOP result file name"):
        ResultName(**kwargs)
