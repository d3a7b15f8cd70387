"""Training-step time of every distillation method relative to direct student training (``--kd none``).

For one batch of a small synthetic BOP dataset (rendered into a temporary folder, loaded through the
training data pipeline with augmentation), it times a full training step (student forward, task loss,
distillation terms, backward, AdamW step) for each method of the registry:

* ``step``: without the teacher's forward (teacher outputs computed once beforehand);
* ``step+T``: with the teacher's forward inside the step, as in training (for ``none``: the
  teacher-forward-inclusive baseline, the teacher's outputs unused).

and prints the ratios to ``none`` (``step / none`` and ``step+T / none+T``) and the OT-vs-pred ratio.
The row ``ot+pnp`` is ``ot`` with ``teacher_pnp`` (the reference's PnP-RANSAC test of every instance's
teacher cells, on the CPU): its extra time is the option's cost per step. With the untrained teacher
here the keypoints fit no pose, so RANSAC runs all its iterations: an upper bound of that cost.
Goal: ``ot`` adds at most 15 % over
``pred`` or over the teacher-forward-inclusive baseline.

The networks are untrained; so that the teacher has confident cells (an untrained one has none and
the OT loss would have nothing to do), its classification bias is raised to give every cell a score of
``--teacher-score`` (0.7): the teacher then contributes, per instance, the most confident cells per
level as at inference (about ``positive_num`` = 10), as a trained teacher does.

Usage::

    python benchmarks/kd_step.py                        # tiny-cpu student, darknet-tiny teacher, 320x240, B=4
    python benchmarks/kd_step.py --student darknet-tiny-h --teacher darknet53 --iters 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_batch(tmp: Path, size: tuple[int, int], batch: int, seed: int) -> tuple[dict, list[int]]:
    from bopkd.data.augment import AugmentConfig
    from bopkd.data.collate import collate_batch
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset
    from bopkd.data.torch_dataset import BopTorchDataset, DataConfig

    cfg = SynthConfig(
        name="kdbench",
        root=str(tmp),
        train=batch,
        test=0,
        width=size[0],
        height=size[1],
        seed=seed,
        objects_per_image=(2, 4),
    )
    build_synthetic_dataset(cfg)
    from bopkd.data.dataset import BopDataset

    obj_ids = list(BopDataset("kdbench", tmp).obj_ids)
    ds = BopTorchDataset(
        DataConfig(dataset="kdbench", root=str(tmp), split="train_pbr", num_workers=0),
        obj_ids,
        train=True,
        augment=AugmentConfig(),
        seed=seed,
    )
    items = [ds[(i, 0)] for i in range(min(batch, len(ds)))]  # (index, epoch) keys seed the augmentation
    return collate_batch(items), obj_ids


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="tiny-cpu")
    ap.add_argument("--teacher", default="darknet-tiny")
    ap.add_argument("--size", default="320x240", help="input WxH")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5, help="timed steps per method (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--teacher-score", type=float, default=0.7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def build_networks(args: argparse.Namespace, obj_ids: list[int], device: torch.device):
    """Untrained student (train mode) and teacher (eval, frozen) whose cells all score ``--teacher-score``."""
    from bopkd.models.posenet import ModelConfig, PoseNet

    torch.manual_seed(args.seed)
    student = PoseNet(ModelConfig(obj_ids=obj_ids, backbone=args.student)).to(device).train()
    teacher = PoseNet(ModelConfig(obj_ids=obj_ids, backbone=args.teacher)).to(device)
    with torch.no_grad():
        p = args.teacher_score
        teacher.head.cls_logits.bias.fill_(math.log(p / (1 - p)))
    teacher.eval().requires_grad_(False)
    return student, teacher


def build_methods(student, teacher, loss_cfg, device: torch.device) -> tuple[list[str], dict]:
    """Every registry method plus ``ot+pnp``: name -> (method module, AdamW over student + method),
    each built from the same initial student weights."""
    from bopkd.losses.kd import KD_METHODS, build_kd
    from bopkd.losses.kd.registry import make_spec

    init_state = {k: v.clone() for k, v in student.state_dict().items()}
    methods = {}
    names = [*KD_METHODS, "ot+pnp"]
    for name in names:
        student.load_state_dict(init_state)
        spec = make_spec("ot", {"teacher_pnp": True}) if name == "ot+pnp" else name
        m = build_kd(
            spec, student=student, teacher=None if name == "none" else teacher, loss_cfg=loss_cfg
        ).to(device)
        opt = torch.optim.AdamW(list(student.parameters()) + list(m.parameters()), lr=1e-6)
        methods[name] = (m, opt)
    return names, methods


class StepTimer:
    """Times training steps of the methods on one batch (seconds, device synchronised)."""

    def __init__(self, student, teacher, task, batch: dict, assignment: dict, device: torch.device):
        self.student, self.teacher, self.task = student, teacher, task
        self.batch, self.assignment, self.device = batch, assignment, device
        self.fixed_t_out = self.teacher_forward()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def teacher_forward(self):
        with torch.no_grad():
            return self.teacher(self.batch["images"])

    def step(self, method, opt, with_teacher: bool) -> tuple[float, dict]:
        """One step: (seconds of the distillation forward alone, loss terms); the caller times the whole."""
        # "none" with the teacher forward is the teacher-forward-inclusive baseline (outputs unused)
        t_out = self.teacher_forward() if with_teacher else self.fixed_t_out
        out = self.student(self.batch["images"])
        terms = dict(self.task(out, self.batch, assignment=self.assignment))
        self.sync()
        tk = time.perf_counter()
        kd = method(out, self.batch, t_out, assignment=self.assignment)
        self.sync()
        dk = time.perf_counter() - tk
        terms.update(kd)
        total = torch.stack(list(terms.values())).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return dk, terms


def time_rounds(timer: StepTimer, names: list[str], methods: dict, warmup: int, iters: int):
    """Median step times per (method, with teacher forward), distillation-forward times and loss terms.

    Every variant (method x with/without the teacher forward) runs once per round, round-robin, so that
    a busy machine slows all of them alike; the median over rounds is reported.
    """
    variants = [("teacher-forward", None, True)]
    for name in names:
        variants += [(name, False, None), (name, True, None)]
    times: dict = {}
    kd_times: dict = {}
    kd_terms: dict = {}
    for rnd in range(warmup + iters):
        for name, with_teacher, only_teacher in variants:
            timer.sync()
            t0 = time.perf_counter()
            if only_teacher:
                timer.teacher_forward()
                timer.sync()
                if rnd >= warmup:
                    times.setdefault((name, None), []).append(time.perf_counter() - t0)
                continue
            dk, terms = timer.step(*methods[name], with_teacher)
            timer.sync()
            if rnd >= warmup:
                times.setdefault((name, with_teacher), []).append(time.perf_counter() - t0)
                kd_times.setdefault(name, []).append(dk)
                kd_terms[name] = {k: float(v.detach()) for k, v in terms.items()}
    results = {k: statistics.median(v) for k, v in times.items()}
    kd_only = {k: (statistics.median(v), kd_terms[k]) for k, v in kd_times.items()}
    return results, kd_only


def print_report(args, device, W: int, H: int, n_obj: int, num_pos: int, names, results, kd_only) -> None:
    base = results[("none", False)]
    base_t = results[("none", True)]
    print(
        f"# device {device} ({torch.get_num_threads()} threads), student {args.student}, teacher {args.teacher}, "
        f"input {W}x{H}, batch {args.batch}, {n_obj} objects, {num_pos} positive cells, "
        f"median of {args.iters} steps"
    )
    print(
        f"# teacher forward alone: {1000 * results[('teacher-forward', None)]:.1f} ms; direct student step "
        f"(--kd none): {1000 * base:.1f} ms, with the teacher forward: {1000 * base_t:.1f} ms"
    )
    print(
        f"{'method':8s} {'step ms':>9s} {'step/none':>10s} {'step+T ms':>10s} {'step+T/(none+T)':>16s} {'kd fwd ms':>10s}  loss terms"
    )
    for name in names:
        s = results[(name, False)]
        st = results[(name, True)]
        kd_ms, kd_terms = kd_only[name]
        tv = ", ".join(f"{k}={v:.3g}" for k, v in kd_terms.items())
        print(
            f"{name:8s} {1000 * s:9.1f} {s / base:10.3f} {1000 * st:10.1f} {st / base_t:16.3f} {1000 * kd_ms:10.2f}  {tv}"
        )
    ot, pred = results[("ot", True)], results[("pred", True)]
    ot0, pred0 = results[("ot", False)], results[("pred", False)]
    print(
        f"# ot vs pred: {ot / pred:.3f} with the teacher forward, {ot0 / pred0:.3f} without; "
        f"ot vs the teacher-forward-inclusive baseline (--kd none step + teacher forward): {ot / base_t:.3f} "
        f"(goal: <= 1.15 for either comparison)"
    )
    pnp = results[("ot+pnp", True)]
    print(f"# teacher_pnp: {1000 * (pnp - ot):.1f} ms per step over ot ({pnp / ot:.3f}x)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)

    from bopkd.data.collate import batch_to_device
    from bopkd.losses.targets import assign_targets
    from bopkd.losses.task import LossConfig, PoseLoss

    with tempfile.TemporaryDirectory() as tmp:
        batch, obj_ids = build_batch(Path(tmp), (W, H), args.batch, args.seed)
    batch = batch_to_device(batch, device)
    n_obj = sum(int(o["cls"].numel()) for o in batch["objects"])
    student, teacher = build_networks(args, obj_ids, device)
    loss_cfg = LossConfig()
    task = PoseLoss(loss_cfg)
    gen = torch.Generator().manual_seed(args.seed)
    assignment = assign_targets(student.anchors((H, W), device), batch, loss_cfg, gen)
    names, methods = build_methods(student, teacher, loss_cfg, device)
    timer = StepTimer(student, teacher, task, batch, assignment, device)
    results, kd_only = time_rounds(timer, names, methods, args.warmup, args.iters)
    print_report(args, device, W, H, n_obj, assignment["num_pos"], names, results, kd_only)


if __name__ == "__main__":
    main()
