"""Seeded shuffling and minibatch gathering, in C loops without the GIL.

``shuffle`` is a Fisher-Yates shuffle driven by our own SplitMix64 generator, so a seed
gives the same permutation on every platform and NumPy version. ``gather_batch`` copies the
rows an index selects into a caller-owned float32 buffer, converting and scaling on the way,
so a training loop allocates nothing per batch and a uint8 training set stays uint8.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t, uint64_t

import numpy as np

cimport openmp

ctypedef fused pixel_t:
    uint8_t
    float

cdef extern from *:
    void __builtin_prefetch(const void *address) nogil  # GCC and Clang builtin

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


cdef void gather_rows(
    const pixel_t *X, Py_ssize_t n_cols, const int64_t *index, Py_ssize_t n_rows,
    float *out, float divisor, const float *mean, const float *std,
    const int64_t *y, int64_t *y_out, int n_threads,
) noexcept nogil:
    # X (n, n_cols), index (n_rows,) -> out (n_rows, n_cols), y_out (n_rows,)
    # mean/std and y/y_out are optional (NULL). Indices were checked by the caller.
    cdef Py_ssize_t i, j
    cdef const pixel_t *src
    cdef float *dst
    if n_rows * n_cols < PARALLEL_MIN_ELEMENTS:
        n_threads = 1
    # Each thread owns whole output rows: no two threads ever write the same memory.
    for i in prange(n_rows, schedule="static", num_threads=n_threads):
        src = X + index[i] * n_cols
        dst = out + i * n_cols
        if i + 1 < n_rows:
            # Rows come in shuffled order, so the hardware cannot guess the next one: ask
            # for it now, and its cache misses overlap with this row's arithmetic.
            for j in range(0, n_cols * <Py_ssize_t>sizeof(pixel_t), 64):
                __builtin_prefetch(<const char *>(X + index[i + 1] * n_cols) + j)
        if mean != NULL:
            for j in range(n_cols):
                dst[j] = ((<float>src[j]) / divisor - mean[j]) / std[j]
        else:
            for j in range(n_cols):
                dst[j] = (<float>src[j]) / divisor
        if y != NULL:
            y_out[i] = y[index[i]]


cdef Py_ssize_t first_out_of_range(const int64_t[::1] index, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(index.shape[0]):
        if index[i] < 0 or index[i] >= n:
            return i
    return -1


cdef int check_shapes(
    Py_ssize_t n_samples, Py_ssize_t n_cols, Py_ssize_t n_rows, const float[:, ::1] out,
    const float[::1] mean, const float[::1] std, const int64_t[::1] y, int64_t[::1] y_out,
) except -1:
    if n_cols == 0:
        raise ValueError("X has no columns")
    if out.shape[1] != n_cols:
        raise ValueError(f"out has {out.shape[1]} columns, X has {n_cols}")
    if out.shape[0] < n_rows:
        raise ValueError(f"out has room for {out.shape[0]} rows, index selects {n_rows}")
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if mean is not None and (mean.shape[0] != n_cols or std.shape[0] != n_cols):
        raise ValueError(f"mean and std must have {n_cols} entries, one per column of X")
    if (y is None) != (y_out is None):
        raise ValueError("y and y_out must be given together")
    if y is not None and (y.shape[0] != n_samples or y_out.shape[0] < n_rows):
        raise ValueError(
            f"y has {y.shape[0]} labels for {n_samples} rows; y_out has room for "
            f"{y_out.shape[0]}, index selects {n_rows}"
        )
    return 0


cdef inline const float *ptr_or_null(const float[::1] a) noexcept:
    return NULL if a is None else &a[0]


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
    cdef Py_ssize_t n_rows = index.shape[0], bad
    check_shapes(X.shape[0], X.shape[1], n_rows, out, mean, std, y, y_out)
    bad = first_out_of_range(index, X.shape[0])
    if bad >= 0:
        raise IndexError(f"index[{bad}] = {index[bad]} is out of range for {X.shape[0]} rows")
    if n_rows == 0:
        return 0
    if n_threads < 1:
        n_threads = openmp.omp_get_max_threads()
    cdef const float *mean_ptr = ptr_or_null(mean)
    cdef const float *std_ptr = ptr_or_null(std)
    cdef const int64_t *y_ptr = NULL if y is None else &y[0]
    cdef int64_t *y_out_ptr = NULL if y is None else &y_out[0]
    with nogil:
        gather_rows(&X[0, 0], X.shape[1], &index[0], n_rows, &out[0, 0], divisor,
                    mean_ptr, std_ptr, y_ptr, y_out_ptr, n_threads)
    return n_rows


cdef class EpochGatherer:
    """The batches of one epoch, gathered with every buffer acquired once.

    ``gather(start, stop)`` writes the rows ``order[start:stop]`` selects into ``out``
    (and their labels into ``y_out``): a call with two integers, so that even batches of
    32 images cost little more than the copy itself.
    """

    cdef object X_array                  # keeps the memory behind X_data alive
    cdef const void *X_data
    cdef bint X_is_uint8
    cdef Py_ssize_t n_cols
    cdef const int64_t[::1] order
    cdef float[:, ::1] out
    cdef float divisor
    cdef const float *mean
    cdef const float *std
    cdef const float[::1] mean_view, std_view
    cdef const int64_t[::1] y
    cdef int64_t[::1] y_out
    cdef int n_threads

    def __cinit__(self, X not None, const int64_t[::1] order not None,
                  float[:, ::1] out not None, float divisor=1.0,
                  const float[::1] mean=None, const float[::1] std=None,
                  const int64_t[::1] y=None, int64_t[::1] y_out=None, int n_threads=-1):
        cdef const uint8_t[:, ::1] X8
        cdef const float[:, ::1] X32
        cdef Py_ssize_t bad
        if X.dtype == np.uint8:
            X8 = X
            self.X_is_uint8, self.n_cols = True, X8.shape[1]
        else:
            X32 = X
            self.X_is_uint8, self.n_cols = False, X32.shape[1]
        check_shapes(X.shape[0], self.n_cols, out.shape[0], out, mean, std, y, y_out)
        bad = first_out_of_range(order, X.shape[0])
        if bad >= 0:
            raise IndexError(f"order[{bad}] = {order[bad]} is out of range for {X.shape[0]} rows")
        self.X_array = X
        self.X_data = NULL if X.shape[0] == 0 else (
            <const void *>&X8[0, 0] if self.X_is_uint8 else <const void *>&X32[0, 0])
        self.order, self.out, self.divisor = order, out, divisor
        self.mean_view, self.std_view = mean, std
        self.mean, self.std = ptr_or_null(mean), ptr_or_null(std)
        self.y, self.y_out = y, y_out
        self.n_threads = n_threads if n_threads >= 1 else openmp.omp_get_max_threads()

    def gather(self, Py_ssize_t start, Py_ssize_t stop):
        """Gather ``order[start:stop]``; return the number of rows written."""
        stop = min(stop, self.order.shape[0])
        cdef Py_ssize_t k = stop - start
        if start < 0 or k < 0 or k > self.out.shape[0]:
            raise ValueError(f"cannot gather order[{start}:{stop}] into {self.out.shape[0]} rows")
        if k == 0:
            return 0
        cdef const int64_t *y = NULL if self.y is None else &self.y[0]
        cdef int64_t *y_out = NULL if self.y is None else &self.y_out[0]
        with nogil:
            if self.X_is_uint8:
                gather_rows(<const uint8_t *>self.X_data, self.n_cols, &self.order[start], k,
                            &self.out[0, 0], self.divisor, self.mean, self.std, y, y_out,
                            self.n_threads)
            else:
                gather_rows(<const float *>self.X_data, self.n_cols, &self.order[start], k,
                            &self.out[0, 0], self.divisor, self.mean, self.std, y, y_out,
                            self.n_threads)
        return k
