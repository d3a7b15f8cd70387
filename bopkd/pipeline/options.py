"""The options of ``bopkd run-pipeline`` and its ``--set SCOPE.key=value`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bopkd.config import parse_override
from bopkd.errors import BopkdError


@dataclass
class PipelineOptions:
    """The options of ``bopkd run-pipeline`` (see its ``--help``).

    Attributes:
        dataset: registered BOP dataset (downloaded) or a synthetic dataset name (built); ``demo`` by default.
        preset: ``demo``, ``experiment``, ``study``, ``quick`` or ``paper`` (None: ``demo`` for the dataset
            ``demo``, else ``quick``).
        methods: distillation methods (default: none, pred, fkd, ot, fkd+ot).
        students: student backbones (default: the preset's).
        seeds: student seeds (default: the preset's); the teacher uses the first.
        root, results, reports, runs: the folders of datasets, BOP CSVs (+ scores), reports, run state.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for training and inference.
        gpus: processes (GPUs) per training run; > 1 runs ``bopkd train`` under torchrun.
        threads: CPU threads of torch (None: the cores not busy with other work, at least 1).
        force: stages to run even if done: names, kinds (``teacher``, ``student`` ...), globs or ``all``.
        sets: ``SCOPE.key=value`` overrides (see :func:`parse_sets`).
        mirror: download mirror (``--mirror``; default ``$BOPKD_MIRROR``).
        detections: BOP default-detections JSON that crop-mode models predict on (None: GT boxes, the
            ``oracle-gt-boxes`` protocol); its path and SHA-256 enter the predict stages' settings.
        dry_run: print the plan and what is done, run nothing.
        progress: progress bars (None: when the console is a terminal).
        family: ``sparse`` (WDR-style keypoint networks), ``dense`` (ZebraPose-style surface-code networks)
            or ``both`` (None: the preset's ``family``).
    """

    dataset: str = "demo"
    preset: str | None = None
    methods: list[str] | None = None
    students: list[str] | None = None
    seeds: list[int] | None = None
    root: Path = Path("bop_data")
    results: Path = Path("results")
    reports: Path = Path("reports")
    runs: Path = Path("runs")
    device: str = "auto"
    gpus: int = 1
    threads: int | None = None
    force: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    mirror: str | None = None
    detections: Path | None = None
    dry_run: bool = False
    progress: bool | None = None
    family: str | None = None

    @classmethod
    def from_command_line(
        cls,
        methods: list[str] | None = None,
        students: list[str] | None = None,
        seeds: list[str] | None = None,
        force: list[str] | None = None,
        sets: list[str] | None = None,
        **options,
    ) -> PipelineOptions:
        """The options from ``bopkd run-pipeline``'s values: lists given comma-separated or repeated
        (``--seeds 0,1 --seeds 2``), seeds as integers; the other ``options`` as they are."""
        seed_list = None
        if seeds:
            try:
                seed_list = [int(v) for v in split_list(seeds) or []]
            except ValueError:
                raise BopkdError(f"--seeds {','.join(seeds)!r}: give integers, e.g. --seeds 0,1,2") from None
        return cls(
            methods=split_list(methods),
            students=split_list(students),
            seeds=seed_list,
            force=split_list(force) or [],
            sets=list(sets or []),
            **options,
        )


def split_list(values: list[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None when nothing is given."""
    if not values:
        return None
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


#: The network families of ``--family`` (``both``: every stage of each).
FAMILIES = ("sparse", "dense")
FAMILY_CHOICES = (*FAMILIES, "both")


def families(choice: str | None, default: str) -> list[str]:
    """The families a run plans: ``choice`` (``--family``) or ``default`` (the preset's), ``both`` -> both."""
    value = choice if choice is not None else default
    if value not in FAMILY_CHOICES:
        raise BopkdError(f"--family {value!r}: use one of {', '.join(FAMILY_CHOICES)}")
    return list(FAMILIES) if value == "both" else [value]


#: The scopes of ``--set SCOPE.key=value``.
SCOPES = ("synth", "train", "teacher", "student", "predict", "score")


@dataclass
class Overrides:
    """``--set`` values by scope. ``student@SEL`` applies to the students whose backbone, method or family
    (``sparse``, ``dense``) is SEL; ``teacher@FAMILY`` to that family's teacher only (``teacher.KEY``: both)."""

    synth: dict = field(default_factory=dict)
    train: list[str] = field(default_factory=list)
    teacher: list[str] = field(default_factory=list)
    student: list[tuple[str | None, str]] = field(default_factory=list)
    teacher_at: list[tuple[str, str]] = field(default_factory=list)  # (family, key=value) of teacher@FAMILY
    predict: list[str] = field(default_factory=list)
    score: dict = field(default_factory=dict)


def parse_sets(sets: list[str]) -> Overrides:
    """Parse ``--set SCOPE.key=value`` strings.

    Scopes: ``synth.KEY`` (a :class:`~bopkd.data.synth.SynthConfig` field), ``train.KEY`` (every training
    run), ``teacher.KEY``, ``student.KEY`` (every student), ``student@SEL.KEY`` (students whose backbone or
    distillation method or family is SEL, e.g. ``student@ot.kd.options.weight=2``), ``teacher@FAMILY.KEY``
    (the ``sparse`` or ``dense`` teacher only), ``predict.KEY`` (``bopkd predict
    --set``) and ``score.metrics=[bop19,ad]``. Training keys are :class:`~bopkd.train.config.RunConfig` keys
    (``iters``, ``optim.lr``, ``data.crop_size`` ...); values are YAML scalars or lists.
    """
    ov = Overrides()
    for text in sets:
        scope, dot, rest = text.partition(".")
        sel = None
        if "@" in scope:
            scope, _, sel = scope.partition("@")
        if (
            not dot
            or scope not in SCOPES
            or not rest
            or "=" not in rest
            or (sel is not None and scope not in ("student", "teacher"))
            or (scope == "teacher" and sel is not None and sel not in FAMILIES)
        ):
            raise BopkdError(
                f"--set {text!r}: write SCOPE.key=value with SCOPE one of {', '.join(SCOPES)}, "
                "student@BACKBONE|METHOD|FAMILY or teacher@sparse|dense, "
                "e.g. --set teacher.iters=200 or --set student@ot.kd.options.weight=2"
            )
        if scope == "synth" or scope == "score":
            keys, value = parse_override(rest)
            if len(keys) != 1:
                raise BopkdError(f"--set {text!r}: {scope} settings are flat (e.g. --set {scope}.train=100)")
            getattr(ov, scope)[keys[0]] = value
        elif scope == "student":
            ov.student.append((sel, rest))
        elif scope == "teacher" and sel is not None:
            ov.teacher_at.append((sel, rest))
        else:
            getattr(ov, scope).append(rest)
    return ov
