"""What each pipeline stage does: short adapters from a :class:`~bopkd.pipeline.engine.StageContext` to
the library (download, synthesis, training, prediction, scoring, the report).

:data:`ACTIONS` maps a stage kind to its function (``action(ctx) -> StageOutput``); a new kind of stage is
one function here, one line in :data:`ACTIONS` and the line of :mod:`bopkd.pipeline.plan` that adds it.
Training stages work in ``RUN/train/<stage>-<fingerprint>/`` (:func:`train_dir`), so that an interrupted
stage continues from its last checkpoint (:data:`RESUME_FILES`) and a changed setting starts a new folder
instead of overwriting the old one.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bopkd.errors import BopkdError
from bopkd.pipeline.engine import Stage, StageContext, StageOutput


def _tqdm_factory(desc: str, enabled: bool):
    from tqdm import tqdm

    bars = []

    def make(total: int):
        bar = tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)
        bars.append(bar)
        return bar.update

    return make, bars


# ------------------------------------------------------------------------------------------- data


def run_synth(ctx: StageContext) -> StageOutput:
    """Build the synthetic dataset of ``config["synth"]`` (:func:`bopkd.data.synth.build_synthetic_dataset`)."""
    from bopkd.data.registry import DESCRIPTOR_NAME
    from bopkd.data.synth import build_synthetic_dataset, synth_config_from_dict

    cfg = synth_config_from_dict(ctx.stage.config["synth"], source=f"stage {ctx.stage.name}")
    # Rebuild when forced, or when this pipeline built it before with other settings.
    force = ctx.forced or (
        ctx.previous is not None and ctx.previous.get("config_hash") != ctx.stage.config_hash
    )
    make, bars = _tqdm_factory(f"synth {cfg.name}", ctx.progress)
    try:
        ds_dir = build_synthetic_dataset(cfg, force=force, log=ctx.log, progress=make)
    finally:
        for b in bars:
            b.close()
    return StageOutput([ds_dir / DESCRIPTOR_NAME], {"dataset_dir": str(ds_dir)})


def run_download(ctx: StageContext) -> StageOutput:
    """Download the BOP parts of ``config`` (:func:`bopkd.data.download.download_dataset`)."""
    from bopkd.data.download import download_dataset

    c = ctx.stage.config
    res = download_dataset(
        c["dataset"],
        c["root"],
        c["parts"],
        mirror=ctx.opts.mirror,
        force=ctx.forced,
        progress=ctx.progress,
        echo=ctx.log,
    )
    return StageOutput([r.marker for r in res], {"dataset_dir": str(Path(c["root"]) / c["dataset"])})


def run_data(ctx: StageContext) -> StageOutput:
    """The data stage: a synthetic dataset when its settings say ``synth``, else a BOP download."""
    return run_synth(ctx) if "synth" in ctx.stage.config else run_download(ctx)


# ------------------------------------------------------------------------------------------- training


def train_dir(run_folder: Path, stage_name: str, fingerprint: str) -> Path:
    """``RUN/train/<stage>-<first 10 hex digits of the fingerprint>``."""
    return run_folder / "train" / f"{stage_name}-{fingerprint[:10]}"


def last_checkpoint(stage: Stage, run_folder: Path, fingerprint: str) -> Path:
    """The checkpoint an interrupted training stage continues from."""
    from bopkd.train.checkpoint import LAST

    return train_dir(run_folder, stage.name, fingerprint) / "checkpoints" / LAST


def _multi_gpu_command(cfg, cfg_path: Path) -> list[str]:
    """``python -m bopkd train ROLE --config CFG ... --resume --gpus N`` (re-launched under torchrun).

    The options repeat the config's role-defining keys (the student command requires --backbone and
    its --kd/--teacher options override the config file's).
    """
    who = ["--backbone", cfg.model.backbone]
    if cfg.role == "student":
        who += ["--kd", cfg.kd.method] + (["--teacher", str(cfg.kd.teacher)] if cfg.kd.teacher else [])
    cmd = [sys.executable, "-m", "bopkd", "train", cfg.role, "--config", str(cfg_path), *who]
    return [*cmd, "--resume", "--gpus", str(cfg.gpus)]


def run_train(ctx: StageContext) -> StageOutput:
    """Train the stage's model (``params["full"]``, its full training config) in :func:`train_dir`,
    continuing from its last checkpoint; ``gpus > 1`` runs ``bopkd train`` under its launcher."""
    from bopkd.train import checkpoint as ckpt
    from bopkd.train.config import build_config, save_config

    full = copy.deepcopy(ctx.stage.params["full"])
    run_dir = train_dir(ctx.run_folder, ctx.stage.name, ctx.fingerprint)
    if ctx.forced and run_dir.exists():
        ctx.log(f"--force: training {ctx.stage.name} again from scratch (removing {run_dir})")
        shutil.rmtree(run_dir)
    full["out"] = str(run_dir)
    full["progress"] = ctx.progress
    if full.get("role") == "student" and full["kd"]["method"] != "none":
        # the teacher stage of the run's family (``teacher``, ``teacher-dense``), named in the stage's params
        full["kd"]["teacher"] = ctx.dep_info(ctx.stage.params.get("teacher", "teacher"))["checkpoint"]
    cfg = build_config(base=full)
    last = run_dir / "checkpoints" / ckpt.LAST
    resume = last.is_file()
    if resume:
        ctx.log(f"resuming from {last}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.gpus > 1:
        cfg_path = run_dir / "pipeline_config.yaml"
        save_config(cfg, cfg_path)
        run_subprocess(_multi_gpu_command(cfg, cfg_path), ctx.log)
    else:
        from bopkd.train.command import summary_line, train

        summary = train(cfg, resume=resume)
        ctx.log(summary_line(summary, run_dir))
    final = run_dir / "checkpoints" / ckpt.FINAL
    if not final.is_file():
        raise BopkdError(
            f"{ctx.stage.name}: training ended without {final}; see {ctx.run_folder}/logs/{ctx.stage.name}.log"
        )
    gc.collect()
    return StageOutput([final], {"checkpoint": str(final), "run_dir": str(run_dir)})


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Linux: let the child die with the pipeline (so a killed pipeline leaves no training behind)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_subprocess(cmd: list[str], log: Callable[[str], None]) -> None:
    """Run ``cmd``, echoing its output; a non-zero exit is a one-line :class:`BopkdError`."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=_set_pdeathsig
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
        rc = proc.wait()
    except BaseException:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        raise
    if rc != 0:
        raise BopkdError(f"{' '.join(cmd[2:5])} failed with exit status {rc}; see the lines above")


# ------------------------------------------------------------------------------------------- predict, score


def missing_test_images(root: Path, dataset: str) -> tuple[int, int]:
    """``(images with BOP'19 targets, those whose RGB file is absent)``."""
    from bopkd.data.dataset import BopDataset

    bop = BopDataset(dataset, root)
    keys = sorted({(t.scene_id, t.im_id) for t in bop.targets})
    missing = sum(1 for s, i in keys if not bop.rgb_path(bop.test_split, s, i).is_file())
    return len(keys), missing


def _missing_images_note(root: str, dataset: str) -> str | None:
    n_img, n_missing = missing_test_images(Path(root), dataset)
    if not n_missing:
        return None
    return (
        f"{n_missing} of the {n_img} test images with BOP'19 targets are absent from {root}/{dataset}: "
        f"poses were estimated on the {n_img - n_missing} present; the scores count the targets of absent "
        f"images as misses, so recalls are at most about {100.0 * (n_img - n_missing) / n_img:.0f} %"
    )


def run_predict(ctx: StageContext) -> StageOutput:
    """Write the trained model's BOP'19 CSV and sidecar (:func:`bopkd.infer.predict.predict`)."""
    from bopkd.infer.predict import predict

    c = ctx.stage.config
    checkpoint = ctx.dep_info(ctx.stage.deps[0])["checkpoint"]
    sets, notes = list(c["sets"]), []
    note = _missing_images_note(c["root"], c["dataset"])
    if note:
        ctx.log(f"note: {note}")
        notes.append(note)
        sets.append("data.skip_missing_images=true")
    res = predict(
        checkpoint,
        dataset=c["dataset"],
        root=c["root"],
        out=c["results"],
        method=c["method"],
        detections=c.get("detections"),
        device=ctx.opts.device,
        sets=sets,
        progress=ctx.progress,
    )
    ctx.log(
        f"{res.n_estimates} estimates for {res.n_images} images ({res.protocol}, {res.ms_per_image:.1f} ms/image) -> {res.csv}"
    )
    gc.collect()
    info = {
        "csv": str(res.csv),
        "sidecar": str(res.sidecar),
        "protocol": res.protocol,
        "notes": notes,
        "n_images": res.n_images,
        "n_estimates": res.n_estimates,
    }
    return StageOutput([res.csv, res.sidecar], info)


def run_score(ctx: StageContext) -> StageOutput:
    """Score the upstream CSV (:func:`bopkd.eval.scoring.score_submissions`)."""
    from bopkd.eval.scoring import score_submissions

    c = ctx.stage.config
    csv = Path(ctx.dep_info(ctx.stage.deps[0])["csv"])
    out = score_submissions([csv], root=c["root"], out_dir=c["scores"], metrics=c["metrics"], log=ctx.log)
    ((name, res),) = out.items()
    s = res.get("scores_bop19", {})
    vals = ", ".join(
        f"{k.replace('bop19_average_recall', 'AR').upper()} {v:.4f}"
        for k, v in s.items()
        if v is not None and k.startswith("bop19_average_recall")
    )
    ctx.log(f"{name}: {vals}")
    for n in res.get("notes", []):
        ctx.log(f"note: {n}")
    return StageOutput(
        [Path(p) for p in res["files"]],
        {"result_name": name, "scores": s, "notes": list(res.get("notes", []))},
    )


def run_report(ctx: StageContext) -> StageOutput:
    """The comparison report of the run's CSVs (:func:`bopkd.report.build.build_report`), with the notes
    of its predict and score stages."""
    from bopkd.report.build import build_report

    c = ctx.stage.config
    csvs = [Path(ctx.dep_info(p)["csv"]) for p in c["predict"]]
    notes: list[str] = [c["summary"]] if c.get("summary") else []
    for p in [*c["predict"], *c["score"]]:
        for n in ctx.dep_info(p).get("notes", []):
            if n not in notes:
                notes.append(n)
    rep = build_report(c["results"], c["out"], c["scores"], c["title"], csvs=csvs, notes=notes)
    ctx.log(rep.files["table.md"].read_text())
    return StageOutput(sorted(rep.files.values()), {"files": {k: str(v) for k, v in rep.files.items()}})


#: Stage kind -> its action.
ACTIONS: dict[str, Callable[[StageContext], StageOutput]] = {
    "data": run_data,
    "teacher": run_train,
    "student": run_train,
    "predict": run_predict,
    "score": run_score,
    "report": run_report,
}
#: Stage kind -> the file an interrupted stage of that kind continues from (kinds absent: start over).
RESUME_FILES: dict[str, Callable[[Stage, Path, str], Path]] = {
    "teacher": last_checkpoint,
    "student": last_checkpoint,
}
