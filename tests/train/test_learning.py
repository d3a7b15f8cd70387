"""Proof that the whole chain learns: data -> targets -> loss -> training -> decoding -> PnP -> CSV.

A tiny network is trained on the CPU on 96x96 GT-box crops of 8 synthetic images (the ``learned_run``
fixture: 300 iterations, about a minute on 2 cores), then evaluated exactly as ``bopkd predict`` does
(eval mode, EPnP-RANSAC, the BOP CSV writer). The poses read back from the CSV are compared with the
GT of ``scene_gt.json`` by ADD (ADD-S/ADI for symmetric objects), Hinterstoisser et al. (ACCV 2012) as
defined in the BOP toolkit's ``pose_error.add``/``adi``, computed here independently with numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from bopkd.data.dataset import BopDataset
from bopkd.eval.submission import read_submission
from bopkd.train.logging import read_metrics
from bopkd.train.predict import predict


def _add(pts: np.ndarray, R_e, t_e, R_g, t_g, symmetric: bool) -> float:
    e = pts @ np.asarray(R_e).T + np.asarray(t_e).reshape(1, 3)
    g = pts @ np.asarray(R_g).T + np.asarray(t_g).reshape(1, 3)
    if symmetric:
        return float(cKDTree(e).query(g, k=1)[0].mean())
    return float(np.linalg.norm(e - g, axis=1).mean())


def test_training_learns_poses_of_the_training_images(learned_run, synth_root, tmp_path, capsys):
    rows = read_metrics(learned_run["run_dir"])
    losses = [r["loss"] for r in rows]
    assert len(rows) == 30 and losses[-1] < 0.3 * losses[0], losses

    res = predict(
        learned_run["run_dir"],
        dataset="learn",
        root=synth_root,
        out=tmp_path,
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
    errors = np.array(errors)
    recall = float((errors < 0.1).mean())
    with capsys.disabled():
        print(
            f"\n[learning] {len(errors)} instances, ADD(-S) < 0.1 d: {recall:.0%}; median error {np.median(errors):.3f} d; "
            f"training {learned_run['seconds']:.1f} s ({learned_run['summary']['device']}); loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        )
    assert len(errors) >= 15
    assert recall >= 0.7, (recall, errors)
