"""Score BOP result files: BOP'19 average recall (VSD, MSSD, MSPD) and ADD(-S)/ADI/ADD at 0.1 d.

Reproduces, in one process, what the official toolkit computes with ``scripts/eval_bop19_pose.py``
(which runs ``eval_calc_errors.py`` once per error type and ``eval_calc_scores.py`` once per threshold and
tau) and with ``eval_calc_errors.py --error_type=ad|adi|add`` + ``eval_calc_scores.py --correct_th_*=0.1``:

- parameters of ``eval_bop19_pose.py``: ``n_top = -1``, ``visib_gt_min = -1``, ``max_sym_disc_step =
  0.01``, VSD delta from the dataset (``vsd_deltas``, 15 mm for LM-O), taus and VSD/MSSD thresholds
  ``np.arange(0.05, 0.51, 0.05)``, MSPD thresholds ``np.arange(5, 51, 5)`` px;
- errors as in ``eval_calc_errors.py`` with the evaluation models (``models_eval``), see
  :mod:`bopkd.eval.pose_error` and :mod:`bopkd.eval.vsd`; MSSD and AD* divided by the diameter, MSPD
  multiplied by ``640 / image width`` (``eval_calc_scores.py``: ``normalized_by_diameter``,
  ``normalized_by_im_width``);
- matching and recall as :mod:`bopkd.eval.matching`;
- ``bop19_average_recall_<e>`` = ``np.mean`` of the recalls in the toolkit's order (VSD: tau-major over
  10 taus x 10 thresholds), ``bop19_average_recall`` = mean of the three (Hodan et al., "BOP Challenge
  2020 on 6D Object Localization", ECCVW 2020, Sec. 2.4), ``bop19_average_time_per_image`` = mean over
  images of the per-image time, -1 if any row has a negative time (``inout.check_consistent_timings``).
- ADD(-S)-0.1d (error ``ad``: ADI for the dataset's symmetric objects, ADD otherwise; Hinterstoisser et
  al., ACCV 2012) uses the same targets, ``n_top = -1`` and ``visib_gt_min = -1``.

Without depth images in the test split VSD cannot be computed: it is skipped with a note, MSSD and MSPD
are still scored exactly, and ``bop19_average_recall_vsd`` and ``bop19_average_recall`` are written as
null (the official AR is not defined without VSD; ``bop19_average_recall_mssd_mspd`` holds the mean of
the other two, clearly named).
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bopkd.errors import BopkdError
from bopkd.eval.final_scores import average_time_per_image, bop19_scores
from bopkd.eval.pair_table import PairTable

#: Error types that can be asked for, besides ``bop19`` (= vsd + mssd + mspd).
AD_METRICS = ("ad", "adi", "add")
ALL_METRICS = ("bop19", *AD_METRICS)

#: BOP'19 correctness thresholds, exactly as ``eval_bop19_pose.py`` builds them.
VSD_TAUS = np.arange(0.05, 0.51, 0.05)
VSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)
MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)
MSPD_THRESHOLDS = np.arange(5, 51, 5).astype(np.float64)
#: ADD(-S)/ADI/ADD correctness threshold (fraction of the diameter), ``eval_calc_scores.py`` default.
AD_THRESHOLD = 0.1


@dataclass
class MetricResult:
    """Recalls of one error type.

    Attributes:
        tp: (V, T, n_obj) matched GT per variant (VSD tau; V = 1 otherwise), threshold and object.
        n_targets: (n_obj,) valid GT per object; obj_ids: the dataset's objects.
        tp_scene, n_targets_scene, scene_ids: the same per test scene.
    """

    name: str
    thresholds: np.ndarray
    taus: np.ndarray | None
    tp: np.ndarray
    n_targets: np.ndarray
    obj_ids: tuple[int, ...]
    tp_scene: np.ndarray
    n_targets_scene: np.ndarray
    scene_ids: tuple[int, ...]

    def error_signs(self) -> list[str]:
        """The toolkit's error folder names (``misc.get_error_signature``), one per variant."""
        if self.taus is None:
            return [f"error={self.name}_ntop=-1"]
        return [f"error={self.name}_ntop=-1_delta={self.delta:.3f}_tau={t:.3f}" for t in self.taus]

    delta: float = 15.0

    def recalls(self) -> np.ndarray:
        """(V, T) total recall, ``tp / targets`` as ``score.calc_recall``."""
        tot = int(self.n_targets.sum())
        return np.array([[int(x) / float(tot) if tot else 0.0 for x in row] for row in self.tp.sum(axis=2)])

    def average_recall(self) -> float:
        """Mean of the recalls in the toolkit's order (tau-major), as ``eval_bop19_pose.py``."""
        return float(np.mean([float(r) for r in self.recalls().reshape(-1)]))


def _load_depth_u16(path: Path) -> np.ndarray:
    """The stored test depth (uint16), from the in-process cache (:data:`bopkd.eval.lru.DEPTH_IMAGES`)."""
    import cv2

    from bopkd.eval.lru import DEPTH_IMAGES

    st = path.stat()

    def load() -> np.ndarray:
        im = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if im is None:
            raise BopkdError(f"{path}: not a readable depth image; download the test split again")
        return im

    return DEPTH_IMAGES.get((str(path), st.st_size, st.st_mtime_ns), load)


def resolve_workers(workers: int | None) -> int:
    """Threads for scoring: ``workers``, or every core this process may use when None or 0 (its CPU
    affinity, which containers and ``taskset`` restrict; ``os.cpu_count()`` where that is unknown)."""
    if workers is None or workers == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
            return max(1, os.cpu_count() or 1)
    if workers < 0:
        raise BopkdError(f"--workers {workers}: give a number of threads >= 1, or 0 for every core")
    return int(workers)


class SubmissionScorer:
    """Computes the pose errors and recalls of one result file (see the module doc).

    Args:
        csv_path: the result file.
        root: folder holding the BOP datasets.
        metrics: any of ``bop19``, ``ad``, ``adi``, ``add``.
        log: callable for progress messages.
        workers: threads for VSD (images in parallel; the compiled kernels release the GIL) and the ADI
            k-d tree queries; None or 0: every core.
    """

    def __init__(
        self,
        csv_path: str | Path,
        root: str | Path,
        metrics: Sequence[str] = ("bop19", "ad"),
        log: Callable[[str], None] | None = None,
        workers: int | None = None,
    ):
        from bopkd.eval.naming import parse_result_name
        from bopkd.eval.result_inputs import result_dataset

        self.csv_path = Path(csv_path)
        self.metrics = tuple(metrics)
        self.workers = resolve_workers(workers)
        bad = [m for m in self.metrics if m not in ALL_METRICS]
        if bad:
            raise BopkdError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(ALL_METRICS)}")
        self.log = log or (lambda m: None)
        self.name = parse_result_name(self.csv_path)
        self.ds = result_dataset(self.csv_path, self.name.dataset, root)
        self.split = self.name.split_folder
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self._meshes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------------------------------ data

    def _load(self) -> None:
        """Read the result file, select the evaluated estimates (BOP'19 top ``inst_count`` per target) and
        build their (estimate, GT of the same object) pairs with poses, GT validity and cameras."""
        from bopkd.eval.matching import select_top_estimates
        from bopkd.eval.result_inputs import read_result_arrays

        t0 = _time.perf_counter()
        ds = self.ds
        self.arrays = a = read_result_arrays(self.csv_path, ds.obj_ids, self.warnings)
        self.targets = [(t.scene_id, t.im_id, t.obj_id, t.inst_count) for t in ds.targets]
        rows, est_id = select_top_estimates(a["scene_id"], a["im_id"], a["obj_id"], a["score"], self.targets)
        self._load_target_images()
        self._build_pairs(a, rows, est_id)
        self.infos = ds.models_info(eval=True)
        missing = sorted({int(o) for o in self.pair_obj} - set(self.infos))
        if missing:
            raise BopkdError(
                f"{ds.models_dir(eval=True) / 'models_info.json'}: no entry for object(s) {missing}; download the models again"
            )
        self.timings["load"] = _time.perf_counter() - t0

    def _load_target_images(self) -> None:
        """Per target image: its GT, GT visibility, GT validity (BOP toolkit), camera K and depth scale."""
        from bopkd.eval.matching import valid_gt_mask

        ds = self.ds
        im_targets: dict[tuple[int, int], dict[int, int]] = {}
        for s, i, o, c in self.targets:
            im_targets.setdefault((s, i), {})[o] = c
        self.im_targets = im_targets
        self.gt: dict[tuple[int, int], list] = {}
        self.gt_visib: dict[tuple[int, int], np.ndarray] = {}
        self.gt_valid: dict[tuple[int, int], np.ndarray] = {}
        self.K: dict[tuple[int, int], np.ndarray] = {}
        self.depth_scale: dict[tuple[int, int], float] = {}
        for s, i in im_targets:
            gts = ds.scene_gt(self.split, s).get(i)
            infos = ds.scene_gt_info(self.split, s).get(i)
            cam = ds.scene_camera(self.split, s).get(i)
            if gts is None or infos is None or cam is None:
                raise BopkdError(
                    f"{ds.scene_dir(self.split, s)}: image {i} is a test target but has no GT, GT info or camera; "
                    f"download the test split again"
                )
            self.gt[(s, i)] = gts
            self.gt_visib[(s, i)] = np.array([g.visib_fract for g in infos], np.float64)
            self.gt_valid[(s, i)] = valid_gt_mask(
                [g.obj_id for g in gts], self.gt_visib[(s, i)], im_targets[(s, i)]
            )
            self.K[(s, i)] = cam.K
            self.depth_scale[(s, i)] = cam.depth_scale

    def _build_pairs(self, a: dict, rows: np.ndarray, est_id: np.ndarray) -> None:
        """The :class:`PairTable` of the evaluated estimates (rows of ``a``) with every GT instance of their
        object in their image, and per pair: estimated and GT pose, object, image key, GT validity."""
        pe, pg, pv, pc = [], [], [], []
        self.est_n_gt = np.zeros(len(rows), np.int64)  # GT instances of the estimate's object in its image
        for m, r in enumerate(rows):
            key = (int(a["scene_id"][r]), int(a["im_id"][r]))
            o = int(a["obj_id"][r])
            col = 0
            for g, gt in enumerate(self.gt[key]):
                if gt.obj_id == o:
                    pe.append(m)
                    pg.append(g)
                    pv.append(self.gt_visib[key][g])
                    pc.append(col)  # the GT's column among its object's instances (gt_id order)
                    col += 1
            self.est_n_gt[m] = col
        self.pair_col = np.array(pc, np.int64)
        self.pairs = PairTable(
            est_row=rows,
            est_scene=a["scene_id"][rows],
            est_im=a["im_id"][rows],
            est_obj=a["obj_id"][rows],
            est_id=est_id,
            est_score=a["score"][rows],
            pair_est=np.array(pe, np.int64),
            pair_gt=np.array(pg, np.int64),
            pair_visib=np.array(pv, np.float64),
        )
        p = self.pairs
        r_pair = p.est_row[p.pair_est]
        self.pair_Re = a["R"][r_pair]
        self.pair_te = a["t"][r_pair]
        self.pair_obj = p.est_obj[p.pair_est]
        keys = list(zip(p.est_scene[p.pair_est].tolist(), p.est_im[p.pair_est].tolist(), strict=True))
        self.pair_key = keys
        self.pair_Rg = np.array(
            [self.gt[k][g].R for k, g in zip(keys, p.pair_gt.tolist(), strict=True)]
        ).reshape(-1, 3, 3)
        self.pair_tg = np.array(
            [self.gt[k][g].t for k, g in zip(keys, p.pair_gt.tolist(), strict=True)]
        ).reshape(-1, 3)
        self.pair_valid = np.array(
            [self.gt_valid[k][g] for k, g in zip(keys, p.pair_gt.tolist(), strict=True)], dtype=bool
        ).reshape(-1)

    def _model(self, obj_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(pts, faces)`` of the evaluation model (``models_eval``), read once."""
        from bopkd.data.ply_numpy import read_mesh

        o = int(obj_id)
        if o not in self._meshes:
            self._meshes[o] = read_mesh(self.ds.model_path(o, eval=True))
        return self._meshes[o]

    # ---------------------------------------------------------------------------------------- errors

    def _by_object(self):
        for o in np.unique(self.pair_obj):
            yield int(o), np.flatnonzero(self.pair_obj == o)

    def compute_mssd_mspd(self) -> None:
        from bopkd.eval.pair_errors import mssd_mspd

        t0 = _time.perf_counter()
        Ks = np.array([self.K[k] for k in self.pair_key]).reshape(-1, 3, 3)
        self.pairs.errors["mssd"], self.pairs.errors["mspd"] = mssd_mspd(
            self.pair_Re, self.pair_te, self.pair_Rg, self.pair_tg, Ks, self.pair_obj, self.infos, self._model
        )
        self.timings["mssd+mspd"] = _time.perf_counter() - t0

    def compute_ad(self, kinds: Sequence[str]) -> None:
        from bopkd.eval.pose_error import add, adi, model_tree, spheres_overlap

        t0 = _time.perf_counter()
        P = len(self.pairs.pair_est)
        out = {k: np.full(P, np.inf) for k in kinds}
        sym_ids = set(self.ds.spec.symmetric_obj_ids)
        for o, idx in self._by_object():
            info = self.infos[o]
            pts = self._model(o)[0]
            ok = idx[spheres_overlap(self.pair_te[idx], self.pair_tg[idx], info.diameter)]
            if not len(ok):
                continue
            args = (self.pair_Re[ok], self.pair_te[ok], self.pair_Rg[ok], self.pair_tg[ok], pts)
            need_adi = "adi" in kinds or ("ad" in kinds and o in sym_ids)
            need_add = "add" in kinds or ("ad" in kinds and o not in sym_ids)
            e_adi = adi(*args, tree=model_tree(pts), workers=self.workers) if need_adi else None
            e_add = add(*args) if need_add else None
            if "adi" in kinds:
                out["adi"][ok] = e_adi
            if "add" in kinds:
                out["add"][ok] = e_add
            if "ad" in kinds:
                out["ad"][ok] = e_adi if o in sym_ids else e_add
        self.pairs.errors.update(out)
        self.timings["ad"] = _time.perf_counter() - t0

    def compute_vsd(self) -> None:
        """VSD (10 taus) of every pair whose sphere projections overlap (others stay 1), images in parallel.

        GT renders and depth images come from the in-process caches of :mod:`bopkd.eval.lru`.
        """
        from concurrent.futures import ThreadPoolExecutor

        from bopkd.eval.lru import GT_RENDERS
        from bopkd.eval.raster import ToolkitDepthRenderer

        t0 = _time.perf_counter()
        p = self.pairs
        errs = np.ones((len(p.pair_est), len(VSD_TAUS)))
        W, H = self.ds.spec.im_size
        ren = ToolkitDepthRenderer(W, H)
        need, model_id = self._vsd_pairs(ren, W, H)
        by_image: dict[tuple[int, int], list[int]] = {}
        for q in np.flatnonzero(need):
            by_image.setdefault(self.pair_key[q], []).append(int(q))
        counts = {"renders": 0, "gt_cached": 0}

        def image(key: tuple[int, int], qs: list[int]) -> None:
            self._vsd_image(key, qs, ren, model_id, errs, counts)

        hits0, miss0 = GT_RENDERS.hits, GT_RENDERS.misses
        items = list(by_image.items())
        if self.workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(self.workers) as ex:
                for f in [ex.submit(image, k, qs) for k, qs in items]:
                    f.result()
        else:
            for k, qs in items:
                image(k, qs)
        p.errors["vsd"] = errs
        self.vsd_counts = {
            "pairs": int(need.sum()),
            "estimate_renders": counts["renders"],
            "gt_renders": GT_RENDERS.misses - miss0,
            "gt_renders_cached": GT_RENDERS.hits - hits0,
        }
        self.timings["vsd"] = _time.perf_counter() - t0

    def _vsd_pairs(self, ren, W: int, H: int) -> tuple[np.ndarray, dict[int, tuple]]:
        """(P,) bool: the pairs whose sphere projections overlap (radius diameter / 2, BOP toolkit); their
        objects are added to ``ren``, and identified for the GT render cache by (file, size, mtime, W, H)."""
        from bopkd.eval.pose_error import sphere_projections_overlap

        need = np.zeros(len(self.pairs.pair_est), bool)
        model_id: dict[int, tuple] = {}
        for o, idx in self._by_object():
            r = 0.5 * self.infos[o].diameter
            need[idx] = sphere_projections_overlap(self.pair_te[idx], self.pair_tg[idx], r)
            if need[idx].any():
                ren.add_object(o, *self._model(o))
                path = self.ds.model_path(o, eval=True)
                st = path.stat()
                model_id[o] = (str(path), st.st_size, st.st_mtime_ns, W, H)
        return need, model_id

    def _test_depth(self, s: int, i: int) -> np.ndarray:
        """The stored (H, W) uint16 depth of test image ``(s, i)``, checked against the dataset's size."""
        W, H = self.ds.spec.im_size
        path = self.ds.depth_path(self.split, s, i)
        if not path.is_file():
            raise BopkdError(f"missing file {path}: download the test split with depth, or score without VSD")
        depth = _load_depth_u16(path)
        if depth.shape != (H, W):
            raise BopkdError(
                f"{path}: depth image is {depth.shape[1]}x{depth.shape[0]}, the dataset's image size is "
                f"{W}x{H}; download the test split again"
            )
        return depth

    def _vsd_image(
        self, key: tuple[int, int], qs: list[int], ren, model_id: dict, errs: np.ndarray, counts: dict
    ) -> None:
        """VSD of the pairs ``qs`` of one image into ``errs`` (P, 10): each GT and estimate rendered once."""
        from bopkd.eval.lru import GT_RENDERS
        from bopkd.eval.vsd import pixel_rays, vsd_from_renders

        p = self.pairs
        W, H = self.ds.spec.im_size
        delta = float(self.ds.spec.vsd_delta)
        K = self.K[key]
        depth = self._test_depth(*key)
        rays = pixel_rays(K, W, H)
        gts: dict[int, object] = {}
        ests: dict[int, object] = {}
        for q in qs:
            o = int(self.pair_obj[q])
            g = int(p.pair_gt[q])
            m = int(p.pair_est[q])
            if g not in gts:
                Rg, tg = self.pair_Rg[q], self.pair_tg[q]
                ck = (model_id[o], o, Rg.tobytes(), tg.tobytes(), K.tobytes())
                gts[g] = GT_RENDERS.get(ck, lambda o=o, Rg=Rg, tg=tg: ren.render(o, Rg, tg, K))
            if m not in ests:
                ests[m] = ren.render(o, self.pair_Re[q], self.pair_te[q], K)
                counts["renders"] += 1
            errs[q] = vsd_from_renders(
                depth,
                gts[g],
                ests[m],
                K,
                delta,
                VSD_TAUS,
                self.infos[o].diameter,
                rays,
                self.depth_scale[key],
            )

    # --------------------------------------------------------------------------------------- scoring

    def matching_problem(self):
        from bopkd.eval.matching import MatchingProblem

        p = self.pairs
        M = len(p.est_row)
        gkeys = np.stack([p.est_scene, p.est_im, p.est_obj], axis=1) if M else np.zeros((0, 3), np.int64)
        # Estimates are grouped and score-sorted already; group index by run of equal keys.
        new = np.ones(M, bool)
        if M > 1:
            new[1:] = np.any(gkeys[1:] != gkeys[:-1], axis=1)
        group = np.cumsum(new) - 1
        n_groups = int(group[-1] + 1) if M else 0
        starts = np.flatnonzero(new)
        est_rank = np.arange(M) - starts[group] if M else np.zeros(0, np.int64)
        group_n_est = np.bincount(group, minlength=n_groups) if M else np.zeros(0, np.int64)
        group_obj = gkeys[starts, 2] if M else np.zeros(0, np.int64)
        self.group_scene = gkeys[starts, 0] if M else np.zeros(0, np.int64)
        group_n_gt = self.est_n_gt[starts] if M else np.zeros(0, np.int64)
        pair_group = group[p.pair_est]
        obj_ids = tuple(int(o) for o in self.ds.obj_ids)
        n_targets = np.zeros(len(obj_ids), np.int64)
        index = {o: k for k, o in enumerate(obj_ids)}
        for key, valid in self.gt_valid.items():
            for g, gt in enumerate(self.gt[key]):
                if valid[g] and gt.obj_id in index:
                    n_targets[index[gt.obj_id]] += 1
        return MatchingProblem(
            n_groups=n_groups,
            group_obj=group_obj,
            group_n_est=group_n_est,
            group_n_gt=group_n_gt,
            pair_group=pair_group,
            pair_est=est_rank[p.pair_est],
            pair_gt=self.pair_col,
            pair_valid=self.pair_valid,
            obj_ids=obj_ids,
            n_targets=n_targets,
        )

    def normalised(self, error_type: str) -> np.ndarray:
        """Errors as ``eval_calc_scores.py`` thresholds them (divided by the diameter, or scaled to 640 px)."""
        e = self.pairs.errors[error_type]
        if error_type in ("mssd", *AD_METRICS):
            diam = np.array([float(self.infos[int(o)].diameter) for o in self.pair_obj])
            return e / diam
        if error_type == "mspd":
            return (640.0 / float(self.ds.spec.im_size[0])) * e
        return e

    def run(self) -> dict:
        """Compute everything asked for; returns the results dict (see :func:`score_submissions`)."""
        t_start = _time.perf_counter()
        self._load()
        a = self.arrays
        has_depth = self.ds.has_depth(self.split)
        want_bop19 = "bop19" in self.metrics
        ad_kinds = [m for m in AD_METRICS if m in self.metrics]
        if want_bop19:
            self.compute_mssd_mspd()
            if has_depth:
                self.compute_vsd()
            else:
                self.notes.append(
                    f"VSD skipped: {self.ds.path / self.split} has no depth images; MSSD and MSPD are exact, "
                    f"bop19_average_recall_vsd and bop19_average_recall are null"
                )
        if ad_kinds:
            self.compute_ad(ad_kinds)
        t0 = _time.perf_counter()
        problem = self.matching_problem()
        results: dict[str, MetricResult] = {}
        specs = []
        if want_bop19:
            if has_depth:
                specs.append(("vsd", VSD_THRESHOLDS, VSD_TAUS))
            specs += [("mssd", MSSD_THRESHOLDS, None), ("mspd", MSPD_THRESHOLDS, None)]
        specs += [(k, np.array([AD_THRESHOLD]), None) for k in ad_kinds]
        scene_ids = tuple(sorted(set(self.ds.spec.test_scene_ids) | {s for s, _ in self.gt}))
        s_index = {s: k for k, s in enumerate(scene_ids)}
        group_scene = np.array([s_index[int(s)] for s in self.group_scene], np.int64)
        n_t_scene = np.zeros(len(scene_ids), np.int64)
        for (s, _), valid in self.gt_valid.items():
            n_t_scene[s_index[s]] += int(np.count_nonzero(valid))
        for name, ths, taus in specs:
            tpg = problem.group_true_positives(self.normalised(name), ths)
            tp = problem.per_object(tpg)
            tp_scene = np.zeros((*tpg.shape[:2], len(scene_ids)), np.int64)
            np.add.at(tp_scene.transpose(2, 0, 1), group_scene, tpg.transpose(2, 0, 1))
            results[name] = MetricResult(
                name,
                ths,
                taus,
                tp,
                problem.n_targets,
                problem.obj_ids,
                tp_scene,
                n_t_scene,
                scene_ids,
                delta=float(self.ds.spec.vsd_delta),
            )
        self.timings["matching"] = _time.perf_counter() - t0
        self.timings["total"] = _time.perf_counter() - t_start
        out = {
            "result_name": str(self.name),
            "csv": str(self.csv_path),
            "dataset": self.name.dataset,
            "engine": "bopkd",
            "n_estimates": int(len(a["score"])),
            "n_evaluated": int(len(self.pairs.est_row)),
            "n_targets": int(problem.n_targets.sum()),
            "metrics": results,
            "average_time_per_image": average_time_per_image(a["scene_id"], a["im_id"], a["time"]),
            "has_depth": has_depth,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            "gt_count": int(sum(len(v) for v in self.gt.values())),
            "scene_ids": sorted({s for s, _ in self.gt}),
        }
        if want_bop19:
            out["scores_bop19"] = bop19_scores(results, out["average_time_per_image"])
        return out


def score_submissions(
    csv_paths: Sequence[str | Path],
    root: str | Path,
    out_dir: str | Path = "results/scores",
    metrics: Sequence[str] = ("bop19", "ad"),
    engine: str = "bopkd",
    log: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> dict[str, dict]:
    """Score result CSVs and write ``out_dir/<result name>/`` (see :mod:`bopkd.eval.scores_io`).

    Args:
        csv_paths: result files named ``METHOD_DATASET-SPLIT[-SPLITTYPE][_SUFFIX].csv``.
        root: folder that holds the datasets.
        out_dir: output folder (default ``results/scores``).
        metrics: ``bop19`` (AR: VSD, MSSD, MSPD), ``ad`` (ADD(-S)), ``adi``, ``add``.
        engine: ``bopkd`` (this module) or ``bop_toolkit`` (:mod:`bopkd.eval.toolkit_engine`).
        workers: bopkd's threads (see :class:`SubmissionScorer`); with ``engine="bop_toolkit"`` the toolkit's
            ``--num_workers`` (None or 0: every core, as for bopkd).

    Returns:
        result name -> dict with ``scores_bop19`` (the toolkit's keys), ``metrics`` (name ->
        :class:`MetricResult`), ``average_time_per_image``, ``notes``, ``timings``, ``files`` (written
        paths) and counts.
    """
    from bopkd.eval.scores_io import write_outputs

    if engine == "bop_toolkit":
        try:
            from bopkd.eval.toolkit_engine import score_with_toolkit
        except ImportError as e:  # pragma: no cover - the module ships with bopkd
            raise BopkdError(f"--engine bop_toolkit is not available ({e}); use --engine bopkd") from None
        recs = score_with_toolkit(
            list(csv_paths),
            root,
            out_dir,
            ad="ad" in metrics or "adi" in metrics,
            num_workers=resolve_workers(workers),
        )
        return {r["result_name"]: r for r in recs}
    if engine != "bopkd":
        raise BopkdError(f"unknown engine {engine!r}; use bopkd or bop_toolkit")
    out: dict[str, dict] = {}
    for csv in csv_paths:
        res = SubmissionScorer(csv, root, metrics, log=log, workers=workers).run()
        res["files"] = [str(p) for p in write_outputs(res, out_dir)]
        out[res["result_name"]] = res
    return out
