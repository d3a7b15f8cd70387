"""The BOP dataset layer: registry, typed records, readers and writers, downloads, synthetic builder."""

from bopkd.data.dataset import BopDataset
from bopkd.data.registry import DATASETS, DatasetSpec, get_spec
from bopkd.records import Camera, GTInfo, GTInstance, ObjectInfo, ObjectModel, Target

__all__ = [
    "DATASETS",
    "BopDataset",
    "Camera",
    "DatasetSpec",
    "GTInfo",
    "GTInstance",
    "ObjectInfo",
    "ObjectModel",
    "Target",
    "get_spec",
]
