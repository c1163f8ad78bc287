"""Inflate a gzip stream straight into a caller's buffer, with the GIL released.

This is the tight loop of the IDX loader. Python (``_idx_format.py``) opens the file, parses
and validates the header and allocates the output array; this module only decompresses into
that array, in place, without an intermediate ``bytes`` object, and reports what went wrong
as a status code that ``_idx_format.py`` turns into an ``IDXFormatError``.
"""

from libc.limits cimport UINT_MAX
from libc.string cimport memset

cdef extern from "zlib.h" nogil:
    ctypedef unsigned char Bytef
    ctypedef unsigned int uInt
    ctypedef struct z_stream:
        const Bytef *next_in
        uInt avail_in
        Bytef *next_out
        uInt avail_out
        const char *msg
    int inflateInit2(z_stream *strm, int windowBits)
    int inflate(z_stream *strm, int flush)
    int inflateReset(z_stream *strm)
    int inflateEnd(z_stream *strm)
    int Z_OK, Z_STREAM_END, Z_NEED_DICT, Z_BUF_ERROR, Z_DATA_ERROR, Z_STREAM_ERROR
    int Z_MEM_ERROR, Z_NO_FLUSH, MAX_WBITS

# Status codes returned by GzipStream.read_into; _idx_file.py turns them into exceptions.
cpdef enum Status:
    STATUS_OK = 0
    STATUS_TRUNCATED = 1   # the compressed input ended before the gzip stream did
    STATUS_CORRUPT = 2     # zlib rejected the data (bad header, bad CRC, bad deflate block)
    STATUS_NO_MEMORY = 3   # zlib could not allocate its window

# 16 + MAX_WBITS: expect a gzip wrapper and check its CRC-32 and length trailer.
cdef int GZIP_WINDOW_BITS = 16 + MAX_WBITS


cdef class GzipStream:
    """A gzip stream over an in-memory buffer of compressed bytes.

    Concatenated gzip members (as ``cat a.gz b.gz`` makes) read as one stream, as they do
    with Python's ``gzip`` module.
    """

    cdef z_stream strm
    cdef const unsigned char[::1] src    # keeps the compressed bytes alive
    cdef Py_ssize_t fed                  # how many input bytes were handed to zlib so far
    cdef bint initialised
    cdef readonly bint finished          # the last member ended exactly at the end of input

    def __cinit__(self, const unsigned char[::1] src not None):
        memset(&self.strm, 0, sizeof(z_stream))
        self.src = src
        self.fed = 0
        self.finished = False
        if inflateInit2(&self.strm, GZIP_WINDOW_BITS) != Z_OK:
            raise MemoryError("zlib could not initialise an inflate stream")
        self.initialised = True

    def __dealloc__(self):
        if self.initialised:
            inflateEnd(&self.strm)

    def read_into(self, unsigned char[::1] out not None):
        """Decompress up to ``len(out)`` bytes into ``out``.

        Returns ``(n_written, status, zlib_message)``; fewer bytes than asked with
        ``STATUS_OK`` means the stream ended.
        """
        cdef Py_ssize_t written = 0
        cdef Status status = STATUS_OK
        if out.shape[0] > 0:
            with nogil:
                status = self._inflate(&out[0], out.shape[0], &written)
        message = None
        if status == STATUS_CORRUPT and self.strm.msg != NULL:
            message = (<bytes>self.strm.msg).decode("ascii", "replace")
        return written, status, message

    cdef void _feed(self) noexcept nogil:
        # zlib counts input in unsigned ints: hand over at most UINT_MAX bytes at a time.
        cdef Py_ssize_t left = self.src.shape[0] - self.fed
        if self.strm.avail_in == 0 and left > 0:
            self.strm.next_in = &self.src[self.fed]
            self.strm.avail_in = <uInt>(left if left < UINT_MAX else UINT_MAX)
            self.fed += self.strm.avail_in

    cdef Status _inflate(self, unsigned char *out, Py_ssize_t size,
                      Py_ssize_t *written) noexcept nogil:
        cdef Py_ssize_t done = 0, chunk
        cdef int rc
        cdef Status status = STATUS_OK
        while done < size and not self.finished:
            self._feed()
            chunk = size - done
            if chunk > UINT_MAX:
                chunk = UINT_MAX
            self.strm.next_out = out + done
            self.strm.avail_out = <uInt>chunk
            rc = inflate(&self.strm, Z_NO_FLUSH)
            done += chunk - self.strm.avail_out
            if rc == Z_STREAM_END:
                self._feed()
                if self.strm.avail_in == 0:
                    self.finished = True
                else:
                    inflateReset(&self.strm)  # another gzip member follows
            elif rc == Z_OK:
                continue
            elif rc == Z_BUF_ERROR:
                # No progress was possible: zlib wants more input and there is none.
                status = STATUS_TRUNCATED
                break
            elif rc == Z_MEM_ERROR:
                status = STATUS_NO_MEMORY
                break
            else:  # Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR
                status = STATUS_CORRUPT
                break
        written[0] = done
        return status
