"""Knowledge-distillation methods for keypoint and dense pose networks, one registry (:mod:`.registry`).

``none`` (direct training, :mod:`.none`), ``pred`` (prediction-to-prediction, :mod:`.pred`), ``fkd``
(Zhang & Ma's feature distillation, :mod:`.fkd`), ``ot`` (Guo et al.'s OT distillation, :mod:`.ot_kd`)
and ``fkd+ot`` (:mod:`.combined`). The dense family (ZebraPose-style networks) has the same five names:
:mod:`.dense_none`, :mod:`.dense_pred`, :mod:`.dense_fkd`, :mod:`.dense_ot`, :mod:`.dense_combined`. Each
method module registers its class with :func:`~.registry.register_kd`; importing them here, in this order,
fills :data:`~.registry.KD_METHODS` (sparse) and :data:`~.registry.DENSE_KD_METHODS`.
"""

# isort: off
# Registration order is the order of kd_names(), the CLI help and the reports.
from bopkd.losses.kd import none, pred, fkd, ot_kd, combined  # noqa: F401
from bopkd.losses.kd import dense_none, dense_pred, dense_fkd, dense_ot, dense_combined  # noqa: F401

# isort: on
from bopkd.losses.kd.base import KDMethod
from bopkd.losses.kd.registry import (
    DENSE_KD_METHODS,
    KD_FAMILIES,
    KD_METHODS,
    KD_REGISTRY,
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
    "DENSE_KD_METHODS",
    "KD_FAMILIES",
    "KD_METHODS",
    "KD_REGISTRY",
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
