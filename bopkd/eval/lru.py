"""In-process caches shared by successive scorings (``bopkd score a.csv b.csv ...``).

Scoring several result files of one dataset reads the same test depth images and renders the same GT
poses again and again; both depend only on the dataset, so they are kept here, bounded in bytes and
evicted least-recently-used. Keys carry the file's path, size and modification time (depth) or the
model file's identity and the exact pose and intrinsics bytes (renders), so a changed file or pose is
never served from the cache. Thread-safe.

Why by hand: ``functools.lru_cache`` bounds the number of entries, not their bytes, and cannot be
shared across differently-shaped keys this simply.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class ByteLRU:
    """A dict-like LRU cache bounded by the total ``nbytes`` of its values.

    Args:
        max_bytes: budget; values larger than it are returned but not kept.
        size: function giving a value's size in bytes (default: ``value.nbytes``).
    """

    def __init__(self, max_bytes: int, size: Callable[[Any], int] | None = None):
        self.max_bytes = int(max_bytes)
        self._size = size or (lambda v: int(v.nbytes))
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``make()`` (then cached if it fits the budget)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key][0]
            self.misses += 1
        value = make()  # outside the lock: may be slow, may run twice for one key (harmless)
        n = self._size(value)
        with self._lock:
            if n <= self.max_bytes and key not in self._data:
                self._data[key] = (value, n)
                self._bytes += n
                while self._bytes > self.max_bytes:
                    _, (_, m) = self._data.popitem(last=False)
                    self._bytes -= m
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = 0


#: Test depth images (uint16 as stored), at most 512 MiB.
DEPTH_IMAGES = ByteLRU(512 << 20)
#: GT renders for VSD (:class:`bopkd.eval.raster.DepthCrop`), at most 256 MiB.
GT_RENDERS = ByteLRU(256 << 20, size=lambda c: int(c.depth.nbytes) + 64)
