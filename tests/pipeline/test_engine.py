"""Tests of the stage runner (bopkd/pipeline/engine.py): the run lock and the tee'd stage logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bopkd.errors import BopkdError
from bopkd.pipeline.engine import RunLock, Tee


def test_lock_names_the_holder_and_is_released_on_exit(tmp_path):
    paths = [tmp_path / "runs" / "x" / ".lock"]
    code = (
        "import sys, time; from pathlib import Path; from bopkd.pipeline import RunLock\n"
        f"with RunLock([Path({str(paths[0])!r})]):\n    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(BopkdError, match=rf"in use by another bopkd run-pipeline \(pid {holder.pid},"),
            RunLock(paths),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(paths):  # released by the OS when the holder died
        assert json.loads(paths[0].read_text())["pid"] == os.getpid()


def test_lock_of_a_killed_run_held_by_its_forked_children_is_waited_for(tmp_path):
    lock = tmp_path / "runs" / "x" / ".lock"
    code = (
        "import os, sys, time; from pathlib import Path; from bopkd.pipeline import RunLock\n"
        f"with RunLock([Path({str(lock)!r})]):\n"
        "    if os.fork() == 0:\n        time.sleep(4); os._exit(0)\n"  # a child sharing the lock, like a DataLoader worker
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with (
        pytest.raises(BopkdError, match=rf"processes left by a killed run \(pid {holder.pid},"),
        RunLock([lock], orphan_wait_s=0),
    ):
        pass
    t0 = time.monotonic()
    with RunLock([lock], orphan_wait_s=30):
        assert time.monotonic() - t0 > 0.5  # waited for the orphan to exit


def test_tee_keeps_the_last_state_of_progress_lines(tmp_path):
    import io

    console, log = io.StringIO(), io.StringIO()
    t = Tee(console, log)
    t.write("start\n\r 10%|#  |\r 50%|### |")
    t.write("\r100%|#####|\n\x1b[32mgreen\x1b[0m line\npartial")
    t.close_line()
    assert log.getvalue() == "start\n100%|#####|\ngreen line\npartial\n"
    assert console.getvalue().startswith("start\n\r 10%")


def test_the_engine_knows_nothing_of_pose_estimation():
    """The runner imports no data, model, loss, training, inference or evaluation module: stages are data."""
    import ast

    import bopkd.pipeline.engine as engine

    tree = ast.parse(Path(engine.__file__).read_text(encoding="utf-8"))
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in mods if m.startswith("bopkd.")} <= {"bopkd.errors", "bopkd.utils.atomic"}
