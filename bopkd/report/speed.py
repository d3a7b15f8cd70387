"""One speed figure per architecture, so that identical networks report identical speeds.

``bopkd predict`` times every submission on its own (forward, decoding and PnP of that run, on a machine that
may be busy with other jobs), so identical students report different ms/image. The report instead gives every
row of one architecture (backbone, ``model`` section of the run config, input mode and size) the same figures:

* ``ms/image`` (forward pass): measured once per architecture by :func:`measure_forward`: a network built
  from the run config (random weights: the operations and their cost do not depend on the values), in eval
  mode without gradients, on a zero batch of ``batch_size`` inputs of the submission's input size; ``warmup``
  untimed batches, then the **median** wall time of ``batches`` (at least 20) timed batches divided by the
  batch size. On CUDA the inputs are channels-last and the forward runs under bf16 autocast unless the
  config's ``amp`` is ``off``, as in ``bopkd predict``; the time is taken between ``torch.cuda.synchronize``
  calls. On the CPU every architecture runs with the report process's torch thread count (not each run's
  ``cpu_threads``), so that the figures compare; the device name states the count.
* ``predict ms/image`` (forward, decoding and PnP-RANSAC as ``bopkd predict`` measured them): the **median**
  over the sidecars of all submissions of the architecture.

When an architecture cannot be built (no run config with a ``model`` section, no input size in the sidecars,
or the report is asked not to measure), its ``ms/image`` is the median of its sidecars' and
:attr:`Speed.method` says so.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass, fields

from bopkd.errors import BopkdError

#: Timed batches (median taken) and untimed warm-up batches of :func:`measure_forward`.
BATCHES = 20
WARMUP = 5


@dataclass
class Speed:
    """The speed figures shared by all rows of one architecture."""

    ms_per_image: float | None
    device: str
    method: str  # how ms_per_image was obtained, in words
    predict_ms_per_image: float | None = None  # median over the architecture's sidecars
    n_sidecars: int = 0


def arch_key(config: dict | None, backbone: str, mode: str | None, input_size) -> str:
    """Key of an architecture: the run config's ``model`` section (or the backbone name without a config),
    the input mode and the input size ``(W, H)``; for a dense run (``family: dense``) also its family and
    the network's ``dense`` settings (bits, output size, decoder widths)."""
    model = (config or {}).get("model") if isinstance((config or {}).get("model"), dict) else None
    d = {"model": model or {"backbone": backbone}, "mode": mode, "size": list(input_size or [])}
    if (config or {}).get("family", "sparse") == "dense":
        dense = config.get("dense") if isinstance(config.get("dense"), dict) else {}
        d["dense"] = {k: dense.get(k) for k in ("bits", "out_size", "decoder_channels")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _model_from_config(config: dict, source: str):
    """The network a run config describes (a dense one for ``family: dense``), without pretrained weights."""
    from bopkd.models.posenet import ModelConfig, build_model

    m = config.get("model")
    if not isinstance(m, dict):
        raise BopkdError(
            f"{source}: the run config has no model section; cannot build the network to time it"
        )
    names = {f.name for f in fields(ModelConfig)}
    mc = ModelConfig(**{k: v for k, v in m.items() if k in names})
    if config.get("family", "sparse") == "dense":
        return _dense_model_from_config(config, mc, source)
    mc.pretrained = False  # timing only: no weight download
    return build_model(mc.validate(source))


def _dense_model_from_config(config: dict, mc, source: str):
    """The :class:`bopkd.models.dense.DensePoseNet` of a dense run config (timing only: no weights)."""
    from dataclasses import replace

    from bopkd.config import from_dict
    from bopkd.models.backbones import resolve_norm
    from bopkd.models.dense import build_dense_model
    from bopkd.train.dense_config import DenseConfig

    net = from_dict(DenseConfig, config.get("dense") or {}, source=source).model_config(mc)
    return build_dense_model(replace(net, pretrained=False, norm=resolve_norm(net.norm, net.pretrained)))


def measure_forward(
    config: dict,
    input_size: tuple[int, int],
    device: str = "auto",
    batches: int = BATCHES,
    warmup: int = WARMUP,
    batch_size: int = 1,
    source: str = "the run config",
) -> tuple[float, str]:
    """``(ms per image, device name)``: median forward time per input (see the module docstring).

    ``input_size`` is ``(W, H)`` as the sidecar's ``input_size``.
    """
    return measure_forwards([(config, input_size, source)], device, batches, warmup, batch_size)[0]


def measure_forwards(
    items: list[tuple[dict, tuple[int, int], str]],
    device: str = "auto",
    batches: int = BATCHES,
    warmup: int = WARMUP,
    batch_size: int = 1,
) -> list[tuple[float, str]]:
    """:func:`measure_forward` of several architectures ``(config, (W, H), source)``, interleaved.

    Every architecture is warmed up, then each of the ``batches`` rounds times one batch of every
    architecture in turn, so that a machine busy with other work slows all of them alike; each figure is
    the median over the rounds.
    """
    import torch

    from bopkd.train.device import device_name, resolve_device

    if batches < 20:
        raise BopkdError(
            f"{items[0][2] if items else 'speed'}: speed needs at least 20 timed batches for a stable median, "
            f"got {batches}"
        )
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    runs = []
    for config, input_size, source in items:
        model = _model_from_config(config, source).to(dev).eval()
        x = torch.zeros(batch_size, 3, int(input_size[1]), int(input_size[0]), device=dev)
        if cuda:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        runs.append((model, x, cuda and config.get("amp") != "off"))
    times: list[list[float]] = [[] for _ in runs]
    with torch.no_grad():
        for i in range(warmup + batches):
            for j, (model, x, amp) in enumerate(runs):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    sync()
                    t0 = time.perf_counter()
                    model(x)
                    sync()
                if i >= warmup:
                    times[j].append(time.perf_counter() - t0)
    name = device_name(dev)
    return [(1000.0 * statistics.median(t) / batch_size, name) for t in times]


def architecture_speeds(results, device: str | None = "auto") -> dict[str, Speed]:
    """:class:`Speed` per architecture key of ``results`` (:class:`bopkd.report.collect.ModelResult`).

    ``device``: where to time the forward pass (``auto``: CUDA when available, else the CPU); None: do not
    measure, use the median of the sidecars.
    """
    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(r.arch_key, []).append(r)
    out = {}
    todo = []  # (key, run config's result) of the architectures to time, timed together
    for key, rs in groups.items():
        cfg_r = next(
            (r for r in rs if r.input_size and isinstance((r.run_config or {}).get("model"), dict)), None
        )
        if device is not None and cfg_r is not None:
            todo.append((key, cfg_r))
    measured: dict[str, tuple[float, str]] = {}
    failed: dict[str, str] = {}
    if todo:
        try:
            figs = measure_forwards(
                [(r.run_config, r.input_size, str(r.run_dir / "config.yaml")) for _, r in todo], device
            )
            measured = {key: f for (key, _), f in zip(todo, figs, strict=True)}
        except (BopkdError, RuntimeError, ValueError):  # time them one by one to find the one that fails
            for key, r in todo:
                try:
                    measured[key] = measure_forward(
                        r.run_config, r.input_size, device, source=str(r.run_dir / "config.yaml")
                    )
                except (
                    BopkdError,
                    RuntimeError,
                    ValueError,
                ) as e:  # e.g. a backbone this install cannot build
                    failed[key] = f"; timing failed: {(str(e).splitlines() or [type(e).__name__])[0]}"
    for key, rs in groups.items():
        side = [float(r.ms_per_image) for r in rs if r.ms_per_image is not None]
        side_dev = sorted({r.device for r in rs if r.device})
        predict_ms = statistics.median(side) if side else None
        if key in measured:
            ms, name = measured[key]
            how = (
                f"forward pass, median of {BATCHES} batches of 1 after {WARMUP} warm-up, architectures "
                "interleaved, timed by the report"
            )
            out[key] = Speed(ms, name, how, predict_ms, len(side))
            continue
        how = f"median over {len(side)} predict sidecars (forward, decoding, PnP){failed.get(key, '')}"
        out[key] = Speed(predict_ms, ", ".join(side_dev), how, predict_ms, len(side))
    return out
