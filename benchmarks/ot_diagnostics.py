"""What the OT distillation term does to a student during training: gradient norms and problem sizes.

Trains a student with ``--kd ot`` (or ``fkd+ot``) from a run config and a trained teacher, exactly as
``bopkd train student`` does (same data, augmentation, optimiser, schedule and clipping), and every
``--every`` iterations records, before the optimiser step:

* the gradient norm of each loss term (``loss_cls``, ``loss_kpt``, ``kd_ot``, ...) over the student's
  parameters, each term alone, and the norm of the clipped total's gradient (clipping at 1.0 rescales
  all terms together);
* the split of the OT term's gradient between the student's keypoints and its classification logits
  (the latter is the path through the live scores, i.e. the unbalanced mass term);
* the OT problems: instances with both sets, student and teacher set sizes (points with a weight),
  student and teacher masses (sums of scores), and the divergence per problem;
* the time to gather the problems with and without the teacher PnP test (``teacher_pnp``), and the
  instances left with it: the option's cost per step with this teacher.

It prints one row per record and writes them as JSON lines (``--out``). Used to find out why OT with
live scores helps or hurts a student, with measurements instead of guesses.

Usage::

    python benchmarks/ot_diagnostics.py --config RUN_DIR/config.yaml --teacher TEACHER/checkpoints/final.pt \
        --iters 300 --every 25 --out ot_diag.jsonl [--set kd.options.weight=5 --set kd.options.detach_scores=true]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def grad_norm(term: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    sq = sum(float(g.detach().pow(2).sum()) for g in grads if g is not None)
    return sq**0.5


class Recorder:
    """Wraps the run's distillation loss to keep the student outputs and OT problems of the last step."""

    def __init__(self, kd):
        from bopkd.losses.kd.ot_kd import OTKD

        self.kd = kd
        self.ot = kd if isinstance(kd, OTKD) else getattr(kd, "ot", None)
        if self.ot is None:
            raise SystemExit("ot_diagnostics: the run's --kd must be ot or fkd+ot")
        self.outputs = None
        self.stats: dict = {}

    def __call__(
        self, outputs: dict, batch: dict, teacher_outputs: dict | None = None, assignment: dict | None = None
    ):
        self.outputs = outputs
        with torch.no_grad():
            t0 = time.perf_counter()
            pr = self.ot.problems(outputs, batch, teacher_outputs, assignment)
            t1 = time.perf_counter()
            # the same problems with the teacher PnP test toggled: its cost and how many instances it drops
            cfg = self.ot.cfg
            self.ot.cfg = dataclasses.replace(cfg, teacher_pnp=not cfg.teacher_pnp)
            try:
                t2 = time.perf_counter()
                pr_t = self.ot.problems(outputs, batch, teacher_outputs, assignment)
                t3 = time.perf_counter()
            finally:
                self.ot.cfg = cfg
        with_pnp, without = ((t1 - t0), (t3 - t2)) if cfg.teacher_pnp else ((t3 - t2), (t1 - t0))
        n_with = pr if cfg.teacher_pnp else pr_t
        timing = {
            "gather_ms": 1000 * without,
            "gather_with_pnp_ms": 1000 * with_pnp,
            "instances_with_pnp": 0 if n_with is None else int(n_with.a.shape[0]),
        }
        if pr is None:
            self.stats = {"instances": 0, **timing}
        else:
            ns, nt = (pr.a > 0).sum(1).float(), (pr.b > 0).sum(1).float()
            self.stats = {
                "instances": int(pr.a.shape[0]),
                "student_points": float(ns.mean()),
                "teacher_points": float(nt.mean()),
                "student_mass": float(pr.a.sum(1).mean()),
                "teacher_mass": float(pr.b.sum(1).mean()),
                **timing,
            }
        return self.kd(outputs, batch, teacher_outputs, assignment=assignment)


def record(trainer, rec: Recorder, total: torch.Tensor, terms: dict, it: int) -> dict:
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    row: dict = {"iter": it, **{k: float(v.detach()) for k, v in terms.items()}}
    for k, v in terms.items():
        row[f"grad_{k}"] = grad_norm(v, params)
    row["grad_total"] = grad_norm(total, params)
    out = rec.outputs
    if "kd_ot" in terms and terms["kd_ot"].requires_grad:
        g_logits, g_kpts = torch.autograd.grad(
            terms["kd_ot"], [out["cls_logits"], out["kpts"]], retain_graph=True, allow_unused=True
        )
        row["kd_ot_grad_logits"] = float(g_logits.norm()) if g_logits is not None else 0.0
        row["kd_ot_grad_kpts"] = float(g_kpts.norm()) if g_kpts is not None else 0.0
    n_prob = 8 * max(rec.stats.get("instances", 0), 1)
    w = float(rec.ot.cfg.weight) or 1.0
    row["divergence_per_problem"] = float(terms.get("kd_ot", torch.zeros(())).detach()) / w / n_prob
    row.update(rec.stats)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a student run's config.yaml (or any run config)")
    ap.add_argument("--teacher", required=True, help="teacher checkpoint")
    ap.add_argument("--kd", default="ot", choices=["ot", "fkd+ot"])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="ot_diagnostics.jsonl")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="config override key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from bopkd.config import load_yaml
    from bopkd.train.command import prepare_config
    from bopkd.train.config import build_config
    from bopkd.train.networks import load_frozen_model
    from bopkd.train.trainer import Trainer

    base = load_yaml(args.config)
    base["kd"] = {**base.get("kd", {}), "method": args.kd, "teacher": args.teacher}
    base.update({"iters": args.iters, "progress": False})
    tmp = tempfile.mkdtemp(prefix="ot_diag_")
    base["out"] = tmp
    cfg = prepare_config(build_config(base=base, overrides=args.sets))
    teacher, _ = load_frozen_model(args.teacher)
    trainer = Trainer(cfg, teacher=teacher)
    rec = Recorder(trainer.loss_fns["kd"])
    trainer.loss_fns["kd"] = rec
    rows = []
    from bopkd.data.collate import batch_to_device

    for it, batch in enumerate(trainer.make_loader(0), start=1):
        batch = batch_to_device(batch, trainer.device)
        total, terms = trainer.compute_losses(batch)
        if it == 1 or it % args.every == 0 or it == args.iters:
            row = record(trainer, rec, total, terms, it)
            rows.append(row)
            print(
                json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
        total.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainer.params, cfg.optim.grad_clip)
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if it >= args.iters:
            break
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = [k for k in rows[0] if k.startswith("grad_")]
    print(
        "# median over records: "
        + ", ".join(f"{k}={statistics.median(r[k] for r in rows):.4g}" for k in keys)
    )


if __name__ == "__main__":
    main()
