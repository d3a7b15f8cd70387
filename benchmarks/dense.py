"""Benchmarks of the dense (ZebraPose-style) family: training steps per KD method, surface encoding, decoding + PnP.

1. Training step of every dense distillation method (``kd_names("dense")``) relative to direct training
   (``none``): one batch of zoom-in crops with their dense targets (``DenseTorchDataset`` on a small synthetic
   dataset rendered into a temporary folder), an untrained student and teacher (the teacher's mask logits
   biased to ``--teacher-score`` so that it has confident pixels, as a trained one has), a full step
   (teacher forward, student forward, ZebraPose task loss, distillation terms, backward, AdamW step); each
   method once per round, round-robin, median over rounds. Goal: ``ot`` at most 1.15x ``none``.
2. Surface encoding (:func:`bopkd.geometry.surface_code.encode_model`, 16 bits, subdivision to 2**16
   vertices) of each LM-O model in ``../shared/fixtures/lmo_sample/lmo/models`` (skipped with a message
   when absent).
3. Decoding + PnP (:func:`bopkd.infer.dense_poses.dense_poses`) per crop at ZebraPose's 128 px output:
   the logits are the GT targets of synthetic crops (+-4, ``--flip`` of the bits flipped at random, as a
   network's errors), so the point counts are those of real crops; per image = per crop x the crops of an
   image (``--crops-per-image``).
4. The dense OT term's pooling factor (``--pool-size``; 0 skips): for pool 1 (no pooling), 2, 4 and 8, the time
   of the term's forward + backward and its value and gradients compared with pool 1, on trained-like maps: the
   teacher's are a disc mask and a hierarchical code of the crop (bits of a rotated surface coordinate in
   Morton order, bit 0 the coarsest) at logit magnitude 4; the student's add Gaussian logit noise of std 1
   drawn on a grid 8x coarser and upsampled (spatially correlated errors, as a network's).

Usage::

    python benchmarks/dense.py                      # tiny-cpu student, darknet-tiny-h teacher, 64 px crops
    python benchmarks/dense.py --student resnet18 --teacher resnet34 --out-size 128 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LMO_MODELS = REPO.parent / "shared" / "fixtures" / "lmo_sample" / "lmo" / "models"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="tiny-cpu")
    ap.add_argument("--teacher", default="darknet-tiny-h")
    ap.add_argument("--out-size", type=int, default=32, help="output side px (crop: twice that)")
    ap.add_argument("--decoder", default="64,32,32,16", help="decoder widths, coarsest first")
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--teacher-score", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--objects", type=int, default=8, help="LM-O models to encode (0: skip part 2)")
    ap.add_argument("--pnp-crops", type=int, default=16, help="crops timed in part 3 (0: skip)")
    ap.add_argument("--crops-per-image", type=float, default=3.0)
    ap.add_argument("--flip", type=float, default=0.05, help="fraction of predicted bits flipped in part 3")
    ap.add_argument("--pool-size", type=int, default=32, help="map side px of part 4 (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def dense_batch(root: Path, out_size: int, bits: int, batch: int, seed: int) -> tuple[dict, list[int], dict]:
    """``(batch, obj_ids, codes)``: ``batch`` crops of a synthetic dataset with their dense targets."""
    from bopkd.data.collate import collate_batch
    from bopkd.data.dense_dataset import DenseTorchDataset
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset
    from bopkd.data.torch_dataset import DataConfig

    name = f"dense{out_size}"
    build_synthetic_dataset(
        SynthConfig(
            name=name, root=str(root), train=0, test=max(2, batch // 2), seed=seed, objects_per_image=(2, 3)
        )
    )
    cfg = DataConfig(
        dataset=name, root=str(root), split="test", mode="crop", crop_size=2 * out_size, num_workers=0
    )
    from bopkd.data.dataset import BopDataset

    obj_ids = list(BopDataset(name, root).obj_ids)
    ds = DenseTorchDataset(cfg, obj_ids, out_size=out_size, bits=bits, min_vertices=2**14, train=False)
    items = [ds[k] for k in list(ds.keys())[:batch]] if hasattr(ds, "keys") else [ds[i] for i in range(batch)]
    return collate_batch(items), obj_ids, ds.codes


def networks(args, device):
    from bopkd.models.dense import DenseModelConfig, build_dense_model

    widths = [int(c) for c in args.decoder.split(",")]
    torch.manual_seed(args.seed)

    def mk(enc: str) -> DenseModelConfig:
        return DenseModelConfig(encoder=enc, out_size=args.out_size, bits=args.bits, decoder_channels=widths)

    student = build_dense_model(mk(args.student)).to(device).train()
    teacher = build_dense_model(mk(args.teacher)).to(device)
    with torch.no_grad():
        p = args.teacher_score
        teacher.head.bias[0].fill_(float(np.log(p / (1 - p))))
    teacher.eval().requires_grad_(False)
    return student, teacher


def time_kd_steps(args, batch: dict, device) -> None:
    """Part 1: median step time of each dense KD method and its ratio to ``none``."""
    from bopkd.losses.kd.registry import build_kd, kd_names, make_spec
    from bopkd.losses.zebra import ZebraLoss, ZebraLossConfig

    names = kd_names("dense")
    if not names:
        print("# part 1: no dense distillation method is registered; nothing to time")
        return
    student, teacher = networks(args, device)
    task = ZebraLoss(ZebraLossConfig())
    init = {k: v.clone() for k, v in student.state_dict().items()}
    methods = {}
    for name in names:
        spec = make_spec(name, None, family="dense")
        m = build_kd(spec, student=student, teacher=None if name == "none" else teacher, loss_cfg=None).to(
            device
        )
        methods[name] = (m, torch.optim.AdamW(list(student.parameters()) + list(m.parameters()), lr=1e-6))
    times: dict[str, list[float]] = {n: [] for n in names}
    images = batch["images"].to(device)
    for rnd in range(args.warmup + args.iters):
        for name in names:
            student.load_state_dict(init)
            m, opt = methods[name]
            t0 = time.perf_counter()
            with torch.no_grad():
                t_out = teacher(images)  # in every step, as in training (``none`` leaves it unused)
            out = student(images)
            terms = dict(task(out, batch["dense_mask"], batch["dense_bits"]))
            terms.update(m(out, batch, t_out, assignment=None))
            total = torch.stack([v.float() for v in terms.values()]).sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if rnd >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["none"]) if "none" in times else None
    print(
        f"# part 1: dense training step, student {args.student}, teacher {args.teacher}, crops "
        f"{2 * args.out_size} px -> {args.out_size} px, {args.bits} bits, batch {len(images)}, "
        f"{torch.get_num_threads()} thread(s), median of {args.iters} rounds (teacher forward in every step)"
    )
    for name in names:
        med = statistics.median(times[name])
        ratio = f"{med / base:.2f}x none" if base else ""
        goal = "  (goal <= 1.15x)" if name == "ot" else ""
        print(f"  {name:8s} {1000 * med:8.1f} ms  {ratio}{goal}")


def time_encoding(args) -> None:
    """Part 2: surface encoding time per LM-O model."""
    from bopkd.data.ply import load_ply
    from bopkd.geometry.surface_code import encode_model

    plys = sorted(LMO_MODELS.glob("obj_*.ply"))[: args.objects]
    if args.objects <= 0:
        return
    if not plys:
        print(f"# part 2: skipped, no LM-O models in {LMO_MODELS}")
        return
    print(f"# part 2: surface encoding, {args.bits} bits, subdivided to >= 2**16 vertices ({LMO_MODELS})")
    secs = []
    for ply in plys:
        model = load_ply(ply)
        t0 = time.perf_counter()
        code = encode_model(model, args.bits, 2**16)
        secs.append(time.perf_counter() - t0)
        print(f"  {ply.name}: {len(model.pts)} -> {len(code.vertices)} vertices, {secs[-1]:.2f} s")
    print(f"  mean {statistics.mean(secs):.2f} s per model")


def time_pnp(args, root: Path) -> None:
    """Part 3: decoding + PnP per crop at 128 px output, from noisy GT targets."""
    from bopkd.infer.dense_poses import DensePnPConfig, dense_poses, output_to_image_affine

    n = args.pnp_crops
    if n <= 0:
        return
    batch, _, codes = dense_batch(root, 128, args.bits, n, args.seed + 1)
    g = torch.Generator().manual_seed(args.seed)
    bits = batch["dense_bits"]
    flip = torch.rand(bits.shape, generator=g) < args.flip
    code_logits = torch.where((bits > 0.5) ^ flip, 4.0, -4.0)
    mask_logits = torch.where(batch["dense_mask"][:, None] > 0.5, 4.0, -4.0)
    metas = batch["meta"]
    luts = [np.asarray(codes[int(m["obj_id"])].points) for m in metas]
    K = np.stack([np.asarray(m["K_orig"], np.float64) for m in metas])
    A = np.stack([output_to_image_affine(m["affine"], 2.0) for m in metas])
    secs = []
    for _ in range(3):
        t0 = time.perf_counter()
        poses = dense_poses(mask_logits, code_logits, luts, K, A, DensePnPConfig())
        secs.append(time.perf_counter() - t0)
    per_crop = min(secs) / len(metas)
    pts = batch["dense_mask"].flatten(1).sum(1).float()
    ok = sum(p is not None for p in poses)
    print(
        f"# part 3: decoding + PnP-RANSAC (EPnP, 150 iterations, 2 px), 128 px outputs, {len(metas)} crops with "
        f"{pts.mean():.0f} mask pixels on average, {args.flip:.0%} bits flipped; {ok} poses"
    )
    print(
        f"  {1000 * per_crop:.2f} ms per crop, {1000 * per_crop * args.crops_per_image:.2f} ms per image of "
        f"{args.crops_per_image:g} crops (best of 3 passes)"
    )


def trained_like_maps(size: int, bits: int, crops: int, seed: int) -> tuple[dict, dict]:
    """Part 4's (student, teacher) output dicts, (crops, 1 | bits, size, size) logits (see the docstring)."""
    g = torch.Generator().manual_seed(seed)
    c = (torch.arange(size) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    disc = (xx**2 + yy**2 < 0.16).float()
    u, v = 0.8 * xx + 0.6 * yy + 0.5, -0.6 * xx + 0.8 * yy + 0.5
    iu, iv = (u.clamp(0, 0.999) * 256).long(), (v.clamp(0, 0.999) * 256).long()
    code = torch.stack([((iu if k % 2 == 0 else iv) >> (7 - k // 2)) & 1 for k in range(bits)]).float()
    t_mask = (8 * disc - 4).expand(crops, 1, size, size)
    t_code = (8 * code - 4).expand(crops, bits, size, size)
    noise = torch.randn(crops, 1 + bits, max(size // 8, 1), max(size // 8, 1), generator=g)
    noise = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    noise = noise / noise.std()
    student = {
        "mask_logits": (t_mask + noise[:, :1]).clone().requires_grad_(True),
        "code_logits": (t_code + noise[:, 1:]).clone().requires_grad_(True),
    }
    return student, {"mask_logits": t_mask.clone(), "code_logits": t_code.clone()}


def time_pools(args) -> None:
    """Part 4: the dense OT term at pool 1, 2, 4, 8: time, value and gradient agreement with pool 1."""
    from bopkd.losses.kd.dense_ot import DenseOTKD, DenseOTKDConfig

    S = args.pool_size
    if S <= 0:
        return
    print(
        f"# part 4: dense OT term by pooling factor, {S}x{S} maps, {args.bits} bits, 2 crops, trained-like maps "
        "with correlated student noise of std 1 (forward + backward, best of 3; agreement with pool 1)"
    )
    ref = None
    for pool in (1, 2, 4, 8):
        if S % pool:
            continue
        kd = DenseOTKD(DenseOTKDConfig(pool=pool))
        secs = []
        for _ in range(3):
            student, teacher = trained_like_maps(S, args.bits, 2, args.seed)
            t0 = time.perf_counter()
            loss = kd(student, {}, teacher)["kd_ot"]
            loss.backward()
            secs.append(time.perf_counter() - t0)
        grads = (student["code_logits"].grad.flatten(), student["mask_logits"].grad.flatten())
        if ref is None:
            ref = (loss.item(), grads)
        cos = [
            float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            for a, b in zip(grads, ref[1], strict=True)
        ]
        print(
            f"  pool {pool}: {(S // pool) ** 2:5d} cells per crop, {1000 * min(secs):9.1f} ms; value / pool 1 "
            f"{loss.item() / ref[0]:.2f}; gradient cosine with pool 1: code {cos[0]:.2f}, mask {cos[1]:.2f}"
        )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        batch, _, _ = dense_batch(Path(tmp), args.out_size, args.bits, args.batch, args.seed)
        time_kd_steps(args, batch, device)
        time_encoding(args)
        time_pnp(args, Path(tmp))
    time_pools(args)


if __name__ == "__main__":
    main()
