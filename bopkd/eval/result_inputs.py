"""What a scorer reads from a result file: the dataset its name gives, and its estimates.

Both name the result file in their errors and warnings, so that a run over many files says which one is
at fault. An empty result file (the header and no estimate) is scored, as the official toolkit scores
it: ``inout.load_bop_results`` returns no estimate, ``eval_calc_errors.py`` writes empty error files,
``eval_calc_scores.py`` counts every target as missed (recall 0, AP 0), and ``eval_bop19_pose.py`` /
``eval_bop24_pose.py`` take the mean of no per-image time (NaN, written as ``NaN``, which is not JSON;
bopkd writes null).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError

EMPTY_WARNING = (
    "{csv}: no estimates after the header; scored as the BOP toolkit scores an empty file (every recall "
    "and AP 0, average time per image null); check that the method wrote its estimates"
)


def result_spec(csv_path: str | Path, dataset: str, root: str | Path):
    """The :class:`~bopkd.data.registry.DatasetSpec` of the dataset a result file's name gives; an
    unknown dataset is an error that names the file, the known datasets and the fix."""
    from bopkd.data.registry import DESCRIPTOR_NAME, get_spec, known_names

    try:
        return get_spec(dataset, root)
    except BopkdError as e:
        if (Path(root) / dataset / DESCRIPTOR_NAME).is_file():
            raise BopkdError(f"{csv_path}: {e}") from None
        raise BopkdError(
            f"{csv_path}: unknown dataset {dataset!r} (from the file name): not registered or under {root}; "
            f"known: {', '.join(known_names(root))}; rename the file to METHOD_DATASET-SPLIT.csv with a "
            f"known DATASET, or put the dataset folder under --root"
        ) from None


def result_dataset(csv_path: str | Path, dataset: str, root: str | Path):
    """The :class:`~bopkd.data.dataset.BopDataset` a result file's name gives (see :func:`result_spec`)."""
    from bopkd.data.dataset import BopDataset

    result_spec(csv_path, dataset, root)
    return BopDataset(dataset, root)


def read_result_arrays(
    csv_path: str | Path, obj_ids: Iterable[int], warnings: list[str]
) -> dict[str, np.ndarray]:
    """The estimates of a result file (:func:`~bopkd.eval.submission.read_submission_arrays`); an empty
    file gives empty arrays and appends :data:`EMPTY_WARNING` to ``warnings``."""
    from bopkd.eval.submission import read_submission_arrays

    arrays = read_submission_arrays(csv_path, obj_ids=obj_ids, allow_empty=True)
    if len(arrays["score"]) == 0:
        warnings.append(EMPTY_WARNING.format(csv=csv_path))
    return arrays
