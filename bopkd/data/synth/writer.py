"""Image files of synthetic datasets: PNG/JPEG settings, full-size masks, atomic writes on a thread pool."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bopkd.errors import BopkdError


class FileWriter:
    """Encodes and writes images atomically (temporary sibling + rename) on a small thread pool.

    OpenCV's encoders release the GIL, so encoding overlaps with rendering the next image. Errors
    surface at :meth:`wait`.
    """

    def __init__(self, threads: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.pending: list = []

    @staticmethod
    def _write(path: Path, im: np.ndarray | Callable[[], np.ndarray], params: list[int]) -> None:
        ok, buf = cv2.imencode(path.suffix, im() if callable(im) else im, params)
        if not ok:
            raise BopkdError(f"{path}: could not encode the image")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise BopkdError(
                f"{path}: could not write ({e.strerror}); check the folder is writable and the disk has room"
            ) from None

    def submit(self, path: Path, im: np.ndarray | Callable[[], np.ndarray], params: list[int]) -> None:
        """Queue a write of ``im`` (or of what ``im()`` returns, computed on the writer thread)."""
        self.pending.append(self.pool.submit(self._write, path, im, params))
        if len(self.pending) > 256:
            self.wait()

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        """Wait for every pending write (raising the first error), then stop the threads."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Drop the writes not yet started and stop the threads (on an error or Ctrl-C elsewhere)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending = []


def full_mask(box: tuple[int, int, int, int], m: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask image, 255 inside: ``m`` pasted at ``box`` ``(x0, y0, x1, y1)``."""
    full = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    full[y0:y1, x0:x1][m] = 255
    return full


def png_params(level: int, filt: int = cv2.IMWRITE_PNG_FILTER_NONE, rle: bool = False) -> list[int]:
    """PNG settings: zlib ``level``, one row filter (NONE for masks and depth, where filters cost more
    than they save; SUB for RGB), and the RLE strategy for masks and depth (long runs of zeros)."""
    p = [cv2.IMWRITE_PNG_COMPRESSION, int(level), cv2.IMWRITE_PNG_FILTER, int(filt)]
    if rle:
        p += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    return p
