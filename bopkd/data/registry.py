"""The registry of BOP datasets, :data:`DATASETS`: what a user needs to know about each, and the files to download.

Object ids, symmetric ids, image sizes, test scenes and depth ranges are those of the BOP toolkit's
``bop_toolkit_lib/dataset_params.py``; VSD deltas are those of its ``scripts/eval_bop19_pose.py``; the
archives are those of the BOP download page, served from the per-dataset Hugging Face repositories
``bop-benchmark/{dataset}``.

A dataset that is not registered (a synthetic one made by ``bopkd synth``, or a user's own BOP dataset)
is described by its folder and a small descriptor file, :data:`DESCRIPTOR_NAME`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bopkd.config import from_dict
from bopkd.errors import BopkdError

#: File that ``bopkd synth`` writes into a dataset folder to describe an unregistered dataset.
DESCRIPTOR_NAME = "bopkd_dataset.json"

#: Base URL of the BOP archives; ``{base}/{repo}/resolve/main/{file}``. ``--mirror`` or
#: ``BOPKD_MIRROR`` replaces it.
DEFAULT_BASE_URL = "https://huggingface.co/datasets/bop-benchmark"


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable archive.

    Attributes:
        repo: the Hugging Face dataset repository that serves it (``lm`` for LM-O's PBR images).
        name: file name of the archive (the ``.zip``; for a multi-part archive, the last part).
        extract_to: ``"root"`` (the archive holds the ``DATASET/`` folder, as ``*_base.zip`` does) or
            ``"dataset"`` (it holds the dataset's subfolders, extracted into ``root/DATASET``).
        extra_parts: earlier volumes of a split archive (``.z01``, ``.z02`` ...), in order.
        size: size in bytes when known (checked after download, before unpacking; None: unknown).
        sha256: SHA-256 hex digest when known (checked after download).
    """

    repo: str
    name: str
    extract_to: str = "dataset"
    extra_parts: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """All volumes, in the order they must be joined."""
        return (*self.extra_parts, self.name)


@dataclass(frozen=True)
class DatasetSpec:
    """What bopkd knows about a BOP dataset.

    Attributes:
        name: the BOP short name (``lmo``).
        title: human-readable name.
        obj_ids: ids of all objects.
        symmetric_obj_ids: objects evaluated with ADI instead of ADD (Hodan et al., ECCVW 2016).
        im_size: test image size ``(width, height)`` in px.
        test_scene_ids: scenes of the test split.
        splits: split folder names the dataset has (``test``, ``train_pbr`` ...).
        test_split: name of the test split folder (``test``, or ``test_primesense`` for T-LESS).
        depth_range: range of object distances in the test images, mm (None when unknown).
        vsd_delta: VSD misalignment tolerance in mm (BOP19).
        camera_file: name of the dataset-level camera file.
        eval_models: folder of the models used for evaluation (``models_eval``).
        parts: download parts (``base``, ``models``, ``test_bop19`` ...) -> archives.
        registered: False for datasets described by a folder descriptor.
    """

    name: str
    title: str
    obj_ids: tuple[int, ...]
    symmetric_obj_ids: tuple[int, ...]
    im_size: tuple[int, int]
    test_scene_ids: tuple[int, ...]
    splits: tuple[str, ...]
    test_split: str = "test"
    depth_range: tuple[float, float] | None = None
    vsd_delta: float = 15.0
    camera_file: str = "camera.json"
    eval_models: str = "models_eval"
    parts: dict[str, tuple[ArchiveSpec, ...]] = field(default_factory=dict)
    registered: bool = True

    def to_descriptor(self) -> dict:
        d = asdict(self)
        d.pop("parts")
        d.pop("registered")
        return d

    @classmethod
    def from_descriptor(cls, d: dict, source: str = "the dataset descriptor") -> DatasetSpec:
        """The spec a ``bopkd_dataset.json`` descriptor states (:meth:`to_descriptor`), read by
        :func:`bopkd.config.from_dict`; ``title``, ``symmetric_obj_ids``, ``test_scene_ids`` and ``splits``
        may be left out (the name, none, none, ``test``); ``synth``, the settings ``bopkd synth`` built
        the dataset with, is not part of the spec."""
        if not isinstance(d, dict):
            raise BopkdError(f"{source}: expected a mapping of keys, got {type(d).__name__}")
        if "parts" in d or "registered" in d:
            raise BopkdError(f"{source}: 'parts' and 'registered' are not descriptor keys")
        optional = {"symmetric_obj_ids": [], "test_scene_ids": [], "splits": ["test"]}
        if "name" in d:
            optional["title"] = d["name"]
        stated = {k: v for k, v in d.items() if k != "synth"}
        spec = from_dict(cls, {**optional, **stated}, source=source)
        return replace(spec, registered=False)


def _std_parts(
    name: str,
    test_all: str | None = None,
    test_bop19: str | None = None,
    sizes: dict[str, int] | None = None,
    **extra,
) -> dict:
    """The standard parts of a BOP dataset; ``sizes``: part -> archive size in bytes, where known."""
    sz = sizes or {}
    parts: dict[str, tuple[ArchiveSpec, ...]] = {
        "base": (ArchiveSpec(name, f"{name}_base.zip", extract_to="root", size=sz.get("base")),),
        "models": (ArchiveSpec(name, f"{name}_models.zip", size=sz.get("models")),),
        "test_all": (ArchiveSpec(name, test_all or f"{name}_test_all.zip", size=sz.get("test_all")),),
        "test_bop19": (ArchiveSpec(name, test_bop19 or f"{name}_test_bop19.zip", size=sz.get("test_bop19")),),
    }
    for part, archives in extra.items():
        parts[part] = archives
    return parts


DATASETS: dict[str, DatasetSpec] = {
    "lm": DatasetSpec(
        name="lm",
        title="Linemod (LM)",
        obj_ids=tuple(range(1, 16)),
        symmetric_obj_ids=(3, 7, 10, 11),
        im_size=(640, 480),
        test_scene_ids=tuple(range(1, 16)),
        splits=("train", "train_pbr", "test"),
        depth_range=(600.90, 1102.35),
        parts=_std_parts(
            "lm",
            train_pbr=(ArchiveSpec("lm", "lm_train_pbr.zip"),),
            train=(ArchiveSpec("lm", "lm_train.zip"),),
        ),
    ),
    "lmo": DatasetSpec(
        name="lmo",
        title="Linemod-Occluded (LM-O)",
        obj_ids=(1, 5, 6, 8, 9, 10, 11, 12),
        symmetric_obj_ids=(10, 11),
        im_size=(640, 480),
        test_scene_ids=(2,),
        splits=("train_pbr", "test"),
        depth_range=(346.31, 1499.84),
        # LM-O has no training images of its own: its PBR images are LM's (BOP download page). Sizes of
        # the archives served by bop-benchmark/lmo (the other parts' sizes are not recorded).
        parts=_std_parts(
            "lmo",
            sizes={"base": 5_684, "models": 5_367_178, "test_bop19": 117_550_985},
            train_pbr=(ArchiveSpec("lm", "lm_train_pbr.zip"),),
        ),
    ),
    "ycbv": DatasetSpec(
        name="ycbv",
        title="YCB-Video (YCB-V)",
        obj_ids=tuple(range(1, 22)),
        symmetric_obj_ids=(1, 13, 14, 16, 18, 19, 20, 21),
        im_size=(640, 480),
        test_scene_ids=tuple(range(48, 60)),
        splits=("train_pbr", "train_real", "train_synt", "test"),
        depth_range=(610.09, 1250.11),
        camera_file="camera_uw.json",
        parts=_std_parts(
            "ycbv",
            train_pbr=(ArchiveSpec("ycbv", "ycbv_train_pbr.zip"),),
            train=(ArchiveSpec("ycbv", "ycbv_train_real.zip"),),
        ),
    ),
    "tless": DatasetSpec(
        name="tless",
        title="T-LESS",
        obj_ids=tuple(range(1, 31)),
        symmetric_obj_ids=tuple(range(1, 31)),
        im_size=(720, 540),
        test_scene_ids=tuple(range(1, 21)),
        splits=("train_pbr", "train_primesense", "test_primesense"),
        test_split="test_primesense",
        depth_range=(649.89, 940.04),
        camera_file="camera_primesense.json",
        eval_models="models_eval",
        parts=_std_parts(
            "tless",
            test_all="tless_test_primesense_all.zip",
            test_bop19="tless_test_primesense_bop19.zip",
            train_pbr=(ArchiveSpec("tless", "tless_train_pbr.zip"),),
            train=(ArchiveSpec("tless", "tless_train_primesense.zip"),),
        ),
    ),
}


def known_names(root: str | Path | None = None) -> list[str]:
    """Registered names plus the BOP datasets found under ``root``."""
    names = set(DATASETS)
    if root is not None and Path(root).is_dir():
        for p in Path(root).iterdir():
            if p.is_dir() and ((p / DESCRIPTOR_NAME).is_file() or (p / "camera.json").is_file()):
                names.add(p.name)
    return sorted(names)


def get_spec(name: str, root: str | Path | None = None) -> DatasetSpec:
    """The spec of ``name``: the registry's, or the one a folder ``root/name`` describes.

    A folder with a ``bopkd_dataset.json`` descriptor is described by it; a folder without one that
    still looks like a BOP dataset (it has ``camera.json`` and ``models*/models_info.json``) is
    described by what it holds. Anything else is an error listing the known names.
    """
    folder = Path(root) / name if root is not None else None
    if folder is not None and (folder / DESCRIPTOR_NAME).is_file():
        try:
            return DatasetSpec.from_descriptor(
                json.loads((folder / DESCRIPTOR_NAME).read_text()), source=str(folder / DESCRIPTOR_NAME)
            )
        except BopkdError as e:
            raise BopkdError(
                f"malformed dataset descriptor: {e}; rebuild it with bopkd synth {name}"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BopkdError(
                f"{folder / DESCRIPTOR_NAME}: malformed dataset descriptor ({e}); rebuild it with bopkd synth {name}"
            ) from None
    if name in DATASETS:
        return DATASETS[name]
    if folder is not None and (folder / "camera.json").is_file():
        return describe_folder(folder)
    where = f" or under {root}" if root is not None else ""
    raise BopkdError(
        f"unknown dataset {name!r}: not registered{where}; known: {', '.join(known_names(root))} "
        f"(or build one with: bopkd synth {name})"
    )


def describe_folder(folder: Path) -> DatasetSpec:
    """Describe an unregistered BOP dataset by what its folder holds."""
    from bopkd.data.bop_json import load_camera, load_models_info

    cam = load_camera(folder / "camera.json")
    info_path = next(
        (
            folder / m / "models_info.json"
            for m in ("models_eval", "models")
            if (folder / m / "models_info.json").is_file()
        ),
        None,
    )
    if info_path is None:
        raise BopkdError(f"{folder}: no models/models_info.json; this folder is not a BOP dataset")
    infos = load_models_info(info_path)
    splits = tuple(
        sorted(
            p.name for p in folder.iterdir() if p.is_dir() and (p.name.startswith(("train", "test", "val")))
        )
    )
    test_split = "test" if "test" in splits else next((s for s in splits if s.startswith("test")), "test")
    scenes = (
        tuple(sorted(int(p.name) for p in (folder / test_split).iterdir() if p.name.isdigit()))
        if (folder / test_split).is_dir()
        else ()
    )
    return DatasetSpec(
        name=folder.name,
        title=folder.name,
        obj_ids=tuple(infos),
        symmetric_obj_ids=tuple(i for i, inf in infos.items() if inf.is_symmetric),
        im_size=(cam.width, cam.height),
        test_scene_ids=scenes,
        splits=splits,
        test_split=test_split,
        eval_models="models_eval" if (folder / "models_eval").is_dir() else "models",
        registered=False,
    )
