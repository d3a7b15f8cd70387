"""The sidecar ``<csv>.json`` of a prediction run: what ``bopkd predict`` ran, on what, and how fast.

:class:`PredictionRecord` is written by :func:`bopkd.infer.predict.predict` next to each BOP CSV and
read back by :mod:`bopkd.report.collect`. Its JSON keys are the field names, in field order (the files
written before this class existed have the same keys and parse unchanged).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bopkd.config import from_dict, to_dict
from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json

#: Protocol of a prediction run: whole images, crops around GT boxes (an oracle), or crops around the boxes
#: of a detections file (:mod:`bopkd.eval.bop_site`).
Protocol = Literal["full-image", "oracle-gt-boxes", "detections"]

_RERUN = "re-run `bopkd predict` on its checkpoint to rewrite it"


@dataclass
class PredictionRecord:
    """One prediction run (the sidecar of one BOP CSV).

    Attributes:
        result_name: ``METHOD_DATASET-SPLIT[-TYPE]`` of the CSV (:class:`bopkd.eval.naming.ResultName`).
        method, dataset, split: its parts (``split`` is the split folder, e.g. ``test_primesense``).
        protocol: see :data:`Protocol`; ``oracle``: protocol is ``oracle-gt-boxes``.
        box_source: ``gt`` or ``detections`` in crop mode; None for whole images.
        detections: the detections JSON given to ``bopkd predict``; None without one.
        checkpoint: the checkpoint file the network came from; ``iteration``: its training iteration.
        role: ``teacher`` or ``student``; backbone; kd_method: the run's ``kd.method`` (``none`` for the
            teacher and direct training).
        input_mode: ``crop`` or ``full``; input_size: network input (W, H) px.
        params: network parameters; macs: multiply-accumulates of one forward pass of one input
            (:func:`bopkd.models.profile.count_macs`), None when an operator could not be counted.
        ms_per_image: mean of the CSV's per-image times, ms (the images of unknown time left out).
        time_includes, time_excludes: what that time covers, in words.
        device: where it ran (:func:`bopkd.train.device.device_name`); batch_size: inputs per forward
            pass; amp: ``bf16`` (CUDA autocast) or ``fp32``.
        n_images: images of the split with test targets; n_inputs: network inputs (images or crops);
            n_estimates: CSV rows.
        predict: the run's ``predict`` settings (:class:`bopkd.train.config.PredictConfig` as a mapping).
        trained_iterations: the run's ``iters`` (``iteration`` below it: an intermediate checkpoint).
        versions: package -> version string (:func:`bopkd.train.checkpoint.versions`).
        n_time_unknown: images whose CSV time is -1 (the detections file gives no detector time).
        family: the network family, ``sparse`` (WDR-style keypoint cells) or ``dense`` (ZebraPose-style
            surface codes); sidecars written before the dense family existed lack it and read as ``sparse``.
    """

    result_name: str
    method: str
    dataset: str
    split: str
    protocol: Protocol
    oracle: bool
    box_source: Literal["gt", "detections"] | None
    detections: str | None
    checkpoint: str
    iteration: int
    role: Literal["teacher", "student"]
    backbone: str
    kd_method: str
    input_mode: Literal["crop", "full"]
    input_size: tuple[int, int]
    params: int
    macs: int | None
    ms_per_image: float
    time_includes: str
    time_excludes: str
    device: str
    batch_size: int
    amp: Literal["bf16", "fp32"]
    n_images: int
    n_inputs: int
    n_estimates: int
    predict: dict[str, Any]
    trained_iterations: int
    versions: dict[str, str]
    n_time_unknown: int
    family: Literal["sparse", "dense"] = "sparse"

    def validate(self, source: str) -> None:
        if self.oracle != (self.protocol == "oracle-gt-boxes"):
            raise BopkdError(
                f"{source}: oracle={self.oracle} contradicts protocol {self.protocol!r}; {_RERUN}"
            )

    def run_dir(self) -> Path | None:
        """The training run folder: ``RUN`` of ``RUN/checkpoints/<file>.pt``, or the checkpoint itself when
        it is a folder; None otherwise."""
        p = Path(self.checkpoint)
        if p.parent.name == "checkpoints":
            return p.parent.parent
        return p if p.is_dir() else None

    def write(self, path: str | Path) -> None:
        """Write as JSON (indent 2, field order), atomically; ``family`` only when it is ``dense`` (a sparse
        run's sidecar stays as it was written before the dense family existed)."""
        d = to_dict(self)
        if d["family"] == "sparse":
            del d["family"]
        atomic_write_json(path, d)


#: The keys every sidecar has (the fields added later have defaults and may be absent).
_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(PredictionRecord)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def sidecar_path(csv_path: str | Path) -> Path:
    """``<csv>.json`` next to a BOP CSV."""
    p = Path(csv_path)
    return p.with_name(p.name + ".json")


def read_record(path: str | Path) -> PredictionRecord:
    """Read a sidecar; a file that is not a complete record raises a one-line :class:`BopkdError`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BopkdError(f"{path}: unreadable prediction sidecar ({e}); {_RERUN}") from None
    if not isinstance(d, dict):
        raise BopkdError(
            f"{path}: a prediction sidecar holds a JSON object, got {type(d).__name__}; {_RERUN}"
        )
    missing = [f for f in _REQUIRED if f not in d]
    if missing:
        raise BopkdError(f"{path}: prediction sidecar without key(s) {', '.join(missing)}; {_RERUN}")
    try:
        return from_dict(PredictionRecord, d, source=str(path))
    except BopkdError as e:
        raise BopkdError(f"{path}: {e}; {_RERUN}") from None
