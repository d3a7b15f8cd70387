"""Training with every distillation method end to end on a tiny synthetic dataset.

A tiny teacher is trained for a few iterations, its classification bias raised so that it has
confident cells (an untrained teacher has none, which would leave the OT loss nothing to do); then a
student is trained a few iterations with each method through the trainer (one through the CLI with
``--teacher``/``--kd``/``--kd-weight``), a run is interrupted and resumed, and ``bopkd predict`` exports
a BOP CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bopkd.cli import app
from bopkd.losses.kd import KD_METHODS
from bopkd.losses.kd.ot_kd import OTKDConfig
from bopkd.train import checkpoint as ckpt
from bopkd.train.command import prepare_config, train
from bopkd.train.config import build_config
from bopkd.train.networks import load_frozen_model
from bopkd.train.trainer import Trainer

SIZE = (64, 48)


def run_options(root, out, role="student", iters=2, **kd):
    return {
        "role": role,
        "data": {"dataset": "kdtiny", "root": str(root), "input_size": list(SIZE), "num_workers": 0},
        "model": {
            "backbone": "tiny-cpu",
            "levels": [3, 4, 5],
            "fpn_channels": 16 if role == "student" else 24,
            "head_convs": 1,
        },
        "kd": kd,
        "iters": iters,
        "batch_size": 2,
        "device": "cpu",
        "out": str(out),
        "progress": False,
        "ckpt_every": 1,
        "log_every": 1,
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    tmp = tmp_path_factory.mktemp("kdtrain")
    root = tmp / "bop"
    build_synthetic_dataset(
        SynthConfig(
            name="kdtiny",
            root=str(root),
            train=4,
            test=2,
            width=SIZE[0] * 2,
            height=SIZE[1] * 2,
            objects_per_image=(1, 2),
            seed=0,
        )
    )
    train(build_config(options=run_options(root, tmp / "teacher", role="teacher")))
    # make the tiny teacher confident everywhere (score 0.7), as a trained teacher is on its objects
    path = ckpt.resolve_checkpoint(tmp / "teacher")
    state = ckpt.load_checkpoint(path)
    state["model"]["head.cls_logits.bias"].fill_(math.log(0.7 / 0.3))
    ckpt.save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version", "versions")})
    return root, tmp, path


@pytest.mark.parametrize("method", ["pred", "fkd", "ot", "fkd+ot"])
def test_each_method_trains_with_finite_logged_terms(setup, method):
    root, tmp, teacher = setup
    out = tmp / f"student-{method}"
    summary = train(build_config(options=run_options(root, out, method=method, teacher=str(teacher))))
    last = summary["last"]
    terms = KD_METHODS[method].terms
    assert set(terms) <= set(last) and {"loss_cls", "loss_kpt", "loss"} <= set(last)
    assert all(math.isfinite(v) for v in last.values())
    assert all(last[t] > 0 for t in terms), last
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert rows and all(t in rows[-1] for t in terms)
    state = ckpt.load_checkpoint(out)
    assert state["config"]["kd"]["method"] == method
    if method in ("fkd", "fkd+ot"):
        assert any(
            k.startswith("adapters.") or k.startswith("fkd.adapters.") for k in state["extra_modules"]["kd"]
        )


def test_cli_student_with_teacher_kd_and_weight_then_predict(setup):
    root, tmp, teacher = setup
    out = tmp / "student-cli"
    runner = CliRunner()
    args = [
        "train",
        "student",
        "--backbone",
        "tiny-cpu",
        "--dataset",
        "kdtiny",
        "--root",
        str(root),
        "--iters",
        "2",
    ]
    args += [
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--teacher",
        str(teacher),
        "--kd",
        "ot",
        "--kd-weight",
        "2.5",
    ]
    args += [
        "--set",
        "data.input_size=[64,48]",
        "--set",
        "data.num_workers=0",
        "--set",
        "progress=false",
        "--set",
        "model.levels=[3,4,5]",
    ]
    args += ["--set", "kd.options.detach_scores=true"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    state = ckpt.load_checkpoint(out)
    # the run records every option of the method, the given ones over the defaults
    assert state["config"]["kd"] == {
        "method": "ot",
        "teacher": str(teacher),
        "options": {**dataclasses.asdict(OTKDConfig()), "weight": 2.5, "detach_scores": True},
    }
    assert yaml.safe_load((out / "config.yaml").read_text())["kd"] == state["config"]["kd"]
    # the 2-iteration student is not confident anywhere yet: every cell is a candidate (score_th 0)
    r = runner.invoke(
        app,
        [
            "predict",
            str(out),
            "--dataset",
            "kdtiny",
            "--root",
            str(root),
            "--out",
            str(tmp / "results"),
            "--device",
            "cpu",
            "--set",
            "predict.score_th=0.0",
        ],
    )
    assert r.exit_code == 0, r.output
    csvs = list((tmp / "results").glob("*kd-ot*_kdtiny-test.csv"))
    assert len(csvs) == 1
    header = csvs[0].read_text().splitlines()[0]
    assert header == "scene_id,im_id,obj_id,score,R,t,time"


def test_cli_unknown_method_is_one_line(setup):
    root, tmp, teacher = setup
    r = CliRunner().invoke(
        app,
        [
            "train",
            "student",
            "--backbone",
            "tiny-cpu",
            "--root",
            str(root),
            "--kd",
            "bogus",
            "--teacher",
            str(teacher),
        ],
    )
    assert r.exit_code != 0
    assert isinstance(r.exception, Exception) and "none, pred, fkd, ot, fkd+ot" in str(r.exception)
    assert "\n" not in str(r.exception)


def test_resume_with_distillation_parameters(setup):
    root, tmp, teacher = setup
    out = tmp / "student-resume"
    cfg = prepare_config(
        build_config(options=run_options(root, out, iters=3, method="fkd+ot", teacher=str(teacher)))
    )
    t_model, _ = load_frozen_model(teacher)
    tr = Trainer(cfg, teacher=t_model)
    tr.fit(stop_at=2)
    saved = ckpt.load_checkpoint(out / "checkpoints" / ckpt.LAST)
    assert saved["iteration"] == 2
    kd_state = saved["extra_modules"]["kd"]
    tr2 = Trainer(cfg, teacher=load_frozen_model(teacher)[0], resume=True)
    assert tr2.iteration == 2
    restored = tr2.extra_modules["kd"].state_dict()
    assert all(torch.equal(restored[k], kd_state[k]) for k in kd_state)
    summary = tr2.fit()
    assert summary["iterations"] == 3 and all(math.isfinite(v) for v in summary["last"].values())
    assert (out / "checkpoints" / ckpt.FINAL).is_file()


def test_a_method_added_as_docs_extending_describes_trains_and_logs_its_term(setup):
    """The recipe of docs/extending.md: a config dataclass, a KDMethod subclass registered with
    ``@register_kd``, then ``kd.method`` in a training config; the toy method is removed afterwards."""
    from dataclasses import dataclass

    from bopkd.errors import BopkdError
    from bopkd.losses.kd import KDMethod, register_kd, unregister_kd

    @dataclass
    class LogitL2Config:
        weight: float = 1.0

        def validate(self, source: str = "the kd config") -> LogitL2Config:
            if not self.weight >= 0:
                raise BopkdError(f"{source}: kd weight {self.weight} must be >= 0")
            return self

    @register_kd("toy-l2", config=LogitL2Config, summary="L2 between class logits", terms=("kd_toy_l2",))
    class LogitL2(KDMethod):
        def forward(self, student_out, batch, teacher_out=None, assignment=None):
            s, t = student_out["cls_logits"].float(), teacher_out["cls_logits"].detach().float()
            return {"kd_toy_l2": self.cfg.weight * (s - t).pow(2).mean()}

    root, tmp, teacher = setup
    out = tmp / "student-toy"
    try:
        cfg = build_config(
            options=run_options(root, out, method="toy-l2", teacher=str(teacher)), kd_weight=0.5
        )
        assert cfg.kd.options == {"weight": 0.5}
        summary = train(cfg)
        assert summary["last"]["kd_toy_l2"] > 0 and math.isfinite(summary["last"]["kd_toy_l2"])
        rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
        assert len(rows) == 2 and all(float(r["kd_toy_l2"]) > 0 for r in rows)
    finally:
        unregister_kd("toy-l2")
    assert "toy-l2" not in KD_METHODS
