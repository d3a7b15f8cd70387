"""SHA-256 of files, read in 1 MiB chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_hasher(path: str | Path, upto: int | None = None) -> hashlib._Hash:
    """A ``hashlib.sha256`` object fed with the file's bytes (its first ``upto`` bytes when given), to
    which more bytes can still be added."""
    h = hashlib.sha256()
    left = upto
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    return sha256_hasher(path).hexdigest()
