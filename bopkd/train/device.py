"""Where a run computes: the torch device, its autocast dtype and a readable name for reports."""

from __future__ import annotations

import torch

from bopkd.errors import BopkdError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's GPU) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BopkdError(f"device {name!r} asked for, but CUDA is not available here: use --device cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``RunConfig.amp``: bf16 on CUDA for ``auto``, fp16 for ``fp16``; None (fp32)
    on the CPU or when ``off``."""
    if device.type != "cuda" or amp == "off":
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def device_name(device: torch.device) -> str:
    """A human-readable device name (``NVIDIA H100 80GB HBM3``, ``cpu (x86_64, 2 threads)``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
