"""The training loop's hooks (bopkd.train.hooks): calling order, trainer state, clean-up on errors."""

from __future__ import annotations

import pytest

from bopkd.train import checkpoint as ckpt
from bopkd.train.command import prepare_config
from bopkd.train.hooks import (
    Checkpointer,
    HookBase,
    LRScheduler,
    MetricsWriter,
    NonFiniteCheck,
    ProgressBar,
    RunInfoWriter,
    Timer,
)
from bopkd.train.logging import read_metrics
from bopkd.train.trainer import Trainer


class Recorder(HookBase):
    """Records every hook point with the trainer's iteration (and the step's state after each step)."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple[str, int]] = []
        self.steps: list[dict] = []
        self.fail_at = fail_at

    def _rec(self, point: str) -> None:
        self.calls.append((point, self.trainer.iteration))

    def before_train(self):
        self._rec("before_train")

    def before_step(self):
        self._rec("before_step")

    def after_loss(self):
        self._rec("after_loss")
        assert set(self.trainer.terms) == {"loss_cls", "loss_kpt"} and self.trainer.total.dim() == 0

    def after_backward(self):
        self._rec("after_backward")

    def after_step(self):
        self._rec("after_step")
        tr = self.trainer
        self.steps.append({"iter": tr.iteration, "lr": tr.lr, **tr.last_terms})
        if tr.iteration == self.fail_at:
            raise RuntimeError("stop here")

    def after_train(self):
        self._rec("after_train")

    def close(self):
        self._rec("close")


def test_default_hooks_and_their_order(make_cfg, tmp_path):
    t = Trainer(prepare_config(make_cfg(tmp_path / "o", iters=2)))
    kinds = [type(h) for h in t.hooks]
    # the schedule steps before the checkpoint saves it; the timer stops before run_info.json is written
    assert kinds == [
        LRScheduler,
        NonFiniteCheck,
        Timer,
        ProgressBar,
        MetricsWriter,
        Checkpointer,
        RunInfoWriter,
    ]
    assert all(h.trainer is t for h in t.hooks)


def test_hook_points_are_called_in_order_with_the_step_state(make_cfg, tmp_path):
    t = Trainer(prepare_config(make_cfg(tmp_path / "h", iters=3)))
    rec = Recorder()
    t.register_hooks([rec])
    summary = t.fit(stop_at=2)
    step = ["before_step", "after_loss", "after_backward", "after_step"]
    expect = [("before_train", 0)]
    for it in (0, 1):
        expect += [(p, it + (p == "after_step")) for p in step]
    expect += [("after_train", 2), ("close", 2)]
    assert rec.calls == expect
    # last_terms are the step's floats with their sum; lr is the rate the step used (logged as such)
    rows = read_metrics(tmp_path / "h")
    assert [r["iter"] for r in rows] == [1, 2]
    for s, r in zip(rec.steps, rows, strict=True):
        assert s["loss"] == pytest.approx(s["loss_cls"] + s["loss_kpt"], rel=1e-6)
        assert (s["iter"], s["lr"], s["loss"]) == (r["iter"], r["lr"], r["loss"])
    assert summary["iterations"] == 2 and summary["last"] == {
        k: v for k, v in rec.steps[-1].items() if k not in ("iter", "lr")
    }
    # the checkpoint of the last iteration holds the schedule after its step (LRScheduler runs first)
    state = ckpt.load_checkpoint(tmp_path / "h" / "checkpoints" / "last.pt")
    assert state["iteration"] == 2 and state["scheduler"]["last_epoch"] == 2
    assert not (tmp_path / "h" / "checkpoints" / "final.pt").exists()  # the run planned 3 iterations
    assert not (tmp_path / "h" / "run_info.json").exists()


def test_close_runs_when_a_hook_raises_and_after_train_does_not(make_cfg, tmp_path):
    t = Trainer(prepare_config(make_cfg(tmp_path / "e", iters=3)))
    rec = Recorder(fail_at=1)
    t.register_hooks([rec])
    writer = next(h for h in t.hooks if isinstance(h, MetricsWriter))
    closed = []
    writer.logger.close = lambda: closed.append(True)  # the metrics files (TensorBoard) are released
    with pytest.raises(RuntimeError, match="stop here"):
        t.fit()
    points = [p for p, _ in rec.calls]
    assert points[-1] == "close" and "after_train" not in points
    assert closed == [True]
    assert not (tmp_path / "e" / "checkpoints" / "final.pt").exists()
