"""Score a BOP result file for BOP'24/'25 6D detection (mAP over MSSD and MSPD), as ``eval_bop24_pose.py``.

What the toolkit runs as ``eval_calc_errors.py`` (once per error series) and ``eval_calc_scores.py`` (once
per threshold) with ``--eval_mode=detection``, here in one process: the estimates and matching of
:mod:`bopkd.eval.bop24`, the MSSD/MSPD errors of :mod:`bopkd.eval.pair_errors` (MSSD divided by the
diameter for the ``mssd`` series, in mm for ``mssd_mm``; MSPD times ``640 / image width``), and the keys of
:func:`bopkd.eval.final_scores.bop24_scores`.

Target images come from ``test_targets_bop24.json`` in the dataset folder (the toolkit's default), or
from ``test_targets_bop19.json`` when there is none (as the toolkit's own tests do): only the list of
images is used; which objects count comes from each image's GT. When the same file is also scored for
BOP'19, pass that :class:`~bopkd.eval.scoring.SubmissionScorer` as ``bop19``: its parsed file, models and
MSSD/MSPD errors are reused, and only the pairs BOP'19 did not evaluate are computed here.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError
from bopkd.eval.bop24 import (
    MSPD_THRESHOLDS,
    MSSD_MM_THRESHOLDS,
    MSSD_THRESHOLDS,
    build_problem,
    max_estimates_per_image,
    mean_average_precision,
    select_estimates,
)
from bopkd.eval.final_scores import average_time_per_image, bop24_scores

#: Target files tried in the dataset folder, in order.
TARGET_FILES = ("test_targets_bop24.json", "test_targets_bop19.json")
#: Error series of ``eval_bop24_pose.py``: name -> thresholds.
SERIES = {"mssd": MSSD_THRESHOLDS, "mssd_mm": MSSD_MM_THRESHOLDS, "mspd": MSPD_THRESHOLDS}


def load_target_images(ds_path: Path, filename: str | None = None) -> tuple[list[tuple[int, int]], Path]:
    """Target images ``(scene_id, im_id)`` of a targets file, in the toolkit's order, and the file used.

    The toolkit keys the targets by scene, then image (``targets_org``): scenes in order of first
    appearance, and inside a scene its images in order of first appearance.
    """
    names = (filename,) if filename else TARGET_FILES
    path = next((ds_path / n for n in names if (ds_path / n).is_file()), None)
    if path is None:
        raise BopkdError(
            f"{ds_path / names[0]}: no such targets file; download the dataset's base archive "
            f"(bopkd download DATASET --parts base) or pass an existing file with --targets-file"
        )
    try:
        entries = json.loads(path.read_text())
        by_scene: dict[int, dict[int, None]] = {}
        for e in entries:
            by_scene.setdefault(int(e["scene_id"]), {})[int(e["im_id"])] = None
    except (ValueError, TypeError, KeyError) as e:
        raise BopkdError(
            f"{path}: not a BOP targets file (a JSON list of objects with scene_id and im_id: {e}); "
            f"download it again"
        ) from None
    return [(s, i) for s, ims in by_scene.items() for i in ims], path


@dataclass
class APSeries:
    """AP of one error series: ``ap`` (T, n_obj), NaN for objects without GT; ``n_gt`` (n_obj,)."""

    name: str
    thresholds: np.ndarray
    obj_ids: tuple[int, ...]
    ap: np.ndarray
    n_gt: np.ndarray
    m_ap: float | None


class DetectionScorer:
    """BOP'24 mAP of one result file (see the module doc).

    Args:
        csv_path: the result file; root: folder holding the datasets.
        targets_file: name of the targets file in the dataset folder (default: see :data:`TARGET_FILES`).
        max_per_image: the per-image limit (default: the toolkit's for the dataset).
        bop19: a :class:`~bopkd.eval.scoring.SubmissionScorer` of the same file that has run.
    """

    def __init__(
        self,
        csv_path: str | Path,
        root: str | Path,
        targets_file: str | None = None,
        max_per_image: int | None = None,
        bop19=None,
        log: Callable[[str], None] | None = None,
    ):
        from bopkd.eval.naming import parse_result_name
        from bopkd.eval.result_inputs import result_dataset

        self.csv_path = Path(csv_path)
        self.bop19 = bop19
        self.name = parse_result_name(self.csv_path)
        self.ds = bop19.ds if bop19 is not None else result_dataset(self.csv_path, self.name.dataset, root)
        self.split = self.name.split_folder
        self.targets_file = targets_file
        self.limit = int(max_per_image or max_estimates_per_image(self.name.dataset))
        self.log = log or (lambda m: None)
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self._meshes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _model(self, obj_id: int) -> tuple[np.ndarray, np.ndarray]:
        if self.bop19 is not None:
            return self.bop19._model(obj_id)
        from bopkd.data.ply_numpy import read_mesh

        if obj_id not in self._meshes:
            self._meshes[obj_id] = read_mesh(self.ds.model_path(obj_id, eval=True))
        return self._meshes[obj_id]

    # ------------------------------------------------------------------------------------------ data

    def _load_images(self) -> None:
        """Target images in the toolkit's order, with their GT instances, visibilities and cameras."""
        ds = self.ds
        self.images, self.targets_path = load_target_images(ds.path, self.targets_file)
        if self.targets_path.name != TARGET_FILES[0]:
            self.notes.append(f"target images from {self.targets_path.name} (no {TARGET_FILES[0]})")
        self.im_gt, self.im_visib, self.im_K = [], [], []
        for s, i in self.images:
            gts = ds.scene_gt(self.split, s).get(i)
            infos = ds.scene_gt_info(self.split, s).get(i)
            cam = ds.scene_camera(self.split, s).get(i)
            if gts is None or infos is None or cam is None:
                raise BopkdError(
                    f"{ds.scene_dir(self.split, s)}: image {i} is a target of {self.targets_path.name} but has no "
                    f"GT, GT info or camera; download the test split again"
                )
            self.im_gt.append(gts)
            self.im_visib.append(np.array([g.visib_fract for g in infos], np.float64))
            self.im_K.append(np.asarray(cam.K, np.float64).reshape(3, 3))

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(sorted(int(o) for o in self.ds.obj_ids))

    def _build(self) -> None:
        """The evaluated estimates, the matching problem and the (estimate, GT) pair arrays."""
        a = self.arrays
        im_objs = [{gt.obj_id for gt in gts} for gts in self.im_gt]
        rows, est_im, self.capped = select_estimates(
            a["scene_id"], a["im_id"], a["obj_id"], a["score"], self.images, im_objs, self.limit
        )
        n_cut, n_skip = len(a["score"]) - len(self.capped), len(self.capped) - len(rows)
        if n_cut:
            self.notes.append(f"{n_cut} estimates beyond the {self.limit} best-scored of their image ignored")
        if n_skip:
            self.notes.append(
                f"{n_skip} estimates not evaluated: not a target image, or no GT of their object in the image "
                f"(the toolkit skips them; not false positives)"
            )
        obj = a["obj_id"][rows]
        self.problem, pair_est, pair_gt = build_problem(
            est_im, obj, a["score"][rows], [[g.obj_id for g in gts] for gts in self.im_gt], self.im_visib,
            self.obj_ids,
        )  # fmt: skip
        self.n_gt = self.problem.n_gt
        # GT instances of all target images, flat; a pair's GT is its image's offset + gt_id.
        n_im = np.array([len(g) for g in self.im_gt], np.int64)
        flat = (np.cumsum(n_im) - n_im)[est_im[pair_est]] + pair_gt
        all_gt = [g for gts in self.im_gt for g in gts]
        pair_row = rows[pair_est]
        self.pairs = {
            "row": pair_row,
            "gt_id": pair_gt,
            "obj": obj[pair_est],
            "R_e": a["R"][pair_row],
            "t_e": a["t"][pair_row],
            "R_g": np.array([g.R for g in all_gt], np.float64).reshape(-1, 3, 3)[flat],
            "t_g": np.array([g.t for g in all_gt], np.float64).reshape(-1, 3)[flat],
            "K": np.stack(self.im_K).reshape(-1, 3, 3)[est_im[pair_est]]
            if self.images
            else np.zeros((0, 3, 3)),
        }

    # ---------------------------------------------------------------------------------------- errors

    def _shared_errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MSSD, MSPD already computed by the BOP'19 scorer for the same (row, gt_id) pairs; mask of found."""
        P = len(self.pairs["row"])
        mssd, mspd, found = np.full(P, np.inf), np.full(P, np.inf), np.zeros(P, bool)
        sc = getattr(self.bop19, "pairs", None)
        if sc is None or "mssd" not in sc.errors or not len(sc.pair_est) or not P:
            return mssd, mspd, found
        base = int(max(sc.pair_gt.max(), self.pairs["gt_id"].max())) + 1
        theirs = sc.est_row[sc.pair_est].astype(np.int64) * base + sc.pair_gt
        ours = self.pairs["row"] * base + self.pairs["gt_id"]
        order = np.argsort(theirs, kind="stable")
        pos = np.minimum(np.searchsorted(theirs[order], ours), len(order) - 1)
        found = theirs[order][pos] == ours
        src = order[pos[found]]
        mssd[found] = sc.errors["mssd"][src]
        mspd[found] = sc.errors["mspd"][src]
        return mssd, mspd, found

    def compute_errors(self) -> None:
        """Raw MSSD (mm) and MSPD (px) of every pair, computing only those not shared."""
        from bopkd.eval.pair_errors import mssd_mspd

        t0 = _time.perf_counter()
        p = self.pairs
        mssd, mspd, found = self._shared_errors()
        todo = np.flatnonzero(~found)
        if len(todo):
            mssd[todo], mspd[todo] = mssd_mspd(
                p["R_e"][todo], p["t_e"][todo], p["R_g"][todo], p["t_g"][todo], p["K"][todo],
                p["obj"][todo], self.infos, self._model,
            )  # fmt: skip
        self.errors = {"mssd": mssd, "mspd": mspd}
        self.n_shared = int(found.sum())
        self.timings["mssd+mspd"] = _time.perf_counter() - t0

    def normalised(self, series: str) -> np.ndarray:
        """Errors of a series as ``eval_calc_scores.py`` thresholds them."""
        if series == "mssd":
            diam = np.array([float(self.infos[int(o)].diameter) for o in self.pairs["obj"]])
            return self.errors["mssd"] / diam
        if series == "mssd_mm":
            return self.errors["mssd"]
        return (640.0 / float(self.ds.spec.im_size[0])) * self.errors["mspd"]

    # --------------------------------------------------------------------------------------- scoring

    def _load(self) -> None:
        from bopkd.eval.result_inputs import read_result_arrays

        t0 = _time.perf_counter()
        if getattr(self.bop19, "pairs", None) is not None:
            self.arrays = self.bop19.arrays
            self.warnings += self.bop19.warnings
        else:
            self.arrays = read_result_arrays(self.csv_path, self.ds.obj_ids, self.warnings)
        self._load_images()
        self._build()
        self.infos = self.ds.models_info(eval=True)
        missing = sorted({int(o) for o in self.pairs["obj"]} - set(self.infos))
        if missing:
            raise BopkdError(
                f"{self.ds.models_dir(eval=True) / 'models_info.json'}: no entry for object(s) {missing}; "
                f"download the models again"
            )
        self.timings["load"] = _time.perf_counter() - t0

    def run(self) -> dict:
        """Compute the mAP of every series; returns the results dict (see :func:`result_record`)."""
        t_start = _time.perf_counter()
        self._load()
        self.compute_errors()
        t0 = _time.perf_counter()
        series = {}
        for name, ths in SERIES.items():
            ap = self.problem.average_precisions(self.normalised(name), ths)
            series[name] = APSeries(
                name, ths, self.obj_ids, ap, self.n_gt, mean_average_precision(ap, self.n_gt)
            )
        if not self.n_gt.any():
            self.notes.append("no GT instance with visib_fract >= 0.1 in the target images: mAP is null")
        self.timings["matching"] = _time.perf_counter() - t0
        self.timings["total"] = _time.perf_counter() - t_start
        return self.result_record(series)

    def result_record(self, series: dict[str, APSeries]) -> dict:
        """``scores_bop24`` (the toolkit's keys), ``series`` (name -> :class:`APSeries`), counts, notes."""
        a = self.arrays
        cap = self.capped
        avg_time = average_time_per_image(a["scene_id"][cap], a["im_id"][cap], a["time"][cap])
        return {
            "result_name": str(self.name),
            "csv": str(self.csv_path),
            "dataset": self.name.dataset,
            "engine": "bopkd",
            "targets_file": self.targets_path.name,
            "max_estimates_per_image": self.limit,
            "n_estimates": int(len(a["score"])),
            "n_evaluated": int(self.problem.n_estimates),
            "n_pairs": int(len(self.pairs["row"])),
            "n_pairs_shared": self.n_shared,
            "n_gt": int(self.n_gt.sum()),
            "n_images": len(self.images),
            "series": series,
            "average_time_per_image": avg_time,
            "scores_bop24": bop24_scores({k: s.m_ap for k, s in series.items()}, avg_time),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
        }
