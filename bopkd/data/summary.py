"""A summary of a BOP dataset on disk: objects, splits, scenes, images, GT instances and targets."""

from __future__ import annotations

from dataclasses import dataclass, field

from bopkd.data.dataset import BopDataset
from bopkd.errors import MissingFileError


@dataclass
class DatasetSummary:
    name: str
    title: str
    registered: bool
    objects: list[dict] = field(default_factory=list)
    splits: list[dict] = field(default_factory=list)
    n_targets: int = 0
    n_target_instances: int = 0
    n_target_images: int = 0
    notes: list[str] = field(default_factory=list)


def summarize(ds: BopDataset) -> DatasetSummary:
    """Collect what ``bopkd info`` prints. Missing parts become notes, not errors."""
    s = DatasetSummary(name=ds.name, title=ds.spec.title, registered=ds.spec.registered)
    try:
        infos = ds.models_info(eval=False)
    except MissingFileError as e:
        infos = {}
        s.notes.append(str(e))
    sym_ids = set(ds.spec.symmetric_obj_ids)
    for obj_id, inf in infos.items():
        s.objects.append(
            {
                "obj_id": obj_id,
                "diameter_mm": inf.diameter,
                "symmetry": inf.symmetry_kind,
                "pose_error": "ADI" if obj_id in sym_ids else "ADD",
            }
        )
    for split in ds.splits():
        c = ds.count(split)
        c["depth"] = ds.has_depth(split)
        s.splits.append({"split": split, **c})
    try:
        targets = ds.targets
        s.n_targets = len(targets)
        s.n_target_instances = sum(t.inst_count for t in targets)
        s.n_target_images = len({(t.scene_id, t.im_id) for t in targets})
    except MissingFileError as e:
        s.notes.append(str(e))
    return s
