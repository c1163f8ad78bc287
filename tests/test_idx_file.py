import gzip
import importlib.machinery
import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from naive import IDX_CODES, gzip_bytes, idx_bytes

from fastmnist import IDXFormatError, load_idx
from fastmnist.datasets import _idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def extreme_values(dtype):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
    return np.array([-1.5e30 if dtype == np.float32 else -1e300, np.pi, -0.0, np.inf, 7.25],
                    dtype=dtype)


def test_extension_is_compiled():
    # fastmnist has no pure-Python fallback: prove the loader runs the compiled module.
    assert _idx.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_round_trip_every_dtype(tmp_path, dtype, compress):
    array = extreme_values(dtype).repeat(6).reshape(5, 3, 2)
    data = idx_bytes(array)
    path = write(tmp_path, "a.idx", gzip_bytes(data) if compress else data)
    loaded = load_idx(path)
    assert loaded.dtype == np.dtype(dtype)  # native byte order
    assert loaded.dtype.isnative
    assert loaded.shape == (5, 3, 2)
    np.testing.assert_array_equal(loaded, array)


def test_big_endian_decoding_by_hand():
    # int16 0x0102 = 258 and 0xFFFE = -2, float32 0x3FC00000 = 1.5, written big-endian.
    raw16 = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    assert load_idx(io.BytesIO(raw16)).tolist() == [258, -2]
    raw32 = bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0])
    assert load_idx(io.BytesIO(raw32)).tolist() == [1.5]


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 1, 1, 1), (2, 1, 3, 1, 2), (0,), (3, 0, 2)])
def test_any_number_of_dimensions(shape):
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    for data in (idx_bytes(array), gzip_bytes(idx_bytes(array))):
        np.testing.assert_array_equal(load_idx(io.BytesIO(data)), array)
        assert load_idx(io.BytesIO(data)).shape == shape


def test_file_object_and_path_agree(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    path = write(tmp_path, "x.gz", gzip_bytes(idx_bytes(array)))
    with open(path, "rb") as f:
        from_file = load_idx(f)
    np.testing.assert_array_equal(from_file, load_idx(str(path)))
    np.testing.assert_array_equal(from_file, array)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    path = write(tmp_path, "looks-raw-idx1-ubyte", gzip_bytes(idx_bytes(array)))
    np.testing.assert_array_equal(load_idx(path), array)


def test_concatenated_gzip_members_read_as_one_stream():
    data = idx_bytes(np.arange(1000, dtype=np.int16))
    two_members = gzip_bytes(data[:777]) + gzip_bytes(data[777:])
    np.testing.assert_array_equal(load_idx(io.BytesIO(two_members)), np.arange(1000))


@settings(max_examples=40, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in DTYPES]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    compress=st.booleans(),
)
def test_round_trip_property(array, compress):
    data = idx_bytes(array)
    loaded = load_idx(io.BytesIO(gzip_bytes(data) if compress else data))
    np.testing.assert_array_equal(loaded, array)  # NaNs compare equal here
    assert loaded.dtype == array.dtype.newbyteorder("=")


def test_real_mnist_matches_plain_numpy_reference(shared_data):
    path = shared_data / "mnist" / "train-images-idx3-ubyte.gz"
    reference = np.frombuffer(gzip.open(path).read()[16:], np.uint8)
    images = load_idx(path)
    assert images.shape == (60000, 28, 28)
    np.testing.assert_array_equal(images.reshape(-1), reference)
    labels = load_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    assert labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]


# --- malformed files: each names the file, the field, expected and found ---------------

GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


def header(code=0x08, dims=(2, 3, 4), zeros=b"\0\0"):
    return zeros + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


BAD_FILES = {
    "magic": (b"\x01\x00" + GOOD[2:], "magic", "01 00 08 03"),
    "dtype code": (header(code=0x0A) + GOOD[16:], "dtype code", "0x0A"),
    "ndim zero": (b"\0\0\x08\0" + GOOD[16:], "ndim", "0"),
    "empty file": (b"", "magic", "end of file after 0"),
    "header cut": (GOOD[:3], "magic", "end of file after 3"),
    "dims cut": (GOOD[:10], "dimensions", "end of file after 6"),
    "payload cut": (GOOD[:-5], "payload", "only 19"),
    "trailing bytes": (GOOD + b"xyz", "trailing bytes", "3"),
    "absurd size": (header(dims=(10**6, 10**6)) + b"\0" * 8, "payload", "only 8"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_header_and_payload(tmp_path, case, compress):
    data, field, found = BAD_FILES[case]
    if compress and case == "absurd size":
        # 10**12 claimed bytes cannot come out of an 8-byte deflate payload.
        field, found = "dimensions", "1000000000000 bytes"
    path = write(tmp_path, f"bad-{case}", gzip_bytes(data) if compress else data)
    with pytest.raises(IDXFormatError) as info:
        load_idx(path)
    error = info.value
    assert error.field == field
    assert found in str(error.found)
    message = str(error)
    assert str(path) in message and field in message and "expected" in message


def test_error_message_reads_well(tmp_path):
    path = write(tmp_path, "cut.idx", GOOD[:-5])
    with pytest.raises(IDXFormatError, match=r"cut\.idx: invalid IDX payload: expected "
                                             r"24 bytes for shape \(2, 3, 4\), found only 19"):
        load_idx(path)


def test_idx_format_error_is_a_value_error_and_pickles():
    import pickle

    error = IDXFormatError("f.idx", "magic", "a", "b")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.field, str(clone)) == ("f.idx", "magic", str(error))


def test_absurd_gzip_header_is_refused_before_allocating():
    # 2**32-1 cubed items: numpy could not even allocate it; the check runs first.
    data = gzip_bytes(header(dims=(2**32 - 1,) * 3) + b"\0" * 100)
    with pytest.raises(IDXFormatError, match="dimensions"):
        load_idx(io.BytesIO(data))


def test_truncated_gzip_stream(tmp_path):
    compressed = gzip_bytes(idx_bytes(np.arange(5000, dtype=np.int32)))
    for cut in (len(compressed) // 2, len(compressed) - 4, 12):
        with pytest.raises(IDXFormatError, match="ends early") as info:
            load_idx(io.BytesIO(compressed[:cut]))
        assert info.value.field == "gzip stream"


def test_corrupt_gzip_stream():
    compressed = bytearray(gzip_bytes(idx_bytes(np.arange(5000, dtype=np.int32))))
    compressed[len(compressed) // 2] ^= 0xFF
    with pytest.raises(IDXFormatError, match="corrupt data") as info:
        load_idx(io.BytesIO(bytes(compressed)))
    assert info.value.field == "gzip stream"


def test_wrong_crc_is_corrupt():
    compressed = bytearray(gzip_bytes(GOOD))
    compressed[-8] ^= 0x01  # the CRC-32 in the gzip trailer
    with pytest.raises(IDXFormatError, match="incorrect data check"):
        load_idx(io.BytesIO(bytes(compressed)))


def test_garbage_after_gzip_member_is_corrupt():
    with pytest.raises(IDXFormatError, match="gzip stream"):
        load_idx(io.BytesIO(gzip_bytes(GOOD) + b"garbage!"))


def test_not_gzip_after_gzip_magic():
    with pytest.raises(IDXFormatError, match="corrupt data"):
        load_idx(io.BytesIO(b"\x1f\x8b" + b"\xff" * 40))


def test_wrong_source_types(tmp_path):
    with pytest.raises(TypeError, match="path or a binary file"):
        load_idx(42)
    path = write(tmp_path, "good.idx", GOOD)
    with open(path, encoding="latin-1") as text_file, pytest.raises(TypeError, match="binary"):
        load_idx(text_file)
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "missing.idx")


def test_all_idx_codes_covered():
    assert sorted(IDX_CODES.values()) == [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


def test_inflate_releases_the_gil():
    # 256 MB of zeros inflate in ~0.1-0.3 s in one read_into call. A thread that records
    # the time every ~1 ms can only keep ticking during that call if the GIL is released;
    # holding it would leave one gap as long as the whole inflate.
    import threading
    import time
    import zlib

    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    compressed = b"".join(compressor.compress(chunk) for _ in range(256)) + compressor.flush()
    out = np.empty(256 << 20, np.uint8)
    ticks, done = [], threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    time.sleep(0.02)
    start = time.perf_counter()
    written, status, _ = _idx.GzipStream(compressed).read_into(out)
    end = time.perf_counter()
    done.set()
    thread.join()
    assert (written, status) == (256 << 20, _idx.Status.STATUS_OK)
    during = [t for t in ticks if start <= t <= end]
    gaps = np.diff([start, *during, end])
    assert end - start > 0.05  # long enough for the check to mean something
    assert gaps.max() < (end - start) / 2, (gaps.max(), end - start)
