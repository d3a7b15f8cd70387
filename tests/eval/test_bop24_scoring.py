"""BOP'24/'25 mAP of whole result files: the toolkit's published numbers (real LM-O), edge cases, files, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bopkd.errors import BopkdError
from bopkd.eval.bop24_scoring import DetectionScorer
from bopkd.eval.final_scores import BOP24_KEYS
from bopkd.eval.protocols import parse_protocols, score_protocols
from bopkd.eval.submission import Estimate, read_submission
from bopkd.infer.export import write_submission

MEGAPOSE = "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv"
GT_FILE = "gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv"
ALL_GT_FILE = "unittest-minVisib0_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv"


def test_real_lmo_megapose_matches_the_published_map(lmo_sample_root):
    """bop_toolkit's eval_bop24_pose_test.py on submission 4299 with test_targets_bop19.json."""
    r = DetectionScorer(lmo_sample_root / "results" / MEGAPOSE, lmo_sample_root).run()
    s = r["scores_bop24"]
    assert s["bop24_mAP_mssd"] == pytest.approx(0.44000810549674874, abs=1e-6)
    assert s["bop24_mAP_mspd"] == pytest.approx(0.5685263874253823, abs=1e-6)
    assert s["bop24_mAP"] == pytest.approx(0.5042672464610656, abs=1e-6)
    assert list(s) == list(BOP24_KEYS)
    assert s["bop25_mAP"] == s["bop24_mAP_mssd"] and s["bop25_mAP_mm"] == s["bop24_mAP_mssd_mm"]
    assert 0 < s["bop24_mAP_mssd_mm"] < s["bop24_mAP_mssd"]  # 2..20 mm is stricter than 0.05..0.5 d here
    assert any("test_targets_bop19.json" in n for n in r["notes"])
    # GT count: instances with visib_fract >= 0.1 in the 200 target images (read from the files here).
    info = json.loads((lmo_sample_root / "lmo/test/000002/scene_gt_info.json").read_text())
    targets = json.loads((lmo_sample_root / "lmo/test_targets_bop19.json").read_text())
    ims = {str(t["im_id"]) for t in targets}
    assert r["n_gt"] == sum(g["visib_fract"] >= 0.1 for i in ims for g in info[i])
    assert r["n_images"] == 200 and r["n_evaluated"] == r["n_estimates"] == 1645


def test_real_lmo_gt_files(lmo_sample_root):
    """GT poses of the BOP'19 targets: the published 0.9678...; GT poses of every instance: 1.0."""
    r = DetectionScorer(lmo_sample_root / "results" / GT_FILE, lmo_sample_root).run()
    for k in BOP24_KEYS[:-1]:
        assert r["scores_bop24"][k] == pytest.approx(0.9678217821782178, abs=1e-6), k
    # Every instance, visible or not: the visible ones are all found, estimates on the others are ignored.
    r = DetectionScorer(lmo_sample_root / "results" / ALL_GT_FILE, lmo_sample_root).run()
    assert all(r["scores_bop24"][k] == 1.0 for k in BOP24_KEYS[:-1])
    assert r["n_evaluated"] == 1517 and r["n_gt"] < 1517


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("name", ["gt_lmo-test", "perturbed_lmo-test", "multi_lmo-test"])
def test_golden_case_equals_the_toolkit(name):
    """tests/golden (in every clone): eval_bop24_pose.py's scores_bop24.json, every key, to 1e-12."""
    exp = json.loads((GOLDEN / "expected" / f"{name}.json").read_text())["scores_bop24"]
    r = DetectionScorer(GOLDEN / "results" / f"{name}.csv", GOLDEN).run()
    assert set(r["scores_bop24"]) == set(exp)
    for k, v in exp.items():
        assert r["scores_bop24"][k] == pytest.approx(v, abs=1e-12), k
    assert not any("test_targets_bop19.json" in n for n in r["notes"])  # its own test_targets_bop24.json


def test_bop19_and_bop24_together_share_the_errors(lmo_sample_root, tmp_path):
    res = score_protocols(
        [lmo_sample_root / "results" / MEGAPOSE], lmo_sample_root, tmp_path, ("bop19", "bop24"), ("bop19",)
    )
    ((name, both),) = res.items()
    alone = DetectionScorer(lmo_sample_root / "results" / MEGAPOSE, lmo_sample_root)
    assert alone.run()["scores_bop24"] == both["bop24"]["scores_bop24"]
    # Every pair BOP'19 evaluated is reused (one instance per object and image in LM-O: a pair per estimate).
    assert alone.n_shared == 0 and both["bop24"]["n_pairs_shared"] == both["bop19"]["n_evaluated"] > 1000
    assert both["bop19"]["scores_bop19"]["bop19_average_recall_mssd"] == pytest.approx(0.49411764705882344)
    d = tmp_path / name
    assert {p.name for p in d.iterdir()} >= {"scores_bop19.json", "scores_bop24.json", "aps_bop24.csv"}
    rows = list(csv.DictReader((d / "aps_bop24.csv").open()))
    for series in ("mssd", "mssd_mm", "mspd"):
        (total,) = [r for r in rows if r["series"] == series and r["obj_id"] == "all"]
        assert float(total["ap"]) == both["bop24"]["scores_bop24"][f"bop24_mAP_{series}"]
        means = [
            float(r["ap"])
            for r in rows
            if r["series"] == series and r["threshold"] == "mean" and r["obj_id"] != "all"
        ]
        assert np.mean(means) == pytest.approx(float(total["ap"]), abs=1e-15)
        assert len([r for r in rows if r["series"] == series]) == 8 * 11 + 1


def _root(tmp_path: Path, oracle_root: Path, targets24: list | str | None = None) -> Path:
    """A root whose lmo/ links the oracle's files, optionally with a test_targets_bop24.json."""
    root = tmp_path / "root"
    (root / "lmo").mkdir(parents=True)
    for p in (oracle_root / "lmo").iterdir():
        (root / "lmo" / p.name).symlink_to(p)
    if targets24 is not None:
        text = targets24 if isinstance(targets24, str) else json.dumps(targets24)
        (root / "lmo" / "test_targets_bop24.json").write_text(text)
    return root


def _score(tmp_path, root, ests, name="edge_lmo-test", **kw) -> dict:
    path = tmp_path / f"{name}.csv"
    write_submission(path, ests)
    return DetectionScorer(path, root, **kw).run()


def _far(e: Estimate, score: float, obj: int | None = None, im: int | None = None) -> Estimate:
    """A wrong pose (300 mm off) of an estimate, optionally for another object or image."""
    return Estimate(
        e.scene_id, e.im_id if im is None else im, e.obj_id if obj is None else obj, score, e.R, e.t + [300, 0, 0], e.time
    )  # fmt: skip


def test_estimates_the_toolkit_skips_are_not_false_positives(oracle_root, tmp_path):
    gt = read_submission(oracle_root / "results" / "gtcheck_lmo-test.csv")
    root = _root(tmp_path, oracle_root)
    first = gt[0]  # image 0 holds objects 1, 5, 6, 9, 10, 12
    extra = [_far(first, 1.0, obj=8), _far(first, 1.0, im=99)]  # absent object; image not a target
    r = _score(tmp_path, root, gt + extra)
    assert all(r["scores_bop24"][k] == 1.0 for k in BOP24_KEYS[:-1])
    assert r["n_evaluated"] == 25 and any("2 estimates not evaluated" in n for n in r["notes"])
    # A wrong estimate of a present object is a false positive; ranked first it lowers the AP.
    r = _score(tmp_path, root, [*gt, _far(first, 2.0)])
    assert r["n_evaluated"] == 26 and r["scores_bop24"]["bop24_mAP"] < 1.0
    (j,) = [k for k, o in enumerate(r["series"]["mssd"].obj_ids) if o == first.obj_id]
    # Its object has 3 instances: ranking F, T, T, T gives precisions 1/2, 2/3, 3/4 at recalls 1/3, 2/3, 1;
    # the highest precision at recall >= r is 3/4 at every recall point.
    for name in ("mssd", "mssd_mm", "mspd"):
        assert r["series"][name].n_gt[j] == 3
        np.testing.assert_allclose(r["series"][name].ap[:, j], 0.75, rtol=0, atol=1e-15)
    # Ranked last, after the three hits, it does not lower the AP.
    r = _score(tmp_path, root, [*gt, _far(first, 0.01)])
    assert all(r["scores_bop24"][k] == 1.0 for k in BOP24_KEYS[:-1])


def test_only_the_best_scored_estimates_of_an_image_count(oracle_root, tmp_path):
    gt = read_submission(oracle_root / "results" / "gtcheck_lmo-test.csv")
    root = _root(tmp_path, oracle_root)
    first = gt[0]
    n0 = sum(e.im_id == first.im_id for e in gt)
    wrong = [_far(first, 0.5) for _ in range(100)]  # scored below the GT poses (1.0)
    r = _score(tmp_path, root, gt + wrong)
    assert any(f"{n0} estimates beyond the 100" in n for n in r["notes"])
    assert r["n_evaluated"] == 25 + 100 - n0
    r = _score(tmp_path, root, gt + wrong, max_per_image=n0)
    assert all(r["scores_bop24"][k] == 1.0 for k in BOP24_KEYS[:-1])
    assert r["n_evaluated"] == 25


def test_targets_bop24_file_is_used_when_present(oracle_root, tmp_path):
    gt = read_submission(oracle_root / "results" / "gtcheck_lmo-test.csv")
    root = _root(tmp_path, oracle_root, [{"scene_id": 2, "im_id": 1}, {"scene_id": 2, "im_id": 0}])
    r = _score(tmp_path, root, gt)
    assert r["targets_file"] == "test_targets_bop24.json" and r["n_images"] == 2
    info = json.loads((oracle_root / "lmo/test/000002/scene_gt_info.json").read_text())
    assert r["n_gt"] == len(info["0"]) + len(info["1"]) == r["n_evaluated"]
    assert not any("targets" in n for n in r["notes"])
    r = _score(tmp_path, root, gt, targets_file="test_targets_bop19.json")
    assert r["n_images"] == 5
    bad = _root(tmp_path / "bad", oracle_root, '{"scene_id": 2}')
    with pytest.raises(BopkdError, match="test_targets_bop24.json: not a BOP targets file"):
        _score(tmp_path, bad, gt)
    with pytest.raises(BopkdError, match="nope.json: no such targets file"):
        _score(tmp_path, root, gt, targets_file="nope.json")


def test_parse_protocols():
    assert parse_protocols("bop24") == ("bop24",)
    assert parse_protocols("bop25, bop19") == ("bop19", "bop25")
    assert parse_protocols("all") == ("bop19", "bop24", "bop25")
    for bad in ("bop26", "", "bop19,x"):
        with pytest.raises(BopkdError, match="unknown --protocol"):
            parse_protocols(bad)


def test_cli_writes_the_toolkit_keys_and_prints_a_table(oracle_root, tmp_path):
    from typer.testing import CliRunner

    from bopkd.cli import app

    f = str(oracle_root / "results" / "gtcheck_lmo-test.csv")
    base = ["score", f, "--root", str(oracle_root), "--out", str(tmp_path)]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--protocol", "bop24"])
    assert r.exit_code == 0, r.output
    assert "MSPD" in r.output and "1.0000" in r.output and "mAP'25" not in r.output
    d = tmp_path / "gtcheck_lmo-test"
    s = json.loads((d / "scores_bop24.json").read_text())
    assert list(s) == [*BOP24_KEYS, "engine"] and s["bop24_mAP"] == 1.0 and s["engine"] == "bopkd"
    assert s["bop24_average_time_per_image"] == pytest.approx(0.07)
    assert not (d / "scores_bop19.json").exists()
    r = runner.invoke(app, [*base, "--protocol", "all"])
    assert r.exit_code == 0, r.output
    assert "mAP'25" in r.output and (d / "scores_bop19.json").is_file()
    for extra, msg in (
        (["--protocol", "bop26"], "unknown --protocol"),
        (["--protocol", "bop24", "--metrics", "ad"], "--metrics applies to --protocol bop19"),
        (["--protocol", "bop25", "--engine", "bop_toolkit"], "bop19 only"),
    ):
        r = runner.invoke(app, [*base, *extra])
        assert r.exit_code != 0 and isinstance(r.exception, BopkdError), r.output
        assert msg in str(r.exception) and "\n" not in str(r.exception)


def test_errors_are_normalised_as_the_toolkit(oracle_root):
    """MSSD / diameter; MSSD in mm; MSPD x 640 / image width (1.0 for LM-O's 640 px, so a wider one here)."""
    import dataclasses

    sc = DetectionScorer(oracle_root / "results" / "synthpert_lmo-test.csv", oracle_root)
    sc.run()
    e = sc.errors
    diam = np.array([sc.infos[int(o)].diameter for o in sc.pairs["obj"]])
    np.testing.assert_array_equal(sc.normalised("mssd"), e["mssd"] / diam)
    np.testing.assert_array_equal(sc.normalised("mssd_mm"), e["mssd"])
    np.testing.assert_array_equal(sc.normalised("mspd"), e["mspd"])
    sc.ds.spec = dataclasses.replace(sc.ds.spec, im_size=(1280, 960))
    np.testing.assert_array_equal(sc.normalised("mspd"), 0.5 * e["mspd"])
    assert np.isfinite(e["mspd"]).all() and np.isinf(e["mssd"]).any()  # the far poses: spheres apart
