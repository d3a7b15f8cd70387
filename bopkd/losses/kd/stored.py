"""A distillation method's options as a run records them, so that a changed default relabels no run.

A run's ``config.yaml`` (and its checkpoints) hold ``kd.options`` resolved: every field of the method's
config, the defaults written out (:func:`resolved_options`, called when training starts). Runs recorded
before that hold only the options they were given; a field missing from such a config had the default of
its day. A method that changes a default registers the former value (``register_kd(...,
former_defaults={"position": False})``), and:

* :func:`with_former_defaults` reads a recorded run's options: a missing field gets its former default (the
  reports and ``--resume``);
* :func:`canonical_options` is the form a pipeline stage hashes: a changed field is absent while it holds
  its former default and written out otherwise, so a stage trained before the change keeps its settings
  hash exactly when it would train the same network today.
"""

from __future__ import annotations

import copy
from typing import Any

from bopkd.config import to_dict
from bopkd.losses.kd.registry import get_entry, make_spec

_MISSING = object()


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _set(node: dict, path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            child = node[k] = {}
        node = child
    node[path[-1]] = value


def _pop(node: dict, path: tuple[str, ...]) -> None:
    parents = []
    for k in path[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            return
        parents.append((node, k))
        node = child
    node.pop(path[-1], None)
    for parent, k in reversed(parents):  # a mapping left empty is dropped, as if never given
        if parent[k]:
            break
        del parent[k]


def resolved_options(method: str, options: dict | None, family: str = "sparse", source: str = "kd") -> dict:
    """Every field of the method's config: ``options`` over the defaults (a plain nested dict)."""
    return to_dict(make_spec(method, options or None, source=source, family=family).config)


def with_former_defaults(method: str, options: dict | None, family: str = "sparse") -> dict:
    """A recorded run's options with each changed field it lacks set to its former default (a copy)."""
    out = copy.deepcopy(options or {})
    if not isinstance(out, dict):
        return out  # make_spec reports the malformed section
    for dotted, former in get_entry(method, family=family).former_defaults.items():
        path = tuple(dotted.split("."))
        if _get(out, path) is _MISSING:
            _set(out, path, copy.deepcopy(former))
    return out


def canonical_options(method: str, options: dict | None, family: str = "sparse") -> dict:
    """``options`` as a stage's settings hash reads them (a copy): each changed field written out with the
    value it takes now (given, else the current default), and dropped where that is the former default."""
    out = copy.deepcopy(options or {})
    if not isinstance(out, dict):
        return out
    entry = get_entry(method, family=family)
    defaults = to_dict(entry.config_cls())
    for dotted, former in entry.former_defaults.items():
        path = tuple(dotted.split("."))
        value = _get(out, path)
        if value is _MISSING:
            value = _get(defaults, path)
        if value == former:
            _pop(out, path)
        else:
            _set(out, path, value)
    return out
