"""The one registry of distillation methods shared by the CLI, the configs and the reports.

Names: ``none`` (direct student training), ``pred`` (prediction-to-prediction), ``fkd`` (Zhang & Ma's
feature distillation), ``ot`` (Guo et al.'s OT distillation of local predictions), ``fkd+ot`` (both).
Each entry has a typed dataclass config (weights and options, loadable from YAML) and a builder that
returns a :class:`~bopkd.losses.kd.base.KDMethod`, an ``nn.Module`` called as
``method(student_out, batch, teacher_out) -> {name: weighted scalar}``; its parameters (FKD's adapters)
must join the optimiser.

YAML form (e.g. a ``kd:`` section of a training config)::

    kd:
      method: ot          # one of none, pred, fkd, ot, fkd+ot
      weight: 5.0         # optional, as --kd-weight
      options: {blur: 0.001, reach: 0.5, detach_scores: false}   # fields of the method's config
                          # fkd+ot: options: {fkd: {...}, ot: {...}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.combined import FKDOT, FKDOTConfig
from bopkd.losses.kd.fkd import FKD, FKDConfig, feature_channels
from bopkd.losses.kd.ot_kd import OTKD, OTKDConfig
from bopkd.losses.kd.pred import PredKD, PredKDConfig


@dataclass
class NoKDConfig:
    """``none`` has no options."""

    def validate(self, source: str = "the kd config") -> NoKDConfig:
        return self


class NoKD(KDMethod):
    """``--kd none``: direct training of the student; no terms, no teacher."""

    name = "none"
    needs_teacher = False

    def __init__(self, cfg: NoKDConfig | None = None, loss_cfg=None):
        super().__init__(cfg or NoKDConfig(), loss_cfg)

    def forward(
        self, student_out: dict, batch: dict, teacher_out: dict | None = None
    ) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class KDEntry:
    """One registered method.

    Attributes:
        name: registry name.
        config_cls: its typed config dataclass.
        builder: ``builder(cfg, student=..., teacher=..., loss_cfg=...) -> KDMethod``.
        summary: one line for ``--help`` and reports.
        needs_teacher: whether training needs ``--teacher``.
        set_weight: returns a copy of a config with ``--kd-weight`` applied (None: the method has none).
        terms: names of the terms the method returns.
    """

    name: str
    config_cls: type
    builder: Callable[..., KDMethod]
    summary: str
    needs_teacher: bool
    set_weight: Callable[[Any, float], Any] | None
    terms: tuple[str, ...]


def _channels(model, which: str) -> dict[int, int]:
    if model is None:
        raise BopkdError(
            "fkd needs both the student and the teacher model to size its adapters (pass --teacher CHECKPOINT)"
        )
    return feature_channels(model, which)


def _build_none(cfg, student=None, teacher=None, loss_cfg=None) -> KDMethod:
    return NoKD(cfg, loss_cfg)


def _build_pred(cfg, student=None, teacher=None, loss_cfg=None) -> KDMethod:
    return PredKD(cfg, loss_cfg)


def _build_ot(cfg, student=None, teacher=None, loss_cfg=None) -> KDMethod:
    return OTKD(cfg, loss_cfg)


def _build_fkd(cfg, student=None, teacher=None, loss_cfg=None) -> KDMethod:
    return FKD(cfg, _channels(student, cfg.features), _channels(teacher, cfg.features), loss_cfg)


def _build_fkd_ot(cfg, student=None, teacher=None, loss_cfg=None) -> KDMethod:
    w = cfg.fkd.features
    return FKDOT(cfg, _channels(student, w), _channels(teacher, w), loss_cfg)


REGISTRY: dict[str, KDEntry] = {
    e.name: e
    for e in (
        KDEntry(
            "none", NoKDConfig, _build_none, "direct training of the student (no teacher)", False, None, ()
        ),
        KDEntry(
            "pred",
            PredKDConfig,
            _build_pred,
            "prediction-to-prediction: student keypoints regress the teacher's at the same cells",
            True,
            lambda c, w: dataclasses.replace(c, weight=float(w)),
            ("kd_pred",),
        ),
        KDEntry(
            "fkd",
            FKDConfig,
            _build_fkd,
            "feature distillation of Zhang & Ma (ICLR 2021): attention-guided and non-local",
            True,
            lambda c, w: dataclasses.replace(c, weight=float(w)),
            ("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl"),
        ),
        KDEntry(
            "ot",
            OTKDConfig,
            _build_ot,
            "Guo et al. (CVPR 2023): Sinkhorn divergence between keypoint distributions",
            True,
            lambda c, w: dataclasses.replace(c, weight=float(w)),
            ("kd_ot",),
        ),
        KDEntry(
            "fkd+ot",
            FKDOTConfig,
            _build_fkd_ot,
            "fkd and ot added (--kd-weight sets the ot weight)",
            True,
            lambda c, w: dataclasses.replace(c, ot=dataclasses.replace(c.ot, weight=float(w))),
            ("kd_fkd_feat", "kd_fkd_att", "kd_fkd_nl", "kd_ot"),
        ),
    )
}


def kd_names() -> list[str]:
    """The registered method names, in their canonical order."""
    return list(REGISTRY)


def get_entry(name: str, source: str = "--kd") -> KDEntry:
    """The entry of ``name``; a one-line :class:`BopkdError` listing the names if unknown."""
    e = REGISTRY.get(str(name).strip().lower()) if isinstance(name, str) else None
    if e is None:
        raise BopkdError(f"{source}: unknown distillation method {name!r}: use one of {', '.join(REGISTRY)}")
    return e


# ----------------------------------------------------------------------------- typed configs from dicts
def _coerce(value: Any, annotation: str, key: str, source: str) -> Any:
    ann = annotation.replace(" ", "")
    optional = "None" in ann.split("|")
    if value is None:
        if optional:
            return None
        raise BopkdError(f"{source}: {key} must not be null")
    base = [a for a in ann.split("|") if a != "None"][0]
    try:
        if base == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if base == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise BopkdError(f"{source}: {key} = {value!r} must be a {base}") from None
    return value


def config_from_dict(cls: type, d: dict | None, source: str = "the kd config", prefix: str = "") -> Any:
    """Build a method config dataclass from a plain dict, rejecting unknown keys, checking types and values."""
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise BopkdError(
            f"{source}: kd options {prefix.rstrip('.')} must be a mapping, got {type(d).__name__}"
        )
    flds = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(flds))
    if unknown:
        raise BopkdError(
            f"{source}: unknown kd option keys {[prefix + k for k in unknown]}: "
            f"allowed keys are {sorted(prefix + k for k in flds)}"
        )
    kwargs = {}
    for k, v in d.items():
        f = flds[k]
        if dataclasses.is_dataclass(
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        ):
            sub_cls = type(f.default_factory())
            kwargs[k] = config_from_dict(sub_cls, v, source, f"{prefix}{k}.")
        else:
            kwargs[k] = _coerce(v, str(f.type), f"{prefix}{k}", source)
    return cls(**kwargs).validate(source)


def config_to_dict(cfg: Any) -> dict:
    """Plain-dict form of a method config (YAML/JSON-safe)."""
    return dataclasses.asdict(cfg)


@dataclass
class KDSpec:
    """A method name plus its typed config: what a training config's ``kd:`` section holds."""

    method: str = "none"
    config: Any = field(default_factory=NoKDConfig)

    @property
    def entry(self) -> KDEntry:
        return get_entry(self.method)

    def to_dict(self) -> dict:
        return {"method": self.method, "options": config_to_dict(self.config)}


def make_spec(
    method: str, options: dict | None = None, weight: float | None = None, source: str = "--kd"
) -> KDSpec:
    """Validate a method name, its options and an optional ``--kd-weight`` into a :class:`KDSpec`."""
    e = get_entry(method, source)
    cfg = config_from_dict(e.config_cls, options, source)
    if weight is not None and e.set_weight is not None:  # "none" has no weight: ignored
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise BopkdError(f"{source}: kd weight {weight!r} must be a number") from None
        cfg = e.set_weight(cfg, w).validate(source)
    return KDSpec(e.name, cfg)


def spec_from_dict(d: dict | str | None, source: str = "the kd config") -> KDSpec:
    """Parse a ``kd:`` section: ``{"method": NAME, "weight": W?, "options": {...}?}`` or just ``NAME``."""
    if d is None:
        return KDSpec()
    if isinstance(d, str):
        return make_spec(d, None, None, source)
    if not isinstance(d, dict):
        raise BopkdError(
            f"{source}: the kd section must be a mapping or a method name, got {type(d).__name__}"
        )
    allowed = {"method", "weight", "options"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise BopkdError(f"{source}: unknown kd keys {unknown}: allowed keys are {sorted(allowed)}")
    if "method" not in d:
        raise BopkdError(f"{source}: the kd section needs 'method': one of {', '.join(REGISTRY)}")
    return make_spec(d["method"], d.get("options"), d.get("weight"), source)


def build_kd(
    spec: KDSpec | str,
    *,
    student: torch.nn.Module | None = None,
    teacher: torch.nn.Module | None = None,
    loss_cfg: Any = None,
    weight: float | None = None,
    source: str = "--kd",
) -> KDMethod:
    """Build the method module of ``spec`` (a :class:`KDSpec` or a name with default options).

    Args:
        student, teacher: the two networks (FKD sizes its adapters from their feature channels).
        loss_cfg: the task loss's ``LossConfig`` (positive cells; the inference cell budget).
        weight: ``--kd-weight``, applied on top of ``spec``.
    Raises:
        BopkdError: unknown name, bad options, or a method that needs a teacher built without one.
    """
    if isinstance(spec, str):
        spec = make_spec(spec, None, weight, source)
    elif weight is not None:
        spec = make_spec(spec.method, config_to_dict(spec.config), weight, source)
    e = get_entry(spec.method, source)
    if e.needs_teacher and teacher is None:
        raise BopkdError(
            f"{source}: distillation method {e.name!r} needs a teacher: pass --teacher CHECKPOINT (or use --kd none)"
        )
    method = e.builder(spec.config, student=student, teacher=teacher, loss_cfg=loss_cfg)
    method.name = e.name
    return method


def build_kd_loss(cfg: Any, model: torch.nn.Module, teacher: torch.nn.Module | None) -> KDMethod:
    """The distillation loss callable of a training run (the hook of ``bopkd.train.trainer.build_loss_fns``).

    Args:
        cfg: the run config (``RunConfig``): ``cfg.kd.method``, ``cfg.kd.weight`` (None: the method's
            default), ``cfg.kd.options`` (fields of the method's config) and ``cfg.loss`` (positive cells).
        model: the student; teacher: the frozen teacher.
    Returns:
        the method module; its parameters (FKD's adapters) are to be optimised and checkpointed.
    """
    kd = cfg.kd
    weight = getattr(kd, "weight", None)
    spec = make_spec(kd.method, getattr(kd, "options", None) or None, weight, source="kd config")
    return build_kd(
        spec, student=model, teacher=teacher, loss_cfg=getattr(cfg, "loss", None), source="kd config"
    )


__all__ = [
    "REGISTRY",
    "build_kd_loss",
    "KDEntry",
    "KDSpec",
    "NoKD",
    "NoKDConfig",
    "build_kd",
    "config_from_dict",
    "config_to_dict",
    "get_entry",
    "kd_names",
    "make_spec",
    "spec_from_dict",
]
