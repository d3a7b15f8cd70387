"""The ``bopkd train`` and ``bopkd predict`` commands: options, one-line errors, resume, multi-process (DDP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bopkd.cli import main
from bopkd.train import checkpoint as ckpt
from bopkd.train.distributed import strip_gpus_option, torchrun_command
from bopkd.train.logging import read_metrics

TINY = [
    "--set",
    "data.split=test",
    "--set",
    "data.mode=crop",
    "--set",
    "data.crop_size=64",
    "--set",
    "data.num_workers=0",
    "--set",
    "progress=false",
    "--set",
    "log_every=1",
    "--set",
    "cpu_threads=1",
]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["bopkd", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_predict_commands(monkeypatch, capsys, synth_root, tmp_path):
    run = tmp_path / "run"
    base = [
        "train",
        "teacher",
        "--preset",
        "cpu-quick",
        "--dataset",
        "learn",
        "--root",
        str(synth_root),
        "--out",
        str(run),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "5e-4",
        "--device",
        "cpu",
        *TINY,
    ]
    code, out, err = run_cli(monkeypatch, capsys, *base)
    assert code == 0, err
    assert "trained 2 iterations" in out and str(run) in out
    cfg = (run / "config.yaml").read_text()
    assert "lr: 0.0005" in cfg and "batch_size: 2" in cfg and "backbone: tiny-cpu" in cfg
    # Again without --resume: refused; with --resume on a finished run: nothing left to do.
    code, _, err = run_cli(monkeypatch, capsys, *base)
    assert code == 2 and "add --resume" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(monkeypatch, capsys, *base, "--resume")
    assert code == 0 and ckpt.load_checkpoint(run)["iteration"] == 2, err

    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        str(run),
        "--dataset",
        "learn",
        "--root",
        str(synth_root),
        "--out",
        str(tmp_path / "res"),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--set",
        "predict.score_th=0.0",
        "--set",
        "cpu_threads=1",
    )
    assert code == 0, err
    csv = tmp_path / "res" / "bopkd-teacher-tiny-cpu-oracle-gt-boxes_learn-test.csv"
    assert csv.is_file() and (tmp_path / "res" / (csv.name + ".json")).is_file()
    assert "oracle-gt-boxes" in out and "ms/image" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "teacher", "--set", "optim.lr=fast"],
            "'optim.lr' (from --set optim.lr=fast): expected a number",
        ),
        (["train", "teacher", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "teacher", "--set", "data.modee=crop"], "did you mean 'mode'?"),
        (["train", "student", "--backbone", "tiny-cpu", "--kd", "ot"], "needs a teacher checkpoint"),
        (["predict", "missing_run_dir", "--dataset", "lmo"], "missing file missing_run_dir"),
    ],
)
def test_user_errors_are_one_line(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_truncated_checkpoint_is_one_line_error(monkeypatch, capsys, tmp_path):
    p = tmp_path / "broken.pt"
    p.write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(p), "--dataset", "lmo")
    assert code == 2 and "not a readable bopkd checkpoint" in err and len(err.strip().splitlines()) == 1


def test_gpus_option_relaunches_under_torchrun():
    argv = ["train", "teacher", "--gpus", "2", "--iters", "3", "--gpus=4", "--out", "r"]
    assert strip_gpus_option(argv) == ["train", "teacher", "--iters", "3", "--out", "r"]
    cmd = torchrun_command(2, ["train", "teacher"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node" in cmd
    assert cmd[-4:] == ["-m", "bopkd", "train", "teacher"]


def _train_teacher_cmd(root, out, iters: int) -> list[str]:
    """``python -m bopkd train teacher`` of the tiny network on the synthetic ``learn`` dataset, batch 2, CPU."""
    return [
        sys.executable,
        "-m",
        "bopkd",
        "train",
        "teacher",
        "--preset",
        "cpu-quick",
        "--dataset",
        "learn",
        "--root",
        str(root),
        "--out",
        str(out),
        "--iters",
        str(iters),
        "--batch-size",
        "2",
        "--device",
        "cpu",
        *TINY,
    ]


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_two_processes_on_the_cpu_with_gloo(synth_root, tmp_path):
    """``--gpus 2`` re-launches itself under torchrun: 2 CPU processes (gloo), rank 0 logs and saves."""
    run = tmp_path / "ddp"
    cmd = [*_train_teacher_cmd(synth_root, run, 3), "--gpus", "2"]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("trained 3 iterations") == 1  # printed by rank 0 only
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["iterations"] == 3
    assert [r["iter"] for r in read_metrics(run)] == [1, 2, 3]  # one writer
    state = ckpt.load_checkpoint(run)
    assert state["iteration"] == 3 and state["info"]["world_size"] == 2
    # Every rank's RNG streams are kept (each rank is seeded with seed + rank), for an exact resume.
    ranks = state["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(synth_root, tmp_path):
    """Kill ``bopkd train`` (SIGKILL) after its first checkpoint; ``--resume`` ends with the weights of an
    uninterrupted run. (test_trainer covers the same code in-process, faster.)"""

    def cmd(out):
        return [
            *_train_teacher_cmd(synth_root, out, 40),
            "--set",
            "ckpt_every=5",
            "--set",
            "deterministic=true",
        ]

    subprocess.run(cmd(tmp_path / "a"), env=_env(), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        cmd(tmp_path / "b"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = ckpt.load_checkpoint(last)["iteration"]
    assert 5 <= killed_at < 40
    subprocess.run(
        [*cmd(tmp_path / "b"), "--resume"], env=_env(), check=True, capture_output=True, timeout=600
    )
    a, b = ckpt.load_checkpoint(tmp_path / "a"), ckpt.load_checkpoint(tmp_path / "b")
    assert b["iteration"] == 40
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
