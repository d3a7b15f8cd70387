"""Shared test fixtures.

The real LM-O sample and the scoring oracle live in ``../shared/fixtures`` next to the repository on the
project's machines; a user's clone has no such folder, and the tests that need it skip with that reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.learning_data import learned_run, make_cfg, one_cpu_thread, synth_root  # noqa: F401  (registered once)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
SKIP_REASON = "needs ../shared/fixtures next to the repository (present on the project's machines, not in a user's clone)"


def fixture_dir(name: str) -> Path:
    p = FIXTURES / name
    if not p.is_dir():
        pytest.skip(SKIP_REASON)
    return p


@pytest.fixture(scope="session")
def lmo_sample_root() -> Path:
    """Root folder holding the real LM-O sample as ``lmo/`` (use as ``--root``)."""
    return fixture_dir("lmo_sample")


@pytest.fixture(scope="session")
def oracle_root() -> Path:
    """Root folder of the minibop oracle (synthetic lmo with depth and official toolkit scores)."""
    return fixture_dir("minibop_oracle")
