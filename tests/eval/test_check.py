"""check_submission on the real LM-O results and the oracle, and ``bopkd score --check-only`` exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bopkd.errors import BopkdError
from bopkd.eval.check import check_submission
from bopkd.eval.submission import HEADER, Estimate, read_submission
from bopkd.infer.export import write_submission


def _independent_coverage(csv, targets_json):
    """Coverage recomputed with plain Python from the two files (no bopkd code)."""
    rows = [ln.split(",") for ln in csv.read_text().splitlines()[1:]]
    est_images = {(int(r[0]), int(r[1])) for r in rows}
    est_triples = {(int(r[0]), int(r[1]), int(r[2])) for r in rows}
    targets = json.loads(targets_json.read_text())
    t_images = {(t["scene_id"], t["im_id"]) for t in targets}
    return {
        "n_estimates": len(rows),
        "n_images": len(est_images),
        "n_targets": len(targets),
        "n_target_images": len(t_images),
        "target_images_without_estimate": len(t_images - est_images),
        "targets_without_estimate": sum(
            (t["scene_id"], t["im_id"], t["obj_id"]) not in est_triples for t in targets
        ),
        "images_not_in_targets": len(est_images - t_images),
    }


@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv", 1645),
        ("gt-pbrreal-rgb-mmodel_lmo-test_lmo.csv", 1445),
        ("unittest-minVisib0_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv", 1517),
        ("results_lmo-test.csv", 1427),
    ],
)
def test_check_real_results(lmo_sample_root, name, n):
    p = lmo_sample_root / "results" / name
    rep = check_submission(p, lmo_sample_root)
    ref = _independent_coverage(p, lmo_sample_root / "lmo" / "test_targets_bop19.json")
    assert rep.n_estimates == n
    for k, v in ref.items():
        assert getattr(rep, k) == v, k
    assert rep.n_target_instances == 1445 and rep.n_target_images == 200
    assert rep.name.dataset == "lmo" and rep.obj_ids == (1, 5, 6, 8, 9, 10, 11, 12)
    d = rep.to_dict()
    json.dumps(d)  # serialisable
    assert d["name"]["result_name"] == p.stem
    assert "\n" not in rep.summary() and rep.summary().startswith(f"OK {p}")


def test_check_time_summary(lmo_sample_root):
    mega = check_submission(
        lmo_sample_root
        / "results"
        / "cnos-fastsammegapose_lmo-test_16ab01bd-f020-4194-9750-d42fc7f875d2.csv",
        lmo_sample_root,
    )
    # independent: the mean over images of the per-image time, as eval_bop19_pose.py computes it
    rows = [ln.split(",") for ln in mega.path.read_text().splitlines()[1:]]
    per_image = {(r[0], r[1]): float(r[6]) for r in rows}
    assert mega.time_available and mega.average_time_per_image == pytest.approx(
        np.mean(list(per_image.values()))
    )
    unknown = check_submission(lmo_sample_root / "results" / "results_lmo-test.csv", lmo_sample_root)
    assert not unknown.time_available and unknown.average_time_per_image == -1.0


def test_check_oracle_missing_targets_and_extra_images(oracle_root, tmp_path):
    src = oracle_root / "results" / "synthpert_lmo-test.csv"
    rep = check_submission(src, oracle_root)
    ref = _independent_coverage(src, oracle_root / "lmo" / "test_targets_bop19.json")
    assert rep.targets_without_estimate == ref["targets_without_estimate"] > 0  # the "missing" cases
    # drop every estimate of one target image and add one for an image that is not a target
    ests = read_submission(src)
    first = (ests[0].scene_id, ests[0].im_id)
    kept = [e for e in ests if (e.scene_id, e.im_id) != first]
    extra = Estimate(2, 999999, 1, 0.5, np.eye(3), [0, 0, 1000], kept[0].time)
    out = tmp_path / "mine_lmo-test.csv"
    write_submission(out, [*kept, extra])
    rep2 = check_submission(out, oracle_root)
    assert rep2.target_images_without_estimate == 1 and rep2.missing_examples == [first]
    assert rep2.images_not_in_targets == 1
    assert "not targets (ignored)" in rep2.summary()


def test_check_without_dataset_folder_checks_format_only(lmo_sample_root, tmp_path):
    rep = check_submission(lmo_sample_root / "results" / "results_lmo-test.csv", tmp_path)
    assert rep.n_target_images is None and "coverage not checked" in rep.summary()
    assert any("not found" in n for n in rep.notes)


def test_check_errors(lmo_sample_root, tmp_path):
    bad_obj = tmp_path / "m_lmo-test.csv"
    bad_obj.write_text(HEADER + "\n2,3,2,1,1 0 0 0 1 0 0 0 1,0 0 1000,-1\n")
    with pytest.raises(BopkdError, match=rf"^{bad_obj}:2: column obj_id: object 2 is not an object"):
        check_submission(bad_obj, lmo_sample_root)
    with pytest.raises(BopkdError, match="malformed result file name"):
        check_submission(tmp_path / "noname.csv", lmo_sample_root)
    unknown = tmp_path / "m_nosuchds-test.csv"
    unknown.write_text(HEADER + "\n2,3,1,1,1 0 0 0 1 0 0 0 1,0 0 1000,-1\n")
    with pytest.raises(BopkdError, match="unknown dataset 'nosuchds'"):
        check_submission(unknown, lmo_sample_root)


def test_split_note(lmo_sample_root, tmp_path):
    p = tmp_path / "m_lmo-val.csv"
    p.write_text(HEADER + "\n2,3,1,1,1 0 0 0 1 0 0 0 1,0 0 1000,-1\n")
    rep = check_submission(p, lmo_sample_root)
    assert any("not the dataset's BOP test split" in n for n in rep.notes)


# --------------------------------------------------------------------------------------------- CLI


def _bopkd(*args):
    return subprocess.run(
        [sys.executable, "-m", "bopkd", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_check_only_exit_codes(lmo_sample_root, tmp_path):
    good = sorted((lmo_sample_root / "results").glob("*.csv"))
    r = _bopkd("score", "--check-only", *good, "--root", lmo_sample_root)
    assert r.returncode == 0, r.stderr
    ok_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OK ")]
    assert len(ok_lines) == 4 and "1645 estimates" in r.stdout and "1445/1445 (image, object)" in r.stdout
    assert r.stderr == ""

    bad = tmp_path / "bad_lmo-test.csv"
    bad.write_text(HEADER + "\n2,3,1,1,1 0 0 0 1 0 0 0 1,0 0 1000,-1\n2,3,5,1,1 0 0 0 1 0 0 0,0 0 1000,-1\n")
    r = _bopkd("score", "--check-only", bad, good[0], "--root", lmo_sample_root)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert (
        err[0]
        == f"error: {bad}:3: column R: 8 values, expected 9 separated by spaces; fix the row or regenerate the file"
    )
    assert err[1] == "error: 1 of 2 result files failed the check (see the lines above)"
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith(f"OK {good[0]}")  # the good file is still checked

    r = _bopkd("score", "--check-only", tmp_path / "missing_lmo-test.csv", "--root", lmo_sample_root)
    assert r.returncode == 2 and "missing file" in r.stderr and "Traceback" not in r.stderr
