"""Truncated or malformed PLY models are refused by every reader, with one line naming the file and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from bopkd.data.ply import load_ply
from bopkd.data.ply_check import check_ply
from bopkd.data.ply_numpy import read_mesh
from bopkd.errors import BopkdError

PTS = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32)
TRIS = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)


def _header(fmt: str, n_v: int, n_f: int, extra: str = "") -> bytes:
    return (
        f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {n_v}\nproperty float x\n"
        f"property float y\nproperty float z\n{extra}element face {n_f}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode()


def _binary(endian: str = "<", faces=TRIS) -> bytes:
    fmt = "binary_little_endian" if endian == "<" else "binary_big_endian"
    body = PTS.astype(endian + "f4").tobytes()
    for f in faces:
        body += np.array([len(f)], "u1").tobytes() + np.asarray(f, endian + "i4").tobytes()
    return _header(fmt, len(PTS), len(faces)) + body


def _ascii(faces=TRIS) -> bytes:
    lines = [" ".join(f"{v:g}" for v in p) for p in PTS]
    lines += [" ".join(map(str, [len(f), *f])) for f in faces]
    return _header("ascii", len(PTS), len(faces)) + ("\n".join(lines) + "\n").encode()


QUADS = [[0, 1, 2, 3], [0, 1, 3], [1, 2, 3, 0]]


@pytest.mark.parametrize(
    "data",
    [_binary("<"), _binary(">"), _ascii(), _binary("<", QUADS), _ascii(QUADS)],
    ids=["le", "be", "ascii", "le-quads", "ascii-quads"],
)
def test_complete_files_pass_and_every_truncation_is_refused(tmp_path, data):
    p = tmp_path / "obj_000001.ply"
    p.write_bytes(data)
    check_ply(p)
    p.write_bytes(data + b"\n")  # trailing bytes after the declared elements: ignored, as the toolkit does
    check_ply(p)
    end_header = data.index(b"end_header") + len(b"end_header\n")
    ascii = b"format ascii" in data
    cuts = range(end_header, len(data)) if not ascii else [len(data) - k for k in (2, 4, 8, 20, 40)]
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(BopkdError, match=r"obj_000001\.ply: broken PLY model \(truncated.*re-download"):
            check_ply(p)


@pytest.mark.parametrize("reader", [read_mesh, load_ply], ids=["numpy", "open3d"])
@pytest.mark.parametrize("kind", ["le", "ascii"])
def test_readers_refuse_a_truncated_model(tmp_path, reader, kind):
    data = _binary("<") if kind == "le" else _ascii()
    p = tmp_path / "obj_000005.ply"
    p.write_bytes(data[: len(data) - 7])
    with pytest.raises(BopkdError) as e:
        reader(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "re-download or re-extract the models" in msg


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 3\n", "no end_header"),
        (_header("binary_middle_endian", 4, 0), "unknown format"),
        (_header("ascii", 0, 0), "declares no vertices"),
        (_header("ascii", 4, 1, "property complex w\n"), "malformed header line"),
        (_header("ascii", 1, 1) + b"1 2 3\nx 1 2 3\n", "list length"),
    ],
)
def test_malformed_headers_are_refused(tmp_path, data, why):
    p = tmp_path / "m.ply"
    p.write_bytes(data)
    with pytest.raises(BopkdError, match=why):
        check_ply(p)


def test_real_models_pass(lmo_sample_root, oracle_root):
    for d in (lmo_sample_root / "lmo", oracle_root / "lmo"):
        for p in sorted((d / "models_eval").glob("*.ply"))[:3] + sorted((d / "models").glob("*.ply"))[:2]:
            check_ply(p)


def test_score_refuses_a_truncated_evaluation_model(oracle_root, tmp_path):
    """Before the check, open3d read the truncated model in part and the file was scored (AR 0.97)."""
    ds = tmp_path / "root" / "lmo"
    ds.mkdir(parents=True)
    for p in (oracle_root / "lmo").iterdir():
        if p.name != "models_eval":
            (ds / p.name).symlink_to(p)
    shutil.copytree(oracle_root / "lmo" / "models_eval", ds / "models_eval")
    model = ds / "models_eval" / "obj_000001.ply"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) * 2 // 3])
    csv = oracle_root / "results" / "gtcheck_lmo-test.csv"
    cmd = [
        sys.executable,
        "-m",
        "bopkd",
        "score",
        str(csv),
        "--root",
        str(ds.parent),
        "--out",
        str(tmp_path / "o"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "obj_000001.ply: broken PLY model (truncated" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "gtcheck_lmo-test").exists()
