"""Benchmark of the synthetic dataset builder: images per second at 640x480 (goal: >= 20 on 2 cores).

Measures, on LM-O's camera at 640x480 with bopkd's procedural objects and LINEMOD-like viewpoints:

- setup: building the procedural models, writing models/ (once per dataset);
- make: rendering + shading + GT masks/info of one image, in the main thread (no files);
- train_pbr: the whole pipeline per image (make + JPEG rgb, depth PNG, mask PNGs, JSON), files written
  by the builder's writer threads, i.e. what ``bopkd synth`` achieves;
- test: the same with PNG rgb (BOP's test images are PNG).

Prints wall-clock and CPU figures and the load average: the machine is shared, so wall-clock rates
drop when other processes run; CPU time per image is the steadier figure, and from it the rate two
free cores give (main thread rendering, writer threads encoding on the other core).

Usage: python benchmarks/synth.py [--images 200] [--size 640x480] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200, help="images per measured split")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--keep", default=None, help="write the datasets here and keep them")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    from bopkd.data.synth import SynthConfig, build_synthetic_dataset, resolve_camera
    from bopkd.data.synth.images import ImageMaker
    from bopkd.data.synth.models import load_models

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bopkd_bench_synth_"))
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    try:
        # Setup (models), measured on its own.
        t0, c0 = time.perf_counter(), time.process_time()
        cfg = SynthConfig(name="setup", root=str(root), width=w, height=h, train=0, test=0)
        build_synthetic_dataset(cfg, force=True)
        print(f"setup (8 procedural models, models/ + models_eval/): {time.perf_counter() - t0:.2f} s wall")

        # make() alone: render + shade + GT info, no files.
        cam = resolve_camera(cfg.camera, w, h)
        maker = ImageMaker(cfg, cam, load_models(cfg))
        for i in range(10):  # warm the texture bank
            maker.make(np.random.default_rng(10_000 + i), 0.1)
        n = min(args.images, 100)
        t0, c0 = time.perf_counter(), time.process_time()
        n_inst = 0
        for i in range(n):
            n_inst += len(maker.make(np.random.default_rng(i), 0.1).gts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"make (render + shade + GT info, {w}x{h}, {n_inst / n:.1f} objects/image): "
            f"{n / wall:.1f} images/s wall, {1000 * cpu / n:.1f} ms CPU/image"
        )

        # The whole pipeline per split.
        for split in ("train_pbr", "test"):
            kw = (
                {"train": args.images, "test": 0}
                if split == "train_pbr"
                else {"train": 0, "test": args.images}
            )
            cfg = SynthConfig(name=f"bench_{split}", root=str(root), width=w, height=h, **kw)
            t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
            build_synthetic_dataset(cfg, force=True)
            wall, cpu, main_cpu = time.perf_counter() - t0, time.process_time() - c0, time.thread_time() - m0
            rgb = "jpg" if split == "train_pbr" else "png"
            n = args.images
            # The main thread renders, the writer threads encode; with two free cores the rate is bounded
            # by the busier of the two: the main thread, or the writers' share on the other core.
            bound = n / max(main_cpu, cpu - main_cpu)
            print(
                f"{split} ({rgb} rgb + depth + masks + GT info, {n} images incl. setup): "
                f"{n / wall:.1f} images/s wall; CPU {1000 * cpu / n:.1f} ms/image in all threads, "
                f"{1000 * main_cpu / n:.1f} ms/image in the main thread -> {bound:.1f} images/s on 2 free cores"
            )
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
