"""Fixtures of the training tests: every test runs with one torch thread; the dataset and trained run they share with
the inference tests are in :mod:`tests.learning_data`."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_cpu_thread):
    yield
