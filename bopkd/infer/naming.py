"""Protocol and result-file name of a prediction run (``METHOD_DATASET-SPLIT[-TYPE].csv``).

Protocols (the sidecar's ``protocol``; GT boxes also mark the method name):

- ``full-image``: the whole image, no boxes.
- ``oracle-gt-boxes``: crop mode with boxes from the GT; not a fair comparison with detector-based
  methods, so the method name gets ``-oracle-gt-boxes`` and every output says so.
- ``detections``: crop mode with boxes from a detections file.
"""

from __future__ import annotations

import re
from pathlib import Path

from bopkd.data.dataset import BopDataset
from bopkd.eval.bop_site import ORACLE, site_method_name
from bopkd.eval.naming import ResultName
from bopkd.train.config import RunConfig


def protocol_of(cfg: RunConfig, detections: str | Path | None) -> str:
    """``full-image`` for whole-image models, else ``detections`` with a detections file, else the oracle."""
    if cfg.data.mode != "crop":
        return "full-image"
    return "detections" if detections is not None else ORACLE


def default_method(cfg: RunConfig) -> str:
    """``bopkd-teacher-<backbone>`` or ``bopkd-student-<backbone>-kd-<method>`` in the characters the BOP
    site accepts (letters, digits, '-'; ``fkd+ot`` -> ``fkdot``)."""
    if cfg.role == "teacher":
        name = f"bopkd-teacher-{cfg.model.backbone}"
    else:
        name = f"bopkd-student-{cfg.model.backbone}-kd-{cfg.kd.method}"
    return site_method_name(re.sub(r"[^A-Za-z0-9+]+", "-", name))


def method_name(cfg: RunConfig, method: str | None, protocol: str) -> str:
    """The result file's method; GT-box (oracle) results always carry ``-oracle-gt-boxes``."""
    name = method or default_method(cfg)
    if protocol == ORACLE and ORACLE not in name:
        name = f"{name}-{ORACLE}"
    return name


def result_name(method: str, dataset: BopDataset, split: str) -> ResultName:
    """``METHOD_DATASET-SPLIT[-TYPE]``: a split folder ``test_primesense`` is split ``test`` of type
    ``primesense``."""
    base, _, typ = split.partition("_")
    return ResultName(method=method, dataset=dataset.name, split=base, split_type=typ or None)
