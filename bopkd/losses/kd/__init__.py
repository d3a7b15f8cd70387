"""Knowledge-distillation methods for keypoint pose networks, one registry (:mod:`.registry`).

``none`` (direct training, :mod:`.none`), ``pred`` (prediction-to-prediction, :mod:`.pred`), ``fkd``
(Zhang & Ma's feature distillation, :mod:`.fkd`), ``ot`` (Guo et al.'s OT distillation, :mod:`.ot_kd`)
and ``fkd+ot`` (:mod:`.combined`). Each method module registers its class with
:func:`~.registry.register_kd`; importing them here, in this order, fills :data:`~.registry.KD_METHODS`.
"""

# isort: off
# Registration order is the order of kd_names(), the CLI help and the reports.
from bopkd.losses.kd import none, pred, fkd, ot_kd, combined  # noqa: F401

# isort: on
from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.registry import (
    KD_METHODS,
    KDEntry,
    KDSpec,
    build_kd,
    build_kd_loss,
    get_entry,
    kd_names,
    make_spec,
    register_kd,
    spec_from_dict,
    unregister_kd,
)

__all__ = [
    "KD_METHODS",
    "KDEntry",
    "KDMethod",
    "KDSpec",
    "build_kd",
    "build_kd_loss",
    "get_entry",
    "kd_names",
    "make_spec",
    "register_kd",
    "spec_from_dict",
    "unregister_kd",
]
