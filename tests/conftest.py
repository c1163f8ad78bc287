import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets; FASTMNIST_DATA_HOME must point at them (CI sets it)."""
    home = os.environ.get("FASTMNIST_DATA_HOME")
    assert home, "set FASTMNIST_DATA_HOME to the folder holding mnist/ and fashion-mnist/"
    return Path(home)


@pytest.fixture
def isolated_homes(monkeypatch, tmp_path):
    """No data home but the ones a test makes: no env variable, HOME in tmp_path."""
    monkeypatch.delenv("FASTMNIST_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path
