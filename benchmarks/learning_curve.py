"""Learning curve of a student: validation AR at 80 % and at 100 % of runs of several lengths.

Each length N is a separate run with its own one-cycle schedule (the schedule depends on N). The run is
stopped at 0.8 N (a checkpoint is kept), predicted and scored on a validation dataset, then resumed to N
and scored again. A schedule is long enough by the criterion of the study preset when the AR changes by
less than one point over the last fifth of the run.

Usage (the study preset's direct student; a validation set rendered like the training data with another
seed, e.g. ``bopkd synth lmosynthval --models ... --objects 1,8,9 --train 0 --test 60 --seed 7
--viewpoints linemod --per-image 2-3 --camera lm``)::

    python benchmarks/learning_curve.py --config STUDENT_CONFIG.yaml --val lmosynthval --root bop_data \
        --out curve/ 750 1500 3000

``STUDENT_CONFIG.yaml`` is a run config (e.g. a student's ``config.yaml`` from the pipeline's run folder).
Prints one JSON line per length and appends it to ``OUT/curve.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def validation_ar(ckpt: Path, name: str, val: str, root: str, out: Path) -> float:
    """BOP'19 AR of a checkpoint on the validation dataset (``bopkd predict`` + ``bopkd score``)."""
    res = out / "results"
    bopkd = [sys.executable, "-m", "bopkd"]
    subprocess.run(
        [*bopkd, "predict", str(ckpt), "--dataset", val, "--root", root, "--out", str(res), "--method", name],
        check=True,
        capture_output=True,
    )
    csv = next(res.glob(f"{name}*_{val}-test.csv"))
    subprocess.run(
        [*bopkd, "score", str(csv), "--root", root, "--out", str(out / "scores")],
        check=True,
        capture_output=True,
    )
    return json.loads((out / "scores" / csv.stem / "scores_bop19.json").read_text())["bop19_average_recall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lengths", nargs="+", type=int, help="run lengths (iterations)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--val", required=True, help="validation dataset name under --root")
    ap.add_argument("--root", default="bop_data")
    ap.add_argument("--out", default="curve")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    from bopkd.train.command import prepare_config
    from bopkd.train.config import build_config
    from bopkd.train.trainer import Trainer

    out = Path(args.out)
    base = yaml.safe_load(Path(args.config).read_text())
    for n in args.lengths:
        run = out / f"{base.get('kd', {}).get('method', 'none')}-i{n}"
        d = dict(base, iters=n, out=str(run), progress=False, cpu_threads=args.threads)
        cfg = prepare_config(build_config(base=d))
        t0 = time.time()
        at80 = run / "checkpoints" / "at80.pt"
        if not at80.is_file():
            Trainer(cfg).fit(stop_at=int(round(0.8 * n)))
            shutil.copy(run / "checkpoints" / "last.pt", at80)
        a80 = validation_ar(at80, f"curve-i{n}-at80", args.val, args.root, out)
        Trainer(cfg, resume=True).fit()
        a100 = validation_ar(run / "checkpoints" / "final.pt", f"curve-i{n}-final", args.val, args.root, out)
        row = {"iters": n, "ar_at_80pct": a80, "ar_final": a100, "seconds": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        with open(out / "curve.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
