"""The stages of the dense (ZebraPose-style) family in a pipeline plan (``--family dense|both``).

The dense family trains :class:`bopkd.models.dense.DensePoseNet` networks (``family: dense`` in the run
config) with the preset's ``dense`` section (:mod:`bopkd.pipeline.presets`): a teacher, then each dense
student with each distillation method and seed. Stage names carry ``dense``: ``teacher-dense``,
``student-dense-<backbone>-<method>-s<seed>``, ``predict-teacher-dense``, ``predict-dense-<backbone>-<method>-s<seed>``
(and their ``score-`` stages); BOP method names ``bopkd-dense-teacher-<backbone>-s<seed>`` and
``bopkd-dense-<method>-<backbone>-s<seed>`` (``-<preset>`` appended as for the sparse family). Their data
stage and report stage are the sparse family's: one dataset, one report with both families side by side.
The preset's ``variants`` are the sparse family's; the dense section's ``variants`` (a list of
:class:`~bopkd.pipeline.presets.Variant`) are the dense family's own extra rows
(``student-dense-<backbone>-<method>-<tag>-s<seed>``, ``bopkd-dense-<method>-<tag>-<backbone>-s<seed>``).
"""

from __future__ import annotations

import dataclasses

from bopkd.config import merge_into
from bopkd.errors import BopkdError
from bopkd.pipeline.plan import (
    _stage,
    add_model_stages,
    hashed_train_config,
    kd_entry,
    result_method,
    student_name,
    train_config,
)
from bopkd.pipeline.presets import PipelinePreset

#: The dense teacher's stage name (its students depend on it).
DENSE_TEACHER = "teacher-dense"


def dense_section(preset: PipelinePreset) -> dict:
    """The preset's ``dense`` section, checked (a one-line error when it has none or lacks a key)."""
    d = preset.copy_section("dense")
    if not d:
        raise BopkdError(
            f"pipeline preset {preset.name} has no dense settings: use --family sparse or a preset with a dense section"
        )
    missing = [k for k in ("teacher_backbone", "students", "out_size") if k not in d]
    if missing:
        raise BopkdError(f"pipeline preset {preset.name}: its dense section lacks {', '.join(missing)}")
    return d


def dense_preset(preset: PipelinePreset) -> PipelinePreset:
    """``preset`` with the dense family's training sections: its ``train`` section plus ``family: dense``,
    the crop size ``2 * out_size`` (crop mode) and the dense ``train`` overrides; the dense ``teacher`` and
    ``student`` sections replace the sparse ones; the dense ``kd_options`` (default none) replace the
    sparse ones."""
    d = dense_section(preset)
    out = int(d["out_size"])
    train = preset.copy_section("train")
    family = {"family": "dense", "dense": {"out_size": out}, "data": {"mode": "crop", "crop_size": 2 * out}}
    merge_into(train, family, f"preset {preset.name} (dense)")
    merge_into(train, dict(d.get("train", {})), f"preset {preset.name} (dense.train)")
    return dataclasses.replace(
        preset,
        train=train,
        teacher=dict(d.get("teacher", {})),
        student=dict(d.get("student", {})),
        teacher_backbone=str(d["teacher_backbone"]),
        students=tuple(d["students"]),
        kd_options=dict(d.get("kd_options", {})),
    )


def dense_seeds(p) -> list[int]:
    """The dense students' seeds: ``--seeds`` when given, else the dense section's ``seeds``, else the preset's
    (the dense teacher uses the first)."""
    if p.options.seeds:
        return list(p.seeds)
    return [int(s) for s in dense_section(p.preset).get("seeds", p.seeds)]


def dense_method(role: str, backbone: str, method: str, seed: int, tag: str = "") -> str:
    """BOP method name of a dense model: ``bopkd-dense-teacher-darknettinyh-s0``, ``bopkd-dense-ot-tinycpu-s0``
    (``fkd+ot`` -> ``fkdot``; :func:`bopkd.pipeline.plan.result_method`), a variant's
    ``bopkd-dense-ot-noposition-tinycpu-s0``."""
    return result_method(role, backbone, method, seed, tag).replace("bopkd-", "bopkd-dense-", 1)


def dense_stages(p) -> dict:
    """Add the dense family's training, predict and score stages to the planner ``p``
    (:class:`bopkd.pipeline.plan._Planner`); return the dense teacher's full training config."""
    preset = dense_preset(p.preset)
    for m in p.methods:
        kd_entry(m, "--methods", "dense")
    seeds = dense_seeds(p)
    bb, seed0 = preset.teacher_backbone, seeds[0]
    cfg = train_config(p.options, preset, p.dataset, "teacher", bb, seed0, "-", p.ov, family="dense")
    title = f"dense teacher {bb}, {cfg['iters']} iterations"
    train = _stage(DENSE_TEACHER, "teacher", title, ["data"], hashed_train_config(cfg), params={"full": cfg})
    add_model_stages(p, train, DENSE_TEACHER, dense_method("teacher", bb, "-", seed0))
    runs = [(m, seed, None) for seed in seeds for m in p.methods]
    variants = [v for v in dense_section(p.preset).get("variants", ()) if v.method in p.methods]
    runs += [(v.method, seed, v) for v in variants for seed in v.seeds]
    for sb in preset.students:
        for m, seed, variant in runs:
            scfg = train_config(p.options, preset, p.dataset, "student", sb, seed, m, p.ov, variant, "dense")
            tag = variant.tag if variant is not None else ""
            label = "dense-" + student_name(sb, m, seed, tag)
            train = _stage(
                f"student-{label}",
                "student",
                f"dense student {sb}, kd {m}{', variant ' + tag if tag else ''}, seed {seed}, "
                f"{scfg['iters']} iterations",
                ["data"] + ([DENSE_TEACHER] if m != "none" else []),
                hashed_train_config(scfg),
                params={"full": scfg, "teacher": DENSE_TEACHER},
            )
            add_model_stages(p, train, label, dense_method("student", sb, m, seed, tag))
    return cfg


def dense_summary(p, teacher: dict | None) -> str:
    """The dense family's sentence of the report's settings line."""
    if teacher is None:
        return ""
    preset = dense_preset(p.preset)
    s0 = next(
        (st.config for st in p.stages if st.kind == "student" and st.config.get("family") == "dense"), None
    )
    d = teacher.get("dense", {})
    students = (
        f"students {', '.join(preset.students)} ({s0['iters']} iterations, batch {s0['batch_size']}), "
        f"methods {', '.join(p.methods)}, seeds {', '.join(map(str, dense_seeds(p)))}; "
        if s0
        else ""
    )
    return (
        f"Dense family (ZebraPose-style surface codes, {d.get('bits', '?')} bits): teacher "
        f"{teacher['model']['backbone']} ({teacher['iters']} iterations, batch {teacher['batch_size']}); "
        f"{students}inputs: {teacher['data']['crop_size']} px zoom-in crops, {d.get('out_size', '?')} px outputs."
    )
