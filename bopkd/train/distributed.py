"""Multi-process (DDP) training through torchrun.

``bopkd train ... --gpus N`` re-launches the same command under ``torch.distributed.run`` (torchrun)
with N processes (:func:`relaunch_with_torchrun`; an argument list, no shell). Each process reads its
rank from the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), joins the process
group (NCCL on CUDA, gloo on the CPU), trains on its shard of every batch and averages gradients
(``DistributedDataParallel``; the trainable modules of losses, such as FKD's adapters, are broadcast at the
start and their gradients averaged by hand). Logging and checkpoints happen on rank 0 only.

The same works directly: ``torchrun --nproc_per_node N -m bopkd train teacher ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, local rank and world size from torchrun's environment (1 process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("WORLD_SIZE" in os.environ and "RANK" in os.environ)


def init(device_type: str) -> DistInfo:
    """Join the process group when started by torchrun with several processes; returns this process's info."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over processes (``t`` itself when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers of ``module`` to every process (no-op when not distributed).

    ``DistributedDataParallel`` does this for the network it wraps; the trainable modules of a loss (FKD's
    1x1 adapters) are called inside the loss, not through DDP's forward, so they are synchronised by hand.
    """
    if dist.is_available() and dist.is_initialized():
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=src)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over processes, in place, in one flat all-reduce.

    For parameters outside the DDP-wrapped network (see :func:`broadcast_module`): with equal initial
    values and averaged gradients, every process takes the same optimiser step, as DDP's own parameters do.
    A parameter without a gradient on this process contributes zeros (it may have one on another).
    """
    if not (dist.is_available() and dist.is_initialized()) or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n


def gather_objects(obj) -> list:
    """``obj`` of every process, in rank order (``[obj]`` when not distributed); every rank must call it."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (used to stop all ranks together)."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag


def torchrun_prefix(nproc: int, master_port: int | None = None) -> list[str]:
    """The argument list that starts torchrun (``python -m torch.distributed.run``) with ``nproc`` local
    processes; append the program (a script path, or ``-m module``) and its arguments. Without
    ``master_port`` the c10d rendezvous picks a free port."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(int(nproc)),
    ]
    if master_port is not None:
        cmd += ["--master_port", str(int(master_port))]
    else:
        cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0"]
    return cmd


def torchrun_command(nproc: int, module_args: list[str], master_port: int | None = None) -> list[str]:
    """The argument list that runs ``python -m bopkd <module_args>`` under torchrun with ``nproc`` processes."""
    return [*torchrun_prefix(nproc, master_port), "-m", "bopkd", *module_args]


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``bopkd <argv>`` (``--gpus`` removed by the caller) under torchrun; returns its exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(torchrun_command(nproc, argv), env=env, check=False).returncode


def strip_gpus_option(argv: list[str]) -> list[str]:
    """``argv`` without ``--gpus N`` / ``--gpus=N`` (so the re-launched processes do not re-launch)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        out.append(a)
    return out
