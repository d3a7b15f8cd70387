"""Tests of the package bopkd.data.download and ``bopkd download`` against a local HTTP server (tests/http_server.py).

The LM-O tests serve zips built at test time from the shared LM-O sample (skipped in a user's clone);
the others use small synthetic zips so the downloader is covered everywhere.
"""

from __future__ import annotations

import dataclasses
import errno
import filecmp
import hashlib
import json
import random
import socket
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bopkd.cli import app, main
from bopkd.data import download as dl
from bopkd.data.download import (
    archive_url,
    download_dataset,
    download_file,
    download_parts,
    http_file,
    marker_path,
)
from bopkd.data.download import parts as dl_parts
from bopkd.data.registry import DATASETS, DEFAULT_BASE_URL, ArchiveSpec, DatasetSpec
from bopkd.errors import BopkdError
from tests.http_server import TestHTTPServer
from tests.zip_helpers import (
    HF,
    make_lmo_archives,
    make_symlink_zip,
    make_zip,
    served_sizes,
    write_split_zip,
)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _files(root: Path, skip_state: bool = True) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip_state and ".bopkd" in p.relative_to(root).parts)
    }


def toy_spec(**parts: tuple[ArchiveSpec, ...]) -> DatasetSpec:
    return DatasetSpec(
        name="toy",
        title="Toy",
        obj_ids=(1,),
        symmetric_obj_ids=(),
        im_size=(64, 48),
        test_scene_ids=(1,),
        splits=("test",),
        parts=parts,
    )


TOY_BASE = {"toy/camera.json": b'{"fx": 500.0}', "toy/test_targets_bop19.json": b"[]"}
TOY_MODELS = {
    "models/models_info.json": b'{"1": {}}',
    "models/obj_000001.ply": random.Random(0).randbytes(300_000),
}


@pytest.fixture
def srv(tmp_path):
    """A server of ``tmp_path/srv`` (files under ``srv/REPO/resolve/main/``)."""
    folder = tmp_path / "srv"
    folder.mkdir()
    with TestHTTPServer(folder) as server:
        yield server


@pytest.fixture
def toy(srv):
    """Toy dataset archives served; returns (spec, server)."""
    d = srv.directory / "toy" / HF
    make_zip(d / "toy_base.zip", TOY_BASE)
    make_zip(d / "toy_models.zip", TOY_MODELS)
    spec = toy_spec(
        base=(ArchiveSpec("toy", "toy_base.zip", extract_to="root"),),
        models=(ArchiveSpec("toy", "toy_models.zip"),),
    )
    return spec, srv


def _run(spec, root, server, parts=None, **kw):
    msgs: list[str] = []
    kw.setdefault("backoff", 0.0)
    kw.setdefault("retries", 2)
    res = download_parts(spec, root, parts, mirror=server.url, progress=False, echo=msgs.append, **kw)
    return res, msgs


def _nothing_complete(root: Path, dataset: str, part: str) -> None:
    """No marker, no extracted file in the dataset folder, no leftover temporary extraction."""
    assert not marker_path(root, dataset, part).exists()
    ds = root / dataset
    if ds.exists():
        assert _files(ds) == {}
        assert not list((ds / ".bopkd" / "tmp").glob("*"))


# --- the real LM-O sample ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lmo_zips(lmo_sample_root, tmp_path_factory):
    """The three default LM-O archives, built once from the fixture like the BOP ones, laid out as on HF."""
    return make_lmo_archives(lmo_sample_root, tmp_path_factory.mktemp("lmo_srv"))


@pytest.fixture
def lmo_server(lmo_zips, monkeypatch):
    """The LM-O archives served, with the registry's sizes set to theirs (they are built from the sample)."""
    monkeypatch.setitem(DATASETS, "lmo", served_sizes(DATASETS["lmo"], lmo_zips))
    with TestHTTPServer(lmo_zips) as server:
        yield server


def test_lmo_download_extract_then_info_and_rerun(lmo_server, lmo_sample_root, tmp_path):
    root = tmp_path / "bop_data"
    runner = CliRunner()
    r = runner.invoke(app, ["download", "lmo", "--root", str(root), "--mirror", lmo_server.url])
    assert r.exit_code == 0, r.output
    assert {rec.path for rec in lmo_server.log} == {
        f"lmo/{HF}/lmo_{p}.zip" for p in ("base", "models", "test_bop19")
    }
    # every file of the sample arrived byte for byte, next to each other in bop_data/lmo
    cmp = filecmp.dircmp(lmo_sample_root / "lmo", root / "lmo", ignore=[".bopkd"])
    assert _files(root / "lmo") == _files(lmo_sample_root / "lmo")
    assert not cmp.left_only and not cmp.right_only
    # markers record the SHA-256 of what was served; the archives are gone
    for part in ("base", "models", "test_bop19"):
        m = json.loads(marker_path(root, "lmo", part).read_text())
        served = lmo_server.directory / "lmo" / HF / f"lmo_{part}.zip"
        assert (
            m["archives"][0]["sha256"] == _sha(served) and m["archives"][0]["size"] == served.stat().st_size
        )
        assert all((root / "lmo" / f).stat().st_size == n for f, n in m["files"].items())
    assert not (root / ".bopkd").exists()
    assert len(json.loads(marker_path(root, "lmo", "models").read_text())["files"]) == 18

    r = runner.invoke(app, ["info", "lmo", "--root", str(root)])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "objects (8)" in out
    assert "│ test │ 1 │ 200 │ 1517 │ no │" in out
    assert "1445 targets, 1445 instances in 200 images" in out

    n_requests = len(lmo_server.log)
    r = runner.invoke(app, ["download", "lmo", "--root", str(root), "--mirror", lmo_server.url])
    assert r.exit_code == 0, r.output
    assert len(lmo_server.log) == n_requests  # nothing fetched
    assert r.output.count("already complete") >= 3 and "nothing to do" in r.output


def test_lmo_interrupted_download_resumes_without_refetching(lmo_server, tmp_path):
    rel = f"lmo/{HF}/lmo_models.zip"
    src = lmo_server.directory / rel
    size = src.stat().st_size
    cut = 1_000_000
    lmo_server.drop_after(rel, cut)
    dest = tmp_path / "dl" / "lmo_models.zip"
    msgs: list[str] = []
    got = download_file(lmo_server.url_for(rel), dest, retries=0, backoff=0, progress=False, echo=msgs.append)
    reqs = lmo_server.requests_for(rel)
    assert [r.range for r in reqs] == [None, f"bytes={cut}-"]
    assert [r.status for r in reqs] == [200, 206]
    assert reqs[0].bytes_sent == cut and reqs[1].bytes_sent == size - cut
    assert lmo_server.bytes_served(rel) == size and got.fetched == size
    assert any("connection lost after 1.0 MB of" in m for m in msgs)
    assert dest.read_bytes() == src.read_bytes() and got.sha256 == _sha(src)
    assert not dest.with_name("lmo_models.zip.part").exists()


def test_registry_records_the_lmo_archive_sizes():
    parts = DATASETS["lmo"].parts
    assert {p: parts[p][0].size for p in ("base", "models", "test_bop19")} == {
        "base": 5_684,
        "models": 5_367_178,
        "test_bop19": 117_550_985,
    }
    assert parts["train_pbr"][0].size is None and DATASETS["ycbv"].parts["models"][0].size is None


def test_lmo_size_mismatch_is_one_line_keeps_the_part_and_nothing_is_unpacked(
    lmo_server, monkeypatch, capsys, tmp_path
):
    """A mirror serving test_bop19 with another size than the registry's: refused before a byte is written
    or unpacked, the .part of an earlier attempt kept; with the right size the rerun resumes it."""
    root = tmp_path / "bop"
    rel = f"lmo/{HF}/lmo_test_bop19.zip"
    served = (lmo_server.directory / rel).read_bytes()
    part = dl.downloads_dir(root) / "lmo" / "lmo_test_bop19.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(served[:70_000])
    good = DATASETS["lmo"]
    wrong = dataclasses.replace(good.parts["test_bop19"][0], size=len(served) + 1)
    bad = dataclasses.replace(good, parts={**good.parts, "test_bop19": (wrong,)})
    monkeypatch.setitem(DATASETS, "lmo", bad)
    args = ("download", "lmo", "--root", str(root), "--mirror", lmo_server.url)
    code, out, err = _cli_main(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "size mismatch" in err and f"registry expects {len(served) + 1}" in err and str(part) in err
    assert part.read_bytes() == served[:70_000]
    assert (
        marker_path(root, "lmo", "models").is_file() and not marker_path(root, "lmo", "test_bop19").exists()
    )
    assert not (root / "lmo" / "test").exists()
    monkeypatch.setitem(DATASETS, "lmo", good)
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    assert lmo_server.requests_for(rel)[-1].range == "bytes=70000-"
    assert marker_path(root, "lmo", "test_bop19").is_file() and (root / "lmo" / "test" / "000002").is_dir()


def test_registry_size_tells_a_dropped_connection_from_the_end_without_a_length(tmp_path):
    """A server that announces no length: a connection dropped early looks like the end of the file, and
    only the registry's size shows it is not; the download resumes instead of failing."""
    folder = tmp_path / "srv"
    folder.mkdir()
    data = random.Random(3).randbytes(300_000)
    (folder / "f.zip").write_bytes(data)
    dest = tmp_path / "f.zip"
    msgs: list[str] = []
    with TestHTTPServer(folder, send_length=False) as s:
        s.drop_after("f.zip", 100_000)
        got = download_file(
            s.url_for("f.zip"), dest, size=len(data), backoff=0, progress=False, echo=msgs.append
        )
        assert [(r.range, r.status) for r in s.log] == [(None, 200), ("bytes=100000-", 206)]
    assert dest.read_bytes() == data and got.size == len(data)
    # A file shorter than the registry's size that the server says is complete is kept for a resume.
    dest.unlink()
    with (
        TestHTTPServer(folder, send_length=False) as s,
        pytest.raises(BopkdError, match="size mismatch") as e,
    ):
        download_file(s.url_for("f.zip"), dest, size=len(data) + 10, retries=0, backoff=0, progress=False)
    assert "\n" not in str(e.value)
    assert dest.with_name("f.zip.part").stat().st_size == len(data) and not dest.exists()


# --- synthetic archives: the downloader everywhere -------------------------------------------------------


def test_toy_download_merges_parts_and_rerun_does_nothing(toy, tmp_path):
    spec, srv = toy
    root = tmp_path / "bop"
    res, msgs = _run(spec, root, srv)
    assert [r.part for r in res] == ["base", "models"] and not any(r.skipped for r in res)
    assert _files(root / "toy") == {
        "camera.json": TOY_BASE["toy/camera.json"],
        "test_targets_bop19.json": b"[]",
        **TOY_MODELS,
    }
    n = len(srv.log)
    res, msgs = _run(spec, root, srv)
    assert all(r.skipped for r in res) and len(srv.log) == n
    assert sum("already complete" in m for m in msgs) == 2
    assert res[1].n_files == 2 and res[1].n_bytes == sum(len(v) for v in TOY_MODELS.values())


def test_retries_resume_after_repeated_drops(toy, tmp_path):
    spec, srv = toy
    rel = f"toy/{HF}/toy_models.zip"
    size = (srv.directory / rel).stat().st_size
    srv.drop_after(rel, 70_000, times=2)
    res, msgs = _run(spec, tmp_path / "bop", srv, ["models"], retries=0)  # progress resets the retry budget
    reqs = srv.requests_for(rel)
    assert [r.range for r in reqs] == [None, "bytes=70000-", "bytes=140000-"]
    assert srv.bytes_served(rel) == size
    assert sum("retrying" in m for m in msgs) == 2
    assert (tmp_path / "bop" / "toy" / "models" / "obj_000001.ply").read_bytes() == TOY_MODELS[
        "models/obj_000001.ply"
    ]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_is_retried(toy, tmp_path, status):
    spec, srv = toy
    rel = f"toy/{HF}/toy_base.zip"
    srv.fail(rel, status, times=2)
    _run(spec, tmp_path / "bop", srv, ["base"], retries=2)
    assert [r.status for r in srv.requests_for(rel)] == [status, status, 200]
    assert marker_path(tmp_path / "bop", "toy", "base").is_file()


def test_persistent_500_gives_up_with_one_line(toy, tmp_path):
    spec, srv = toy
    srv.fail(f"toy/{HF}/toy_base.zip", 500, times=100)
    with pytest.raises(BopkdError, match=r"HTTP 500; gave up after 3 attempts") as e:
        _run(spec, tmp_path / "bop", srv, ["base"], retries=2)
    assert "\n" not in str(e.value)
    assert len(srv.requests_for(f"toy/{HF}/toy_base.zip")) == 3
    _nothing_complete(tmp_path / "bop", "toy", "base")


def test_404_is_final(srv, tmp_path):
    spec = toy_spec(models=(ArchiveSpec("toy", "missing.zip"),))
    with pytest.raises(
        BopkdError, match=r"missing\.zip: HTTP 404 Not Found; check the dataset and part names and the mirror"
    ):
        _run(spec, tmp_path / "bop", srv, ["models"], retries=5)
    assert len(srv.log) == 1  # no retry
    assert not list((tmp_path / "bop").rglob("*.part"))
    _nothing_complete(tmp_path / "bop", "toy", "models")


@pytest.mark.parametrize("what", ["sha256", "size"])
def test_checksum_or_size_mismatch_leaves_nothing_complete(toy, tmp_path, what):
    spec, srv = toy
    good = srv.directory / "toy" / HF / "toy_models.zip"
    kw = {"sha256": "0" * 64} if what == "sha256" else {"size": good.stat().st_size + 1}
    bad = toy_spec(models=(ArchiveSpec("toy", "toy_models.zip", **kw),))
    with pytest.raises(BopkdError, match="checksum mismatch" if what == "sha256" else "registry expects"):
        _run(bad, tmp_path / "bop", srv, ["models"])
    assert not [p for p in (tmp_path / "bop").rglob("*") if p.is_file()]  # no .part, no archive, no marker
    _nothing_complete(tmp_path / "bop", "toy", "models")
    # the right checksum passes and is recorded
    ok = toy_spec(models=(ArchiveSpec("toy", "toy_models.zip", size=good.stat().st_size, sha256=_sha(good)),))
    _run(ok, tmp_path / "bop", srv, ["models"])
    assert json.loads(marker_path(tmp_path / "bop", "toy", "models").read_text())["archives"][0][
        "sha256"
    ] == _sha(good)


def test_corrupt_part_file_is_caught_by_sha256(toy, tmp_path):
    """A .part whose bytes were damaged on disk resumes into a file with the wrong SHA-256."""
    spec, srv = toy
    good = srv.directory / "toy" / HF / "toy_models.zip"
    root = tmp_path / "bop"
    part = dl.downloads_dir(root) / "toy" / "toy_models.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)
    bad = toy_spec(models=(ArchiveSpec("toy", "toy_models.zip", sha256=_sha(good)),))
    with pytest.raises(BopkdError, match="checksum mismatch.*removed"):
        _run(bad, root, srv, ["models"])
    assert srv.requests_for(f"toy/{HF}/toy_models.zip")[0].range == "bytes=1000-"
    assert not part.exists()
    _nothing_complete(root, "toy", "models")
    _run(bad, root, srv, ["models"])  # the rerun starts afresh and succeeds
    assert marker_path(root, "toy", "models").is_file()


def test_server_without_range_support_restarts(tmp_path):
    folder = tmp_path / "srv"
    data = random.Random(1).randbytes(200_000)
    (folder / "f.bin").parent.mkdir(parents=True)
    (folder / "f.bin").write_bytes(data)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(data[:50_000])
    msgs: list[str] = []
    with TestHTTPServer(folder, ignore_range=True) as s:
        got = download_file(s.url_for("f.bin"), dest, progress=False, echo=msgs.append)
        assert [(r.range, r.status) for r in s.log] == [("bytes=50000-", 200)]
    assert dest.read_bytes() == data and got.sha256 == hashlib.sha256(data).hexdigest()
    assert any("does not resume" in m for m in msgs)


def test_complete_part_answered_416_is_verified_not_refetched(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir()
    data = random.Random(2).randbytes(10_000)
    (folder / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "f.bin"
    dest.parent.mkdir()
    dest.with_name("f.bin.part").write_bytes(data)
    with TestHTTPServer(folder) as s:
        got = download_file(s.url_for("f.bin"), dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
        assert [(r.range, r.status, r.bytes_sent) for r in s.log] == [("bytes=10000-", 416, 0)]
    assert got.fetched == 0 and dest.read_bytes() == data


def test_no_network_is_one_clear_line(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = toy_spec(base=(ArchiveSpec("toy", "toy_base.zip", extract_to="root"),))
    with pytest.raises(
        BopkdError, match=rf"cannot reach 127\.0\.0\.1:{port}.*gave up after 2 attempts.*network"
    ) as e:
        download_parts(
            spec,
            tmp_path / "bop",
            mirror=f"http://127.0.0.1:{port}",
            retries=1,
            backoff=0,
            progress=False,
            echo=lambda m: None,
        )
    assert "\n" not in str(e.value)
    _nothing_complete(tmp_path / "bop", "toy", "base")


def test_not_enough_free_space_is_checked_before_downloading(toy, tmp_path, monkeypatch):
    spec, srv = toy
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(http_file.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(BopkdError, match="not enough free space.*needs"):
        _run(spec, tmp_path / "bop", srv, ["models"])
    assert not list((tmp_path / "bop").rglob("*.part"))
    _nothing_complete(tmp_path / "bop", "toy", "models")


class _FailingFile:
    """Wraps the .part file: a write that would pass ``allow`` bytes writes up to it, then raises ``exc``."""

    def __init__(self, f, allow: int, exc: BaseException):
        self.f, self.allow, self.exc, self.n = f, allow, exc, 0

    def write(self, b):
        if self.n + len(b) > self.allow:
            self.f.write(b[: self.allow - self.n])
            raise self.exc
        self.n += len(b)
        return self.f.write(b)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


def test_disk_full_while_writing_keeps_part_for_resume(toy, tmp_path, monkeypatch):
    spec, srv = toy
    real_open = http_file._open_part
    monkeypatch.setattr(
        http_file,
        "_open_part",
        lambda p, m: _FailingFile(real_open(p, m), 0, OSError(errno.ENOSPC, "No space left on device")),
    )
    with pytest.raises(BopkdError, match="disk full while writing .*toy_models.zip.part.*rerun to resume"):
        _run(spec, tmp_path / "bop", srv, ["models"])
    assert (dl.downloads_dir(tmp_path / "bop") / "toy" / "toy_models.zip.part").exists()
    _nothing_complete(tmp_path / "bop", "toy", "models")


def test_ctrl_c_during_download_then_resume(toy, tmp_path, monkeypatch):
    spec, srv = toy
    rel = f"toy/{HF}/toy_models.zip"
    size = (srv.directory / rel).stat().st_size
    real_open = http_file._open_part
    monkeypatch.setattr(
        http_file, "_open_part", lambda p, m: _FailingFile(real_open(p, m), 100_000, KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):
        _run(spec, tmp_path / "bop", srv, ["models"])
    part = dl.downloads_dir(tmp_path / "bop") / "toy" / "toy_models.zip.part"
    have = part.stat().st_size
    assert have == 100_000
    _nothing_complete(tmp_path / "bop", "toy", "models")
    monkeypatch.setattr(http_file, "_open_part", real_open)
    _run(spec, tmp_path / "bop", srv, ["models"])
    assert srv.requests_for(rel)[-1].range == f"bytes={have}-"
    assert srv.requests_for(rel)[-1].bytes_sent == size - have
    assert marker_path(tmp_path / "bop", "toy", "models").is_file()


def test_ctrl_c_during_extraction_leaves_nothing_in_place(toy, tmp_path, monkeypatch):
    spec, srv = toy
    root = tmp_path / "bop"
    real = dl_parts.extract_archive

    def interrupted(*a, **kw):
        real(*a, **kw)  # everything extracted into the temporary folder ...
        raise KeyboardInterrupt  # ... and Ctrl-C before it is moved into place

    monkeypatch.setattr(dl_parts, "extract_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(spec, root, srv, ["models"])
    _nothing_complete(root, "toy", "models")
    assert (dl.downloads_dir(root) / "toy" / "toy_models.zip").is_file()  # verified archive kept
    monkeypatch.setattr(dl_parts, "extract_archive", real)
    n = len(srv.log)
    res, msgs = _run(spec, root, srv, ["models"])
    assert len(srv.log) == n and res[0].fetched == 0  # not downloaded again
    assert _files(root / "toy") == TOY_MODELS


def test_zip_slip_archive_refused_through_download(srv, tmp_path):
    d = srv.directory / "toy" / HF
    make_zip(d / "evil.zip", {"models/ok.txt": b"ok", "../../escaped.txt": b"x"})
    make_symlink_zip(d / "link.zip", "models/passwd", "/etc/passwd", extra={"models/ok.txt": b"ok"})
    spec = toy_spec(models=(ArchiveSpec("toy", "evil.zip"),), test_bop19=(ArchiveSpec("toy", "link.zip"),))
    root = tmp_path / "a" / "bop"
    for part, why in (("models", "'..' refused"), ("test_bop19", "symlink entry")):
        with pytest.raises(BopkdError, match=why):
            _run(spec, root, srv, [part])
        _nothing_complete(root, "toy", part)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_multi_part_archive(srv, tmp_path):
    entries = {f"train_pbr/000000/rgb/{i:06d}.jpg": random.Random(i).randbytes(9_000) for i in range(12)}
    vols = write_split_zip(srv.directory / "toy" / HF / "toy_train_pbr.zip", entries, 25_000, zip64=True)
    assert len(vols) >= 4
    spec = toy_spec(
        train_pbr=(ArchiveSpec("toy", "toy_train_pbr.zip", extra_parts=tuple(v.name for v in vols[:-1])),)
    )
    res, _ = _run(spec, tmp_path / "bop", srv, ["train_pbr"])
    assert _files(tmp_path / "bop" / "toy") == entries
    assert [a["file"] for a in res[0].archives] == [v.name for v in vols]
    assert [a["sha256"] for a in res[0].archives] == [_sha(v) for v in vols]


def test_lmo_train_pbr_comes_from_lm_repo(srv, tmp_path):
    assert archive_url(DEFAULT_BASE_URL, "lm", "lm_train_pbr.zip") == (
        "https://huggingface.co/datasets/bop-benchmark/lm/resolve/main/lm_train_pbr.zip"
    )
    make_zip(srv.directory / "lm" / HF / "lm_train_pbr.zip", {"train_pbr/000000/scene_gt.json": b"{}"})
    res = download_dataset(
        "lmo", tmp_path / "bop", ["train_pbr"], mirror=srv.url, progress=False, echo=lambda m: None
    )
    assert [r.path for r in srv.log] == [f"lm/{HF}/lm_train_pbr.zip"]
    assert (tmp_path / "bop" / "lmo" / "train_pbr" / "000000" / "scene_gt.json").read_bytes() == b"{}"
    assert res[0].marker == tmp_path / "bop" / "lmo" / ".bopkd" / "parts" / "train_pbr.done"


def test_mirror_from_environment_and_template(toy, tmp_path, monkeypatch):
    spec, srv = toy
    monkeypatch.setenv("BOPKD_MIRROR", srv.url + "/")
    download_parts(spec, tmp_path / "a", ["base"], progress=False, echo=lambda m: None)
    assert srv.log[-1].path == f"toy/{HF}/toy_base.zip"
    flat = srv.directory / "flat"
    flat.mkdir()
    (flat / "toy_models.zip").write_bytes((srv.directory / "toy" / HF / "toy_models.zip").read_bytes())
    download_parts(
        spec, tmp_path / "b", "models", mirror=srv.url + "/flat/{file}", progress=False, echo=lambda m: None
    )
    assert srv.log[-1].path == "flat/toy_models.zip"
    assert dl.resolve_base_url(None) == srv.url
    monkeypatch.delenv("BOPKD_MIRROR")
    assert dl.resolve_base_url(None) == DEFAULT_BASE_URL


def test_parts_parsing():
    spec = DATASETS["lmo"]
    assert dl.parse_parts(spec, None) == ["base", "models", "test_bop19"]
    assert dl.parse_parts(spec, ["models,test_all", "base", "models"]) == ["models", "test_all", "base"]
    assert dl.parse_parts(spec, ["all"]) == list(spec.parts)
    with pytest.raises(
        BopkdError,
        match=rf"unknown part 'depth' for lmo; its parts: {', '.join(spec.parts)}$",
    ):
        dl.parse_parts(spec, ["depth"])
    assert "train_pbr" in spec.parts and "base" in spec.parts


def _cli_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["bopkd", *args])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["download", "nope"], "unknown dataset 'nope': not registered; known: "),
        (["download", "lmo", "--parts", "depth"], "unknown part 'depth' for lmo; its parts: base, models"),
    ],
)
def test_cli_name_errors_are_one_line(monkeypatch, capsys, tmp_path, args, expect):
    code, out, err = _cli_main(monkeypatch, capsys, *args, "--root", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and expect in err and "lmo" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_cli_404_is_one_line(monkeypatch, capsys, srv, tmp_path):
    code, out, err = _cli_main(
        monkeypatch,
        capsys,
        "download",
        "lmo",
        "--root",
        str(tmp_path / "bop"),
        "--mirror",
        srv.url,
        "-p",
        "models",
    )
    assert code == 2
    assert err.count("\n") == 1 and "lmo_models.zip: HTTP 404 Not Found" in err and "Traceback" not in err


def test_cli_ctrl_c_is_one_line_and_keeps_part(monkeypatch, capsys, toy, tmp_path):
    spec, srv = toy
    monkeypatch.setitem(DATASETS, "toy", spec)
    real_open = http_file._open_part
    monkeypatch.setattr(
        http_file, "_open_part", lambda p, m: _FailingFile(real_open(p, m), 5000, KeyboardInterrupt())
    )
    root = tmp_path / "bop"
    code, out, err = _cli_main(
        monkeypatch, capsys, "download", "toy", "--root", str(root), "--mirror", srv.url
    )
    assert code == 130
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    assert marker_path(root, "toy", "base").is_file()  # the small base archive was done before Ctrl-C
    assert (dl.downloads_dir(root) / "toy" / "toy_models.zip.part").stat().st_size == 5000
    assert not marker_path(root, "toy", "models").exists() and not (root / "toy" / "models").exists()


def test_resume_across_a_redirect(toy, tmp_path):
    """Hugging Face's resolve URLs redirect to a file store; the Range header must survive the redirect."""
    spec, srv = toy
    store = f"store/{'ab' * 8}/toy_models.zip"
    (srv.directory / store).parent.mkdir(parents=True)
    (srv.directory / f"toy/{HF}/toy_models.zip").rename(srv.directory / store)
    srv.redirect(f"toy/{HF}/toy_models.zip", store)
    srv.drop_after(store, 50_000)
    _run(spec, tmp_path / "bop", srv, ["models"])
    assert [(r.path, r.range, r.status) for r in srv.log] == [
        (f"toy/{HF}/toy_models.zip", None, 302),
        (store, None, 200),
        (f"toy/{HF}/toy_models.zip", "bytes=50000-", 302),
        (store, "bytes=50000-", 206),
    ]
    assert _files(tmp_path / "bop" / "toy") == TOY_MODELS
