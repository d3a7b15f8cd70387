"""Which stages a pipeline preset and its options produce, as data (nothing is run or written here).

The stages, in order:

1. ``data``: download the BOP parts of a registered dataset (:func:`bopkd.data.download.download_dataset`)
   or build a synthetic one (:func:`bopkd.data.synth.build_synthetic_dataset`);
2. ``teacher``: train the teacher (:func:`bopkd.train.command.train`);
3. ``student-<backbone>-<method>[-<variant>]-s<seed>``: train each student with each distillation method
   and seed (``none`` is the direct student and does not depend on the teacher), then each variant of the
   preset;
4. ``predict-<model>``: write each model's BOP'19 CSV into the results folder
   (:func:`bopkd.infer.predict.predict`), named ``bopkd-<method>-<backbone>-s<seed>[-<preset>][-oracle-gt-boxes]_<dataset>-test.csv``
   (``-<preset>`` when it is not the dataset's default preset; the method in the characters the BOP site
   accepts, ``fkd+ot`` -> ``fkdot``; ``-oracle-gt-boxes`` when crop-mode models predict on ground-truth
   boxes, i.e. without ``--detections``);
5. ``score-<model>``: score it (:func:`bopkd.eval.scoring.score_submissions`) into ``results/scores/<name>/``;
6. with ``--family dense|both`` (:mod:`bopkd.pipeline.dense_plan`): ``teacher-dense`` and
   ``student-dense-<backbone>-<method>-s<seed>`` with their predict and score stages, after the sparse ones;
7. ``report``: the comparison report (:func:`bopkd.report.build.build_report`) in ``reports/<dataset>-<preset>/``.

Each model's training stage is followed by its predict and score stages (early numbers, e.g. the
teacher's AR). A training stage's settings are its full :class:`~bopkd.train.config.RunConfig` as
:func:`hashed_train_config` writes it; the stages' actions are :data:`bopkd.pipeline.stages.ACTIONS`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

from bopkd.config import lookup, merge_into, pop_path, to_dict
from bopkd.errors import BopkdError
from bopkd.losses.kd.stored import canonical_options
from bopkd.pipeline import stages as actions
from bopkd.pipeline.engine import Stage
from bopkd.pipeline.options import Overrides, PipelineOptions, families, parse_sets
from bopkd.pipeline.presets import DEFAULT_METHODS, PipelinePreset, Variant, default_preset, get_preset
from bopkd.train.dense_config import DenseConfig

#: The kinds of stage a plan has, in the order ``--force``'s message names them.
STAGE_KINDS = ("data", "teacher", "student", "predict", "score", "report")
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
    "family": "sparse",
    "dense": to_dict(DenseConfig()),
}


# ------------------------------------------------------------------------------------------- settings hash


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


def kd_entry(method: str, source: str, family: str = "sparse"):
    """The registry entry of a distillation method of ``family`` (:mod:`bopkd.losses.kd.registry`)."""
    from bopkd.losses.kd.registry import get_entry

    if family == "sparse":
        return get_entry(method, source)
    try:
        return get_entry(method, source, family=family)
    except TypeError:  # a registry without families
        raise BopkdError(f"{source}: this bopkd has no distillation methods of the {family} family") from None


def recorded_kd_section(kd: dict, family: str = "sparse") -> dict:
    """A training config's ``kd`` section in the form stage records of version 1 hash it.

    The weight lives in the method's options (at the registry entry's ``weight_key``: ``options.weight``,
    ``options.ot.weight`` for ``fkd+ot``); the recorded runs had it as a key of its own. This returns
    ``{method, teacher, weight: W, options: <the options without the weight, a mapping left empty by it
    dropped>}`` with ``W`` a float (None for ``none``), which keeps the settings of recorded runs valid.
    Options whose default changed are in :func:`bopkd.losses.kd.stored.canonical_options`'s form.
    """
    entry = kd_entry(kd.get("method", "none"), "kd.method", family)
    options = canonical_options(entry.name, kd.get("options"), family)
    weight = None
    if entry.weight_key is not None:
        weight = pop_path(options, tuple(entry.weight_key))
        weight = entry.default_weight() if weight is None else float(weight)
    return {
        "method": kd.get("method", "none"),
        "teacher": kd.get("teacher"),
        "weight": weight,
        "options": options,
    }


def hashed_train_config(cfg: dict) -> dict:
    """A training config as hashed: the ``kd`` section as :func:`recorded_kd_section` writes it, volatile
    keys dropped, and keys of :data:`NEUTRAL_TRAIN_DEFAULTS` dropped while they hold their neutral value."""
    cfg = dict(cfg)
    if isinstance(cfg.get("kd"), dict):
        cfg["kd"] = recorded_kd_section(cfg["kd"], str(cfg.get("family") or "sparse"))
    neutral = tuple(k for k, v in NEUTRAL_TRAIN_DEFAULTS.items() if lookup(cfg, k.split("."), KeyError) == v)
    return _drop_keys(cfg, VOLATILE_TRAIN_KEYS + neutral)


# ------------------------------------------------------------------------------------------- names


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


def check_dataset_name(dataset: str) -> str:
    """``dataset`` if it is letters and digits (BOP result file names), else a one-line error."""
    if not dataset or not re.fullmatch(r"[A-Za-z0-9]+", dataset):
        raise BopkdError(
            f"dataset name {dataset!r}: use letters and digits only (BOP result files are named METHOD_DATASET-SPLIT.csv)"
        )
    return dataset


def run_folder_name(opts: PipelineOptions) -> str:
    """``<dataset>-<preset>``: the name of the run's folders under ``--runs`` and ``--reports``."""
    check_dataset_name(opts.dataset)
    return f"{opts.dataset}-{get_preset(opts.preset or default_preset(opts.dataset)).name}"


# ------------------------------------------------------------------------------------------- the plan


@dataclass
class _Resolved:
    """The options resolved against the preset."""

    options: PipelineOptions
    preset: PipelinePreset
    dataset: str
    registered: bool
    methods: list[str]
    students: list[str]
    seeds: list[int]


@dataclass
class Plan(_Resolved):
    """The resolved settings and the ordered stages."""

    run_folder: Path
    report_dir: Path
    stages: list[Stage]
    notice: str | None = None  # said at the start of a run (GT-box results on a BOP dataset)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


@dataclass
class _Planner(_Resolved):
    """The options resolved against the preset, and the stages planned so far."""

    ov: Overrides
    metrics: list[str]
    families: list[str] = field(default_factory=lambda: ["sparse"])
    stages: list[Stage] = field(default_factory=list)
    modes: dict[str, str] = field(default_factory=dict)  # model label -> data.mode

    @property
    def run_folder(self) -> Path:
        return Path(self.options.runs) / f"{self.dataset}-{self.preset.name}"

    @property
    def report_dir(self) -> Path:
        return Path(self.options.reports) / f"{self.dataset}-{self.preset.name}"

    @property
    def scores_dir(self) -> Path:
        return Path(self.options.results) / "scores"

    def names(self, kind: str) -> list[str]:
        return [s.name for s in self.stages if s.kind == kind]


def _stage(name: str, kind: str, title: str, deps: list[str], config: dict, **kw) -> Stage:
    """A stage whose action (and resume file) is its kind's in :mod:`bopkd.pipeline.stages`."""
    return Stage(
        name,
        kind,
        title,
        deps,
        config,
        actions.ACTIONS[kind],
        resume_file=actions.RESUME_FILES.get(kind),
        **kw,
    )


def _resolve(opts: PipelineOptions) -> _Planner:
    from bopkd.data.registry import DATASETS
    from bopkd.losses.kd.registry import get_entry

    dataset = check_dataset_name(opts.dataset)
    preset = get_preset(opts.preset or default_preset(dataset))
    methods = list(dict.fromkeys(opts.methods or DEFAULT_METHODS))
    methods = [get_entry(m, "--methods").name for m in methods]
    if opts.gpus < 1:
        raise BopkdError(f"--gpus {opts.gpus}: use 1 or more")
    ov = parse_sets(opts.sets)
    fams = families(opts.family, preset.family)
    return _Planner(
        opts,
        preset,
        dataset,
        dataset in DATASETS,
        methods,
        students=list(dict.fromkeys(opts.students or preset.students)),
        seeds=list(dict.fromkeys(opts.seeds if opts.seeds else preset.seeds)),
        ov=ov,
        metrics=list(ov.score.get("metrics", preset.metrics)),
        families=fams,
    )


def build_plan(opts: PipelineOptions) -> Plan:
    """Resolve the options against the preset and list the stages (nothing is run or written)."""
    from bopkd.eval.bop_site import predict_boxes
    from bopkd.pipeline.dense_plan import dense_stages

    p = _resolve(opts)
    p.stages.append(_data_stage(p))
    teacher_cfg = dense_cfg = None
    if "sparse" in p.families:
        teacher_cfg = _teacher_stages(p)
        _student_stages(p)
    if "dense" in p.families:
        dense_cfg = dense_stages(p)
    notice = predict_boxes(p.stages, p.names("predict"), p.modes, opts.detections, p.dataset, p.registered)
    p.stages.append(_report_stage(p, teacher_cfg, dense_cfg))
    return Plan(
        opts,
        p.preset,
        p.dataset,
        p.registered,
        p.methods,
        p.students,
        p.seeds,
        p.run_folder,
        p.report_dir,
        p.stages,
        notice,
    )


def _data_stage(p: _Planner) -> Stage:
    if p.registered:
        from bopkd.data.download import parse_parts
        from bopkd.data.registry import DATASETS

        parts = parse_parts(DATASETS[p.dataset], list(p.preset.parts))
        config = {"dataset": p.dataset, "root": str(p.options.root), "parts": parts}
        return _stage("data", "data", f"download {p.dataset}: {', '.join(parts)}", [], config)
    cfg = _synth_config(p.preset, p.dataset, p.options.root, p.ov)
    title = f"synthesise {p.dataset}: {cfg['train']} train + {cfg['test']} test images"
    return _stage("data", "data", title, [], {"synth": cfg})


def _synth_config(preset: PipelinePreset, dataset: str, root: Path, ov: Overrides) -> dict:
    from bopkd.data.synth import synth_config_from_dict

    d = preset.copy_section("synth")
    d.update(ov.synth)
    d["name"] = dataset
    d["root"] = str(root)
    return synth_config_from_dict(d, source=f"pipeline preset {preset.name} and --set synth.*").to_dict()


def _add_model(p: _Planner, train: Stage, role: str, bb: str, m: str, seed: int, tag: str = "") -> None:
    """Add a training stage and the predict and score stages of the model it trains."""
    label = "teacher" if role == "teacher" else student_name(bb, m, seed, tag)
    add_model_stages(p, train, label, result_method(role, bb, m, seed, tag))


def add_model_stages(p: _Planner, train: Stage, label: str, method: str) -> None:
    """Add ``train`` and the stages ``predict-<label>`` and ``score-<label>`` of its model, whose BOP
    method name is ``method`` (plus ``-<preset>`` when the preset is not the dataset's default)."""
    if p.preset.name != default_preset(p.dataset):  # distinct files per preset in the shared results folder
        method += f"-{p.preset.name}"
    pname, sname = f"predict-{label}", f"score-{label}"
    p.modes[label] = train.config["data"]["mode"]
    predict = {
        "method": method,
        "dataset": p.dataset,
        "root": str(p.options.root),
        "results": str(p.options.results),
        "sets": list(p.preset.predict) + list(p.ov.predict),
    }
    score = {"metrics": p.metrics, "root": str(p.options.root), "scores": str(p.scores_dir)}
    p.stages += [
        train,
        _stage(pname, "predict", f"predict {method} on {p.dataset} test", [train.name, "data"], predict),
        _stage(sname, "score", f"score {method} ({', '.join(p.metrics)})", [pname, "data"], score),
    ]


def _teacher_stages(p: _Planner) -> dict:
    """Add the teacher's stages; return its full training config."""
    bb, seed = p.preset.teacher_backbone, p.seeds[0]
    cfg = train_config(p.options, p.preset, p.dataset, "teacher", bb, seed, "-", p.ov)
    title = f"teacher {bb}, {cfg['iters']} iterations"
    train = _stage("teacher", "teacher", title, ["data"], hashed_train_config(cfg), params={"full": cfg})
    _add_model(p, train, "teacher", bb, "-", seed)
    return cfg


def _student_stages(p: _Planner) -> None:
    """Add each student's stages: seed-major (every method of a seed before the next seed, so that an
    interrupted run has paired results), then the preset's variants."""
    runs: list[tuple[str, int, Variant | None]] = [(m, seed, None) for seed in p.seeds for m in p.methods]
    runs += [(v.method, seed, v) for v in p.preset.variants if v.method in p.methods for seed in v.seeds]
    for bb in p.students:
        for m, seed, variant in runs:
            cfg = train_config(p.options, p.preset, p.dataset, "student", bb, seed, m, p.ov, variant)
            hashed = hashed_train_config(cfg)
            tag = variant.tag if variant is not None else ""
            w = hashed["kd"]["weight"]
            kd_txt = f"kd {m}" + (f" (weight {w:g})" if m != "none" and w is not None else "")
            kd_txt += f", variant {tag}" if tag else ""
            train = _stage(
                f"student-{student_name(bb, m, seed, tag)}",
                "student",
                f"student {bb}, {kd_txt}, seed {seed}, {cfg['iters']} iterations",
                ["data"] + (["teacher"] if m != "none" else []),
                hashed,
                params={"full": cfg},
            )
            _add_model(p, train, "student", bb, m, seed, tag)


def _report_summary(p: _Planner, teacher: dict | None, dense: dict | None = None) -> str:
    """The settings line at the top of the report (a second sentence for the dense family's runs)."""
    from bopkd.pipeline.dense_plan import dense_summary

    if teacher is None:
        return f"Settings: {_dataset_text(p)}. {dense_summary(p, dense)}"
    text = _sparse_summary(p, teacher)
    return text if dense is None else f"{text} {dense_summary(p, dense)}"


def _dataset_text(p: _Planner) -> str:
    data_cfg = p.stages[0].config
    return (
        f"synthetic dataset {p.dataset} ({len(data_cfg['synth']['objects'] or []) or 'all'} objects, "
        f"{data_cfg['synth']['train']} train / {data_cfg['synth']['test']} test images)"
        if "synth" in data_cfg
        else f"BOP dataset {p.dataset} ({', '.join(data_cfg['parts'])})"
    )


def _sparse_summary(p: _Planner, teacher: dict) -> str:
    """The sparse family's settings line (the report's first line before the dense family existed)."""
    what = _dataset_text(p)
    t = teacher
    s0 = next(
        (
            st.config
            for st in p.stages
            if st.kind == "student" and st.config.get("family", "sparse") == "sparse"
        ),
        None,
    )
    inputs = f"{t['data']['crop_size']} px zoom-in crops" if t["data"]["mode"] == "crop" else "whole images"
    return (
        f"Settings: {what}; teacher {t['model']['backbone']} ({t['iters']} iterations, batch {t['batch_size']}); "
        + (
            f"students {', '.join(p.students)} ({s0['iters']} iterations, batch {s0['batch_size']}), "
            f"methods {', '.join(p.methods)}, seeds {', '.join(map(str, p.seeds))}; "
            if s0
            else ""
        )
        + f"inputs: {inputs}. Run folder {p.run_folder} (settings, checksums and logs of every stage)."
    )


def _report_stage(p: _Planner, teacher: dict | None, dense: dict | None = None) -> Stage:
    predict_names, score_names = p.names("predict"), p.names("score")
    config = {
        "out": str(p.report_dir),
        "results": str(p.options.results),
        "scores": str(p.scores_dir),
        "title": f"bopkd: {p.dataset}, {p.preset.name} preset",
        "summary": _report_summary(p, teacher, dense),
        "predict": predict_names,
        "score": score_names,
    }
    return _stage("report", "report", f"report -> {p.report_dir}", [*predict_names, *score_names], config)


# ------------------------------------------------------------------------------------------- training configs


def student_kd(
    preset: PipelinePreset, method: str, variant: Variant | None = None, family: str = "sparse"
) -> dict:
    """A student's ``kd`` section: the method, a placeholder teacher (the teacher stage's checkpoint, known
    once it ran; it enters the settings as its checksum) and the method's options: the preset's
    ``kd_options``, a variant's merged over them, and the method's default weight where neither gives one.
    """
    entry = kd_entry(method, "--methods", family)
    options = copy.deepcopy(preset.kd_options.get(method, {}))
    if variant is not None:
        merge_into(options, copy.deepcopy(variant.options), f"variant {variant.tag}")
    if entry.weight_key is not None and lookup(options, entry.weight_key) is None:
        merge_into(options, entry.weight_options(entry.default_weight()), f"the {method} default")
    kd = {"method": method, "teacher": None if method == "none" else "(the teacher stage's checkpoint)"}
    if options:
        kd["options"] = options
    return kd


def train_config(
    plan_opts: PipelineOptions,
    preset: PipelinePreset,
    dataset: str,
    role: str,
    backbone: str,
    seed: int,
    method: str,
    ov: Overrides,
    variant: Variant | None = None,
    family: str = "sparse",
) -> dict:
    """The full training config (plain dict) of one run, validated by :func:`bopkd.train.config.build_config`:
    the preset's ``train`` and role sections, the run's identity, :func:`student_kd` for a student, then
    the ``--set`` overrides of its scope (``train``, ``teacher``, ``teacher@FAMILY``, ``student``,
    ``student@SEL``). ``family``: the run's network family (the dense runs pass a preset whose sections
    are the dense family's, :mod:`bopkd.pipeline.dense_plan`)."""
    from bopkd.train.config import build_config

    options: dict = {}
    merge_into(options, preset.copy_section("train"), "preset")
    merge_into(options, preset.copy_section(role), "preset")
    identity = {
        "role": role,
        "data": {"dataset": dataset, "root": str(plan_opts.root)},
        "model": {"backbone": backbone},
        "seed": seed,
        "device": plan_opts.device,
        "gpus": plan_opts.gpus,
    }
    merge_into(options, identity, "options")
    if role == "student":
        options["kd"] = student_kd(preset, method, variant, family)
    sets = list(ov.train)
    if role == "teacher":
        sets += list(ov.teacher) + [s for fam, s in ov.teacher_at if fam == family]
    if role == "student":
        sets += [s for sel, s in ov.student if sel is None or sel in (backbone, method, family)]
    try:
        cfg = build_config(preset=preset.train_preset, options=options, overrides=sets)
    except BopkdError as e:
        raise BopkdError(f"{role} {backbone}: {e}") from None
    return to_dict(cfg)
