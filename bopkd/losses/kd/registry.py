"""The one registry of distillation methods shared by the CLI, the configs and the reports.

A method registers itself where it is defined, with the :func:`register_kd` class decorator (the
pattern of torchdistill's ``register_*`` functions)::

    @register_kd("ot", config=OTKDConfig, summary="...", terms=("kd_ot",), weight_key=("weight",))
    class OTKD(KDMethod): ...

into :data:`KD_METHODS`; :mod:`bopkd.losses.kd` imports the method modules so that every built-in
method is registered once the package is imported. Built-in names: ``none`` (direct student
training), ``pred`` (prediction-to-prediction), ``fkd`` (Zhang & Ma's feature distillation), ``ot``
(Guo et al.'s OT distillation of local predictions), ``fkd+ot`` (both). Each entry has a typed
dataclass config (loaded from YAML by :func:`bopkd.config.from_dict`) and a method class, an
``nn.Module`` called as ``method(student_out, batch, teacher_out, assignment=...) -> {name: weighted
scalar}``; its parameters (FKD's adapters) must join the optimiser.

The distillation weight is a field of the method's config; ``weight_key`` says where
(``("weight",)``, ``("ot", "weight")`` for ``fkd+ot``), so that ``--kd-weight`` writes it there.

YAML form (e.g. a ``kd:`` section of a training config)::

    kd:
      method: ot          # one of none, pred, fkd, ot, fkd+ot
      options: {weight: 5.0, blur: 0.001, reach: 0.5, detach_scores: false}   # fields of the method's config
                          # fkd+ot: options: {fkd: {...}, ot: {weight: 5.0, ...}}
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bopkd.config import from_dict, merge_into, to_dict
from bopkd.errors import BopkdError
from bopkd.losses.kd.base import KDMethod


@dataclass(frozen=True)
class KDEntry:
    """One registered method.

    Attributes:
        name: registry name (lower case).
        method_cls: the :class:`KDMethod` subclass; built by its ``build`` classmethod.
        config_cls: its typed config dataclass (every field has a default).
        summary: one line for ``--help`` and reports.
        terms: names of the terms the method returns (``kd_*``), as logged in ``metrics.csv``.
        weight_key: path of the distillation weight inside the config (``("weight",)``); None for a
            method without one (``none``).
    """

    name: str
    method_cls: type[KDMethod]
    config_cls: type
    summary: str
    terms: tuple[str, ...]
    weight_key: tuple[str, ...] | None

    @property
    def needs_teacher(self) -> bool:
        """Whether training needs ``--teacher`` (the method class's ``needs_teacher``)."""
        return bool(self.method_cls.needs_teacher)

    def default_weight(self) -> float | None:
        """The weight of the method's default config (None without ``weight_key``)."""
        if self.weight_key is None:
            return None
        node: Any = self.config_cls()
        for k in self.weight_key:
            node = getattr(node, k)
        return float(node)

    def weight_options(self, weight: float, source: str = "--kd-weight") -> dict:
        """``kd.options`` that set the weight: ``{"weight": w}`` or ``{"ot": {"weight": w}}``; {} for none."""
        if self.weight_key is None:
            return {}
        try:
            w: Any = float(weight)
        except (TypeError, ValueError):
            raise BopkdError(f"{source}: kd weight {weight!r} must be a number") from None
        for k in reversed(self.weight_key):
            w = {k: w}
        return w


#: name -> entry, in registration order (the order of ``kd_names()``, the CLI help and the reports).
KD_METHODS: dict[str, KDEntry] = {}


def _check_weight_key(name: str, config: type, weight_key: tuple[str, ...]) -> None:
    node: Any = config
    for k in weight_key:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if k not in fields:
            raise BopkdError(
                f"register_kd({name!r}): weight_key {weight_key} names no field of {config.__name__}: "
                "give the path of the weight field"
            )
        f = fields[k]
        node = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def register_kd(
    name: str,
    *,
    config: type,
    summary: str,
    terms: tuple[str, ...] = (),
    weight_key: tuple[str, ...] | None = ("weight",),
) -> Callable[[type[KDMethod]], type[KDMethod]]:
    """Class decorator: add a :class:`KDMethod` subclass to :data:`KD_METHODS` under ``name``.

    Args:
        name: the method's name in configs and on the command line (``--kd NAME``); case-insensitive.
        config: its config dataclass (fields with defaults; a ``validate(source)`` method).
        summary: one line for ``--help`` and reports.
        terms: names of the terms ``forward`` returns.
        weight_key: path of the distillation weight in ``config`` (None: the method has none).
    Raises:
        BopkdError: the name is taken, or ``weight_key`` names no field of ``config``.
    """
    key = str(name).strip().lower()
    if not key:
        raise BopkdError("register_kd: give the method a non-empty name")
    if not dataclasses.is_dataclass(config):
        raise BopkdError(f"register_kd({key!r}): config must be a dataclass, got {config!r}")
    if weight_key is not None:
        _check_weight_key(key, config, tuple(weight_key))

    def register(cls: type[KDMethod]) -> type[KDMethod]:
        old = KD_METHODS.get(key)
        if old is not None:
            raise BopkdError(
                f"distillation method {key!r} is registered twice ({old.method_cls.__module__}."
                f"{old.method_cls.__qualname__} and {cls.__module__}.{cls.__qualname__}): give one another name"
            )
        cls.name = key
        KD_METHODS[key] = KDEntry(
            key, cls, config, summary, tuple(terms), None if weight_key is None else tuple(weight_key)
        )
        return cls

    return register


def unregister_kd(name: str) -> KDEntry:
    """Remove a method from :data:`KD_METHODS` (e.g. one registered by a test); returns its entry."""
    return KD_METHODS.pop(get_entry(name, "unregister_kd").name)


def kd_names() -> list[str]:
    """The registered method names, in their canonical order."""
    return list(KD_METHODS)


def get_entry(name: str, source: str = "--kd") -> KDEntry:
    """The entry of ``name``; a one-line :class:`BopkdError` listing the names if unknown."""
    e = KD_METHODS.get(str(name).strip().lower()) if isinstance(name, str) else None
    if e is None:
        raise BopkdError(
            f"{source}: unknown distillation method {name!r}: use one of {', '.join(KD_METHODS)}"
        )
    return e


@dataclass
class KDSpec:
    """A method name plus its typed config: what a training config's ``kd:`` section holds."""

    method: str = "none"
    config: Any = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = get_entry(self.method).config_cls()

    @property
    def entry(self) -> KDEntry:
        return get_entry(self.method)

    def to_dict(self) -> dict:
        return {"method": self.method, "options": to_dict(self.config)}


def make_spec(
    method: str, options: dict | None = None, weight: float | None = None, source: str = "--kd"
) -> KDSpec:
    """Validate a method name and its options into a :class:`KDSpec`.

    Args:
        method: a registered name.
        options: fields of the method's config (``kd.options``); None = the defaults.
        weight: the ``--kd-weight`` shorthand, written at the entry's ``weight_key`` over ``options``
            (ignored by a method without a weight, ``none``).
        source: where the values came from, for the messages.
    """
    e = get_entry(method, source)
    opts = {} if options is None else options
    if not isinstance(opts, dict):
        raise BopkdError(f"{source}: kd.options must be a mapping of the method's fields, got {opts!r}")
    if weight is not None:
        opts = merge_into(to_dict(opts), e.weight_options(weight, source), source)
    return KDSpec(e.name, from_dict(e.config_cls, opts, source=source, path="kd.options"))


def spec_from_dict(d: dict | str | None, source: str = "the kd config") -> KDSpec:
    """Parse a ``kd:`` section: ``{"method": NAME, "options": {...}?}`` or just ``NAME``."""
    if d is None:
        return KDSpec()
    if isinstance(d, str):
        return make_spec(d, None, None, source)
    if not isinstance(d, dict):
        raise BopkdError(
            f"{source}: the kd section must be a mapping or a method name, got {type(d).__name__}"
        )
    if "weight" in d:
        raise BopkdError(
            f"{source}: kd.weight is not a key: set the weight in kd.options.weight "
            "(kd.options.ot.weight for fkd+ot) or with --kd-weight"
        )
    allowed = {"method", "options"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise BopkdError(f"{source}: unknown kd keys {unknown}: allowed keys are {sorted(allowed)}")
    if "method" not in d:
        raise BopkdError(f"{source}: the kd section needs 'method': one of {', '.join(KD_METHODS)}")
    return make_spec(d["method"], d.get("options"), None, source)


def fold_legacy_kd_weight(config: dict, source: str) -> dict:
    """A stored run config (checkpoint, run ``config.yaml``) in the current form: ``kd.weight`` folded in.

    Configs written before the weight became a field of the method's config hold
    ``kd: {method, teacher, weight, options}``; a non-null ``weight`` is written at the method's
    ``weight_key`` inside ``options`` and the key is dropped. Returns a copy (``config`` is unchanged).

    Raises:
        BopkdError: ``kd.weight`` and the weight in ``kd.options`` are both set and differ.
    """
    kd = config.get("kd") if isinstance(config, dict) else None
    if not isinstance(kd, dict) or "weight" not in kd:
        return config
    out = copy.deepcopy(config)
    weight = out["kd"].pop("weight")
    if weight is None:
        return out
    e = get_entry(str(out["kd"].get("method") or "none"), f"{source}: kd.method")
    folded = e.weight_options(weight, f"{source}: kd.weight")
    options = out["kd"].get("options") or {}
    if not isinstance(options, dict):
        raise BopkdError(f"{source}: kd.options must be a mapping; rewrite it or retrain the run")
    node, new = options, folded
    for k in e.weight_key or ():
        node = node.get(k) if isinstance(node, dict) else None
        new = new[k]
    if node is not None and node != new:
        where = ".".join(("kd.options", *(e.weight_key or ())))
        raise BopkdError(f"{source}: kd.weight = {weight} and {where} = {node} differ: keep only {where}")
    out["kd"]["options"] = merge_into(options, folded, source)
    return out


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
        weight: the ``--kd-weight`` shorthand, applied on top of ``spec``.
    Raises:
        BopkdError: unknown name, bad options, or a method that needs a teacher built without one.
    """
    if isinstance(spec, str):
        spec = make_spec(spec, None, weight, source)
    elif weight is not None:
        spec = make_spec(spec.method, to_dict(spec.config), weight, source)
    e = get_entry(spec.method, source)
    if e.needs_teacher and teacher is None:
        raise BopkdError(
            f"{source}: distillation method {e.name!r} needs a teacher: pass --teacher CHECKPOINT (or use --kd none)"
        )
    method = e.method_cls.build(spec.config, student=student, teacher=teacher, loss_cfg=loss_cfg)
    method.name = e.name
    return method


def build_kd_loss(cfg: Any, model: torch.nn.Module, teacher: torch.nn.Module | None) -> KDMethod:
    """The distillation loss callable of a training run (the hook of ``bopkd.train.loss_fns.build_loss_fns``).

    Args:
        cfg: the run config (``RunConfig``): ``cfg.kd.method``, ``cfg.kd.options`` (fields of the
            method's config, the weight included) and ``cfg.loss`` (positive cells).
        model: the student; teacher: the frozen teacher.
    Returns:
        the method module; its parameters (FKD's adapters) are to be optimised and checkpointed.
    """
    kd = cfg.kd
    spec = make_spec(kd.method, kd.options or None, source="kd config")
    return build_kd(
        spec, student=model, teacher=teacher, loss_cfg=getattr(cfg, "loss", None), source="kd config"
    )


__all__ = [
    "KD_METHODS",
    "KDEntry",
    "KDSpec",
    "build_kd",
    "build_kd_loss",
    "fold_legacy_kd_weight",
    "get_entry",
    "kd_names",
    "make_spec",
    "register_kd",
    "spec_from_dict",
    "unregister_kd",
]
