"""Verified, resumable download of BOP dataset parts (``bopkd download``).

Sources: the per-dataset Hugging Face repositories of the BOP download page,
``{base}/{repo}/resolve/main/{file}`` with ``base`` = :data:`~bopkd.data.registry.DEFAULT_BASE_URL`;
``--mirror URL`` or the environment variable :data:`ENV_MIRROR` replaces the base. A mirror URL that
contains ``{file}`` (and optionally ``{repo}``) is used as a template instead, e.g.
``https://example.org/bop/{file}``.

What happens for each part (``base``, ``models``, ``test_bop19`` ...):

1. each archive file is streamed to ``ROOT/.bopkd/downloads/REPO/FILE.part`` with a tqdm bar (bytes,
   speed, ETA). After an interruption the next attempt (automatic retry, or a rerun) resumes with an HTTP
   ``Range`` request; transient errors (connection reset or dropped, timeouts, 5xx, 408, 429) are retried
   with exponential backoff; other HTTP errors (404 ...) are final. Free space is checked against the
   announced length before anything is written, and a full disk (ENOSPC) ends with one clear line.
2. the complete file is verified, before anything is unpacked: its size against the server's length and
   the registry's size when known (:class:`~bopkd.data.registry.ArchiveSpec`; a server that announces
   another length than the registry's is refused before a byte is written, and the ``.part`` is kept;
   a server that announces none is read up to the registry's size, a shorter body being a dropped
   connection that is resumed), its SHA-256 against the registry's when known. The SHA-256 of every
   file is recorded. A file larger than expected or with another SHA-256 is removed (it cannot be
   resumed into a good one). Only then is ``.part`` renamed. Unpacking then checks each entry's CRC-32
   (:mod:`bopkd.data.archive`).
3. the archives are extracted into a temporary folder ``ROOT/DATASET/.bopkd/tmp/`` after every entry
   has been checked (:mod:`bopkd.data.archive`: no absolute paths, ``..``, symlinks), then moved into
   ``ROOT/DATASET`` with renames, merging with what is there.
4. a completion marker ``ROOT/DATASET/.bopkd/parts/PART.done`` (JSON: archives with URL, size,
   SHA-256; extracted files with sizes; time) is written atomically, and the archives are deleted
   (``keep_archives`` keeps them).

A rerun of a part that has a marker does nothing and says so. Datasets unpacked by hand have no markers;
nothing else in bopkd requires them. An error or Ctrl-C never leaves a marker or a half-extracted folder
in place; a ``.part`` file may remain and is resumed by the next run.

Modules: :mod:`~bopkd.data.download.urls` (sources and state paths), :mod:`~bopkd.data.download.http_file`
(one file: resumable attempts, retries, verification) and :mod:`~bopkd.data.download.parts` (the parts
of a dataset: the plan above, :func:`download_parts`, :func:`download_dataset`).

HTTP is done with the standard library (``urllib.request``), which follows the Hugging Face redirects to
its file store and keeps the ``Range`` header across them.
"""

from bopkd.data.download.http_file import DownloadedFile, download_file
from bopkd.data.download.parts import DEFAULT_PARTS, PartResult, download_dataset, download_parts, parse_parts
from bopkd.data.download.urls import (
    ENV_MIRROR,
    STATE_DIR,
    archive_url,
    downloads_dir,
    marker_path,
    read_marker,
    resolve_base_url,
)

__all__ = [
    "DEFAULT_PARTS",
    "ENV_MIRROR",
    "STATE_DIR",
    "DownloadedFile",
    "PartResult",
    "archive_url",
    "download_dataset",
    "download_file",
    "download_parts",
    "downloads_dir",
    "marker_path",
    "parse_parts",
    "read_marker",
    "resolve_base_url",
]
