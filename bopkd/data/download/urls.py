"""Where dataset parts come from and where their state is kept: base URL, archive URLs, markers."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from bopkd.data.registry import DEFAULT_BASE_URL

#: Environment variable that replaces the base URL (like ``--mirror``).
ENV_MIRROR = "BOPKD_MIRROR"
#: Folder (inside the root and inside each dataset folder) where bopkd keeps its state.
STATE_DIR = ".bopkd"


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
