"""Tests of the stage actions (bopkd/pipeline/stages.py) that need no training."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from bopkd.cli import app
from bopkd.pipeline import build_plan
from tests.pipeline.tiny_demo import tiny_options


def test_multi_gpu_training_runs_bopkd_train_under_its_own_launcher(tmp_path, monkeypatch):
    """--gpus N: a training stage runs ``bopkd train ROLE --config CFG --resume --gpus N`` (which re-launches
    under torchrun) with the stage's full config; no GPU is needed to check the command and the config."""
    import bopkd.pipeline.stages as pl
    from bopkd.pipeline import StageContext
    from bopkd.train.config import build_config

    monkeypatch.chdir(tmp_path)
    plan = build_plan(tiny_options(methods=["ot"], seeds=[3, 4], gpus=2))
    assert [s.name for s in plan.stages if s.kind == "student"] == [
        "student-tiny-cpu-ot-s3",
        "student-tiny-cpu-ot-s4",
    ]
    assert plan.stage("teacher").config["seed"] == 3 and plan.stage("teacher").config["gpus"] == 2
    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        run_dir = Path(cmd[cmd.index("--config") + 1]).parent
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "final.pt").write_bytes(b"x")

    monkeypatch.setattr(pl, "run_subprocess", fake_run)
    st = plan.stage("student-tiny-cpu-ot-s4")
    teacher_rec = {"info": {"checkpoint": "runs/t/checkpoints/final.pt"}, "outputs": {}}
    ctx = StageContext(
        st,
        {"data": {}, "teacher": teacher_rec},
        "f" * 64,
        Path("runs/demo-demo"),
        False,
        None,
        False,
        print,
        plan.options,
    )
    out = st.action(ctx)
    (cmd,) = calls
    assert cmd[:5] == [sys.executable, "-m", "bopkd", "train", "student"]
    assert cmd[5] == "--config" and cmd[-3:] == ["--resume", "--gpus", "2"]
    assert cmd[7:-3] == ["--backbone", "tiny-cpu", "--kd", "ot", "--teacher", "runs/t/checkpoints/final.pt"]
    # the command line parses (typer) into the same config: run it with a training stub
    import bopkd.train.command as command_mod

    seen = {}
    monkeypatch.setattr(
        command_mod, "train", lambda c, resume=False, **k: seen.update(cfg=c, resume=resume) or None
    )
    monkeypatch.setattr(command_mod.dist_utils, "launched_by_torchrun", lambda: True)
    r = CliRunner().invoke(app, cmd[3:])
    assert r.exit_code == 0, r.output
    assert (
        seen["resume"] and seen["cfg"].kd.teacher == "runs/t/checkpoints/final.pt" and seen["cfg"].seed == 4
    )
    cfg = build_config(config_file=cmd[cmd.index("--config") + 1])
    assert cfg.gpus == 2 and cfg.seed == 4 and cfg.kd.method == "ot"
    assert cfg.kd.teacher == "runs/t/checkpoints/final.pt"
    assert cfg.out == str(Path("runs/demo-demo/train") / f"student-tiny-cpu-ot-s4-{'f' * 10}")
    assert out.files == [Path(cfg.out) / "checkpoints" / "final.pt"]
