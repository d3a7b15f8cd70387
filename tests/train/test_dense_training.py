"""Training the dense family (``family: dense``): config checks, the sparse settings hash unchanged, the
``bopkd train --family dense`` command end to end, exact resume, and a tiny dense teacher that learns."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bopkd.cli import main
from bopkd.config import to_dict
from bopkd.data.collate import collate_batch
from bopkd.errors import BopkdError
from bopkd.models.dense import DensePoseNet
from bopkd.train import checkpoint as ckpt
from bopkd.train.command import prepare_config
from bopkd.train.config import RunConfig, build_config
from bopkd.train.dense_config import DenseConfig
from bopkd.train.logging import read_metrics
from bopkd.train.networks import load_frozen_model
from bopkd.train.trainer import Trainer

#: A tiny dense network: 64 px crops -> 32 px maps of 8 bits, codes of >= 4096 vertices (fast to encode).
DENSE = (
    "family=dense",
    "dense.out_size=32",
    "dense.bits=8",
    "dense.min_vertices=4096",
    "dense.decoder_channels=[32,32,32,32]",
)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_checks_and_defaults():
    cfg = build_config(overrides=["family=dense", "data.mode=crop", "data.crop_size=256"])
    assert cfg.family == "dense" and cfg.dense.out_size == 128 and cfg.dense.bits == 16
    assert cfg.dense.loss.code_mask == "pred" and cfg.dense.loss.code_reduction == "all_pixels"  # ZebraPose's
    net = cfg.dense.model_config(cfg.model)
    assert (net.encoder, net.out_size, net.in_size) == (cfg.model.backbone, 128, 256)
    assert build_config().family == "sparse"
    assert "teacher-dense-" in str(cfg.run_dir()) and "dense" not in str(build_config().run_dir())
    with pytest.raises(BopkdError, match="set data.mode=crop"):
        build_config(overrides=["family=dense", "data.crop_size=256"])
    with pytest.raises(BopkdError, match="data.crop_size=256 or dense.out_size=64"):
        build_config(overrides=["family=dense", "data.mode=crop", "data.crop_size=128"])
    with pytest.raises(BopkdError, match="dense.out_size"):
        build_config(overrides=["family=dense", "data.mode=crop", "data.crop_size=80", "dense.out_size=40"])
    with pytest.raises(BopkdError, match="family"):
        build_config(overrides=["family=zebra"])
    with pytest.raises(BopkdError, match="dense.pnp.method"):
        build_config(overrides=["family=dense", "data.mode=crop", "data.crop_size=256", "dense.pnp.method=x"])


def test_sparse_settings_hash_is_unchanged():
    from bopkd.pipeline.plan import NEUTRAL_TRAIN_DEFAULTS, hashed_train_config

    d = to_dict(RunConfig())
    assert NEUTRAL_TRAIN_DEFAULTS["family"] == d["family"] and NEUTRAL_TRAIN_DEFAULTS["dense"] == d["dense"]
    hashed = hashed_train_config(d)
    assert "family" not in hashed and "dense" not in hashed
    # A changed dense setting is not neutral: it enters the hash.
    changed = {**d, "dense": {**d["dense"], "bits": 12}}
    assert [k for k, v in NEUTRAL_TRAIN_DEFAULTS.items() if k == "dense" and changed["dense"] == v] == []
    assert to_dict(DenseConfig()) == d["dense"]


def test_train_command_dense_end_to_end(monkeypatch, capsys, synth_root, tmp_path):
    run = tmp_path / "run"
    args = ["train", "teacher", "--family", "dense", "--preset", "cpu-quick", "--dataset", "learn"]
    args += [
        "--root",
        str(synth_root),
        "--out",
        str(run),
        "--iters",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    for s in (*DENSE[1:], "data.split=test", "data.mode=crop", "data.crop_size=64", "data.num_workers=0"):
        args += ["--set", s]
    args += [
        "--set",
        "progress=false",
        "--set",
        "log_every=1",
        "--set",
        "cpu_threads=1",
        "--backbone",
        "tiny-cpu",
    ]
    monkeypatch.setattr(sys, "argv", ["bopkd", *args])
    try:
        main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trained 3 iterations" in out and "loss_code" in out
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("iter,lr,loss_mask,loss_code,loss")
    assert [r["iter"] for r in read_metrics(run)] == [1, 2, 3]
    assert "family: dense" in (run / "config.yaml").read_text()
    state = ckpt.load_checkpoint(run)
    assert state["config"]["family"] == "dense" and state["iteration"] == 3
    hist = state["extra_modules"]["task"]["_extra_state"]["histogram"]
    assert hist.shape == (8,) and ((hist >= 0) & (hist <= 1)).all()
    model, _ = load_frozen_model(run)
    assert isinstance(model, DensePoseNet) and not any(p.requires_grad for p in model.parameters())
    out = model(torch.zeros(1, 3, 64, 64))
    assert out["mask_logits"].shape == (1, 1, 32, 32) and out["code_logits"].shape == (1, 8, 32, 32)


def test_dense_resume_gives_the_weights_of_an_uninterrupted_run(make_cfg, tmp_path):
    sets = (*DENSE, "deterministic=true", "ckpt_every=3", "augment.rotation=20")
    a = Trainer(prepare_config(make_cfg(tmp_path / "a", *sets)))
    a.fit()
    b = Trainer(prepare_config(make_cfg(tmp_path / "b", *sets)))
    b.fit(stop_at=3)
    torch.manual_seed(1234)
    b2 = Trainer(prepare_config(make_cfg(tmp_path / "b", *sets)), resume=True)
    assert b2.iteration == 3 and b2.loss_fns["task"].module.histogram is not None
    b2.fit()
    wa, wb = _weights(a.model), _weights(b2.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert torch.equal(a.loss_fns["task"].module.histogram, b2.loss_fns["task"].module.histogram)
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [(r["loss_mask"], r["loss_code"]) for r in ma] == [(r["loss_mask"], r["loss_code"]) for r in mb]


@pytest.mark.slow
def test_a_tiny_dense_teacher_learns_masks_and_coarse_bits(make_cfg, tmp_path):
    """300 steps on the 22 unaugmented 64 px crops (about a minute on one busy core): the mask IoU and the
    accuracy of the coarse bits on the training crops rise far above the untrained network's and above
    the best constant guess per bit."""
    sets = (*DENSE, "augment.enabled=false", "data.crop_pad_range=[1.35,1.35]", "data.crop_shift=0")
    sets += ("optim.lr=5e-3", "batch_size=4", "log_every=25", "ckpt_every=1000")
    trainer = Trainer(prepare_config(make_cfg(tmp_path / "learn", *sets, iters=300)))
    ds = trainer.dataset
    batch = collate_batch([ds[(i, 0)] for i in range(len(ds))])
    gt = batch["dense_mask"] > 0.5

    def scores() -> tuple[float, np.ndarray]:
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(batch["images"])
        pm = out["mask_logits"][:, 0] > 0
        iou = float((pm & gt).sum() / (pm | gt).sum())
        right = ((out["code_logits"] > 0).float() == batch["dense_bits"]).float() * gt[:, None]
        return iou, (right.sum((0, 2, 3)) / gt.sum()).numpy()

    iou0, _ = scores()
    trainer.fit()
    iou, acc = scores()
    ones = (batch["dense_bits"] * gt[:, None]).sum((0, 2, 3)) / gt.sum()
    constant = torch.maximum(ones, 1 - ones).numpy()  # the best constant bit inside the mask
    assert iou0 < 0.4 and iou > 0.8, (iou0, iou)
    assert acc[0] > 0.85 and acc[0] > constant[0] + 0.2, (acc, constant)
    assert acc[1] > 0.75 and acc.mean() > 0.6, acc
