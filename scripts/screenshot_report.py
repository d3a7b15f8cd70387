#!/usr/bin/env python3
"""Render a report's HTML page with headless Chromium and save a PNG screenshot.

    python scripts/screenshot_report.py reports/NAME/report.html [--out shot.png] [--width 1400]
        [--height 6000]

Chromium (Debian package ``chromium``: ``apt-get install -y chromium``) draws the page in a window of
``--width`` x ``--height`` pixels (the whole report fits when the height is large enough; the rest is cut)
and writes ``--out`` (default: the HTML file's name with ``.png``). Exit status 2 with one line when
Chromium is absent or fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """Path of the first Chromium-family browser on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html: Path, out: Path, width: int = 1400, height: int = 6000, timeout: float = 120.0) -> Path:
    """Render ``html`` with headless Chromium into ``out`` (PNG); raises RuntimeError with one line."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError(
            f"no Chromium on PATH (looked for {', '.join(BROWSERS)}): apt-get install -y chromium"
        )
    html, out = Path(html).resolve(), Path(out).resolve()
    if not html.is_file():
        raise RuntimeError(f"{html}: no such file; build the report first (bopkd report RESULTS --out DIR)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bopkd-chromium-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # needed as root (containers); the page is a local file
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={int(width)},{int(height)}",
            f"--screenshot={out}",
            html.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{browser}: no screenshot after {timeout:.0f} s") from None
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{browser} failed on {html} (exit {proc.returncode}): {last}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, help="report.html")
    ap.add_argument("--out", type=Path, default=None, help="PNG file (default: next to the HTML, .png)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=6000)
    a = ap.parse_args(argv)
    try:
        out = screenshot(a.html, a.out or a.html.with_suffix(".png"), a.width, a.height)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
