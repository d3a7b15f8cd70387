"""What the BOP evaluation site accepts on upload, checked before uploading (``bopkd check``).

The site evaluates an uploaded pose file with the BOP toolkit's scripts (``scripts/eval_bop19_pose.py``,
``scripts/eval_bop24_pose.py``), which read it with ``bop_toolkit_lib/inout.py``. A file is accepted when:

- its name is ``METHOD_DATASET-SPLIT[-SPLITTYPE].csv``: ``inout.parse_result_filename`` cuts the base
  name at the first ``.`` and splits it at ``_`` (method, then ``DATASET-SPLIT[-SPLITTYPE]`` split at
  ``-``), so the method cannot hold ``_`` or ``.``; the site adds its own ``_ID`` to stored files
  (``cnos-fastsammegapose_lmo-test_16ab01bd-....csv`` in the toolkit's ``bop_toolkit_lib/tests/data``),
  so an uploaded name has none. Method names of the site's files are letters, digits and ``-``
  (:data:`SITE_METHOD_RE`); :func:`site_method_name` maps other names to that form (``fkd+ot`` ->
  ``fkdot``);
- the dataset is known and the split is its BOP test split (``dataset_params.get_split_params``; the
  BOP'19 targets ``test_targets_bop19.json`` are of that split);
- its content is what ``inout.load_bop_results`` reads and ``inout.check_bop_results`` checks: the
  header ``scene_id,im_id,obj_id,score,R,t,time``, seven columns per row, and one time per image
  (``check_consistent_timings``, 1 ms tolerance; -1 if unknown) -- see :mod:`bopkd.eval.submission`,
  which also rejects what the toolkit would misread (blank lines, NaN, R that is not a rotation);
- it has at most ``max_num_estimates_per_image`` rows per image (``eval_bop24_pose.py`` and
  ``eval_calc_errors.py``: 100, 200 for xyzibd; the toolkit drops the lowest-scored rows beyond it);
- its objects are objects of the dataset (``dataset_params.get_model_params``: ``obj_ids``).

Results made with ground-truth boxes (protocol ``oracle-gt-boxes``, from the ``<csv>.json`` sidecar of
``bopkd predict``) are well-formed files, but the BOP rules forbid ground truth at test time: the check
says so in a note, and they are not valid for submission.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError, MissingFileError
from bopkd.utils.hashing import sha256_file

#: Method names of files the BOP site accepts: letters, digits and ``-`` (no ``_``, ``.``, ``+``).
SITE_METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
#: Protocol of ``bopkd predict`` with ground-truth boxes (see :mod:`bopkd.infer.naming`).
ORACLE = "oracle-gt-boxes"
#: At most this many problem lines of one kind per file; the rest are counted.
MAX_LINES = 20


def site_method_name(name: str) -> str:
    """``name`` in the characters the BOP site accepts: other characters dropped, ``-`` runs collapsed.

    ``bopkd-fkd+ot-tinycpu-s0`` -> ``bopkd-fkdot-tinycpu-s0``.
    """
    out = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]+", "", name)).strip("-")
    if not out:
        raise BopkdError(f"method name {name!r} has no letter or digit; use letters, digits and '-'")
    return out


def max_estimates_per_image(dataset: str) -> int:
    """The toolkit's per-image limit of estimates (``eval_bop24_pose.py``: 200 for xyzibd, else 100)."""
    from bopkd.eval.bop24 import max_estimates_per_image as limit

    return limit(dataset)


def keep_best_per_image(keys: list[tuple[int, int]], scores: list[float], limit: int) -> list[int]:
    """Indices of the ``limit`` highest-scored estimates of each image, in input order."""
    by_image: dict[tuple[int, int], list[int]] = {}
    for i, k in enumerate(keys):
        by_image.setdefault(k, []).append(i)
    keep = []
    for idx in by_image.values():
        keep += sorted(idx, key=lambda i: -scores[i])[:limit] if len(idx) > limit else idx
    return sorted(keep)


def protocol_of_csv(path: Path) -> str | None:
    """The protocol recorded in ``<csv>.json`` by ``bopkd predict`` (None without a readable sidecar)."""
    try:
        side = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return side.get("protocol") if isinstance(side, dict) else None


# --------------------------------------------------------------------------------------------- check


@dataclass
class SiteCheck:
    """The outcome of :func:`check_for_site` for one file.

    Attributes:
        path: the file.
        problems: one line each (``FILE[:LINE]: problem; fix``); empty when the site would accept it.
        summary: the counts and target coverage (``OK FILE: ...``) when there is no problem.
        notes: remarks that do not fail the check.
    """

    path: Path
    problems: list[str] = field(default_factory=list)
    summary: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _name_problems(path: Path, root: Path, rep: SiteCheck):
    """Problems of the file name; returns ``(name, spec)``, or None when the rest cannot be checked."""
    from bopkd.data.registry import get_spec
    from bopkd.eval.naming import parse_result_name

    try:
        name = parse_result_name(path)
    except BopkdError as e:
        rep.problems.append(str(e))
        return None
    if not SITE_METHOD_RE.match(name.method):
        rep.problems.append(
            f"{path}: method {name.method!r} has characters the BOP site does not accept: use letters, digits "
            f"and '-' only; rename it to {site_method_name(name.method)}_{str(name).split('_', 1)[1]}.csv"
        )
    if name.suffix:
        base = str(name).rsplit("_", name.suffix.count("_") + 1)[0]
        rep.problems.append(
            f"{path}: '_{name.suffix}' after DATASET-SPLIT: the site takes METHOD_DATASET-SPLIT[-SPLITTYPE].csv "
            f"and adds its own id; rename it to {base}.csv"
        )
    try:
        spec = get_spec(name.dataset, root)
    except BopkdError as e:
        rep.problems.append(f"{path}: {e}")
        return None
    if name.split_folder != spec.test_split:
        split = spec.test_split.replace("_", "-")
        rep.problems.append(
            f"{path}: split {name.split_folder!r} is not the BOP test split of {spec.name} ({spec.test_split!r}), "
            f"the only one with BOP targets; predict on it and name the file {name.method}_{spec.name}-{split}.csv"
        )
    return name, spec


def _first_lines(lines: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    first = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, lines)
    return first


def _content_problems(path: Path, arrays: dict, obj_ids: tuple[int, ...], dataset: str) -> list[str]:
    """Objects that are not the dataset's, and images over the toolkit's per-image limit."""
    out: list[str] = []
    lines, obj = arrays["line"], arrays["obj_id"]
    bad = ~np.isin(obj, np.asarray(obj_ids, dtype=np.int64))
    if bad.any():
        objs, inv, counts = np.unique(obj[bad], return_inverse=True, return_counts=True)
        first = _first_lines(lines[bad], inv.reshape(-1), len(objs))
        for o, ln, c in zip(objs.tolist(), first.tolist(), counts.tolist(), strict=True):
            out.append(
                f"{path}:{ln}: column obj_id: object {o} is not an object of {dataset} "
                f"(objects: {', '.join(map(str, obj_ids))}); {c} row(s): remove them"
            )
    limit = max_estimates_per_image(dataset)
    keys = np.stack([arrays["scene_id"], arrays["im_id"]], axis=1)
    ims, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    over = np.flatnonzero(counts > limit)
    if len(over):
        first = _first_lines(lines, inv.reshape(-1), len(ims))
        for k in over[:MAX_LINES].tolist():
            s, i = ims[k].tolist()
            out.append(
                f"{path}:{first[k]}: scene {s} image {i} has {counts[k]} estimates; the BOP toolkit evaluates at "
                f"most {limit} per image (max_num_estimates_per_image): keep the {limit} highest-scored"
            )
        if len(over) > MAX_LINES:
            out.append(f"{path}: {len(over) - MAX_LINES} more images have more than {limit} estimates")
    return out


def check_for_site(path: str | Path, root: str | Path) -> SiteCheck:
    """Check one pose result file against the rules of the module doc.

    Args:
        path: ``METHOD_DATASET-SPLIT[-SPLITTYPE].csv``.
        root: folder of the BOP datasets (a registered dataset may be absent: then the target coverage is
            not reported; a synthetic dataset is described by its folder).
    """
    from bopkd.eval.check import check_submission
    from bopkd.eval.submission import read_submission_arrays

    path, root = Path(path), Path(root)
    rep = SiteCheck(path)
    named = _name_problems(path, root, rep)
    if named is None:
        return rep
    name, spec = named
    try:
        arrays = read_submission_arrays(path, obj_ids=None)
    except BopkdError as e:
        rep.problems.append(str(e))
        return rep
    rep.problems += _content_problems(path, arrays, spec.obj_ids, spec.name)
    if protocol_of_csv(path) == ORACLE:
        rep.notes.append(
            f"{path}: made with ground-truth boxes (protocol {ORACLE}, see {path.name}.json): well-formed, but "
            "not valid for submission; rerun bopkd predict with --detections FILE"
        )
    if not spec.registered:
        rep.notes.append(f"{path}: {spec.name} is not a BOP dataset: the BOP site does not evaluate it")
    if rep.ok:
        cov = check_submission(path, root)
        rep.summary = cov.summary()
        rep.notes += [f"{path}: {n}" for n in cov.notes]
    return rep


# --------------------------------------------------------------------------------------------- pipeline


def detections_setting(detections: str | Path | None, modes: dict[str, str]) -> dict:
    """The predict stages' detections settings: the file and its SHA-256 (so that the stages rerun when
    it changes), after checking that it reads as BOP detections and that every model takes crops.

    Args:
        detections: ``--detections`` (None: none).
        modes: model label -> ``data.mode`` (``crop`` or ``full``).
    """
    if detections is None:
        return {"detections": None}
    from bopkd.data.detections import load_detections

    path = Path(detections)
    if not path.is_file():
        raise MissingFileError(path, "give the BOP default-detections JSON of the dataset's test split")
    full = [m for m, mode in modes.items() if mode != "crop"]
    if full:
        raise BopkdError(
            f"--detections {path}: {', '.join(full)} predict(s) on whole images (data.mode=full), which take no "
            "boxes; drop --detections"
        )
    load_detections(path)  # a malformed file stops the run here, not after the training stages
    return {"detections": str(path), "detections_sha256": sha256_file(path)}


def gt_boxes_notice(dataset: str, registered: bool, modes: dict[str, str], detections) -> str | None:
    """The line the pipeline prints when a BOP dataset's crop-mode models will use ground-truth boxes."""
    if not registered or detections is not None or "crop" not in modes.values():
        return None
    return (
        f"note: no --detections for the BOP dataset {dataset}: the crop-mode models will be run on crops around "
        f"the ground-truth boxes, so these are GT-box results (protocol {ORACLE}, '-{ORACLE}' in every CSV "
        "name), not valid for submission to the BOP site; give the BOP default detections with --detections FILE"
    )


def predict_boxes(stages, predict_names, modes, detections, dataset: str, registered: bool) -> str | None:
    """Put ``--detections`` (file and SHA-256) into the settings of the pipeline's predict stages; return
    the notice to give when a BOP dataset's crop-mode models will predict on ground-truth boxes.

    Without detections no key is added, so that the settings hashes of earlier runs stand.
    """
    det = detections_setting(detections, modes)
    if det["detections"] is not None:
        for st in stages:
            if st.name in predict_names:
                st.config.update(det)
    return gt_boxes_notice(dataset, registered, modes, detections)
