"""Backbone weights from a local file (``model.pretrained: PATH``).

The file is read with ``torch.load(weights_only=True)`` (``.safetensors`` files with
``safetensors.torch.load_file``) and may hold:

- a state dict of the backbone or of a network containing it (``torch.save(module.state_dict(), PATH)``);
- a checkpoint dict with the state dict under ``model`` or ``state_dict`` (a bopkd checkpoint; Guo et al.'s
  ``latest.pth``, ``{'steps', 'model', 'optim', 'sched'}``).

Like Guo et al.'s ``build_model`` (GUOShuxuan/kd-6d-pose-adlp, ``libs/train_libs.py``: the entries whose
key is one of the model's are loaded), only the tensors whose key and shape match one of the backbone's are
loaded; the others keep their initial values. Keys are compared after

- dropping the prefixes a wrapper adds: ``module.`` (DataParallel), ``backbone.body.`` (a bopkd
  :class:`~bopkd.models.posenet.PoseNet`), ``body.`` (a bopkd :class:`~bopkd.models.backbones.Backbone`),
  ``backbone.`` (the reference's ``PoseModule``);
- reading ``_`` as ``.`` on both sides, so that a timm model's own keys (``stages.0.blocks...``) meet those of
  its ``features_only`` wrapper (``stages_0.blocks...``);
- for bopkd's DarkNet-tiny bodies, renaming pytorchcv's ``features.stage{i}.unit{j}.conv|bn.*`` (the
  ``darknet_tiny`` ImageNet weights of pytorchcv's model store that the reference loads) to
  ``stages.{i-1}.{j-1}.0|1.*``.

A file none of whose tensors fit is an error (one line naming the file); a partial load is reported in one
warning line.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from bopkd.errors import BopkdError, MissingFileError

#: The fix named by every error about a weights file.
FIX = (
    "set model.pretrained to a file saved with torch.save(backbone.state_dict(), PATH) "
    "(or a checkpoint holding it under 'model'), or to false"
)
_WRAPPER_PREFIXES = ("backbone.body.", "body.", "backbone.")
_PYTORCHCV_UNIT = re.compile(r"^features\.stage(\d+)\.unit(\d+)\.(conv|bn)\.(.+)$")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring); one-line :class:`BopkdError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, f"model.pretrained names no weights file: {FIX}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        ValueError,
        OSError,
        IndexError,
        KeyError,
        TypeError,
        AttributeError,  # a crafted pickle can break the safe unpickler anywhere
    ) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise BopkdError(f"{path}: not a readable weights file ({first[:160]}); {FIX}") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = (
        {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if isinstance(state, dict)
        else {}
    )
    if not tensors:
        raise BopkdError(f"{path}: holds no state dict of tensors; {FIX}")
    return tensors


def _canonical(key: str, pytorchcv_darknet: bool) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if pytorchcv_darknet:
        m = _PYTORCHCV_UNIT.match(key)
        if m:
            stage, unit, part, rest = m.groups()
            key = f"stages.{int(stage) - 1}.{int(unit) - 1}.{0 if part == 'conv' else 1}.{rest}"
    return key.replace("_", ".")


def match_state_dict(
    target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], pytorchcv_darknet: bool = False
) -> dict[str, torch.Tensor]:
    """The entries of ``source`` renamed to ``target``'s keys, where key (see the module docstring) and
    shape match; target keys that two source keys (or two target keys) could mean are left out."""
    by_name: dict[str, str | None] = {}
    for k in target:
        c = _canonical(k, False)
        by_name[c] = None if c in by_name else k
    out: dict[str, torch.Tensor] = {}
    taken: set[str] = set()
    for k, v in source.items():
        name = by_name.get(_canonical(k, pytorchcv_darknet))
        if name is None or tuple(v.shape) != tuple(target[name].shape):
            continue
        if name in taken:
            out.pop(name, None)
            continue
        taken.add(name)
        out[name] = v
    return out


def load_backbone_weights(body: nn.Module, path: str | Path, name: str) -> int:
    """Load the matching tensors of the file ``path`` into the backbone ``body``; returns how many.

    Raises:
        BopkdError: the file is missing, unreadable, or none of its tensors fits the backbone.
    """
    from bopkd.models.backbones import DarkNetTiny

    source = read_state_dict(path)
    target = body.state_dict()
    matched = match_state_dict(target, source, pytorchcv_darknet=isinstance(body, DarkNetTiny))
    if not matched:
        raise BopkdError(
            f"{path}: none of its {len(source)} tensors fits backbone {name!r} (its keys look like "
            f"{next(iter(source))!r}, the backbone's like {next(iter(target))!r}); {FIX}"
        )
    with torch.no_grad():
        for k, v in matched.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
    weights = [k for k in target if not k.endswith("num_batches_tracked")]
    missing = [k for k in weights if k not in matched]
    if missing:
        warnings.warn(
            f"{path}: loaded {len(weights) - len(missing)} of backbone {name!r}'s {len(weights)} tensors; "
            f"{len(missing)} keep their initial values (e.g. {missing[0]!r})",
            stacklevel=2,
        )
    return len(matched)
