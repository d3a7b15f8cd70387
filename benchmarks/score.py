"""Benchmark of BOP scoring (``bopkd score``: BOP'19 VSD + MSSD + MSPD, ADD(-S), BOP'24 mAP) on a synthetic dataset.

Builds (or reuses) a synthetic LM-O-like test set with depth (``bopkd.data.synth``; 640x480, LM-O camera,
procedural objects by default or ``--models`` a BOP ``models/`` folder such as LM-O's), writes one result
file with perturbed GT poses for every target instance (a mix of exact, small, medium, large and wrong
poses, plus low-scored duplicates), and times ``score_submissions(..., metrics=("bop19", "ad"))``:

- ``first call``: the first scoring in this process (includes loading numba's compiled-code cache,
  reading the models and depth images and rendering every GT pose);
- ``steady``: the best of ``--repeat`` further calls on the same dataset (depth images and GT renders
  come from the in-process caches of ``bopkd.eval.lru``): what each further result file costs in one
  ``bopkd score a.csv b.csv ...``;
- ``fresh (no caches)``: a new scorer with the in-process caches emptied (depth decoded and GTs rendered
  again), numba code already loaded: what a first result file costs apart from the one-off start-up;
- ``bopkd score (CLI)`` in a new process, and that process's parts: importing the CLI, importing numba,
  numba's one-off set-up with the first cached kernel (its registries, which import scipy.linalg for the
  BLAS check), and the scoring (its other kernels, imports and the work).

Prints wall and CPU seconds, estimates/s and peak memory (Python allocations by tracemalloc; the
process's resident maximum). Then the BOP'24/'25 mAP (``DetectionScorer``, ``eval_bop24_pose.py``) of the
same file: its first call in this process and steady (best of ``--repeat``), BOP'19 + BOP'24 together
(``score_protocols``; the MSSD/MSPD errors of the pairs both evaluate are computed once) against BOP'19
alone, and ``bopkd score --protocol bop24`` / ``--protocol all`` in a new process (``--no-bop24`` skips
these). The machine may be shared: the load average is printed with the times. With ``--toolkit`` also runs the official BOP toolkit on the same file (``--engine bop_toolkit``;
needs ``$BOPKD_TOOLKIT_PYTHON``/``$BOPKD_TOOLKIT_PATH``) and prints its time and whether its AR values equal
ours. Asserts nothing about speed.

    python benchmarks/score.py [--root bop_data] [--images 150] [--models PATH] [--toolkit]

The toolkit only knows the registered BOP datasets, so with ``--toolkit`` the dataset is built with LM-O's
object models (``--models``, default ``../shared/fixtures/lmo_sample/lmo/models``) and laid out as LM-O
(folder ``lmo``, test scene 2) under ``ROOT/toolkit_bench``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def noisy_pose(rng: np.random.Generator, R: np.ndarray, t: np.ndarray, deg: float, mm: float):
    """``(R, t)`` turned by a random rotation of about ``deg`` degrees and moved by about ``mm`` mm."""
    from scipy.spatial.transform import Rotation

    dR = Rotation.from_rotvec(rng.normal(size=3) * np.deg2rad(deg) / np.sqrt(3)).as_matrix()
    return dR @ R, t + rng.normal(size=3) * mm / np.sqrt(3)


def make_estimates(ds, rng: np.random.Generator):
    """Perturbed GT poses for every target instance, and a few low-scored duplicates."""
    from scipy.spatial.transform import Rotation

    from bopkd.eval.submission import Estimate

    kinds = [(0.0, 0.0), (1.0, 2.0), (4.0, 8.0), (10.0, 25.0), (25.0, 60.0)]  # (deg, mm) noise levels
    ests = []
    targets = {(t.scene_id, t.im_id, t.obj_id): t.inst_count for t in ds.targets}
    for s in ds.scene_ids(ds.test_split):
        for i, gts in ds.scene_gt(ds.test_split, s).items():
            time_s = float(rng.uniform(0.02, 0.2))
            for g in gts:
                if (s, i, g.obj_id) not in targets:
                    continue
                deg, mm = kinds[int(rng.integers(len(kinds)))]
                R, t = noisy_pose(rng, g.R, g.t, deg, mm)
                if rng.random() < 0.05:  # wrong: random rotation, 300 mm off
                    R, t = (
                        Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(),
                        g.t + [300, 0, 0],
                    )
                ests.append(Estimate(s, i, g.obj_id, float(rng.uniform(0.3, 1.0)), R, t, time_s))
                if rng.random() < 0.1:  # a duplicate with a lower score
                    ests.append(Estimate(s, i, g.obj_id, 0.1, R, t + [5, 5, 5], time_s))
    return ests


def _synth_config(args, name: str, root: str | Path, **extra):
    """The benchmark's test split: ``args.images`` LM-O-camera images of 4-6 objects from ``args.models``."""
    from bopkd.data.synth import SynthConfig

    return SynthConfig(
        name=name,
        root=str(root),
        models=args.models,
        train=0,
        test=args.images,
        width=640,
        height=480,
        camera="lmo",
        objects_per_image=(4, 6),
        seed=7,
        **extra,
    )


def _lmo_layout(args) -> tuple[str, str]:
    """Build the dataset with LM-O's models as ``ROOT/toolkit_bench_N/lmo`` (N images) with test scene 2."""
    import shutil

    from bopkd.data.synth import build_synthetic_dataset
    from bopkd.data.toolkit_layout import renumber_test_scene

    root = Path(args.root) / f"toolkit_bench_{args.images}"
    final = root / "lmo"
    if (final / "BENCH_READY").is_file():
        return str(root), "lmo"
    stage_root = Path(args.root) / "toolkit_bench_stage"
    src = build_synthetic_dataset(
        _synth_config(args, "lmo", stage_root, images_per_scene=max(args.images, 1)),
        log=lambda m: print(m, flush=True),
    )
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(src, final, symlinks=True)
    renumber_test_scene(final, 2)
    (final / "BENCH_READY").write_text("ok\n")
    shutil.rmtree(stage_root, ignore_errors=True)
    return str(root), "lmo"


def _timer(fn):
    """``fn()`` timed: (wall s, CPU s, its result)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def _best(fn, repeat: int, before=None):
    """The fastest of ``repeat`` timed calls of ``fn`` (``before()`` runs untimed ahead of each)."""
    best = (float("inf"), float("inf"), None)
    for _ in range(repeat):
        if before:
            before()
        w, c, r = _timer(fn)
        if w < best[0]:
            best = (w, c, r)
    return best


def _cli(csv: Path, args, out: Path, *extra: str) -> float:
    """Wall seconds of ``bopkd score`` in a new process (interpreter, imports, numba cache, files)."""
    import subprocess

    cmd = [sys.executable, "-m", "bopkd", "score", str(csv), "--root", str(args.root), "--out", str(out)]
    t = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, capture_output=True)
    return time.perf_counter() - t


def bench_bop19(csv: Path, args, tmp: Path) -> dict:
    """BOP'19 (VSD + MSSD + MSPD and ADD(-S)): first call, fresh (no caches), steady, peak memory, CLI."""
    from bopkd.eval import lru
    from bopkd.eval.scoring import score_submissions

    def score():
        res = score_submissions([csv], args.root, tmp / "scores", metrics=("bop19", "ad"))
        return next(iter(res.values()))

    def clear():
        lru.DEPTH_IMAGES.clear()
        lru.GT_RENDERS.clear()

    first, first_cpu, r = _timer(score)
    steady, steady_cpu, r = _best(score, args.repeat)
    fresh, fresh_cpu, _ = _best(score, args.repeat, before=clear)
    # Peak Python allocations of one scoring with empty caches (measured apart: tracemalloc slows it).
    clear()
    tracemalloc.start()
    score()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = r["n_evaluated"]
    s = r["scores_bop19"]
    print(
        f"scores: AR {s['bop19_average_recall']:.4f} (VSD {s['bop19_average_recall_vsd']:.4f}, "
        f"MSSD {s['bop19_average_recall_mssd']:.4f}, MSPD {s['bop19_average_recall_mspd']:.4f}), "
        f"ADD(-S)-0.1d {r['metrics']['ad'].recalls()[0, 0]:.4f}"
    )
    print("steady-state stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["timings"].items()))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {n} evaluated estimates")
    for label, w, c in (
        ("first call", first, first_cpu),
        ("fresh (no caches)", fresh, fresh_cpu),
        ("steady", steady, steady_cpu),
    ):
        print(f"{label:18s}: {w:6.3f} s wall ({n / w:5.0f} estimates/s), {c:6.3f} s CPU")
    print(
        f"peak memory: {peak / 2**20:.1f} MiB Python allocations (one scoring, empty caches); "
        f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    cli = _cli(csv, args, tmp / "cli")
    print(f"{'bopkd score (CLI)':18s}: {cli:6.3f} s wall, new process, everything included")
    parts = _startup_parts(csv, args, tmp / "parts")
    print("new process, by part (s): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    return {"res": r, "first": first, "fresh": fresh, "steady": steady}


#: Run in a new process: the parts of a first scoring (what a fresh ``bopkd score`` pays besides the work).
_PARTS = """
import sys, time
t0 = time.perf_counter()
import bopkd.cli
t1 = time.perf_counter()
import numba
t2 = time.perf_counter()
import numpy as np
from bopkd.eval.raster import _readback
_readback(np.zeros((1, 1)), np.float32(1), np.float32(1), np.zeros((1, 1), np.float32))
t3 = time.perf_counter()
from bopkd.eval.scoring import score_submissions
score_submissions([sys.argv[1]], sys.argv[2], sys.argv[3], metrics=("bop19", "ad"))
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def _startup_parts(csv: Path, args, out: Path) -> dict[str, float]:
    """Seconds of each part of a first scoring in a new process (interpreter start-up not included)."""
    import subprocess

    r = subprocess.run(
        [sys.executable, "-c", _PARTS, str(csv), str(args.root), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    vals = [float(v) for v in r.stdout.split()[-4:]]
    names = ("import bopkd.cli", "import numba", "numba registries + first cached kernel", "scoring")
    return dict(zip(names, vals, strict=True))


def bench_bop24(csv: Path, args, tmp: Path, bop19_steady: float) -> None:
    """BOP'24/'25 mAP: alone (first call in this process, steady), with BOP'19 (errors shared), CLI."""
    from bopkd.eval.bop24_scoring import DetectionScorer
    from bopkd.eval.protocols import score_protocols

    def alone():
        return DetectionScorer(csv, args.root).run()

    def both():
        return score_protocols([csv], args.root, tmp / "both", ("bop19", "bop24"), ("bop19", "ad"))

    first, first_cpu, r = _timer(alone)
    steady, steady_cpu, r = _best(alone, args.repeat)
    both_w, both_cpu, rb = _best(both, args.repeat)
    n = r["n_evaluated"]
    s = r["scores_bop24"]
    print(
        f"BOP'24 scores: mAP {s['bop24_mAP']:.4f} (MSSD {s['bop24_mAP_mssd']:.4f}, MSPD {s['bop24_mAP_mspd']:.4f}); "
        f"BOP'25 mAP {s['bop25_mAP']:.4f}, mAP_mm {s['bop25_mAP_mm']:.4f}; {n} evaluated estimates, "
        f"{r['n_pairs']} pairs"
    )
    print("BOP'24 steady stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["timings"].items()))
    for label, w, c in (("BOP'24 first call", first, first_cpu), ("BOP'24 steady", steady, steady_cpu)):
        print(f"{label:18s}: {w:6.3f} s wall ({n / w:5.0f} estimates/s), {c:6.3f} s CPU")
    part = next(iter(rb.values()))["bop24"]
    print(
        f"BOP'19 + BOP'24     : {both_w:6.3f} s wall steady ({both_cpu:.3f} s CPU) vs BOP'19 alone {bop19_steady:.3f} s; "
        f"its BOP'24 part {part['timings']['total']:.3f} s ({part['n_pairs_shared']} of {part['n_pairs']} pairs' "
        f"errors shared with BOP'19)"
    )
    w = _fresh_process_bop24(csv, args)
    print(
        f"{'BOP24 new process':18s}: {w:6.3f} s wall ({n / w:5.0f} estimates/s), first scoring, imports excluded"
    )
    for extra in (("--protocol", "bop24"), ("--protocol", "all")):
        cli = _cli(csv, args, tmp / "cli24", *extra)
        print(f"bopkd score {' '.join(extra)}: {cli:6.3f} s wall, new process, everything included")


def _fresh_process_bop24(csv: Path, args) -> float:
    """Seconds of the first ``DetectionScorer.run()`` in a new Python process (after its imports)."""
    import subprocess

    code = (
        "import sys, time\n"
        "from bopkd.eval.bop24_scoring import DetectionScorer\n"
        "t = time.perf_counter()\n"
        "DetectionScorer(sys.argv[1], sys.argv[2]).run()\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(csv), str(Path(args.root).resolve())],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def bench_toolkit(csv: Path, args, tmp: Path, b19: dict) -> None:
    """The official toolkit on the same file: its time and whether its values equal ours."""
    from bopkd.eval.scores_io import recall_per_threshold
    from bopkd.eval.toolkit_engine import score_with_toolkit

    r, n = b19["res"], b19["res"]["n_evaluated"]
    s = r["scores_bop19"]
    t = time.perf_counter()
    (rec,) = score_with_toolkit([csv], args.root, tmp / "toolkit", ad=True)
    tk = time.perf_counter() - t
    sc = rec["scores"]
    same = all(
        sc[k] == v
        for k, v in (
            ("AR", s["bop19_average_recall"]),
            ("AR_VSD", s["bop19_average_recall_vsd"]),
            ("AR_MSSD", s["bop19_average_recall_mssd"]),
            ("AR_MSPD", s["bop19_average_recall_mspd"]),
        )
    )
    ours = recall_per_threshold(r["metrics"])
    theirs = rec["recall_per_threshold"]
    n_eq = sum(ours[k][th] == v for k, ths in theirs.items() for th, v in ths.items() if k in ours)
    n_all = sum(len(ths) for k, ths in theirs.items() if k in ours)  # ADI: not scored by bopkd here
    ad_same = rec["scores"]["ADD(-S)_0.1d"] == r["metrics"]["ad"].recalls()[0, 0]
    print(f"bop_toolkit: {tk:.1f} s ({n / tk:.1f} estimates/s)")
    print(
        f"  identical to bopkd: AR/AR_VSD/AR_MSSD/AR_MSPD {same}, ADD(-S)-0.1d {ad_same}, "
        f"recall at every threshold (and tau) {n_eq}/{n_all}"
    )
    print(
        f"speed-up: {tk / b19['steady']:.0f}x steady, {tk / b19['fresh']:.0f}x fresh, "
        f"{tk / b19['first']:.0f}x first call"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="bop_data", help="where to build (or find) the dataset")
    ap.add_argument("--name", default="scorebench", help="dataset name")
    ap.add_argument("--images", type=int, default=150, help="test images (about 5 targets each)")
    ap.add_argument("--models", default="procedural", help="procedural, or a BOP models/ folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--toolkit", action="store_true", help="also time the official toolkit on the same file")
    ap.add_argument("--no-bop24", action="store_true", help="skip the BOP'24/'25 figures")
    args = ap.parse_args()

    from bopkd.data.dataset import BopDataset
    from bopkd.data.synth import build_synthetic_dataset
    from bopkd.infer.export import write_submission

    t0 = time.perf_counter()
    if args.toolkit:
        if args.models == "procedural":
            args.models = str(REPO.parent / "shared" / "fixtures" / "lmo_sample" / "lmo" / "models")
        args.root, args.name = _lmo_layout(args)
    else:
        build_synthetic_dataset(_synth_config(args, args.name, args.root), log=lambda m: print(m, flush=True))
    print(f"dataset ready in {time.perf_counter() - t0:.1f} s: {Path(args.root) / args.name}")
    ds = BopDataset(args.name, args.root)
    ests = make_estimates(ds, np.random.default_rng(0))
    faces = {o: len(ds.model(o, eval=True).faces) for o in ds.obj_ids}
    with tempfile.TemporaryDirectory(prefix="bopkd_scorebench_") as tmp:
        csv = Path(tmp) / f"bench_{args.name}-test.csv"
        write_submission(csv, ests)
        print(
            f"{len(ests)} estimates for {len(ds.targets)} targets in {len({(e.scene_id, e.im_id) for e in ests})} "
            f"images; eval models {min(faces.values())}..{max(faces.values())} triangles"
        )
        b19 = bench_bop19(csv, args, Path(tmp))
        if not args.no_bop24:
            bench_bop24(csv, args, Path(tmp), b19["steady"])
        if args.toolkit:
            bench_toolkit(csv, args, Path(tmp), b19)


if __name__ == "__main__":
    main()
