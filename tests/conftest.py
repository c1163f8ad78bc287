import pytest


@pytest.fixture
def isolated_homes(monkeypatch, tmp_path):
    """No data home but the ones a test makes: no env variable, HOME in tmp_path."""
    monkeypatch.delenv("FASTMNIST_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path
