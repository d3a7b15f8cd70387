"""The networks of a run: the one to train, built from its config, and a frozen one (a teacher) read
from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bopkd.config import from_dict
from bopkd.errors import BopkdError
from bopkd.train import checkpoint as ckpt
from bopkd.train.config import RunConfig


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def build_model_from_config(cfg: RunConfig) -> nn.Module:
    """The network of ``cfg.model`` (:func:`bopkd.models.posenet.build_model`)."""
    from bopkd.models.posenet import build_model

    return build_model(cfg.model)


def load_frozen_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A network from a checkpoint (or run directory), in eval mode with gradients off (a teacher).

    Returns:
        ``(model, checkpoint_state)``.
    """
    from bopkd.models.posenet import ModelConfig, build_model

    state = ckpt.load_checkpoint(path)
    p = ckpt.resolve_checkpoint(path)
    model_d = state["config"].get("model") if isinstance(state["config"], dict) else None
    if not isinstance(model_d, dict):
        raise BopkdError(
            f"{p}: the checkpoint's config has no model section; it was not written by bopkd train"
        )
    # The checkpoint's weights replace any pretrained ones: build without reading them (no download, no file).
    model_cfg = from_dict(ModelConfig, model_d, source=f"{p} (model config)")
    model = build_model(model_cfg.without_pretrained())
    ckpt.load_model_weights(model, state, p)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, state
