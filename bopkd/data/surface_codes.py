"""A cache of the hierarchical surface codes of a dataset's object models, one ``.npz`` per object.

Encoding an LM-O model at the default settings takes seconds (:mod:`bopkd.geometry.surface_code`), and
every dense training target needs it, so each object is encoded once and stored beside the dataset
(``MODELS_DIR/../surface_codes/obj_OOOOOO.npz`` by default). Each file holds the SHA-256 of the PLY file it
was made from and the encoding settings; a changed model or setting makes :func:`load_or_encode` encode
again, and an unreadable or inconsistent file is re-encoded with a warning. Files are written atomically
(:func:`bopkd.utils.atomic.atomic_open`), so an interrupted run leaves the old file or none.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bopkd.data.ply import load_ply
from bopkd.errors import BopkdError, MissingFileError
from bopkd.geometry.surface_code import (
    DEFAULT_BITS,
    DEFAULT_ITERATIONS,
    DEFAULT_MIN_VERTICES,
    SurfaceCode,
    encode_model,
)
from bopkd.utils.atomic import atomic_open
from bopkd.utils.hashing import sha256_file

CACHE_FORMAT = 1  # bump when the stored arrays or the encoding algorithm change
CACHE_DIR_NAME = "surface_codes"


def model_path(models_dir: Path, obj_id: int) -> Path:
    """The BOP file name of an object's model: ``MODELS_DIR/obj_OOOOOO.ply``."""
    return Path(models_dir) / f"obj_{int(obj_id):06d}.ply"


def cache_path(cache_dir: Path, obj_id: int) -> Path:
    return Path(cache_dir) / f"obj_{int(obj_id):06d}.npz"


def _save(path: Path, code: SurfaceCode, meta: dict) -> None:
    """Write one object's code atomically (faces as int32, codes as uint32 to halve the file)."""
    with atomic_open(path, "wb") as f:
        np.savez(
            f,
            meta=np.array(json.dumps(meta, sort_keys=True)),
            codes=code.codes.astype(np.uint32),
            points=code.points.astype(np.float32),
            vertices=code.vertices.astype(np.float32),
            faces=code.faces.astype(np.int32),
        )


def _load(path: Path, meta: dict) -> SurfaceCode | None:
    """The cached code if the file exists and was made from ``meta``; None when it must be (re)made.

    Raises:
        ValueError: the file is unreadable or its arrays are inconsistent.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != meta:
                return None
            arrays = {k: z[k] for k in ("codes", "points", "vertices", "faces")}
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    bits = int(meta["bits"])
    codes, faces = arrays["codes"].astype(np.int64), arrays["faces"].astype(np.int64)
    V = len(arrays["vertices"])
    ok = (
        arrays["points"].shape == (2**bits, 3)
        and arrays["vertices"].shape == (V, 3)
        and codes.shape == (V,)
        and (V == 0 or int(codes.max()) < 2**bits)
        and faces.ndim == 2
        and faces.shape[1] == 3
        and (faces.size == 0 or (faces.min() >= 0 and faces.max() < V))
    )
    if not ok:
        raise ValueError("the arrays do not fit together")
    return SurfaceCode(
        codes=codes, bits=bits, points=arrays["points"], vertices=arrays["vertices"], faces=faces
    )


def load_or_encode(
    models_dir: Path,
    obj_ids: Iterable[int],
    cache_dir: Path | None = None,
    bits: int = DEFAULT_BITS,
    min_vertices: int = DEFAULT_MIN_VERTICES,
    iterations: int = DEFAULT_ITERATIONS,
) -> dict[int, SurfaceCode]:
    """Surface codes of ``obj_ids``, read from the cache or encoded (and cached) from their PLY models.

    Args:
        models_dir: the dataset's ``models/`` folder (``obj_OOOOOO.ply``, vertices in mm).
        obj_ids: object ids to encode.
        cache_dir: where the ``.npz`` files go; default ``models_dir.parent / "surface_codes"``.
        bits, min_vertices, iterations: the settings of
            :func:`bopkd.geometry.surface_code.encode_model`, stored in each file.

    Returns:
        ``{obj_id: SurfaceCode}``.
    """
    models_dir = Path(models_dir)
    cache_dir = models_dir.parent / CACHE_DIR_NAME if cache_dir is None else Path(cache_dir)
    if not models_dir.is_dir():
        raise MissingFileError(models_dir, "download the models part: bopkd download DATASET --parts models")
    out: dict[int, SurfaceCode] = {}
    for obj_id in obj_ids:
        obj_id = int(obj_id)
        ply = model_path(models_dir, obj_id)
        if not ply.is_file():
            raise MissingFileError(
                ply, f"object {obj_id} has no model; check the object ids or the models folder"
            )
        meta = {
            "format": CACHE_FORMAT,
            "model_sha256": sha256_file(ply),
            "bits": int(bits),
            "min_vertices": int(min_vertices),
            "iterations": int(iterations),
        }
        path = cache_path(cache_dir, obj_id)
        try:
            code = _load(path, meta)
        except ValueError as e:
            warnings.warn(
                f"{path}: unreadable surface-code cache ({e}); encoding object {obj_id} again", stacklevel=2
            )
            code = None
        if code is None:
            code = encode_model(load_ply(ply), bits, min_vertices, iterations)
            try:
                _save(path, code, meta)
            except OSError as e:
                raise BopkdError(
                    f"{path}: cannot write the surface-code cache ({e.strerror}); "
                    "give a writable cache_dir or free disk space"
                ) from None
        out[obj_id] = code
    return out
