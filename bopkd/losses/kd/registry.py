"""The one registry of distillation methods shared by the CLI, the configs and the reports.

A method registers itself where it is defined, with the :func:`register_kd` class decorator (the
pattern of torchdistill's ``register_*`` functions)::

    @register_kd("ot", config=OTKDConfig, summary="...", terms=("kd_ot",), weight_key=("weight",))
    class OTKD(KDMethod): ...

into :data:`KD_REGISTRY`; :mod:`bopkd.losses.kd` imports the method modules so that every built-in
method is registered once the package is imported. Built-in names: ``none`` (direct student
training), ``pred`` (prediction-to-prediction), ``fkd`` (Zhang & Ma's feature distillation), ``ot``
(Guo et al.'s OT distillation of local predictions), ``fkd+ot`` (both).

Methods belong to a pose family (:data:`KD_FAMILIES`): ``"sparse"`` (the keypoint networks of
:mod:`bopkd.models.posenet`) or ``"dense"`` (the ZebraPose-style networks of :mod:`bopkd.models.dense`).
Both families register the same five names, each for its own network outputs; an entry is found by
``(family, name)`` (:data:`KD_REGISTRY`), and every function here takes ``family="sparse"`` by default, so
a caller that names no family gets the keypoint methods. :data:`KD_METHODS` is the sparse family's
``name -> entry`` mapping, :data:`DENSE_KD_METHODS` the dense family's. Each entry has a typed
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
from collections.abc import Callable, Iterator, Mapping
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
        family: the pose family whose network outputs the method reads (``"sparse"`` or ``"dense"``).
        former_defaults: options whose default changed, dotted path -> the value they had before
            (:mod:`bopkd.losses.kd.stored`: how run configs written before the change are read).
    """

    name: str
    method_cls: type[KDMethod]
    config_cls: type
    summary: str
    terms: tuple[str, ...]
    weight_key: tuple[str, ...] | None
    family: str = "sparse"
    former_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

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


#: The pose families a method can belong to (``RunConfig.family``).
KD_FAMILIES: tuple[str, ...] = ("sparse", "dense")

#: Per family, name -> entry, in registration order (the order of ``kd_names()``, the CLI help, the reports).
_BY_FAMILY: dict[str, dict[str, KDEntry]] = {f: {} for f in KD_FAMILIES}

#: The sparse (keypoint) family's methods, name -> entry.
KD_METHODS: dict[str, KDEntry] = _BY_FAMILY["sparse"]

#: The dense (ZebraPose-style) family's methods, name -> entry.
DENSE_KD_METHODS: dict[str, KDEntry] = _BY_FAMILY["dense"]


class _Registry(Mapping):
    """Read-only view of every registered method keyed by ``(family, name)``, sparse family first."""

    def __getitem__(self, key: tuple[str, str]) -> KDEntry:
        family, name = key
        return _BY_FAMILY[family][name]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((f, n) for f, entries in _BY_FAMILY.items() for n in entries)

    def __len__(self) -> int:
        return sum(len(e) for e in _BY_FAMILY.values())


#: (family, name) -> entry, over both families.
KD_REGISTRY: Mapping[tuple[str, str], KDEntry] = _Registry()


def check_family(family: object, source: str = "family") -> str:
    """``family`` as a registry family name; a one-line :class:`BopkdError` naming ``source`` if unknown."""
    key = str(family).strip().lower() if isinstance(family, str) else None
    if key not in _BY_FAMILY:
        raise BopkdError(f"{source}: unknown pose family {family!r}: use one of {', '.join(KD_FAMILIES)}")
    return key


def methods_of(family: str = "sparse") -> dict[str, KDEntry]:
    """The name -> entry mapping of one family (:data:`KD_METHODS` for ``"sparse"``)."""
    return _BY_FAMILY[check_family(family)]


def _check_field_path(name: str, config: type, path: tuple[str, ...], what: str) -> None:
    """A one-line error unless ``path`` names a (nested) field of the dataclass ``config``."""
    node: Any = config
    for k in path:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if k not in fields:
            raise BopkdError(
                f"register_kd({name!r}): {what} {path} names no field of {config.__name__}: "
                "give the path of a field"
            )
        f = fields[k]
        node = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def register_kd(
    name: str,
    *,
    family: str = "sparse",
    config: type,
    summary: str,
    terms: tuple[str, ...] = (),
    weight_key: tuple[str, ...] | None = ("weight",),
    former_defaults: Mapping[str, Any] | None = None,
) -> Callable[[type[KDMethod]], type[KDMethod]]:
    """Class decorator: add a :class:`KDMethod` subclass to the registry under ``(family, name)``.

    Args:
        name: the method's name in configs and on the command line (``--kd NAME``); case-insensitive.
        family: the pose family whose outputs the method reads, ``"sparse"`` (:data:`KD_METHODS`) or
            ``"dense"`` (:data:`DENSE_KD_METHODS`); the same name may be registered once per family.
        config: its config dataclass (fields with defaults; a ``validate(source)`` method).
        summary: one line for ``--help`` and reports.
        terms: names of the terms ``forward`` returns.
        weight_key: path of the distillation weight in ``config`` (None: the method has none).
        former_defaults: options whose default changed since runs were first recorded, dotted path
            (``"position"``, ``"ot.position"``) -> the former default (:mod:`bopkd.losses.kd.stored`).
    Raises:
        BopkdError: the name is taken in that family, the family is unknown, or ``weight_key`` or a key
            of ``former_defaults`` names no field of ``config``.
    """
    fam = check_family(family, f"register_kd({name!r})")
    table = _BY_FAMILY[fam]
    key = str(name).strip().lower()
    if not key:
        raise BopkdError("register_kd: give the method a non-empty name")
    if not dataclasses.is_dataclass(config):
        raise BopkdError(f"register_kd({key!r}): config must be a dataclass, got {config!r}")
    if weight_key is not None:
        _check_field_path(key, config, tuple(weight_key), "weight_key")
    former = dict(former_defaults or {})
    for path in former:
        _check_field_path(key, config, tuple(path.split(".")), "former_defaults key")

    def register(cls: type[KDMethod]) -> type[KDMethod]:
        old = table.get(key)
        if old is not None:
            raise BopkdError(
                f"{fam} distillation method {key!r} is registered twice ({old.method_cls.__module__}."
                f"{old.method_cls.__qualname__} and {cls.__module__}.{cls.__qualname__}): give one another name"
            )
        cls.name = key
        cls.family = fam
        wk = None if weight_key is None else tuple(weight_key)
        table[key] = KDEntry(key, cls, config, summary, tuple(terms), wk, fam, former)
        return cls

    return register


def unregister_kd(name: str, family: str = "sparse") -> KDEntry:
    """Remove a method of ``family`` from the registry (e.g. one registered by a test); returns its entry."""
    e = get_entry(name, "unregister_kd", family)
    return _BY_FAMILY[e.family].pop(e.name)


def kd_names(family: str = "sparse") -> list[str]:
    """The method names registered for ``family``, in their canonical order."""
    return list(methods_of(family))


def get_entry(name: str, source: str = "--kd", family: str = "sparse") -> KDEntry:
    """The entry of ``name`` in ``family``; a one-line :class:`BopkdError` listing the names if unknown."""
    table = _BY_FAMILY[check_family(family, source)]
    e = table.get(str(name).strip().lower()) if isinstance(name, str) else None
    if e is None:
        which = "" if family == "sparse" else f"{family} "
        raise BopkdError(
            f"{source}: unknown {which}distillation method {name!r}: use one of {', '.join(table)}"
        )
    return e


@dataclass
class KDSpec:
    """A method name plus its typed config: what a training config's ``kd:`` section holds.

    ``family`` (the run's ``family``, not part of the ``kd:`` section) says which registry entry the name
    means; :meth:`to_dict` leaves it out.
    """

    method: str = "none"
    config: Any = None
    family: str = "sparse"

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = get_entry(self.method, family=self.family).config_cls()

    @property
    def entry(self) -> KDEntry:
        return get_entry(self.method, family=self.family)

    def to_dict(self) -> dict:
        return {"method": self.method, "options": to_dict(self.config)}


def make_spec(
    method: str,
    options: dict | None = None,
    weight: float | None = None,
    source: str = "--kd",
    family: str = "sparse",
) -> KDSpec:
    """Validate a method name and its options into a :class:`KDSpec`.

    Args:
        method: a name registered for ``family``.
        options: fields of the method's config (``kd.options``); None = the defaults.
        weight: the ``--kd-weight`` shorthand, written at the entry's ``weight_key`` over ``options``
            (ignored by a method without a weight, ``none``).
        source: where the values came from, for the messages.
        family: the run's pose family (``"sparse"`` or ``"dense"``): whose method ``method`` names.
    """
    e = get_entry(method, source, family)
    opts = {} if options is None else options
    if not isinstance(opts, dict):
        raise BopkdError(f"{source}: kd.options must be a mapping of the method's fields, got {opts!r}")
    if weight is not None:
        opts = merge_into(to_dict(opts), e.weight_options(weight, source), source)
    return KDSpec(e.name, from_dict(e.config_cls, opts, source=source, path="kd.options"), e.family)


def spec_from_dict(d: dict | str | None, source: str = "the kd config", family: str = "sparse") -> KDSpec:
    """Parse a ``kd:`` section: ``{"method": NAME, "options": {...}?}`` or just ``NAME`` (of ``family``)."""
    if d is None:
        return KDSpec(family=check_family(family, source))
    if isinstance(d, str):
        return make_spec(d, None, None, source, family)
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
        names = ", ".join(kd_names(family))
        raise BopkdError(f"{source}: the kd section needs 'method': one of {names}")
    return make_spec(d["method"], d.get("options"), None, source, family)


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
    family = str(out.get("family") or "sparse")
    e = get_entry(str(out["kd"].get("method") or "none"), f"{source}: kd.method", family)
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
    family: str | None = None,
) -> KDMethod:
    """Build the method module of ``spec`` (a :class:`KDSpec` or a name with default options).

    Args:
        student, teacher: the two networks (FKD sizes its adapters from their feature channels).
        loss_cfg: the task loss's ``LossConfig`` (positive cells; the inference cell budget).
        weight: the ``--kd-weight`` shorthand, applied on top of ``spec``.
        family: the pose family of a name given as ``spec`` (None: ``"sparse"``); a :class:`KDSpec` carries
            its own, and a different ``family`` is an error.
    Raises:
        BopkdError: unknown name or family, bad options, or a method that needs a teacher built without one.
    """
    if isinstance(spec, str):
        spec = make_spec(spec, None, weight, source, family or "sparse")
    else:
        if family is not None and check_family(family, source) != spec.family:
            raise BopkdError(
                f"{source}: the kd spec is of the {spec.family} family, not {family}: make it with family={family!r}"
            )
        if weight is not None:
            spec = make_spec(spec.method, to_dict(spec.config), weight, source, spec.family)
    e = get_entry(spec.method, source, spec.family)
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
        cfg: the run config (``RunConfig``): ``cfg.family`` (the pose family, "sparse" when absent),
            ``cfg.kd.method``, ``cfg.kd.options`` (fields of the method's config, the weight included) and
            ``cfg.loss`` (positive cells).
        model: the student; teacher: the frozen teacher.
    Returns:
        the method module; its parameters (FKD's adapters) are to be optimised and checkpointed.
    """
    kd = cfg.kd
    family = check_family(getattr(cfg, "family", "sparse") or "sparse", "family")
    spec = make_spec(kd.method, kd.options or None, source="kd config", family=family)
    return build_kd(
        spec, student=model, teacher=teacher, loss_cfg=getattr(cfg, "loss", None), source="kd config"
    )


__all__ = [
    "DENSE_KD_METHODS",
    "KD_FAMILIES",
    "KD_METHODS",
    "KD_REGISTRY",
    "KDEntry",
    "KDSpec",
    "build_kd",
    "build_kd_loss",
    "check_family",
    "fold_legacy_kd_weight",
    "get_entry",
    "kd_names",
    "make_spec",
    "methods_of",
    "register_kd",
    "spec_from_dict",
    "unregister_kd",
]
