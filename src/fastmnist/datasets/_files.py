"""Find, verify and (when allowed) download the canonical IDX files of a dataset.

Files live in ``<home>/<dataset>/<name>.gz`` (or uncompressed, ``<home>/<dataset>/<name>``)
where ``home`` is searched in order: the ``data_home`` argument, ``$FASTMNIST_DATA_HOME``,
``~/.cache/fastmnist``. Every file is checked against the SHA-256 of its canonical
*decompressed* bytes, so a raw or re-compressed copy is as good as the original.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from ._idx_file import IDXFormatError, read_idx

__all__ = ["ChecksumError", "DataNotFoundError", "fetch_idx", "get_data_home_candidates"]

DATA_HOME_ENV = "FASTMNIST_DATA_HOME"
DEFAULT_DATA_HOME = Path("~/.cache/fastmnist")

# SHA-256 of each canonical file's decompressed bytes.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
        ),
        "train-labels-idx1-ubyte": (
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
        ),
        "t10k-images-idx3-ubyte": (
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
        ),
        "t10k-labels-idx1-ubyte": (
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
        ),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
        ),
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
        ),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
        ),
    },
}

# Canonical mirrors, tried in order; each serves "<base><name>.gz". Tests point this at a
# server on 127.0.0.1 (monkeypatch), which is the only reason it is a module global.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

# Seconds a mirror may stay silent (connect or read) before we move on to the next one.
DOWNLOAD_TIMEOUT = 30.0


class ChecksumError(ValueError):
    """A data file's decompressed content does not match the canonical SHA-256."""


class DataNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded."""


def get_data_home_candidates(data_home: str | os.PathLike | None = None) -> list[Path]:
    """The data homes searched, in order: ``data_home``, ``$FASTMNIST_DATA_HOME``, the cache."""
    homes = [data_home, os.environ.get(DATA_HOME_ENV) or None, DEFAULT_DATA_HOME]
    return [Path(home).expanduser() for home in homes if home is not None]


def fetch_idx(
    dataset: str, name: str, *, data_home: str | os.PathLike | None = None, download: bool = True
) -> np.ndarray:
    """Load one canonical file of ``dataset``, verified, downloading it if allowed and missing."""
    expected = CHECKSUMS[dataset][name]
    homes = get_data_home_candidates(data_home)
    candidates = [home / dataset / f"{name}{ext}" for home in homes for ext in (".gz", "")]
    for path in candidates:
        if path.is_file():
            return _read_verified(path, expected)
    if not download:
        raise DataNotFoundError(_missing_message(dataset, name, candidates, []))
    errors = []
    array = _download(dataset, name, homes[0] / dataset, expected, errors)
    if array is None:
        raise DataNotFoundError(_missing_message(dataset, name, candidates, errors))
    return array


def _read_verified(path: Path, expected_sha256: str) -> np.ndarray:
    array, header = read_idx(path)
    digest = hashlib.sha256(header)
    # The checksum is of the file's bytes, which are big-endian.
    digest.update(array.astype(array.dtype.newbyteorder(">"), copy=False).data)
    found = digest.hexdigest()
    if found != expected_sha256:
        raise ChecksumError(
            f"{path}: SHA-256 of the decompressed content is {found}, expected "
            f"{expected_sha256}; the file is not the canonical one (delete it to download "
            f"it again, or replace it with the canonical file)"
        )
    return array


def _download(
    dataset: str, name: str, target_dir: Path, expected: str, errors: list[str]
) -> np.ndarray | None:
    """Try each mirror in turn; on success the verified file is in place and returned.

    The file is written to a temporary name in ``target_dir`` and renamed only once its
    checksum is right, so an interrupted or bad download never leaves a file that a later
    call would pick up. Failures are appended to ``errors``.
    """
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors.append(f"cannot create {target_dir}: {exc}")
        return None
    for base in MIRRORS[dataset]:
        url = f"{base}{name}.gz"
        fd, part = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                    shutil.copyfileobj(response, out)
                    announced = response.headers.get("Content-Length")
                if announced is not None and out.tell() != int(announced):
                    raise OSError(f"connection closed after {out.tell()} of {announced} bytes")
            array = _read_verified(Path(part), expected)
            os.replace(part, target_dir / f"{name}.gz")
            return array
        # URLError and timeouts are OSErrors; a connection cut mid-body is an HTTPException.
        except (OSError, http.client.HTTPException, IDXFormatError, ChecksumError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(part):
                os.unlink(part)
    return None


def _missing_message(dataset: str, name: str, looked: list[Path], errors: list[str]) -> str:
    lines = [f"{dataset} file {name!r} not found. Looked in:"]
    lines += [f"  {path}" for path in looked]
    if errors:
        lines.append("Download failed:")
        lines += [f"  {error}" for error in errors]
    else:
        lines.append("Downloading was not allowed (download=False).")
    lines.append(
        f"Put the canonical file {name}.gz (or uncompressed, {name}) in "
        f"<data home>/{dataset}/, with the data home given by the data_home argument or "
        f"${DATA_HOME_ENV}, or pass download=True on a machine with internet access."
    )
    return "\n".join(lines)
