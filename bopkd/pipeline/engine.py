"""A resumable stage runner: settings hashes, checksummed stage records, locks and tee'd logs.

The runner knows stages only as data (:class:`Stage`: a name, a kind, dependencies, the settings that
determine its outputs and an action); what the stages do is the plan's business (:mod:`bopkd.pipeline.plan`).

Skipping, rerunning, resuming. Each finished stage writes ``RUN/stages/<stage>.json`` atomically: a hash
of its settings, the checksums (SHA-256) of the inputs it consumed (its upstream stages' outputs) and of
the files it produced. A stage is skipped when its record exists, its settings hash and input checksums
equal the current ones and its outputs are still there unchanged (size and mtime, else SHA-256).
Otherwise it runs; a stage whose outputs changed changes its downstream stages' inputs, so exactly the
affected stages rerun. A stage with a ``resume_file`` works in a folder named by its fingerprint (which
hashes settings and inputs): when that file exists, an interrupted stage continues from it. Every file
is written atomically, so an interruption never loses or corrupts what was already written.

Locks. :class:`RunLock` holds ``fcntl.flock`` locks for a run's whole duration; a second run on the same
folders stops with one line naming the other run's pid. The operating system releases the locks of a
killed run.

Logs: ``RUN/logs/<stage>.log`` (everything the stage printed, progress bars reduced to their last
state) and ``RUN/logs/pipeline.log`` (one line per stage event).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bopkd.errors import BopkdError
from bopkd.utils.atomic import atomic_write_json, pid_alive

#: Version of the stage records (``RUN/stages/<stage>.json``); a record of another version is not trusted.
RECORD_VERSION = 1
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ------------------------------------------------------------------------------------------- checksums


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (kept here: the runner imports no bopkd module
    but :mod:`bopkd.errors` and :mod:`bopkd.utils.atomic`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict:
    """``{sha256, size, mtime_ns}`` of a file, as a record stores its outputs."""
    st = path.stat()
    return {"sha256": sha256_file(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def entry_intact(path: Path, entry: dict) -> bool:
    """Whether ``path`` still holds what ``entry`` recorded (size+mtime shortcut, else SHA-256)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != entry.get("size"):
        return False
    if st.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return sha256_file(path) == entry.get("sha256")


def canonical_hash(obj) -> str:
    """SHA-256 of the JSON form of ``obj`` with sorted keys (non-JSON values as ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- stages


@dataclass
class StageOutput:
    """What a stage produced: files (checksummed into its record) and JSON-able facts for later stages."""

    files: list[Path]
    info: dict = field(default_factory=dict)


@dataclass
class Stage:
    """One step of a run.

    Attributes:
        name: unique name, also the record and log file name (``teacher``, ``student-tiny-cpu-ot-s0``).
        kind: what the stage does (the plan's vocabulary: ``data``, ``teacher``, ``predict`` ...); ``--force``
            selects stages by kind too.
        title: one line for the plan table.
        deps: names of the stages whose outputs it consumes.
        config: the settings that determine its outputs (hashed into its record).
        action: ``action(ctx) -> StageOutput``.
        params: what the action needs besides ``config`` and does not change its outputs (device,
            progress, worker counts); not hashed.
        resume_file: ``resume_file(stage, run_folder, fingerprint) -> Path``: the file (a checkpoint) from
            which an interrupted run of the stage continues; None: the stage always starts over.
    """

    name: str
    kind: str
    title: str
    deps: list[str]
    config: dict
    action: Callable[[StageContext], StageOutput]
    params: dict = field(default_factory=dict)
    resume_file: Callable[[Stage, Path, str], Path] | None = None

    @property
    def config_hash(self) -> str:
        return canonical_hash(self.config)


@dataclass
class StageContext:
    """What a running stage gets: its upstream records, its fingerprint, its folders, a logger and the
    run's options (``opts``, whatever the caller of :func:`run_stages` passes)."""

    stage: Stage
    deps: dict[str, dict]
    fingerprint: str
    run_folder: Path
    forced: bool
    previous: dict | None
    progress: bool
    log: Callable[[str], None]
    opts: Any

    def dep_info(self, name: str) -> dict:
        return self.deps[name].get("info", {})


@dataclass
class StageStatus:
    """Whether a stage is ``done``, must ``run`` or can ``resume``, and why (one line)."""

    stage: Stage
    state: str  # "done" | "run" | "resume"
    reason: str
    fingerprint: str | None = None


# ------------------------------------------------------------------------------------------- records


def record_path(run_folder: Path, name: str) -> Path:
    return run_folder / "stages" / f"{name}.json"


def load_record(run_folder: Path, name: str) -> dict | None:
    """The record of stage ``name``; None when absent, unreadable or of another :data:`RECORD_VERSION`."""
    p = record_path(run_folder, name)
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None  # unreadable: the stage simply runs again
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def input_checksums(stage: Stage, records: dict[str, dict]) -> dict[str, dict[str, str]]:
    """``{dep: {output path: sha256}}`` of the upstream stages' recorded outputs."""
    return {d: {p: e["sha256"] for p, e in records[d]["outputs"].items()} for d in stage.deps}


def fingerprint(stage: Stage, inputs: dict) -> str:
    """Hash of a stage's settings and input checksums (names its work folder)."""
    return canonical_hash({"config": stage.config_hash, "inputs": inputs})


def _resumable(stage: Stage, run_folder: Path, fp: str) -> bool:
    return stage.resume_file is not None and stage.resume_file(stage, run_folder, fp).is_file()


def assess(
    stage: Stage, run_folder: Path, records: dict[str, dict], pending: dict[str, str], forced: bool
) -> StageStatus:
    """Whether ``stage`` is done or must (re)run, and why. ``records`` holds the current records of the
    stages already assessed as done; ``pending`` the names of stages that will run, with a reason."""
    waiting = [d for d in stage.deps if d in pending]
    if waiting:
        return StageStatus(stage, "run", f"after {waiting[0]}")
    inputs = input_checksums(stage, records)
    fp = fingerprint(stage, inputs)
    rec = load_record(run_folder, stage.name)
    resumable = _resumable(stage, run_folder, fp)
    state = "resume" if resumable and not forced else "run"
    if forced:
        return StageStatus(stage, "run", "forced (--force)", fp)
    if rec is None:
        return StageStatus(
            stage, state, "interrupted: continues from its checkpoint" if resumable else "not run yet", fp
        )
    if rec.get("config_hash") != stage.config_hash:
        return StageStatus(stage, state, "settings changed", fp)
    if rec.get("fingerprint") != fp:
        old = rec.get("inputs", {})
        changed = [d for d in stage.deps if old.get(d) != inputs.get(d)]
        return StageStatus(stage, state, f"input changed: {', '.join(changed) or '?'}", fp)
    for p, e in rec.get("outputs", {}).items():
        if not entry_intact(Path(p), e):
            why = "missing" if not Path(p).exists() else "changed"
            return StageStatus(stage, state, f"output {why}: {p}", fp)
    return StageStatus(stage, "done", f"done {rec.get('finished', '')[:19].replace('T', ' ')}", fp)


def forced_names(stages: list[Stage], force: list[str], kinds: tuple[str, ...] = ()) -> set[str]:
    """Stage names selected by ``--force`` values (names, kinds, globs, ``all``); ``kinds`` are named in
    the error (default: the kinds of ``stages``)."""
    names = [s.name for s in stages]
    kinds = kinds or tuple(dict.fromkeys(s.kind for s in stages))
    out: set[str] = set()
    for f in force:
        for item in [x.strip() for x in f.split(",") if x.strip()]:
            if item == "all":
                out.update(names)
                continue
            hit = {s.name for s in stages if s.kind == item or fnmatch.fnmatchcase(s.name, item)}
            hit |= {n for n in names if n == item}
            if not hit:
                raise BopkdError(
                    f"--force {item!r} matches no stage: use a stage name ({', '.join(names[:4])}, ...), a kind "
                    f"({', '.join(kinds)}), a glob like 'student-*-ot-*', or all (see --dry-run)"
                )
            out |= hit
    return out


def assess_all(stages: list[Stage], run_folder: Path, forced: set[str]) -> list[StageStatus]:
    """The status of every stage without running anything (``--dry-run``)."""
    records: dict[str, dict] = {}
    pending: dict[str, str] = {}
    out = []
    for st in stages:
        s = assess(st, run_folder, records, pending, st.name in forced)
        if s.state == "done":
            records[st.name] = load_record(run_folder, st.name)  # type: ignore[assignment]
        else:
            pending[st.name] = s.reason
        out.append(s)
    return out


def status_table(title: str, statuses: list[StageStatus]):
    """A ``rich`` table of the stages: number, name, title and status (done, run, resume) with its reason."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("#", "stage", "what", "status"):
        t.add_column(col, justify="right" if col == "#" else "left")
    for i, s in enumerate(statuses, 1):
        color = {"done": "green", "resume": "yellow"}.get(s.state, "cyan")
        t.add_row(str(i), s.stage.name, s.stage.title, f"[{color}]{s.state}[/{color}]: {s.reason}")
    return t


# ------------------------------------------------------------------------------------------- locks


class RunLock:
    """Exclusive ``fcntl.flock`` locks on files; the holder's pid and start time are written into them.

    Raises :class:`BopkdError` naming the other run's pid when a lock is held by a live run. A lock whose
    recorded holder is dead is still held by that run's forked children (DataLoader workers share the
    open lock file and leave within seconds of their parent's death): then it waits up to
    ``orphan_wait_s`` for them.
    """

    def __init__(self, paths: list[Path], orphan_wait_s: float = 60.0):
        self.paths = paths
        self.orphan_wait_s = orphan_wait_s
        self.files: list = []

    @staticmethod
    def _holder(f) -> dict:
        f.seek(0)
        try:
            info = json.loads(f.read().strip() or "{}")
        except json.JSONDecodeError:
            info = {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _alive(pid) -> bool:
        if not isinstance(pid, int) or pid <= 0:
            return True  # unknown: assume a live run
        return pid_alive(pid)

    def _acquire(self, p: Path):
        p.parent.mkdir(parents=True, exist_ok=True)
        f = open(p, "a+")  # noqa: SIM115 - kept open while the lock is held
        deadline = time.monotonic() + self.orphan_wait_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except OSError:
                info = self._holder(f)
            pid = info.get("pid")
            if self._alive(pid) or time.monotonic() > deadline:
                f.close()
                who = f"pid {pid}, started {info.get('started', '?')}" if pid else "pid unknown"
                what = "another bopkd run-pipeline" if self._alive(pid) else "processes left by a killed run"
                raise BopkdError(
                    f"{p.parent} is in use by {what} ({who}, lock {p}): wait for it to finish or stop it, then rerun"
                )
            time.sleep(0.5)

    def __enter__(self) -> RunLock:
        try:
            for p in self.paths:
                f = self._acquire(p)
                f.seek(0)
                f.truncate()
                f.write(json.dumps({"pid": os.getpid(), "started": now(), "argv": sys.argv}))
                f.flush()
                self.files.append(f)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files:
            with contextlib.suppress(OSError):
                f.close()  # closing releases the flock
        self.files = []


# ------------------------------------------------------------------------------------------- logging


class Tee(io.TextIOBase):
    """A text stream writing to the console stream and, line by line, to a log file.

    Progress bars redraw a line with carriage returns; the log gets only the last state of such a line
    and no ANSI escape codes.
    """

    def __init__(self, console, logfile, echo: bool = True):
        self.console = console
        self.logfile = logfile
        self.echo = echo
        self._buf = ""

    def write(self, s: str) -> int:
        if self.echo:
            self.console.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            line = _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
            self.logfile.write(line + "\n")
        self.logfile.flush()
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.console.flush()
        self.logfile.flush()

    def close_line(self) -> None:
        if self._buf:
            self.logfile.write(_ANSI.sub("", self._buf.rstrip("\r").rsplit("\r", 1)[-1]) + "\n")
            self._buf = ""
            self.logfile.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.console, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.console.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.console, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def stage_log(path: Path, echo: bool = True) -> Iterator[Callable[[str], None]]:
    """Send everything printed (stdout, stderr, progress bars) to the console and to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"===== {now()} pid {os.getpid()}\n")
        out, err = Tee(sys.stdout, f, echo), Tee(sys.stderr, f, echo)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):

            def log(msg: str) -> None:
                print(msg, flush=True)

            try:
                yield log
            except BaseException as e:
                if not isinstance(e, (KeyboardInterrupt, BopkdError)):
                    import traceback

                    f.write(traceback.format_exc())
                else:
                    f.write(f"stopped: {type(e).__name__}: {e}\n")
                raise
            finally:
                out.close_line()
                err.close_line()


def now() -> str:
    """UTC time in ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def event_logger(path: Path) -> Callable[[str], None]:
    """``event(msg)`` appends ``<time> <msg>`` to ``path`` (``RUN/logs/pipeline.log``)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def event(msg: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{now()} {msg}\n")

    return event


# ------------------------------------------------------------------------------------------- running


@dataclass
class StagesRun:
    """What :func:`run_stages` did: the stages run and skipped, and the current record of each."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    records: dict[str, dict] = field(default_factory=dict)


def _run_one(
    st: Stage, status: StageStatus, run_folder: Path, done: StagesRun, forced: bool, progress: bool, opts
) -> tuple[dict, float]:
    """Run one stage inside its tee'd log; write and return its record (and its seconds)."""
    previous = load_record(run_folder, st.name)
    if forced:
        record_path(run_folder, st.name).unlink(missing_ok=True)
    started, ts = now(), time.perf_counter()
    with stage_log(run_folder / "logs" / f"{st.name}.log") as log:
        deps = {d: done.records[d] for d in st.deps}
        ctx = StageContext(
            st, deps, status.fingerprint or "", run_folder, forced, previous, progress, log, opts
        )
        out = st.action(ctx)
    seconds = time.perf_counter() - ts
    rec = {
        "version": RECORD_VERSION,
        "stage": st.name,
        "kind": st.kind,
        "title": st.title,
        "config_hash": st.config_hash,
        "fingerprint": status.fingerprint,
        "config": st.config,
        "inputs": input_checksums(st, done.records),
        "outputs": {str(p): file_entry(Path(p)) for p in out.files},
        "info": out.info,
        "started": started,
        "finished": now(),
        "seconds": round(seconds, 3),
        "pid": os.getpid(),
    }
    atomic_write_json(record_path(run_folder, st.name), rec)
    return rec, seconds


def run_stages(
    stages: list[Stage],
    run_folder: Path,
    forced: set[str],
    progress: bool,
    opts,
    console,
    event: Callable[[str], None],
) -> StagesRun:
    """Run, in order, every stage that is not done (see the module docstring); ``event`` logs each step."""
    done = StagesRun()
    n = len(stages)
    try:
        for i, st in enumerate(stages, 1):
            status = assess(st, run_folder, done.records, {}, st.name in forced)
            if status.state == "done":
                done.records[st.name] = load_record(run_folder, st.name)  # type: ignore[assignment]
                done.skipped.append(st.name)
                console.print(f"[green]✓[/green] [{i}/{n}] {st.name}: already done", highlight=False)
                continue
            console.rule(f"[{i}/{n}] {st.name}: {st.title}  ({status.reason})")
            event(f"run {st.name} ({status.reason})")
            rec, seconds = _run_one(st, status, run_folder, done, st.name in forced, progress, opts)
            done.records[st.name] = rec
            done.executed.append(st.name)
            event(f"done {st.name} in {seconds:.1f} s")
            console.print(f"[green]✓[/green] [{i}/{n}] {st.name} done in {seconds:.1f} s", highlight=False)
    except KeyboardInterrupt:
        event("interrupted (Ctrl-C)")
        raise
    except BaseException as e:
        event(f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    return done
