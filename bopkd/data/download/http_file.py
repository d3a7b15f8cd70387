"""Resumable, verified HTTP download of one file (``Range`` requests, retries with backoff, SHA-256).

Transient failures (connection reset or dropped, timeouts, 5xx, 408, 425, 429) are retried with
exponential backoff; an interrupted transfer resumes from the ``.part`` file's size with an HTTP ``Range``
request (RFC 9110 section 14); the complete file is checked against the registry's size and SHA-256
before it is renamed. See :mod:`bopkd.data.download` for where this sits in a dataset download.
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
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bopkd import __version__
from bopkd.data.download.urls import ENV_MIRROR
from bopkd.data.registry import DEFAULT_BASE_URL
from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json
from bopkd.utils.hashing import sha256_file, sha256_hasher

_CHUNK = 1 << 20
_USER_AGENT = f"bopkd/{__version__} (python-urllib)"
_MAX_BACKOFF_S = 30.0
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT_HTTP = {408, 425, 429}

# Indirections that tests replace (a write that fails with ENOSPC, no real sleeping).
_open_part = open
_sleep = time.sleep

Echo = Callable[[str], None]


def default_echo(msg: str) -> None:
    tqdm.write(msg, file=sys.stdout)


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


def format_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def sidecar_path(dest: Path) -> Path:
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
    echo = echo or default_echo
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    if dest.is_file():
        got_size = dest.stat().st_size
        rec = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            rec = json.loads(sidecar_path(dest).read_text())
        if rec and rec.get("size") == got_size and isinstance(rec.get("sha256"), str):
            got_sha = rec["sha256"]
        else:
            got_sha = sha256_file(dest)
        try:
            _verify(dest, got_size, got_sha, size, sha256, url, dest.with_name(dest.name + ".part"))
        except BopkdError:
            sidecar_path(dest).unlink(missing_ok=True)
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
            echo(f"{dest.name}: {e} (have {format_bytes(have)}); retrying in {delay:.3g} s")
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
        sidecar_path(dest),
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
            self.h = sha256_hasher(part, offset) if offset > 0 else hashlib.sha256()
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
    resp = _open_response(url, part, offset, timeout)
    if resp is None:
        return offset, 0  # the .part was already complete
    with resp:
        offset, total = _announced_total(resp, part, offset, echo)
        total = _check_total(url, part, offset, total, size)
        hstate.sync(part, offset)
        wrote = _stream_to_part(resp, part, offset, total, hstate, progress)
        if total is not None and offset + wrote < total:
            raise _Transient(
                f"connection lost after {format_bytes(offset + wrote)} of {format_bytes(total)}", wrote
            )
        return total, wrote


def _open_response(url: str, part: Path, offset: int, timeout: float):
    """``urlopen`` of a ``Range`` request from ``offset``; None when the server says (HTTP 416 with
    ``bytes */offset``) that ``part`` is already complete. HTTP errors are sorted into transient and final."""
    try:
        return urllib.request.urlopen(_request(url, offset), timeout=timeout)  # noqa: S310 - http(s) URL from the registry/mirror
    except urllib.error.HTTPError as e:
        code = e.code
        content_range = e.headers.get("Content-Range", "") if e.headers else ""
        e.close()
        if code == 416 and offset > 0:
            m = re.match(r"bytes\s+\*/(\d+)", content_range)
            if m and int(m.group(1)) == offset:
                return None
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


def _announced_total(resp, part: Path, offset: int, echo: Echo) -> tuple[int, int | None]:
    """(offset the body starts at, total size the server announces or None) of a 200 or 206 answer.

    A 206 must start at the requested offset (``Content-Range``, RFC 9110 section 14.4); a 200 to a
    ranged request means the server does not resume, and the body starts at 0.
    """
    status = resp.status
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if status == 206:
        m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
        if m is None or int(m.group(1)) != offset:
            # A range we did not ask for: start over with a plain request.
            part.unlink(missing_ok=True)
            raise _Transient("the server answered another range than requested; restarting from 0")
        return offset, (int(m.group(3)) if m.group(3) != "*" else None)
    if status == 200:
        if offset > 0:
            echo(f"{part.name}: the server does not resume downloads; restarting from 0")
        return 0, length
    raise _Transient(f"unexpected HTTP {status}")


def _check_total(url: str, part: Path, offset: int, total: int | None, size: int | None) -> int | None:
    """The total to download up to: the server's length, checked against the registry's ``size``, or
    ``size`` when the server announces none; raises when the rest does not fit on the disk."""
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
                f"not enough free space in {part.parent} for {part.name[:-5]}: needs {format_bytes(remaining)}, "
                f"{format_bytes(free)} free; free some space (or use another --root) and rerun"
            )
    return total


def _stream_to_part(
    resp, part: Path, offset: int, total: int | None, hstate: _HashState, progress: bool | None
) -> int:
    """Append the body to ``part`` (opened at ``offset``) in 1 MiB chunks with a tqdm bar, hashing as it
    goes; returns the bytes written. A read error is :class:`_Transient`; a write error is final."""
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
    return wrote


def _write_error(e: OSError, part: Path, have: int, total: int | None) -> BopkdError:
    if e.errno == errno.ENOSPC:
        of = f" of {format_bytes(total)}" if total else ""
        return BopkdError(
            f"disk full while writing {part} ({format_bytes(have)}{of} done); free some space and rerun to resume"
        )
    return BopkdError(f"cannot write {part}: {e.strerror or e}; check the folder's permissions")


def _reason(code: int) -> str:
    return {404: "Not Found", 403: "Forbidden", 401: "Unauthorized", 410: "Gone"}.get(code, "error")


def _reason_text(e: object) -> str:
    text = str(e) or type(e).__name__
    return text.replace("\n", " ")
