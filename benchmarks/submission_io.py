"""Benchmark of BOP result CSV reading and writing (``bopkd.eval.submission``, ``bopkd.infer.export``).

Writes N random estimates (random rotations, 8 objects, 10 per image, a time per image), then times
``write_submission``, ``read_submission_arrays`` (vectorised, with all checks), ``read_submission``
(Estimate objects) and the careful per-line parser that locates errors, plus ``pandas.read_csv`` of the
same file as a yardstick. Also times the four real LM-O result files when ``../shared/fixtures`` exists.

    python benchmarks/submission_io.py [--rows N]

Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bopkd.eval import submission as sub  # noqa: E402
from bopkd.infer.export import write_submission  # noqa: E402


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    n = args.rows
    rng = np.random.default_rng(0)
    Rs = Rotation.random(n, random_state=0).as_matrix()
    ims = np.arange(n) // 10
    ests = [
        sub.Estimate(
            2,
            int(ims[k]),
            int(rng.choice([1, 5, 6, 8, 9, 10, 11, 12])),
            float(rng.random()),
            Rs[k],
            rng.normal(0, 200, 3) + [0, 0, 1000],
            0.05 + 0.001 * (ims[k] % 7),
        )
        for k in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bench_lmo-test.csv"
        tw = _time(lambda: write_submission(p, ests), repeat=1)
        size = p.stat().st_size
        ta = _time(lambda: sub.read_submission_arrays(p, obj_ids=[1, 5, 6, 8, 9, 10, 11, 12]))
        te = _time(lambda: sub.read_submission(p), repeat=1)
        rows = p.read_text().splitlines()[1:]
        tc = _time(lambda: sub._careful_parse(p, rows, 2), repeat=1)
        tp = _time(lambda: pd.read_csv(p))
    print(f"{n} rows, {size / 1e6:.1f} MB")
    print(f"  write_submission        {tw:7.3f} s  ({n / tw:,.0f} rows/s)")
    print(f"  read_submission_arrays  {ta:7.3f} s  ({n / ta:,.0f} rows/s, all checks)")
    print(f"  read_submission         {te:7.3f} s  (Estimate objects)")
    print(f"  careful per-line parse  {tc:7.3f} s  (used only to locate an error)")
    print(f"  pandas.read_csv         {tp:7.3f} s  (strings only, no R/t parsing, for scale)")
    fx = REPO.parent / "shared" / "fixtures" / "lmo_sample" / "results"
    if fx.is_dir():
        for f in sorted(fx.glob("*.csv")):
            t = _time(lambda f=f: sub.read_submission_arrays(f, obj_ids=[1, 5, 6, 8, 9, 10, 11, 12]))
            print(f"  {f.name[:60]:60s} {t * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
