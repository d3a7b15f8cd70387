"""The training loop (bopkd.train.trainer): exact resume, losses with a teacher, stopping on NaN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bopkd.errors import BopkdError
from bopkd.train import checkpoint as ckpt
from bopkd.train.command import prepare_config
from bopkd.train.hooks import NonFiniteLossError
from bopkd.train.logging import read_metrics
from bopkd.train.loss_fns import task_loss_fn
from bopkd.train.trainer import Trainer


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_weights_of_an_uninterrupted_run(make_cfg, tmp_path):
    """Train 6 iterations straight; train 3, stop (as if killed after the checkpoint), resume to 6."""
    sets = ("deterministic=true", "ckpt_every=3", "augment.rotation=20")
    a = Trainer(prepare_config(make_cfg(tmp_path / "a", *sets)))
    a.fit()
    b = Trainer(prepare_config(make_cfg(tmp_path / "b", *sets)))
    b.fit(stop_at=3)
    assert ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["iteration"] == 3
    assert not (tmp_path / "b" / "checkpoints" / "final.pt").exists()
    # A fresh process would start from scratch: perturb the global RNGs to make sure they are restored.
    torch.manual_seed(1234)
    # The data loader may differ (here: a worker process): items are seeded by (seed, epoch, index).
    b2 = Trainer(prepare_config(make_cfg(tmp_path / "b", *sets, "data.num_workers=1")), resume=True)
    assert b2.iteration == 3 and b2.resumed
    b2.fit()
    wa, wb = _weights(a.model), _weights(b2.model)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert a.optimizer.state_dict()["state"][0]["step"] == b2.optimizer.state_dict()["state"][0]["step"] == 6
    assert a.scheduler.get_last_lr() == b2.scheduler.get_last_lr()
    # The metrics files read as one run with the same losses.
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["iter"] for r in mb] == list(range(1, 7))
    assert [r["loss"] for r in ma] == [r["loss"] for r in mb]
    csv_rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].startswith("iter,lr,loss_cls,loss_kpt,loss") and len(csv_rows) == 7
    final = ckpt.load_checkpoint(tmp_path / "b")  # the run directory resolves to final.pt
    assert final["iteration"] == 6 and all(torch.equal(final["model"][k], wa[k]) for k in wa)
    # final.pt is a second name of last.pt (one file on disk), not a copy.
    folder = tmp_path / "b" / "checkpoints"
    assert (folder / "final.pt").samefile(folder / "last.pt")
    assert sorted(p.name for p in folder.iterdir()) == ["final.pt", "last.pt"]


def test_a_run_directory_is_not_overwritten_and_resume_checks_the_plan(make_cfg, tmp_path):
    t = Trainer(prepare_config(make_cfg(tmp_path / "r", "ckpt_every=2", iters=4)))
    t.fit(stop_at=2)
    with pytest.raises(BopkdError, match="already holds a checkpoint: add --resume"):
        Trainer(prepare_config(make_cfg(tmp_path / "r", iters=4)))
    with pytest.raises(BopkdError, match="planned for 4 iterations.*--iters 4"):
        Trainer(prepare_config(make_cfg(tmp_path / "r", iters=8)), resume=True)


def test_non_finite_loss_stops_with_a_one_line_error_and_keeps_the_last_good_state(make_cfg, tmp_path):
    cfg = prepare_config(make_cfg(tmp_path / "nan", "ckpt_every=100", iters=8))
    calls = {"n": 0}

    def exploding(outputs, batch, teacher_outputs, assignment=None):
        calls["n"] += 1
        scale = math.nan if calls["n"] >= 3 else 0.0
        return {"loss_boom": outputs["kpts"].sum() * scale}

    fns = {"task": task_loss_fn(cfg), "boom": exploding}
    t = Trainer(cfg, loss_fns=fns)
    with pytest.raises(NonFiniteLossError) as e:
        t.fit()
    msg = str(e.value)
    assert "\n" not in msg and "iteration 3" in msg and str(tmp_path / "nan") in msg
    assert "loss_boom=nan" in msg and "lower the learning rate" in msg and "--lr 0.0001" in msg
    state = ckpt.load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


class _Adapter(nn.Module):
    """A distillation-like loss with a trainable parameter that uses the teacher's outputs."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))
        self.saw_teacher = False

    def forward(self, outputs, batch, teacher_outputs, assignment=None):
        self.saw_teacher = teacher_outputs is not None
        diff = self.gain * outputs["features"][0] - teacher_outputs["features"][0]
        return {"loss_kd": diff.pow(2).mean()}


def test_teacher_is_frozen_and_every_term_is_optimised_and_logged(make_cfg, tmp_path):
    from bopkd.models.posenet import build_model

    cfg = prepare_config(make_cfg(tmp_path / "kd", iters=3))
    teacher = build_model(cfg.model)
    teacher.train()
    before = _weights(teacher)
    adapter = _Adapter()
    t = Trainer(cfg, teacher=teacher, loss_fns={"task": task_loss_fn(cfg), "kd": adapter})
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    t.fit()
    assert adapter.saw_teacher and adapter.gain.item() != 0.5
    assert not teacher.training and all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    rows = read_metrics(tmp_path / "kd")
    assert {"loss_cls", "loss_kpt", "loss_kd", "loss", "lr", "img_s"} <= set(rows[-1])
    assert rows[-1]["loss"] == pytest.approx(
        rows[-1]["loss_cls"] + rows[-1]["loss_kpt"] + rows[-1]["loss_kd"], rel=1e-5
    )
    state = ckpt.load_checkpoint(tmp_path / "kd" / "checkpoints" / "final.pt")
    assert torch.equal(state["extra_modules"]["kd"]["gain"], adapter.gain.detach())
    # A loss term produced twice is a configuration error.
    dup = Trainer(
        prepare_config(make_cfg(tmp_path / "dup", iters=1)),
        loss_fns={"a": task_loss_fn(cfg), "b": task_loss_fn(cfg)},
    )
    with pytest.raises(BopkdError, match="'loss_cls' is produced twice"):
        dup.fit()


@pytest.mark.parametrize("iters", [1, 2, 3, 20, 21, 100])
def test_one_cycle_schedule_works_for_any_run_length(make_cfg, tmp_path, iters):
    """OneCycleLR divides by its warm-up length: 20 iterations x 5 % used to divide by zero."""
    t = Trainer(prepare_config(make_cfg(tmp_path / "s", iters=iters)))
    lrs = []
    for _ in range(iters):
        lrs.append(t.optimizer.param_groups[0]["lr"])
        t.optimizer.step()
        t.scheduler.step()
    assert all(0 < lr <= 1e-3 + 1e-12 for lr in lrs)
    if iters >= 20:
        peak = lrs.index(max(lrs))
        assert 1 <= peak <= max(1, round(0.05 * iters)) and lrs[-1] < 1e-5
