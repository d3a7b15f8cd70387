"""Batching of :class:`~bopkd.data.torch_dataset.BopTorchDataset` items with a variable number of objects.

The batch (the contract between the data pipeline and the losses, ``bopkd/models/README_CONTRACT.md``)::

    images   (B, 3, H, W) float32, ImageNet-normalised
    K        (B, 3, 3) float32 intrinsics of the network input images, px
    objects  list of B dicts of tensors (cls, obj_id, gt_id, R, t, corners_3d, corners_2d, mask_visib,
             diameter), each with its own number of objects n_b
    meta     list of B dicts (scene_id, im_id, split, affine, K_orig, orig_size, ...; numpy / plain values)

and, for the dense family (:class:`~bopkd.data.dense_dataset.DenseTorchDataset` items)::

    dense_mask  (B, S, S) float32 in {0, 1}, the visible mask on the output grid
    dense_bits  (B, bits, S, S) float32 in {0, 1}, the surface-code bits there

Images and intrinsics are stacked; per-object tensors stay per image, since images hold different
numbers of objects (torch's ``default_collate`` cannot stack them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The dense family's per-crop targets, stacked as float32 when the items have them.
DENSE_KEYS = ("dense_mask", "dense_bits")


def collate_batch(samples: Sequence[dict]) -> dict:
    """Batch dataset items (see the module docstring)."""
    if not samples:
        raise ValueError("collate_batch needs at least one sample")
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"images of one batch must have one size, got {sorted(sizes)}; set data.input_size")
    batch = {
        "images": torch.stack([s["image"] for s in samples]),
        "K": torch.stack([s["K"] for s in samples]),
        "objects": [s["objects"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }
    for key in DENSE_KEYS:
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples]).float()
    return batch


def batch_to_device(
    batch: dict, device: torch.device | str, non_blocking: bool = True, channels_last: bool = False
) -> dict:
    """Move the tensors of a batch (images, K, every object tensor, the dense targets) to ``device``; meta
    stays on the host."""
    device = torch.device(device)
    nb = non_blocking and device.type == "cuda"
    images = batch["images"].to(device, non_blocking=nb)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = {
        "images": images,
        "K": batch["K"].to(device, non_blocking=nb),
        "objects": [{k: v.to(device, non_blocking=nb) for k, v in o.items()} for o in batch["objects"]],
        "meta": batch["meta"],
    }
    for key in DENSE_KEYS:
        if key in batch:
            out[key] = batch[key].to(device, non_blocking=nb)
    return out
