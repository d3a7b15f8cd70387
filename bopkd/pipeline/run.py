"""``bopkd run-pipeline``: plan (:mod:`bopkd.pipeline.plan`), lock, then run every stage that is not done
(:func:`bopkd.pipeline.engine.run_stages`).

Locks: ``RUN/.lock`` and ``RESULTS/.bopkd-<dataset>.lock`` (the result files of a dataset are shared by
its presets), held for the whole run (:class:`~bopkd.pipeline.engine.RunLock`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bopkd.pipeline.engine import (
    RunLock,
    StageStatus,
    assess_all,
    event_logger,
    forced_names,
    now,
    run_stages,
    status_table,
)
from bopkd.pipeline.options import PipelineOptions
from bopkd.pipeline.plan import STAGE_KINDS, Plan, build_plan, run_folder_name
from bopkd.utils.atomic import atomic_write_json


@dataclass
class PipelineResult:
    """What a run did: its folders, the stages run and skipped, its seconds and the stages' records."""

    run_folder: Path
    report_dir: Path
    executed: list[str]
    skipped: list[str]
    seconds: float
    records: dict[str, dict]


def auto_threads() -> int:
    """Torch CPU threads: the cores not busy with other work (1-minute load average), at least 1.

    Measured on a 2-core machine under load: two threads competing with other processes made a training
    step 10x slower than one thread, so a busy machine gets one thread.
    """
    n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(n, int(n - load + 0.5)))


def lock_paths(opts: PipelineOptions) -> list[Path]:
    """The run folder's lock and the results folder's lock for this dataset."""
    return [
        Path(opts.runs) / run_folder_name(opts) / ".lock",
        Path(opts.results) / f".bopkd-{opts.dataset}.lock",
    ]


def plan_forced(plan: Plan, force: list[str]) -> set[str]:
    """The names of the plan's stages that ``--force`` selects."""
    return forced_names(plan.stages, force, STAGE_KINDS)


def _table(plan: Plan, statuses: list[StageStatus]):
    title = f"bopkd run-pipeline {plan.dataset} (preset {plan.preset.name}) — {plan.run_folder}"
    return status_table(title, statuses)


def _dry_run(opts: PipelineOptions, console, t0: float) -> PipelineResult:
    plan = build_plan(opts)
    statuses = assess_all(plan.stages, plan.run_folder, plan_forced(plan, opts.force))
    console.print(_table(plan, statuses))
    if plan.notice:
        console.print(plan.notice, highlight=False, soft_wrap=True)
    todo = [s for s in statuses if s.state != "done"]
    console.print(
        f"{len(statuses) - len(todo)} of {len(statuses)} stages done; {len(todo)} would run (dry run: nothing was run)"
    )
    done = [s.stage.name for s in statuses if s.state == "done"]
    return PipelineResult(plan.run_folder, plan.report_dir, [], done, time.perf_counter() - t0, {})


def _write_run_settings(plan: Plan, opts: PipelineOptions, threads: int) -> None:
    """``RUN/pipeline.json``: the resolved settings of the latest run."""
    plan.run_folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset": plan.dataset,
        "preset": plan.preset.name,
        "methods": plan.methods,
        "students": plan.students,
        "seeds": plan.seeds,
        "root": str(opts.root),
        "results": str(opts.results),
        "report": str(plan.report_dir),
        "device": opts.device,
        "gpus": opts.gpus,
        "threads": threads,
        "sets": opts.sets,
        "detections": None if opts.detections is None else str(opts.detections),
        "stages": [s.name for s in plan.stages],
        "updated": now(),
    }
    atomic_write_json(plan.run_folder / "pipeline.json", settings)


def run_pipeline(opts: PipelineOptions, console=None) -> PipelineResult:
    """Plan, then run every stage that is not done (see :mod:`bopkd.pipeline.engine`)."""
    from rich.console import Console

    console = console or Console()
    t0 = time.perf_counter()
    if opts.dry_run:
        return _dry_run(opts, console, t0)
    # Lock first (a second run stops at once), then plan.
    with RunLock(lock_paths(opts)):
        plan = build_plan(opts)
        forced = plan_forced(plan, opts.force)
        progress = sys.stderr.isatty() if opts.progress is None else opts.progress
        import torch

        threads = opts.threads or auto_threads()
        threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        # OpenCV's thread pool does not survive fork(): once this process used it (the synth stage's image
        # writes), a DataLoader worker calling cv2.setNumThreads hangs in pthread_cond_destroy. With one
        # OpenCV thread here the pool never starts (image work is parallel across workers anyway).
        import cv2

        cv2.setNumThreads(1)
        _write_run_settings(plan, opts, threads)
        console.print(_table(plan, assess_all(plan.stages, plan.run_folder, forced)))
        console.print(
            f"torch threads: {threads} (of {os.cpu_count()} cores); device {opts.device}; logs in {plan.run_folder / 'logs'}",
            highlight=False,
        )
        if plan.notice:
            console.print(plan.notice, highlight=False, soft_wrap=True)
        event = event_logger(plan.run_folder / "logs" / "pipeline.log")
        event(f"start pid {os.getpid()}: {' '.join(sys.argv)}")
        if plan.notice:
            event(plan.notice)
        try:
            done = run_stages(plan.stages, plan.run_folder, forced, progress, opts, console, event)
        finally:
            torch.set_num_threads(threads_before)
        total = time.perf_counter() - t0
        event(f"finished: {len(done.executed)} stages run, {len(done.skipped)} already done, {total:.1f} s")
        return PipelineResult(
            plan.run_folder, plan.report_dir, done.executed, done.skipped, total, done.records
        )
