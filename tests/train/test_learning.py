"""Proof that the whole chain learns: data -> targets -> loss -> training -> decoding -> PnP -> CSV.

A tiny network is trained on the CPU on 96x96 GT-box crops of 8 synthetic images (the ``learned_run``
fixture: 300 iterations, about a minute on 2 cores), then evaluated exactly as ``bopkd predict`` does
(eval mode, EPnP-RANSAC, the BOP CSV writer). The poses read back from the CSV are compared with the
GT of ``scene_gt.json`` by ADD (ADD-S/ADI for symmetric objects), Hinterstoisser et al. (ACCV 2012) as
defined in the BOP toolkit's ``pose_error.add``/``adi``, computed here independently with numpy/scipy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from bopkd.data.dataset import BopDataset
from bopkd.eval.submission import read_submission
from bopkd.infer.predict import predict
from bopkd.train.command import train
from bopkd.train.logging import read_metrics


def _add(pts: np.ndarray, R_e, t_e, R_g, t_g, symmetric: bool) -> float:
    e = pts @ np.asarray(R_e).T + np.asarray(t_e).reshape(1, 3)
    g = pts @ np.asarray(R_g).T + np.asarray(t_g).reshape(1, 3)
    if symmetric:
        return float(cKDTree(e).query(g, k=1)[0].mean())
    return float(np.linalg.norm(e - g, axis=1).mean())


def _add_errors(run_dir, synth_root, out) -> np.ndarray:
    """ADD(-S) / diameter of every target, from the CSV that ``bopkd predict`` writes (inf when missing)."""
    res = predict(
        run_dir,
        dataset="learn",
        root=synth_root,
        out=out,
        device="cpu",
        num_workers=0,
        progress=False,
        sets=["cpu_threads=1"],
    )
    bop = BopDataset("learn", synth_root)
    infos = bop.models_info(eval=True)
    best = {}
    for e in read_submission(res.csv):
        k = (e.scene_id, e.im_id, e.obj_id)
        if k not in best or e.score > best[k].score:
            best[k] = e
    errors = []
    for t in bop.targets:
        gts = [g for g in bop.scene_gt("test", t.scene_id)[t.im_id] if g.obj_id == t.obj_id]
        assert t.inst_count == len(gts) == 1
        e = best.get((t.scene_id, t.im_id, t.obj_id))
        if e is None:
            errors.append(np.inf)
            continue
        pts = bop.model(t.obj_id, eval=True).pts
        errors.append(
            _add(pts, e.R, e.t, gts[0].R, gts[0].t, infos[t.obj_id].is_symmetric) / infos[t.obj_id].diameter
        )
    return np.array(errors)


def test_training_learns_poses_of_the_training_images(learned_run, synth_root, tmp_path, capsys):
    rows = read_metrics(learned_run["run_dir"])
    losses = [r["loss"] for r in rows]
    assert len(rows) == 30 and losses[-1] < 0.3 * losses[0], losses
    errors = _add_errors(learned_run["run_dir"], synth_root, tmp_path)
    recall = float((errors < 0.1).mean())
    with capsys.disabled():
        print(
            f"\n[learning] {len(errors)} instances, ADD(-S) < 0.1 d: {recall:.0%}; median error {np.median(errors):.3f} d; "
            f"training {learned_run['seconds']:.1f} s ({learned_run['summary']['device']}); "
            f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        )
    assert len(errors) >= 15
    assert recall >= 0.7, (recall, errors)


@pytest.mark.slow
def test_full_image_training_learns_too(make_cfg, synth_root, tmp_path, capsys):
    """The default whole-image mode (320x240 inputs, 150 iterations, about a minute); the crop-mode test
    above covers the same code faster."""
    cfg = make_cfg(
        tmp_path / "full",
        "data.mode=full",
        "data.input_size=[320,240]",
        "augment.enabled=false",
        "optim.lr=3e-3",
        "batch_size=4",
        "log_every=10",
        "ckpt_every=150",
        iters=150,
    )
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    losses = [r["loss"] for r in read_metrics(tmp_path / "full")]
    errors = _add_errors(tmp_path / "full", synth_root, tmp_path / "res")
    recall = float((errors < 0.1).mean())
    with capsys.disabled():
        print(
            f"\n[learning, full image] ADD(-S) < 0.1 d: {recall:.0%} of {len(errors)}; training {seconds:.1f} s "
            f"({torch.get_num_threads()} thread); loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        )
    assert losses[-1] < 0.3 * losses[0] and recall >= 0.7, (recall, errors)
