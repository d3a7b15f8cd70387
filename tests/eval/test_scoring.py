"""End-to-end scoring against the official toolkit's numbers (oracle, real LM-O) and on synthetic data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bopkd.errors import BopkdError
from bopkd.eval.scores_io import recall_per_threshold
from bopkd.eval.scoring import SubmissionScorer, average_time_per_image, score_submissions
from bopkd.eval.submission import Estimate
from bopkd.infer.export import write_submission

GOLDEN_ROOT = Path(__file__).resolve().parents[1] / "golden"
MEGAPOSE = "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv"


#: Oracle cases: (oracle, result name). ``minibop`` is ../shared/fixtures/minibop_oracle (skips in a
#: user's clone), ``golden`` is tests/golden (committed; see tests/golden/make_golden.py).
ORACLE_CASES = [
    ("minibop", "synthpert_lmo-test"),
    ("minibop", "gtcheck_lmo-test"),
    ("golden", "gt_lmo-test"),
    ("golden", "perturbed_lmo-test"),
    ("golden", "multi_lmo-test"),
]


def _expected(oracle_root: Path, name: str) -> dict:
    return json.loads((oracle_root / "expected" / f"{name}.json").read_text())


def _oracle(which: str, request) -> Path:
    return GOLDEN_ROOT if which == "golden" else request.getfixturevalue("oracle_root")


@pytest.fixture(scope="module")
def scored():
    """``scored(root, name)``: (scorer, result) of one oracle file, scored once per module."""
    cache: dict = {}

    def get(root: Path, name: str):
        if (root, name) not in cache:
            sc = SubmissionScorer(root / "results" / f"{name}.csv", root, ("bop19", "ad", "adi"))
            cache[root, name] = (sc, sc.run())
        return cache[root, name]

    return get


@pytest.mark.parametrize(("which", "name"), ORACLE_CASES)
def test_oracle_scores_and_recalls_equal_the_toolkit(which, name, request, scored):
    root = _oracle(which, request)
    exp = _expected(root, name)
    _, res = scored(root, name)
    for k, v in exp["scores_bop19"].items():
        assert res["scores_bop19"][k] == pytest.approx(v, abs=1e-12), k
    rpt = recall_per_threshold(res["metrics"])
    # MSSD, MSPD and VSD for each of the 10 taus, plus ADD(-S) and ADI at 0.1 d.
    assert set(rpt) == set(exp["recall_per_threshold"]) | {"error=ad_ntop=-1", "error=adi_ntop=-1"}
    for sign, ths in exp["recall_per_threshold"].items():
        assert set(rpt[sign]) == set(ths)
        for th, r in ths.items():
            assert rpt[sign][th] == pytest.approx(r, abs=1e-12), (sign, th)
    for k, e in exp.get("ad_recall_th0.1", {}).items():
        m = res["metrics"][k]
        assert m.recalls()[0, 0] == pytest.approx(e["recall"], abs=1e-12)
        assert int(m.tp.sum()) == e["tp_count"] and int(m.n_targets.sum()) == e["targets_count"]


@pytest.mark.parametrize(("which", "name"), ORACLE_CASES)
def test_oracle_every_error_equals_the_toolkit(which, name, request, scored):
    """Every (estimate, GT) error of every type; VSD bit for bit, the others to float rounding."""
    root = _oracle(which, request)
    sc, _ = scored(root, name)
    n_vsd = 0
    for sign, expected in _expected(root, name)["errors"].items():
        etype = sign.split("_")[0].removeprefix("error=")
        col = None
        if etype == "vsd":
            tau = float(sign.split("_tau=")[1])
            col = int(np.argmin(np.abs(np.arange(0.05, 0.51, 0.05) - tau)))
        mine = {
            (d["scene_id"], d["im_id"], d["obj_id"], d["est_id"]): d
            for d in sc.pairs.toolkit_errors(etype, col)
        }
        assert len(mine) == len(expected), sign
        for d in expected:
            m = mine[(d["scene_id"], d["im_id"], d["obj_id"], d["est_id"])]
            assert m["score"] == d["score"]
            assert set(m["errors"]) == {int(g) for g in d["errors"]}
            for g, (e,) in d["errors"].items():
                (got,) = m["errors"][int(g)]
                assert m["gt_visib_fracts"][int(g)] == d["gt_visib_fracts"][g]
                if etype == "vsd":
                    assert got == e, (sign, d["im_id"], d["obj_id"], g)
                    n_vsd += 1
                elif np.isinf(e):
                    assert np.isinf(got)
                else:
                    assert got == pytest.approx(e, rel=1e-11, abs=1e-11), (sign, d["im_id"], d["obj_id"], g)
    assert n_vsd >= 200


def test_oracle_output_files(oracle_root, tmp_path):
    res = score_submissions(
        [oracle_root / "results" / "synthpert_lmo-test.csv"],
        oracle_root,
        tmp_path,
        metrics=("bop19", "ad", "adi", "add"),
    )["synthpert_lmo-test"]
    d = tmp_path / "synthpert_lmo-test"
    b19 = json.loads((d / "scores_bop19.json").read_text())
    exp = _expected(oracle_root, "synthpert_lmo-test")
    assert b19["engine"] == "bopkd"
    assert {k: b19[k] for k in exp["scores_bop19"]} == exp["scores_bop19"]
    for k in ("ad", "adi", "add"):
        s = json.loads((d / f"scores_{k}.json").read_text())
        assert s["engine"] == "bopkd" and s["threshold"] == 0.1 and s["targets_count"] == 25
        assert sum(s["obj_tp_counts"].values()) == s["tp_count"]
        assert sum(s["obj_targets_counts"].values()) == s["targets_count"]
        for o, r in s["obj_recalls"].items():
            n = s["obj_targets_counts"][o]
            assert r == (s["obj_tp_counts"][o] / n if n else 0.0)
    assert json.loads((d / "scores_ad.json").read_text())["recall"] == exp["ad_recall_th0.1"]["ad"]["recall"]
    rows = list(csv.DictReader((d / "recalls.csv").open()))
    assert list(rows[0]) == ["metric", "obj_id", "tau", "threshold", "tp", "n_targets", "recall"]
    # The "all" rows are the sums of the per-object rows and give the toolkit's recalls.
    alls = [r for r in rows if r["obj_id"] == "all"]
    assert len(alls) == 100 + 10 + 10 + 3
    for a in alls:
        per = [
            r
            for r in rows
            if r["obj_id"] != "all"
            and (r["metric"], r["tau"], r["threshold"]) == (a["metric"], a["tau"], a["threshold"])
        ]
        assert sum(int(r["tp"]) for r in per) == int(a["tp"]) and sum(int(r["n_targets"]) for r in per) == 25
    vsd = [a for a in alls if a["metric"] == "vsd" and a["tau"] == "0.300" and a["threshold"] == "0.3"]
    assert (
        float(vsd[0]["recall"])
        == exp["recall_per_threshold"]["error=vsd_ntop=-1_delta=15.000_tau=0.300"]["0.300"]
    )
    rec = json.loads((d / "scores_bopkd.json").read_text())
    assert rec["scores"]["AR"] == exp["scores_bop19"]["bop19_average_recall"]
    assert {k: rec["recall_per_threshold"][k] for k in exp["recall_per_threshold"]} == exp[
        "recall_per_threshold"
    ]
    assert [str(p) for p in sorted(d.iterdir())] == sorted(res["files"])


def test_real_lmo_megapose_matches_the_published_scores(lmo_sample_root):
    """The real BOP submission 4299 (MegaPose + CNOS-FastSAM) on LM-O: AR_MSSD and AR_MSPD as the toolkit."""
    res = SubmissionScorer(lmo_sample_root / "results" / MEGAPOSE, lmo_sample_root, ("bop19",)).run()
    s = res["scores_bop19"]
    assert s["bop19_average_recall_mssd"] == pytest.approx(0.49411764705882344, abs=1e-6)
    assert s["bop19_average_recall_mspd"] == pytest.approx(0.6067128027681661, abs=1e-6)
    # No depth images in the sample: VSD skipped, AR not defined, and said so.
    assert s["bop19_average_recall_vsd"] is None and s["bop19_average_recall"] is None
    assert s["bop19_average_recall_mssd_mspd"] == pytest.approx(
        (s["bop19_average_recall_mssd"] + s["bop19_average_recall_mspd"]) / 2
    )
    assert any("VSD skipped" in n for n in res["notes"])
    assert res["n_targets"] == 1445


def test_real_lmo_gt_file_scores_one(lmo_sample_root, tmp_path):
    res = score_submissions(
        [lmo_sample_root / "results" / "gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv"],
        lmo_sample_root,
        tmp_path,
        metrics=("bop19", "ad"),
    )["gt-pbrreal-rgb-mmodel_lmo-test_lmo"]
    assert res["scores_bop19"]["bop19_average_recall_mssd"] == 1.0
    assert res["scores_bop19"]["bop19_average_recall_mspd"] == 1.0
    assert res["metrics"]["ad"].recalls()[0, 0] == 1.0
    b19 = json.loads((tmp_path / "gt-pbrreal-rgb-mmodel_lmo-test_lmo" / "scores_bop19.json").read_text())
    assert b19["bop19_average_recall"] is None and b19["bop19_average_recall_vsd"] is None


def _rows(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text().splitlines()
    return lines[0], lines[1:]


def test_order_of_rows_does_not_matter(oracle_root, tmp_path):
    header, rows = _rows(oracle_root / "results" / "synthpert_lmo-test.csv")
    rng = np.random.default_rng(0)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    root = tmp_path / "root"
    root.mkdir()
    (root / "lmo").symlink_to(oracle_root / "lmo")
    f = tmp_path / "shuf_lmo-test.csv"
    f.write_text("\n".join([header, *shuffled]) + "\n")
    a = SubmissionScorer(
        oracle_root / "results" / "synthpert_lmo-test.csv", oracle_root, ("bop19", "ad")
    ).run()
    b = SubmissionScorer(f, root, ("bop19", "ad")).run()
    assert a["scores_bop19"] == b["scores_bop19"]
    np.testing.assert_array_equal(a["metrics"]["ad"].tp, b["metrics"]["ad"].tp)


def _gt_estimates(ds, score=1.0, time=0.1):
    """GT poses of every test image as estimates."""
    out = []
    for s in ds.scene_ids(ds.test_split):
        for i, gts in ds.scene_gt(ds.test_split, s).items():
            out += [Estimate(s, i, g.obj_id, score, g.R, g.t, time) for g in gts]
    return out


def test_duplicates_extra_and_missing_estimates(oracle_root, tmp_path):
    """Matching edge cases on real data: only the top inst_count estimates count, missing ones are misses."""
    from bopkd.data.dataset import BopDataset

    ds = BopDataset("lmo", oracle_root)
    gt = _gt_estimates(ds)
    targets = {(t.scene_id, t.im_id, t.obj_id) for t in ds.targets}
    gt = [e for e in gt if (e.scene_id, e.im_id, e.obj_id) in targets]
    far = np.array([300.0, 0.0, 0.0])  # spheres apart (MSSD, AD inf), > 50 px off, no VSD overlap
    first, second, third = gt[0], gt[1], gt[2]
    ests = []
    for e in gt:
        if e is first:  # a wrong estimate scored above the exact one: only the wrong one is evaluated
            ests += [
                Estimate(e.scene_id, e.im_id, e.obj_id, 0.5, e.R, e.t, e.time),
                Estimate(e.scene_id, e.im_id, e.obj_id, 0.9, e.R, e.t + far, e.time),
            ]
        elif e is second:  # the exact one scored higher than three wrong ones: a hit
            ests += [
                Estimate(e.scene_id, e.im_id, e.obj_id, 0.2 + k / 10, e.R, e.t + far, e.time)
                for k in range(3)
            ]
            ests += [Estimate(e.scene_id, e.im_id, e.obj_id, 0.95, e.R, e.t, e.time)]
        elif e is third:  # missing
            continue
        else:
            ests.append(e)
    path = tmp_path / "edge_lmo-test.csv"
    write_submission(path, ests)
    root = tmp_path / "root"
    root.mkdir()
    (root / "lmo").symlink_to(oracle_root / "lmo")
    res = SubmissionScorer(path, root, ("bop19", "ad")).run()
    n = len(gt)  # one instance per target in the oracle
    assert res["n_targets"] == n
    for k in ("vsd", "mssd", "mspd", "ad"):
        assert np.all(res["metrics"][k].recalls() == (n - 2) / n), k
    assert res["n_evaluated"] == n - 1  # one per target, except the missing one


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    root = tmp_path_factory.mktemp("synthscore")
    build_synthetic_dataset(
        SynthConfig(
            name="syn", root=str(root), train=0, test=6, width=320, height=240, images_per_scene=3, seed=5
        )
    )
    return root


def test_gt_poses_score_one_everywhere_on_synthetic_data(synth_root, tmp_path):
    from bopkd.data.dataset import BopDataset

    ds = BopDataset("syn", synth_root)
    path = tmp_path / "gtposes_syn-test.csv"
    write_submission(path, _gt_estimates(ds))
    res = score_submissions([path], synth_root, tmp_path / "scores", metrics=("bop19", "ad", "adi", "add"))
    r = res["gtposes_syn-test"]
    assert r["scores_bop19"]["bop19_average_recall"] == 1.0
    for k in ("vsd", "mssd", "mspd", "ad", "adi", "add"):
        assert np.all(r["metrics"][k].recalls() == 1.0), k
    assert r["average_time_per_image"] == pytest.approx(0.1)


def test_perturbed_poses_lower_every_metric_on_synthetic_data(synth_root, tmp_path):
    from scipy.spatial.transform import Rotation

    from bopkd.data.dataset import BopDataset

    ds = BopDataset("syn", synth_root)
    rng = np.random.default_rng(1)
    ests = []
    for e in _gt_estimates(ds):
        dR = Rotation.from_rotvec(rng.normal(size=3) * 0.1).as_matrix()
        ests.append(Estimate(e.scene_id, e.im_id, e.obj_id, 1.0, dR @ e.R, e.t + rng.normal(size=3) * 15, -1))
    path = tmp_path / "noisy_syn-test.csv"
    write_submission(path, ests)
    r = SubmissionScorer(path, synth_root, ("bop19", "ad")).run()
    ar = r["scores_bop19"]
    assert 0 < ar["bop19_average_recall"] < 1
    assert all(0 < ar[f"bop19_average_recall_{k}"] < 1 for k in ("vsd", "mssd", "mspd"))
    assert ar["bop19_average_time_per_image"] == -1.0
    # Recall never decreases with a looser threshold.
    for k in ("vsd", "mssd", "mspd"):
        assert np.all(np.diff(r["metrics"][k].recalls(), axis=1) >= 0)


def test_average_time_per_image_as_the_toolkit():
    s = np.array([1, 1, 1, 2, 1])
    i = np.array([5, 5, 3, 5, 7])
    t = np.array([0.2, 0.2, 0.1, 0.4, 0.3])
    assert average_time_per_image(s, i, t) == float(np.mean([0.2, 0.1, 0.4, 0.3]))
    assert average_time_per_image(s, i, np.where(i == 7, -1.0, t)) == -1.0


def test_bad_arguments_are_one_line_errors(oracle_root, tmp_path):
    f = oracle_root / "results" / "gtcheck_lmo-test.csv"
    with pytest.raises(BopkdError, match="unknown metric"):
        SubmissionScorer(f, oracle_root, ("bop19", "nope"))
    with pytest.raises(BopkdError, match="unknown engine"):
        score_submissions([f], oracle_root, tmp_path, engine="nope")
    bad = tmp_path / "bad_lmo-test.csv"
    shutil.copyfile(f, bad)
    with bad.open("a") as fh:
        fh.write("2,0,1,1.0,1 0 0 0 1 0 0 0 1,0 0\n")
    with pytest.raises(BopkdError, match="bad_lmo-test.csv"):
        score_submissions([bad], oracle_root, tmp_path)


def test_cli_scores_and_prints_a_table(oracle_root, lmo_sample_root, tmp_path):
    from typer.testing import CliRunner

    from bopkd.cli import app

    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "score",
            str(oracle_root / "results" / "gtcheck_lmo-test.csv"),
            "--root",
            str(oracle_root),
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "1.0000" in r.output and (tmp_path / "gtcheck_lmo-test" / "scores_bop19.json").is_file()
    r = runner.invoke(
        app,
        [
            "score",
            str(lmo_sample_root / "results" / "gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv"),
            "--root",
            str(lmo_sample_root),
            "--out",
            str(tmp_path),
            "--metrics",
            "bop19",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "VSD skipped" in r.output


def test_workers_give_identical_scores_and_errors(tmp_path):
    """1, 2 and 3 threads (images in parallel for VSD; ADI k-d tree queries) give the same numbers, each
    from empty caches (depth decoded and GT poses rendered by the threads themselves)."""
    from bopkd.eval import lru
    from bopkd.eval.scoring import resolve_workers

    csv_path = GOLDEN_ROOT / "results" / "multi_lmo-test.csv"
    runs = [SubmissionScorer(csv_path, GOLDEN_ROOT, ("bop19", "ad", "adi"), workers=w) for w in (1, 2, 3)]
    res = []
    for sc in runs:
        lru.DEPTH_IMAGES.clear()
        lru.GT_RENDERS.clear()
        res.append(sc.run())
        assert sc.vsd_counts["gt_renders"] > 0 and sc.vsd_counts["gt_renders_cached"] == 0
    for sc, r in zip(runs[1:], res[1:], strict=True):
        assert r["scores_bop19"] == res[0]["scores_bop19"]
        for k, e in runs[0].pairs.errors.items():
            np.testing.assert_array_equal(sc.pairs.errors[k], e)
    assert resolve_workers(0) == resolve_workers(None) >= 1
    with pytest.raises(BopkdError, match="--workers -1"):
        resolve_workers(-1)
