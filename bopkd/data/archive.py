"""Safe extraction of (possibly multi-volume) zip archives into a dataset folder.

Archives are untrusted input. Before anything is written, every entry is checked: an absolute path, a
drive letter, a ``..`` component, a symlink or any other special file (zip "external attributes", the
Unix mode in their high 16 bits) is refused, and so is an entry that would land outside the destination
folder (zip-slip). Refusal keeps nothing of that archive. Entries are written by this module (not
``ZipFile.extract``, which silently rewrites such names instead of refusing them); ``zipfile`` still
decompresses and checks each entry's CRC-32. Nothing is run through a shell.

Multi-volume archives come in two forms, both handled by :func:`open_zip`:

* byte-chunked (``split -b`` style): the volumes joined are an ordinary zip;
* true split archives (``zip -s``, PKWARE APPNOTE 6.3.x section 8.5): the first volume starts with the
  spanning signature ``PK\\x07\\x08``; each central-directory record names the disk (volume) its local
  header is on and its offset *within that disk*; the end-of-central-directory records (and the zip64
  ones) give the disk numbers and the per-disk offset of the central directory. ``zipfile`` refuses or
  misreads these, so :func:`open_zip` joins the volumes into one virtual stream and appends a rewritten
  central directory whose offsets are absolute in that stream (disk start + per-disk offset), with
  zip64 records where a value no longer fits 32 bits. ``zipfile`` then reads it as an ordinary
  single-disk zip. No temporary copy is made.

Extraction goes into a temporary folder first (:func:`extract_archive`); :func:`merge_tree` then moves
the extracted tree into place with renames on the same file system, merging with what the dataset
folder already holds (``models/`` next to an existing ``camera.json``).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from bopkd.errors import BopkdError

# --- zip structures (PKWARE APPNOTE.TXT 6.3.10, sections 4.3.12-4.3.16) ------------------------------
_EOCD_SIG = b"PK\x05\x06"
_EOCD_FMT = (
    "<4s4H2LH"  # sig, this disk, cd disk, entries here, entries total, cd size, cd offset, comment len
)
_EOCD_SIZE = struct.calcsize(_EOCD_FMT)  # 22
_Z64_LOC_SIG = b"PK\x06\x07"
_Z64_LOC_FMT = "<4sLQL"  # sig, disk of zip64 EOCD, its offset on that disk, total disks
_Z64_LOC_SIZE = struct.calcsize(_Z64_LOC_FMT)  # 20
_Z64_EOCD_SIG = b"PK\x06\x06"
_Z64_EOCD_FMT = (
    "<4sQ2H2L4Q"  # sig, record size-12, made by, needed, this disk, cd disk, n here, n, cd size, cd off
)
_Z64_EOCD_SIZE = struct.calcsize(_Z64_EOCD_FMT)  # 56
_CD_SIG = b"PK\x01\x02"
_CD_FMT = "<4s4B4HL2L5H2L"  # as zipfile.structCentralDir
_CD_SIZE = struct.calcsize(_CD_FMT)  # 46
_ZIP64_EXTRA_ID = 0x0001
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF

_COPY_CHUNK = 1 << 20


# --- a virtual stream over several files and byte strings ----------------------------------------------


class JoinedStream(io.RawIOBase):
    """A read-only, seekable stream that is the concatenation of files and byte strings.

    Args:
        pieces: each a path (read from disk, opened lazily) or ``bytes``; optionally a path is given as
            ``(path, length)`` to use only its first ``length`` bytes.
    """

    def __init__(self, pieces: Sequence[Path | bytes | tuple[Path, int]]):
        super().__init__()
        self._pieces: list[Path | bytes] = []
        self._lengths: list[int] = []
        for p in pieces:
            if isinstance(p, tuple):
                path, n = p
                self._pieces.append(Path(path))
                self._lengths.append(int(n))
            elif isinstance(p, bytes | bytearray):
                self._pieces.append(bytes(p))
                self._lengths.append(len(p))
            else:
                self._pieces.append(Path(p))
                self._lengths.append(Path(p).stat().st_size)
        self._starts = [0]
        for n in self._lengths:
            self._starts.append(self._starts[-1] + n)
        self._size = self._starts[-1]
        self._pos = 0
        self._files: dict[int, io.BufferedReader] = {}

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._pos + offset
        elif whence == 2:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        want = len(view)
        done = 0
        while done < want and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            inner = self._pos - self._starts[i]
            n = min(want - done, self._lengths[i] - inner)
            piece = self._pieces[i]
            if isinstance(piece, bytes):
                view[done : done + n] = piece[inner : inner + n]
                got = n
            else:
                f = self._files.get(i)
                if f is None:
                    f = self._files[i] = open(piece, "rb")  # noqa: SIM115 - closed in close()
                f.seek(inner)
                got = f.readinto(view[done : done + n])
                if not got:
                    raise OSError(f"{piece}: file shorter than expected (changed while reading?)")
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        super().close()


# --- split-archive normalisation ---------------------------------------------------------------------


def _read_at(stream: JoinedStream, pos: int, n: int) -> bytes:
    stream.seek(pos)
    buf = bytearray(n)
    got = stream.readinto(buf)
    return bytes(buf[:got])


def _find_eocd(stream: JoinedStream, where: str) -> int:
    """Absolute position of the end-of-central-directory record (last one whose comment ends the file)."""
    tail_len = min(stream.size, _EOCD_SIZE + 0xFFFF)
    tail = _read_at(stream, stream.size - tail_len, tail_len)
    i = tail.rfind(_EOCD_SIG)
    while i >= 0:
        if i + _EOCD_SIZE <= len(tail):
            comment_len = struct.unpack("<H", tail[i + 20 : i + 22])[0]
            if i + _EOCD_SIZE + comment_len == len(tail):
                return stream.size - tail_len + i
        i = tail.rfind(_EOCD_SIG, 0, i)
    raise BopkdError(
        f"{where}: not a zip archive (no end-of-central-directory record); delete it and download again"
    )


def _split_extra(extra: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i + 4 <= len(extra):
        hid, ln = struct.unpack("<HH", extra[i : i + 4])
        out.append((hid, extra[i + 4 : i + 4 + ln]))
        i += 4 + ln
    return out


def _normalized_tail(stream: JoinedStream, volumes: Sequence[Path]) -> tuple[int, bytes]:
    """For a true split archive: (absolute start of its central directory, a rewritten single-disk
    central directory + end records with absolute offsets). See the module docstring."""
    where = f"{volumes[-1]} (+{len(volumes) - 1} volumes)"
    starts = [0]
    for v in volumes:
        starts.append(starts[-1] + v.stat().st_size)
    n_total, cd_size, cd_start, comment = _read_end_records(stream, volumes, starts, where)
    cd = _read_at(stream, cd_start, cd_size)
    if len(cd) != cd_size:
        raise BopkdError(f"{where}: truncated central directory; delete the volumes and download again")

    out = bytearray()
    i = 0
    for _ in range(n_total):
        if cd[i : i + 4] != _CD_SIG or i + _CD_SIZE > len(cd):
            raise BopkdError(f"{where}: bad central directory record; delete the volumes and download again")
        f = list(struct.unpack(_CD_FMT, cd[i : i + _CD_SIZE]))
        name_len, extra_len, comm_len = f[12], f[13], f[14]
        p = i + _CD_SIZE
        name = cd[p : p + name_len]
        extra = cd[p + name_len : p + name_len + extra_len]
        comm = cd[p + name_len + extra_len : p + name_len + extra_len + comm_len]
        i = p + name_len + extra_len + comm_len
        out += _single_disk_record(f, name, extra, comm, starts, where)
    out += _end_records(n_total, len(out), cd_start, comment)
    return cd_start, bytes(out)


def _read_end_records(
    stream: JoinedStream, volumes: Sequence[Path], starts: list[int], where: str
) -> tuple[int, int, int, bytes]:
    """(number of entries, central directory size, its absolute start, archive comment) from the end of
    central directory record and, when present, the zip64 end record (APPNOTE 4.3.14-4.3.16)."""
    eocd_pos = _find_eocd(stream, where)
    _, this_disk, cd_disk, _, n_total, cd_size, cd_off, comment_len = struct.unpack(
        _EOCD_FMT, _read_at(stream, eocd_pos, _EOCD_SIZE)
    )
    comment = _read_at(stream, eocd_pos + _EOCD_SIZE, comment_len)
    loc = _read_at(stream, eocd_pos - _Z64_LOC_SIZE, _Z64_LOC_SIZE) if eocd_pos >= _Z64_LOC_SIZE else b""
    if len(loc) == _Z64_LOC_SIZE and loc[:4] == _Z64_LOC_SIG:
        _, z_disk, z_off, _total_disks = struct.unpack(_Z64_LOC_FMT, loc)
        if z_disk >= len(volumes):
            raise BopkdError(
                f"{where}: zip64 record on volume {z_disk + 1} of {len(volumes)}; some volumes are missing"
            )
        rec = _read_at(stream, starts[z_disk] + z_off, _Z64_EOCD_SIZE)
        if len(rec) != _Z64_EOCD_SIZE or rec[:4] != _Z64_EOCD_SIG:
            raise BopkdError(f"{where}: bad zip64 end record; delete the volumes and download again")
        _, _, _, _, this_disk, cd_disk, _, n_total, cd_size, cd_off = struct.unpack(_Z64_EOCD_FMT, rec)
    if this_disk != len(volumes) - 1:
        raise BopkdError(
            f"{where}: the archive has {this_disk + 1} volumes but {len(volumes)} were given; "
            "download all of them (.z01, .z02 ... and .zip)"
        )
    return n_total, cd_size, starts[cd_disk] + cd_off, comment


def _zip64_fields(
    extra: bytes, usize: int, csize: int, rel_off: int, disk: int
) -> tuple[list[tuple[int, bytes]], int, int, int, int]:
    """The extra fields other than zip64, and (usize, csize, rel_off, disk) with the zip64 extended
    information applied (APPNOTE 4.5.3: only the fields whose 32/16-bit slot is full are present)."""
    others = []
    for hid, data in _split_extra(extra):
        if hid != _ZIP64_EXTRA_ID:
            others.append((hid, data))
            continue
        j = 0
        vals = {}
        for key, full, width in (("u", usize, 8), ("c", csize, 8), ("o", rel_off, 8), ("d", disk, 4)):
            full_value = _U32 if key != "d" else _U16
            if full == full_value and j + width <= len(data):
                vals[key] = int.from_bytes(data[j : j + width], "little")
                j += width
        usize = vals.get("u", usize)
        csize = vals.get("c", csize)
        rel_off = vals.get("o", rel_off)
        disk = vals.get("d", disk)
    return others, usize, csize, rel_off, disk


def _single_disk_record(
    f: list, name: bytes, extra: bytes, comm: bytes, starts: list[int], where: str
) -> bytes:
    """One central directory record rewritten for a single-disk archive: disk 0, absolute offset, sizes
    and offset moved to a zip64 extra field when they do not fit 32 bits. ``f``: the record's fields."""
    others, usize, csize, rel_off, disk = _zip64_fields(extra, f[11], f[10], f[18], f[15])
    if disk >= len(starts) - 1:
        raise BopkdError(
            f"{where}: entry on volume {disk + 1} of {len(starts) - 1}; some volumes are missing"
        )
    abs_off = starts[disk] + rel_off
    z64 = b""
    if usize >= _U32:
        z64 += struct.pack("<Q", usize)
        f[11] = _U32
    else:
        f[11] = usize
    if csize >= _U32:
        z64 += struct.pack("<Q", csize)
        f[10] = _U32
    else:
        f[10] = csize
    if abs_off >= _U32:
        z64 += struct.pack("<Q", abs_off)
        f[18] = _U32
    else:
        f[18] = abs_off
    f[15] = 0
    new_extra = b"".join(struct.pack("<HH", hid, len(d)) + d for hid, d in others)
    if z64:
        new_extra = struct.pack("<HH", _ZIP64_EXTRA_ID, len(z64)) + z64 + new_extra
        f[3] = max(f[3], 45)  # version needed to extract: zip64
    f[13] = len(new_extra)
    return struct.pack(_CD_FMT, *f) + name + new_extra + comm


def _end_records(n_total: int, new_cd_size: int, cd_start: int, comment: bytes) -> bytes:
    """Single-disk end records after a central directory of ``new_cd_size`` bytes at ``cd_start``: a zip64
    end record and locator when a count, size or offset does not fit, then the classic end record."""
    out = b""
    need64 = n_total >= _U16 or new_cd_size >= _U32 or cd_start >= _U32
    if need64:
        z64_pos = cd_start + new_cd_size
        out += struct.pack(
            _Z64_EOCD_FMT,
            _Z64_EOCD_SIG,
            _Z64_EOCD_SIZE - 12,
            45,
            45,
            0,
            0,
            n_total,
            n_total,
            new_cd_size,
            cd_start,
        )
        out += struct.pack(_Z64_LOC_FMT, _Z64_LOC_SIG, 0, z64_pos, 1)
    out += struct.pack(
        _EOCD_FMT,
        _EOCD_SIG,
        0,
        0,
        min(n_total, _U16),
        min(n_total, _U16),
        min(new_cd_size, _U32),
        min(cd_start, _U32),
        len(comment),
    )
    return out + comment


@contextlib.contextmanager
def open_zip(volumes: Sequence[str | Path]) -> Iterator[zipfile.ZipFile]:
    """Open a zip archive given as one file or as its volumes in order (``.z01``, ``.z02`` ..., ``.zip``).

    Raises:
        BopkdError: the file(s) are not a readable zip archive.
    """
    vols = [Path(v) for v in volumes]
    if not vols:
        raise ValueError("no volumes given")
    where = str(vols[-1]) if len(vols) == 1 else f"{vols[-1]} (+{len(vols) - 1} volumes)"
    raw = JoinedStream(vols)
    try:
        eocd = _find_eocd(raw, where)
        this_disk = struct.unpack("<H", _read_at(raw, eocd + 4, 2))[0]
        loc = _read_at(raw, eocd - _Z64_LOC_SIZE, _Z64_LOC_SIZE) if eocd >= _Z64_LOC_SIZE else b""
        if len(loc) == _Z64_LOC_SIZE and loc[:4] == _Z64_LOC_SIG:
            this_disk = max(this_disk, struct.unpack(_Z64_LOC_FMT, loc)[3] - 1)
        if this_disk != 0:  # a true split archive; otherwise the joined volumes are an ordinary zip
            cd_start, tail = _normalized_tail(raw, vols)
            raw.close()
            raw = JoinedStream([*_prefix(vols, cd_start), tail])
        stream = io.BufferedReader(raw, buffer_size=_COPY_CHUNK)
        try:
            zf = zipfile.ZipFile(stream)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, struct.error) as e:
            raise BopkdError(
                f"{where}: not a readable zip archive ({e}); delete it and download again"
            ) from None
    except BaseException:
        raw.close()
        raise
    try:
        yield zf
    finally:
        zf.close()
        raw.close()


def _prefix(vols: Sequence[Path], n: int) -> list[tuple[Path, int]]:
    """The volumes cut to their first ``n`` bytes in total."""
    out = []
    for v in vols:
        if n <= 0:
            break
        size = v.stat().st_size
        out.append((v, min(size, n)))
        n -= size
    return out


# --- member checks -----------------------------------------------------------------------------------


def member_target(info: zipfile.ZipInfo, strip: str | None = None) -> PurePosixPath | None:
    """The path, relative to the destination folder, where ``info`` is extracted; None for the folder itself.

    Args:
        info: a zip entry.
        strip: a leading folder every entry must be under, removed from the path (``lmo`` for
            ``lmo_base.zip``, whose entries are ``lmo/...``).

    Raises:
        BopkdError: the entry is absolute, has ``..``, is a symlink or other special file, or is outside
            ``strip``.
    """
    name = info.filename
    # Unix file type in the high 16 bits (Info-ZIP; zero, or permissions only, from other writers).
    kind_bits = stat.S_IFMT(info.external_attr >> 16)
    if kind_bits not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "symlink" if kind_bits == stat.S_IFLNK else "special file"
        raise BopkdError(f"{kind} entry {name!r} refused (archives may only hold files and folders)")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or "\x00" in norm:
        raise BopkdError(f"absolute path entry {name!r} refused (zip-slip)")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BopkdError(f"entry {name!r} with '..' refused (zip-slip)")
    if strip is not None:
        if not parts or parts[0] != strip:
            raise BopkdError(f"entry {name!r} is outside the {strip}/ folder the archive should hold")
        parts = parts[1:]
    if not parts:
        return None
    return PurePosixPath(*parts)


def check_members(
    zf: zipfile.ZipFile, strip: str | None = None
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry (see :func:`member_target`) before anything is written; return (entry, target)."""
    out = []
    for info in zf.infolist():
        target = member_target(info, strip)
        if target is not None:
            out.append((info, target))
    return out


# --- extraction and merging ----------------------------------------------------------------------------


def extract_archive(
    volumes: Sequence[str | Path],
    dest: str | Path,
    *,
    strip: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Extract a checked archive into ``dest`` (normally an empty temporary folder).

    Args:
        volumes: the archive's file, or its volumes in order.
        dest: destination folder (created).
        strip: leading folder all entries must be under, removed (see :func:`member_target`).
        on_bytes: called with the number of bytes written after each chunk (progress).

    Returns:
        Relative POSIX path -> size in bytes of every file written.

    Raises:
        BopkdError: unsafe entry (nothing is written then), corrupt data (CRC), not enough free space,
            or a write error. On any error, what was written under ``dest`` is left for the caller to
            remove (it is a temporary folder).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    where = str(Path(volumes[-1]))
    with open_zip(volumes) as zf:
        try:
            members = check_members(zf, strip)
        except BopkdError as e:
            raise BopkdError(f"{where}: {e}; nothing of this archive was kept") from None
        need = sum(info.file_size for info, _ in members)
        free = shutil.disk_usage(dest).free
        if need > free:
            raise BopkdError(
                f"{where}: extracting needs {_gb(need)} but {dest} has {_gb(free)} free; free some space and rerun"
            )
        written: dict[str, int] = {}
        for info, rel in members:
            target = dest.joinpath(*rel.parts)
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while True:
                        chunk = src.read(_COPY_CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
            except zipfile.BadZipFile as e:
                raise BopkdError(
                    f"{where}: entry {info.filename!r} is corrupt ({e}); delete the archive and download again"
                ) from None
            except OSError as e:
                raise _os_error(e, target) from None
            written[rel.as_posix()] = info.file_size
    return written


def merge_tree(src: str | Path, dst: str | Path) -> None:
    """Move the tree ``src`` into ``dst`` with renames, merging folders and replacing existing files.

    A folder absent from ``dst`` is moved whole (one rename); one present is merged entry by entry.
    ``src`` and ``dst`` must be on the same file system. Emptied folders of ``src`` are removed.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.is_dir() and not target.is_symlink():
                merge_tree(entry, target)
                entry.rmdir()
                continue
            if target.exists() or target.is_symlink():
                _remove(target)
        elif target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _os_error(e: OSError, path: Path) -> BopkdError:
    import errno

    if e.errno == errno.ENOSPC:
        return BopkdError(
            f"disk full while writing {path}; free some space and rerun (the download is resumed)"
        )
    return BopkdError(
        f"cannot write {path}: {e.strerror or e}; check the folder's permissions and free space"
    )
