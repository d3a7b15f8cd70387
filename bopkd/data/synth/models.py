"""The models of a synthetic dataset: bopkd's procedural objects or those of a BOP ``models/`` folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bopkd.data import bop_json
from bopkd.data.synth.config import SynthConfig
from bopkd.errors import BopkdError
from bopkd.records import ObjectInfo, ObjectModel


@dataclass
class ModelSet:
    """The objects of a dataset: model and info per id, and how to write ``models``/``models_eval``."""

    models: dict[int, ObjectModel]
    infos: dict[int, ObjectInfo]
    write: Callable[[Path], None]
    source: str


def load_models(cfg: SynthConfig) -> ModelSet:
    """The objects ``cfg`` asks for, with a writer of the dataset's ``models/`` and ``models_eval/``."""
    if cfg.models == "procedural":
        return _procedural_model_set(cfg)
    return _bop_model_set(cfg)


def _procedural_model_set(cfg: SynthConfig) -> ModelSet:
    """bopkd's procedural objects (:mod:`bopkd.data.procedural`), written as PLY files with their info."""
    from bopkd.data.procedural import PROCEDURAL_OBJECTS, procedural_models

    ids = list(cfg.objects) if cfg.objects is not None else sorted(PROCEDURAL_OBJECTS)
    unknown = [i for i in ids if i not in PROCEDURAL_OBJECTS]
    if unknown:
        raise BopkdError(
            f"--objects {unknown}: no such procedural object; ids are {sorted(PROCEDURAL_OBJECTS)}"
        )
    built = procedural_models(ids, cfg.edge_length)
    models = {i: m for i, (m, _) in built.items()}
    infos = {i: inf for i, (_, inf) in built.items()}

    def write(ds_dir: Path) -> None:
        from bopkd.data.ply import save_ply

        for sub, eval_ in (("models", False), ("models_eval", True)):
            d = ds_dir / sub
            d.mkdir(parents=True, exist_ok=True)
            for i, m in models.items():
                # models_eval: geometry only, as BOP's evaluation models.
                save_ply(d / f"obj_{i:06d}.ply", ObjectModel(m.pts, m.faces, m.normals, None) if eval_ else m)
            bop_json.save_models_info(d / "models_info.json", infos)

    return ModelSet(models, infos, write, "procedural")


def _bop_model_set(cfg: SynthConfig) -> ModelSet:
    """The models of a BOP ``models/`` folder (and its ``models_eval/`` sibling), copied byte for byte."""
    src = Path(cfg.models)
    if (
        src.is_dir()
        and not (src / "models_info.json").is_file()
        and (src / "models" / "models_info.json").is_file()
    ):
        src = src / "models"
    info_path = src / "models_info.json"
    if not info_path.is_file():
        raise BopkdError(
            f"{info_path}: missing; --models needs 'procedural' or a BOP models/ folder holding models_info.json"
        )
    raw = bop_json.load_json(info_path)
    all_infos = bop_json.load_models_info(info_path)
    ids = list(cfg.objects) if cfg.objects is not None else sorted(all_infos)
    unknown = [i for i in ids if i not in all_infos]
    if unknown:
        raise BopkdError(f"{info_path}: no object(s) {unknown}; it has {sorted(all_infos)}")
    from bopkd.data.ply import load_ply

    models = {}
    for i in ids:
        m = load_ply(src / f"obj_{i:06d}.ply")
        if len(m.faces) == 0:
            raise BopkdError(
                f"{src / f'obj_{i:06d}.ply'}: the model has no faces and cannot be rendered; use a mesh"
            )
        models[i] = m
    infos = {i: all_infos[i] for i in ids}
    eval_src = src.parent / "models_eval"
    eval_src = eval_src if (eval_src / "models_info.json").is_file() else src

    def write(ds_dir: Path) -> None:
        for sub, s in (("models", src), ("models_eval", eval_src)):
            d = ds_dir / sub
            d.mkdir(parents=True, exist_ok=True)
            for i in ids:
                _copy_file(s / f"obj_{i:06d}.ply", d / f"obj_{i:06d}.ply")
            raw_s = raw if s == src else bop_json.load_json(s / "models_info.json")
            keep = {str(i): raw_s[str(i)] for i in ids if str(i) in raw_s}
            if len(keep) == len(raw_s):
                _copy_file(s / "models_info.json", d / "models_info.json")
            else:
                bop_json.save_json(d / "models_info.json", keep)

    return ModelSet(models, infos, write, str(src))


def _copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
