"""Presets of ``bopkd run-pipeline``: what each stage does at the ``demo``, ``quick`` and ``paper`` scales.

A preset fixes, for one dataset:

- the dataset stage: the BOP parts to download for a registered dataset (``lmo``, ``lm``, ``ycbv``,
  ``tless``), or the settings of :class:`bopkd.data.synth.SynthConfig` for a synthetic one;
- the training runs: a training preset of :data:`bopkd.train.presets.TRAIN_PRESETS` plus overrides shared by
  all runs (``train``), the teacher's own (``teacher``) and the students' own (``student``), as nested
  dicts of :class:`bopkd.train.config.RunConfig` keys; the teacher backbone; the default student
  backbones and seeds;
- the options of each distillation method (``kd_options``: fields of the method's config in
  :mod:`bopkd.losses.kd`), its weight among them (``{"ot": {"weight": 5.0}}``; ``fkd+ot`` weighs its OT
  term, ``{"fkd+ot": {"ot": {"weight": 5.0}}}``); a method without a weight there keeps its config's
  default: ``pred`` 5, ``fkd`` 1, ``ot`` 5 as ``--kd_weight 5`` of Guo et al.'s code, ``fkd+ot`` 5 on its
  OT term;
- the dense family (``dense``, planned with ``--family dense|both``; ``family``: what a run plans without
  ``--family``: ``both`` for ``demo``, ``sparse`` for the other presets): ``teacher_backbone``, ``students``, ``out_size`` (crops of
  ``2 * out_size`` px), and run-config overrides shared by its runs (``train``) and per role (``teacher``,
  ``student``), applied over the preset's ``train`` section (not over its sparse ``teacher``/``student``), and
  optionally the dense students' ``seeds`` (default: the preset's) and ``variants`` (the dense family's own
  extra rows, :class:`Variant`);
- inference overrides (``predict``, ``key=value`` strings of ``bopkd predict --set``) and the metrics
  scored.

``demo`` is the embedded default: a small synthetic dataset of bopkd's procedural objects with
LINEMOD-like viewpoints (upper hemisphere, 600-1100 mm), crop-mode networks on 96 px zoom-in crops with
GT boxes at test time (the ``oracle-gt-boxes`` protocol: every output says so), a teacher that is a
wider tiny DarkNet than the students; it plans both families (the dense one on 64 px crops with 32 px
outputs). Its budget was tuned by running it on a 2-core CPU shared with other jobs (see the README's "Run the
whole pipeline").

``experiment`` is the first comparison of the distillation methods (README, "Results: first
experiment"): the demo's networks and protocol on a synthetic dataset rendered from given models (the
README uses LM-O's ape, driller and duck), 1000 training images, a teacher trained 4000 iterations and
students 600 iterations with 3 seeds each.

``quick`` runs every stage on a real BOP dataset at reduced scale (a few thousand PBR training images,
short schedules, the same tiny networks on 128 px crops); ``paper`` uses the settings of Guo et al.
(CVPR 2023, GUOShuxuan/kd-6d-pose-adlp): the ``paper`` training preset (256x256 dynamic zoom-in crops,
batch 16, AdamW 1e-3 with a linear one-cycle schedule, 10000 iterations per network), a DarkNet-53
teacher with timm's ImageNet weights, DarkNet-tiny and DarkNet-tiny-h students from their initial
weights (the reference has no weights for DarkNet-tiny-h; its ImageNet DarkNet-tiny weights are a local
file: ``--set student@darknet-tiny.model.pretrained=PATH``), OT weight 5; it is meant for GPU machines.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from bopkd.errors import BopkdError

#: Distillation methods compared by default, in report order.
DEFAULT_METHODS = ("none", "pred", "fkd", "ot", "fkd+ot")


@dataclass(frozen=True)
class Variant:
    """An extra student configuration of one method (a weight sweep point or an ablation), its own report row.

    Attributes:
        tag: letters and digits; joins the stage name (``student-<backbone>-<method>-<tag>-s<seed>``) and
            the BOP method name (``bopkd-<method>-<tag>-<backbone>-s<seed>-<preset>``).
        method: the distillation method.
        options: method options merged over the preset's ``kd_options`` of the method; its weight too
            (``{"weight": 2.0}``, for ``fkd+ot`` ``{"ot": {"weight": 2.0}}``).
        seeds: the seeds it is trained with.
    """

    tag: str
    method: str
    options: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class PipelinePreset:
    """The settings of one pipeline scale (see the module docstring)."""

    name: str
    description: str
    train_preset: str
    teacher_backbone: str
    students: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    parts: tuple[str, ...] = ("base", "models", "test_bop19", "train_pbr")
    synth: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    kd_options: dict = field(default_factory=dict)
    predict: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("bop19", "ad")
    variants: tuple[Variant, ...] = ()
    family: str = "sparse"
    dense: dict = field(default_factory=dict)

    def copy_section(self, name: str) -> dict:
        return copy.deepcopy(getattr(self, name))


#: The dense family (ZebraPose-style, :mod:`bopkd.models.dense`) of the CPU presets, planned with
#: ``--family dense|both``: crops of ``2 * out_size`` px, narrow decoders. On a shared 2-core CPU (1 thread,
#: batch 8, 64 px crops, 16 bits, the ZebraPose loss) a forward + backward step measured 49 ms for the
#: darknet-tiny-h teacher (0.31 M parameters with these widths) and 31 ms for the tiny-cpu student (0.12 M);
#: darknet-tiny took 74 ms, resnet18 252 ms.
_DENSE_CPU = {
    "teacher_backbone": "darknet-tiny-h",
    "students": ["tiny-cpu"],
    "out_size": 32,
    "train": {
        "dense": {
            "decoder_channels": [64, 32, 32, 16],
            # ZebraPose's code term covers the network's own binarised mask, averaged over all pixels; at CPU
            # scale the code bits then barely learn (a teacher on the study's dataset, 400 iterations at lr
            # 1e-3: bit 0 right on 62 % of mask pixels). Over the GT mask, averaged over its pixels, at lr
            # 5e-3 (1500 iterations): bits 0-3 right on 90/81/73/69 %, AR 12.2 (deviations, stated in the
            # report's settings table).
            "loss": {"code_mask": "gt", "code_reduction": "mask"},
            # ZebraPose's 2 px RANSAC threshold is ~1.5 output pixels at its 128 px outputs; an output pixel
            # of a 64 px crop spans 3-5 image px here. Same teacher: 2 px AR 12.2, 4 px 14.2, 8 px 14.4.
            "pnp": {"reproj_err": 4.0},
        },
        "optim": {"lr": 5e-3},
    },
    "teacher": {"iters": 600},
    # 150 iterations left the OT student without any mask pixel above 0.5 on the demo's test crops (no pose,
    # so no CSV): the dense students get 300
    "student": {"iters": 300},
}

#: Smaller FPN/head for the tiny networks of demo and quick: on a CPU the FPN levels and the head
#: cost as much as the backbone, so a 64-channel, 2-conv head keeps the wider teacher affordable.
_TINY_HEAD = {"fpn_channels": 64, "head_convs": 2}

_DEMO = PipelinePreset(
    name="demo",
    description="synthetic procedural objects, GT-box crops, tiny networks of both families; minutes on a CPU",
    train_preset="demo",
    teacher_backbone="darknet-tiny-h",
    students=("tiny-cpu",),
    seeds=(0,),
    synth={
        "models": "procedural",
        "objects": [1, 2, 3],
        "train": 300,
        "test": 24,
        "viewpoints": "linemod",
        "objects_per_image": [2, 3],
        "camera": "lm",
        "seed": 0,
    },
    train={
        "data": {"mode": "crop", "crop_size": 96, "num_workers": 1},
        "augment": {"rotation": 10.0},
        "batch_size": 8,
        "ckpt_every": 50,
        "log_every": 10,
    },
    teacher={"model": dict(_TINY_HEAD), "iters": 1200},
    student={"iters": 150},
    predict=(),
    metrics=("bop19", "ad"),
    family="both",
    dense={**_DENSE_CPU, "teacher": {"iters": 800}},
)


def _experiment_from_demo() -> PipelinePreset:
    """``experiment``: the demo's networks, protocol and KD options, larger data, longer runs, 3 seeds."""
    return dataclasses.replace(
        _DEMO,
        name="experiment",
        description="the first KD comparison: a synthetic dataset from given models (e.g. LM-O's), 3 seeds, "
        "96 px GT-box crops, tiny networks; about an hour on a 2-core CPU",
        seeds=(0, 1, 2),
        # Set --set synth.models=PATH to a BOP models/ folder (the README uses LM-O's); the default keeps the
        # preset runnable without one. Objects 1, 8, 9 are LM-O's ape, driller and duck (their colours and
        # parts show their orientation; LM-O's white can and eggbox learned much slower in 1500-iteration
        # trials).
        synth={**_DEMO.synth, "objects": [1, 8, 9], "train": 1000, "test": 60},
        family="sparse",
        train={**_DEMO.train, "ckpt_every": 200, "log_every": 50},
        teacher={**_DEMO.teacher, "iters": 4000},
        student={"iters": 600},
        dense={**_DENSE_CPU, "teacher": {"iters": 3000}, "student": {"iters": 600}},
    )


#: Student iterations of ``study``, chosen from the direct student's learning curve
#: (``benchmarks/learning_curve.py`` on a validation set rendered like the training set with another seed):
#: the shortest length tried whose validation AR changed by less than one point over its last fifth
#: (750: 13.6 -> 15.1; 1500: 20.6 -> 21.3, AR in % at 80 % and 100 % of the run, seed 0).
STUDY_STUDENT_ITERS = 1500


def _study_from_experiment(experiment: PipelinePreset) -> PipelinePreset:
    """``study``: the experiment's data, networks and teacher; longer student runs, 5 seeds, a sweep of the
    OT weight around the paper's 5 (2 and 10, 3 seeds each) and OT with detached scores (the paper's
    ``--wot_detach`` ablation, 3 seeds)."""
    return dataclasses.replace(
        experiment,
        name="study",
        description="the distillation study: five methods x 5 seeds, an OT weight sweep (2, 5, 10) and OT "
        "with detached scores, on a synthetic dataset from given models; hours on a 2-core CPU",
        seeds=(0, 1, 2, 3, 4),
        student={"iters": STUDY_STUDENT_ITERS},
        # the dense study: the five methods with seeds 0-2 (the dense students' own seeds, ``--family dense|both``)
        # and the two choices the paper leaves open for dense OT, each against the default (seeds 0-2): OT without
        # the cell position in the code vector (the default joins it), and OT over the cells the teacher's mask
        # keeps (the default takes every cell)
        dense={
            **experiment.dense,
            "student": {"iters": STUDY_STUDENT_ITERS},
            "seeds": [0, 1, 2],
            "variants": (
                Variant("noposition", "ot", {"position": False}),
                Variant("maskcells", "ot", {"mask_threshold": 0.5}),
            ),
        },
        variants=(
            Variant("w2", "ot", {"weight": 2.0}),
            Variant("w10", "ot", {"weight": 10.0}),
            Variant("detached", "ot", {"detach_scores": True}),
        ),
    )


_EXPERIMENT = _experiment_from_demo()

PIPELINE_PRESETS: dict[str, PipelinePreset] = {
    "demo": _DEMO,
    "experiment": _EXPERIMENT,
    "study": _study_from_experiment(_EXPERIMENT),
    "quick": PipelinePreset(
        name="quick",
        description="a real BOP dataset at reduced scale: 4000 PBR images, short schedules, tiny networks",
        train_preset="demo",
        teacher_backbone="darknet-tiny-h",
        students=("tiny-cpu",),
        seeds=(0,),
        parts=("base", "models", "test_bop19", "train_pbr"),
        synth={
            "models": "procedural",
            "train": 1000,
            "test": 50,
            "viewpoints": "linemod",
            "objects_per_image": [3, 5],
        },
        train={
            "data": {"mode": "crop", "crop_size": 128, "max_images": 4000, "num_workers": 2},
            "batch_size": 16,
            "ckpt_every": 100,
            "log_every": 20,
        },
        teacher={"model": dict(_TINY_HEAD), "iters": 2000},
        student={"iters": 1000},
        dense={**_DENSE_CPU, "out_size": 64, "teacher": {"iters": 2000}, "student": {"iters": 1000}},
    ),
    "paper": PipelinePreset(
        name="paper",
        description="Guo et al. (CVPR 2023): ImageNet darknet53 teacher, darknet-tiny and darknet-tiny-h "
        "students, 256 px zoom-in crops, batch 16, 10k iterations, OT weight 5",
        train_preset="paper",
        teacher_backbone="darknet53",
        students=("darknet-tiny", "darknet-tiny-h"),
        seeds=(0,),
        parts=("base", "models", "test_bop19", "train_pbr"),
        synth={"models": "procedural", "train": 20000, "test": 200, "viewpoints": "linemod"},
        train={"ckpt_every": 500},
        # The training preset loads timm's ImageNet darknet53 for the teacher (train.sh: --backbone_t
        # darknet53, built with pretrained=True). The students start from their initial weights: the
        # reference has none for darknet_tiny_h (pretrained=False); pytorchcv's ImageNet darknet_tiny file,
        # which it loads for darknet_tiny, is given with --set student@darknet-tiny.model.pretrained=PATH.
        student={"model": {"pretrained": False}},
        kd_options={"ot": {"weight": 5.0}},
        # ZebraPose's setting: a ResNet-34 encoder on 256 px crops, 128 px outputs, 16 bits (the dense
        # section's defaults); ResNet-18 as the student, as the dense family's smaller encoder.
        dense={"teacher_backbone": "resnet34", "students": ["resnet18"], "out_size": 128},
    ),
}

#: The preset a dataset name implies when ``--preset`` is not given.
DEFAULT_PRESET_FOR = {"demo": "demo"}
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> PipelinePreset:
    """The pipeline preset ``name``; a one-line :class:`BopkdError` listing the presets if unknown."""
    if name not in PIPELINE_PRESETS:
        raise BopkdError(f"unknown pipeline preset {name!r}: use one of {', '.join(PIPELINE_PRESETS)}")
    return PIPELINE_PRESETS[name]


def default_preset(dataset: str) -> str:
    """``demo`` for the dataset named ``demo``, else ``quick`` (``--preset paper`` on GPU machines)."""
    return DEFAULT_PRESET_FOR.get(dataset, DEFAULT_PRESET)
