"""The final keys of the toolkit's ``scores_bop19.json`` and ``scores_bop24.json``, and the time per image.

Sources: ``scripts/eval_bop19_pose.py`` (``bop19_average_recall*``) and ``scripts/eval_bop24_pose.py``
(``bop24_mAP*``, ``bop25_mAP*``), both with ``inout.check_consistent_timings`` for the average time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: ``scores_bop24.json`` keys in the order ``eval_bop24_pose.py`` fills ``final_scores``.
BOP24_KEYS = (
    "bop24_mAP_mssd",
    "bop24_mAP_mssd_mm",
    "bop24_mAP_mspd",
    "bop24_mAP",
    "bop25_mAP",
    "bop25_mAP_mm",
    "bop24_average_time_per_image",
)


def average_time_per_image(scene_id: np.ndarray, im_id: np.ndarray, time: np.ndarray) -> float | None:
    """Mean of the per-image times, -1.0 if any time is negative, None without rows.

    As ``inout.check_consistent_timings`` + ``np.mean(list(times.values()))``: the first row of each image
    gives its time, images in order of first appearance (the order ``np.mean`` sums them in). Pass the
    rows in the order the toolkit holds them (``eval_bop24_pose.py``: after the per-image cap). Without
    rows the toolkit's mean of no time is NaN, which it writes as ``NaN`` (not JSON); here None (null).
    """
    time = np.asarray(time, np.float64)
    if len(time) == 0:
        return None
    if np.any(time < 0):
        return -1.0
    keys = np.stack([np.asarray(scene_id), np.asarray(im_id)], axis=1)
    _, first = np.unique(keys, axis=0, return_index=True)
    return float(np.mean(list(time[np.sort(first)])))


def _time(t: float | None) -> float | None:
    return None if t is None else float(t)


def bop19_scores(results: Mapping, average_time: float | None) -> dict:
    """The toolkit's ``scores_bop19.json`` keys (VSD and AR None when VSD was not computed).

    ``results``: error type -> ``MetricResult`` of :mod:`bopkd.eval.scoring`.
    """
    ar = {k: (results[k].average_recall() if k in results else None) for k in ("vsd", "mssd", "mspd")}
    s = {f"bop19_average_recall_{k}": v for k, v in ar.items()}
    s["bop19_average_recall"] = (
        float(np.mean([ar["vsd"], ar["mssd"], ar["mspd"]])) if ar["vsd"] is not None else None
    )
    s["bop19_average_time_per_image"] = _time(average_time)
    if ar["vsd"] is None and ar["mssd"] is not None:
        s["bop19_average_recall_mssd_mspd"] = float(np.mean([ar["mssd"], ar["mspd"]]))
    return s


def bop24_scores(m_ap: Mapping[str, float | None], average_time: float | None) -> dict:
    """The toolkit's ``scores_bop24.json`` keys from the mAP of each error series.

    ``m_ap``: ``mssd`` (thresholds 0.05..0.5 of the diameter), ``mssd_mm`` (2..20 mm) and ``mspd`` (5..50
    px at 640 px width) -> mAP, None when no object has a GT instance to find. As ``eval_bop24_pose.py``:
    ``bop24_mAP`` = mean of MSSD and MSPD, ``bop25_mAP`` = the MSSD mAP, ``bop25_mAP_mm`` = the
    millimetre-threshold MSSD mAP.
    """
    mssd, mssd_mm, mspd = m_ap.get("mssd"), m_ap.get("mssd_mm"), m_ap.get("mspd")
    both = None if mssd is None or mspd is None else float(np.mean([mssd, mspd]))
    return {
        "bop24_mAP_mssd": mssd,
        "bop24_mAP_mssd_mm": mssd_mm,
        "bop24_mAP_mspd": mspd,
        "bop24_mAP": both,
        "bop25_mAP": None if mssd is None else float(np.mean([mssd])),
        "bop25_mAP_mm": None if mssd_mm is None else float(np.mean([mssd_mm])),
        "bop24_average_time_per_image": _time(average_time),
    }
