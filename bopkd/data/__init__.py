"""The BOP dataset layer: registry, typed records, readers and writers, downloads, synthetic builder."""

from bopkd.data.dataset import BopDataset
from bopkd.data.records import Camera, GTInfo, GTInstance, ObjectInfo, ObjectModel, Target
from bopkd.data.registry import REGISTRY, DatasetSpec, get_spec

__all__ = [
    "REGISTRY",
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
