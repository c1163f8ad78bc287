"""Fixtures shared by the tests (tests/) and the benchmarks (bench/)."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets; FASTMNIST_DATA_HOME must point at them (CI sets it)."""
    home = os.environ.get("FASTMNIST_DATA_HOME")
    assert home, "set FASTMNIST_DATA_HOME to the folder holding mnist/ and fashion-mnist/"
    return Path(home)
