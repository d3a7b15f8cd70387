"""Fixtures of the loss tests: every test runs with one torch thread (:func:`tests.learning_data.one_cpu_thread`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_cpu_thread):
    yield
