import subprocess
import sys

from fastmnist.cli import main


def test_data_summary(shared_data, capsys):
    assert main(["data", "--dataset", "mnist", "--no-download"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["dataset", "subset", "images"]
    train, test = lines[1].split(), lines[2].split()
    assert train[:3] == ["mnist", "train", "60000x28x28"]
    assert train[4:14] == "5923 6742 5958 6131 5842 5421 5918 6265 5851 5949".split()
    assert test[:3] == ["mnist", "test", "10000x28x28"]
    assert float(train[3]) == 33.32  # mean pixel of the training set, 0-255 scale


def test_installed_entry_point_and_module_agree(shared_data):
    out = subprocess.run([sys.executable, "-m", "fastmnist", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("fastmnist 0.1.0")


def test_missing_data_is_a_clear_error(isolated_homes):
    import pytest

    from fastmnist.datasets import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="not found"):
        main(["data", "--dataset", "fashion-mnist", "--no-download",
              "--data-home", str(isolated_homes / "nowhere")])
