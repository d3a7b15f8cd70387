"""Training checkpoints: written atomically, read as untrusted input.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so that it loads
with ``torch.load(..., weights_only=True)`` (no arbitrary code runs when a checkpoint from elsewhere is
opened)::

    format        "bopkd-checkpoint"
    version       CHECKPOINT_VERSION
    iteration     optimiser steps done
    model         model state_dict (unwrapped from DDP)
    optimizer     optimizer state_dict
    scheduler     lr scheduler state_dict
    scaler        GradScaler state_dict (fp16 AMP; empty otherwise)
    extra_modules state_dicts of trainable loss modules (distillation adapters), by name
    rng           global RNG states (bopkd.train.seed.rng_state) of rank 0
    rng_ranks     DDP runs: the RNG states of every rank, in rank order
    config        the run config as a plain dict (bopkd.train.config.to_dict)
    versions      bopkd / torch / python / numpy / opencv versions
    info          free-form plain metadata (parameters, MACs, best loss, ...)

Files are written to a temporary sibling and renamed (:func:`bopkd.utils.atomic.atomic_open`), so a
run killed mid-write keeps its previous checkpoint. A missing, truncated or foreign file raises a
one-line :class:`~bopkd.errors.BopkdError`.
"""

from __future__ import annotations

import errno
import os
import pickle
import platform
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bopkd.errors import BopkdError, MissingFileError
from bopkd.utils.atomic import atomic_link, atomic_open

FORMAT = "bopkd-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED = ("format", "version", "iteration", "model", "config")

LAST = "last.pt"
FINAL = "final.pt"


def versions() -> dict[str, str]:
    import cv2

    from bopkd import __version__

    # str(): torch.__version__ is a TorchVersion, which weights_only loading rejects.
    return {
        "bopkd": str(__version__),
        "torch": str(torch.__version__),
        "python": str(platform.python_version()),
        "numpy": str(np.__version__),
        "opencv": str(cv2.__version__),
    }


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see the module docstring; ``format``/``version``/``versions`` are added) atomically."""
    path = Path(path)
    full = {"format": FORMAT, "version": CHECKPOINT_VERSION, "versions": versions(), **state}
    missing = [k for k in REQUIRED if k not in full]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    try:
        with atomic_open(path, "wb") as f:
            torch.save(full, f)
    except (OSError, RuntimeError) as e:
        raise _write_error(path, e) from e
    return path


def _write_error(path: Path, e: BaseException) -> BopkdError:
    """One line for a checkpoint that could not be written, with the root cause: torch wraps the file
    system's error (``ENOSPC``...) in a RuntimeError of its zip writer, keeping the OSError as the context."""
    cause = str(e).splitlines()[0] if str(e) else type(e).__name__
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            cause = "no space left on the device" if seen.errno == errno.ENOSPC else os.strerror(seen.errno)
            break
        seen = seen.__cause__ or seen.__context__
    return BopkdError(
        f"{path}: the checkpoint could not be written ({cause}); free space or give --out on another disk, "
        "then rerun with --resume (the previous checkpoint is kept)"
    )


def link_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Give the checkpoint file ``src`` the second name ``dst`` without a second copy on disk
    (:func:`bopkd.utils.atomic.atomic_link`): a finished run's ``final.pt`` and ``last.pt`` are the same
    state, and a darknet53 checkpoint with its AdamW moments is about 0.5 GB. A later
    :func:`save_checkpoint` to ``src`` renames a new file over that name, so ``dst`` keeps its content."""
    dst = Path(dst)
    try:
        atomic_link(src, dst)
    except OSError as e:
        raise _write_error(dst, e) from e
    return dst


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/final.pt``, else ``checkpoints/last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in (FINAL, LAST):
            for p in (path / "checkpoints" / name, path / name):
                if p.is_file():
                    return p
        raise MissingFileError(
            path / "checkpoints" / LAST,
            "this run directory has no checkpoint yet; train first (bopkd train ...)",
        )
    if not path.is_file():
        raise MissingFileError(
            path, "give a checkpoint .pt file or a run directory (bopkd train ... --out RUN_DIR)"
        )
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        BopkdError: the file is missing, truncated, not a torch file, not a bopkd checkpoint, or from a
            newer bopkd (one line naming the file and the fix).
    """
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
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
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if ln.startswith("WeightsUnpickler error")), lines[0] if lines else ""
        )
        first = detail or type(e).__name__
        raise BopkdError(
            f"{path}: not a readable bopkd checkpoint ({first[:160]}); the file is truncated, corrupt or not a "
            "checkpoint: use another one (e.g. checkpoints/last.pt of the run) or train again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BopkdError(
            f"{path}: not a bopkd checkpoint (no '{FORMAT}' marker); give a file written by bopkd train"
        )
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise BopkdError(
            f"{path}: checkpoint format {state.get('version')} is newer than this bopkd reads ({CHECKPOINT_VERSION}); "
            "upgrade bopkd"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise BopkdError(f"{path}: checkpoint lacks {', '.join(missing)}; it is incomplete, use another one")
    return state


def load_model_weights(model: torch.nn.Module, state: dict, path: str | Path = "checkpoint") -> None:
    """Load a checkpoint's model weights strictly, with a one-line error when they do not fit the model."""
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else ""
        raise BopkdError(
            f"{path}: the weights do not fit the model built from its config ({detail[:200]}); the checkpoint was "
            "written by another model version"
        ) from None
