"""Collect what a report needs from a results folder.

A results folder holds BOP CSV submissions (``METHOD_DATASET-SPLIT.csv``), each with a sidecar
``<csv>.json`` written by ``bopkd predict`` (:class:`bopkd.infer.record.PredictionRecord`: model role,
backbone, distillation method, size, speed, protocol, checkpoint), and the scores that ``bopkd score``
wrote for it in ``<scores>/<result name>/`` (``scores_bop19.json``, ``scores_ad.json``, ``recalls.csv``).
This module turns them into one tidy record per submission; the tables aggregate records over seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bopkd.errors import BopkdError
from bopkd.infer.record import PredictionRecord, read_record, sidecar_path
from bopkd.report.settings import RowSettings


@dataclass
class ModelResult:
    """Everything the report knows about one scored submission.

    Scores are recalls in [0, 1]; ``None`` where a metric was not computed (VSD without depth).
    """

    result_name: str
    csv_path: Path
    model: str  # row label: "teacher (darknet53)" or "darknet-tiny / ot (w=5, live scores)"
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
    run_config: dict | None = None  # the run's config.yaml
    config_flat: dict = field(default_factory=dict)  # resolved, flattened (bopkd.report.settings)
    input_size: tuple[int, int] | None = None  # network input (W, H)
    input_mode: str | None = None  # "crop" | "full"
    dataset: str = ""  # DATASET-SPLIT of the result name
    arch_key: str = ""  # architecture (bopkd.report.speed.arch_key)
    row_key: str = ""  # every training setting but the seed, plus dataset and protocol
    base_key: str = ""  # the same without the distillation settings: shared with direct training
    settings: RowSettings | None = None
    kd_default: bool | None = None  # a student's kd options are its method's defaults (None: unknown, none)
    iteration: int | None = None  # the checkpoint's iteration, when it is not the run's last
    family: str = "sparse"  # "sparse" (keypoint cells) or "dense" (ZebraPose-style surface codes)


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


def _run_config(run_dir: Path | None) -> dict | None:
    """A run's ``config.yaml`` (written by ``bopkd.train.config.save_config``); None when absent."""
    import yaml

    path = None if run_dir is None else run_dir / "config.yaml"
    if path is None or not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise BopkdError(
            f"{path}: unreadable run config ({type(e).__name__}); restore or retrain the run"
        ) from None
    if not isinstance(cfg, dict):
        raise BopkdError(f"{path}: the run config is not a mapping; restore or retrain the run")
    return cfg


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


def _bare_label(role: str, backbone: str, kd: str, name: str, family: str = "sparse") -> str:
    """``teacher (backbone)``, ``backbone / method``; a dense family's row starts with ``dense``."""
    prefix = "dense " if family == "dense" else ""
    if role == "teacher":
        return f"{prefix}teacher ({backbone})"
    return f"{prefix}{backbone} / {kd}" if role == "student" else name


def _partial_iteration(iteration: int, cfg: dict | None) -> int | None:
    """The checkpoint's ``iteration`` when it is before the run's ``iters`` (an intermediate checkpoint:
    another model than the run's final one), else None."""
    iters = (cfg or {}).get("iters")
    if isinstance(iters, int) and iteration < iters:
        return iteration
    return None


def _from_sidecar(name: str, csv_path: Path, rec: PredictionRecord | None) -> ModelResult:
    """The result as its sidecar ``rec`` describes it; ``rec`` None: a CSV that ``bopkd predict`` did not
    write (another method's), reported under its result name with role ``other``."""
    if rec is None:
        return ModelResult(
            result_name=name, csv_path=csv_path, model=name, role="other", backbone="?", kd="none", seed=None
        )
    kd = "-" if rec.role == "teacher" else rec.kd_method
    run_dir = rec.run_dir()
    cfg = _run_config(run_dir)
    seed = cfg.get("seed") if cfg is not None and isinstance(cfg.get("seed"), int) else None
    return ModelResult(
        result_name=name,
        csv_path=csv_path,
        model=_bare_label(rec.role, rec.backbone, kd, name, rec.family),
        role=rec.role,
        backbone=rec.backbone,
        kd=kd,
        seed=seed,
        params=rec.params,
        macs=rec.macs,
        ms_per_image=rec.ms_per_image,
        device=rec.device,
        protocol=rec.protocol,
        run_dir=run_dir,
        run_config=cfg,
        input_size=rec.input_size,
        input_mode=rec.input_mode,
        iteration=_partial_iteration(rec.iteration, cfg),
        family=rec.family,
    )


def _add_scores(r: ModelResult, sdir: Path) -> None:
    s = _read_json(sdir / "scores_bop19.json")
    r.ar = _get(s, "bop19_average_recall")
    r.ar_vsd = _get(s, "bop19_average_recall_vsd")
    r.ar_mssd = _get(s, "bop19_average_recall_mssd")
    r.ar_mspd = _get(s, "bop19_average_recall_mspd")
    r.ar_mssd_mspd = _get(s, "bop19_average_recall_mssd_mspd")
    r.time_per_image = _get(s, "bop19_average_time_per_image")
    r.engine = _get(s, "engine")
    if (sdir / "recalls.csv").is_file():
        r.recalls_csv = sdir / "recalls.csv"
        r.per_object_ar = per_object_ar(r.recalls_csv)
    ad_path = sdir / "scores_ad.json"
    if ad_path.is_file():
        ad = _read_json(ad_path)
        r.add_01d = _get(ad, "recall")
        per = _get(ad, "obj_recalls", "per_object", default={}) or {}
        r.per_object_add = {int(k): float(v) for k, v in per.items() if v is not None}


def _add_settings(r: ModelResult) -> None:
    """Row and architecture keys and the run's settings (:mod:`bopkd.report.settings`)."""
    from bopkd.report.settings import read_run_settings
    from bopkd.report.speed import arch_key

    source = (
        str(r.run_dir / "config.yaml")
        if r.run_config is not None
        else ("no run folder in the sidecar" if r.run_dir is None else f"no {r.run_dir / 'config.yaml'}")
    )
    r.arch_key = arch_key(r.run_config, r.backbone, r.input_mode, r.input_size)
    where = f"{r.dataset}|{r.protocol}" + ("" if r.iteration is None else f"|it{r.iteration}")
    fallback = f"{r.role}|{r.backbone}|{r.arch_key}"
    rs = read_run_settings(r.run_config, source, r.role, r.kd, fallback)
    r.settings, r.config_flat, r.kd_default = rs.settings, rs.config, rs.kd_default
    r.row_key, r.base_key = f"{rs.row_key}|{where}", f"{rs.base_key}|{r.arch_key}|{where}"


def load_result(csv_path: Path, scores_dir: Path) -> ModelResult | None:
    """One :class:`ModelResult`, or None when the submission has not been scored yet.

    The sidecar ``<csv>.json`` is read as a :class:`bopkd.infer.record.PredictionRecord` (one-line error
    when it is not one); a CSV without a sidecar is another method's (role ``other``). The run folder is
    the checkpoint's; its ``config.yaml`` gives the seed and the row's settings
    (:mod:`bopkd.report.settings`). ``model`` is the row label as if this were the only submission
    (:func:`collect_results` labels rows against each other).
    """
    from bopkd.eval.naming import parse_result_name

    parsed = parse_result_name(csv_path)
    name = str(parsed)
    sdir = scores_dir / name
    if not (sdir / "scores_bop19.json").is_file():
        return None
    side_path = sidecar_path(csv_path)
    r = _from_sidecar(name, csv_path, read_record(side_path) if side_path.is_file() else None)
    r.dataset = f"{parsed.dataset}-{parsed.split}" + (f"_{parsed.split_type}" if parsed.split_type else "")
    _add_scores(r, sdir)
    _add_settings(r)
    _label([r])
    return r


def _label(results: list[ModelResult]) -> None:
    """Set each result's ``model`` to its row label (:func:`bopkd.report.settings.row_labels`)."""
    from bopkd.report.settings import RunSettings, row_labels

    base = {
        r.row_key: _bare_label(r.role, r.backbone, r.kd, r.result_name, r.family)
        + ("" if r.iteration is None else f" at iteration {r.iteration}")
        for r in results
    }
    runs = {r.row_key: RunSettings(r.settings, r.row_key, r.base_key, r.config_flat) for r in results}
    labels = row_labels(base, runs)
    where = {(r.dataset, r.protocol) for r in results}
    for r in results:
        r.model = labels[r.row_key] + (f" [{r.dataset}, {r.protocol}]" if len(where) > 1 else "")


def _check_seeds(results: list[ModelResult]) -> None:
    seen: dict[tuple[str, int], Path] = {}
    for r in results:
        if r.seed is None:
            continue
        other = seen.setdefault((r.row_key, r.seed), r.csv_path)
        if other != r.csv_path:
            raise BopkdError(
                f"{r.csv_path}: same settings and seed {r.seed} as {other}; report only one of them "
                "(bopkd report takes every CSV of the folder: move the other out)"
            )


def collect_results(
    results_dir: Path, scores_dir: Path | None = None, csvs: list[Path] | None = None
) -> list[ModelResult]:
    """All scored submissions in ``results_dir`` (scores in ``results_dir/scores`` by default), or only
    the files ``csvs`` (e.g. those of one pipeline run, when the folder holds other datasets' too).
    Results are labelled by their settings and checked for one submission per row and seed."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BopkdError(f"{results_dir}: no such results folder; run bopkd predict and bopkd score first")
    scores_dir = Path(scores_dir) if scores_dir else results_dir / "scores"
    out = []
    for csv in sorted(results_dir.glob("*.csv")) if csvs is None else [Path(c) for c in csvs]:
        r = load_result(csv, scores_dir)
        if r is not None:
            out.append(r)
    if not out:
        raise BopkdError(
            f"{results_dir}: no scored submissions (looked for {scores_dir}/<name>/scores_bop19.json); "
            f"run: bopkd score {results_dir}/*.csv --out {scores_dir}"
        )
    _label(out)
    _check_seeds(out)
    return out


def results_frame(results: list[ModelResult], speeds: dict | None = None) -> pd.DataFrame:
    """One row per submission (seeds not aggregated).

    With ``speeds`` (:func:`bopkd.report.speed.architecture_speeds`), ``ms/image`` and ``device`` are the
    architecture's (one figure for all its rows), ``predict ms/image`` the median of its sidecars and
    ``sidecar ms/image`` this submission's own; without, ``ms/image`` is the submission's sidecar figure.
    """
    rows = []
    for r in results:
        sp = (speeds or {}).get(r.arch_key)
        row = {
            "model": r.model,
            "row_key": r.row_key,
            "base_key": r.base_key,
            "arch_key": r.arch_key,
            "role": r.role,
            "backbone": r.backbone,
            "kd": r.kd,
            "family": r.family,
            "kd_default": r.kd_default,
            "seed": r.seed,
            "AR": r.ar,
            "AR_VSD": r.ar_vsd,
            "AR_MSSD": r.ar_mssd,
            "AR_MSPD": r.ar_mspd,
            "AR_MSSD_MSPD": r.ar_mssd_mspd,
            "ADD(-S)-0.1d": r.add_01d,
            "params": r.params,
            "MACs": r.macs,
            "ms/image": r.ms_per_image if sp is None else sp.ms_per_image,
            "predict ms/image": r.ms_per_image if sp is None else sp.predict_ms_per_image,
            "sidecar ms/image": r.ms_per_image,
            "device": r.device if sp is None else sp.device,
            "speed": "this submission's sidecar" if sp is None else sp.method,
            "protocol": r.protocol,
            "result": r.result_name,
        }
        for obj_id, v in sorted(r.per_object_add.items()):
            row[f"ADD(-S) obj {obj_id}"] = v
        for obj_id, v in sorted(r.per_object_ar.items()):
            row[f"AR obj {obj_id}"] = v
        rows.append(row)
    return pd.DataFrame(rows)
