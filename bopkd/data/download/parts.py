"""The parts of a BOP dataset: which to fetch, then download, verify, extract and mark each one."""

from __future__ import annotations

import contextlib
import errno
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bopkd.data.archive import extract_archive, merge_tree
from bopkd.data.download.http_file import (
    DownloadedFile,
    Echo,
    default_echo,
    download_file,
    format_bytes,
    sidecar_path,
)
from bopkd.data.download.urls import (
    STATE_DIR,
    archive_url,
    downloads_dir,
    marker_path,
    read_marker,
    resolve_base_url,
)
from bopkd.data.registry import DATASETS, ArchiveSpec, DatasetSpec, get_spec
from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json

#: Parts fetched when none are named.
DEFAULT_PARTS = ("base", "models", "test_bop19")


@dataclass
class PartResult:
    """What :func:`download_parts` did for one part.

    Attributes:
        dataset: dataset name.
        part: part name.
        skipped: True when the part was already complete (marker present) and nothing was done.
        marker: path of the completion marker.
        n_files: files extracted (from the marker when skipped).
        n_bytes: bytes extracted.
        fetched: bytes transferred over the network by this run.
        archives: per downloaded file: ``file``, ``url``, ``size``, ``sha256``.
        download_s: seconds spent downloading (and verifying).
        extract_s: seconds spent extracting and moving into place.
    """

    dataset: str
    part: str
    skipped: bool
    marker: Path
    n_files: int = 0
    n_bytes: int = 0
    fetched: int = 0
    archives: list[dict] = field(default_factory=list)
    download_s: float = 0.0
    extract_s: float = 0.0


def parse_parts(spec: DatasetSpec, parts: str | Sequence[str] | None) -> list[str]:
    """Validate the requested parts (each may be comma-separated; ``all`` = every part); default
    :data:`DEFAULT_PARTS` (those the dataset has)."""
    if not spec.parts:
        raise BopkdError(
            f"{spec.name} is not a registered BOP dataset, so there is nothing to download; "
            f"registered: {', '.join(sorted(DATASETS))}"
        )
    names: list[str] = []
    for p in [parts] if isinstance(parts, str) else parts or ():
        names += [s.strip() for s in p.split(",") if s.strip()]
    if not names:
        return [p for p in DEFAULT_PARTS if p in spec.parts]
    if "all" in names:
        return list(spec.parts)
    unknown = [p for p in names if p not in spec.parts]
    if unknown:
        raise BopkdError(f"unknown part {unknown[0]!r} for {spec.name}; its parts: {', '.join(spec.parts)}")
    return list(dict.fromkeys(names))


def download_parts(
    spec: DatasetSpec,
    root: str | Path,
    parts: Sequence[str] | None = None,
    *,
    mirror: str | None = None,
    force: bool = False,
    keep_archives: bool = False,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
    echo: Echo | None = None,
) -> list[PartResult]:
    """Download, verify, extract and mark the ``parts`` of the dataset ``spec`` under ``root``.

    See the module docstring for the steps. Archives of ``extract_to="root"`` (``*_base.zip``) must hold
    only ``DATASET/...``; the others are extracted into ``ROOT/DATASET``.

    Args:
        spec: the dataset (normally ``DATASETS[name]``).
        root: folder holding the datasets (``bop_data``).
        parts: part names (see :func:`parse_parts`).
        mirror: base URL or template replacing the default (see :func:`resolve_base_url`).
        force: download and extract again parts that have a marker.
        keep_archives: keep the downloaded archives in ``ROOT/.bopkd/downloads`` after extraction.
        retries, backoff, timeout, progress: see :func:`download_file`.
        echo: where to write status lines.

    Returns:
        one :class:`PartResult` per part, in order.
    """
    echo = echo or default_echo
    names = parse_parts(spec, parts)
    root = Path(root)
    http = {"retries": retries, "backoff": backoff, "timeout": timeout, "progress": progress, "echo": echo}
    results = []
    for part in names:
        marker = marker_path(root, spec.name, part)
        if marker.is_file() and not force:
            results.append(_already_complete(spec, root, part, marker, echo))
            continue
        marker.unlink(missing_ok=True)
        res = PartResult(spec.name, part, False, marker)
        # 1-2. download and verify every file of every archive
        t0 = time.perf_counter()
        fetched = _fetch_archives(spec, part, root, resolve_base_url(mirror), res, http)
        res.download_s = time.perf_counter() - t0
        # 3. extract into a temporary folder next to the dataset, then move into place
        t0 = time.perf_counter()
        files = _extract_part(spec, part, fetched, root / spec.name, progress)
        res.extract_s = time.perf_counter() - t0
        res.n_files = len(files)
        res.n_bytes = sum(files.values())
        # 4. marker, then clean up the archives
        _write_marker(marker, spec, part, res, files)
        if not keep_archives:
            _remove_archives(fetched)
        echo(
            f"{spec.name}/{part}: {res.n_files} files ({format_bytes(res.n_bytes)}) in {root / spec.name}; marked complete"
        )
        results.append(res)
    return results


def _already_complete(spec: DatasetSpec, root: Path, part: str, marker: Path, echo: Echo) -> PartResult:
    """The result of a part whose marker is present (file count and bytes read from the marker)."""
    info = read_marker(root, spec.name, part) or {}
    files = info.get("files", {})
    echo(f"{spec.name}/{part}: already complete ({marker}); nothing to do (--force downloads it again)")
    return PartResult(spec.name, part, True, marker, len(files), sum(files.values()))


def _fetch_archives(
    spec: DatasetSpec, part: str, root: Path, base: str, res: PartResult, http: dict
) -> list[tuple[ArchiveSpec, list[DownloadedFile]]]:
    """Download and verify every file (volume) of every archive of ``part``; records each in ``res``.

    The registry's size and SHA-256 apply to an archive's main file; other volumes of a split zip are
    checked by the CRC-32 of their entries when extracted. ``http``: keyword arguments of
    :func:`download_file` (``retries``, ``backoff``, ``timeout``, ``progress``, ``echo``).
    """
    echo = http["echo"]
    fetched: list[tuple[ArchiveSpec, list[DownloadedFile]]] = []
    for arch in spec.parts[part]:
        vols = []
        for fname in arch.files:
            url = archive_url(base, arch.repo, fname)
            dest = downloads_dir(root) / arch.repo / fname
            main = fname == arch.name
            echo(f"{spec.name}/{part}: {fname} <- {url}")
            d = download_file(
                url, dest, size=arch.size if main else None, sha256=arch.sha256 if main else None, **http
            )
            rate = d.fetched / d.seconds / 1e6 if d.seconds > 0 and d.fetched else 0.0
            how = f"{format_bytes(d.fetched)} at {rate:.1f} MB/s" if d.fetched else "already downloaded"
            echo(
                f"{spec.name}/{part}: {fname} verified ({format_bytes(d.size)}, {how}), sha256 {d.sha256[:16]}..."
            )
            vols.append(d)
            res.fetched += d.fetched
            res.archives.append(
                {"file": fname, "repo": arch.repo, "url": url, "size": d.size, "sha256": d.sha256}
            )
        fetched.append((arch, vols))
    return fetched


def _extract_part(
    spec: DatasetSpec,
    part: str,
    fetched: list[tuple[ArchiveSpec, list[DownloadedFile]]],
    ds_dir: Path,
    progress: bool | None,
) -> dict[str, int]:
    """Extract the archives into ``DATASET/.bopkd/tmp/PART.*`` and merge that into ``ds_dir``.

    Returns extracted path -> size in bytes. The temporary folder is removed whatever happens, so an
    error or Ctrl-C leaves no half-extracted part in the dataset.
    """
    tmp_parent = ds_dir / STATE_DIR / "tmp"
    tmp_parent.mkdir(parents=True, exist_ok=True)
    for stale in tmp_parent.glob(f"{part}.*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{part}.", dir=tmp_parent))
    try:
        files: dict[str, int] = {}
        with tqdm(
            total=None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"extract {part}",
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar:
            for arch, vols in fetched:
                files.update(
                    extract_archive(
                        [v.path for v in vols],
                        tmp,
                        strip=spec.name if arch.extract_to == "root" else None,
                        on_bytes=bar.update,
                    )
                )
        merge_tree(tmp, ds_dir)
    except OSError as e:
        raise BopkdError(
            f"cannot extract into {ds_dir}: {e.strerror or e}"
            + ("; free some space and rerun" if e.errno == errno.ENOSPC else "; check the folder and rerun")
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp_parent.rmdir()
    return files


def _write_marker(marker: Path, spec: DatasetSpec, part: str, res: PartResult, files: dict[str, int]) -> None:
    """Write the completion marker (JSON: archives with URL, size, SHA-256; extracted files; time)."""
    atomic_write_json(
        marker,
        {
            "dataset": spec.name,
            "part": part,
            "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "archives": res.archives,
            "n_files": res.n_files,
            "n_bytes": res.n_bytes,
            "files": files,
        },
    )


def _remove_archives(fetched: list[tuple[ArchiveSpec, list[DownloadedFile]]]) -> None:
    """Delete the downloaded archives with their sidecars, and the download folders left empty."""
    for _, vols in fetched:
        for v in vols:
            v.path.unlink(missing_ok=True)
            sidecar_path(v.path).unlink(missing_ok=True)
            for d in (v.path.parent, v.path.parent.parent, v.path.parent.parent.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty (ROOT/.bopkd/downloads/REPO, .../downloads, ROOT/.bopkd)


def download_dataset(
    name: str, root: str | Path = "bop_data", parts: Sequence[str] | None = None, **kwargs
) -> list[PartResult]:
    """:func:`download_parts` for the registered dataset ``name`` (unknown names list the known ones)."""
    return download_parts(get_spec(name), root, parts, **kwargs)
