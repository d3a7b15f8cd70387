"""Print parameters, MACs and CPU latency of every PoseNet preset (8 classes, as LM-O).

    python benchmarks/model_profile.py [--sizes 256x256 640x480] [--iters 5] [--threads N] [--device cpu]

MACs come from torch.utils.flop_counter (FLOPs / 2, convolutions and matrix products); latency is the
median of ``--iters`` forward passes of one image in eval mode without gradients. Figures are printed,
never asserted: they depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os

import torch

from bopkd.models.posenet import ModelConfig, build_model
from bopkd.models.profile import count_macs, count_parameters, measure_latency

LMO = [1, 5, 6, 8, 9, 10, 11, 12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--presets", nargs="+", default=["darknet53", "darknet-tiny", "darknet-tiny-h", "tiny-cpu"]
    )
    ap.add_argument("--sizes", nargs="+", default=["256x256", "640x480"], help="WxH")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'preset':16s} {'params (M)':>11s} {'size':>8s} {'GMACs':>8s} {'ms/image':>9s}")
    for name in a.presets:
        torch.manual_seed(0)
        m = build_model(ModelConfig(obj_ids=LMO, backbone=name))
        n = count_parameters(m)
        for s in a.sizes:
            w, h = (int(v) for v in s.lower().split("x"))
            macs = count_macs(m, (h, w))
            ms = measure_latency(m, (h, w), a.device, iters=a.iters, warmup=1)
            print(f"{name:16s} {n / 1e6:11.2f} {s:>8s} {macs / 1e9:8.2f} {ms:9.1f}", flush=True)


if __name__ == "__main__":
    main()
