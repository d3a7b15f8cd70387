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
    """The network of a run: ``cfg.model``'s :class:`~bopkd.models.posenet.PoseNet` for the sparse family, the
    :class:`~bopkd.models.dense.DensePoseNet` of ``cfg.dense.model_config(cfg.model)`` for the dense one."""
    if cfg.family == "dense":
        from bopkd.models.dense import build_dense_model

        return build_dense_model(cfg.dense.model_config(cfg.model))
    from bopkd.models.posenet import build_model

    return build_model(cfg.model)


def _network_of_checkpoint(config: dict, p: Path) -> nn.Module:
    """The untrained network a checkpoint's run config describes, built without pretrained weights."""
    from dataclasses import replace

    from bopkd.models.backbones import resolve_norm
    from bopkd.models.posenet import ModelConfig, build_model

    model_d = config.get("model")
    if not isinstance(model_d, dict):
        raise BopkdError(
            f"{p}: the checkpoint's config has no model section; it was not written by bopkd train"
        )
    # The checkpoint's weights replace any pretrained ones: build without reading them (no download, no file).
    model_cfg = from_dict(ModelConfig, model_d, source=f"{p} (model config)")
    family = config.get("family", "sparse")
    if family == "sparse":
        return build_model(model_cfg.without_pretrained())
    if family != "dense":
        raise BopkdError(
            f"{p}: the checkpoint's family {family!r} is unknown: use a checkpoint of bopkd train"
        )
    from bopkd.models.dense import build_dense_model
    from bopkd.train.dense_config import DenseConfig

    dense = from_dict(DenseConfig, config.get("dense") or {}, source=f"{p} (dense config)")
    net_cfg = dense.model_config(model_cfg)
    return build_dense_model(
        replace(net_cfg, pretrained=False, norm=resolve_norm(net_cfg.norm, net_cfg.pretrained))
    )


def load_frozen_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A network from a checkpoint (or run directory), in eval mode with gradients off (a teacher); the
    checkpoint's ``family`` (sparse when absent) picks the kind of network.

    Returns:
        ``(model, checkpoint_state)``.
    """
    state = ckpt.load_checkpoint(path)
    p = ckpt.resolve_checkpoint(path)
    config = state["config"] if isinstance(state["config"], dict) else {}
    model = _network_of_checkpoint(config, p)
    ckpt.load_model_weights(model, state, p)
    model.to(device).eval()
    model.requires_grad_(False)
    return model, state
