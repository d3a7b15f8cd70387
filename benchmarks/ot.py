"""Time the batched Sinkhorn divergence of one distillation step against geomloss; prints milliseconds.

A step of the paper's OT distillation (Guo et al., CVPR 2023) at batch size 16 with 2 objects per image
has 16 x 2 x 8 keypoints = 256 problems; a problem aligns N student cells (10-40) with M teacher cells
(10-60) in normalised image coordinates, weights = scores. Timed, forward + backward, on the CPU:

* ``bopkd``: :func:`bopkd.losses.ot.sinkhorn_divergence`, all problems in one call (padded to N = 40,
  M = 60 with zero weights);
* ``geomloss loop``: ``SamplesLoss("sinkhorn", p=2, blur=0.001, reach=0.5, scaling=0.5)`` called once per
  problem on its own points (the reference this module reproduces);
* ``geomloss per group``: one geomloss call per (image, object) on its 8 keypoint problems, as the
  paper's code does (all 8 share the cells, so no padding; one diameter per group, hence other values:
  the last line prints their ratio to the per-problem ones);
* ``geomloss padded``: one geomloss call on the whole padded batch. geomloss reads weight 0 as
  log-weight -1e5 and takes one diameter for the batch, so its values differ (printed).

Usage: ``python benchmarks/ot.py [--repeats 3] [--threads 1] [--dtype float32]``. On a shared machine
the CPU time of the process (threads = 1) is steadier than wall time; both are printed.
"""

from __future__ import annotations

import argparse
import time

import torch


def make_step(groups: int, n_range: tuple[int, int], m_range: tuple[int, int], dtype, seed: int = 0):
    """Random problems grouped by (image, object): 8 keypoint problems per group share N and M.

    Normalised image coordinates: an object centre in [0.2, 0.8]^2, its 8 box corners within +-0.12 of it
    (~150 px of a 640 px image), student predictions around each corner with sd 0.015, teacher's 0.008;
    weights: student scores in [1e-3, 1 - 1e-3], teacher scores squared (as the paper's code).
    """
    g = torch.Generator().manual_seed(seed)
    n_max, m_max = n_range[1], m_range[1]
    B = groups * 8
    x = torch.zeros(B, n_max, 2, dtype=dtype)
    y = torch.zeros(B, m_max, 2, dtype=dtype)
    a = torch.zeros(B, n_max, dtype=dtype)
    b = torch.zeros(B, m_max, dtype=dtype)
    group, sizes = [], []
    for k in range(groups):
        n = int(torch.randint(n_range[0], n_max + 1, (), generator=g))
        m = int(torch.randint(m_range[0], m_max + 1, (), generator=g))
        centre = torch.rand(1, 1, 2, generator=g, dtype=dtype) * 0.6 + 0.2
        corners = centre + (torch.rand(8, 1, 2, generator=g, dtype=dtype) - 0.5) * 0.24
        sl = slice(8 * k, 8 * k + 8)
        x[sl, :n] = corners + 0.015 * torch.randn(8, n, 2, generator=g, dtype=dtype)
        y[sl, :m] = corners + 0.008 * torch.randn(8, m, 2, generator=g, dtype=dtype)
        a[sl, :n] = torch.rand(n, generator=g, dtype=dtype).clamp(1e-3, 1 - 1e-3)
        b[sl, :m] = torch.rand(m, generator=g, dtype=dtype) ** 2
        sizes += [(n, m)] * 8
        group += [k] * 8
    return x, a, y, b, sizes, torch.tensor(group)


def timed(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall and CPU milliseconds over repeats (after one warm-up), and the values."""
    values = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        values = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * min(wall), 1e3 * min(cpu), values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=32, help="images x objects (8 keypoint problems each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--skip-loop", action="store_true", help="skip the slow per-problem geomloss loop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    from geomloss import SamplesLoss

    from bopkd.losses.ot import group_diameters, sinkhorn_divergence

    cfg = {"blur": 0.001, "reach": 0.5, "scaling": 0.5}
    x, a, y, b, sizes, group = make_step(args.groups, (10, 40), (10, 60), dtype)
    B = x.shape[0]
    loss = SamplesLoss("sinkhorn", p=2, backend="tensorized", **cfg)

    def with_grad(fn):
        def run():
            ts = [t.clone().requires_grad_() for t in (x, a, y, b)]
            v = fn(*ts)
            v.sum().backward()
            return v.detach()

        return run

    def ours(x, a, y, b):
        return sinkhorn_divergence(x, a, y, b, **cfg)

    def loop(x, a, y, b):
        return torch.stack([loss(a[i, :n], x[i, :n], b[i, :m], y[i, :m]) for i, (n, m) in enumerate(sizes)])

    def per_group(x, a, y, b):
        out = []
        for k in range(0, B, 8):
            n, m = sizes[k]
            sub = (a[k : k + 8, :n], x[k : k + 8, :n], b[k : k + 8, :m], y[k : k + 8, :m])
            out.append(loss(*(t.contiguous() for t in sub)))
        return torch.cat(out)

    def padded(x, a, y, b):
        return loss(a, x, b, y)

    print(
        f"{B} problems (N 10-40, M 10-60, D 2, {args.dtype}), blur {cfg['blur']}, reach {cfg['reach']}, "
        f"scaling {cfg['scaling']}; CPU, {torch.get_num_threads()} thread(s); forward + backward, best of "
        f"{args.repeats}"
    )
    wall, cpu, ref = timed(with_grad(ours), args.repeats)
    print(f"  bopkd batched        {wall:9.1f} ms wall {cpu:9.1f} ms cpu")
    runs = [("geomloss per group", per_group), ("geomloss padded", padded)]
    if not args.skip_loop:
        runs.insert(0, ("geomloss loop", loop))
    for name, fn in runs:
        w, c, v = timed(with_grad(fn), args.repeats)
        diff = float(((v - ref).abs() / ref.abs()).max())
        print(
            f"  {name:20s} {w:9.1f} ms wall {c:9.1f} ms cpu  (x{w / wall:.1f} wall, x{c / cpu:.1f} cpu; "
            f"max rel. value difference to bopkd {diff:.1e})"
        )

    # geomloss's schedule (one update per epsilon) leaves the unbalanced potentials unconverged (their
    # mass mode contracts by rho / (rho + eps) = 1 - 4e-6 per update at the paper's settings), so the
    # value depends on where the schedule starts: per problem (default) or per image as the paper's code.
    x64, a64, y64, b64 = (t.double() for t in (x, a, y, b))
    per_problem = sinkhorn_divergence(x64, a64, y64, b64, **cfg)
    d_group = group_diameters(x64, a64, y64, b64, group)
    per_image = sinkhorn_divergence(x64, a64, y64, b64, diameter=d_group, **cfg)
    ratio = per_image / per_problem
    print(
        "value with the per-image diameter (paper's code) / per-problem diameter (default), float64: "
        f"median {float(ratio.median()):.2f}, range {float(ratio.min()):.2f}-{float(ratio.max()):.2f}"
    )


if __name__ == "__main__":
    main()
