"""Zip archives built at test time: ordinary ones (``zipfile``), hand-made hostile ones, and split
(multi-volume) archives written byte by byte from PKWARE's APPNOTE.TXT (6.3.10, sections 4.3 and 8.5),
independently of the reader in :mod:`bopkd.data.archive`.
"""

from __future__ import annotations

import math
import stat
import struct
import zipfile
import zlib
from pathlib import Path


def make_zip(path: Path, entries: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> Path:
    """An ordinary zip with the given name -> content entries (names written as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


def make_zip_from_dir(path: Path, root: Path, members: list[str]) -> Path:
    """An ordinary zip of the files under ``root/m`` for each ``m`` (file or folder), names relative to
    ``root`` (as ``cd root && zip -r path members`` makes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for m in members:
            p = root / m
            files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            for f in files:
                zf.write(f, f.relative_to(root).as_posix())
    return path


#: Where the BOP Hugging Face repositories serve their files, below ``<dataset>/`` (see bopkd.data.registry).
HF = "resolve/main"


def make_lmo_archives(lmo_sample_root: Path, srv: Path) -> Path:
    """The three default LM-O archives (base, models, test_bop19) built from the real LM-O sample, laid out
    under ``srv`` as on the BOP Hugging Face repositories; returns ``srv``."""
    lmo = lmo_sample_root / "lmo"
    d = srv / "lmo" / HF
    make_zip_from_dir(
        d / "lmo_base.zip",
        lmo_sample_root,
        ["lmo/camera.json", "lmo/test_targets_bop19.json", "lmo/dataset_info.md"],
    )
    make_zip_from_dir(d / "lmo_models.zip", lmo, ["models", "models_eval"])
    make_zip_from_dir(d / "lmo_test_bop19.zip", lmo, ["test/000002"])
    return srv


def served_sizes(spec, srv: Path):
    """``spec`` (a registry DatasetSpec) with each archive's size set to that of the file served under
    ``srv`` (laid out as by :func:`make_lmo_archives`); archives not served keep theirs. Archives built
    from the sample are smaller than the BOP ones whose sizes the registry records."""
    import dataclasses

    parts = {
        part: tuple(
            dataclasses.replace(a, size=(srv / a.repo / HF / a.name).stat().st_size)
            if (srv / a.repo / HF / a.name).is_file()
            else a
            for a in archives
        )
        for part, archives in spec.parts.items()
    }
    return dataclasses.replace(spec, parts=parts)


def make_symlink_zip(path: Path, name: str, target: str, extra: dict[str, bytes] | None = None) -> Path:
    """A zip holding ``extra`` files and a symlink entry ``name`` -> ``target`` (Unix mode in the
    external attributes, link target as the data, as Info-ZIP stores it)."""
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in (extra or {}).items():
            zf.writestr(n, d)
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return path


def split_bytes(path: Path, chunk: int) -> list[Path]:
    """Cut a file into byte chunks ``name.z01``, ``name.z02`` ... and a last ``name.zip`` (``split -b``
    style; the joined chunks are the original file). Removes the original and returns the volumes."""
    data = path.read_bytes()
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    vols = []
    for k, piece in enumerate(pieces):
        v = path.with_suffix(f".z{k + 1:02d}") if k < len(pieces) - 1 else path
        v.write_bytes(piece)
        vols.append(v)
    return vols


def write_split_zip(
    path: Path, entries: dict[str, bytes], volume_size: int, zip64: bool = False
) -> list[Path]:
    """Write a true split archive (APPNOTE 8.5) of stored entries: ``path.z01``, ``path.z02`` ... and
    ``path`` (the last volume, holding the end records).

    The first volume starts with the spanning signature ``PK\\x07\\x08``. Each central-directory record
    holds the disk its local header is on and the offset within that disk; the end record holds the last
    disk's number, the disk where the central directory starts and its offset on that disk. With
    ``zip64`` the local-header offsets are moved into zip64 extra fields, and zip64 end records (with the
    total number of disks in the locator) are written.

    Returns:
        the volumes in order (``.z01`` ... ``.zip``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    body = bytearray(b"PK\x07\x08")
    records = []  # (name, crc, size, absolute local header offset)
    for name, data in entries.items():
        nb = name.encode()
        crc = zlib.crc32(data)
        records.append((nb, crc, len(data), len(body)))
        body += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(nb), 0
        )
        body += nb + data
    cd_pos = len(body)
    end_size = 22 + (56 + 20 if zip64 else 0)
    cd_len = sum(46 + len(nb) + (12 if zip64 else 0) for nb, *_ in records)
    total = cd_pos + cd_len + end_size
    n_vols = max(1, math.ceil((total - end_size) / volume_size))
    starts = [k * volume_size for k in range(n_vols)]

    def disk_of(pos: int) -> int:
        return min(pos // volume_size, n_vols - 1)

    cd = bytearray()
    for nb, crc, size, off in records:
        d = disk_of(off)
        rel = off - starts[d]
        extra = struct.pack("<HHQ", 1, 8, rel) if zip64 else b""
        cd += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            (3 << 8) | 45,
            45 if zip64 else 20,
            0,
            0,
            0,
            0x21,
            crc,
            size,
            size,
            len(nb),
            len(extra),
            0,
            d,
            0,
            (stat.S_IFREG | 0o644) << 16,
            0xFFFFFFFF if zip64 else rel,
        )
        cd += nb + extra
    assert len(cd) == cd_len
    body += cd
    cd_disk = disk_of(cd_pos)
    cd_rel = cd_pos - starts[cd_disk]
    last = n_vols - 1
    n = len(records)
    if zip64:
        z_pos = len(body)
        body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, last, cd_disk, n, n, cd_len, cd_rel)
        z_disk = disk_of(z_pos)
        body += struct.pack("<4sLQL", b"PK\x06\x07", z_disk, z_pos - starts[z_disk], n_vols)
    body += struct.pack(
        "<4s4H2LH", b"PK\x05\x06", last, cd_disk, n, n, cd_len, 0xFFFFFFFF if zip64 else cd_rel, 0
    )
    assert len(body) == total
    vols = []
    for k in range(n_vols):
        v = path.with_suffix(f".z{k + 1:02d}") if k < last else path
        v.write_bytes(bytes(body[starts[k] : starts[k + 1] if k < last else total]))
        vols.append(v)
    return vols
