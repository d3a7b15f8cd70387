"""The ``paper`` training preset against Guo et al.'s code (GUOShuxuan/kd-6d-pose-adlp): the optimiser and
schedule of ``libs/train_libs.py``, and a 2-iteration run of the whole chain (teacher, OT student, BOP CSV).
"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from bopkd.config import to_dict
from bopkd.eval.check import check_submission
from bopkd.train.command import prepare_config
from bopkd.train.config import build_config
from bopkd.train.presets import TRAIN_PRESETS
from bopkd.train.trainer import Trainer
from tests.infer.test_predict import _predict
from tests.train.test_cli import run_cli

#: On the CPU, in this process: no download (model.pretrained false), no workers, one torch thread.
CPU_SETS = [
    "model.pretrained=false",
    "data.split=test",
    "data.num_workers=0",
    "progress=false",
    "log_every=1",
    "cpu_threads=1",
]


def test_paper_preset_is_the_references_settings():
    cfg = build_config(preset="paper")
    o = cfg.optim
    assert (o.name, o.lr, o.weight_decay, o.eps, tuple(o.betas)) == ("adamw", 1e-3, 1e-4, 1e-8, (0.9, 0.999))
    assert (o.schedule, o.pct_start, o.anneal, o.cycle_momentum, o.schedule_extra_steps) == (
        "onecycle",
        0.05,
        "linear",
        False,
        100,
    )
    assert (o.div_factor, o.final_div_factor, o.grad_clip) == (25.0, 1e4, 1.0)
    d = cfg.data
    assert (d.mode, d.crop_size, d.crop_pad, tuple(d.crop_pad_range), d.crop_shift) == (
        "crop",
        256,
        1.5,
        (1.125, 1.875),
        0.25,
    )
    a = cfg.augment
    assert (a.crop_frame, a.shift, a.scale, a.rotation) == ("image", 0.05, 0.05, 10.0)
    assert a.brightness == a.contrast == a.saturation == a.hue == a.bg_replace == a.blur == a.noise == 0
    assert (cfg.loss.weight_cls, cfg.loss.weight_kpt, cfg.loss.reduction) == (0.1, 1.0, "sum")
    assert (cfg.batch_size, cfg.iters, cfg.amp) == (16, 10000, "off")
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.model.backbone_norm) == ("darknet53", True, "batch")
    assert to_dict(build_config(preset="paper-crop")) == to_dict(cfg)
    assert TRAIN_PRESETS["paper-crop"] is TRAIN_PRESETS["paper"]


def test_paper_schedule_equals_torch_linear_one_cycle_without_momentum(synth_root, tmp_path):
    """The lr of every step equals ``OneCycleLR(opt, 1e-3, iters + 100, pct_start=0.05,
    cycle_momentum=False, anneal_strategy='linear')`` on ``AdamW(lr=1e-3, weight_decay=1e-4, eps=1e-8)`` (the
    reference's build_model), and AdamW's betas stay (0.9, 0.999)."""
    iters = 300
    cfg = build_config(
        preset="paper",
        options={"data": {"dataset": "learn", "root": str(synth_root)}, "out": str(tmp_path / "s")},
        overrides=[*CPU_SETS, "model.backbone=tiny-cpu", f"iters={iters}", "batch_size=2", "device=cpu"],
    )
    t = Trainer(prepare_config(cfg))
    assert isinstance(t.optimizer, torch.optim.AdamW)
    group = t.optimizer.param_groups[0]
    assert (group["weight_decay"], group["eps"]) == (1e-4, 1e-8)

    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.0001, eps=1e-8)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, 1e-3, iters + 100, pct_start=0.05, cycle_momentum=False, anneal_strategy="linear"
    )
    lrs, ref_lrs = [], []
    for _ in range(iters):
        lrs.append(group["lr"])
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        assert tuple(group["betas"]) == (0.9, 0.999)
        t.optimizer.step()
        t.scheduler.step()
        ref_opt.step()
        ref.step()
    assert lrs == pytest.approx(ref_lrs, rel=1e-12, abs=0)
    # Warm-up over 5 % of the 400 planned steps, then a straight line towards lr / 25 / 1e4 at step 399, of
    # which the run takes the first 300.
    assert lrs[0] == pytest.approx(1e-3 / 25) and lrs[19] == pytest.approx(1e-3)
    slope = [b - a for a, b in zip(lrs[30:-1], lrs[31:], strict=True)]
    assert max(slope) - min(slope) < 1e-15 and lrs[-1] > 1e-4


@pytest.mark.slow
def test_paper_preset_trains_a_teacher_and_an_ot_student_and_predicts(
    monkeypatch, capsys, synth_root, tmp_path
):
    """``bopkd train teacher --preset paper`` (darknet53 on 256 px crops), ``bopkd train student --preset
    paper --kd ot`` (darknet-tiny-h), 2 iterations of batch 2 each, then a valid BOP CSV of the student.
    (45-75 s on a shared 2-core CPU; test_cli runs the same commands with the tiny network.)"""
    common = ["--preset", "paper", "--dataset", "learn", "--root", str(synth_root), "--iters", "2"]
    common += ["--batch-size", "2", "--device", "cpu"]
    sets = [x for s in CPU_SETS for x in ("--set", s)]
    teacher = tmp_path / "teacher"
    code, out, err = run_cli(monkeypatch, capsys, "train", "teacher", *common, "--out", str(teacher), *sets)
    assert code == 0, err
    assert "trained 2 iterations" in out
    saved = yaml.safe_load((teacher / "config.yaml").read_text())
    assert saved["model"]["backbone"] == "darknet53" and saved["data"]["crop_size"] == 256
    assert saved["optim"]["anneal"] == "linear" and saved["augment"]["crop_frame"] == "image"

    student = tmp_path / "student"
    args = ["train", "student", "--backbone", "darknet-tiny-h", "--kd", "ot", "--teacher", str(teacher)]
    code, out, err = run_cli(monkeypatch, capsys, *args, *common, "--out", str(student), *sets)
    assert code == 0, err
    assert "kd_ot" in out and "trained 2 iterations" in out

    shutil.rmtree(teacher)  # its checkpoint (darknet53 with AdamW state) takes 0.5 GB

    res = _predict(student, synth_root, tmp_path / "results", sets=["cpu_threads=1", "predict.score_th=0.0"])
    report = check_submission(res.csv, synth_root)
    assert res.protocol == "oracle-gt-boxes" and report.n_estimates == res.n_estimates > 0
