"""The dataset registry and folder-described datasets."""

from __future__ import annotations

import json

import pytest

from bopkd.data.registry import DATASETS, DESCRIPTOR_NAME, DatasetSpec, get_spec, known_names
from bopkd.errors import BopkdError


def test_registered_datasets_have_what_users_need():
    for name in ("lmo", "lm", "ycbv", "tless"):
        s = DATASETS[name]
        assert s.obj_ids and set(s.symmetric_obj_ids) <= set(s.obj_ids)
        assert s.im_size[0] > 0 and s.test_scene_ids and s.depth_range and s.vsd_delta == 15.0
        assert {"base", "models", "test_bop19", "test_all", "train_pbr"} <= set(s.parts)
    assert DATASETS["lmo"].obj_ids == (1, 5, 6, 8, 9, 10, 11, 12)
    assert DATASETS["lmo"].symmetric_obj_ids == (10, 11)
    # LM-O's PBR images are LM's archive.
    (pbr,) = DATASETS["lmo"].parts["train_pbr"]
    assert (pbr.repo, pbr.name) == ("lm", "lm_train_pbr.zip")
    assert DATASETS["lmo"].parts["base"][0].extract_to == "root"


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(BopkdError, match=r"unknown dataset 'nope'.*known: lm, lmo, tless, ycbv"):
        get_spec("nope", tmp_path)


def test_descriptor_round_trip(tmp_path):
    spec = DatasetSpec(
        name="demo",
        title="demo",
        obj_ids=(1, 2),
        symmetric_obj_ids=(2,),
        im_size=(160, 120),
        test_scene_ids=(1,),
        splits=("train_pbr", "test"),
        registered=False,
    )
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / DESCRIPTOR_NAME).write_text(json.dumps(spec.to_descriptor()))
    assert get_spec("demo", tmp_path) == spec
    assert "demo" in known_names(tmp_path)
    (tmp_path / "demo" / DESCRIPTOR_NAME).write_text("{}")
    with pytest.raises(BopkdError, match="malformed dataset descriptor"):
        get_spec("demo", tmp_path)
    bad = {**spec.to_descriptor(), "obj_ids": [1, "two"]}
    (tmp_path / "demo" / DESCRIPTOR_NAME).write_text(json.dumps(bad))
    with pytest.raises(BopkdError, match=r"'obj_ids' \(from .*bopkd_dataset.json\): expected an integer"):
        get_spec("demo", tmp_path)


def test_descriptor_overrides_registry_for_synthetic_lookalike(oracle_root):
    # The oracle is named lmo and has no descriptor: the registry describes it.
    assert get_spec("lmo", oracle_root).registered


def test_plain_bop_folder_is_described_by_its_content(tmp_path, lmo_sample_root):
    import shutil

    mine = tmp_path / "mybop"
    shutil.copytree(lmo_sample_root / "lmo", mine, ignore=shutil.ignore_patterns("rgb", "*.ply"))
    s = get_spec("mybop", tmp_path)
    assert not s.registered and s.obj_ids == (1, 5, 6, 8, 9, 10, 11, 12)
    assert s.symmetric_obj_ids == (10, 11) and s.test_scene_ids == (2,) and s.im_size == (640, 480)
