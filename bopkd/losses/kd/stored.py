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

from bopkd.config import lookup, pop_path, set_path, to_dict
from bopkd.errors import BopkdError
from bopkd.losses.kd.registry import get_entry, make_spec

_MISSING = object()


def resolved_options(method: str, options: dict | None, family: str = "sparse", source: str = "kd") -> dict:
    """Every field of the method's config: ``options`` over the defaults (a plain nested dict)."""
    return to_dict(make_spec(method, options or None, source=source, family=family).config)


def with_former_defaults(method: str, options: dict | None, family: str = "sparse") -> dict:
    """A recorded run's options with each changed field it lacks set to its former default (a copy).

    Options of an unknown method or family, or that are not a mapping, are returned as given: the readers
    (:func:`~bopkd.losses.kd.registry.make_spec`) name what is wrong with them.
    """
    out = copy.deepcopy(options or {})
    try:
        former = get_entry(method, family=family).former_defaults
    except BopkdError:
        return out
    if not isinstance(out, dict):
        return out
    for dotted, value in former.items():
        path = dotted.split(".")
        if lookup(out, path, _MISSING) is _MISSING:
            set_path(out, path, copy.deepcopy(value))
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
        path = dotted.split(".")
        value = lookup(out, path, _MISSING)
        if value is _MISSING:
            value = lookup(defaults, path)
        if value == former:
            pop_path(out, path)
        else:
            set_path(out, path, value)
    return out
