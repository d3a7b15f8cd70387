"""Print training throughput (images/s) and inference time (ms/image) of the teacher and the students.

    python benchmarks/train.py [--device cpu|cuda] [--iters 3] [--batch 2] [--threads N] [--only NAME ...]

For each setting (backbone x input: the paper's full 640x480 images and 256x256 crops, the ``cpu-quick``
and ``demo`` presets' inputs) on a small synthetic dataset (``bopkd synth``, 640x480, made once in a
temporary folder):

- data: items/s of ``BopTorchDataset`` with the training augmentation, in one process;
- train: images/s of a full optimisation step (forward, ``PoseLoss``, backward, AdamW, gradient clipping;
  bf16 autocast and channels-last on CUDA as the trainer does), median of ``--iters`` steps after one
  warm-up, batch ``--batch`` (the paper's 16 does not fit a CPU's patience);
- infer: ms/image of what ``bopkd predict`` times (forward, decoding, EPnP-RANSAC for each target object
  of the image, or for the crop's object), batch of one, median after one warm-up, on a randomly
  initialised network with ``score_th=0`` so that PnP runs as it would for a trained one.

Every figure is printed with the device that gave it; nothing is asserted (they depend on the machine
and on its load, printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bopkd.data.augment import AugmentConfig
from bopkd.data.collate import batch_to_device, collate_batch
from bopkd.data.torch_dataset import BopTorchDataset, DataConfig
from bopkd.infer.poses import class_corners, estimate_poses
from bopkd.losses.task import LossConfig, PoseLoss
from bopkd.models.posenet import ModelConfig, build_model
from bopkd.train.config import PredictConfig

# (name, role, backbone, mode, input size W x H (full) or crop side)
SETTINGS = [
    ("teacher-full", "teacher", "darknet53", "full", (640, 480)),
    ("teacher-crop", "teacher", "darknet53", "crop", 256),
    ("student-tiny-full", "student", "darknet-tiny", "full", (640, 480)),
    ("student-tiny-crop", "student", "darknet-tiny", "crop", 256),
    ("student-tiny-h-full", "student", "darknet-tiny-h", "full", (640, 480)),
    ("student-tiny-h-crop", "student", "darknet-tiny-h", "crop", 256),
    ("cpu-quick", "teacher", "tiny-cpu", "full", (320, 240)),
    ("demo", "teacher", "tiny-cpu", "crop", 128),
]


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} x{torch.get_num_threads()} threads"


def make_dataset(root: Path) -> None:
    from bopkd.data.synth import SynthConfig, build_synthetic_dataset

    build_synthetic_dataset(
        SynthConfig(
            name="bench",
            root=str(root),
            train=0,
            test=8,
            width=640,
            height=480,
            objects_per_image=(3, 5),
            seed=0,
        )
    )


def dataset_for(root: Path, obj_ids, mode: str, size, train: bool) -> BopTorchDataset:
    cfg = DataConfig(dataset="bench", root=str(root), split="test", mode=mode, num_workers=0)
    if mode == "full":
        cfg.input_size = tuple(size)
    else:
        cfg.crop_size = int(size)
    return BopTorchDataset(cfg, obj_ids, train=train, augment=AugmentConfig() if train else None, seed=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(root: Path, setting, device: torch.device, iters: int, batch: int) -> dict:
    name, role, backbone, mode, size = setting
    from bopkd.data.dataset import BopDataset

    bop = BopDataset("bench", root)
    obj_ids = list(bop.obj_ids)
    ds = dataset_for(root, obj_ids, mode, size, train=True)
    # Data pipeline, one process.
    t0 = time.perf_counter()
    n_items = min(len(ds), 8)
    items = [ds[(i % len(ds), 0)] for i in range(n_items)]
    data_rate = n_items / (time.perf_counter() - t0)

    torch.manual_seed(0)
    model = build_model(ModelConfig(obj_ids=obj_ids, backbone=backbone)).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    loss_fn = PoseLoss(LossConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    b = batch_to_device(collate_batch([items[i % n_items] for i in range(batch)]), device, channels_last=cuda)
    times = []
    model.train()
    for i in range(iters + 1):
        sync(device)
        t0 = time.perf_counter()
        with amp:
            out = model(b["images"])
            terms = loss_fn(out, b)
        total = sum(v.float() for v in terms.values())
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    train_rate = batch / statistics.median(times)

    # Inference as bopkd predict times it: forward + decode + PnP, one input.
    test_ds = dataset_for(root, obj_ids, mode, size, train=False)
    corners = class_corners(obj_ids, bop.models_info())
    targets: dict = {}
    for t in bop.targets:
        targets.setdefault((t.scene_id, t.im_id), set()).add(t.obj_id)
    pcfg = PredictConfig(score_th=0.0)
    model.eval()
    inf_times = []
    with torch.no_grad():
        for i in range(iters + 1):
            item = test_ds[i % len(test_ds)]
            x = item["image"][None].to(device)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            sync(device)
            t0 = time.perf_counter()
            with amp:
                out = model(x)
            out = {**out, "cls_logits": out["cls_logits"].float(), "kpts": out["kpts"].float()}
            m = item["meta"]
            estimate_poses(out, [m], targets, obj_ids, corners, pcfg)
            sync(device)
            if i > 0:
                inf_times.append(time.perf_counter() - t0)
    infer_ms = 1000 * statistics.median(inf_times)
    input_s = f"{size[0]}x{size[1]}" if mode == "full" else f"crop {size}"
    return {
        "name": name,
        "role": role,
        "backbone": backbone,
        "input": input_s,
        "data": data_rate,
        "train": train_rate,
        "infer_ms": infer_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--iters", type=int, default=3, help="timed steps / inferences per setting (after 1 warm-up)"
    )
    ap.add_argument("--batch", type=int, default=2, help="training batch size")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--only", nargs="*", default=None, help=f"settings to run: {', '.join(s[0] for s in SETTINGS)}"
    )
    ap.add_argument(
        "--root", default=None, help="folder for the synthetic dataset (default: a temporary one)"
    )
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    settings = [s for s in SETTINGS if a.only is None or s[0] in a.only]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.root or tmp)
        make_dataset(root)
        label = device_label(device)
        print(
            f"torch {torch.__version__}; device: {label}; load average {os.getloadavg()[0]:.1f}; "
            f"train batch {a.batch}, median of {a.iters}"
        )
        print(
            f"{'setting':22s} {'backbone':15s} {'input':>10s} {'data items/s':>13s} {'train img/s':>12s} "
            f"{'infer ms/img':>13s}  device"
        )
        for s in settings:
            r = bench(root, s, device, a.iters, a.batch)
            print(
                f"{r['name']:22s} {r['backbone']:15s} {r['input']:>10s} {r['data']:13.1f} {r['train']:12.2f} "
                f"{r['infer_ms']:13.1f}  {label} (data: cpu, 1 process)",
                flush=True,
            )


if __name__ == "__main__":
    main()
