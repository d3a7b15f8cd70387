"""Run metrics: ``metrics.csv`` and ``metrics.jsonl`` in the run directory, TensorBoard when installed.

One row per logged iteration: ``iter``, ``lr``, every loss term, ``loss`` (their sum), throughput
(``img_s``) and elapsed time. The CSV's columns are fixed by the first row (the loss terms of a run do
not change); the JSONL keeps every key. On resume, rows after the checkpoint's iteration are dropped
(rewritten atomically), so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from bopkd.utils.atomic import atomic_write_text

CSV_NAME = "metrics.csv"
JSONL_NAME = "metrics.jsonl"


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return v


class MetricsLogger:
    """Append metric rows to the run directory (rank 0 only; other ranks pass ``enabled=False``).

    Args:
        run_dir: the run directory.
        enabled: write anything at all.
        resume_from: drop rows with ``iter > resume_from`` from earlier files (None: start afresh).
        tensorboard: also write TensorBoard events under ``run_dir/tb`` when the package is installed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        resume_from: int | None = None,
        tensorboard: bool = True,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / CSV_NAME
        self.jsonl_path = self.run_dir / JSONL_NAME
        self.columns: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            for p in (self.csv_path, self.jsonl_path):
                p.unlink(missing_ok=True)
        else:
            self._truncate(resume_from)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(
                    log_dir=str(self.run_dir / "tb"),
                    purge_step=None if resume_from is None else resume_from + 1,
                )
            except (ImportError, ModuleNotFoundError):
                self.tb = None

    def _truncate(self, last_iter: int) -> None:
        if self.jsonl_path.is_file():
            keep = []
            for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if int(row.get("iter", 0)) <= last_iter:
                    keep.append(line)
            atomic_write_text(self.jsonl_path, "".join(ln + "\n" for ln in keep))
        if self.csv_path.is_file():
            text = self.csv_path.read_text(encoding="utf-8")
            reader = csv.reader(io.StringIO(text))
            rows = list(reader)
            if rows:
                header, body = rows[0], rows[1:]
                self.columns = header
                i = header.index("iter") if "iter" in header else 0
                kept = [
                    r for r in body if len(r) == len(header) and r[i].isdigit() and int(r[i]) <= last_iter
                ]
                out = io.StringIO()
                w = csv.writer(out, lineterminator="\n")
                w.writerow(header)
                w.writerows(kept)
                atomic_write_text(self.csv_path, out.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        """Write one row (``row["iter"]`` required)."""
        if not self.enabled:
            return
        row = {k: _fmt(v) for k, v in row.items()}
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        if self.columns is None:
            self.columns = list(row)
        with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            if new:
                w.writerow(self.columns)
            w.writerow([row.get(c, "") for c in self.columns])
        if self.tb is not None:
            step = int(row["iter"])
            for k, v in row.items():
                if k != "iter" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"train/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    p = Path(run_dir) / JSONL_NAME
    if not p.is_file():
        return []
    return [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
