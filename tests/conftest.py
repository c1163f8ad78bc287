import os
import subprocess
import sys

import pytest


@pytest.fixture
def isolated_homes(monkeypatch, tmp_path):
    """No data home but the ones a test makes: no env variable, HOME in tmp_path."""
    monkeypatch.delenv("FASTMNIST_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def fresh_python():
    """Run code in a new interpreter (nothing imported yet), environment variables added to
    this one's; returns what it printed, failing the test if it raised."""
    def run(code: str, **env: str) -> str:
        return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                              capture_output=True, text=True, check=True).stdout
    return run
