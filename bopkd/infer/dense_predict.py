"""``bopkd predict`` for the dense (ZebraPose-style) family: network from the run config, code tables, loop.

A dense checkpoint's run config has ``family: dense``; its network is
:class:`bopkd.models.dense.DensePoseNet` with the encoder ``model.backbone`` and the ``dense`` section's
bits, output size and decoder widths (:func:`dense_model_config`). Every crop (``data.crop_size`` =
``2 * dense.out_size`` px, around a GT box or a detection, as the sparse crop mode) gives a visible mask and
per-pixel codes; the codes are looked up in the crop object's table of 3D points (the surface codes of
:func:`bopkd.data.surface_codes.load_or_encode`, the same cache and settings as training) and the pose is
solved by PnP-RANSAC on the original image (:func:`bopkd.infer.dense_poses.dense_poses`: Su et al., CVPR
2022, Sec. 3.5; suyz526/ZebraPose ``CNN_output_to_pose.py``). The output grid maps to the original image
by the crop's affine scaled by the network's stride 2 (:func:`bopkd.infer.dense_poses.output_to_image_affine`).

A pose's score is its RANSAC inlier ratio (:class:`bopkd.infer.dense_poses.DensePose`; ZebraPose writes a
constant score, so the ratio is bopkd's choice: it ranks the estimates of one object in an image, which
is all the BOP scores use it for), times the box's score with detections. Time per input: as the sparse
loop (:mod:`bopkd.infer.loop`), the batch's forward, decoding and PnP shared equally by its inputs.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch

from bopkd.data.dataset import BopDataset
from bopkd.errors import BopkdError
from bopkd.infer.dense_poses import DensePnPConfig, dense_poses, output_to_image_affine
from bopkd.infer.export import Found
from bopkd.infer.loop import inference_setup


def run_family(cfg) -> str:
    """``cfg.family`` of a run config (``sparse`` for a config written before the dense family existed)."""
    return str(getattr(cfg, "family", "sparse") or "sparse")


def dense_model_config(cfg):
    """The :class:`bopkd.models.dense.DenseModelConfig` of a dense run config
    (``cfg.dense.model_config(cfg.model)``: encoder ``model.backbone``, the ``dense`` section's bits, output
    size and decoder widths) without pretrained weights (the checkpoint's replace them) and with the norm
    that the training run's weights setting resolved to (:func:`bopkd.models.backbones.resolve_norm`)."""
    from dataclasses import replace

    from bopkd.models.backbones import resolve_norm

    net = cfg.dense.model_config(cfg.model)
    return replace(net, pretrained=False, norm=resolve_norm(net.norm, net.pretrained))


def build_dense_network(cfg) -> torch.nn.Module:
    """The untrained :class:`bopkd.models.dense.DensePoseNet` of a dense run config."""
    from bopkd.models.dense import build_dense_model

    return build_dense_model(dense_model_config(cfg))


def pnp_config(cfg) -> DensePnPConfig:
    """The run's ``dense.pnp`` settings, seeded with the run's seed (as the sparse PnP is)."""
    pnp = getattr(cfg.dense, "pnp", None) or DensePnPConfig()
    return DensePnPConfig(**{**vars(pnp), "seed": int(cfg.seed)}).validate("dense.pnp")


def code_tables(cfg, bop: BopDataset, obj_ids) -> dict[int, np.ndarray]:
    """``{obj_id: (2**bits, 3) float mm}``: the 3D point of each code, from the surface-code cache beside
    the dataset's models (encoded there if absent, with the run's ``dense.bits`` and ``dense.min_vertices``)."""
    from bopkd.data.surface_codes import load_or_encode

    kwargs = {"bits": int(cfg.dense.bits)}
    if getattr(cfg.dense, "min_vertices", None) is not None:
        kwargs["min_vertices"] = int(cfg.dense.min_vertices)
    codes = load_or_encode(bop.models_dir(), obj_ids, **kwargs)
    return {int(o): np.asarray(c.points, np.float64) for o, c in codes.items()}


def _forward(model, images: torch.Tensor, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask_logits (B, 1, S, S), code_logits (B, bits, S, S))`` in float32."""
    if amp is None:
        out = model(images)
    else:
        with amp:
            out = model(images)
    return out["mask_logits"].float(), out["code_logits"].float()


def run_dense_inference(model, loader, dev, cfg, bop: BopDataset, luts: dict, desc: str, progress: bool):
    """Run the dense network, decoding and PnP over a crop loader (:func:`bopkd.infer.loop.split_loader`).

    Args:
        luts: ``{obj_id: (2**bits, 3) mm}`` (:func:`code_tables`).

    Returns ``(per_image_s, found, n_inputs)`` as :func:`bopkd.infer.loop.run_inference`: seconds per
    (scene_id, im_id), the estimates (:data:`bopkd.infer.export.Found`) and the number of crops.
    """
    from tqdm import tqdm

    targets, amp, sync = inference_setup(bop, dev, cfg)
    pnp = pnp_config(cfg)
    stride = float(getattr(model, "stride", 2))  # input px per output px
    per_image_s: dict[tuple[int, int], float] = defaultdict(float)
    found: list[Found] = []
    n_inputs = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
            metas = batch["meta"]
            if any("obj_id" not in m for m in metas):
                raise BopkdError(
                    "dense prediction needs crops (data.mode=crop): the loader gave whole images"
                )
            sync()
            t0 = time.perf_counter()
            images = batch["images"].to(dev, non_blocking=True)
            mask_logits, code_logits = _forward(model, images, amp)
            keys = [(int(m["scene_id"]), int(m["im_id"])) for m in metas]
            wanted = [int(m["obj_id"]) in targets.get(k, ()) for m, k in zip(metas, keys, strict=True)]
            idx = [i for i, w in enumerate(wanted) if w]
            poses = (
                []
                if not idx
                else dense_poses(
                    mask_logits[idx],
                    code_logits[idx],
                    [luts[int(metas[i]["obj_id"])] for i in idx],
                    np.stack([np.asarray(metas[i]["K_orig"], np.float64) for i in idx]).reshape(-1, 3, 3),
                    np.stack([output_to_image_affine(metas[i]["affine"], stride) for i in idx]).reshape(
                        -1, 3, 3
                    ),
                    pnp,
                )
            )
            sync()
            share = (time.perf_counter() - t0) / len(metas)
            n_inputs += len(metas)
            for k in keys:
                per_image_s[k] += share
            for i, pose in zip(idx, poses, strict=True):
                if pose is None:
                    continue
                m = metas[i]
                score = pose.score * (
                    float(m.get("score", 1.0)) if m.get("box_source") == "detections" else 1.0
                )
                found.append((keys[i], int(m["obj_id"]), score, pose.R, pose.t))
    return per_image_s, found, n_inputs
