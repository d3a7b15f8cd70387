"""Tests of bopkd.data.archive: split archives, zip-slip refusal, corruption, merging into a dataset."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest

from bopkd.data import archive
from bopkd.data.archive import JoinedStream, extract_archive, merge_tree, open_zip
from bopkd.errors import BopkdError
from tests.zip_helpers import make_symlink_zip, make_zip, split_bytes, write_split_zip


def _entries(seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "train_pbr/000000/scene_gt.json": b'{"0": []}\n' * 50,
        "train_pbr/000000/rgb/000000.jpg": rng.randbytes(70_000),
        "train_pbr/000000/rgb/000001.jpg": rng.randbytes(33_333),
        "train_pbr/000001/depth/000000.png": rng.randbytes(5),
        "camera.json": b'{"fx": 1.0}',
    }


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- multi-volume archives ---------------------------------------------------------------------------


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize("volume_size", [4096, 50_000, 10_000_000])
def test_true_split_archive_extracts_exactly(tmp_path, zip64, volume_size):
    entries = _entries()
    (tmp_path / "a").mkdir()
    vols = write_split_zip(tmp_path / "a" / "toy.zip", entries, volume_size, zip64=zip64)
    if volume_size < 100_000:
        assert len(vols) > 2  # entries and the central directory cross volume boundaries
    written = extract_archive(vols, tmp_path / "out")
    assert _read_tree(tmp_path / "out") == entries
    assert written == {k: len(v) for k, v in entries.items()}


def test_split_archive_with_missing_volume_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    vols = write_split_zip(tmp_path / "a" / "toy.zip", _entries(), 20_000)
    with pytest.raises(BopkdError, match="volumes"):
        extract_archive(vols[1:], tmp_path / "out")
    with pytest.raises(BopkdError, match="volumes"):
        extract_archive(vols[-1:], tmp_path / "out")


@pytest.mark.skipif(
    shutil.which("zip") is None, reason="needs the Info-ZIP 'zip' tool to build a reference split archive"
)
@pytest.mark.parametrize("force_zip64", [False, True])
def test_info_zip_split_archive(tmp_path, force_zip64):
    """An archive split by Info-ZIP (``zip -s 64k``), the tool BOP-style split archives come from."""
    src = tmp_path / "src"
    entries = {f"d/{k}": v for k, v in _entries(1).items()}
    entries["d/big.bin"] = random.Random(2).randbytes(200_000)
    for k, v in entries.items():
        (src / k).parent.mkdir(parents=True, exist_ok=True)
        (src / k).write_bytes(v)
    args = (
        [shutil.which("zip"), "-q", "-r", "-s", "64k"]
        + (["-fz"] if force_zip64 else [])
        + [str(tmp_path / "sp.zip"), "d"]
    )
    subprocess.run(args, cwd=src, check=True)  # list of arguments, no shell
    vols = sorted(tmp_path.glob("sp.z0*")) + [tmp_path / "sp.zip"]
    assert len(vols) >= 3
    with pytest.raises(zipfile.BadZipFile), zipfile.ZipFile(vols[-1]) as zf:  # the stdlib alone cannot
        zf.read("d/big.bin")
    extract_archive(vols, tmp_path / "out")
    assert _read_tree(tmp_path / "out") == entries


def test_byte_chunked_volumes_are_joined(tmp_path):
    entries = _entries(3)
    vols = split_bytes(make_zip(tmp_path / "c.zip", entries), 30_000)
    assert len(vols) >= 3
    extract_archive(vols, tmp_path / "out")
    assert _read_tree(tmp_path / "out") == entries


def test_joined_stream_matches_concatenation(tmp_path):
    rng = random.Random(5)
    parts = [rng.randbytes(n) for n in (10, 0, 4097, 3)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(p)
    whole = b"".join(parts) + b"tail"
    with JoinedStream([*paths, b"tail"]) as s:
        assert s.read() == whole
        for pos, n in [(0, 5), (8, 10), (4100, 100), (len(whole) - 2, 10), (len(whole) + 5, 3)]:
            s.seek(pos)
            assert s.read(n) == whole[pos : pos + n]
        s.seek(-4, os.SEEK_END)
        assert s.read() == b"tail"


# --- hostile archives ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_name",
    [
        "../evil.txt",
        "/tmp/evil.txt",
        "models/../../evil.txt",
        "C:/evil.txt",
        "..\\evil.txt",
        "a/./../../evil.txt",
    ],
)
def test_zip_slip_entry_refused_and_nothing_kept(tmp_path, bad_name):
    path = make_zip(tmp_path / "bad.zip", {"models/good.txt": b"ok", bad_name: b"pwned", "z.txt": b"late"})
    with zipfile.ZipFile(path) as zf:
        assert bad_name in zf.namelist()  # the hostile name is really in the archive
    out = tmp_path / "ds" / "out"
    with pytest.raises(BopkdError, match="refused") as e:
        extract_archive([path], out)
    assert "nothing of this archive was kept" in str(e.value)
    assert not any(out.rglob("*"))
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "ds" / "evil.txt").exists()


@pytest.mark.parametrize("target", ["../../../etc/passwd", "/etc/passwd", "inside.txt"])
def test_symlink_entry_refused(tmp_path, target):
    path = make_symlink_zip(tmp_path / "link.zip", "models/link", target, extra={"models/a.txt": b"a"})
    with pytest.raises(BopkdError, match="symlink entry 'models/link' refused"):
        extract_archive([path], tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))


def test_strip_requires_dataset_folder(tmp_path):
    good = make_zip(tmp_path / "base.zip", {"lmo/camera.json": b"{}", "lmo/": b"", "lmo/x/y.txt": b"y"})
    assert extract_archive([good], tmp_path / "out", strip="lmo") == {"camera.json": 2, "x/y.txt": 1}
    bad = make_zip(tmp_path / "base2.zip", {"lmo/camera.json": b"{}", "other/camera.json": b"{}"})
    with pytest.raises(BopkdError, match="outside the lmo/ folder"):
        extract_archive([bad], tmp_path / "out2", strip="lmo")
    assert not any((tmp_path / "out2").rglob("*"))


def test_corrupt_member_detected_by_crc(tmp_path):
    data = random.Random(7).randbytes(20_000)
    path = make_zip(tmp_path / "c.zip", {"a.bin": data}, compress=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    i = raw.find(data[:64])
    raw[i + 1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BopkdError, match="corrupt"):
        extract_archive([path], tmp_path / "out")


def test_not_a_zip(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"<html>404 page from a proxy</html>")
    with pytest.raises(BopkdError, match="not a zip archive"), open_zip([p]):
        pass


def test_extract_checks_free_space(tmp_path, monkeypatch):
    path = make_zip(tmp_path / "a.zip", {"a.bin": bytes(50_000)})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(BopkdError, match="free"):
        extract_archive([path], tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))


# --- merging into a dataset folder ---------------------------------------------------------------------


def test_merge_tree_keeps_existing_files_and_replaces_same_names(tmp_path):
    dst = tmp_path / "lmo"
    (dst / "models").mkdir(parents=True)
    (dst / "camera.json").write_text("cam")
    (dst / "models" / "old.ply").write_text("old")
    (dst / "models" / "models_info.json").write_text("v1")
    src = tmp_path / "tmp"
    (src / "models").mkdir(parents=True)
    (src / "models" / "models_info.json").write_text("v2")
    (src / "models" / "obj_000001.ply").write_text("new")
    (src / "test" / "000002" / "rgb").mkdir(parents=True)
    (src / "test" / "000002" / "rgb" / "000003.png").write_text("png")
    merge_tree(src, dst)
    assert _read_tree(dst) == {
        "camera.json": b"cam",
        "models/old.ply": b"old",
        "models/models_info.json": b"v2",
        "models/obj_000001.ply": b"new",
        "test/000002/rgb/000003.png": b"png",
    }
    assert not any(src.iterdir())
