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
for that image's inputs, plus, with detections, the detector's own time from the detections file.
Reading the image file and the crop/resize (done by DataLoader workers) are not included; the sidecar
says so.

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
from bopkd.data.torch_dataset import BopTorchDataset
from bopkd.errors import BopkdError
from bopkd.eval.naming import ResultName
from bopkd.eval.submission import Estimate, write_submission
from bopkd.train import checkpoint as ckpt
from bopkd.train.config import PredictConfig, RunConfig, build_config, to_dict
from bopkd.train.seed import opencv_single_threaded
from bopkd.train.trainer import device_name, resolve_device
from bopkd.utils.atomic import atomic_write_json

ORACLE = "oracle-gt-boxes"


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
    """``bopkd-teacher-<backbone>`` or ``bopkd-student-<backbone>-kd-<method>`` (letters, digits, '-')."""
    if cfg.role == "teacher":
        name = f"bopkd-teacher-{cfg.model.backbone}"
    else:
        name = f"bopkd-student-{cfg.model.backbone}-kd-{cfg.kd.method}"
    return re.sub(r"[^A-Za-z0-9+-]+", "-", name).strip("-")


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
    from tqdm import tqdm

    from bopkd.models.predict import class_corners
    from bopkd.models.profile import count_macs, count_parameters

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
    data_cfg = cfg.data
    data_cfg.min_visib_fract = 0.0  # every target instance with a visible box (oracle boxes)
    if cfg.predict.crop_pad is not None:
        data_cfg.crop_pad = cfg.predict.crop_pad
    ds = BopTorchDataset(
        data_cfg,
        model.obj_ids,
        split=split,
        train=False,
        targets_only=True,
        box_source="detections" if detections is not None else "gt",
        detections=detections,
        need_masks=False,
        bop=bop,
    )
    infos = bop.models_info()
    obj_ids = list(model.obj_ids)
    corners = class_corners(obj_ids, infos)
    targets: dict[tuple[int, int], set[int]] = defaultdict(set)
    for t in bop.targets:
        targets[(t.scene_id, t.im_id)].add(t.obj_id)
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
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and cfg.amp != "off" else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    p = cfg.predict
    per_image_s: dict[tuple[int, int], float] = defaultdict(float)
    det_time: dict[tuple[int, int], float] = {}
    found: list[tuple[tuple[int, int], int, float, np.ndarray, np.ndarray]] = []
    n_inputs = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"predict {name}", disable=not progress, dynamic_ncols=True):
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
                if detected:
                    det_time[key] = max(det_time.get(key, 0.0), float(m.get("det_time", 0.0)))
                for e in ests:
                    # With detections, a pose's score is its cells' score times the box's score.
                    score = e.score * float(m.get("score", 1.0)) if detected else e.score
                    found.append((key, e.obj_id, score, e.R, e.t))
    for key in ds.image_keys():
        per_image_s.setdefault(key, 0.0)
    times = {k: v + det_time.get(k, 0.0) for k, v in per_image_s.items()}
    estimates = [Estimate(k[0], k[1], o, s, R, t, times[k]) for k, o, s, R, t in found]
    out = Path(out)
    csv_path = out / name.filename
    if not estimates:
        raise BopkdError(
            f"{path}: the model found no target object in any of the {len(times)} images (no cell above "
            f"predict.score_th={p.score_th}); nothing to write to {csv_path}: train longer or lower --set predict.score_th"
        )
    write_submission(csv_path, estimates)
    ms = 1000.0 * float(np.mean(list(times.values()))) if times else float("nan")
    input_hw = (ds.input_size[1], ds.input_size[0])
    try:
        macs = count_macs(model, input_hw)
    except Exception:  # FLOP counting is best effort (an unsupported op only loses the figure)
        macs = None
    sidecar = csv_path.with_name(csv_path.name + ".json")
    cfg_d = state["config"]
    atomic_write_json(
        sidecar,
        {
            "result_name": str(name),
            "method": name.method,
            "dataset": bop.name,
            "split": split,
            "protocol": protocol,
            "oracle": protocol == ORACLE,
            "box_source": "gt"
            if protocol == ORACLE
            else ("detections" if protocol == "detections" else None),
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
            "ms_per_image": ms,
            "time_includes": "forward (batched, shared per input), decoding, PnP-RANSAC"
            + (", detector time from the detections file" if protocol == "detections" else ""),
            "time_excludes": "reading the image file, crop/resize (DataLoader)",
            "device": device_name(dev),
            "batch_size": cfg.predict.batch_size,
            "amp": "bf16" if amp is not None else "fp32",
            "n_images": len(times),
            "n_inputs": n_inputs,
            "n_estimates": len(estimates),
            "predict": to_dict(cfg.predict),
            "trained_iterations": int(cfg_d.get("iters", 0)) if isinstance(cfg_d, dict) else None,
            "versions": ckpt.versions(),
        },
    )
    return PredictResult(csv_path, sidecar, len(times), n_inputs, len(estimates), ms, protocol)
