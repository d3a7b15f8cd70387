"""Benchmark of BOP'19 scoring at scale, bopkd beside the official toolkit with 1 and 2 workers.

A synthetic LM-O test set with depth (``bopkd.data.synth`` with LM-O's object models, 640x480, LM-O camera,
4-6 objects per image, laid out as LM-O's test scene 2 so that the toolkit scores it as ``lmo``) and a
generated result file: three noisy poses per GT instance with random scores (the toolkit evaluates the
best-scored one per target instance) and, in a fifth of the images, an estimate of an object absent from
the image (not evaluated). Then, on the same file, BOP'19 only (VSD + MSSD + MSPD):

- ``bopkd score`` in a new process (everything included: interpreter, imports, numba's cached code,
  reading the files), with ``--workers`` at its default (all cores) and at 1;
- in this process: the first scoring (numba's code loaded), ``fresh`` (in-process caches emptied: depth
  decoded and GT poses rendered again) and ``steady`` (caches warm), each the best of ``--repeat``; then a
  cProfile of one fresh scoring with 1 worker (the functions with the most own time);
- with ``--toolkit`` (``$BOPKD_TOOLKIT_PYTHON``/``$BOPKD_TOOLKIT_PATH``, see ``bopkd score --engine
  bop_toolkit``): ``eval_bop19_pose.py`` with each of ``--toolkit-workers``, its wall time, the ratio to
  bopkd's, and whether its three ARs and every per-threshold recall equal bopkd's.

Prints the figures; ``--write FILE.md`` also writes them as a Markdown table (and ``FILE.json``), and
``--update-readme README.md`` copies that file into the README's generated block of the same name.
Asserts nothing about speed. The machine may be shared: the load average is printed.

    python benchmarks/score_large.py --toolkit --write benchmarks/results/score_large.md --update-readme README.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from score import _best, _cli, _lmo_layout, _timer, noisy_pose  # noqa: E402

#: Noise levels (deg, mm) of the three poses per instance.
NOISE = ((1.0, 2.0), (5.0, 10.0), (20.0, 40.0))


def large_estimates(ds, rng: np.random.Generator) -> list:
    """Three noisy poses per GT instance of a target, random scores; absent objects in a fifth of the images."""
    from bopkd.eval.submission import Estimate

    targets = {(t.scene_id, t.im_id, t.obj_id) for t in ds.targets}
    out = []
    for s in ds.scene_ids(ds.test_split):
        for i, gts in ds.scene_gt(ds.test_split, s).items():
            tm = float(rng.uniform(0.02, 0.2))
            for g in gts:
                if (s, i, g.obj_id) not in targets:
                    continue
                for deg, mm in NOISE:
                    R, t = noisy_pose(rng, g.R, g.t, deg, mm)
                    out.append(Estimate(s, i, g.obj_id, float(rng.uniform(0.05, 1.0)), R, t, tm))
            absent = sorted(set(ds.obj_ids) - {g.obj_id for g in gts})
            if absent and rng.random() < 0.2:
                g = gts[0]
                out.append(Estimate(s, i, int(rng.choice(absent)), 0.5, g.R, g.t + 50.0, tm))
    return out


def bench_bopkd(csv: Path, args, tmp: Path) -> dict:
    from bopkd.eval import lru
    from bopkd.eval.scoring import score_submissions

    def score():
        res = score_submissions([csv], args.root, tmp / "scores", metrics=("bop19",), workers=args.workers)
        return next(iter(res.values()))

    def clear():
        lru.DEPTH_IMAGES.clear()
        lru.GT_RENDERS.clear()

    bop19 = ("--metrics", "bop19")
    cli = _cli(csv, args, tmp / "cli", *bop19, "--workers", str(args.workers))
    cli1 = _cli(csv, args, tmp / "cli1", *bop19, "--workers", "1")
    first, _, r = _timer(score)
    fresh, _, r = _best(score, args.repeat, before=clear)
    stages = dict(r["timings"])
    steady, _, _ = _best(score, args.repeat)
    return {
        "n_evaluated": r["n_evaluated"],
        "scores": r["scores_bop19"],
        "res": r,
        "cli": cli,
        "cli_1_worker": cli1,
        "first": first,
        "fresh": fresh,
        "steady": steady,
        "fresh_stages": stages,
    }


def bench_toolkit(csv: Path, args, tmp: Path, ours: dict) -> list[dict]:
    from bopkd.eval.scores_io import recall_per_threshold
    from bopkd.eval.toolkit_engine import score_with_toolkit

    mine = recall_per_threshold(ours["res"]["metrics"])
    s = ours["scores"]
    out = []
    for w in args.toolkit_workers:
        t = time.perf_counter()
        (rec,) = score_with_toolkit([csv], args.root, tmp / f"toolkit{w}", ad=False, num_workers=w)
        wall = time.perf_counter() - t
        sc = rec["scores"]
        same = all(
            sc[k] == s[v]
            for k, v in (
                ("AR", "bop19_average_recall"),
                ("AR_VSD", "bop19_average_recall_vsd"),
                ("AR_MSSD", "bop19_average_recall_mssd"),
                ("AR_MSPD", "bop19_average_recall_mspd"),
            )
        )
        theirs = rec["recall_per_threshold"]
        n_eq = sum(mine[k][th] == v for k, ths in theirs.items() for th, v in ths.items())
        n_all = sum(len(ths) for ths in theirs.values())
        out.append({"workers": w, "wall": wall, "ars_equal": same, "recalls_equal": n_eq, "recalls": n_all})
        print(
            f"bop_toolkit, {w} worker(s): {wall:.1f} s ({ours['n_evaluated'] / wall:.0f} estimates/s); "
            f"ARs equal {same}, per-threshold recalls equal {n_eq}/{n_all}",
            flush=True,
        )
    return out


def profile_one_worker(csv: Path, args, tmp: Path, top: int = 8) -> list[tuple[str, int, float]]:
    """cProfile of one fresh scoring with 1 worker: (function, calls, own seconds) of the costliest."""
    import cProfile
    import pstats

    from bopkd.eval import lru
    from bopkd.eval.scoring import score_submissions

    lru.DEPTH_IMAGES.clear()
    lru.GT_RENDERS.clear()
    prof = cProfile.Profile()
    prof.enable()
    score_submissions([csv], args.root, tmp / "profile", metrics=("bop19",), workers=1)
    prof.disable()
    st = pstats.Stats(prof).stats
    rows = sorted(((f"{Path(k[0]).name}:{k[2]}", v[1], v[2]) for k, v in st.items()), key=lambda r: -r[2])
    total = sum(v[2] for v in st.values())
    for name, calls, own in rows[:top]:
        print(f"  {own:6.2f} s {100 * own / total:4.0f} %  {calls:7d} calls  {name}")
    return [(n, c, o) for n, c, o in rows[:top]]


def _markdown(info: dict) -> str:
    b, n = info["bopkd"], info["bopkd"]["n_evaluated"]
    s = b["scores"]
    cli = b["cli"]
    rows = [
        (f"`bopkd score`, new process, all included, {info['workers']} workers", cli),
        ("`bopkd score --workers 1`, new process, all included", b["cli_1_worker"]),
        ("bopkd in a warm process, in-process caches emptied (fresh)", b["fresh"]),
        ("bopkd in a warm process, caches warm (steady)", b["steady"]),
    ]
    rows += [(f"official toolkit, `--num_workers={t['workers']}`", t["wall"]) for t in info["toolkit"]]
    lines = [
        f"Large case of `benchmarks/score_large.py` ({info['date']}, {info['machine']}): "
        f"{info['images']} test images, {info['targets']} targets, {info['rows']} result rows, "
        f"{n} evaluated estimates (BOP'19: VSD + MSSD + MSPD); LM-O evaluation models "
        f"({info['faces'][0]}..{info['faces'][1]} triangles); load average {info['load']:.1f} at the start.",
        "",
        "| scorer | wall (s) | evaluated estimates/s | time / `bopkd score` |",
        "|---|---|---|---|",
    ]
    for label, w in rows:
        lines.append(f"| {label} | {w:.2f} | {n / w:.0f} | {w / cli:.2f} |")
    st = b["fresh_stages"]
    lines += [
        "",
        "bopkd's stages in the fresh run (s): " + ", ".join(f"{k} {v:.2f}" for k, v in st.items()) + ".",
        f"Scores: AR {s['bop19_average_recall']:.4f} (VSD {s['bop19_average_recall_vsd']:.4f}, "
        f"MSSD {s['bop19_average_recall_mssd']:.4f}, MSPD {s['bop19_average_recall_mspd']:.4f}).",
    ]
    for t in info["toolkit"]:
        lines.append(
            f"Toolkit with {t['workers']} worker(s): ARs equal to bopkd's: {'yes' if t['ars_equal'] else 'NO'}; "
            f"per-threshold recalls equal: {t['recalls_equal']} of {t['recalls']}."
        )
    if not info["toolkit"]:
        lines.append("The official toolkit was not given (`--toolkit`), so it was not run.")
    if info.get("profile"):
        lines += [
            "",
            "Where one worker's time goes (cProfile of a fresh scoring, `--workers 1`, own time):",
            "",
        ]
        lines += ["| function | calls | s |", "|---|---|---|"]
        lines += [f"| `{n}` | {c} | {o:.2f} |" for n, c, o in info["profile"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="bop_data", help="where to build (or find) the dataset")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument(
        "--models",
        default=str(REPO.parent / "shared" / "fixtures" / "lmo_sample" / "lmo" / "models"),
        help="LM-O's models/ folder (with models_info.json; its models_eval sibling is used for scoring)",
    )
    ap.add_argument("--workers", type=int, default=0, help="bopkd's workers (0: all cores)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--toolkit", action="store_true", help="also run the official toolkit")
    ap.add_argument("--toolkit-workers", default="1,2", help="the toolkit's --num_workers values")
    ap.add_argument("--write", help="write the figures as Markdown here (and .json beside it)")
    ap.add_argument("--update-readme", help="copy the --write file into this README's block of that name")
    args = ap.parse_args()
    args.toolkit_workers = [int(w) for w in args.toolkit_workers.split(",")] if args.toolkit else []
    if not (Path(args.models) / "models_info.json").is_file():
        sys.exit(f"{args.models}: no models_info.json; pass --models with LM-O's models/ folder")

    from bopkd.data.dataset import BopDataset
    from bopkd.infer.export import write_submission

    t0 = time.perf_counter()
    args.root, name = _lmo_layout(args)
    print(f"dataset ready in {time.perf_counter() - t0:.1f} s: {Path(args.root) / name}", flush=True)
    ds = BopDataset(name, args.root)
    ests = large_estimates(ds, np.random.default_rng(0))
    faces = [len(ds.model(o, eval=True).faces) for o in ds.obj_ids]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bopkd_scorelarge_") as tmp:
        csv = Path(tmp) / "large_lmo-test.csv"
        write_submission(csv, ests)
        print(f"{len(ests)} result rows for {len(ds.targets)} targets", flush=True)
        ours = bench_bopkd(csv, args, Path(tmp))
        n = ours["n_evaluated"]
        for k in ("cli", "cli_1_worker", "first", "fresh", "steady"):
            print(f"bopkd {k:13s}: {ours[k]:7.2f} s ({n / ours[k]:5.0f} evaluated estimates/s)", flush=True)
        print("fresh stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in ours["fresh_stages"].items()))
        print("profile of a fresh scoring with 1 worker (own time):")
        prof = profile_one_worker(csv, args, Path(tmp))
        tk = bench_toolkit(csv, args, Path(tmp), ours) if args.toolkit else []
    for t in tk:
        print(f"toolkit {t['workers']} worker(s) / bopkd score: {t['wall'] / ours['cli']:.1f}x")
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "images": len({(t.scene_id, t.im_id) for t in ds.targets}),
        "targets": len(ds.targets),
        "rows": len(ests),
        "faces": (min(faces), max(faces)),
        "load": load,
        "workers": args.workers or os.cpu_count(),
        "bopkd": {k: v for k, v in ours.items() if k != "res"},
        "toolkit": tk,
        "profile": prof,
    }
    if args.write:
        out = Path(args.write)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_markdown(info))
        out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        print(f"wrote {out}")
        if args.update_readme:
            from bopkd.report.readme import update_readme

            print(f"updated block {update_readme(args.update_readme, out)} of {args.update_readme}")


if __name__ == "__main__":
    main()
