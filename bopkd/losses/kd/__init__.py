"""Knowledge-distillation methods for keypoint pose networks, one registry (:mod:`.registry`).

``none`` (direct training), ``pred`` (prediction-to-prediction, :mod:`.pred`), ``fkd`` (Zhang & Ma's
feature distillation, :mod:`.fkd`), ``ot`` (Guo et al.'s OT distillation, :mod:`.ot_kd`) and ``fkd+ot``
(:mod:`.combined`).
"""

from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.registry import (
    REGISTRY,
    KDEntry,
    KDSpec,
    build_kd,
    build_kd_loss,
    get_entry,
    kd_names,
    make_spec,
    spec_from_dict,
)

__all__ = [
    "REGISTRY",
    "KDEntry",
    "KDMethod",
    "KDSpec",
    "build_kd",
    "build_kd_loss",
    "get_entry",
    "kd_names",
    "make_spec",
    "spec_from_dict",
]
