"""Benchmark of ``bopkd download``: loopback throughput, extraction time and the no-op rerun.

Builds ``lmo_base.zip``, ``lmo_models.zip`` and ``lmo_test_bop19.zip`` from the shared LM-O sample
(``../shared/fixtures/lmo_sample``; random data of the same size when it is absent), serves them from
127.0.0.1 with the test server (``tests/http_server.py``, pure Python, so it bounds the rate), downloads
and extracts them into a temporary root, then runs the same command again (nothing to do).

    python benchmarks/download.py [--copies N] [--keep]

``--copies N`` repeats the test scene N times in the test archive (scenes 000002, 000003 ...) to time a
bigger download. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bopkd.data.download import download_dataset  # noqa: E402
from tests.http_server import TestHTTPServer  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "lmo_sample"


def build_archives(out: Path, copies: int) -> None:
    d = out / "lmo" / "resolve" / "main"
    d.mkdir(parents=True)
    lmo = FIXTURE / "lmo"
    if lmo.is_dir():
        members = {
            "lmo_base.zip": [
                (lmo / n, f"lmo/{n}") for n in ("camera.json", "test_targets_bop19.json", "dataset_info.md")
            ],
            "lmo_models.zip": [
                (p, p.relative_to(lmo).as_posix())
                for sub in ("models", "models_eval")
                for p in sorted((lmo / sub).glob("*"))
            ],
            "lmo_test_bop19.zip": [
                (p, p.relative_to(lmo).as_posix().replace("000002", f"{2 + k:06d}", 1))
                for k in range(copies)
                for p in sorted((lmo / "test" / "000002").rglob("*"))
                if p.is_file()
            ],
        }
        for name, files in members.items():
            with zipfile.ZipFile(d / name, "w", zipfile.ZIP_DEFLATED) as zf:
                for src, arc in files:
                    zf.write(src, arc)
        print(f"archives from the LM-O sample ({FIXTURE})")
    else:
        rng = random.Random(0)
        for name, top, n, size in (
            ("lmo_base.zip", "lmo/", 3, 30_000),
            ("lmo_models.zip", "models/", 18, 700_000),
            ("lmo_test_bop19.zip", "test/000002/rgb/", 20 * copies, 500_000),
        ):
            with zipfile.ZipFile(d / name, "w", zipfile.ZIP_STORED) as zf:
                for i in range(n):
                    zf.writestr(f"{top}{i:06d}.bin", rng.randbytes(size))
        print("LM-O sample not found: random archives of similar sizes")
    for p in sorted(d.iterdir()):
        print(f"  {p.name}: {p.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=1, help="copies of the test scene in the test archive")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bopkd-bench-download-"))
    try:
        build_archives(tmp / "srv", args.copies)
        with TestHTTPServer(tmp / "srv") as server:
            root = tmp / "bop_data"
            quiet = {"progress": False, "echo": lambda m: None, "mirror": server.url}
            t0 = time.perf_counter()
            res = download_dataset("lmo", root, **quiet)
            total = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = download_dataset("lmo", root, **quiet)
            noop = time.perf_counter() - t0
            assert all(r.skipped for r in again)
            served = server.bytes_served()
        fetched = sum(r.fetched for r in res)
        dl_s = sum(r.download_s for r in res)
        ex_s = sum(r.extract_s for r in res)
        files = sum(r.n_files for r in res)
        ex_bytes = sum(r.n_bytes for r in res)
        print(f"cpu cores: {os.cpu_count()}, python {sys.version.split()[0]}")
        print(
            f"download (loopback, incl. SHA-256): {fetched / 1e6:.1f} MB in {dl_s:.2f} s = {fetched / 1e6 / dl_s:.1f} MB/s"
        )
        print(
            f"extract + move into place:          {files} files, {ex_bytes / 1e6:.1f} MB in {ex_s:.2f} s = {ex_bytes / 1e6 / ex_s:.1f} MB/s"
        )
        print(f"total (3 parts, incl. markers):     {total:.2f} s; bytes served {served / 1e6:.1f} MB")
        print(f"no-op rerun (all parts complete):   {noop * 1e3:.1f} ms")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
