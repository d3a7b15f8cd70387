"""The byte-bounded in-process caches of scoring."""

from __future__ import annotations

import numpy as np

from bopkd.eval.lru import ByteLRU


def test_evicts_least_recently_used_by_bytes():
    c = ByteLRU(max_bytes=3 * 800)
    made = []

    def make(k):
        made.append(k)
        return np.zeros(100)  # 800 bytes

    for k in "abc":
        c.get(k, lambda k=k: make(k))
    c.get("a", lambda: make("a"))  # hit: "a" becomes the most recent
    c.get("d", lambda: make("d"))  # evicts "b"
    assert made == ["a", "b", "c", "d"] and len(c) == 3 and c.nbytes == 2400
    c.get("b", lambda: make("b"))
    assert made[-1] == "b" and c.hits == 1
    c.get("a", lambda: make("a"))
    assert made[-1] == "b"  # "a" was still cached


def test_values_over_budget_are_returned_not_kept():
    c = ByteLRU(max_bytes=10)
    v = c.get("big", lambda: np.zeros(10))
    assert v.shape == (10,) and len(c) == 0
    c.clear()
    assert c.hits == c.misses == 0
