"""Check a BOP result file without scoring it (``bopkd score --check-only``).

The dataset comes from the file name (:mod:`bopkd.eval.naming`), its object ids from the registry or the
dataset folder (:func:`bopkd.data.registry.get_spec`), and the coverage from its ``test_targets_bop19.json``
(the BOP'19 targets the toolkit's ``eval_calc_errors.py`` evaluates; estimates of other images are ignored).
Format problems raise :class:`~bopkd.errors.BopkdError` from :func:`bopkd.eval.submission.read_submission_arrays`.
The average time per image is computed as ``scripts/eval_bop19_pose.py`` does: the mean over images of
the per-image time when every row has a time >= 0, else -1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bopkd.data.bop_json import load_targets
from bopkd.eval.naming import ResultName, parse_result_name
from bopkd.eval.result_inputs import result_spec
from bopkd.eval.submission import average_time_per_image, read_submission_arrays

TARGETS_FILE = "test_targets_bop19.json"


@dataclass
class CheckReport:
    """What a result file holds and how it covers the dataset's BOP'19 targets.

    Attributes:
        path: the result file.
        name: its parsed name.
        n_estimates: rows.
        n_images: distinct (scene_id, im_id) with at least one estimate.
        n_objects: distinct obj_id.
        obj_ids: the distinct obj_ids, sorted.
        time_available: every row has a time >= 0 (else the toolkit reports time -1).
        average_time_per_image: mean over images of the per-image time in s, -1 when not available.
        targets_path: the targets file used, None when absent (coverage then not computed).
        n_targets: target entries (image, object) in the targets file.
        n_target_instances: sum of ``inst_count``.
        n_target_images: images with targets.
        target_images_without_estimate: target images without any estimate.
        targets_without_estimate: target (image, object) entries without an estimate of that object there.
        images_not_in_targets: estimated images that are not target images (the toolkit ignores them).
        missing_examples: up to 5 ``(scene_id, im_id)`` of target images without any estimate.
        notes: remarks that are not errors.
    """

    path: Path
    name: ResultName
    n_estimates: int
    n_images: int
    n_objects: int
    obj_ids: tuple[int, ...]
    time_available: bool
    average_time_per_image: float
    targets_path: Path | None = None
    n_targets: int | None = None
    n_target_instances: int | None = None
    n_target_images: int | None = None
    target_images_without_estimate: int | None = None
    targets_without_estimate: int | None = None
    images_not_in_targets: int | None = None
    missing_examples: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["targets_path"] = None if self.targets_path is None else str(self.targets_path)
        d["name"] = {**asdict(self.name), "result_name": str(self.name)}
        d["obj_ids"] = list(self.obj_ids)
        d["missing_examples"] = [list(x) for x in self.missing_examples]
        return d

    def summary(self) -> str:
        """One line: ``OK FILE: N estimates, I images, O objects; targets ...``."""
        s = f"OK {self.path}: {self.n_estimates} estimates, {self.n_images} images, {self.n_objects} objects"
        if self.time_available:
            s += f", {self.average_time_per_image:.3f} s/image"
        else:
            s += ", time unknown"
        if self.n_target_images is not None:
            s += (
                f"; targets: {self.n_target_images - self.target_images_without_estimate}/{self.n_target_images} "
                f"images and {self.n_targets - self.targets_without_estimate}/{self.n_targets} (image, object) "
                f"targets have an estimate"
            )
            if self.images_not_in_targets:
                s += f", {self.images_not_in_targets} images are not targets (ignored)"
        else:
            s += "; targets not found, coverage not checked"
        return s


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(a.tolist(), b.tolist(), strict=True))


def check_submission(path: str | Path, root: str | Path, check_rotation: bool = True) -> CheckReport:
    """Validate a BOP result CSV against the dataset its name gives and summarise its target coverage.

    Args:
        path: ``METHOD_DATASET-SPLIT[...].csv``.
        root: folder holding the BOP datasets (the dataset folder may be absent for a registered dataset:
            the format and object ids are then checked, coverage is not).

    Raises :class:`BopkdError` for a malformed name, an unknown dataset, or any problem in the file.
    """
    path = Path(path)
    root = Path(root)
    name = parse_result_name(path)
    spec = result_spec(path, name.dataset, root)
    arrays = read_submission_arrays(path, obj_ids=spec.obj_ids, check_rotation=check_rotation)

    scene, im, obj, time = arrays["scene_id"], arrays["im_id"], arrays["obj_id"], arrays["time"]
    images = _pairs(scene, im)
    time_available = bool((time >= 0).all())
    avg_time = average_time_per_image(scene, im, time)
    obj_ids = tuple(sorted(set(obj.tolist())))
    rep = CheckReport(
        path=path,
        name=name,
        n_estimates=len(time),
        n_images=len(images),
        n_objects=len(obj_ids),
        obj_ids=obj_ids,
        time_available=time_available,
        average_time_per_image=avg_time,
    )
    if name.split_folder != spec.test_split:
        rep.notes.append(
            f"split {name.split_folder!r} is not the dataset's BOP test split {spec.test_split!r}; "
            f"the BOP'19 targets are for {spec.test_split!r}"
        )
    targets_path = root / name.dataset / TARGETS_FILE
    if not targets_path.is_file():
        rep.notes.append(
            f"{targets_path} not found: coverage not checked (bopkd download {name.dataset} brings it)"
        )
        return rep
    targets = load_targets(targets_path)
    t_images = {(t.scene_id, t.im_id) for t in targets}
    est_triples = set(zip(scene.tolist(), im.tolist(), obj.tolist(), strict=True))
    missing_images = sorted(t_images - images)
    rep.targets_path = targets_path
    rep.n_targets = len(targets)
    rep.n_target_instances = sum(t.inst_count for t in targets)
    rep.n_target_images = len(t_images)
    rep.target_images_without_estimate = len(missing_images)
    rep.targets_without_estimate = sum((t.scene_id, t.im_id, t.obj_id) not in est_triples for t in targets)
    rep.images_not_in_targets = len(images - t_images)
    rep.missing_examples = missing_images[:5]
    return rep
