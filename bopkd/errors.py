"""User-facing errors.

Every problem a user can cause or meet (a missing file, a malformed CSV, a wrong dataset name, a broken
download) is raised as :class:`BopkdError` with a one-line message that names the file and the fix. The
CLI prints that line and exits with status 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BopkdError(Exception):
    """An error whose message is meant for the user: one line naming the file and the fix."""


class MissingFileError(BopkdError, FileNotFoundError):
    """A file a stage needs is absent; the message names the file and the command that brings it."""

    def __init__(self, path: str | Path, hint: str = ""):
        self.path = Path(path)
        msg = f"missing file {self.path}"
        if hint:
            msg += f": {hint}"
        super().__init__(msg)
