"""The tiny synthetic dataset and the trained run shared by the training and inference tests.

The dataset is made by ``bopkd synth``'s builder (so the tests need no downloaded data): 8 test images of
320x240 with 2-3 of the procedural objects 1, 2, 3 each, with masks and targets. The fixtures are
registered once, by ``tests/conftest.py``, so that the session-scoped ones are built once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bopkd.train.config import RunConfig, build_config

SYNTH_NAME = "learn"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    root = tmp_path_factory.mktemp("bop")
    build_synthetic_dataset(
        SynthConfig(
            name=SYNTH_NAME,
            root=str(root),
            train=0,
            test=8,
            width=320,
            height=240,
            objects=(1, 2, 3),
            objects_per_image=(2, 3),
            seed=1,
        )
    )
    return root


def tiny_config(root: Path, out: Path, *sets: str, iters: int = 6, **options) -> RunConfig:
    """A CPU run of the tiny network on 64x64 GT-box crops of the synthetic test images (use the
    ``make_cfg`` fixture)."""
    opts = {
        "data": {"dataset": SYNTH_NAME, "root": str(root)},
        "iters": iters,
        "out": str(out),
        "device": "cpu",
    }
    opts.update(options)
    return build_config(
        preset="cpu-quick",
        options=opts,
        overrides=[
            "data.split=test",
            "data.mode=crop",
            "data.crop_size=64",
            "data.num_workers=0",
            "batch_size=2",
            "progress=false",
            "log_every=1",
            "cpu_threads=1",
            *sets,
        ],
    )


@pytest.fixture
def make_cfg(synth_root):
    """``make_cfg(out, *sets, iters=6, **options)`` -> :func:`tiny_config` on the synthetic dataset."""

    def make(out: Path, *sets: str, iters: int = 6, **options) -> RunConfig:
        return tiny_config(synth_root, out, *sets, iters=iters, **options)

    return make


#: The overfitting run of the learning test: the tiny network on 96x96 GT-box crops of the 8 synthetic
#: test images, without augmentation (the crops are those of test time), 300 iterations of batch 4.
LEARN_SETS = (
    "data.crop_size=96",
    "augment.enabled=false",
    "data.crop_pad_range=[1.35,1.35]",
    "data.crop_shift=0",
    "optim.lr=2e-3",
    "batch_size=4",
    "log_every=10",
    "ckpt_every=300",
)
LEARN_ITERS = 300


@pytest.fixture(scope="session")
def learned_run(synth_root, tmp_path_factory) -> dict:
    """Train the learning test's model once per session: ``{"run_dir", "seconds", "summary"}``."""
    import time

    from bopkd.train.command import train

    out = tmp_path_factory.mktemp("runs") / "learn"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        summary = train(tiny_config(synth_root, out, *LEARN_SETS, iters=LEARN_ITERS))
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(n)
    return {"run_dir": out, "seconds": seconds, "summary": summary}


@pytest.fixture
def one_cpu_thread():
    """One torch thread for the test (much faster on a busy shared machine); restored after. The training and
    inference test folders use it automatically (their ``conftest.py``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
