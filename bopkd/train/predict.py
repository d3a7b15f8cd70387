"""Inference on a BOP test split and export as a BOP'19 result CSV (``bopkd predict``).

For every image with test targets (``test_targets_bop19.json``): the network runs on the whole image
(full mode) or on the zoom-in crop of each target instance (crop mode; boxes from the GT, an *oracle*
protocol, or from a BOP default-detections JSON); the confident cells of each class give 2D keypoints
(``bopkd.models.decode``), which are mapped back to the original image and turned into a pose by
EPnP + RANSAC with the original intrinsics (``bopkd.models.predict.poses_from_detections``, seeded),
only for the targets' objects (in crop mode: only the crop's object). Estimates
of the targets' objects are written through the BOP CSV writer (``bopkd.eval.submission``) as
``OUT/<method>_<dataset>-<split>.csv``, with a sidecar ``<csv>.json`` describing the model (parameters,
MACs, ms per image, device) and the protocol.

Time per image (the CSV's ``time`` column, the same on every row of an image): wall time of the
forward pass (batched; a batch's time is shared equally by its images or crops), decoding and PnP
for that image's inputs, plus, with detections, the detector's own time from the detections file (BOP
asks for the time of the whole image, detection included; ``-1``, unknown, when the file gives no time
for the image). Reading the image file and the crop/resize (done by DataLoader workers) are not
included; the sidecar says so. Per image, at most the BOP toolkit's ``max_num_estimates_per_image``
(100) estimates are written, the highest-scored (:mod:`bopkd.eval.bop_site`).

Protocols (the sidecar's ``protocol``; GT boxes also mark the method name):

- ``full-image``: the whole image, no boxes.
- ``oracle-gt-boxes``: crop mode with boxes from the GT; not a fair comparison with detector-based
  methods, so the method name gets ``-oracle-gt-boxes`` and every output says so.
- ``detections``: crop mode with boxes from a detections file.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bopkd.data.collate import collate_batch
from bopkd.data.dataset import BopDataset
from bopkd.data.detections import detection_times, load_detections
from bopkd.data.torch_dataset import BopTorchDataset
from bopkd.errors import BopkdError
from bopkd.eval.bop_site import ORACLE, keep_best_per_image, max_estimates_per_image, site_method_name
from bopkd.eval.naming import ResultName
from bopkd.eval.submission import Estimate, write_submission
from bopkd.train import checkpoint as ckpt
from bopkd.train.config import PredictConfig, RunConfig, build_config, to_dict
from bopkd.train.seed import opencv_single_threaded
from bopkd.train.trainer import device_name, resolve_device
from bopkd.utils.atomic import atomic_write_json


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


def protocol_of(cfg: RunConfig, detections: str | Path | None) -> str:
    if cfg.data.mode != "crop":
        return "full-image"
    return "detections" if detections is not None else ORACLE


def default_method(cfg: RunConfig) -> str:
    """``bopkd-teacher-<backbone>`` or ``bopkd-student-<backbone>-kd-<method>`` in the characters the BOP
    site accepts (letters, digits, '-'; ``fkd+ot`` -> ``fkdot``)."""
    if cfg.role == "teacher":
        name = f"bopkd-teacher-{cfg.model.backbone}"
    else:
        name = f"bopkd-student-{cfg.model.backbone}-kd-{cfg.kd.method}"
    return site_method_name(re.sub(r"[^A-Za-z0-9+]+", "-", name))


def method_name(cfg: RunConfig, method: str | None, protocol: str) -> str:
    """The result file's method; GT-box (oracle) results always carry ``-oracle-gt-boxes``."""
    name = method or default_method(cfg)
    if protocol == ORACLE and ORACLE not in name:
        name = f"{name}-{ORACLE}"
    return name


def result_name(method: str, dataset: BopDataset, split: str) -> ResultName:
    """``METHOD_DATASET-SPLIT[-TYPE]``: a split folder ``test_primesense`` is split ``test`` of type ``primesense``."""
    base, _, typ = split.partition("_")
    return ResultName(method=method, dataset=dataset.name, split=base, split_type=typ or None)


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
    model = build_model(cfg.model.without_pretrained())  # the checkpoint's weights replace pretrained ones
    ckpt.load_model_weights(model, state, path)
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, cfg, state, path


def estimate_poses(
    outputs: dict,
    metas: list[dict],
    targets: dict[tuple[int, int], set[int]],
    obj_ids: list[int],
    corners: np.ndarray,
    p: PredictConfig,
    seed: int = 0,
    positive_lambda: float = 1.0,
) -> list[list]:
    """Poses of one batch of network outputs: decode the confident cells, then EPnP-RANSAC per class.

    Only the target objects of each image are solved; a crop (``meta["obj_id"]``) answers for its own
    object only (its class is known from its box, as in WDRNet+'s zoom-in inference).

    Args:
        outputs: the network's outputs for the batch (float32 ``cls_logits`` and ``kpts``).
        metas: the batch's meta dicts (``K_orig``, ``affine``, ``scene_id``, ``im_id``[, ``obj_id``]).
        targets: (scene_id, im_id) -> target object ids.
        obj_ids: class index -> object id; corners: (C, 8, 3) mm box corners per class.
    Returns:
        per input, a list of :class:`bopkd.models.predict.PoseEstimate`.
    """
    from bopkd.models.decode import decode
    from bopkd.models.predict import poses_from_detections

    dets = decode(outputs, score_th=p.score_th, num_cells=p.num_cells, positive_lambda=positive_lambda)
    cls_of = {o: c for c, o in enumerate(obj_ids)}
    out = []
    for b, m in enumerate(metas):
        wanted = targets.get((int(m["scene_id"]), int(m["im_id"])), set())
        if "obj_id" in m:
            keep = {cls_of[int(m["obj_id"])]} if int(m["obj_id"]) in wanted else set()
        else:
            keep = {c for c, o in enumerate(obj_ids) if o in wanted}
        out.append(
            poses_from_detections(
                {c: d for c, d in dets[b].items() if c in keep},
                corners,
                obj_ids,
                m["K_orig"],
                m["affine"],
                reproj_err=p.reproj_err,
                pnp_iters=p.ransac_iters,
                seed=seed,
                refine=p.refine,
            )
        )
    return out


def _infer(model, loader, dev, cfg: RunConfig, bop: BopDataset, desc: str, progress: bool):
    """Run the network, decoding and PnP over the loader, for the targets' objects of ``bop``.

    Returns ``(per_image_s, found, n_inputs)``: seconds per (scene_id, im_id) (a batch's wall time shared
    equally by its inputs), the estimates ``(key, obj_id, score, R, t)`` and the number of inputs.
    """
    from tqdm import tqdm

    from bopkd.models.predict import class_corners

    obj_ids = list(model.obj_ids)
    corners = class_corners(obj_ids, bop.models_info())
    targets: dict[tuple[int, int], set[int]] = defaultdict(set)
    for t in bop.targets:
        targets[(t.scene_id, t.im_id)].add(t.obj_id)

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and cfg.amp != "off" else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    p = cfg.predict
    per_image_s: dict[tuple[int, int], float] = defaultdict(float)
    found: list[tuple[tuple[int, int], int, float, np.ndarray, np.ndarray]] = []
    n_inputs = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
            metas = batch["meta"]
            sync()
            t0 = time.perf_counter()
            images = batch["images"].to(dev, non_blocking=True)
            if dev.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            if amp is not None:
                with amp:
                    outputs = model(images)
                outputs = {
                    **outputs,
                    "cls_logits": outputs["cls_logits"].float(),
                    "kpts": outputs["kpts"].float(),
                }
            else:
                outputs = model(images)
            poses = estimate_poses(
                outputs, metas, targets, obj_ids, corners, p, cfg.seed, cfg.loss.positive_lambda
            )
            sync()
            share = (time.perf_counter() - t0) / len(metas)
            n_inputs += len(metas)
            for m, ests in zip(metas, poses, strict=True):
                key = (int(m["scene_id"]), int(m["im_id"]))
                per_image_s[key] += share
                detected = m.get("box_source") == "detections"
                for e in ests:
                    # With detections, a pose's score is its cells' score times the box's score.
                    score = e.score * float(m.get("score", 1.0)) if detected else e.score
                    found.append((key, e.obj_id, score, e.R, e.t))
    return per_image_s, found, n_inputs


def _loader(cfg: RunConfig, obj_ids, bop: BopDataset, split: str, dets, dev: torch.device):
    """The test split's dataset (target instances; crops around GT boxes or detections) and its loader."""
    data_cfg = cfg.data
    data_cfg.min_visib_fract = 0.0  # every target instance with a visible box (oracle boxes)
    if cfg.predict.crop_pad is not None:
        data_cfg.crop_pad = cfg.predict.crop_pad
    ds = BopTorchDataset(
        data_cfg,
        obj_ids,
        split=split,
        train=False,
        targets_only=True,
        box_source="detections" if dets is not None else "gt",
        detections=dets,
        need_masks=False,
        bop=bop,
    )
    if data_cfg.num_workers > 0:
        opencv_single_threaded()
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.predict.batch_size,
        shuffle=False,
        num_workers=data_cfg.num_workers,
        collate_fn=collate_batch,
        pin_memory=dev.type == "cuda",
    )
    return ds, loader


def image_times(
    own_s: dict[tuple[int, int], float], det_times: dict[tuple[int, int], float] | None
) -> dict[tuple[int, int], float]:
    """The CSV's time per image: our own seconds plus the detector's from the detections file (BOP asks
    for the whole image's time, detection included); -1 where the detector's time is unknown."""
    if det_times is None:
        return dict(own_s)
    out = {}
    for k, v in own_s.items():
        d = det_times.get(k, 0.0)
        out[k] = -1.0 if d < 0 else v + d
    return out


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
        method: method name of the result file (default from the run; see :func:`method_name`).
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
    ds, loader = _loader(cfg, model.obj_ids, bop, split, dets, dev)
    per_image_s, found, n_inputs = _infer(model, loader, dev, cfg, bop, f"predict {name}", progress)
    for key in ds.image_keys():
        per_image_s.setdefault(key, 0.0)
    times = image_times(per_image_s, None if dets is None else detection_times(dets))
    # The BOP toolkit evaluates at most max_estimates_per_image rows per image: keep the best ones.
    keep = keep_best_per_image(
        [f[0] for f in found], [f[2] for f in found], max_estimates_per_image(bop.name)
    )
    estimates = [Estimate(k[0], k[1], o, s, R, t, times[k]) for k, o, s, R, t in (found[i] for i in keep)]
    csv_path = Path(out) / name.filename
    if not estimates:
        raise BopkdError(
            f"{path}: the model found no target object in any of the {len(times)} images (no cell above "
            f"predict.score_th={cfg.predict.score_th}); nothing to write to {csv_path}: train longer or lower --set predict.score_th"
        )
    write_submission(csv_path, estimates)
    known = [v for v in times.values() if v >= 0]
    ms = 1000.0 * float(np.mean(known or list(per_image_s.values())))
    sidecar = csv_path.with_name(csv_path.name + ".json")
    info = _sidecar_info(model, cfg, state, path, ds, dev, name, split, protocol, detections)
    info.update(
        ms_per_image=ms,
        n_images=len(times),
        n_time_unknown=len(times) - len(known),
        n_inputs=n_inputs,
        n_estimates=len(estimates),
    )
    atomic_write_json(sidecar, info)
    return PredictResult(csv_path, sidecar, len(times), n_inputs, len(estimates), ms, protocol)


def _sidecar_info(model, cfg: RunConfig, state, path, ds, dev, name, split, protocol, detections) -> dict:
    """The sidecar's description of the model, protocol and run (the counts are added by the caller)."""
    from bopkd.models.profile import count_macs, count_parameters

    try:
        macs = count_macs(model, (ds.input_size[1], ds.input_size[0]))
    except Exception:  # FLOP counting is best effort (an unsupported op only loses the figure)
        macs = None
    cfg_d = state["config"]
    amp = dev.type == "cuda" and cfg.amp != "off"
    return {
        "result_name": str(name),
        "method": name.method,
        "dataset": name.dataset,
        "split": split,
        "protocol": protocol,
        "oracle": protocol == ORACLE,
        "box_source": "gt" if protocol == ORACLE else ("detections" if protocol == "detections" else None),
        "detections": None if detections is None else str(detections),
        "checkpoint": str(path),
        "iteration": int(state["iteration"]),
        "role": cfg.role,
        "backbone": cfg.model.backbone,
        "kd_method": cfg.kd.method,
        "input_mode": cfg.data.mode,
        "input_size": list(ds.input_size),
        "params": count_parameters(model),
        "macs": macs,
        "ms_per_image": None,
        "time_includes": "forward (batched, shared per input), decoding, PnP-RANSAC"
        + (", detector time from the detections file" if protocol == "detections" else ""),
        "time_excludes": "reading the image file, crop/resize (DataLoader)",
        "device": device_name(dev),
        "batch_size": cfg.predict.batch_size,
        "amp": "bf16" if amp else "fp32",
        "n_images": None,
        "n_inputs": None,
        "n_estimates": None,
        "predict": to_dict(cfg.predict),
        "trained_iterations": int(cfg_d.get("iters", 0)) if isinstance(cfg_d, dict) else None,
        "versions": ckpt.versions(),
    }
