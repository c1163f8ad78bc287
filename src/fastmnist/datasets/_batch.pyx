"""Seeded shuffling and minibatch gathering, in C loops without the GIL.

``shuffle`` is a Fisher-Yates shuffle driven by our own SplitMix64 generator, so a seed
gives the same permutation on every platform and NumPy version. ``gather_batch`` copies the
rows an index selects into a caller-owned float32 buffer, converting and scaling on the way,
so a training loop allocates nothing per batch and a uint8 training set stays uint8.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t, uint64_t

cimport openmp

ctypedef fused pixel_t:
    uint8_t
    float

# Below this many elements a batch is copied on one thread: waking a team of threads
# costs more than the copy itself.
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 1 << 16


cdef inline uint64_t splitmix64(uint64_t *state) noexcept nogil:
    # Steele, Lea and Flood (2014): a full-period 64-bit generator that passes BigCrush.
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline uint64_t uniform_below(uint64_t *state, uint64_t n) noexcept nogil:
    # Reject the lowest (2**64 mod n) values so that r % n is exactly uniform.
    cdef uint64_t threshold = (-n) % n
    cdef uint64_t r = splitmix64(state)
    while r < threshold:
        r = splitmix64(state)
    return r % n


def shuffle(int64_t[::1] values not None, uint64_t seed):
    """Shuffle ``values`` in place, reproducibly: the same seed gives the same order."""
    cdef uint64_t state = seed
    cdef Py_ssize_t i, j
    cdef int64_t tmp
    with nogil:
        for i in range(values.shape[0] - 1, 0, -1):
            j = <Py_ssize_t>uniform_below(&state, <uint64_t>(i + 1))
            tmp = values[i]
            values[i] = values[j]
            values[j] = tmp


def _splitmix64_py(uint64_t seed, Py_ssize_t n):
    """The first ``n`` outputs of the generator for ``seed`` (a hook for the tests)."""
    cdef uint64_t state = seed
    return [splitmix64(&state) for _ in range(n)]


def gather_batch(
    const pixel_t[:, ::1] X not None,
    const int64_t[::1] index not None,
    float[:, ::1] out not None,
    float divisor=1.0,
    const float[::1] mean=None,
    const float[::1] std=None,
    const int64_t[::1] y=None,
    int64_t[::1] y_out=None,
    int n_threads=-1,
):
    """Write ``X[index] / divisor`` (then ``(. - mean) / std``) into ``out[:len(index)]``.

    Bit for bit the same as NumPy's ``X[index].astype(np.float32) / np.float32(divisor)``
    (then ``- mean``, ``/ std``) in float32. With ``y``/``y_out``, also writes
    ``y_out[:len(index)] = y[index]``. Returns the number of rows written, which is less
    than ``len(out)`` for the final partial batch of an epoch.
    """
    cdef Py_ssize_t n_rows = index.shape[0], n_cols = X.shape[1]
    cdef Py_ssize_t i, j, row, bad = -1
    cdef bint standardise = mean is not None, with_labels = y is not None

    if out.shape[1] != n_cols:
        raise ValueError(f"out has {out.shape[1]} columns, X has {n_cols}")
    if out.shape[0] < n_rows:
        raise ValueError(f"out has room for {out.shape[0]} rows, index selects {n_rows}")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if standardise and (mean.shape[0] != n_cols or std.shape[0] != n_cols):
        raise ValueError(f"mean and std must have {n_cols} entries, one per column of X")
    if (y is None) != (y_out is None):
        raise ValueError("y and y_out must be given together")
    if y is not None and (y.shape[0] != X.shape[0] or y_out.shape[0] < n_rows):
        raise ValueError(
            f"y has {y.shape[0]} labels for {X.shape[0]} rows; y_out has room for "
            f"{y_out.shape[0]}, index selects {n_rows}"
        )
    with nogil:
        for i in range(n_rows):
            if index[i] < 0 or index[i] >= X.shape[0]:
                bad = i
                break
    if bad >= 0:
        raise IndexError(f"index[{bad}] = {index[bad]} is out of range for {X.shape[0]} rows")

    if n_threads < 1:
        n_threads = openmp.omp_get_max_threads()
    if n_rows * n_cols < PARALLEL_MIN_ELEMENTS:
        n_threads = 1
    # Each thread owns whole output rows: no two threads ever write the same memory.
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        row = index[i]
        if standardise:
            for j in range(n_cols):
                out[i, j] = ((<float>X[row, j]) / divisor - mean[j]) / std[j]
        else:
            for j in range(n_cols):
                out[i, j] = (<float>X[row, j]) / divisor
        if with_labels:
            y_out[i] = y[row]
    return n_rows
