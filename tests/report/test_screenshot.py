"""Tests of scripts/screenshot_report.py: a report's HTML rendered by headless Chromium into a PNG (skipped
without Chromium), and its one-line error when no browser is on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from bopkd.report.build import build_report
from tests.report.test_report import write_submission

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _small_report(tmp_path: Path) -> Path:
    r = tmp_path / "results"
    r.mkdir()
    kw = {"role": "student", "backbone": "small", "mssd": 0.2, "mspd": 0.6, "vsd": 0.1, "per_obj": {1: 0.3}}
    for s in range(2):
        write_submission(r, f"bopkd-none-small-s{s}", kd="none", seed=s, ar=0.2 + s / 10, add=0.1, **kw)
        write_submission(r, f"bopkd-ot-small-s{s}", kd="ot", seed=s, ar=0.3, add=0.2, **kw)
    return build_report(r, tmp_path / "rep", title="Screenshot test").files["report.html"]


@pytest.mark.skipif(
    not any(shutil.which(b) for b in BROWSERS),
    reason="no Chromium on PATH (Debian: apt-get install -y chromium)",
)
def test_screenshot_of_a_small_report(tmp_path):
    html = _small_report(tmp_path)
    png = tmp_path / "shot.png"
    cmd = [sys.executable, str(SCRIPT), str(html), "--out", str(png), "--width", "1200", "--height", "1600"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    img = mpimg.imread(png)
    assert img.shape[:2] == (1600, 1200)
    assert img[..., :3].std() > 0.05  # text, tables and figures drawn, not a blank page
    assert img[:200, :, :3].mean() > 0.8  # a white page with dark text at the top


def test_screenshot_without_a_browser_is_one_line(tmp_path):
    (tmp_path / "r.html").write_text("<p>x</p>")
    env = {**os.environ, "PATH": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "r.html")], capture_output=True, text=True, env=env
    )
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no Chromium on PATH" in p.stderr
