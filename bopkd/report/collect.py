"""Collect what a report needs from a results folder.

A results folder holds BOP CSV submissions (``METHOD_DATASET-SPLIT.csv``), each with a sidecar
``<csv>.json`` written by ``bopkd predict`` (model role, backbone, distillation method, seed, size,
speed, protocol, run folder), and the scores that ``bopkd score`` wrote for it in
``<scores>/<result name>/`` (``scores_bop19.json``, ``scores_ad.json``, ``recalls.csv``). This module
turns them into one tidy record per submission; the tables aggregate records over seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bopkd.errors import BopkdError


@dataclass
class ModelResult:
    """Everything the report knows about one scored submission.

    Scores are recalls in [0, 1]; ``None`` where a metric was not computed (VSD without depth).
    """

    result_name: str
    csv_path: Path
    model: str  # row label: "teacher (darknet53)" or "darknet-tiny / ot"
    role: str  # "teacher" | "student" | "other"
    backbone: str
    kd: str  # distillation method name, "none" for direct training, "-" for the teacher
    seed: int | None
    ar: float | None = None
    ar_vsd: float | None = None
    ar_mssd: float | None = None
    ar_mspd: float | None = None
    ar_mssd_mspd: float | None = None  # mean of AR_MSSD and AR_MSPD, written when VSD could not be computed
    add_01d: float | None = None
    per_object_add: dict[int, float] = field(default_factory=dict)
    per_object_ar: dict[int, float] = field(default_factory=dict)
    time_per_image: float | None = None
    params: int | None = None
    macs: int | None = None
    ms_per_image: float | None = None
    device: str | None = None
    protocol: str | None = None
    engine: str | None = None
    run_dir: Path | None = None
    recalls_csv: Path | None = None


def _get(d: dict, *keys, default=None):
    """First present key among dotted paths ``a.b``."""
    for k in keys:
        cur = d
        ok = True
        for part in k.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok and cur is not None:
            return cur
    return default


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BopkdError(f"{path}: not valid JSON ({e}); rerun the stage that wrote it") from None


def _run_dir(side: dict) -> Path | None:
    """The training run folder: the sidecar's ``run_dir``, else the folder of its ``checkpoint``
    (``RUN/checkpoints/final.pt`` as ``bopkd predict`` records it)."""
    rd = _get(side, "run_dir", "model.run_dir")
    if rd:
        return Path(rd)
    ck = _get(side, "checkpoint", "model.checkpoint")
    if ck:
        p = Path(ck)
        if p.parent.name == "checkpoints":
            return p.parent.parent
        if p.is_dir():
            return p
    return None


def _run_seed(run_dir: Path | None) -> int | None:
    """The ``seed`` of a run's ``config.yaml`` (None when absent or unreadable)."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    seed = cfg.get("seed") if isinstance(cfg, dict) else None
    return int(seed) if isinstance(seed, int) else None


def per_object_ar(recalls_csv: Path) -> dict[int, float]:
    """Per-object AR from ``recalls.csv``: for each of VSD, MSSD, MSPD present, the object's recall averaged
    over the BOP'19 thresholds (and VSD's taus), then averaged over those metrics (Hodan et al., ECCVW 2020,
    Sec. 2.4, applied to one object's targets). Without VSD rows it is the MSSD/MSPD mean."""
    try:
        df = pd.read_csv(recalls_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
        return {}
    need = {"metric", "obj_id", "recall"}
    if not need <= set(df.columns):
        return {}
    df = df[df["metric"].str.lower().isin(["vsd", "mssd", "mspd"]) & (df["obj_id"].astype(str) != "all")]
    if df.empty:
        return {}
    df = df.assign(obj_id=df["obj_id"].astype(int))
    per_metric = df.groupby(["obj_id", "metric"])["recall"].mean()
    return {int(k): float(v) for k, v in per_metric.groupby(level="obj_id").mean().items()}


def load_result(csv_path: Path, scores_dir: Path) -> ModelResult | None:
    """One :class:`ModelResult`, or None when the submission has not been scored yet.

    Sidecar keys read (nested ``model.*``/``speed.*`` or the flat keys ``bopkd predict`` writes):
    role, backbone, kd (``kd_method``), seed (else the run's ``config.yaml``), params, macs,
    ms_per_image, device, protocol, run_dir (else derived from ``checkpoint``).
    """
    from bopkd.eval.naming import parse_result_name

    name = str(parse_result_name(csv_path))
    sdir = scores_dir / name
    bop19 = sdir / "scores_bop19.json"
    if not bop19.is_file():
        return None
    side_path = csv_path.with_name(csv_path.name + ".json")
    side = _read_json(side_path) if side_path.is_file() else {}
    role = str(_get(side, "model.role", "role", default="other"))
    backbone = str(_get(side, "model.backbone", "backbone", default="?"))
    kd = str(_get(side, "model.kd", "kd", "kd_method", default="-" if role == "teacher" else "none"))
    run_dir = _run_dir(side)
    seed = _get(side, "model.seed", "seed")
    if seed is None:
        seed = _run_seed(run_dir)
    label = (
        f"teacher ({backbone})"
        if role == "teacher"
        else (f"{backbone} / {kd}" if role == "student" else name)
    )
    s = _read_json(bop19)
    r = ModelResult(
        result_name=name,
        csv_path=csv_path,
        model=label,
        role=role,
        backbone=backbone,
        kd="-" if role == "teacher" else kd,
        seed=None if seed is None else int(seed),
        ar=_get(s, "bop19_average_recall"),
        ar_vsd=_get(s, "bop19_average_recall_vsd"),
        ar_mssd=_get(s, "bop19_average_recall_mssd"),
        ar_mspd=_get(s, "bop19_average_recall_mspd"),
        ar_mssd_mspd=_get(s, "bop19_average_recall_mssd_mspd"),
        time_per_image=_get(s, "bop19_average_time_per_image"),
        engine=_get(s, "engine"),
        params=_get(side, "model.params", "params"),
        macs=_get(side, "model.macs", "macs"),
        ms_per_image=_get(side, "speed.ms_per_image", "ms_per_image"),
        device=_get(side, "speed.device", "device"),
        protocol=_get(side, "protocol"),
        run_dir=run_dir,
        recalls_csv=(sdir / "recalls.csv") if (sdir / "recalls.csv").is_file() else None,
    )
    if r.recalls_csv is not None:
        r.per_object_ar = per_object_ar(r.recalls_csv)
    ad_path = sdir / "scores_ad.json"
    if ad_path.is_file():
        ad = _read_json(ad_path)
        r.add_01d = _get(ad, "recall")
        per = _get(ad, "obj_recalls", "per_object", default={}) or {}
        r.per_object_add = {int(k): float(v) for k, v in per.items() if v is not None}
    return r


def collect_results(
    results_dir: Path, scores_dir: Path | None = None, csvs: list[Path] | None = None
) -> list[ModelResult]:
    """All scored submissions in ``results_dir`` (scores in ``results_dir/scores`` by default), or only
    the files ``csvs`` (e.g. those of one pipeline run, when the folder holds other datasets' too)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BopkdError(f"{results_dir}: no such results folder; run bopkd predict and bopkd score first")
    scores_dir = Path(scores_dir) if scores_dir else results_dir / "scores"
    out = []
    for csv in sorted(results_dir.glob("*.csv")) if csvs is None else [Path(c) for c in csvs]:
        try:
            r = load_result(csv, scores_dir)
        except BopkdError:
            raise
        if r is not None:
            out.append(r)
    if not out:
        raise BopkdError(
            f"{results_dir}: no scored submissions (looked for {scores_dir}/<name>/scores_bop19.json); "
            f"run: bopkd score {results_dir}/*.csv --out {scores_dir}"
        )
    return out


def results_frame(results: list[ModelResult]) -> pd.DataFrame:
    """One row per submission (seeds not aggregated)."""
    rows = []
    for r in results:
        row = {
            "model": r.model,
            "role": r.role,
            "backbone": r.backbone,
            "kd": r.kd,
            "seed": r.seed,
            "AR": r.ar,
            "AR_VSD": r.ar_vsd,
            "AR_MSSD": r.ar_mssd,
            "AR_MSPD": r.ar_mspd,
            "AR_MSSD_MSPD": r.ar_mssd_mspd,
            "ADD(-S)-0.1d": r.add_01d,
            "params": r.params,
            "MACs": r.macs,
            "ms/image": r.ms_per_image,
            "device": r.device,
            "protocol": r.protocol,
            "result": r.result_name,
        }
        for obj_id, v in sorted(r.per_object_add.items()):
            row[f"ADD(-S) obj {obj_id}"] = v
        for obj_id, v in sorted(r.per_object_ar.items()):
            row[f"AR obj {obj_id}"] = v
        rows.append(row)
    return pd.DataFrame(rows)
