"""Inference on a BOP test split and export as a BOP'19 result CSV (``bopkd predict``).

For every image with test targets (``test_targets_bop19.json``): the network runs on the whole image
(full mode) or on the zoom-in crop of each target instance (crop mode; boxes from the GT, an *oracle*
protocol, or from a BOP default-detections JSON); the confident cells of each class give 2D keypoints
(``bopkd.models.decode``), which are mapped back to the original image and turned into a pose by
EPnP + RANSAC with the original intrinsics (:mod:`bopkd.infer.poses`, seeded), only for the targets'
objects (in crop mode: only the crop's object); the loop is :mod:`bopkd.infer.loop`. Estimates of the
targets' objects are written by the BOP CSV writer (:mod:`bopkd.infer.export`) as
``OUT/<method>_<dataset>-<split>.csv``, with a sidecar ``<csv>.json`` describing the model (parameters,
MACs, ms per image, device) and the protocol (:class:`bopkd.infer.record.PredictionRecord`).

Time per image (the CSV's ``time`` column, the same on every row of an image): wall time of the
forward pass (batched; a batch's time is shared equally by its images or crops), decoding and PnP
for that image's inputs, plus, with detections, the detector's own time from the detections file (BOP
asks for the time of the whole image, detection included; ``-1``, unknown, when the file gives no time
for the image). Reading the image file and the crop/resize (done by DataLoader workers) are not
included; the sidecar says so. Per image, at most the BOP toolkit's ``max_num_estimates_per_image``
(100) estimates are written, the highest-scored (:mod:`bopkd.eval.bop_site`).

Protocols (``full-image``, ``oracle-gt-boxes``, ``detections``) and result names: :mod:`bopkd.infer.naming`.

A checkpoint of the dense family (``family: dense``, ZebraPose-style surface codes) runs in crop mode
through :mod:`bopkd.infer.dense_predict` (mask and code decoding, PnP-RANSAC with ``dense.pnp``) and writes
the same CSV and sidecar, whose ``family`` is ``dense``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bopkd.config import to_dict
from bopkd.data.dataset import BopDataset
from bopkd.data.detections import detection_times, load_detections
from bopkd.errors import BopkdError
from bopkd.eval.bop_site import ORACLE
from bopkd.infer.dense_predict import build_dense_network, code_tables, run_dense_inference, run_family
from bopkd.infer.export import best_estimates, image_times, mean_ms_per_image, write_submission
from bopkd.infer.loop import run_inference, split_loader
from bopkd.infer.naming import method_name, protocol_of, result_name
from bopkd.infer.record import PredictionRecord, sidecar_path
from bopkd.train import checkpoint as ckpt
from bopkd.train.config import RunConfig, build_config
from bopkd.train.device import device_name, resolve_device


@dataclass
class PredictResult:
    """What :func:`predict` wrote and measured."""

    csv: Path
    sidecar: Path
    n_images: int
    n_inputs: int
    n_estimates: int
    ms_per_image: float
    protocol: str


def load_for_inference(checkpoint: str | Path, device: torch.device, overrides: dict | None = None, sets=()):
    """``(model, cfg, state, path)``: the checkpoint's network in eval mode on ``device``."""
    from bopkd.models.posenet import build_model

    path = ckpt.resolve_checkpoint(checkpoint)
    state = ckpt.load_checkpoint(path)
    if not isinstance(state["config"], dict):
        raise BopkdError(
            f"{path}: the checkpoint's config is not a mapping; it was not written by bopkd train"
        )
    try:
        cfg = build_config(base=state["config"], options=overrides or {}, overrides=list(sets))
    except BopkdError as e:
        raise BopkdError(f"{path}: {e}") from None
    if run_family(cfg) == "dense":
        model = build_dense_network(cfg)  # no pretrained weights: the checkpoint's replace them
    else:
        model = build_model(
            cfg.model.without_pretrained()
        )  # the checkpoint's weights replace pretrained ones
    ckpt.load_model_weights(model, state, path)
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, cfg, state, path


def predict(
    checkpoint: str | Path,
    *,
    dataset: str,
    root: str | Path = "bop_data",
    split: str | None = None,
    out: str | Path = "results",
    method: str | None = None,
    detections: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int | None = None,
    sets: tuple[str, ...] | list[str] = (),
    progress: bool = True,
) -> PredictResult:
    """Estimate the poses of a test split's targets and write the BOP CSV and its sidecar JSON.

    Args:
        checkpoint: checkpoint file or run directory.
        dataset, root: the dataset to run on (its objects must include the model's).
        split: split folder (default: the dataset's test split).
        out: output folder.
        method: method name of the result file (default from the run; see
            :func:`bopkd.infer.naming.method_name`).
        detections: BOP default-detections JSON (crop mode); without it crop mode uses GT boxes.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        batch_size: images (crops) per forward pass (default ``predict.batch_size``).
        num_workers: DataLoader workers (default ``data.num_workers``).
        sets: ``key=value`` overrides of the checkpoint's config (e.g. ``predict.score_th=0.2``).
    """
    dev = resolve_device(device)
    options: dict = {"data": {"dataset": dataset, "root": str(root)}}
    if batch_size is not None:
        options["predict"] = {"batch_size": int(batch_size)}
    if num_workers is not None:
        options["data"]["num_workers"] = int(num_workers)
    model, cfg, state, path = load_for_inference(checkpoint, dev, options, sets)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    bop = BopDataset(dataset, root)
    split = split or bop.test_split
    protocol = protocol_of(cfg, detections)
    name = result_name(method_name(cfg, method, protocol), bop, split)
    if detections is not None and cfg.data.mode != "crop":
        raise BopkdError(
            f"{path}: this model takes whole images (data.mode=full); detections are for crop-mode models: drop --detections"
        )
    dets = load_detections(detections) if detections is not None else None
    dense = run_family(cfg) == "dense"
    if dense and cfg.data.mode != "crop":
        raise BopkdError(
            f"{path}: a dense network takes zoom-in crops: set data.mode=crop (it is {cfg.data.mode})"
        )
    obj_ids = list(cfg.model.obj_ids) if dense else model.obj_ids
    ds, loader = split_loader(cfg, obj_ids, bop, split, dets, dev)
    if dense:
        luts = code_tables(cfg, bop, obj_ids)
        per_image_s, found, n_inputs = run_dense_inference(
            model, loader, dev, cfg, bop, luts, f"predict {name}", progress
        )
    else:
        per_image_s, found, n_inputs = run_inference(
            model, loader, dev, cfg, bop, f"predict {name}", progress
        )
    for key in ds.image_keys():
        per_image_s.setdefault(key, 0.0)
    times = image_times(per_image_s, None if dets is None else detection_times(dets))
    estimates = best_estimates(found, times, bop.name)
    csv_path = Path(out) / name.filename
    if not estimates and dense:
        raise BopkdError(
            f"{path}: the dense model gave no pose in any of the {len(times)} images (too few mask pixels above "
            f"dense.pnp.mask_threshold or no PnP solution); nothing to write to {csv_path}: train longer"
        )
    if not estimates:
        raise BopkdError(
            f"{path}: the model found no target object in any of the {len(times)} images (no cell above "
            f"predict.score_th={cfg.predict.score_th}); nothing to write to {csv_path}: train longer or lower --set predict.score_th"
        )
    write_submission(csv_path, estimates)
    ms = mean_ms_per_image(times, per_image_s)
    counts = {
        "ms_per_image": ms,
        "n_images": len(times),
        "n_inputs": n_inputs,
        "n_estimates": len(estimates),
        "n_time_unknown": sum(1 for v in times.values() if v < 0),
    }
    record = _record(model, cfg, state, path, ds, dev, name, split, protocol, detections, counts)
    sidecar = sidecar_path(csv_path)
    record.write(sidecar)
    return PredictResult(csv_path, sidecar, len(times), n_inputs, len(estimates), ms, protocol)


def _record(model, cfg: RunConfig, state, path, ds, dev, name, split, protocol, detections, counts: dict):
    """The :class:`PredictionRecord` of a run: model, protocol and settings, plus ``counts`` (time and
    numbers of images, inputs and estimates)."""
    from bopkd.models.profile import count_macs, count_parameters

    try:
        macs = count_macs(model, (ds.input_size[1], ds.input_size[0]))
    except Exception:  # FLOP counting is best effort (an unsupported op only loses the figure)
        macs = None
    cfg_d = state["config"]
    dense = run_family(cfg) == "dense"
    amp = dev.type == "cuda" and cfg.amp != "off"
    return PredictionRecord(
        result_name=str(name),
        method=name.method,
        dataset=name.dataset,
        split=split,
        protocol=protocol,
        oracle=protocol == ORACLE,
        box_source="gt" if protocol == ORACLE else ("detections" if protocol == "detections" else None),
        detections=None if detections is None else str(detections),
        checkpoint=str(path),
        iteration=int(state["iteration"]),
        role=cfg.role,
        backbone=cfg.model.backbone,
        kd_method=cfg.kd.method,
        input_mode=cfg.data.mode,
        input_size=tuple(ds.input_size),
        params=count_parameters(model),
        macs=macs,
        time_includes="forward (batched, shared per input), "
        + ("mask and code decoding" if dense else "decoding")
        + ", PnP-RANSAC"
        + (", detector time from the detections file" if protocol == "detections" else ""),
        time_excludes="reading the image file, crop/resize (DataLoader)",
        device=device_name(dev),
        batch_size=cfg.predict.batch_size,
        amp="bf16" if amp else "fp32",
        predict={**to_dict(cfg.predict), **({"dense_pnp": to_dict(cfg.dense.pnp)} if dense else {})},
        trained_iterations=int(cfg_d.get("iters", 0)),
        versions=ckpt.versions(),
        **counts,
        family="dense" if dense else "sparse",
    )
