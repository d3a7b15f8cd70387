"""The inference loop: test inputs (whole images or crops) through the network, decoding and PnP.

Full mode feeds whole images; crop mode feeds the zoom-in crop of each target instance, around its GT box
(the oracle protocol) or a detection's box (:func:`bopkd.data.detections.load_detections`). Time per input:
wall time of the batch's forward pass, decoding and PnP, shared equally by its inputs; reading and
cropping the images (DataLoader workers) are not timed.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from bopkd.data.collate import collate_batch
from bopkd.data.dataset import BopDataset
from bopkd.data.torch_dataset import BopTorchDataset
from bopkd.infer.export import Found
from bopkd.infer.poses import class_corners, estimate_poses
from bopkd.train.config import RunConfig
from bopkd.train.seed import opencv_single_threaded


def split_loader(cfg: RunConfig, obj_ids, bop: BopDataset, split: str, dets, dev: torch.device):
    """``(dataset, loader)`` of the test split's target instances: whole images, or crops around their GT
    boxes (``dets`` None) or around the boxes of ``dets`` (:func:`bopkd.data.detections.load_detections`)."""
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


def _forward(model, images: torch.Tensor, amp) -> dict:
    """The network's outputs, ``cls_logits`` and ``kpts`` in float32 (bf16 autocast on CUDA when ``amp``)."""
    if amp is None:
        return model(images)
    with amp:
        outputs = model(images)
    return {**outputs, "cls_logits": outputs["cls_logits"].float(), "kpts": outputs["kpts"].float()}


def inference_setup(bop: BopDataset, dev, cfg):
    """``(targets, amp, sync)`` of an inference loop: the target obj_ids per (scene_id, im_id), the bf16
    autocast context (None off CUDA or with ``cfg.amp == "off"``) and the device synchronisation for timing."""
    targets: dict[tuple[int, int], set[int]] = defaultdict(set)
    for t in bop.targets:
        targets[(t.scene_id, t.im_id)].add(t.obj_id)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and cfg.amp != "off" else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return targets, amp, sync


def run_inference(model, loader, dev, cfg: RunConfig, bop: BopDataset, desc: str, progress: bool):
    """Run the network, decoding and PnP over the loader, for the targets' objects of ``bop``.

    Returns ``(per_image_s, found, n_inputs)``: seconds per (scene_id, im_id) (a batch's wall time shared
    equally by its inputs), the estimates (:data:`bopkd.infer.export.Found`) and the number of inputs.
    With detections, a pose's score is its cells' score times the box's score.
    """
    from tqdm import tqdm

    obj_ids = list(model.obj_ids)
    corners = class_corners(obj_ids, bop.models_info())
    targets, amp, sync = inference_setup(bop, dev, cfg)
    per_image_s: dict[tuple[int, int], float] = defaultdict(float)
    found: list[Found] = []
    n_inputs = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
            metas = batch["meta"]
            sync()
            t0 = time.perf_counter()
            images = batch["images"].to(dev, non_blocking=True)
            if dev.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            outputs = _forward(model, images, amp)
            poses = estimate_poses(
                outputs, metas, targets, obj_ids, corners, cfg.predict, cfg.seed, cfg.loss.positive_lambda
            )
            sync()
            share = (time.perf_counter() - t0) / len(metas)
            n_inputs += len(metas)
            for m, ests in zip(metas, poses, strict=True):
                key = (int(m["scene_id"]), int(m["im_id"]))
                per_image_s[key] += share
                detected = m.get("box_source") == "detections"
                for e in ests:
                    score = e.score * float(m.get("score", 1.0)) if detected else e.score
                    found.append((key, e.obj_id, score, e.R, e.t))
    return per_image_s, found, n_inputs
