"""Fixtures of the training tests; the dataset and trained run they share with the inference tests are
in :mod:`tests.learning_data`."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Training tests run with one torch thread (much faster on a busy shared machine); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
