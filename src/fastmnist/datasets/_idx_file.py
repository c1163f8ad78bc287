"""Read IDX files, raw or gzip-compressed, and refuse malformed ones with a clear error.

The IDX format (LeCun et al.) is a 4-byte magic -- two zero bytes, a dtype code and the
number of dimensions -- then one big-endian uint32 per dimension, then the items in
C order, big-endian. This module opens the file and validates the header *before* it
allocates anything; the payload is then read straight into the output array: by
``readinto`` for raw files, by the Cython ``GzipStream`` (GIL released) for gzip files.
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, NoReturn

import numpy as np

from . import _idx

__all__ = ["IDXFormatError", "load_idx"]

# IDX dtype code -> NumPy dtype, as stored in the file (big-endian).
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"

# DEFLATE cannot expand data by more than about 1032:1, so a header that claims more
# payload than that is a lie we can catch before allocating (think 10**12 images).
MAX_DEFLATE_RATIO = 1032

# How many trailing bytes to count before giving up and saying "at least".
_TRAILING_COUNT_LIMIT = 1 << 20


class IDXFormatError(ValueError):
    """An IDX file is malformed: bad magic, wrong sizes, truncated or corrupt data.

    Attributes
    ----------
    path : str
        The file, as given (or the ``repr`` of a file object).
    field : str
        The part of the file that is wrong: ``"magic"``, ``"dtype code"``, ``"ndim"``,
        ``"dimensions"``, ``"payload"``, ``"trailing bytes"`` or ``"gzip stream"``.
    expected, found : str
        What the format requires there, and what the file holds.
    """

    def __init__(self, path: str, field: str, expected: object, found: object) -> None:
        self.path, self.field, self.expected, self.found = path, field, expected, found
        super().__init__(f"{path}: invalid IDX {field}: expected {expected}, found {found}")

    def __reduce__(self):
        return type(self), (self.path, self.field, self.expected, self.found)


def load_idx(source: str | os.PathLike | BinaryIO) -> np.ndarray:
    """Load an IDX file into a NumPy array.

    Parameters
    ----------
    source : str, path-like or binary file object
        The file. Gzip compression is detected from the content, not the file name.

    Returns
    -------
    array : ndarray
        The items, in the file's dtype (uint8, int8, int16, int32, float32 or float64) in
        native byte order, with the shape the header gives.

    Raises
    ------
    IDXFormatError
        If the header is malformed, the payload is shorter or longer than the header
        claims, or the gzip stream is corrupt or truncated. The message names the file,
        the field and the expected and found values.

    Examples
    --------
    >>> import io, numpy as np
    >>> from fastmnist import load_idx
    >>> raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    >>> load_idx(io.BytesIO(raw))
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    array, _ = read_idx(source)
    return array


def read_idx(source: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, bytes]:
    """Like :func:`load_idx`, but also return the raw header bytes (for checksums)."""
    with _open_payload(source) as payload:
        magic = payload.read_exact(4, "magic")
        if magic[:2] != b"\0\0":
            payload.fail("magic", "two zero bytes then dtype code and ndim", magic.hex(" "))
        code, ndim = magic[2], magic[3]
        if code not in IDX_DTYPES:
            codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            payload.fail("dtype code", f"one of {codes}", f"0x{code:02X}")
        if ndim == 0:
            payload.fail("ndim", "at least 1", 0)
        dims_bytes = payload.read_exact(4 * ndim, "dimensions")
        shape = struct.unpack(f">{ndim}I", dims_bytes)
        file_dtype = IDX_DTYPES[code]
        n_bytes = math.prod(shape) * file_dtype.itemsize  # Python int: cannot overflow
        payload.check_plausible(n_bytes, shape)

        array = np.empty(shape, dtype=file_dtype.newbyteorder("="))
        n_read = payload.read_into(array.reshape(-1).view(np.uint8))
        if n_read < n_bytes:
            payload.fail("payload", f"{n_bytes} bytes for shape {shape}", f"only {n_read}")
        payload.check_at_end()

    if sys.byteorder == "little" and file_dtype.itemsize > 1:
        array.byteswap(inplace=True)
    return array, magic + dims_bytes


class _Payload:
    """What ``read_idx`` needs from a source: sized reads and a few checks."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, field: str, expected: object, found: object) -> NoReturn:
        raise IDXFormatError(self.name, field, expected, found)

    def read_exact(self, n: int, field: str) -> bytes:
        buf = bytearray(n)
        got = self.read_into(memoryview(buf))
        if got < n:
            self.fail(field, f"{n} header bytes", f"end of file after {got}")
        return bytes(buf)

    def read_into(self, buf) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_plausible(self, n_bytes: int, shape: tuple[int, ...]) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def check_at_end(self) -> None:
        scratch = memoryview(bytearray(64 * 1024))
        extra = 0
        while extra < _TRAILING_COUNT_LIMIT:
            got = self.read_into(scratch)
            if got == 0:
                break
            extra += got
        if extra:
            at_least = "at least " if extra >= _TRAILING_COUNT_LIMIT else ""
            self.fail("trailing bytes", "end of file after the payload", f"{at_least}{extra}")


class _RawPayload(_Payload):
    """An uncompressed file: the payload is read straight into the array."""

    def __init__(self, name: str, file: BinaryIO) -> None:
        super().__init__(name)
        self.file = file
        start = file.tell()
        self.size = file.seek(0, io.SEEK_END) - start
        file.seek(start)

    def read_into(self, buf) -> int:
        view, total = memoryview(buf), 0
        while total < len(view):
            got = self.file.readinto(view[total:])
            if not got:
                break
            total += got
        return total

    def check_plausible(self, n_bytes: int, shape: tuple[int, ...]) -> None:
        # The exact payload length is known: compare before allocating anything.
        remaining = self.size - self.file.tell()
        if remaining < n_bytes:
            self.fail("payload", f"{n_bytes} bytes for shape {shape}", f"only {remaining}")
        if remaining > n_bytes:
            self.fail("trailing bytes", "end of file after the payload", remaining - n_bytes)


class _GzipPayload(_Payload):
    """A gzip file, inflated by the Cython ``GzipStream`` without the GIL."""

    def __init__(self, name: str, compressed: bytes) -> None:
        super().__init__(name)
        self.compressed_size = len(compressed)
        self.stream = _idx.GzipStream(compressed)

    def read_into(self, buf) -> int:
        written, status, message = self.stream.read_into(buf)
        if status == _idx.Status.STATUS_TRUNCATED:
            self.fail("gzip stream", "a complete gzip stream", "it ends early (truncated file)")
        if status == _idx.Status.STATUS_CORRUPT:
            self.fail("gzip stream", "valid gzip data", f"corrupt data ({message})")
        if status == _idx.Status.STATUS_NO_MEMORY:
            raise MemoryError(f"{self.name}: zlib ran out of memory while inflating")
        return written

    def check_plausible(self, n_bytes: int, shape: tuple[int, ...]) -> None:
        most = MAX_DEFLATE_RATIO * self.compressed_size
        if n_bytes > most:
            self.fail(
                "dimensions",
                f"a payload a {self.compressed_size}-byte gzip file can hold (<= {most} bytes)",
                f"shape {shape}, {n_bytes} bytes",
            )


@contextmanager
def _open_payload(source: str | os.PathLike | BinaryIO) -> Iterator[_Payload]:
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        with open(name, "rb") as file:
            yield _payload_for(name, file)
    elif hasattr(source, "read"):
        yield _payload_for(getattr(source, "name", repr(source)), source)
    else:
        raise TypeError(
            f"load_idx expects a path or a binary file object, got {type(source).__name__}"
        )


def _payload_for(name: str, file: BinaryIO) -> _Payload:
    if not file.seekable():
        file = io.BytesIO(file.read())
    start = file.tell()
    head = file.read(2)
    file.seek(start)
    if not isinstance(head, bytes):
        raise TypeError(f"{name}: load_idx needs a file opened in binary mode")
    if head == GZIP_MAGIC:
        # The whole compressed file is small next to the array it inflates to; holding it
        # lets zlib run over one buffer with the GIL released.
        return _GzipPayload(name, file.read())
    return _RawPayload(name, file)
