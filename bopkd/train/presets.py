"""Training presets: named layers of :class:`bopkd.train.config.RunConfig` settings (``--preset NAME``).

A preset is a nested plain dict of config keys, merged over the defaults and under ``--config``,
the command-line options and ``--set`` (see :mod:`bopkd.train.config`).

- ``paper``: the training settings of Guo et al., "Knowledge Distillation for 6D Pose Estimation by
  Aligning Distributions of Local Predictions" (CVPR 2023), as their code GUOShuxuan/kd-6d-pose-adlp
  runs them (``train.sh``, ``configs/ape.yaml``, ``arguments/argument.py``, ``libs/train_libs.py``,
  ``libs/dzi_libs.py``, ``libs/transform.py``); each setting below names its source. ``paper-crop`` is
  another name of the same settings.
- ``cpu-quick``: a tiny network on 320x240 inputs, a few hundred iterations on the CPU.
- ``demo``: crop mode with GT boxes, 128x128 crops, tiny network; the quick end-to-end demo.
"""

from __future__ import annotations

#: The reference's optimiser and schedule (``libs/train_libs.py``, ``build_model``):
#: ``optim.AdamW(params, lr=base_lr, weight_decay=0.0001, eps=1e-8)`` (torch's default betas) and
#: ``OneCycleLR(optimizer, base_lr, MAX_ITER + 100, pct_start=0.05, cycle_momentum=False,
#: anneal_strategy='linear')`` (torch's default div_factor 25 and final_div_factor 1e4), stepped once per
#: iteration; ``nn.utils.clip_grad_norm_(params, GRAD_CLIP)`` with GRAD_CLIP 1.0
#: (``arguments/argument.py``, ``custom_cfg``); BASE_LR 0.001 (``configs/ape.yaml``).
PAPER_OPTIM = {
    "name": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "schedule": "onecycle",
    "pct_start": 0.05,
    "anneal": "linear",
    "cycle_momentum": False,
    "div_factor": 25.0,
    "final_div_factor": 1e4,
    "schedule_extra_steps": 100,
    "grad_clip": 1.0,
}

#: The reference's training crops (``libs/dzi_libs.py``, ``aug_bbox_DZI`` with ``_DZI_TYPE 'uniform'``):
#: a square of side ``max(w, h) * U(0.75, 1.25) * 1.5`` (``_DZI_SCALE_RATIO 0.25``, ``_DZI_PAD_SCALE 1.5``)
#: about the box centre moved by ``U(-0.25, 0.25) * (w, h)`` (``_DZI_SHIFT_RATIO 0.25``), capped at the larger
#: image side, resized to 256x256 (``_INPUT_RES``); test crops (``dzi_test``) use the pad 1.5 unjittered.
PAPER_CROPS = {
    "mode": "crop",
    "crop_size": 256,
    "crop_pad": 1.5,
    "crop_pad_range": [1.125, 1.875],
    "crop_shift": 0.25,
}

#: The reference's image augmentation (``libs/train_libs.py``, ``build_dataset``; ``libs/dataset.py``,
#: ``getitem_dzi``): the whole transform chain runs on the full image before ``dzi_train`` crops it, so
#: ``RandomShiftScaleRotate`` with ``configs/ape.yaml``'s AUGMENTATION_SHIFT 0.05, AUGMENTATION_SCALE 0.05 and
#: AUGMENTATION_ROTATION 10 acts on the whole image and the crop box is that of the moved object
#: (``crop_frame: image``). Colour (AUGMENTATION_ColorH/S/V 0), sharpening, smoothing and noise (0) are off;
#: occlusion (AUGMENTATION_OCCLUSION) and backgrounds (AUGMENTATION_BACKGROUND_DIR) default to off in
#: ``arguments/argument.py``.
PAPER_AUGMENT = {
    "enabled": True,
    "crop_frame": "image",
    "shift": 0.05,
    "scale": 0.05,
    "rotation": 10.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "bg_replace": 0.0,
    "blur": 0.0,
    "noise": 0.0,
}

_PAPER = {
    # darknet53 teacher (train.sh: --backbone_t darknet53) built with pretrained=True (libs/train_libs.py,
    # build_backbone); BatchNorm trained as usual (the networks run in train mode). Students:
    # --backbone darknet-tiny-h with --set model.pretrained=false (the reference has no weights for it), or
    # darknet-tiny with a local ImageNet weights file (model.pretrained: PATH).
    "model": {"backbone": "darknet53", "pretrained": True, "backbone_norm": "batch"},
    "data": {**PAPER_CROPS, "num_workers": 8},
    "augment": dict(PAPER_AUGMENT),
    # configs/ape.yaml: LOSS_WEIGHT_CLS 0.1, LOSS_WEIGHT_REG 1; losses/loss.py sums both over cells.
    "loss": {"weight_cls": 0.1, "weight_kpt": 1.0, "reduction": "sum"},
    "optim": dict(PAPER_OPTIM),
    # configs/ape.yaml: IMS_PER_BATCH 16, MAX_ITER 10000 (train.sh: --max_iters 10000).
    "iters": 10000,
    "batch_size": 16,
    # train_kd.py trains in float32 (no autocast); --set amp=bf16 trades that for speed on CUDA.
    "amp": "off",
    "ckpt_every": 1000,
    "log_every": 20,
}

TRAIN_PRESETS: dict[str, dict] = {
    "paper": _PAPER,
    "paper-crop": _PAPER,
    "cpu-quick": {
        "model": {"backbone": "tiny-cpu"},
        "data": {"mode": "full", "input_size": [320, 240], "num_workers": 0},
        "augment": {"rotation": 5.0},
        "iters": 200,
        "batch_size": 4,
        "device": "cpu",
        "ckpt_every": 50,
        "log_every": 10,
    },
    "demo": {
        "model": {"backbone": "tiny-cpu"},
        "data": {
            "mode": "crop",
            "crop_size": 128,
            "crop_pad": 1.35,
            "crop_pad_range": [1.2, 1.5],
            "crop_shift": 0.1,
            "num_workers": 2,
        },
        "augment": {"rotation": 10.0},
        "iters": 400,
        "batch_size": 8,
        "ckpt_every": 100,
        "log_every": 10,
    },
}
