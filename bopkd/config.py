"""One helper that turns plain dicts and YAML files into typed, nested config dataclasses.

Every config of bopkd (training runs, distillation methods, pipeline presets, synthetic datasets,
prediction records) is a dataclass; :func:`from_dict` builds one from a nested plain dict, checking each
key and value against the dataclass's type hints: an unknown key names the closest allowed one, a wrong
type names the expected type, and every message says where the value came from (``origins``). Range
checks stay with each dataclass, in a ``validate()`` method that :func:`from_dict` calls when present.
:func:`to_dict` is the inverse (YAML- and JSON-safe), :func:`load_yaml` reads a file that must hold a
mapping, :func:`merge_into` layers dicts and :func:`parse_override` reads ``key.sub=value``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from bopkd.errors import BopkdError, MissingFileError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Plain, YAML- and ``torch.load(weights_only=True)``-safe form of a config (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Origins(dict):
    """Dotted key -> where its value was set (``preset cpu-quick``, ``FILE``, ``--set``)."""

    def of(self, path: str) -> str:
        while path:
            if path in self:
                return self[path]
            path = path.rpartition(".")[0]
        return self.get("", "the defaults")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        n = "" if origin is list or Ellipsis in typing.get_args(tp) else f"{len(args)} "
        return f"a list of {n}{_type_name(args[0]) if args else 'values'}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _ConvError(Exception):
    pass


def _convert(tp: Any, value: Any, path: str, origins: Origins) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, origins)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path, origins)
            except _ConvError as e:
                errors.append(str(e))
        raise _ConvError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise _ConvError(f"{value!r} is not allowed: use one of {', '.join(repr(a) for a in args)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise _ConvError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise _ConvError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise _ConvError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise _ConvError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _ConvError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _ConvError(f"expected a string, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _ConvError(f"expected {_type_name(tp)}, got {value!r}")
        if origin is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                raise _ConvError(f"expected {_type_name(tp)}, got {len(value)} values {list(value)!r}")
            return tuple(
                _convert(a, v, f"{path}[{i}]", origins)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]", origins) for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _ConvError(f"expected a mapping, got {value!r}")
        return copy.deepcopy(value)
    raise _ConvError(f"unsupported config type {tp!r}")


def _build(cls: type, d: Any, path: str, origins: Origins) -> Any:
    where = path or origins.get("", "the config")
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise BopkdError(f"config {where} (from {origins.of(path)}): expected a mapping of keys, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in d if k not in names]
    if unknown:
        k = unknown[0]
        key = f"{path}.{k}" if path else str(k)
        close = difflib.get_close_matches(str(k), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BopkdError(
            f"config key {key!r} (from {origins.of(key)}) is unknown: {hint}allowed keys of {where}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in d:
            continue
        key = f"{path}.{name}" if path else name
        try:
            kwargs[name] = _convert(hints[name], d[name], key, origins)
        except _ConvError as e:
            raise BopkdError(f"config key {key!r} (from {origins.of(key)}): {e}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise BopkdError(f"config {where}: {e}") from None


def from_dict(
    cls: type[T],
    d: Any,
    source: str | None = None,
    origins: dict | None = None,
    path: str = "",
    validate: bool = True,
) -> T:
    """Build a ``cls`` dataclass from a nested plain dict (unknown keys and wrong types are errors).

    Args:
        cls: the dataclass type (nested dataclass fields are built from nested mappings).
        d: the mapping (an instance of ``cls`` is returned as it is).
        source: where the whole mapping came from (a file, ``--set``, a preset), for the messages.
        origins: dotted key -> where its value was set, for finer messages than ``source``.
        path: the dotted key of ``d`` inside a larger config (prefix of every key in the messages).
        validate: call ``validate()`` of the result when the class has one (with ``source`` when it
            accepts an argument).
    Raises:
        BopkdError: one line naming the key, where it came from and what is allowed.
    """
    o = origins if isinstance(origins, Origins) else Origins(origins or {})
    if source is not None and path not in o:
        o[path] = source
    out = _build(cls, d, path, o)
    check = getattr(out, "validate", None) if validate else None
    if check is not None:
        takes_source = len(inspect.signature(check).parameters) > 0
        res = check(source or "the config") if takes_source else check()
        out = res if isinstance(res, cls) else out
    return out


def merge_into(
    base: dict, overlay: dict, source: str, origins: Origins | None = None, prefix: str = ""
) -> dict:
    """Deep-merge ``overlay`` into ``base`` in place (mappings merge, everything else replaces)."""
    for k, v in overlay.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and isinstance(base.get(k), dict) and v:
            merge_into(base[k], v, source, origins, key)
        else:
            base[k] = copy.deepcopy(v)
            if origins is not None:
                origins[key] = source
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=5e-4"`` -> ``(["optim", "lr"], 5e-4)``; the value is read as a YAML scalar or list."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or any(not p for p in key.split(".")):
        raise BopkdError(
            f"--set {text!r}: write key.sub=value, e.g. --set optim.lr=5e-4 or --set data.input_size=[320,240]"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file (``yaml.safe_load``) that must hold a mapping."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "give an existing YAML config file (--config), e.g. a run's config.yaml")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BopkdError(f"{where}: not valid YAML ({problem}); fix the file") from None
    except UnicodeDecodeError as e:
        raise BopkdError(f"{path}: not a UTF-8 text file ({e.reason}); give a YAML config file") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise BopkdError(
            f"{path}: a config file must hold a mapping of keys (data:, model:, optim: ...), got {type(d).__name__}"
        )
    return d


def drop_none(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def lookup(d: Any, path: tuple[str, ...] | list[str], default: Any = None) -> Any:
    """``d[path[0]]...[path[-1]]`` of nested mappings; ``default`` when a key on the way is absent."""
    node = d
    for k in path:
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def set_path(d: dict, path: tuple[str, ...] | list[str], value: Any) -> None:
    """Set ``d[path[0]]...[path[-1]] = value`` in place, making the mappings on the way."""
    for k in path[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[path[-1]] = value


def pop_path(d: Any, path: tuple[str, ...] | list[str]) -> Any:
    """Remove and return ``d[path[0]]...[path[-1]]`` (None if absent); drop the mappings it leaves empty."""
    if not path or not isinstance(d, dict) or path[0] not in d:
        return None
    if len(path) == 1:
        return d.pop(path[0])
    value = pop_path(d[path[0]], path[1:])
    if d[path[0]] == {}:
        del d[path[0]]
    return value
