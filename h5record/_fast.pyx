# cython: language_level=3
"""Compiled kernels: gather and decode rows and batches from chunked buffers.

Data in, data out. Each stored array ("paged array") is a byte buffer (a
memory map of the file, or an in-memory copy) plus a table of chunk start
addresses in that buffer (docs/FORMAT.md, section 4). No HDF5, file or
torch code lives here; the Python layer validates tables and allocates.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdint cimport int8_t, int16_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.math cimport INFINITY, NAN, ldexp
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_AsUTF8String
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF

cimport numpy as cnp
import numpy as np

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void* addr) noexcept nogil

from h5record.errors import FormatError

cnp.import_array()

# Field kinds (the Python layer maps schema types onto these).
KIND_STRING = 0
KIND_BYTES = 1
KIND_SCALAR = 2
KIND_FIXED = 3
KIND_VARIABLE = 4

# Scalar type codes, for returning Python numbers without numpy.
cdef enum ScalarCode:
    S_I1, S_I2, S_I4, S_I8, S_U1, S_U2, S_U4, S_U8, S_F2, S_F4, S_F8, S_NONE

# Rows ahead to prefetch in batch loops: enough to overlap memory latency.
cdef enum:
    PREFETCH_AHEAD = 16

cdef struct Paged:
    const uint8_t* base
    const int64_t* table      # byte address of each chunk in base, -1 if absent
    int64_t n_chunks
    int64_t chunk_len         # elements per chunk
    int64_t elem_bytes
    int64_t length            # readable elements


cdef inline int paged_ptr(const Paged* p, int64_t start, int64_t stop,
                          const uint8_t** out) noexcept nogil:
    """Point at elements [start, stop) if they lie in one chunk.

    Returns 1 (pointer set), 0 (range spans chunks: copy it instead),
    or -1 (out of bounds or damaged).
    """
    cdef int64_t c, within, addr
    if start < 0 or stop < start or stop > p.length:
        return -1
    c = start // p.chunk_len
    within = start - c * p.chunk_len
    addr = p.table[c]
    if addr < 0:
        return -1
    if stop == start or (stop - 1) // p.chunk_len == c:
        out[0] = p.base + addr + within * p.elem_bytes
        return 1
    return 0


cdef inline const uint8_t* paged_addr(const Paged* p, int64_t e) noexcept nogil:
    """Address of element e, or NULL if out of bounds or absent."""
    cdef int64_t c, addr
    if e < 0 or e >= p.length:
        return NULL
    c = e // p.chunk_len
    addr = p.table[c]
    if addr < 0:
        return NULL
    return p.base + addr + (e - c * p.chunk_len) * p.elem_bytes


cdef int paged_copy(const Paged* p, int64_t start, int64_t stop, uint8_t* out) noexcept nogil:
    """Copy elements [start, stop) into out; 0 on success, -1 if damaged."""
    cdef int64_t e = start, c, within, take, addr
    if start < 0 or stop < start or stop > p.length:
        return -1
    while e < stop:
        c = e // p.chunk_len
        within = e - c * p.chunk_len
        take = p.chunk_len - within
        if take > stop - e:
            take = stop - e
        addr = p.table[c]
        if addr < 0:
            return -1
        memcpy(out, p.base + addr + within * p.elem_bytes, take * p.elem_bytes)
        out += take * p.elem_bytes
        e += take
    return 0


cdef inline int read_bounds(const Paged* offs, int64_t row, int64_t* o0, int64_t* o1) noexcept nogil:
    """Read offsets[row] and offsets[row + 1]; -1 if damaged."""
    cdef int64_t pair[2]
    cdef const uint8_t* ptr
    cdef int r = paged_ptr(offs, row, row + 2, &ptr)
    if r == 1:
        memcpy(pair, ptr, 16)
    elif r == 0:
        if paged_copy(offs, row, row + 2, <uint8_t*>pair) < 0:
            return -1
    else:
        return -1
    if pair[0] < 0 or pair[1] < pair[0]:
        return -1
    o0[0] = pair[0]
    o1[0] = pair[1]
    return 0


cdef inline double half_to_double(uint16_t h) noexcept nogil:
    cdef uint32_t sign = (h >> 15) & 1
    cdef int exp = (h >> 10) & 0x1F
    cdef uint32_t frac = h & 0x3FF
    cdef double v
    if exp == 0:
        v = ldexp(<double>frac, -24)
    elif exp == 31:
        v = INFINITY if frac == 0 else NAN
    else:
        v = ldexp(<double>(frac | 0x400), exp - 25)
    return -v if sign else v


cdef object scalar_object(int code, const uint8_t* p):
    cdef int8_t i1
    cdef int16_t i2
    cdef int32_t i4
    cdef int64_t i8
    cdef uint16_t u2
    cdef uint32_t u4
    cdef uint64_t u8
    cdef float f4
    cdef double f8
    if code == S_I8:
        memcpy(&i8, p, 8)
        return i8
    if code == S_F8:
        memcpy(&f8, p, 8)
        return f8
    if code == S_F4:
        memcpy(&f4, p, 4)
        return <double>f4
    if code == S_I4:
        memcpy(&i4, p, 4)
        return i4
    if code == S_F2:
        memcpy(&u2, p, 2)
        return half_to_double(u2)
    if code == S_I2:
        memcpy(&i2, p, 2)
        return i2
    if code == S_I1:
        memcpy(&i1, p, 1)
        return i1
    if code == S_U1:
        return p[0]
    if code == S_U2:
        memcpy(&u2, p, 2)
        return u2
    if code == S_U4:
        memcpy(&u4, p, 4)
        return u4
    memcpy(&u8, p, 8)
    return u8


cdef int scalar_code(object dtype):
    table = {"i1": S_I1, "i2": S_I2, "i4": S_I4, "i8": S_I8, "u1": S_U1, "u2": S_U2,
             "u4": S_U4, "u8": S_U8, "f2": S_F2, "f4": S_F4, "f8": S_F8}
    return table.get(f"{dtype.kind}{dtype.itemsize}", S_NONE)


cdef class Decoder:
    """Decode rows and batches of a set of fields from paged buffers.

    Parameters
    ----------
    n_rows : int
        Number of rows.
    fields : list of dict
        One entry per field with keys ``name``, ``kind`` (a KIND_* code),
        ``dtype``, ``element_shape``, ``values`` and, for variable fields,
        ``offsets``. ``values``/``offsets`` are dicts with ``buffer`` (any
        object exporting bytes), ``table`` (int64 chunk addresses),
        ``chunk_len``, ``elem_bytes`` and ``length``. Tables must already
        be validated against the buffer sizes.
    """

    cdef readonly int64_t n_rows
    cdef readonly list names
    cdef int n_fields
    cdef Paged* values
    cdef Paged* offsets
    cdef int* kinds
    cdef int* codes
    cdef int* typenums
    cdef bint* is_var
    cdef int64_t* bounds
    cdef list keep_alive
    cdef list elem_shapes
    cdef list dtypes
    cdef uint8_t* scratch
    cdef int64_t scratch_size

    def __cinit__(self, int64_t n_rows, list fields):
        self.n_fields = len(fields)
        n = max(self.n_fields, 1)
        self.values = <Paged*>malloc(n * sizeof(Paged))
        self.offsets = <Paged*>malloc(n * sizeof(Paged))
        self.kinds = <int*>malloc(n * sizeof(int))
        self.codes = <int*>malloc(n * sizeof(int))
        self.typenums = <int*>malloc(n * sizeof(int))
        self.is_var = <bint*>malloc(n * sizeof(bint))
        self.bounds = <int64_t*>malloc(2 * n * sizeof(int64_t))
        self.scratch = NULL
        self.scratch_size = 0
        if not (self.values and self.offsets and self.kinds and self.codes and self.typenums
                and self.is_var and self.bounds):
            raise MemoryError()
        memset(self.offsets, 0, n * sizeof(Paged))

    def __init__(self, int64_t n_rows, list fields):
        self.n_rows = n_rows
        self.names = []
        self.keep_alive = []
        self.elem_shapes = []
        self.dtypes = []
        for k, spec in enumerate(fields):
            self.names.append(spec["name"])
            self.kinds[k] = spec["kind"]
            dtype = np.dtype(spec["dtype"])
            self.dtypes.append(dtype)
            self.codes[k] = scalar_code(dtype)
            self.typenums[k] = dtype.num
            self.elem_shapes.append(tuple(spec["element_shape"]))
            self._set_paged(&self.values[k], spec["values"])
            self.is_var[k] = spec["kind"] in (KIND_STRING, KIND_BYTES, KIND_VARIABLE)
            if self.is_var[k]:
                self._set_paged(&self.offsets[k], spec["offsets"])

    cdef _set_paged(self, Paged* p, dict spec):
        cdef const uint8_t[::1] buf = spec["buffer"]
        cdef const int64_t[::1] table = np.ascontiguousarray(spec["table"], dtype=np.int64)
        self.keep_alive.append(buf)
        self.keep_alive.append(table)
        p.base = &buf[0] if buf.shape[0] else NULL
        p.table = &table[0] if table.shape[0] else NULL
        p.n_chunks = table.shape[0]
        p.chunk_len = max(<int64_t>spec["chunk_len"], 1)
        p.elem_bytes = spec["elem_bytes"]
        p.length = min(<int64_t>spec["length"], p.n_chunks * p.chunk_len)

    def __dealloc__(self):
        free(self.values)
        free(self.offsets)
        free(self.kinds)
        free(self.codes)
        free(self.typenums)
        free(self.is_var)
        free(self.bounds)
        free(self.scratch)

    cdef uint8_t* _scratch(self, int64_t size) except NULL:
        if size > self.scratch_size:
            free(self.scratch)
            self.scratch = <uint8_t*>malloc(max(size, 4096))
            if self.scratch == NULL:
                self.scratch_size = 0
                raise MemoryError()
            self.scratch_size = max(size, 4096)
        return self.scratch

    cdef inline int64_t _check_row(self, int64_t i) except -1:
        if i < 0:
            i += self.n_rows
        if i < 0 or i >= self.n_rows:
            raise IndexError(f"row index out of range for a dataset of {self.n_rows} rows")
        return i

    cdef _damaged(self, int k, int64_t row):
        return FormatError(
            f"field {self.names[k]!r}, row {row}: stored offsets or chunk addresses are "
            "out of bounds; the file is damaged or truncated"
        )

    cdef object _text(self, int k, int64_t row, const uint8_t* ptr, int64_t size):
        try:
            return PyUnicode_DecodeUTF8(<const char*>ptr, size, "strict")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"field {self.names[k]!r}, row {row}: stored text is not valid UTF-8; "
                "the file is damaged"
            ) from exc

    cdef object _var_value(self, int k, int64_t row):
        cdef int64_t o0, o1
        if read_bounds(&self.offsets[k], row, &o0, &o1) < 0:
            raise self._damaged(k, row)
        return self._var_from_bounds(k, row, o0, o1)

    cdef object _var_from_bounds(self, int k, int64_t row, int64_t o0, int64_t o1):
        cdef int64_t nbytes
        cdef const uint8_t* ptr
        cdef Paged* vals = &self.values[k]
        cdef int kind = self.kinds[k]
        cdef int r
        cdef cnp.npy_intp dims[8]
        cdef object arr
        cdef int d
        if kind == KIND_VARIABLE:
            shape = self.elem_shapes[k]
            dims[0] = o1 - o0
            for d in range(len(shape)):
                dims[d + 1] = shape[d]
            arr = cnp.PyArray_SimpleNew(1 + len(shape), dims, self.typenums[k])
            if paged_copy(vals, o0, o1, <uint8_t*>cnp.PyArray_DATA(arr)) < 0:
                raise self._damaged(k, row)
            return arr
        r = paged_ptr(vals, o0, o1, &ptr)
        if r < 0:
            raise self._damaged(k, row)
        nbytes = (o1 - o0) * vals.elem_bytes
        if r == 0:
            ptr = self._scratch(nbytes)
            paged_copy(vals, o0, o1, <uint8_t*>ptr)
        if kind == KIND_STRING:
            return self._text(k, row, ptr, nbytes)
        return PyBytes_FromStringAndSize(<const char*>ptr, nbytes)

    cdef object _fixed_value(self, int k, int64_t row):
        cdef const uint8_t* ptr
        cdef Paged* vals = &self.values[k]
        cdef cnp.npy_intp dims[8]
        cdef object arr
        cdef int d
        if self.kinds[k] == KIND_SCALAR and self.codes[k] != S_NONE:
            if paged_ptr(vals, row, row + 1, &ptr) != 1:
                raise self._damaged(k, row)
            return scalar_object(self.codes[k], ptr)
        shape = self.elem_shapes[k]
        for d in range(len(shape)):
            dims[d] = shape[d]
        arr = cnp.PyArray_SimpleNew(len(shape), dims, self.typenums[k])
        if paged_copy(vals, row, row + 1, <uint8_t*>cnp.PyArray_DATA(arr)) < 0:
            raise self._damaged(k, row)
        return arr

    def row(self, int64_t i):
        """Decode row ``i`` (negative counts from the end) into a dict."""
        cdef int k
        cdef dict out = {}
        cdef const uint8_t* p
        cdef int64_t* lo = self.bounds
        cdef int64_t* hi = self.bounds + self.n_fields
        i = self._check_row(i)
        # Random rows miss the CPU caches: touch every field's offsets (or
        # value) first, then every field's data, so the misses overlap
        # instead of queueing one after another.
        for k in range(self.n_fields):
            p = paged_addr(&self.offsets[k] if self.is_var[k] else &self.values[k], i)
            if p != NULL:
                prefetch(p)
        for k in range(self.n_fields):
            if self.is_var[k]:
                if read_bounds(&self.offsets[k], i, &lo[k], &hi[k]) < 0:
                    raise self._damaged(k, i)
                p = paged_addr(&self.values[k], lo[k])
                if p != NULL:
                    prefetch(p)
        for k in range(self.n_fields):
            if self.is_var[k]:
                out[self.names[k]] = self._var_from_bounds(k, i, lo[k], hi[k])
            else:
                out[self.names[k]] = self._fixed_value(k, i)
        return out

    def value(self, int k, int64_t i):
        """Decode field ``k`` of row ``i``."""
        i = self._check_row(i)
        if self.kinds[k] == KIND_SCALAR or self.kinds[k] == KIND_FIXED:
            return self._fixed_value(k, i)
        return self._var_value(k, i)

    def rows_index(self, object index):
        """Normalise row indices to a checked int64 array (negatives wrap)."""
        cdef cnp.ndarray[int64_t, ndim=1] idx = np.array(index, dtype=np.int64, copy=True).reshape(-1)
        cdef int64_t j, n = idx.shape[0], v
        for j in range(n):
            v = idx[j]
            if v < 0:
                v += self.n_rows
            if v < 0 or v >= self.n_rows:
                raise IndexError(
                    f"row index {idx[j]} out of range for a dataset of {self.n_rows} rows"
                )
            idx[j] = v
        return idx

    def column(self, int k, const int64_t[::1] idx):
        """Decode field ``k`` of the checked rows ``idx`` in one call.

        Returns a list of str (String), a list of bytes (Bytes), an ndarray
        of shape (n, *element_shape) (fixed fields), or a tuple
        ``(flat, offsets)`` of the concatenated elements and n + 1 int64
        offsets (variable numeric fields).
        """
        cdef int kind = self.kinds[k]
        if kind == KIND_STRING or kind == KIND_BYTES:
            return self._objects(k, idx)
        if kind == KIND_VARIABLE:
            return self._ragged(k, idx)
        return self._fixed_batch(k, idx)

    cdef list _objects(self, int k, const int64_t[::1] idx):
        cdef Py_ssize_t j = 0, n = idx.shape[0]
        cdef list out = PyList_New(n)
        cdef object item
        cdef const uint8_t* p
        cdef Paged* vals = &self.values[k]
        cdef bint text = self.kinds[k] == KIND_STRING
        cdef int r
        cdef cnp.ndarray[int64_t, ndim=1] bounds = np.empty(2 * n, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(bounds)
        cdef int64_t* ln = st + n
        self._lengths(k, idx, st, ln)
        try:
            for j in range(n):
                if j + PREFETCH_AHEAD < n:
                    p = paged_addr(vals, st[j + PREFETCH_AHEAD])
                    if p != NULL:
                        prefetch(p)
                r = paged_ptr(vals, st[j], st[j] + ln[j], &p)
                if r == 1:  # the common case: the row lies in one chunk
                    if text:
                        item = PyUnicode_DecodeUTF8(<const char*>p, ln[j], "strict")
                    else:
                        item = PyBytes_FromStringAndSize(<const char*>p, ln[j])
                else:
                    item = self._var_from_bounds(k, idx[j], st[j], st[j] + ln[j])
                Py_INCREF(item)
                PyList_SET_ITEM(out, j, item)
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"field {self.names[k]!r}, row {idx[j]}: stored text is not valid UTF-8; "
                "the file is damaged"
            ) from exc
        return out

    cdef object _fixed_batch(self, int k, const int64_t[::1] idx):
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef Paged* vals = &self.values[k]
        cdef int64_t eb = vals.elem_bytes, bad = -1
        cdef cnp.npy_intp dims[8]
        cdef int d
        shape = self.elem_shapes[k]
        dims[0] = n
        for d in range(len(shape)):
            dims[d + 1] = shape[d]
        arr = cnp.PyArray_SimpleNew(1 + len(shape), dims, self.typenums[k])
        cdef uint8_t* out = <uint8_t*>cnp.PyArray_DATA(arr)
        cdef const uint8_t* p
        with nogil:
            for j in range(n):
                if j + PREFETCH_AHEAD < n:
                    p = paged_addr(vals, idx[j + PREFETCH_AHEAD])
                    if p != NULL:
                        prefetch(p)
                if paged_copy(vals, idx[j], idx[j] + 1, out + j * eb) < 0:
                    bad = idx[j]
                    break
        if bad >= 0:
            raise self._damaged(k, bad)
        return arr

    cdef int64_t _lengths(self, int k, const int64_t[::1] idx, int64_t* starts,
                          int64_t* lens) except -1:
        """Fill start element and length of each row; return the total."""
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef int64_t o0, o1, total = 0, bad = -1
        cdef const uint8_t* p
        with nogil:
            for j in range(min(n, PREFETCH_AHEAD)):
                p = paged_addr(&self.offsets[k], idx[j])
                if p != NULL:
                    prefetch(p)
            for j in range(n):
                if j + PREFETCH_AHEAD < n:
                    p = paged_addr(&self.offsets[k], idx[j + PREFETCH_AHEAD])
                    if p != NULL:
                        prefetch(p)
                if read_bounds(&self.offsets[k], idx[j], &o0, &o1) < 0 \
                        or o1 > self.values[k].length:
                    bad = idx[j]
                    break
                starts[j] = o0
                lens[j] = o1 - o0
                total += o1 - o0
        if bad >= 0:
            raise self._damaged(k, bad)
        return total

    cdef object _ragged(self, int k, const int64_t[::1] idx):
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef cnp.ndarray[int64_t, ndim=1] starts = np.empty(n, np.int64)
        cdef cnp.ndarray[int64_t, ndim=1] offsets = np.empty(n + 1, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(starts)
        cdef int64_t* of = <int64_t*>cnp.PyArray_DATA(offsets)
        cdef int64_t total = self._lengths(k, idx, st, of + 1)
        cdef Paged* vals = &self.values[k]
        cdef int64_t eb = vals.elem_bytes
        cdef cnp.npy_intp dims[8]
        cdef int d
        of[0] = 0
        for j in range(n):
            of[j + 1] += of[j]
        shape = self.elem_shapes[k]
        dims[0] = total
        for d in range(len(shape)):
            dims[d + 1] = shape[d]
        flat = cnp.PyArray_SimpleNew(1 + len(shape), dims, self.typenums[k])
        cdef uint8_t* out = <uint8_t*>cnp.PyArray_DATA(flat)
        with nogil:
            for j in range(n):
                paged_copy(vals, st[j], st[j] + of[j + 1] - of[j], out + of[j] * eb)
        return flat, offsets

    def padded(self, int k, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len=0):
        """Gather variable field ``k`` of rows ``idx`` into one padded array.

        Returns ``(out, lengths)``: ``out`` has shape
        (n, max(max_len, min_len), *element_shape) with each row's tail
        filled with the element ``pad`` (its raw bytes); ``lengths`` is int64.
        """
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef Paged* vals = &self.values[k]
        cdef int64_t eb = vals.elem_bytes, width = min_len, e
        cdef int d
        if self.kinds[k] not in (KIND_VARIABLE, KIND_STRING, KIND_BYTES):
            raise TypeError(f"field {self.names[k]!r} has a fixed size; nothing to pad")
        if pad.shape[0] != eb:
            raise ValueError(f"pad must be {eb} bytes, got {pad.shape[0]}")
        cdef cnp.ndarray[int64_t, ndim=1] starts = np.empty(n, np.int64)
        cdef cnp.ndarray[int64_t, ndim=1] lengths = np.empty(n, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(starts)
        cdef int64_t* ln = <int64_t*>cnp.PyArray_DATA(lengths)
        self._lengths(k, idx, st, ln)
        for j in range(n):
            if ln[j] > width:
                width = ln[j]
        cdef cnp.npy_intp dims[8]
        shape = self.elem_shapes[k]
        dims[0] = n
        dims[1] = width
        for d in range(len(shape)):
            dims[d + 2] = shape[d]
        out = cnp.PyArray_SimpleNew(2 + len(shape), dims, self.typenums[k])
        cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
        cdef const uint8_t* pp = &pad[0]
        cdef bint zero_pad = True
        for e in range(eb):
            if pp[e] != 0:
                zero_pad = False
        with nogil:
            for j in range(n):
                paged_copy(vals, st[j], st[j] + ln[j], dst)
                if zero_pad:
                    memset(dst + ln[j] * eb, 0, (width - ln[j]) * eb)
                else:
                    for e in range(ln[j], width):
                        memcpy(dst + e * eb, pp, eb)
                dst += width * eb
        return out, lengths


# Writer side: how pack_row treats each field.
PACK_UTF8 = 0     # String: str -> UTF-8 bytes
PACK_FLOAT = 1    # Float scalars: int or float -> float
PACK_INT = 2      # Integer scalars: int in [lo, hi]
PACK_OTHER = 3    # anything else: call the field's converter


cdef class RowPacker:
    """Convert rows for the writer and append each field's value to a sink list.

    ``codes[k]`` says how field ``k`` is converted (PACK_*), ``lo``/``hi``
    bound PACK_INT values, and ``converters[k](value, index)`` handles
    everything off the fast paths, raising the descriptive error.
    """

    cdef tuple names
    cdef tuple converters
    cdef list sinks
    cdef int* codes
    cdef int64_t* lo
    cdef int64_t* hi
    cdef Py_ssize_t n

    def __cinit__(self, tuple names, codes, lo, hi, tuple converters, list sinks):
        self.n = len(names)
        self.codes = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.lo = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.hi = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        if not (self.codes and self.lo and self.hi):
            raise MemoryError()
        for k in range(self.n):
            self.codes[k] = codes[k]
            self.lo[k] = lo[k]
            self.hi[k] = hi[k]
        self.names = names
        self.converters = converters
        self.sinks = sinks

    def __dealloc__(self):
        free(self.codes)
        free(self.lo)
        free(self.hi)

    def pack(self, object row, int64_t index):
        """Convert one row; append to the sinks only if every field converts.

        Returns the payload bytes added, or -1 if ``row`` is not a dict with
        exactly the schema's keys (the caller then explains what is wrong).
        """
        cdef Py_ssize_t k, n = self.n
        cdef object value, out
        cdef int64_t nbytes = 0
        cdef long long as_int
        cdef int overflow, code
        if type(row) is not dict or len(<dict>row) != n:
            return -1
        cdef list converted = PyList_New(n)
        for k in range(n):
            value = (<dict>row).get(self.names[k], _MISSING)
            if value is _MISSING:
                return -1
            code = self.codes[k]
            if code == PACK_UTF8 and type(value) is str:
                try:
                    out = PyUnicode_AsUTF8String(value)
                except UnicodeEncodeError:
                    out = self.converters[k](value, index)  # raises the error
                nbytes += len(<bytes>out)
            elif code == PACK_FLOAT and (type(value) is float or type(value) is int):
                out = value
                nbytes += 8
            elif code == PACK_INT and type(value) is int:
                as_int = PyLong_AsLongLongAndOverflow(value, &overflow)
                if overflow or as_int < self.lo[k] or as_int > self.hi[k]:
                    self.converters[k](value, index)  # raises the range error
                out = value
                nbytes += 8
            else:
                out = self.converters[k](value, index)
                nbytes += len(out) if type(out) is bytes else getattr(out, "nbytes", 8)
            Py_INCREF(out)
            PyList_SET_ITEM(converted, k, out)
        for k in range(n):
            (<list>self.sinks[k]).append(converted[k])
        return nbytes


cdef object _MISSING = object()
