# The I/O kernels that other compiled modules call directly.
from libc.stdint cimport int64_t, uint8_t

cdef Py_ssize_t willneed_spans(const uint8_t* base, int64_t size, int64_t* spans,
                               Py_ssize_t m, int64_t gap) noexcept nogil
cdef bint spans_resident(const uint8_t* base, int64_t size, const int64_t* spans,
                         Py_ssize_t m, Py_ssize_t sample) noexcept nogil
