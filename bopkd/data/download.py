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

HTTP is done with the standard library (``urllib.request``), which follows the Hugging Face redirects to
its file store and keeps the ``Range`` header across them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bopkd import __version__
from bopkd.data.archive import extract_archive, merge_tree
from bopkd.data.registry import DEFAULT_BASE_URL, REGISTRY, ArchiveSpec, DatasetSpec, get_spec
from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json

#: Environment variable that replaces the base URL (like ``--mirror``).
ENV_MIRROR = "BOPKD_MIRROR"
#: Parts fetched when none are named.
DEFAULT_PARTS = ("base", "models", "test_bop19")
#: Folder (inside the root and inside each dataset folder) where bopkd keeps its state.
STATE_DIR = ".bopkd"

_CHUNK = 1 << 20
_USER_AGENT = f"bopkd/{__version__} (python-urllib)"
_MAX_BACKOFF_S = 30.0
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT_HTTP = {408, 425, 429}

# Indirections that tests replace (a write that fails with ENOSPC, no real sleeping).
_open_part = open
_sleep = time.sleep

Echo = Callable[[str], None]


def _default_echo(msg: str) -> None:
    tqdm.write(msg, file=sys.stdout)


# --- URLs and paths ----------------------------------------------------------------------------------


def resolve_base_url(mirror: str | None = None) -> str:
    """The base URL to use: ``mirror``, else ``$BOPKD_MIRROR``, else the default (trailing ``/`` removed)."""
    base = mirror or os.environ.get(ENV_MIRROR) or DEFAULT_BASE_URL
    return base.strip().rstrip("/")


def archive_url(base: str, repo: str, file: str) -> str:
    """URL of ``file`` of the Hugging Face dataset repository ``repo`` under ``base``.

    ``base`` containing ``{file}`` is a template (``{repo}`` and ``{file}`` are substituted); otherwise
    the layout is ``{base}/{repo}/resolve/main/{file}``.
    """
    q = urllib.parse.quote(file)
    if "{file}" in base:
        return base.replace("{repo}", urllib.parse.quote(repo)).replace("{file}", q)
    return f"{base}/{urllib.parse.quote(repo)}/resolve/main/{q}"


def downloads_dir(root: str | Path) -> Path:
    """Where archives are downloaded: ``ROOT/.bopkd/downloads`` (one folder per repository)."""
    return Path(root) / STATE_DIR / "downloads"


def marker_path(root: str | Path, dataset: str, part: str) -> Path:
    """The completion marker of ``part``: ``ROOT/DATASET/.bopkd/parts/PART.done``."""
    return Path(root) / dataset / STATE_DIR / "parts" / f"{part}.done"


def read_marker(root: str | Path, dataset: str, part: str) -> dict | None:
    """The marker's content, or None when the part was not downloaded by bopkd (or not completely)."""
    p = marker_path(root, dataset, part)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --- one file ----------------------------------------------------------------------------------------


@dataclass
class DownloadedFile:
    """A verified file.

    Attributes:
        path: where it is.
        url: where it came from.
        size: bytes.
        sha256: hex digest of the whole file.
        fetched: bytes transferred by this call (0 when the file was already complete).
        resumed_from: size of the ``.part`` file the first request of this call resumed from.
        seconds: wall time of this call.
    """

    path: Path
    url: str
    size: int
    sha256: str
    fetched: int = 0
    resumed_from: int = 0
    seconds: float = 0.0


class _Transient(Exception):
    """A failure worth retrying (connection reset or dropped, timeout, 5xx); ``wrote``: bytes appended."""

    def __init__(self, msg: str, wrote: int = 0):
        super().__init__(msg)
        self.wrote = wrote


def _gb(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def _sha256_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    h = hashlib.sha256()
    left = upto
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def _verify(
    path: Path, got_size: int, got_sha: str, size: int | None, sha256: str | None, url: str, part: Path
) -> None:
    """Compare with the registry; raise on mismatch. A file shorter than the registry's size is kept as
    ``part`` (a rerun resumes it); any other mismatch removes the file."""
    if size is not None and got_size < size:
        if path != part:
            os.replace(path, part)
        raise BopkdError(
            f"{path.name} from {url}: size mismatch: {got_size} bytes, the registry expects {size}; the "
            f"incomplete file is kept as {part}: rerun to resume it"
        )
    problem = None
    if size is not None and got_size != size:
        problem = f"size mismatch: {got_size} bytes, expected {size}"
    elif sha256 is not None and got_sha.lower() != sha256.lower():
        problem = f"checksum mismatch: SHA-256 {got_sha}, expected {sha256}"
    if problem:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise BopkdError(
            f"{path.name} from {url}: {problem}; the file was removed. Rerun to download it again "
            "(if it persists, the mirror serves another file)"
        )


def download_file(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool | None = None,
    echo: Echo | None = None,
) -> DownloadedFile:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present, and verify it.

    Args:
        url: http(s) URL.
        dest: final path; the data is streamed to ``dest`` + ``.part`` and renamed when verified. A
            ``dest`` that already exists is a completed download (its recorded SHA-256 is reused).
        size: expected size in bytes, when known.
        sha256: expected SHA-256 hex digest, when known.
        retries: consecutive attempts without progress allowed after a transient error; an attempt
            that received bytes resets the count (a connection that keeps dropping but advances goes
            on until the file is complete).
        backoff: first delay in seconds; it doubles after each failed attempt (capped at 30 s).
        timeout: socket timeout in seconds (connect and each read).
        progress: show a tqdm bar; None shows it only on a terminal.
        echo: where to write status lines (default: stdout, above the bars).

    Returns:
        the verified file.

    Raises:
        BopkdError: final HTTP error (404 ...), the host cannot be reached after the retries, size or
            checksum mismatch (the file is removed), not enough free space, disk full (the ``.part``
            is kept and resumed next time).
    """
    echo = echo or _default_echo
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if dest.is_file():
        got_size = dest.stat().st_size
        rec = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            rec = json.loads(_sidecar(dest).read_text())
        if rec and rec.get("size") == got_size and isinstance(rec.get("sha256"), str):
            got_sha = rec["sha256"]
        else:
            got_sha = _sha256_file(dest).hexdigest()
        try:
            _verify(dest, got_size, got_sha, size, sha256, url, dest.with_name(dest.name + ".part"))
        except BopkdError:
            _sidecar(dest).unlink(missing_ok=True)
            raise
        return DownloadedFile(dest, url, got_size, got_sha, 0, got_size, time.perf_counter() - t0)

    part = dest.with_name(dest.name + ".part")
    hstate = _HashState()
    fetched = 0
    resumed_from = part.stat().st_size if part.is_file() else 0
    failures = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        try:
            total, wrote = _attempt(url, part, offset, size, hstate, timeout, progress, echo)
            fetched += wrote
            break
        except _Transient as e:
            fetched += e.wrote
            failures = 0 if e.wrote > 0 else failures + 1
            if failures > retries:
                raise BopkdError(
                    f"{url}: {e}; gave up after {retries + 1} attempts. Check your network connection "
                    f"(or use --mirror / ${ENV_MIRROR}); rerun to resume from {part}"
                ) from None
            delay = min(_MAX_BACKOFF_S, backoff * (2 ** max(failures - 1, 0)))
            have = part.stat().st_size if part.is_file() else 0
            echo(f"{dest.name}: {e} (have {_gb(have)}); retrying in {delay:.3g} s")
            _sleep(delay)

    got_size = part.stat().st_size
    if total is not None and got_size > total:
        part.unlink(missing_ok=True)
        raise BopkdError(
            f"{url}: received {got_size} bytes, more than the {total} expected; the file was removed, rerun"
        )
    hstate.sync(part, got_size)  # no-op unless the file was complete before this call
    got_sha = hstate.hexdigest()
    _verify(part, got_size, got_sha, size, sha256, url, part)
    atomic_write_json(
        _sidecar(dest),
        {"url": url, "size": got_size, "sha256": got_sha, "time": datetime.now(timezone.utc).isoformat()},
    )
    os.replace(part, dest)
    return DownloadedFile(dest, url, got_size, got_sha, fetched, resumed_from, time.perf_counter() - t0)


class _HashState:
    """SHA-256 of the first ``n`` bytes of the ``.part`` file, updated as chunks are appended; a resume
    from another offset re-reads the file's prefix once."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.n = 0

    def sync(self, part: Path, offset: int) -> None:
        if self.n != offset:
            self.h = _sha256_file(part, offset) if offset > 0 else hashlib.sha256()
            self.n = offset

    def update(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.n += len(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _attempt(
    url: str,
    part: Path,
    offset: int,
    size: int | None,
    hstate: _HashState,
    timeout: float,
    progress: bool | None,
    echo: Echo,
) -> tuple[int | None, int]:
    """One HTTP request appending to ``part`` from ``offset``. Returns (total size, bytes written).
    Raises :class:`_Transient` for retryable failures (with ``.wrote``), BopkdError otherwise."""
    try:
        resp = urllib.request.urlopen(_request(url, offset), timeout=timeout)  # noqa: S310 - http(s) URL from the registry/mirror
    except urllib.error.HTTPError as e:
        code = e.code
        content_range = e.headers.get("Content-Range", "") if e.headers else ""
        e.close()
        if code == 416 and offset > 0:
            m = re.match(r"bytes\s+\*/(\d+)", content_range)
            if m and int(m.group(1)) == offset:
                return offset, 0  # the .part was already complete
            part.unlink(missing_ok=True)
            raise _Transient("the server refused to resume (HTTP 416); restarting from 0") from None
        if code >= 500 or code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {code}") from None
        hint = "check the dataset and part names" + (
            " and the mirror URL" if not url.startswith(DEFAULT_BASE_URL) else ""
        )
        raise BopkdError(f"{url}: HTTP {code} {_reason(code)}; {hint}") from None
    except urllib.error.URLError as e:
        host = urllib.parse.urlsplit(url).netloc
        raise _Transient(f"cannot reach {host} ({_reason_text(e.reason)})") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
        raise _Transient(f"connection failed ({_reason_text(e)})") from None

    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total: int | None
        if status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                # A range we did not ask for: start over with a plain request.
                part.unlink(missing_ok=True)
                raise _Transient("the server answered another range than requested; restarting from 0")
            total = int(m.group(3)) if m.group(3) != "*" else None
        elif status == 200:
            if offset > 0:
                echo(f"{part.name}: the server does not resume downloads; restarting from 0")
            offset = 0
            total = length
        else:
            raise _Transient(f"unexpected HTTP {status}")
        if size is not None and total is not None and total != size:
            kept = f"; {part} is kept" if offset > 0 else ""
            raise BopkdError(
                f"{url}: size mismatch: the server announces {total} bytes but the registry expects {size}; "
                f"the mirror serves another file (or the registry is out of date){kept}"
            )
        if total is None:
            total = size  # no length announced: the registry's size tells a dropped connection from the end
        remaining = None if total is None else total - offset
        if remaining is not None:
            free = shutil.disk_usage(part.parent).free
            if remaining > free:
                raise BopkdError(
                    f"not enough free space in {part.parent} for {part.name[:-5]}: needs {_gb(remaining)}, "
                    f"{_gb(free)} free; free some space (or use another --root) and rerun"
                )
        hstate.sync(part, offset)
        wrote = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name[:-5],
            disable=None if progress is None else not progress,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            with _open_part(part, "ab" if offset > 0 else "wb") as f:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                        raise _Transient(f"connection lost ({_reason_text(e)})", wrote) from None
                    if not chunk:
                        break
                    try:
                        f.write(chunk)
                    except OSError as e:
                        raise _write_error(e, part, offset + wrote, total) from None
                    hstate.update(chunk)
                    wrote += len(chunk)
                    bar.update(len(chunk))
        except OSError as e:  # opening or closing (flush) the .part file
            raise _write_error(e, part, offset + wrote, total) from None
        finally:
            bar.close()
        if total is not None and offset + wrote < total:
            raise _Transient(f"connection lost after {_gb(offset + wrote)} of {_gb(total)}", wrote)
        return total, wrote


def _write_error(e: OSError, part: Path, have: int, total: int | None) -> BopkdError:
    if e.errno == errno.ENOSPC:
        of = f" of {_gb(total)}" if total else ""
        return BopkdError(
            f"disk full while writing {part} ({_gb(have)}{of} done); free some space and rerun to resume"
        )
    return BopkdError(f"cannot write {part}: {e.strerror or e}; check the folder's permissions")


def _reason(code: int) -> str:
    return {404: "Not Found", 403: "Forbidden", 401: "Unauthorized", 410: "Gone"}.get(code, "error")


def _reason_text(e: object) -> str:
    text = str(e) or type(e).__name__
    return text.replace("\n", " ")


# --- parts of a dataset --------------------------------------------------------------------------------


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
            f"registered: {', '.join(sorted(REGISTRY))}"
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
        spec: the dataset (normally ``REGISTRY[name]``).
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
    echo = echo or _default_echo
    names = parse_parts(spec, parts)
    root = Path(root)
    base = resolve_base_url(mirror)
    ds_dir = root / spec.name
    results = []
    for part in names:
        marker = marker_path(root, spec.name, part)
        if marker.is_file() and not force:
            info = read_marker(root, spec.name, part) or {}
            files = info.get("files", {})
            echo(
                f"{spec.name}/{part}: already complete ({marker}); nothing to do (--force downloads it again)"
            )
            results.append(PartResult(spec.name, part, True, marker, len(files), sum(files.values())))
            continue
        marker.unlink(missing_ok=True)
        res = PartResult(spec.name, part, False, marker)
        # 1-2. download and verify every file of every archive
        t0 = time.perf_counter()
        fetched: list[tuple[ArchiveSpec, list[DownloadedFile]]] = []
        for arch in spec.parts[part]:
            vols = []
            for fname in arch.files:
                url = archive_url(base, arch.repo, fname)
                dest = downloads_dir(root) / arch.repo / fname
                main = fname == arch.name
                echo(f"{spec.name}/{part}: {fname} <- {url}")
                d = download_file(
                    url,
                    dest,
                    size=arch.size if main else None,
                    sha256=arch.sha256 if main else None,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                    progress=progress,
                    echo=echo,
                )
                rate = d.fetched / d.seconds / 1e6 if d.seconds > 0 and d.fetched else 0.0
                how = f"{_gb(d.fetched)} at {rate:.1f} MB/s" if d.fetched else "already downloaded"
                echo(
                    f"{spec.name}/{part}: {fname} verified ({_gb(d.size)}, {how}), sha256 {d.sha256[:16]}..."
                )
                vols.append(d)
                res.fetched += d.fetched
                res.archives.append(
                    {"file": fname, "repo": arch.repo, "url": url, "size": d.size, "sha256": d.sha256}
                )
            fetched.append((arch, vols))
        res.download_s = time.perf_counter() - t0
        # 3. extract into a temporary folder next to the dataset, then move into place
        t0 = time.perf_counter()
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
                + (
                    "; free some space and rerun"
                    if e.errno == errno.ENOSPC
                    else "; check the folder and rerun"
                )
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                tmp_parent.rmdir()
        res.extract_s = time.perf_counter() - t0
        res.n_files = len(files)
        res.n_bytes = sum(files.values())
        # 4. marker, then clean up the archives
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
        if not keep_archives:
            for _, vols in fetched:
                for v in vols:
                    v.path.unlink(missing_ok=True)
                    _sidecar(v.path).unlink(missing_ok=True)
                    for d in (v.path.parent, v.path.parent.parent, v.path.parent.parent.parent):
                        with contextlib.suppress(OSError):
                            d.rmdir()  # only when empty (ROOT/.bopkd/downloads/REPO, .../downloads, ROOT/.bopkd)
        echo(f"{spec.name}/{part}: {res.n_files} files ({_gb(res.n_bytes)}) in {ds_dir}; marked complete")
        results.append(res)
    return results


def download_dataset(
    name: str, root: str | Path = "bop_data", parts: Sequence[str] | None = None, **kwargs
) -> list[PartResult]:
    """:func:`download_parts` for the registered dataset ``name`` (unknown names list the known ones)."""
    return download_parts(get_spec(name), root, parts, **kwargs)
