"""``bopkd run-pipeline``: one resumable command from a dataset to a BOP-scored comparison report.

The pipeline is a list of :class:`Stage` records, planned from the options and a preset
(:mod:`bopkd.pipeline_presets`) and run in order:

1. ``data``: download the BOP parts of a registered dataset (:func:`bopkd.data.download.download_dataset`)
   or build a synthetic one (:func:`bopkd.data.synth.build_synthetic_dataset`);
2. ``teacher``: train the teacher (:func:`bopkd.train.trainer.train`);
3. ``student-<backbone>-<method>-s<seed>``: train each student with each distillation method and seed
   (``none`` is the direct student and does not depend on the teacher);
4. ``predict-<model>``: write each model's BOP'19 CSV into the results folder
   (:func:`bopkd.train.predict.predict`), named ``bopkd-<method>-<backbone>-s<seed>[-<preset>][-oracle-gt-boxes]_<dataset>-test.csv``
   (``-<preset>`` when it is not the dataset's default preset; the method in the characters the BOP site
   accepts, ``fkd+ot`` -> ``fkdot``; ``-oracle-gt-boxes`` when crop-mode models predict on ground-truth
   boxes, i.e. without ``--detections``);
5. ``score-<model>``: score it (:func:`bopkd.eval.scoring.score_submissions`) into ``results/scores/<name>/``;
6. ``report``: the comparison report (:func:`bopkd.report.build.build_report`) in ``reports/<dataset>-<preset>/``.

Skipping, rerunning, resuming. Each finished stage writes ``RUN/stages/<stage>.json`` atomically
(``RUN`` = ``runs/<dataset>-<preset>``): a hash of its settings, the checksums (SHA-256) of the
inputs it consumed (its upstream stages' outputs) and of the files it produced. A stage is skipped when
its record exists, its settings hash and input checksums equal the current ones and its outputs are
still there unchanged (size and mtime, else SHA-256). Otherwise it runs; a stage whose outputs changed
changes its downstream stages' inputs, so exactly the affected stages rerun. A training stage trains in
``RUN/train/<stage>-<fingerprint>/`` (the fingerprint hashes settings and inputs), so an interrupted
stage (Ctrl-C, kill) continues from its last checkpoint (``--resume`` of the trainer) on the next run,
and a changed setting starts a new folder instead of overwriting the old one. Every file is written
atomically, so an interruption never loses or corrupts what was already written.

Locks. A run holds ``fcntl.flock`` locks on ``RUN/.lock`` and on ``RESULTS/.bopkd-<dataset>.lock`` (the
result files of a dataset are shared by its presets) for its whole duration; a second run on the same
folders stops with one line naming the other run's pid. The operating system releases the locks of a
killed run.

Logs: ``RUN/logs/<stage>.log`` (everything the stage printed, progress bars reduced to their last
state) and ``RUN/logs/pipeline.log`` (one line per stage event).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import fnmatch
import gc
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bopkd.errors import BopkdError
from bopkd.pipeline_presets import DEFAULT_METHODS, PipelinePreset, Variant, default_preset, get_preset
from bopkd.utils.atomic import atomic_write_json

STAGE_KINDS = ("data", "teacher", "student", "predict", "score", "report")
RECORD_VERSION = 1
#: Training-config keys that do not change what a run computes (left out of the settings hash).
VOLATILE_TRAIN_KEYS = (
    "out",
    "device",
    "progress",
    "ckpt_every",
    "log_every",
    "data.num_workers",
    "data.pin_memory",
    "kd.teacher",
)
#: Training settings added after stages were recorded, each with the value that reproduces the earlier
#: behaviour: left out of a stage's settings hash while they hold that value, so that stages completed
#: before the setting existed stay done.
NEUTRAL_TRAIN_DEFAULTS = {
    "optim.eps": 1e-8,
    "optim.anneal": "cos",
    "optim.cycle_momentum": True,
    "optim.schedule_extra_steps": 0,
    "augment.crop_frame": "crop",
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------- options


@dataclass
class PipelineOptions:
    """The options of ``bopkd run-pipeline`` (see its ``--help``).

    Attributes:
        dataset: registered BOP dataset (downloaded) or a synthetic dataset name (built); ``demo`` by default.
        preset: ``demo``, ``experiment``, ``quick`` or ``paper`` (None: ``demo`` for the dataset ``demo``, else ``quick``).
        methods: distillation methods (default: none, pred, fkd, ot, fkd+ot).
        students: student backbones (default: the preset's).
        seeds: student seeds (default: the preset's); the teacher uses the first.
        root, results, reports, runs: the folders of datasets, BOP CSVs (+ scores), reports, run state.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for training and inference.
        gpus: processes (GPUs) per training run; > 1 runs ``bopkd train`` under torchrun.
        threads: CPU threads of torch (None: the cores not busy with other work, at least 1).
        force: stages to run even if done: names, kinds (``teacher``, ``student`` ...), globs or ``all``.
        sets: ``SCOPE.key=value`` overrides (see :func:`parse_sets`).
        mirror: download mirror (``--mirror``; default ``$BOPKD_MIRROR``).
        detections: BOP default-detections JSON that crop-mode models predict on (None: GT boxes, the
            ``oracle-gt-boxes`` protocol); its path and SHA-256 enter the predict stages' settings.
        dry_run: print the plan and what is done, run nothing.
        progress: progress bars (None: when the console is a terminal).
    """

    dataset: str = "demo"
    preset: str | None = None
    methods: list[str] | None = None
    students: list[str] | None = None
    seeds: list[int] | None = None
    root: Path = Path("bop_data")
    results: Path = Path("results")
    reports: Path = Path("reports")
    runs: Path = Path("runs")
    device: str = "auto"
    gpus: int = 1
    threads: int | None = None
    force: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    mirror: str | None = None
    detections: Path | None = None
    dry_run: bool = False
    progress: bool | None = None


SCOPES = ("synth", "train", "teacher", "student", "predict", "score")


@dataclass
class Overrides:
    """``--set`` values by scope. ``student@SEL`` applies to the students whose backbone or method is SEL."""

    synth: dict = field(default_factory=dict)
    train: list[str] = field(default_factory=list)
    teacher: list[str] = field(default_factory=list)
    student: list[tuple[str | None, str]] = field(default_factory=list)
    predict: list[str] = field(default_factory=list)
    score: dict = field(default_factory=dict)


def parse_sets(sets: list[str]) -> Overrides:
    """Parse ``--set SCOPE.key=value`` strings.

    Scopes: ``synth.KEY`` (a :class:`~bopkd.data.synth.SynthConfig` field), ``train.KEY`` (every training
    run), ``teacher.KEY``, ``student.KEY`` (every student), ``student@SEL.KEY`` (students whose backbone or
    distillation method is SEL, e.g. ``student@ot.kd.weight=2``), ``predict.KEY`` (``bopkd predict --set``)
    and ``score.metrics=[bop19,ad]``. Training keys are :class:`~bopkd.train.config.RunConfig` keys
    (``iters``, ``optim.lr``, ``data.crop_size`` ...); values are YAML scalars or lists.
    """
    from bopkd.train.config import parse_override

    ov = Overrides()
    for text in sets:
        scope, dot, rest = text.partition(".")
        sel = None
        if "@" in scope:
            scope, _, sel = scope.partition("@")
        if (
            not dot
            or scope not in SCOPES
            or not rest
            or "=" not in rest
            or (sel is not None and scope != "student")
        ):
            raise BopkdError(
                f"--set {text!r}: write SCOPE.key=value with SCOPE one of {', '.join(SCOPES)} or student@BACKBONE|METHOD, "
                "e.g. --set teacher.iters=200 or --set student@ot.kd.weight=2"
            )
        if scope == "synth" or scope == "score":
            keys, value = parse_override(rest)
            if len(keys) != 1:
                raise BopkdError(f"--set {text!r}: {scope} settings are flat (e.g. --set {scope}.train=100)")
            getattr(ov, scope)[keys[0]] = value
        elif scope == "student":
            ov.student.append((sel, rest))
        else:
            getattr(ov, scope).append(rest)
    return ov


# ------------------------------------------------------------------------------------------- checksums


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    st = path.stat()
    return {"sha256": sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def entry_intact(path: Path, entry: dict) -> bool:
    """Whether ``path`` still holds what ``entry`` recorded (size+mtime shortcut, else SHA-256)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != entry.get("size"):
        return False
    if st.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return sha256_file(path) == entry.get("sha256")


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _lookup(d: dict, dotted: str):
    node = d
    for p in dotted.split("."):
        if not isinstance(node, dict) or p not in node:
            return KeyError
        node = node[p]
    return node


def hashed_train_config(cfg: dict) -> dict:
    """A training config as hashed: volatile keys dropped, and keys of :data:`NEUTRAL_TRAIN_DEFAULTS`
    dropped while they hold their neutral value."""
    neutral = tuple(k for k, v in NEUTRAL_TRAIN_DEFAULTS.items() if _lookup(cfg, k) == v)
    return _drop_keys(cfg, VOLATILE_TRAIN_KEYS + neutral)


def _drop_keys(d: dict, dotted: tuple[str, ...]) -> dict:
    d = copy.deepcopy(d)
    for k in dotted:
        node = d
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return d


# ------------------------------------------------------------------------------------------- stages


@dataclass
class StageOutput:
    """What a stage produced: files (checksummed into its record) and JSON-able facts for later stages."""

    files: list[Path]
    info: dict = field(default_factory=dict)


@dataclass
class Stage:
    """One step of the pipeline.

    Attributes:
        name: unique name, also the record and log file name (``teacher``, ``student-tiny-cpu-ot-s0``).
        kind: one of :data:`STAGE_KINDS`.
        title: one line for the plan table.
        deps: names of the stages whose outputs it consumes.
        config: the settings that determine its outputs (hashed into its record).
        action: ``action(ctx) -> StageOutput``.
        params: what the action needs besides ``config`` and does not change its outputs (device,
            progress, worker counts); not hashed.
    """

    name: str
    kind: str
    title: str
    deps: list[str]
    config: dict
    action: Callable[[StageContext], StageOutput]
    params: dict = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        return canonical_hash(self.config)


@dataclass
class StageContext:
    """What a running stage gets: its upstream records, its fingerprint, its folders and a logger."""

    stage: Stage
    deps: dict[str, dict]
    fingerprint: str
    run_folder: Path
    forced: bool
    previous: dict | None
    progress: bool
    log: Callable[[str], None]
    opts: PipelineOptions

    def dep_info(self, name: str) -> dict:
        return self.deps[name].get("info", {})


@dataclass
class StageStatus:
    stage: Stage
    state: str  # "done" | "run" | "resume"
    reason: str
    fingerprint: str | None = None


@dataclass
class PipelineResult:
    run_folder: Path
    report_dir: Path
    executed: list[str]
    skipped: list[str]
    seconds: float
    records: dict[str, dict]


# ------------------------------------------------------------------------------------------- the plan


def student_name(backbone: str, method: str, seed: int, tag: str = "") -> str:
    return f"{backbone}-{method}{'-' + tag if tag else ''}-s{seed}"


def _compact(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", name)


def result_method(role: str, backbone: str, method: str, seed: int, tag: str = "") -> str:
    """BOP method name in the characters the BOP site accepts (:func:`bopkd.eval.bop_site.site_method_name`):
    ``bopkd-teacher-darknettinyh-s0``, ``bopkd-ot-tinycpu-s0``, ``bopkd-fkdot-tinycpu-s0`` (``fkd+ot``), a
    variant's ``bopkd-ot-w2-tinycpu-s0``; the plan adds ``-<preset>`` when the preset is not the dataset's
    default (``bopkd-ot-darknettiny-s0-paper``)."""
    from bopkd.eval.bop_site import site_method_name

    what = "teacher" if role == "teacher" else method + (f"-{tag}" if tag else "")
    return site_method_name(f"bopkd-{what}-{_compact(backbone)}-s{seed}")


@dataclass
class Plan:
    """The resolved settings and the ordered stages."""

    options: PipelineOptions
    preset: PipelinePreset
    dataset: str
    registered: bool
    methods: list[str]
    students: list[str]
    seeds: list[int]
    run_folder: Path
    report_dir: Path
    stages: list[Stage]
    notice: str | None = None  # said at the start of a run (GT-box results on a BOP dataset)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _kd_default_weight(method: str) -> float | None:
    from bopkd.losses.kd.registry import get_entry

    e = get_entry(method, "--methods")
    cfg = e.config_cls()
    if hasattr(cfg, "weight"):
        return float(cfg.weight)
    if hasattr(cfg, "ot") and hasattr(cfg.ot, "weight"):
        return float(cfg.ot.weight)
    return None


def _train_config(
    plan_opts: PipelineOptions,
    preset: PipelinePreset,
    dataset: str,
    role: str,
    backbone: str,
    seed: int,
    method: str,
    ov: Overrides,
    variant: Variant | None = None,
) -> dict:
    """The full training config (plain dict) of one run, validated by :func:`build_config`.

    A ``variant`` replaces the method's weight (when it gives one) and merges its options over the preset's.
    """
    from bopkd.train.config import build_config, merge_into, to_dict

    options: dict = {}
    merge_into(options, preset.copy_section("train"), "preset")
    merge_into(options, preset.copy_section(role), "preset")
    merge_into(
        options,
        {
            "role": role,
            "data": {"dataset": dataset, "root": str(plan_opts.root)},
            "model": {"backbone": backbone},
            "seed": seed,
            "device": plan_opts.device,
            "gpus": plan_opts.gpus,
        },
        "options",
    )
    if role == "student":
        weight = preset.kd_weights.get(method, _kd_default_weight(method) if method != "none" else None)
        if variant is not None and variant.weight is not None:
            weight = variant.weight
        # The teacher's checkpoint is known once the teacher stage ran (and enters the hash as its checksum).
        kd = {"method": method, "teacher": None if method == "none" else "(the teacher stage's checkpoint)"}
        if weight is not None:
            kd["weight"] = weight
        kd_opts = copy.deepcopy(preset.kd_options.get(method, {}))
        if variant is not None:
            merge_into(kd_opts, copy.deepcopy(variant.options), f"variant {variant.tag}")
        if kd_opts:
            kd["options"] = kd_opts
        options["kd"] = kd
    sets = list(ov.train) + (list(ov.teacher) if role == "teacher" else [])
    if role == "student":
        sets += [s for sel, s in ov.student if sel is None or sel in (backbone, method)]
    try:
        cfg = build_config(preset=preset.train_preset, options=options, overrides=sets)
    except BopkdError as e:
        raise BopkdError(f"{role} {backbone}: {e}") from None
    return to_dict(cfg)


def _synth_config(preset: PipelinePreset, dataset: str, root: Path, ov: Overrides) -> dict:
    from bopkd.data.synth import SynthConfig

    d = preset.copy_section("synth")
    d.update(ov.synth)
    d["name"] = dataset
    d["root"] = str(root)
    try:
        return SynthConfig.from_dict(d).to_dict()
    except TypeError as e:
        raise BopkdError(f"synth settings: {e}") from None


def _check_dataset_name(dataset: str) -> str:
    if not dataset or not re.fullmatch(r"[A-Za-z0-9]+", dataset):
        raise BopkdError(
            f"dataset name {dataset!r}: use letters and digits only (BOP result files are named METHOD_DATASET-SPLIT.csv)"
        )
    return dataset


def build_plan(opts: PipelineOptions) -> Plan:
    """Resolve the options against the preset and list the stages (nothing is run or written)."""
    from bopkd.data.registry import REGISTRY

    dataset = _check_dataset_name(opts.dataset)
    preset = get_preset(opts.preset or default_preset(dataset))
    registered = dataset in REGISTRY
    methods = list(dict.fromkeys(opts.methods or DEFAULT_METHODS))
    from bopkd.losses.kd.registry import get_entry

    methods = [get_entry(m, "--methods").name for m in methods]
    students = list(dict.fromkeys(opts.students or preset.students))
    seeds = list(dict.fromkeys(opts.seeds if opts.seeds else preset.seeds))
    if opts.gpus < 1:
        raise BopkdError(f"--gpus {opts.gpus}: use 1 or more")
    ov = parse_sets(opts.sets)
    run_folder = Path(opts.runs) / f"{dataset}-{preset.name}"
    report_dir = Path(opts.reports) / f"{dataset}-{preset.name}"
    scores_dir = Path(opts.results) / "scores"
    stages: list[Stage] = []

    # 1. data
    if registered:
        from bopkd.data.download import parse_parts

        parts = parse_parts(REGISTRY[dataset], list(preset.parts))
        stages.append(
            Stage(
                "data",
                "data",
                f"download {dataset}: {', '.join(parts)}",
                [],
                {"dataset": dataset, "root": str(opts.root), "parts": parts},
                _run_download,
            )
        )
    else:
        cfg = _synth_config(preset, dataset, opts.root, ov)
        stages.append(
            Stage(
                "data",
                "data",
                f"synthesise {dataset}: {cfg['train']} train + {cfg['test']} test images",
                [],
                {"synth": cfg},
                _run_synth,
            )
        )

    # 2-5. training, each model followed by its prediction and scoring (early numbers, e.g. the teacher's AR)
    metrics = list(ov.score.get("metrics", preset.metrics))
    predict_names: list[str] = []
    score_names: list[str] = []
    modes: dict[str, str] = {}  # model label -> data.mode

    def add_model(train: Stage, role: str, bb: str, m: str, seed: int, tag: str = "") -> None:
        label = "teacher" if role == "teacher" else student_name(bb, m, seed, tag)
        method = result_method(role, bb, m, seed, tag)
        if preset.name != default_preset(dataset):  # distinct files per preset in the shared results folder
            method += f"-{preset.name}"
        pname, sname = f"predict-{label}", f"score-{label}"
        modes[label] = train.config["data"]["mode"]
        stages.append(train)
        stages.append(
            Stage(
                pname,
                "predict",
                f"predict {method} on {dataset} test",
                [train.name, "data"],
                {
                    "method": method,
                    "dataset": dataset,
                    "root": str(opts.root),
                    "results": str(opts.results),
                    "sets": list(preset.predict) + list(ov.predict),
                },
                _run_predict,
            )
        )
        stages.append(
            Stage(
                sname,
                "score",
                f"score {method} ({', '.join(metrics)})",
                [pname, "data"],
                {"metrics": metrics, "root": str(opts.root), "scores": str(scores_dir)},
                _run_score,
            )
        )
        predict_names.append(pname)
        score_names.append(sname)

    t_seed = seeds[0]
    tcfg = _train_config(opts, preset, dataset, "teacher", preset.teacher_backbone, t_seed, "-", ov)
    add_model(
        Stage(
            "teacher",
            "teacher",
            f"teacher {preset.teacher_backbone}, {tcfg['iters']} iterations",
            ["data"],
            hashed_train_config(tcfg),
            _run_train,
            {"full": tcfg},
        ),
        "teacher",
        preset.teacher_backbone,
        "-",
        t_seed,
    )
    # seed-major: every method of a seed before the next seed, so that an interrupted run has paired results
    runs = [(m, seed, None) for seed in seeds for m in methods]
    runs += [(v.method, seed, v) for v in preset.variants if v.method in methods for seed in v.seeds]
    for bb in students:
        for m, seed, variant in runs:
            scfg = _train_config(opts, preset, dataset, "student", bb, seed, m, ov, variant)
            tag = variant.tag if variant is not None else ""
            w = scfg["kd"].get("weight")
            kd_txt = f"kd {m}" + (f" (weight {w:g})" if m != "none" and w is not None else "")
            kd_txt += f", variant {tag}" if tag else ""
            add_model(
                Stage(
                    f"student-{student_name(bb, m, seed, tag)}",
                    "student",
                    f"student {bb}, {kd_txt}, seed {seed}, {scfg['iters']} iterations",
                    ["data"] + (["teacher"] if m != "none" else []),
                    hashed_train_config(scfg),
                    _run_train,
                    {"full": scfg},
                ),
                "student",
                bb,
                m,
                seed,
                tag,
            )

    from bopkd.eval.bop_site import predict_boxes

    notice = predict_boxes(stages, predict_names, modes, opts.detections, dataset, registered)

    # 6. report
    title = f"bopkd: {dataset}, {preset.name} preset"
    data_cfg = stages[0].config
    what = (
        f"synthetic dataset {dataset} ({len(data_cfg['synth']['objects'] or []) or 'all'} objects, "
        f"{data_cfg['synth']['train']} train / {data_cfg['synth']['test']} test images)"
        if "synth" in data_cfg
        else f"BOP dataset {dataset} ({', '.join(data_cfg['parts'])})"
    )
    t, s0 = tcfg, next((st.config for st in stages if st.kind == "student"), None)
    inputs = f"{t['data']['crop_size']} px zoom-in crops" if t["data"]["mode"] == "crop" else "whole images"
    summary = (
        f"Settings: {what}; teacher {t['model']['backbone']} ({t['iters']} iterations, batch {t['batch_size']}); "
        + (
            f"students {', '.join(students)} ({s0['iters']} iterations, batch {s0['batch_size']}), "
            f"methods {', '.join(methods)}, seeds {', '.join(map(str, seeds))}; "
            if s0
            else ""
        )
        + f"inputs: {inputs}. Run folder {run_folder} (settings, checksums and logs of every stage)."
    )
    stages.append(
        Stage(
            "report",
            "report",
            f"report -> {report_dir}",
            [*predict_names, *score_names],
            {
                "out": str(report_dir),
                "results": str(opts.results),
                "scores": str(scores_dir),
                "title": title,
                "summary": summary,
                "predict": predict_names,
                "score": score_names,
            },
            _run_report,
        )
    )
    return Plan(
        opts, preset, dataset, registered, methods, students, seeds, run_folder, report_dir, stages, notice
    )


# ------------------------------------------------------------------------------------------- actions


def _tqdm_factory(desc: str, enabled: bool):
    from tqdm import tqdm

    bars = []

    def make(total: int):
        bar = tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
        bars.append(bar)
        return bar.update

    return make, bars


def _run_synth(ctx: StageContext) -> StageOutput:
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    cfg = SynthConfig.from_dict(ctx.stage.config["synth"])
    # Rebuild when forced, or when this pipeline built it before with other settings.
    force = ctx.forced or (
        ctx.previous is not None and ctx.previous.get("config_hash") != ctx.stage.config_hash
    )
    make, bars = _tqdm_factory(f"synth {cfg.name}", ctx.progress)
    try:
        ds_dir = build_synthetic_dataset(cfg, force=force, log=ctx.log, progress=make)
    finally:
        for b in bars:
            b.close()
    from bopkd.data.registry import DESCRIPTOR_NAME

    return StageOutput([ds_dir / DESCRIPTOR_NAME], {"dataset_dir": str(ds_dir)})


def _run_download(ctx: StageContext) -> StageOutput:
    from bopkd.data.download import download_dataset

    c = ctx.stage.config
    res = download_dataset(
        c["dataset"],
        c["root"],
        c["parts"],
        mirror=ctx.opts.mirror,
        force=ctx.forced,
        progress=ctx.progress,
        echo=ctx.log,
    )
    return StageOutput([r.marker for r in res], {"dataset_dir": str(Path(c["root"]) / c["dataset"])})


def train_dir(run_folder: Path, stage_name: str, fingerprint: str) -> Path:
    return run_folder / "train" / f"{stage_name}-{fingerprint[:10]}"


def _run_train(ctx: StageContext) -> StageOutput:
    from bopkd.train import checkpoint as ckpt
    from bopkd.train.config import build_config, save_config

    full = copy.deepcopy(ctx.stage.params["full"])
    run_dir = train_dir(ctx.run_folder, ctx.stage.name, ctx.fingerprint)
    if ctx.forced and run_dir.exists():
        ctx.log(f"--force: training {ctx.stage.name} again from scratch (removing {run_dir})")
        shutil.rmtree(run_dir)
    full["out"] = str(run_dir)
    full["progress"] = ctx.progress
    if full.get("role") == "student" and full["kd"]["method"] != "none":
        full["kd"]["teacher"] = ctx.dep_info("teacher")["checkpoint"]
    cfg = build_config(base=full)
    last = run_dir / "checkpoints" / ckpt.LAST
    resume = last.is_file()
    if resume:
        ctx.log(f"resuming from {last}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.gpus > 1:
        cfg_path = run_dir / "pipeline_config.yaml"
        save_config(cfg, cfg_path)
        # The options repeat the config's role-defining keys (the student command requires --backbone and
        # its --kd/--teacher options override the config file's).
        who = ["--backbone", cfg.model.backbone]
        if cfg.role == "student":
            who += ["--kd", cfg.kd.method] + (["--teacher", str(cfg.kd.teacher)] if cfg.kd.teacher else [])
        cmd = [sys.executable, "-m", "bopkd", "train", cfg.role, "--config", str(cfg_path), *who]
        _run_subprocess([*cmd, "--resume", "--gpus", str(cfg.gpus)], ctx.log)
    else:
        from bopkd.train.trainer import summary_line, train

        summary = train(cfg, resume=resume)
        ctx.log(summary_line(summary, run_dir))
    final = run_dir / "checkpoints" / ckpt.FINAL
    if not final.is_file():
        raise BopkdError(
            f"{ctx.stage.name}: training ended without {final}; see {ctx.run_folder}/logs/{ctx.stage.name}.log"
        )
    gc.collect()
    return StageOutput([final], {"checkpoint": str(final), "run_dir": str(run_dir)})


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Linux: let the child die with the pipeline (so a killed pipeline leaves no training behind)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_subprocess(cmd: list[str], log: Callable[[str], None]) -> None:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=_set_pdeathsig
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        raise
    if rc != 0:
        raise BopkdError(f"{' '.join(cmd[2:5])} failed with exit status {rc}; see the lines above")


def missing_test_images(root: Path, dataset: str) -> tuple[int, int]:
    """``(images with BOP'19 targets, those whose RGB file is absent)``."""
    from bopkd.data.dataset import BopDataset

    bop = BopDataset(dataset, root)
    keys = sorted({(t.scene_id, t.im_id) for t in bop.targets})
    missing = sum(1 for s, i in keys if not bop.rgb_path(bop.test_split, s, i).is_file())
    return len(keys), missing


def _run_predict(ctx: StageContext) -> StageOutput:
    from bopkd.train.predict import predict

    c = ctx.stage.config
    train_stage = ctx.stage.deps[0]
    checkpoint = ctx.dep_info(train_stage)["checkpoint"]
    sets = list(c["sets"])
    notes = []
    n_img, n_missing = missing_test_images(Path(c["root"]), c["dataset"])
    if n_missing:
        note = (
            f"{n_missing} of the {n_img} test images with BOP'19 targets are absent from {c['root']}/{c['dataset']}: "
            f"poses were estimated on the {n_img - n_missing} present; the scores count the targets of absent "
            f"images as misses, so recalls are at most about {100.0 * (n_img - n_missing) / n_img:.0f} %"
        )
        ctx.log(f"note: {note}")
        notes.append(note)
        sets.append("data.skip_missing_images=true")
    res = predict(
        checkpoint,
        dataset=c["dataset"],
        root=c["root"],
        out=c["results"],
        method=c["method"],
        detections=c.get("detections"),
        device=ctx.opts.device,
        sets=sets,
        progress=ctx.progress,
    )
    ctx.log(
        f"{res.n_estimates} estimates for {res.n_images} images ({res.protocol}, {res.ms_per_image:.1f} ms/image) -> {res.csv}"
    )
    gc.collect()
    return StageOutput(
        [res.csv, res.sidecar],
        {
            "csv": str(res.csv),
            "sidecar": str(res.sidecar),
            "protocol": res.protocol,
            "notes": notes,
            "n_images": res.n_images,
            "n_estimates": res.n_estimates,
        },
    )


def _run_score(ctx: StageContext) -> StageOutput:
    from bopkd.eval.scoring import score_submissions

    c = ctx.stage.config
    csv = Path(ctx.dep_info(ctx.stage.deps[0])["csv"])
    out = score_submissions([csv], root=c["root"], out_dir=c["scores"], metrics=c["metrics"], log=ctx.log)
    ((name, res),) = out.items()
    s = res.get("scores_bop19", {})
    vals = ", ".join(
        f"{k.replace('bop19_average_recall', 'AR').upper()} {v:.4f}"
        for k, v in s.items()
        if v is not None and k.startswith("bop19_average_recall")
    )
    ctx.log(f"{name}: {vals}")
    for n in res.get("notes", []):
        ctx.log(f"note: {n}")
    return StageOutput(
        [Path(p) for p in res["files"]],
        {"result_name": name, "scores": s, "notes": list(res.get("notes", []))},
    )


def _run_report(ctx: StageContext) -> StageOutput:
    from bopkd.report.build import build_report

    c = ctx.stage.config
    csvs = [Path(ctx.dep_info(p)["csv"]) for p in c["predict"]]
    notes: list[str] = [c["summary"]] if c.get("summary") else []
    for p in [*c["predict"], *c["score"]]:
        for n in ctx.dep_info(p).get("notes", []):
            if n not in notes:
                notes.append(n)
    rep = build_report(c["results"], c["out"], c["scores"], c["title"], csvs=csvs, notes=notes)
    ctx.log(rep.files["table.md"].read_text())
    return StageOutput(sorted(rep.files.values()), {"files": {k: str(v) for k, v in rep.files.items()}})


# ------------------------------------------------------------------------------------------- records


def record_path(run_folder: Path, name: str) -> Path:
    return run_folder / "stages" / f"{name}.json"


def load_record(run_folder: Path, name: str) -> dict | None:
    p = record_path(run_folder, name)
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None  # unreadable: the stage simply runs again
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def _input_checksums(stage: Stage, records: dict[str, dict]) -> dict[str, dict[str, str]]:
    return {d: {p: e["sha256"] for p, e in records[d]["outputs"].items()} for d in stage.deps}


def fingerprint(stage: Stage, inputs: dict) -> str:
    return canonical_hash({"config": stage.config_hash, "inputs": inputs})


def assess(
    stage: Stage, run_folder: Path, records: dict[str, dict], pending: dict[str, str], forced: bool
) -> StageStatus:
    """Whether ``stage`` is done or must (re)run, and why. ``records`` holds the current records of the
    stages already assessed as done; ``pending`` the names of stages that will run, with a reason."""
    waiting = [d for d in stage.deps if d in pending]
    if waiting:
        return StageStatus(stage, "run", f"after {waiting[0]}")
    inputs = _input_checksums(stage, records)
    fp = fingerprint(stage, inputs)
    rec = load_record(run_folder, stage.name)
    resumable = (
        stage.kind in ("teacher", "student")
        and (train_dir(run_folder, stage.name, fp) / "checkpoints" / "last.pt").is_file()
    )
    state = "resume" if resumable and not forced else "run"
    if forced:
        return StageStatus(stage, "run", "forced (--force)", fp)
    if rec is None:
        return StageStatus(
            stage, state, "interrupted: continues from its checkpoint" if resumable else "not run yet", fp
        )
    if rec.get("config_hash") != stage.config_hash:
        return StageStatus(stage, state, "settings changed", fp)
    if rec.get("fingerprint") != fp:
        old = rec.get("inputs", {})
        changed = [d for d in stage.deps if old.get(d) != inputs.get(d)]
        return StageStatus(stage, state, f"input changed: {', '.join(changed) or '?'}", fp)
    for p, e in rec.get("outputs", {}).items():
        if not entry_intact(Path(p), e):
            why = "missing" if not Path(p).exists() else "changed"
            return StageStatus(stage, state, f"output {why}: {p}", fp)
    return StageStatus(stage, "done", f"done {rec.get('finished', '')[:19].replace('T', ' ')}", fp)


def forced_names(plan: Plan, force: list[str]) -> set[str]:
    """Stage names selected by ``--force`` values (names, kinds, globs, ``all``)."""
    names = [s.name for s in plan.stages]
    out: set[str] = set()
    for f in force:
        for item in [x.strip() for x in f.split(",") if x.strip()]:
            if item == "all":
                out.update(names)
                continue
            hit = {s.name for s in plan.stages if s.kind == item or fnmatch.fnmatchcase(s.name, item)}
            hit |= {n for n in names if n == item}
            if not hit:
                raise BopkdError(
                    f"--force {item!r} matches no stage: use a stage name ({', '.join(names[:4])}, ...), a kind "
                    f"({', '.join(STAGE_KINDS)}), a glob like 'student-*-ot-*', or all (see --dry-run)"
                )
            out |= hit
    return out


def assess_plan(plan: Plan, forced: set[str]) -> list[StageStatus]:
    """The status of every stage without running anything (``--dry-run``)."""
    records: dict[str, dict] = {}
    pending: dict[str, str] = {}
    out = []
    for st in plan.stages:
        s = assess(st, plan.run_folder, records, pending, st.name in forced)
        if s.state == "done":
            records[st.name] = load_record(plan.run_folder, st.name)  # type: ignore[assignment]
        else:
            pending[st.name] = s.reason
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------- locks


class RunLock:
    """Exclusive ``fcntl.flock`` locks on files; the holder's pid and start time are written into them.

    Raises :class:`BopkdError` naming the other run's pid when a lock is held by a live run. A lock whose
    recorded holder is dead is still held by that run's forked children (DataLoader workers share the
    open lock file and leave within seconds of their parent's death): then it waits up to
    ``orphan_wait_s`` for them.
    """

    def __init__(self, paths: list[Path], orphan_wait_s: float = 60.0):
        self.paths = paths
        self.orphan_wait_s = orphan_wait_s
        self.files: list = []

    @staticmethod
    def _holder(f) -> dict:
        f.seek(0)
        try:
            info = json.loads(f.read().strip() or "{}")
        except json.JSONDecodeError:
            info = {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _alive(pid) -> bool:
        if not isinstance(pid, int) or pid <= 0:
            return True  # unknown: assume a live run
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _acquire(self, p: Path):
        p.parent.mkdir(parents=True, exist_ok=True)
        f = open(p, "a+")  # noqa: SIM115 - kept open while the lock is held
        deadline = time.monotonic() + self.orphan_wait_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except OSError:
                info = self._holder(f)
            pid = info.get("pid")
            if self._alive(pid) or time.monotonic() > deadline:
                f.close()
                who = f"pid {pid}, started {info.get('started', '?')}" if pid else "pid unknown"
                what = "another bopkd run-pipeline" if self._alive(pid) else "processes left by a killed run"
                raise BopkdError(
                    f"{p.parent} is in use by {what} ({who}, lock {p}): wait for it to finish or stop it, then rerun"
                )
            time.sleep(0.5)

    def __enter__(self) -> RunLock:
        try:
            for p in self.paths:
                f = self._acquire(p)
                f.seek(0)
                f.truncate()
                f.write(json.dumps({"pid": os.getpid(), "started": _now(), "argv": sys.argv}))
                f.flush()
                self.files.append(f)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files:
            with contextlib.suppress(OSError):
                f.close()  # closing releases the flock
        self.files = []


# ------------------------------------------------------------------------------------------- logging


class _Tee(io.TextIOBase):
    """A text stream writing to the console stream and, line by line, to a log file.

    Progress bars redraw a line with carriage returns; the log gets only the last state of such a line
    and no ANSI escape codes.
    """

    def __init__(self, console, logfile, echo: bool = True):
        self.console = console
        self.logfile = logfile
        self.echo = echo
        self._buf = ""

    def write(self, s: str) -> int:
        if self.echo:
            self.console.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            line = _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
            self.logfile.write(line + "\n")
        self.logfile.flush()
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.console.flush()
        self.logfile.flush()

    def close_line(self) -> None:
        if self._buf:
            self.logfile.write(_ANSI.sub("", self._buf.rstrip("\r").rsplit("\r", 1)[-1]) + "\n")
            self._buf = ""
            self.logfile.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.console, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def stage_log(path: Path, echo: bool = True) -> Iterator[Callable[[str], None]]:
    """Send everything printed (stdout, stderr, progress bars) to the console and to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"===== {_now()} pid {os.getpid()}\n")
        out, err = _Tee(sys.stdout, f, echo), _Tee(sys.stderr, f, echo)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):

            def log(msg: str) -> None:
                print(msg, flush=True)

            try:
                yield log
            except BaseException as e:
                if not isinstance(e, (KeyboardInterrupt, BopkdError)):
                    import traceback

                    f.write(traceback.format_exc())
                else:
                    f.write(f"stopped: {type(e).__name__}: {e}\n")
                raise
            finally:
                out.close_line()
                err.close_line()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


# ------------------------------------------------------------------------------------------- running


def _plan_table(plan: Plan, statuses: list[StageStatus]):
    from rich.table import Table

    t = Table(title=f"bopkd run-pipeline {plan.dataset} (preset {plan.preset.name}) — {plan.run_folder}")
    for col in ("#", "stage", "what", "status"):
        t.add_column(col, justify="right" if col == "#" else "left")
    for i, s in enumerate(statuses, 1):
        color = {"done": "green", "resume": "yellow"}.get(s.state, "cyan")
        label = {"done": "done", "resume": "resume", "run": "run"}[s.state]
        t.add_row(str(i), s.stage.name, s.stage.title, f"[{color}]{label}[/{color}]: {s.reason}")
    return t


def lock_paths(opts: PipelineOptions) -> list[Path]:
    """The run folder's lock and the results folder's lock for this dataset."""
    _check_dataset_name(opts.dataset)
    preset = get_preset(opts.preset or default_preset(opts.dataset))
    return [
        Path(opts.runs) / f"{opts.dataset}-{preset.name}" / ".lock",
        Path(opts.results) / f".bopkd-{opts.dataset}.lock",
    ]


def run_pipeline(opts: PipelineOptions, console=None) -> PipelineResult:
    """Plan, then run every stage that is not done (see the module docstring)."""
    from rich.console import Console

    console = console or Console()
    t0 = time.perf_counter()
    if opts.dry_run:
        plan = build_plan(opts)
        statuses = assess_plan(plan, forced_names(plan, opts.force))
        console.print(_plan_table(plan, statuses))
        if plan.notice:
            console.print(plan.notice, highlight=False, soft_wrap=True)
        todo = [s for s in statuses if s.state != "done"]
        console.print(
            f"{len(statuses) - len(todo)} of {len(statuses)} stages done; {len(todo)} would run (dry run: nothing was run)"
        )
        return PipelineResult(
            plan.run_folder,
            plan.report_dir,
            [],
            [s.stage.name for s in statuses if s.state == "done"],
            time.perf_counter() - t0,
            {},
        )
    # Lock first (a second run stops at once), then plan.
    with RunLock(lock_paths(opts)):
        plan = build_plan(opts)
        forced = forced_names(plan, opts.force)
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
        plan.run_folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            plan.run_folder / "pipeline.json",
            {
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
                "updated": _now(),
            },
        )
        console.print(_plan_table(plan, assess_plan(plan, forced)))
        console.print(
            f"torch threads: {threads} (of {os.cpu_count()} cores); device {opts.device}; logs in {plan.run_folder / 'logs'}",
            highlight=False,
        )
        if plan.notice:
            console.print(plan.notice, highlight=False, soft_wrap=True)
        records: dict[str, dict] = {}
        executed, skipped = [], []
        plog = plan.run_folder / "logs" / "pipeline.log"
        plog.parent.mkdir(parents=True, exist_ok=True)

        def event(msg: str) -> None:
            with open(plog, "a", encoding="utf-8") as f:
                f.write(f"{_now()} {msg}\n")

        event(f"start pid {os.getpid()}: {' '.join(sys.argv)}")
        if plan.notice:
            event(plan.notice)
        n = len(plan.stages)
        try:
            for i, st in enumerate(plan.stages, 1):
                status = assess(st, plan.run_folder, records, {}, st.name in forced)
                if status.state == "done":
                    records[st.name] = load_record(plan.run_folder, st.name)  # type: ignore[assignment]
                    skipped.append(st.name)
                    console.print(f"[green]✓[/green] [{i}/{n}] {st.name}: already done", highlight=False)
                    continue
                console.rule(f"[{i}/{n}] {st.name}: {st.title}  ({status.reason})")
                event(f"run {st.name} ({status.reason})")
                previous = load_record(plan.run_folder, st.name)
                if st.name in forced:
                    record_path(plan.run_folder, st.name).unlink(missing_ok=True)
                started, ts = _now(), time.perf_counter()
                with stage_log(plan.run_folder / "logs" / f"{st.name}.log") as log:
                    ctx = StageContext(
                        st,
                        {d: records[d] for d in st.deps},
                        status.fingerprint or "",
                        plan.run_folder,
                        st.name in forced,
                        previous,
                        progress,
                        log,
                        opts,
                    )
                    out = st.action(ctx)
                seconds = time.perf_counter() - ts
                rec = {
                    "version": RECORD_VERSION,
                    "stage": st.name,
                    "kind": st.kind,
                    "title": st.title,
                    "config_hash": st.config_hash,
                    "fingerprint": status.fingerprint,
                    "config": st.config,
                    "inputs": _input_checksums(st, records),
                    "outputs": {str(p): file_entry(Path(p)) for p in out.files},
                    "info": out.info,
                    "started": started,
                    "finished": _now(),
                    "seconds": round(seconds, 3),
                    "pid": os.getpid(),
                }
                atomic_write_json(record_path(plan.run_folder, st.name), rec)
                records[st.name] = rec
                executed.append(st.name)
                event(f"done {st.name} in {seconds:.1f} s")
                console.print(
                    f"[green]✓[/green] [{i}/{n}] {st.name} done in {seconds:.1f} s", highlight=False
                )
        except KeyboardInterrupt:
            event("interrupted (Ctrl-C)")
            raise
        except BaseException as e:
            event(f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise
        finally:
            torch.set_num_threads(threads_before)
        total = time.perf_counter() - t0
        event(f"finished: {len(executed)} stages run, {len(skipped)} already done, {total:.1f} s")
        return PipelineResult(plan.run_folder, plan.report_dir, executed, skipped, total, records)
