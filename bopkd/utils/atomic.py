"""Atomic writes: write to a temporary file in the same folder, then rename over the target.

A crash or Ctrl-C mid-write leaves the previous file (or nothing) in place, never a truncated one.
:func:`replace_folder` does the same for a folder of files that belong together.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bopkd.errors import BopkdError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_link(src: str | Path, dst: str | Path) -> None:
    """Give the file ``src`` the second name ``dst`` (a hard link; a copy where the file system has none),
    put in place by a rename, so ``dst`` is never partial. Raises OSError (the temporary name removed)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Remove the staging folders of ``name`` left by processes that died (``.NAME.new-PID-*``, ``.old-``)."""
    for p in parent.glob(f".{name}.*-*-*"):
        kind, _, rest = p.name[len(name) + 2 :].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("new", "old") and pid.isdigit() and not pid_alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_folder(dest: str | Path, keep: Callable[[str], bool] = lambda name: False) -> Iterator[Path]:
    """Yield an empty temporary sibling folder to write into; on success it replaces ``dest`` as a whole.

    Readers and other writers see either the old folder or the new one with all its files, never a
    mix: the files are written and synced in the staging folder, then, holding an exclusive ``flock`` on
    the parent folder (so that concurrent writers take turns), files of ``dest`` for which ``keep(name)``
    is true and that the new folder lacks are hard-linked (or copied) into it, ``dest`` is renamed
    aside and the new folder renamed to ``dest``. A process killed before the swap leaves ``dest`` as
    it was (and a hidden staging folder, removed by the next writer); killed between the two renames it
    leaves no ``dest``, never a partial one. An exception removes the staging folder and leaves ``dest``.
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not dest.is_dir():
        raise BopkdError(f"{dest}: a file is where the output folder goes; move or remove it and rerun")
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-{os.getpid()}-", dir=parent))
    try:
        yield stage
        for p in stage.iterdir():
            _fsync(p)
        lock = os.open(parent, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _remove_stale(parent, dest.name)
            if dest.is_dir():
                for p in dest.iterdir():
                    if p.is_file() and keep(p.name) and not (stage / p.name).exists():
                        try:
                            os.link(p, stage / p.name)
                        except OSError:
                            shutil.copy2(p, stage / p.name)
                old = parent / f".{dest.name}.old-{os.getpid()}-{stage.name.rsplit('-', 1)[-1]}"
                os.rename(dest, old)
                os.rename(stage, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(stage, dest)
            _fsync(parent)
        finally:
            os.close(lock)  # closing releases the flock
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone after a successful swap
