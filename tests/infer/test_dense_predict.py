"""Tests of ``bopkd predict`` on dense (ZebraPose-style) checkpoints (bopkd/infer/dense_predict.py).

* the loop's geometry: a stand-in network that outputs each crop's GT mask and code bits (as +-6 logits)
  must give poses equal to the GT up to the surface code's quantisation, so the crop affine, the stride-2
  output grid, the intrinsics and the code tables are composed correctly;
* learning: a tiny dense network (tiny-cpu encoder, 64 px crops -> 32 px outputs, 10 bits) trained 300
  iterations on the 8 synthetic images of ``tests/learning_data.py`` (one CPU thread, about a minute) is
  run through ``bopkd predict`` and scored by bopkd's BOP scorer: non-zero AR, a dense sidecar.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bopkd.data.dataset import BopDataset
from bopkd.eval.scoring import score_submissions
from bopkd.eval.submission import read_submission
from bopkd.infer.dense_predict import code_tables, run_dense_inference
from bopkd.infer.loop import split_loader
from bopkd.infer.predict import predict
from bopkd.train.command import train
from tests.learning_data import SYNTH_NAME, tiny_config

DENSE_SETS = (
    "family=dense",
    "dense.out_size=32",
    "dense.bits=10",
    "dense.min_vertices=2048",
    "dense.decoder_channels=[32,32,16,16]",
    "model.backbone=tiny-cpu",
    "model.obj_ids=[1,2,3]",
    "augment.enabled=false",
    "data.crop_pad_range=[1.35,1.35]",
    "data.crop_shift=0",
    "optim.lr=2e-3",
    "batch_size=4",
    "log_every=25",
)


class _GTNetwork(torch.nn.Module):
    """Returns, batch after batch, the GT targets of the crops as logits (+6 for 1, -6 for 0)."""

    stride = 2

    def __init__(self, outputs: list[dict]):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, images):
        out = self.outputs.pop(0)
        assert out["mask_logits"].shape[0] == images.shape[0]
        return out


def test_gt_codes_give_the_gt_poses(synth_root, tmp_path):
    from bopkd.data.collate import collate_batch
    from bopkd.data.dense_dataset import DenseTorchDataset

    cfg = tiny_config(synth_root, tmp_path / "run", *DENSE_SETS)
    bop = BopDataset(SYNTH_NAME, synth_root)
    _, loader = split_loader(cfg, [1, 2, 3], bop, "test", None, torch.device("cpu"))
    luts = code_tables(cfg, bop, [1, 2, 3])
    dense = DenseTorchDataset(
        cfg.data, [1, 2, 3], out_size=32, bits=10, min_vertices=2048, split="test", train=False,
        targets_only=True, box_source="gt", need_masks=False, bop=bop,
    )  # fmt: skip
    outputs, gts = [], []
    for batch in loader:
        items = [dense[k] for k in range(len(gts), len(gts) + len(batch["meta"]))]
        b = collate_batch(items)
        assert [m["gt_id"] for m in b["meta"]] == [m["gt_id"] for m in batch["meta"]]
        logit = lambda x: (x * 12.0 - 6.0).float()  # noqa: E731
        outputs.append(
            {"mask_logits": logit(b["dense_mask"][:, None]), "code_logits": logit(b["dense_bits"])}
        )
        gts += [(m["scene_id"], m["im_id"], m["gt_id"]) for m in batch["meta"]]
    net = _GTNetwork(outputs)
    cfg.dense.pnp.reproj_err = 2.0
    _, found, n = run_dense_inference(net, loader, torch.device("cpu"), cfg, bop, luts, "gt", False)
    assert n == len(gts) and len(found) >= 0.9 * n
    infos = bop.models_info()
    rot, trans, scale = [], [], []
    for (scene, im), obj, score, R, t in found:
        gt = [g for g in bop.scene_gt("test", scene)[im] if g.obj_id == obj][0]
        cos = np.clip((np.trace(np.asarray(gt.R).T @ R) - 1) / 2, -1, 1)
        rot.append(np.degrees(np.arccos(cos)))
        trans.append(np.linalg.norm(np.asarray(gt.t).reshape(3) - t) / infos[obj].diameter)
        scale.append(np.linalg.norm(t) / np.linalg.norm(gt.t))
        assert 0 < score <= 1
    # 32 px outputs and 10-bit codes quantise the correspondences: single crops err by a few percent of the
    # depth, but without bias (a wrong stride or crop map scales every depth alike)
    assert np.median(rot) < 3.0 and max(rot) < 10.0, rot
    assert np.median(trans) < 0.05 and max(trans) < 0.25, trans
    assert abs(np.median(scale) - 1.0) < 0.005, scale


@pytest.fixture(scope="module")
def dense_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        train(tiny_config(synth_root, out, *DENSE_SETS, "ckpt_every=300", iters=300))
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(n)
    return out, seconds


def test_a_trained_dense_network_predicts_poses_with_nonzero_ar(dense_run, synth_root, tmp_path, capsys):
    run_dir, seconds = dense_run
    t0 = time.perf_counter()
    res = predict(run_dir, dataset=SYNTH_NAME, root=synth_root, out=tmp_path, device="cpu", num_workers=0,
                  progress=False, sets=["cpu_threads=1"])  # fmt: skip
    pred_s = time.perf_counter() - t0
    side = json.loads(res.sidecar.read_text())
    assert side["family"] == "dense" and side["input_size"] == [64, 64] and side["role"] == "teacher"
    assert side["predict"]["dense_pnp"]["reproj_err"] == 2.0
    rows = read_submission(res.csv)
    assert len(rows) == res.n_estimates > 0 and all(0 <= r.score <= 1 for r in rows)
    ((_, scores),) = score_submissions([res.csv], root=synth_root, out_dir=tmp_path / "scores",
                                       metrics=["bop19"]).items()  # fmt: skip
    ar = scores["scores_bop19"]["bop19_average_recall"]
    with capsys.disabled():
        print(f"\n[dense learning] training {seconds:.1f} s, predict {pred_s:.1f} s, AR {ar:.3f}, "
              f"{res.n_estimates} estimates of {res.n_inputs} crops")  # fmt: skip
    assert ar > 0.0
