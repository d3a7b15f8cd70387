"""Inference and BOP CSV export (bopkd.infer.predict): protocols, names, times, sidecar."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from bopkd.data.dataset import BopDataset
from bopkd.errors import BopkdError
from bopkd.eval.naming import parse_result_name
from bopkd.eval.submission import read_submission
from bopkd.infer.predict import predict
from bopkd.train.command import prepare_config
from bopkd.train.trainer import Trainer

FAST = ["cpu_threads=1"]


def _predict(run, root, out, **kw):
    """``predict`` on the synthetic ``learn`` dataset, on the CPU, in this process, one torch thread."""
    opts = {"dataset": "learn", "device": "cpu", "num_workers": 0, "progress": False, "sets": FAST, **kw}
    return predict(run, root=root, out=out, **opts)


def _times_by_image(ests) -> dict:
    t = defaultdict(set)
    for e in ests:
        t[(e.scene_id, e.im_id)].add(e.time)
    return t


def test_gt_boxes_are_marked_as_oracle_everywhere(learned_run, synth_root, tmp_path):
    res = _predict(learned_run["run_dir"], synth_root, tmp_path, method="mine")
    assert res.protocol == "oracle-gt-boxes"
    assert res.csv.name == "mine-oracle-gt-boxes_learn-test.csv"
    name = parse_result_name(res.csv)
    assert (name.method, name.dataset, name.split) == ("mine-oracle-gt-boxes", "learn", "test")
    side = json.loads(res.sidecar.read_text())
    assert res.sidecar.name == res.csv.name + ".json"
    assert side["protocol"] == "oracle-gt-boxes" and side["oracle"] is True and side["box_source"] == "gt"
    assert side["params"] > 1000 and side["macs"] > 1e6 and side["ms_per_image"] > 0
    assert side["device"].startswith("cpu") and side["input_size"] == [96, 96] and side["iteration"] == 300
    ests = read_submission(res.csv)
    bop = BopDataset("learn", synth_root)
    targets = {(t.scene_id, t.im_id, t.obj_id) for t in bop.targets}
    assert len(ests) == res.n_estimates and all((e.scene_id, e.im_id, e.obj_id) in targets for e in ests)
    # One time per image (the CSV writer checks it too), and the mean is the sidecar's ms/image.
    times = _times_by_image(ests)
    assert all(len(v) == 1 for v in times.values())
    assert side["ms_per_image"] == pytest.approx(
        1000 * sum(next(iter(v)) for v in times.values()) / len(times), rel=1e-6
    )
    # The default method name says what was run.
    res2 = _predict(learned_run["run_dir"], synth_root, tmp_path)
    assert res2.csv.name == "bopkd-teacher-tiny-cpu-oracle-gt-boxes_learn-test.csv"


def test_detections_give_boxes_scores_and_detector_time(learned_run, synth_root, tmp_path):
    bop = BopDataset("learn", synth_root)
    dets = []
    for t in bop.targets:
        infos = bop.scene_gt_info("test", t.scene_id)[t.im_id]
        gts = bop.scene_gt("test", t.scene_id)[t.im_id]
        for g, inf in zip(gts, infos, strict=True):
            if g.obj_id == t.obj_id:
                dets.append(
                    {
                        "scene_id": t.scene_id,
                        "image_id": t.im_id,
                        "category_id": t.obj_id,
                        "bbox": list(inf.bbox_visib),
                        "score": 0.5,
                        "time": 7.0,
                    }
                )
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    res = _predict(learned_run["run_dir"], synth_root, tmp_path / "out", detections=path)
    assert res.protocol == "detections" and "oracle" not in res.csv.name
    side = json.loads(res.sidecar.read_text())
    assert (
        side["oracle"] is False
        and side["detections"] == str(path)
        and "detector time" in side["time_includes"]
    )
    ests = read_submission(res.csv)
    # The detector's 7 s per image are added to the model's own time (BOP: the whole image's time).
    assert ests and all(e.score <= 0.5 and 7.0 < e.time < 10.0 for e in ests)
    assert 7000.0 < side["ms_per_image"] < 10000.0 and side["n_time_unknown"] == 0


def test_full_image_model_and_refusals(make_cfg, synth_root, tmp_path):
    cfg = prepare_config(make_cfg(tmp_path / "full", "data.mode=full", "data.input_size=[160,128]", iters=1))
    Trainer(cfg).fit()
    res = _predict(
        tmp_path / "full", synth_root, tmp_path / "out", num_workers=1, sets=[*FAST, "predict.score_th=0.0"]
    )
    assert res.protocol == "full-image" and res.n_images == res.n_inputs == 8
    assert json.loads(res.sidecar.read_text())["input_mode"] == "full"
    with pytest.raises(BopkdError, match="takes whole images.*drop --detections"):
        _predict(tmp_path / "full", synth_root, tmp_path / "out", detections=tmp_path / "d.json")
    with pytest.raises(BopkdError, match="found no target object.*predict.score_th"):
        _predict(tmp_path / "full", synth_root, tmp_path / "none", sets=[*FAST, "predict.score_th=0.99"])
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    with pytest.raises(BopkdError, match="not allowed in a BOP result file name"):
        _predict(tmp_path / "full", synth_root, tmp_path / "out", method="my_method")
