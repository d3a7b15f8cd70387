"""The training settings that define a report row, read from each run's ``config.yaml``.

A row is one model configuration: role, backbone and architecture, distillation method and every training
setting, but not the seed. Two submissions fall in the same row when their run configs agree on everything
except the keys of :data:`IGNORED` (seed, paths, logging, worker counts); the distillation section is compared
in its resolved form (the method's typed config with every default filled in by
:func:`bopkd.losses.kd.registry.make_spec`), so ``options: {}`` and the same defaults written out agree.

The settings a row states (:class:`RowSettings`), with the reference code's value (Guo et al., CVPR 2023,
GUOShuxuan/kd-6d-pose-adlp) in :data:`REFERENCE`:

* the distillation weight(s): ``kd.options.weight`` (older configs: ``kd.weight``, folded in by
  :func:`bopkd.losses.kd.registry.fold_legacy_kd_weight`), else the method's default; for ``fkd+ot`` the
  OT weight (``kd.options.ot.weight``) and FKD's (``kd.options.fkd.weight``);
* ``loss.reduction`` of the task loss: ``"sum"`` (the reference's sums over cells) or
  ``"mean_per_positive"`` (an ablation; :mod:`bopkd.losses.task`);
* for ``ot`` and ``fkd+ot`` (``kd.options`` or ``kd.options.ot``): ``detach_scores`` (False: the student's
  scores stay live, the paper's method; True: the reference's ``--wot_detach`` ablation), ``teacher_region``
  (``"all"``: the teacher's confident cells over the whole image, the reference's; ``"mask"``: only cells in
  the instance's GT visible mask, a deviation) and ``teacher_pnp`` (True: instances whose teacher cells give
  no PnP pose are skipped, as the reference skips such images; False: they are kept, a deviation).

For the dense family (``family: dense``, ZebraPose's loss, :mod:`bopkd.losses.zebra`) a row states instead
``code_loss``: which pixels the code term covers and how it is averaged (``dense.loss.code_mask`` /
``code_reduction``; ZebraPose's code: ``pred/all_pixels``, anything else a deviation), and for the dense
``ot`` and ``fkd+ot``: ``detach_masses`` (False: the student's mask masses stay live) and ``ot_cells`` (the
pooling factor and which cells take part: a choice the paper leaves open, stated without a tag).

Configs written before ``loss.reduction`` existed lack that key. The code that wrote them normalised the task
loss by the number of positive cells, and its ``OTKDConfig.teacher_region`` default was ``"mask"``; so a
config without ``loss.reduction`` is read as ``reduction = "mean_per_positive"`` and, where its kd options do
not name ``teacher_region``, ``teacher_region = "mask"`` (:data:`LEGACY`; ``teacher_pnp`` did not exist and is
False). The row's ``assumed`` field says when this was applied.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import partial

from bopkd.errors import BopkdError

#: Values of the reference code; any other value is labelled in the row name.
REFERENCE = {
    "reduction": "sum",
    "detach_scores": False,
    "teacher_region": "all",
    "teacher_pnp": True,
    "code_loss": "pred/all_pixels",
    "detach_masses": False,
}
#: Settings without a reference value (stated in every label of a row that has them, without a tag).
UNREFERENCED = ("ot_cells",)
#: Defaults of the code that wrote configs without ``loss.reduction`` (see the module docstring).
LEGACY = {"reduction": "mean_per_positive", "teacher_region": "mask"}
#: Config keys that do not change what is trained (dotted; a key also hides everything below it).
IGNORED = (
    "seed",
    "out",
    "progress",
    "device",
    "cpu_threads",
    "ckpt_every",
    "log_every",
    "deterministic",
    "channels_last",
    "kd.teacher",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
)
#: Methods with the OT settings (detach_scores, teacher_region, teacher_pnp).
OT_METHODS = ("ot", "fkd+ot")

#: (value, phrase, tag) per setting; the tag marks a value other than the reference's.
_PHRASES = {
    "reduction": {
        "sum": ("summed task loss", ""),
        "mean_per_positive": ("task loss per positive cell", "ablation"),
    },
    "detach_scores": {False: ("live scores", ""), True: ("detached scores", "ablation")},
    "teacher_region": {"all": ("all teacher cells", ""), "mask": ("teacher cells in GT mask", "deviation")},
    "teacher_pnp": {True: ("teacher-PnP filter", ""), False: ("no teacher-PnP filter", "deviation")},
    "code_loss": {
        "pred/all_pixels": ("ZebraPose's code loss", ""),
        "gt/mask": ("code loss over the GT mask", "deviation"),
        "gt/all_pixels": ("code loss over the GT mask, all-pixel mean", "deviation"),
        "pred/mask": ("code loss over the predicted mask, its mean", "deviation"),
    },
    "detach_masses": {False: ("live masses", ""), True: ("detached masses", "ablation")},
}


@dataclass(frozen=True)
class RowSettings:
    """What a row states about its training (None: not applicable to the method, or unknown)."""

    method: str  # "-" for a teacher
    weights: tuple[tuple[str, float], ...] = ()  # (term, weight): ("ot", 5.0), ("fkd", 1.0)
    reduction: str | None = None
    detach_scores: bool | None = None
    teacher_region: str | None = None
    teacher_pnp: bool | None = None
    known: bool = False  # False: no readable config.yaml
    assumed: str = ""  # defaults assumed for an older config (see the module docstring)
    source: str = ""  # the config file read, or why none was
    family: str = "sparse"  # the run's network family ("sparse" or "dense")
    code_loss: str | None = None  # dense: "code_mask/code_reduction" of ZebraPose's loss
    detach_masses: bool | None = None  # dense ot: the student's mask masses detached
    ot_cells: str | None = None  # dense ot: "pool 4", "pool 4, teacher mask > 0.5", "+ position"

    def values(self) -> dict[str, object]:
        """The labelled settings that apply to this row's method."""
        ot = self.method in OT_METHODS
        if self.family == "dense":
            keys = ["code_loss"] + (["detach_masses", "ot_cells"] if ot else [])
        else:
            keys = ["reduction"] + (["detach_scores", "teacher_region", "teacher_pnp"] if ot else [])
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def weight_text(self) -> str:
        if len(self.weights) == 1:
            return f"w={self.weights[0][1]:g}"
        return ", ".join(f"{name} w={w:g}" for name, w in self.weights)


def phrase(key: str, value: object) -> str:
    """``"detached scores — ablation"``: a setting in words, tagged when it is not the reference's."""
    if key in UNREFERENCED:
        return str(value)
    text, tag = _PHRASES[key].get(value, (f"{key}={value}", "deviation"))
    return f"{text} — {tag}" if tag else text


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested mapping -> ``{"a.b": value}`` (lists kept as values)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED)


def _weights(method: str, cfg) -> tuple[tuple[str, float], ...]:
    if method == "fkd+ot" and hasattr(cfg, "fkd") and hasattr(cfg, "ot"):
        return (("fkd", float(cfg.fkd.weight)), ("ot", float(cfg.ot.weight)))
    w = getattr(cfg, "weight", None)
    return () if w is None else ((method, float(w)),)


def resolve_kd(kd: dict, legacy: bool, source: str, family: str = "sparse") -> tuple[str, object]:
    """``(method, typed config)`` of a run's ``kd`` section, defaults filled (legacy ones when ``legacy``, the
    former defaults of :mod:`bopkd.losses.kd.stored` where the section lacks a changed option);
    ``family``: the run's network family, whose registered methods ``kd.method`` names."""
    from bopkd.losses.kd.registry import fold_legacy_kd_weight, make_spec
    from bopkd.losses.kd.stored import with_former_defaults

    kd = fold_legacy_kd_weight({"kd": kd}, source)["kd"]
    method = str(kd.get("method") or "none")
    options = kd.get("options") or {}
    if not isinstance(options, dict):
        raise BopkdError(f"{source}: kd.options must be a mapping; rewrite it or retrain the run")
    # a copy, where an option whose default changed since the run was recorded takes its former default
    options = with_former_defaults(method, options, family)
    if legacy and method in OT_METHODS:
        target = options.setdefault("ot", {}) if method == "fkd+ot" else options
        if isinstance(target, dict):
            target.setdefault("teacher_region", LEGACY["teacher_region"])
    try:
        spec = make_spec(method, options or None, source=source, family=family)
    except BopkdError as e:
        raise BopkdError(f"{source}: {e}; this version of bopkd cannot read the run's kd settings") from None
    return spec.method, spec.config


@dataclass(frozen=True)
class RunSettings:
    """A run's settings and the keys that group submissions into rows."""

    settings: RowSettings
    row_key: str  # every training setting but the seed
    base_key: str  # the same without the kd section: equal for a student and its direct training
    config: dict  # flattened resolved config (for naming what differs between rows)
    kd_default: bool | None = None  # a student's kd options are its method's defaults (None: unknown)


def _digest(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_run_settings(cfg: dict | None, source: str, role: str, kd: str, fallback_key: str) -> RunSettings:
    """The settings of a run from its config ``cfg`` (``config.yaml``, read from ``source``).

    Without a config (``cfg`` None; ``source`` says why) the settings are unknown, ``kd`` is the sidecar's
    method and the row is keyed by ``fallback_key`` (what the sidecar says: role, backbone, input size).
    """
    method = "-" if role == "teacher" else None
    if cfg is None:
        s = RowSettings(method=method or kd, source=source)
        return RunSettings(s, f"unknown|{fallback_key}|{kd}", f"unknown|{fallback_key}", {})
    path = source
    loss = cfg.get("loss") if isinstance(cfg.get("loss"), dict) else {}
    legacy = "reduction" not in loss
    family = str(cfg.get("family") or "sparse")
    kd_method, kd_cfg = resolve_kd(cfg.get("kd") or {}, legacy, path, family)
    ot = kd_cfg.ot if kd_method == "fkd+ot" else kd_cfg
    # the OT settings and the task-loss reduction are the sparse family's (the dense loss is ZebraPose's)
    is_ot = kd_method in OT_METHODS and family == "sparse"
    legacy = legacy and family == "sparse"
    s = RowSettings(
        method=method or kd_method,
        weights=() if role == "teacher" else _weights(kd_method, kd_cfg),
        reduction=str(loss.get("reduction", LEGACY["reduction"])) if family == "sparse" else None,
        detach_scores=bool(ot.detach_scores) if is_ot else None,
        teacher_region=str(ot.teacher_region) if is_ot else None,
        teacher_pnp=bool(ot.teacher_pnp) if is_ot else None,
        known=True,
        assumed=(
            "config without loss.reduction: read as mean_per_positive"
            + (", teacher_region as mask unless given" if is_ot else "")
            if legacy
            else ""
        ),
        source=path,
        family=family,
        **(_dense_settings(cfg, kd_method, ot) if family == "dense" else {}),
    )
    resolved = copy.deepcopy(cfg)
    resolved["loss"] = {**loss, "reduction": s.reduction}
    resolved["kd"] = {"method": kd_method, "config": dataclasses.asdict(kd_cfg)}
    flat = {k: v for k, v in flatten(resolved).items() if not _ignored(k)}
    base = {k: v for k, v in flat.items() if not k.startswith("kd.")}
    default = None
    if role != "teacher" and kd_method != "none":
        default = dataclasses.asdict(kd_cfg) == dataclasses.asdict(type(kd_cfg)())
    return RunSettings(s, _digest({"role": role, **flat}), _digest(base), flat, default)


def _dense_settings(cfg: dict, kd_method: str, ot) -> dict[str, object]:
    """The dense family's stated settings (:class:`RowSettings` fields) of a run config; the loss keys
    missing from an older config are the defaults of :class:`bopkd.losses.zebra.ZebraLossConfig`."""
    from bopkd.losses.zebra import ZebraLossConfig

    dense = cfg.get("dense") if isinstance(cfg.get("dense"), dict) else {}
    loss = dense.get("loss") if isinstance(dense.get("loss"), dict) else {}
    ref = ZebraLossConfig()
    out: dict[str, object] = {
        "code_loss": f"{loss.get('code_mask', ref.code_mask)}/{loss.get('code_reduction', ref.code_reduction)}"
    }
    if kd_method in OT_METHODS:
        cells = f"pool {ot.pool}"
        if ot.mask_threshold is not None:
            cells += f", teacher mask > {ot.mask_threshold:g}"
        if ot.position:
            cells += f", + position x{ot.position_weight:g}"
        out.update(detach_masses=bool(ot.detach_masses), ot_cells=cells)
    return out


def row_labels(base: dict[str, str], runs: dict[str, RunSettings]) -> dict[str, str]:
    """Row label per row key: ``"tiny-cpu / ot (w=5, live scores)"``.

    ``base`` maps a row key to its bare name (``teacher (backbone)`` or ``backbone / method``). A label names
    the weight(s) and every stated setting whose value differs from :data:`REFERENCE` (tagged ablation or
    deviation) or differs between rows of the same bare name; rows that would still share a label get the
    config keys in which they differ (``iters=600``).
    """
    varying: dict[str, set[str]] = {}
    for key, rs in runs.items():
        for k, v in rs.settings.values().items():
            others = {
                o.settings.values().get(k) for ok, o in runs.items() if base[ok] == base[key] and ok != key
            }
            if others - {v, None}:
                varying.setdefault(key, set()).add(k)
    labels = {}
    for key, rs in runs.items():
        s = rs.settings
        parts = [] if not s.weights else [s.weight_text()]
        if not s.known:
            parts.append("settings unknown: no run config")
        for k, v in s.values().items():
            if k in UNREFERENCED or v != REFERENCE[k] or k in varying.get(key, ()):
                parts.append(phrase(k, v))
        labels[key] = base[key] + (f" ({', '.join(parts)})" if parts else "")
    return _disambiguate(labels, runs)


def _disambiguate(labels: dict[str, str], runs: dict[str, RunSettings]) -> dict[str, str]:
    out = dict(labels)
    for label in set(labels.values()):
        keys = [k for k, v in labels.items() if v == label]
        if len(keys) < 2:
            continue
        cfgs = [runs[k].config for k in keys]
        diff = sorted(
            {c for cfg in cfgs for c in cfg if len({json.dumps(x.get(c), default=str) for x in cfgs}) > 1}
        )
        for k in keys:
            extra = ", ".join(f"{c}={runs[k].config.get(c)}" for c in diff[:3]) or f"config {k[:8]}"
            out[k] = f"{label} [{extra}]"
    return out


def _yes_no(v: bool | None, yes: str, no: str) -> str:
    return "–" if v is None else (yes if v else no)


def _mark(s: RowSettings, key: str, text: str) -> str:
    """``text``, followed by ``(ablation)``/``(deviation)`` when ``s``'s value of ``key`` is not the reference's."""
    v = getattr(s, key)
    if v is None or v == REFERENCE[key]:
        return text
    return f"{text} ({_PHRASES[key].get(v, ('', 'deviation'))[1]})"


def _task_loss_text(s: RowSettings) -> str:
    if s.family == "dense":
        what = _PHRASES["code_loss"].get(s.code_loss, (f"code loss {s.code_loss}", ""))[0]
        return _mark(s, "code_loss", f"mask L1 + {what}")
    return "?" if s.reduction is None else _mark(s, "reduction", s.reduction)


def settings_table(results) -> list[dict[str, object]]:
    """One record per row (results in row order, :class:`bopkd.report.collect.ModelResult`): the row label,
    its method, weight(s), task-loss reduction, OT student scores, teacher cells and teacher-PnP filter
    (``–`` where the method has no such setting), each marked when it is not the reference's, the
    assumptions made for an older config, the seeds and the config file of the first seed."""
    rows: dict[str, dict[str, object]] = {}
    for r in results:
        s = r.settings
        if r.row_key in rows:
            rows[r.row_key]["seeds"].append(r.seed)
            continue
        mark = partial(_mark, s)
        rows[r.row_key] = {
            "model": r.model,
            "method": s.method,
            "weights": s.weight_text() if s.weights else "–",
            "task loss": _task_loss_text(s),
            "OT student scores": (
                mark("detach_masses", _yes_no(s.detach_masses, "detached masses", "live masses"))
                if s.family == "dense"
                else mark("detach_scores", _yes_no(s.detach_scores, "detached", "live"))
            ),
            "teacher cells": (
                (s.ot_cells or "–")
                if s.family == "dense"
                else mark("teacher_region", s.teacher_region or "–")
            ),
            "teacher-PnP filter": mark("teacher_pnp", _yes_no(s.teacher_pnp, "yes", "no")),
            "assumed": s.assumed or ("–" if s.known else "settings unknown: no run config"),
            "seeds": [r.seed],
            "config": s.source,
        }
    for row in rows.values():
        row["seeds"] = ",".join(str(x) for x in sorted(x for x in row["seeds"] if x is not None)) or "?"
    return list(rows.values())
