"""BopDataset on the real LM-O sample and the oracle, and `bopkd info`."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from bopkd.cli import app
from bopkd.data import BopDataset
from bopkd.data.summary import summarize
from bopkd.errors import MissingFileError


def test_lmo_sample_counts(lmo_sample_root):
    ds = BopDataset("lmo", lmo_sample_root)
    s = summarize(ds)
    assert [o["obj_id"] for o in s.objects] == [1, 5, 6, 8, 9, 10, 11, 12]
    (test,) = s.splits
    assert (test["split"], test["scenes"], test["images"], test["instances"], test["depth"]) == (
        "test",
        1,
        200,
        1517,
        False,
    )
    assert s.n_targets == 1445 and s.n_target_images == 200
    rgb = ds.rgb("test", 2, 3)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8


def test_missing_file_names_the_download_command(lmo_sample_root):
    ds = BopDataset("lmo", lmo_sample_root)
    with pytest.raises(
        MissingFileError, match=r"depth/000003.png: run: bopkd download lmo .*--parts test_bop19"
    ):
        ds.depth("test", 2, 3)


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(MissingFileError, match="bopkd download lmo"):
        BopDataset("lmo", tmp_path)


def test_oracle_depth_and_masks(oracle_root):
    ds = BopDataset("lmo", oracle_root)
    assert ds.has_depth("test")
    gts = ds.scene_gt("test", 2)
    im = sorted(gts)[0]
    d = ds.depth("test", 2, im)
    m = ds.mask("test", 2, im, 0, visib=True)
    assert d.shape == m.shape == (480, 640)
    assert (d[m] > 0).all()
    info = ds.scene_gt_info("test", 2)[im][0]
    assert m.sum() == info.px_count_visib


def test_cli_info_on_lmo_sample(lmo_sample_root):
    r = CliRunner().invoke(app, ["info", "lmo", "--root", str(lmo_sample_root)])
    assert r.exit_code == 0, r.output
    assert "1517" in r.output and "1445 targets" in r.output and "200" in r.output
    for obj_id in (1, 5, 6, 8, 9, 10, 11, 12):
        assert f"│ {obj_id:>6} │" in r.output


def test_cli_unknown_dataset_is_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "bopkd", "info", "nope", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "unknown dataset 'nope'" in r.stderr
