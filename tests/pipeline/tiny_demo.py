"""The tiny demo run the pipeline tests plan and run: options, command lines and the records it writes."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from bopkd.pipeline import PipelineOptions

#: A demo small enough for a test: 3 objects, 10 train + 3 test images, a few iterations; score_th 0 so
#: that the barely trained networks still output a pose for every target.
TINY_SETS = [
    "synth.train=10",
    "synth.test=3",
    "synth.width=320",
    "synth.height=240",
    "train.data.num_workers=0",
    "train.data.crop_size=64",
    "train.batch_size=2",
    "train.ckpt_every=2",
    "teacher.iters=4",
    "student.iters=2",
    "predict.predict.score_th=0.0",
]


@contextlib.contextmanager
def inside(folder: Path):
    """Run in ``folder``: the pipeline gets relative paths, so a copied folder is a valid run folder too."""
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


def tiny_args(*extra: str, methods: str | None = None, family: str | None = "sparse") -> list[str]:
    """The tiny demo's command line; ``family`` None: the preset's (``both`` for the demo)."""
    args = [
        "run-pipeline",
        "demo",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    for s in TINY_SETS:
        args += ["--set", s]
    if methods:
        args += ["--methods", methods]
    if family:
        args += ["--family", family]
    return args + list(extra)


def tiny_options(methods=None, sets=(), **kw) -> PipelineOptions:
    """The tiny demo's options; the sparse family unless ``family`` is given."""
    kw.setdefault("family", "sparse")
    return PipelineOptions(
        dataset="demo",
        device="cpu",
        threads=1,
        methods=methods,
        sets=[*TINY_SETS, *sets],
        progress=False,
        **kw,
    )


def records(tmp: Path, preset: str = "demo", dataset: str = "demo") -> dict[str, dict]:
    d = tmp / "runs" / f"{dataset}-{preset}" / "stages"
    return {p.stem: json.loads(p.read_text()) for p in sorted(d.glob("*.json"))}
