"""Seeds and random-number-generator state for reproducible runs.

Everything random in training is seeded from the run's ``seed``: python's ``random``, numpy's global
state, torch (CPU and CUDA), OpenCV (``cv2.setRNGSeed``: its RANSAC in PnP), the data order
(:class:`~bopkd.train.sampler.ResumableBatchSampler`) and each item's augmentation
(``BopTorchDataset`` seeds a generator per item). DataLoader workers get distinct derived seeds from
:func:`seed_worker`, as PyTorch's reproducibility notes recommend
(https://pytorch.org/docs/stable/notes/randomness.html).

:func:`rng_state` / :func:`set_rng_state` capture and restore the global generators in a form that
``torch.load(weights_only=True)`` accepts (tensors, lists, ints, strings), so a resumed run continues
with the exact random stream of an uninterrupted one.
"""

from __future__ import annotations

import os
import random

import cv2
import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy, torch (all devices) and OpenCV; optionally force deterministic algorithms."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state that third-party code draws from
    torch.manual_seed(seed)
    cv2.setRNGSeed(seed % 2**31)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of DataLoaders: derive python/numpy/OpenCV seeds from the worker's torch seed
    (which the DataLoader sets from its ``generator``)."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)  # noqa: NPY002
    cv2.setRNGSeed(int(s % 2**31))


def opencv_single_threaded() -> None:
    """Turn OpenCV's own thread pool off before DataLoader workers are forked.

    A worker forked while the parent's OpenCV pthreads pool exists inherits its locks but not its threads;
    changing the thread count there deadlocks (seen with OpenCV 5 and ``cv2.setNumThreads`` in a
    ``worker_init_fn``). Workers are parallel already, so OpenCV runs sequentially in them (the usual
    remedy, as in detectron2 and mmcv).
    """
    cv2.setNumThreads(0)


def rng_state() -> dict:
    """The global RNG states as tensors, lists and ints (safe for ``torch.load(weights_only=True)``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "python": [int(version), [int(v) for v in mt], None if gauss is None else float(gauss)],
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when the devices match)."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (name, np.asarray(keys, dtype=np.int64).astype(np.uint32), int(pos), int(has_gauss), float(cached))
    )
    torch.set_rng_state(
        state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else torch.tensor(state["torch"])
    )
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.cpu() for c in cuda])


def make_generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed`` (for DataLoader worker seeds)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g
