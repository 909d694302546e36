# cython: language_level=3
"""Compiled kernels: gather and decode rows and batches from chunked buffers.

Data in, data out. Each stored array ("paged array") is a byte buffer (a
memory map of the file, or an in-memory copy) plus a table of chunk start
addresses in that buffer (docs/FORMAT.md, section 4). No HDF5, file or
torch code lives here; the Python layer validates tables and allocates.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdint cimport int8_t, int16_t, int32_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset
from libc.math cimport INFINITY, NAN, ldexp, fabs, isinf
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_AsUTF8String
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.pythread cimport PyThread_get_thread_ident

cimport numpy as cnp
import numpy as np

from h5record._io cimport willneed_spans, spans_resident

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void* addr) noexcept nogil

# The few functions of libzstd's stable API that the reader needs, declared
# here so that building needs only the shared library, not its headers.
cdef extern from *:
    """
    #include <stddef.h>
    typedef struct ZSTD_DCtx_s ZSTD_DCtx;
    typedef struct ZSTD_DDict_s ZSTD_DDict;
    ZSTD_DCtx* ZSTD_createDCtx(void);
    size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx);
    ZSTD_DDict* ZSTD_createDDict(const void* dict, size_t size);
    size_t ZSTD_freeDDict(ZSTD_DDict* ddict);
    size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t cap,
                               const void* src, size_t size);
    size_t ZSTD_decompress_usingDDict(ZSTD_DCtx* dctx, void* dst, size_t cap,
                                      const void* src, size_t size, const ZSTD_DDict* ddict);
    unsigned long long ZSTD_getFrameContentSize(const void* src, size_t size);
    unsigned ZSTD_isError(size_t code);
    """
    ctypedef struct ZSTD_DCtx
    ctypedef struct ZSTD_DDict
    ZSTD_DCtx* ZSTD_createDCtx() nogil
    size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx) nogil
    ZSTD_DDict* ZSTD_createDDict(const void* dict, size_t size) nogil
    size_t ZSTD_freeDDict(ZSTD_DDict* ddict) nogil
    size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t cap,
                               const void* src, size_t size) nogil
    size_t ZSTD_decompress_usingDDict(ZSTD_DCtx* dctx, void* dst, size_t cap, const void* src,
                                      size_t size, const ZSTD_DDict* ddict) nogil
    unsigned long long ZSTD_getFrameContentSize(const void* src, size_t size) nogil
    unsigned ZSTD_isError(size_t code) nogil

from h5record.errors import FormatError

cnp.import_array()


class ForeignThreadError(RuntimeError):
    """A Decoder was used from a thread other than the one that made it.

    A Decoder keeps per-call state (decompressed zstd blocks, span lists)
    that it fills with the GIL released; each thread needs its own.
    """

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
    PREFETCH_AHEAD = 8

# Dimensions of any array built here: a batch axis, a padded axis and the
# element shape (fields.MAX_ELEMENT_DIMS keeps shapes within this).
cdef enum:
    MAX_DIMS = 32

# Cold-read policy of a memory-mapped Decoder (see Decoder.prefetch): rows of a
# batch sampled for residency, batches and single rows read in cold mode once
# a sample missed the page cache, and single rows between two samples.
cdef enum:
    SAMPLE_ROWS = 2
    COLD_BATCHES = 16
    COLD_ROWS = 512
    ROW_CHECK_EVERY = 32
    READ_AHEAD_ROWS = 256

cdef struct Paged:
    const uint8_t* base
    const int64_t* table      # byte address of each chunk in base, -1 if absent
    int64_t n_chunks
    int64_t chunk_len         # elements per chunk
    int64_t elem_bytes
    int64_t length            # readable elements
    int64_t base_len          # bytes in base: no address may reach past it


cdef inline int paged_ptr(const Paged* p, int64_t start, int64_t stop,
                          const uint8_t** out) noexcept nogil:
    """Point at elements [start, stop) if they lie in one chunk.

    Returns 1 (pointer set), 0 (range spans chunks: copy it instead),
    or -1 (out of bounds or damaged).
    """
    cdef int64_t c, within, addr
    if start < 0 or stop < start or stop > p.length:
        return -1
    if stop == start:  # an empty row: nothing to point at, maybe no chunk at all
        out[0] = <const uint8_t*>""
        return 1
    c = start // p.chunk_len
    within = start - c * p.chunk_len
    addr = p.table[c]
    if addr < 0:
        return -1
    if (stop - 1) // p.chunk_len == c:
        if addr + (within + stop - start) * p.elem_bytes > p.base_len:
            return -1
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
    addr += (e - c * p.chunk_len) * p.elem_bytes
    if addr + p.elem_bytes > p.base_len:
        return NULL
    return p.base + addr


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
        if addr < 0 or addr + (within + take) * p.elem_bytes > p.base_len:
            return -1
        memcpy(out, p.base + addr + within * p.elem_bytes, take * p.elem_bytes)
        out += take * p.elem_bytes
        e += take
    return 0


cdef struct Spans:
    int64_t* data     # (start, stop) byte pairs in the memory map
    Py_ssize_t n
    Py_ssize_t cap


cdef int spans_add(Spans* s, int64_t start, int64_t stop) noexcept nogil:
    cdef int64_t* grown
    if s.n == s.cap:
        grown = <int64_t*>realloc(s.data, 2 * max(2 * s.cap, 64) * sizeof(int64_t))
        if grown == NULL:
            return -1
        s.data = grown
        s.cap = max(2 * s.cap, 64)
    s.data[2 * s.n] = start
    s.data[2 * s.n + 1] = stop
    s.n += 1
    return 0


cdef int paged_spans(const Paged* p, const uint8_t* map_base, int64_t start, int64_t stop,
                     Spans* out) noexcept nogil:
    """Add the map byte spans of elements [start, stop); damaged parts are skipped
    (prefetching is advice: decoding reports the damage)."""
    cdef int64_t e = max(start, 0), c, within, take, addr
    cdef int64_t base = p.base - map_base
    stop = min(stop, p.length)
    while e < stop:
        c = e // p.chunk_len
        within = e - c * p.chunk_len
        take = min(p.chunk_len - within, stop - e)
        addr = p.table[c]
        if addr >= 0 and spans_add(out, base + addr + within * p.elem_bytes,
                                   base + addr + (within + take) * p.elem_bytes) < 0:
            return -1
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


def _integer_indices(index):
    """``index`` as an integer array; floats, bools and strings are refused."""
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"row indices must be integers, got an array of {arr.dtype}")
    return arr


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
    memory_map : buffer, optional
        The memory map of the whole file that every ``buffer`` points into.
        Given, reads that miss the page cache are prefetched (see
        :meth:`prefetch`); in-memory buffers need none.
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
    cdef int64_t* eb   # bytes of one decoded element of each field
    # zstd fields (docs/FORMAT.md, section 5): one decompressed block cached per field.
    cdef bint* blocked
    cdef Paged* blocks
    cdef int64_t* rows_per_block
    cdef int64_t* max_block
    cdef ZSTD_DDict** ddicts
    cdef ZSTD_DCtx** dctxs   # one per field: a context keeps its dictionary's tables warm
    cdef int64_t* cached
    cdef uint8_t** cache
    cdef int64_t* cache_cap
    cdef int64_t** starts
    cdef int64_t* starts_cap
    cdef uint8_t* frame_scratch
    cdef int64_t frame_scratch_size
    cdef list keep_alive
    cdef list elem_shapes
    cdef list dtypes
    cdef uint8_t* scratch
    cdef int64_t scratch_size
    # Cold reads (memory maps only): the map, reused span lists, and the policy state.
    cdef object map_view
    cdef const uint8_t* map_base
    cdef int64_t map_size
    cdef Spans spans
    cdef int cold_batches, cold_rows, row_countdown
    cdef int64_t last_row, ahead_until
    cdef unsigned long owner

    def __cinit__(self, int64_t n_rows, list fields, memory_map=None):
        self.n_fields = len(fields)
        n = max(self.n_fields, 1)
        self.values = <Paged*>malloc(n * sizeof(Paged))
        self.offsets = <Paged*>malloc(n * sizeof(Paged))
        self.kinds = <int*>malloc(n * sizeof(int))
        self.codes = <int*>malloc(n * sizeof(int))
        self.typenums = <int*>malloc(n * sizeof(int))
        self.is_var = <bint*>malloc(n * sizeof(bint))
        self.bounds = <int64_t*>malloc(2 * n * sizeof(int64_t))
        self.eb = <int64_t*>malloc(n * sizeof(int64_t))
        self.blocked = <bint*>calloc(n, sizeof(bint))
        self.blocks = <Paged*>calloc(n, sizeof(Paged))
        self.rows_per_block = <int64_t*>calloc(n, sizeof(int64_t))
        self.max_block = <int64_t*>calloc(n, sizeof(int64_t))
        self.ddicts = <ZSTD_DDict**>calloc(n, sizeof(ZSTD_DDict*))
        self.dctxs = <ZSTD_DCtx**>calloc(n, sizeof(ZSTD_DCtx*))
        self.cached = <int64_t*>malloc(n * sizeof(int64_t))
        self.cache = <uint8_t**>calloc(n, sizeof(uint8_t*))
        self.cache_cap = <int64_t*>calloc(n, sizeof(int64_t))
        self.starts = <int64_t**>calloc(n, sizeof(int64_t*))
        self.starts_cap = <int64_t*>calloc(n, sizeof(int64_t))
        self.frame_scratch = NULL
        self.frame_scratch_size = 0
        self.scratch = NULL
        self.scratch_size = 0
        if not (self.values and self.offsets and self.kinds and self.codes and self.typenums
                and self.is_var and self.bounds and self.eb and self.blocked and self.blocks
                and self.rows_per_block and self.max_block and self.ddicts and self.dctxs
                and self.cached
                and self.cache and self.cache_cap and self.starts and self.starts_cap):
            raise MemoryError()
        memset(self.offsets, 0, n * sizeof(Paged))

    def __init__(self, int64_t n_rows, list fields, memory_map=None):
        cdef const uint8_t[::1] view
        self.n_rows = n_rows
        if memory_map is not None and len(memory_map):
            view = memory_map
            self.map_view = view
            self.map_base = &view[0]
            self.map_size = view.shape[0]
        self.row_countdown = ROW_CHECK_EVERY
        self.last_row = -2
        self.owner = PyThread_get_thread_ident()
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
            self.eb[k] = dtype.itemsize * int(np.prod(spec["element_shape"], dtype=np.int64))
            self._set_paged(&self.values[k], spec["values"])
            self.is_var[k] = spec["kind"] in (KIND_STRING, KIND_BYTES, KIND_VARIABLE)
            self.cached[k] = -1
            zstd = spec.get("zstd")
            if zstd is not None:
                self._set_blocked(k, zstd)
            elif self.is_var[k]:
                self._set_paged(&self.offsets[k], spec["offsets"])

    cdef _set_paged(self, Paged* p, dict spec):
        cdef const uint8_t[::1] buf = spec["buffer"]
        cdef const int64_t[::1] table = np.ascontiguousarray(spec["table"], dtype=np.int64)
        self.keep_alive.append(buf)
        self.keep_alive.append(table)
        p.base = &buf[0] if buf.shape[0] else NULL
        p.base_len = buf.shape[0]
        p.table = &table[0] if table.shape[0] else NULL
        p.n_chunks = table.shape[0]
        p.chunk_len = max(<int64_t>spec["chunk_len"], 1)
        p.elem_bytes = spec["elem_bytes"]
        p.length = min(<int64_t>spec["length"], p.n_chunks * p.chunk_len)

    cdef _set_blocked(self, int k, dict zstd):
        cdef const uint8_t[::1] dictionary
        self.blocked[k] = True
        self._set_paged(&self.blocks[k], zstd["blocks"])
        self.rows_per_block[k] = max(<int64_t>zstd["rows_per_block"], 1)
        self.max_block[k] = zstd["max_block_bytes"]
        self.dctxs[k] = ZSTD_createDCtx()
        if self.dctxs[k] == NULL:
            raise MemoryError()
        if zstd.get("dictionary") is not None:
            dictionary = zstd["dictionary"]
            self.ddicts[k] = ZSTD_createDDict(&dictionary[0], dictionary.shape[0])
            if self.ddicts[k] == NULL:
                raise FormatError(f"field {self.names[k]!r}: the stored zstd dictionary is invalid")

    def __dealloc__(self):
        cdef int k
        if self.cache != NULL:
            for k in range(self.n_fields):
                free(self.cache[k])
                free(self.starts[k])
                if self.ddicts[k] != NULL:
                    ZSTD_freeDDict(self.ddicts[k])
                if self.dctxs[k] != NULL:
                    ZSTD_freeDCtx(self.dctxs[k])
        free(self.blocked)
        free(self.eb)
        free(self.blocks)
        free(self.rows_per_block)
        free(self.max_block)
        free(self.ddicts)
        free(self.dctxs)
        free(self.cached)
        free(self.cache)
        free(self.cache_cap)
        free(self.starts)
        free(self.starts_cap)
        free(self.frame_scratch)
        free(self.values)
        free(self.offsets)
        free(self.kinds)
        free(self.codes)
        free(self.typenums)
        free(self.is_var)
        free(self.bounds)
        free(self.scratch)
        free(self.spans.data)

    cdef uint8_t* _scratch(self, int64_t size) except NULL:
        if size > self.scratch_size:
            free(self.scratch)
            self.scratch = <uint8_t*>malloc(max(size, 4096))
            if self.scratch == NULL:
                self.scratch_size = 0
                raise MemoryError()
            self.scratch_size = max(size, 4096)
        return self.scratch

    cdef int _load_block(self, int k, int64_t j) except -1:
        """Make block ``j`` of zstd field ``k`` the cached, decompressed block."""
        cdef int64_t c0, c1, size, r, total, p, R = self.rows_per_block[k]
        cdef const uint8_t* src
        cdef unsigned long long content
        cdef size_t res
        cdef const uint32_t* lens
        cdef int64_t* st
        cdef int ok
        if self.cached[k] == j:
            return 0
        self.cached[k] = -1
        if read_bounds(&self.blocks[k], j, &c0, &c1) < 0:
            raise self._damaged(k, j * R)
        ok = paged_ptr(&self.values[k], c0, c1, &src)
        if ok < 0:
            raise self._damaged(k, j * R)
        if ok == 0:
            if c1 - c0 > self.frame_scratch_size:
                free(self.frame_scratch)
                self.frame_scratch = <uint8_t*>malloc(c1 - c0)
                self.frame_scratch_size = 0 if self.frame_scratch == NULL else c1 - c0
                if self.frame_scratch == NULL:
                    raise MemoryError()
            if paged_copy(&self.values[k], c0, c1, self.frame_scratch) < 0:
                raise self._damaged(k, j * R)
            src = self.frame_scratch
        content = ZSTD_getFrameContentSize(src, c1 - c0)
        if content > <unsigned long long>self.max_block[k]:  # also catches zstd's error codes
            raise self._damaged(k, j * R)
        size = <int64_t>content
        if size > self.cache_cap[k]:
            free(self.cache[k])
            self.cache[k] = <uint8_t*>malloc(max(size, 64))
            self.cache_cap[k] = 0 if self.cache[k] == NULL else max(size, 64)
            if self.cache[k] == NULL:
                raise MemoryError()
        with nogil:
            if self.ddicts[k] != NULL:
                res = ZSTD_decompress_usingDDict(self.dctxs[k], self.cache[k], size, src, c1 - c0,
                                                 self.ddicts[k])
            else:
                res = ZSTD_decompressDCtx(self.dctxs[k], self.cache[k], size, src, c1 - c0)
        if ZSTD_isError(res) or <int64_t>res != size:
            raise self._damaged(k, j * R)
        r = min(R, self.n_rows - j * R)
        if self.is_var[k]:
            if r + 1 > self.starts_cap[k]:
                free(self.starts[k])
                self.starts[k] = <int64_t*>malloc((r + 1) * sizeof(int64_t))
                self.starts_cap[k] = 0 if self.starts[k] == NULL else r + 1
                if self.starts[k] == NULL:
                    raise MemoryError()
            if 4 * r > size:
                raise self._damaged(k, j * R)
            lens = <const uint32_t*>self.cache[k]
            st = self.starts[k]
            st[0] = 0
            for p in range(r):
                st[p + 1] = st[p] + lens[p]
            total = 4 * r + st[r] * self.eb[k]
        else:
            total = r * self.eb[k]
        if total != size:
            raise self._damaged(k, j * R)
        self.cached[k] = j
        return 0

    cdef int _span(self, int k, int64_t row, const uint8_t** ptr, int64_t* nelem) except -1:
        """Point at row ``row`` of zstd field ``k`` in its decompressed block."""
        cdef int64_t R = self.rows_per_block[k]
        cdef int64_t j = row // R, p = row - j * R, r
        self._load_block(k, j)
        if self.is_var[k]:
            r = min(R, self.n_rows - j * R)
            ptr[0] = self.cache[k] + 4 * r + self.starts[k][p] * self.eb[k]
            nelem[0] = self.starts[k][p + 1] - self.starts[k][p]
        else:
            ptr[0] = self.cache[k] + p * self.eb[k]
            nelem[0] = 1
        return 0

    cdef object _object_at(self, int k, int64_t row, const uint8_t* ptr, int64_t nelem):
        """Build the Python value of field ``k`` from a pointer to its row."""
        cdef cnp.npy_intp dims[MAX_DIMS]
        cdef int d, e, kind = self.kinds[k]
        cdef object arr
        cdef int64_t nbytes = nelem * self.eb[k]
        if kind == KIND_STRING:
            return self._text(k, row, ptr, nbytes)
        if kind == KIND_BYTES:
            return PyBytes_FromStringAndSize(<const char*>ptr, nbytes)
        if kind == KIND_SCALAR and self.codes[k] != S_NONE:
            return scalar_object(self.codes[k], ptr)
        shape = self.elem_shapes[k]
        d = 0
        if kind == KIND_VARIABLE:
            dims[0] = nelem
            d = 1
        for e in range(len(shape)):
            dims[d + e] = shape[e]
        arr = cnp.PyArray_SimpleNew(d + len(shape), dims, self.typenums[k])
        memcpy(cnp.PyArray_DATA(arr), ptr, nbytes)
        return arr

    cdef object _blocked_value(self, int k, int64_t row):
        cdef const uint8_t* ptr
        cdef int64_t nelem
        self._span(k, row, &ptr, &nelem)
        return self._object_at(k, row, ptr, nelem)

    cdef object _blocked_column(self, int k, const int64_t[::1] idx, bint raw=False):
        """Column of a zstd field: rows are copied out of their blocks."""
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef const uint8_t* ptr
        cdef int64_t nelem, total = 0
        cdef int64_t eb = self.eb[k]
        cdef int kind = self.kinds[k]
        cdef list out
        cdef object item
        cdef cnp.npy_intp dims[MAX_DIMS]
        cdef int d
        if (kind == KIND_STRING or kind == KIND_BYTES) and not raw:
            out = PyList_New(n)
            for j in range(n):
                item = self._blocked_value(k, idx[j])
                Py_INCREF(item)
                PyList_SET_ITEM(out, j, item)
            return out
        shape = self.elem_shapes[k]
        if not self.is_var[k]:
            dims[0] = n
            for d in range(len(shape)):
                dims[d + 1] = shape[d]
            arr = cnp.PyArray_SimpleNew(1 + len(shape), dims, self.typenums[k])
            for j in range(n):
                self._span(k, idx[j], &ptr, &nelem)
                memcpy(<uint8_t*>cnp.PyArray_DATA(arr) + j * eb, ptr, eb)
            return arr
        # Variable: gather row by row into a growing buffer (blocks decompress once each
        # for sorted or clustered indices thanks to the one-block cache), then copy
        # once into the array.
        offsets = np.empty(n + 1, np.int64)
        cdef int64_t[::1] of = offsets
        cdef int64_t cap = 0, used = 0, want
        cdef uint8_t* buf = NULL
        cdef uint8_t* grown
        of[0] = 0
        try:
            for j in range(n):
                self._span(k, idx[j], &ptr, &nelem)
                want = used + nelem * eb
                if want > cap:
                    cap = max(want, 2 * cap, 4096)
                    grown = <uint8_t*>realloc(buf, cap)
                    if grown == NULL:
                        raise MemoryError()
                    buf = grown
                memcpy(buf + used, ptr, nelem * eb)
                used = want
                of[j + 1] = of[j] + nelem
            dims[0] = of[n]
            for d in range(len(shape)):
                dims[d + 1] = shape[d]
            flat = cnp.PyArray_SimpleNew(1 + len(shape), dims, self.typenums[k])
            if used:
                memcpy(cnp.PyArray_DATA(flat), buf, used)
        finally:
            free(buf)
        return flat, offsets

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
        if self.blocked[k]:
            return self._blocked_value(k, row)
        if read_bounds(&self.offsets[k], row, &o0, &o1) < 0:
            raise self._damaged(k, row)
        return self._var_from_bounds(k, row, o0, o1)

    cdef object _var_from_bounds(self, int k, int64_t row, int64_t o0, int64_t o1):
        cdef int64_t nbytes
        cdef const uint8_t* ptr
        cdef Paged* vals = &self.values[k]
        cdef int kind = self.kinds[k]
        cdef int r
        cdef cnp.npy_intp dims[MAX_DIMS]
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
            if paged_copy(vals, o0, o1, <uint8_t*>ptr) < 0:
                raise self._damaged(k, row)
        if kind == KIND_STRING:
            return self._text(k, row, ptr, nbytes)
        return PyBytes_FromStringAndSize(<const char*>ptr, nbytes)

    cdef object _fixed_value(self, int k, int64_t row):
        cdef const uint8_t* ptr
        cdef Paged* vals = &self.values[k]
        cdef cnp.npy_intp dims[MAX_DIMS]
        cdef object arr
        cdef int d
        if self.blocked[k]:
            return self._blocked_value(k, row)
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

    def owned(self):
        """Whether the calling thread is the one that made this Decoder."""
        return PyThread_get_thread_ident() == self.owner

    cdef inline int _own(self) except -1:
        if PyThread_get_thread_ident() != self.owner:
            raise ForeignThreadError("this Decoder belongs to another thread; make one per thread")
        return 0

    # -- cold reads: resolve rows to byte spans, ask for them all at once ----
    cdef int _row_spans(self, int64_t i, bint data, Spans* out) noexcept nogil:
        """Add the map spans row ``i`` needs: its index entries (offsets, block
        table, fixed values) or, with ``data``, the values they point at."""
        cdef int k
        cdef int64_t j, lo, hi
        for k in range(self.n_fields):
            if self.blocked[k]:
                j = i // self.rows_per_block[k]
                if not data:
                    if paged_spans(&self.blocks[k], self.map_base, j, j + 2, out) < 0:
                        return -1
                elif read_bounds(&self.blocks[k], j, &lo, &hi) == 0:
                    if paged_spans(&self.values[k], self.map_base, lo, hi, out) < 0:
                        return -1
            elif self.is_var[k]:
                if not data:
                    if paged_spans(&self.offsets[k], self.map_base, i, i + 2, out) < 0:
                        return -1
                elif read_bounds(&self.offsets[k], i, &lo, &hi) == 0:
                    if paged_spans(&self.values[k], self.map_base, lo, hi, out) < 0:
                        return -1
            elif not data:
                if paged_spans(&self.values[k], self.map_base, i, i + 1, out) < 0:
                    return -1
        return 0

    cdef bint _resident(self, const int64_t* rows, Py_ssize_t n) except -1:
        """Whether rows' index entries, then their values, are in the page cache."""
        cdef Py_ssize_t j
        cdef bint data
        for data in (False, True):
            self.spans.n = 0
            for j in range(n):
                if self._row_spans(rows[j], data, &self.spans) < 0:
                    raise MemoryError()
            if not spans_resident(self.map_base, self.map_size, self.spans.data,
                                  self.spans.n, self.spans.n):
                return False
        return True

    cdef int _fetch(self, const int64_t* rows, Py_ssize_t n) except -1:
        """Two rounds of madvise(WILLNEED): every index span, then every data
        span (reading the offsets waits for the first round only)."""
        cdef Py_ssize_t j
        cdef bint data
        cdef int failed = 0
        with nogil:
            for data in (False, True):
                self.spans.n = 0
                for j in range(n):
                    if self._row_spans(rows[j], data, &self.spans) < 0:
                        failed = 1
                        break
                if failed:
                    break
                willneed_spans(self.map_base, self.map_size, self.spans.data, self.spans.n, 0)
        if failed:
            raise MemoryError()
        return 0

    def prefetch(self, const int64_t[::1] idx):
        """Ask the OS for every byte the checked rows ``idx`` need, at once.

        A memory-mapped file is mapped with MADV_RANDOM, so a page fault reads
        one page, not megabytes around it; this call puts all of a batch's
        ranges in the device queue instead (queue depth = ranges, not 1).
        A warm batch costs a residency test of ``SAMPLE_ROWS`` rows; once a
        test misses, the next ``COLD_BATCHES`` batches fetch without testing.
        Returns whether a fetch was made.
        """
        cdef Py_ssize_t n = idx.shape[0], j
        cdef int64_t sample[SAMPLE_ROWS]
        cdef Py_ssize_t m = min(n, SAMPLE_ROWS)
        self._own()
        if self.map_base == NULL or n == 0:
            return False
        if self.cold_batches > 0:
            self.cold_batches -= 1
        else:
            for j in range(m):
                sample[j] = idx[j * (n // m)]
            if self._resident(sample, m):
                return False
            self.cold_batches = COLD_BATCHES
        self._fetch(&idx[0], n)
        return True

    cdef int _row_prefetch(self, int64_t i) except -1:
        """The single-row policy: test residency every ROW_CHECK_EVERY rows, and
        once a test misses, fetch each of the next COLD_ROWS rows ahead; rows
        read in order fetch READ_AHEAD_ROWS rows at a time, half a window early."""
        cdef int64_t ahead[READ_AHEAD_ROWS]
        cdef int64_t start, m, j
        cdef bint in_order = i == self.last_row + 1
        self.last_row = i
        if self.cold_rows > 0:
            self.cold_rows -= 1
        else:
            self.row_countdown -= 1
            if self.row_countdown > 0:
                return 0
            self.row_countdown = ROW_CHECK_EVERY
            if self._resident(&i, 1):
                return 0
            self.cold_rows = COLD_ROWS
            self.ahead_until = -1  # what was fetched before may be gone
        if not in_order:
            return self._fetch(&i, 1)
        if i + READ_AHEAD_ROWS // 2 < self.ahead_until:
            return 0
        start = max(i, self.ahead_until)
        m = min(<int64_t>READ_AHEAD_ROWS, self.n_rows - start)
        for j in range(m):
            ahead[j] = start + j
        self.ahead_until = start + m
        return self._fetch(ahead, m) if m > 0 else 0

    def row(self, int64_t i):
        """Decode row ``i`` (negative counts from the end) into a dict."""
        cdef int k
        cdef dict out = {}
        cdef const uint8_t* p
        cdef int64_t* lo = self.bounds
        cdef int64_t* hi = self.bounds + self.n_fields
        self._own()
        i = self._check_row(i)
        if self.map_base != NULL:
            self._row_prefetch(i)
        # Random rows miss the CPU caches: touch every field's offsets (or
        # value) first, then every field's data, so the misses overlap
        # instead of queueing one after another.
        for k in range(self.n_fields):
            if self.blocked[k]:
                continue
            p = paged_addr(&self.offsets[k] if self.is_var[k] else &self.values[k], i)
            if p != NULL:
                prefetch(p)
        for k in range(self.n_fields):
            if self.is_var[k] and not self.blocked[k]:
                if read_bounds(&self.offsets[k], i, &lo[k], &hi[k]) < 0:
                    raise self._damaged(k, i)
                p = paged_addr(&self.values[k], lo[k])
                if p != NULL:
                    prefetch(p)
        for k in range(self.n_fields):
            if self.blocked[k]:
                out[self.names[k]] = self._blocked_value(k, i)
            elif self.is_var[k]:
                out[self.names[k]] = self._var_from_bounds(k, i, lo[k], hi[k])
            else:
                out[self.names[k]] = self._fixed_value(k, i)
        return out

    def value(self, int k, int64_t i):
        """Decode field ``k`` of row ``i``."""
        self._own()
        i = self._check_row(i)
        if self.kinds[k] == KIND_SCALAR or self.kinds[k] == KIND_FIXED:
            return self._fixed_value(k, i)
        return self._var_value(k, i)

    def rows_index(self, object index):
        """Normalise row indices to a checked int64 array (negatives wrap)."""
        cdef cnp.ndarray[int64_t, ndim=1] idx
        cdef int64_t j, n, v
        cdef int overflow
        cdef object item
        if type(index) is list:
            # What a DataLoader's batch sampler gives: a list of ints, read
            # without building an intermediate array.
            n = len(<list>index)
            idx = np.empty(n, np.int64)
            for j in range(n):
                item = (<list>index)[j]
                if type(item) is not int:
                    break
                v = PyLong_AsLongLongAndOverflow(item, &overflow)
                if overflow:
                    break
                idx[j] = v
            else:
                return self._checked(idx)
        idx = np.array(_integer_indices(index), dtype=np.int64, copy=True).reshape(-1)
        return self._checked(idx)

    cdef _checked(self, cnp.ndarray[int64_t, ndim=1] idx):
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

    def column(self, int k, const int64_t[::1] idx, bint raw=False):
        """Decode field ``k`` of the checked rows ``idx`` in one call.

        Returns a list of str (String), a list of bytes (Bytes), an ndarray
        of shape (n, *element_shape) (fixed fields), or a tuple
        ``(flat, offsets)`` of the concatenated elements and n + 1 int64
        offsets (variable numeric fields, and String/Bytes when ``raw``).
        """
        cdef int kind = self.kinds[k]
        self._own()
        if self.blocked[k]:
            return self._blocked_column(k, idx, raw)
        if raw and (kind == KIND_STRING or kind == KIND_BYTES):
            return self._ragged(k, idx)
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
        cdef cnp.npy_intp dims[MAX_DIMS]
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
        cdef cnp.npy_intp dims[MAX_DIMS]
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
        cdef Py_ssize_t bad = -1
        with nogil:
            for j in range(n):
                if paged_copy(vals, st[j], st[j] + of[j + 1] - of[j], out + of[j] * eb) < 0:
                    bad = j
                    break
        if bad >= 0:
            raise self._damaged(k, idx[bad])
        return flat, offsets

    def padded(self, int k, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len=0):
        """Gather variable field ``k`` of rows ``idx`` into one padded array.

        Returns ``(out, lengths)``: ``out`` has shape
        (n, max(max_len, min_len), *element_shape) with each row's tail
        filled with the element ``pad`` (its raw bytes); ``lengths`` is int64.
        """
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef Paged* vals = &self.values[k]
        cdef int64_t eb = self.eb[k], width = min_len, e
        cdef int d
        self._own()
        if self.kinds[k] not in (KIND_VARIABLE, KIND_STRING, KIND_BYTES):
            raise TypeError(f"field {self.names[k]!r} has a fixed size; nothing to pad")
        if pad.shape[0] != eb:
            raise ValueError(f"pad must be {eb} bytes, got {pad.shape[0]}")
        if self.blocked[k]:
            if self.kinds[k] != KIND_VARIABLE:
                raise TypeError(f"field {self.names[k]!r}: only numeric sequences are padded")
            flat, offsets = self._blocked_column(k, idx)
            return pad_ragged(flat, offsets, pad, min_len)
        cdef cnp.ndarray[int64_t, ndim=1] starts = np.empty(n, np.int64)
        cdef cnp.ndarray[int64_t, ndim=1] lengths = np.empty(n, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(starts)
        cdef int64_t* ln = <int64_t*>cnp.PyArray_DATA(lengths)
        self._lengths(k, idx, st, ln)
        for j in range(n):
            if ln[j] > width:
                width = ln[j]
        cdef cnp.npy_intp dims[MAX_DIMS]
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
        cdef Py_ssize_t bad = -1
        with nogil:
            for j in range(n):
                if paged_copy(vals, st[j], st[j] + ln[j], dst) < 0:
                    bad = j
                    break
                if zero_pad:
                    memset(dst + ln[j] * eb, 0, (width - ln[j]) * eb)
                else:
                    for e in range(ln[j], width):
                        memcpy(dst + e * eb, pp, eb)
                dst += width * eb
        if bad >= 0:
            raise self._damaged(k, idx[bad])
        return out, lengths


# How batch_rows takes each column's value of a row.
cdef enum RowFrom:
    FROM_LIST, FROM_SCALAR, FROM_ITEM, FROM_RAGGED


def batch_rows(tuple names, list columns, Py_ssize_t start, Py_ssize_t stop):
    """Rows ``start..stop-1`` of decoded batch columns as a list of dicts.

    ``columns[k]`` is field ``names[k]`` in the form ``Decoder.column``
    returns: a list (String, Bytes), a 1-D array (scalars, given back as
    Python numbers), an n-D array (fixed fields, a row is ``col[j]``) or
    ``(flat, offsets)`` (variable fields, a row is a view of ``flat``).
    """
    cdef Py_ssize_t k, j, nf = len(names)
    cdef list out = PyList_New(max(stop - start, 0))
    cdef dict row
    cdef object col, value, flat
    cdef int* modes = <int*>malloc(max(nf, 1) * sizeof(int))
    cdef int* codes = <int*>malloc(max(nf, 1) * sizeof(int))
    cdef const uint8_t** data = <const uint8_t**>malloc(max(nf, 1) * sizeof(uint8_t*))
    cdef int64_t* itemsize = <int64_t*>malloc(max(nf, 1) * sizeof(int64_t))
    cdef const int64_t** offs = <const int64_t**>malloc(max(nf, 1) * sizeof(int64_t*))
    cdef list keep = []
    cdef cnp.ndarray arr
    try:
        if not (modes and codes and data and itemsize and offs):
            raise MemoryError()
        for k in range(nf):
            col = columns[k]
            if type(col) is list:
                modes[k] = FROM_LIST
                if len(<list>col) < stop:
                    raise IndexError(f"column {names[k]!r} has {len(<list>col)} rows")
            elif type(col) is tuple:
                modes[k] = FROM_RAGGED
                arr = np.ascontiguousarray(col[1], np.int64)
                if arr.shape[0] < stop + 1:
                    raise IndexError(f"column {names[k]!r} has {arr.shape[0] - 1} rows")
                keep.append(arr)
                offs[k] = <const int64_t*>cnp.PyArray_DATA(arr)
            else:
                arr = np.ascontiguousarray(col)
                if arr.shape[0] < stop:
                    raise IndexError(f"column {names[k]!r} has {arr.shape[0]} rows")
                codes[k] = scalar_code(arr.dtype)
                if arr.ndim == 1 and codes[k] != S_NONE:
                    modes[k] = FROM_SCALAR
                    keep.append(arr)
                    data[k] = <const uint8_t*>cnp.PyArray_DATA(arr)
                    itemsize[k] = arr.dtype.itemsize
                else:
                    modes[k] = FROM_ITEM
        for j in range(start, stop):
            row = {}
            for k in range(nf):
                col = columns[k]
                if modes[k] == FROM_LIST:
                    value = (<list>col)[j]
                elif modes[k] == FROM_SCALAR:
                    value = scalar_object(codes[k], data[k] + j * itemsize[k])
                elif modes[k] == FROM_RAGGED:
                    flat = (<tuple>col)[0]
                    value = flat[offs[k][j]:offs[k][j + 1]]
                else:
                    value = col[j]
                row[names[k]] = value
            Py_INCREF(row)
            PyList_SET_ITEM(out, j - start, row)
    finally:
        free(modes)
        free(codes)
        free(data)
        free(itemsize)
        free(offs)
    return out


def pad_ragged(flat, const int64_t[::1] offsets, const uint8_t[::1] pad, int64_t min_len=0):
    """Pad rows ``flat[offsets[j]:offsets[j + 1]]`` into one array.

    Returns ``(out, lengths)`` with ``out`` of shape
    (n, max(longest, min_len), *flat.shape[1:]), tails filled with the
    element whose raw bytes are ``pad``.
    """
    cdef Py_ssize_t j, n = offsets.shape[0] - 1
    cdef int64_t e, width = min_len, eb
    src_arr = np.ascontiguousarray(flat)
    cdef cnp.ndarray src = src_arr
    tail = tuple(src_arr.shape[1:])
    eb = src_arr.dtype.itemsize
    for d in tail:
        eb *= d
    if pad.shape[0] != eb:
        raise ValueError(f"pad must be {eb} bytes, got {pad.shape[0]}")
    lengths = np.empty(max(n, 0), np.int64)
    cdef int64_t[::1] ln = lengths
    for j in range(n):
        ln[j] = offsets[j + 1] - offsets[j]
        if ln[j] < 0 or offsets[j + 1] > src_arr.shape[0]:
            raise ValueError(f"offsets are not valid at row {j}")
        if ln[j] > width:
            width = ln[j]
    out = np.empty((max(n, 0), width) + tail, src_arr.dtype)
    cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
    cdef const uint8_t* base = <const uint8_t*>cnp.PyArray_DATA(src)
    cdef const uint8_t* pp = &pad[0] if eb else NULL
    for j in range(n):
        memcpy(dst, base + offsets[j] * eb, ln[j] * eb)
        for e in range(ln[j], width):
            memcpy(dst + e * eb, pp, eb)
        dst += width * eb
    return out, lengths


def build_blocks(const uint8_t[::1] flat, const int64_t[::1] offsets, int64_t rows_per_block,
                 int64_t elem_bytes):
    """Lay out rows as the raw blocks of a variable zstd field (FORMAT.md, section 5).

    ``flat`` holds the rows' bytes, ``offsets`` their n + 1 element offsets
    (from 0). Returns ``(out, segments)``: every block's raw bytes (uint32
    row lengths, then the rows) back to back, and a (blocks, 2) uint64 array
    of each block's (start, size) in ``out``.
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, b, p, r, nb
    cdef int64_t R = max(rows_per_block, 1), first, last, pos = 0, nbytes
    cdef uint32_t length
    if n < 0:
        raise ValueError("offsets must have n + 1 entries")
    nb = (n + R - 1) // R
    if offsets[n] * elem_bytes > flat.shape[0]:
        raise ValueError("offsets point past the end of flat")
    out = np.empty(4 * n + (offsets[n] - offsets[0]) * elem_bytes, np.uint8)
    segments = np.empty((nb, 2), np.uint64)
    cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
    cdef uint64_t* seg = <uint64_t*>cnp.PyArray_DATA(segments)
    for b in range(nb):
        first = b * R
        last = min(first + R, n)
        seg[2 * b] = pos
        for p in range(first, last):
            if offsets[p + 1] - offsets[p] > 0xFFFFFFFF:
                raise ValueError(f"row {p} has more than 2**32 - 1 elements")
            length = <uint32_t>(offsets[p + 1] - offsets[p])
            memcpy(dst + pos, &length, 4)
            pos += 4
        nbytes = (offsets[last] - offsets[first]) * elem_bytes
        memcpy(dst + pos, &flat[0] + offsets[first] * elem_bytes, nbytes)
        pos += nbytes
        seg[2 * b + 1] = pos - seg[2 * b]
    return out, segments


def join_text(list values, bint text):
    """Concatenate a column of str (``text``) or bytes values.

    Returns ``(flat, lengths, bad)``: the UTF-8 (or raw) bytes back to
    back as a uint8 array, each value's byte length, and the index of the
    first value that is not a str (bytes) or cannot be encoded, -1 if none.
    """
    cdef Py_ssize_t j, n = len(values)
    cdef list parts = PyList_New(n)
    cdef object v, b
    lengths = np.empty(n, np.int64)
    cdef int64_t[::1] ln = lengths
    for j in range(n):
        v = values[j]
        if text and type(v) is str:
            try:
                b = PyUnicode_AsUTF8String(v)
            except UnicodeEncodeError:
                return None, None, j
        elif not text and type(v) is bytes:
            b = v
        else:
            return None, None, j
        ln[j] = len(<bytes>b)
        Py_INCREF(b)
        PyList_SET_ITEM(parts, j, b)
    return np.frombuffer(b"".join(parts), np.uint8), lengths, -1


# Writer side: how pack_row treats each field.
PACK_UTF8 = 0     # String: str -> UTF-8 bytes
PACK_FLOAT = 1    # Float scalars: int or float -> float
PACK_INT = 2      # Integer scalars: int in [lo, hi]
PACK_OTHER = 3    # anything else: call the field's converter


cdef class RowPacker:
    """Convert rows for the writer and append each field's value to a sink list.

    ``codes[k]`` says how field ``k`` is converted (PACK_*), ``lo``/``hi``
    bound PACK_INT values, ``fmax`` is the largest finite value of PACK_FLOAT
    fields, and ``converters[k](value, index)`` handles everything off the
    fast paths, raising the descriptive error.
    """

    cdef tuple names
    cdef tuple converters
    cdef list sinks
    cdef int* codes
    cdef int64_t* lo
    cdef int64_t* hi
    cdef double* fmax
    cdef Py_ssize_t n
    # Rows packed so far (the next row's index), and what the sinks hold unflushed.
    cdef public int64_t rows, pending_rows, pending_bytes
    cdef public int64_t flush_rows, flush_bytes

    def __cinit__(self, tuple names, codes, lo, hi, fmax, tuple converters, list sinks):
        self.n = len(names)
        self.codes = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.lo = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.hi = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.fmax = <double*>malloc(max(self.n, 1) * sizeof(double))
        if not (self.codes and self.lo and self.hi and self.fmax):
            raise MemoryError()
        for k in range(self.n):
            self.codes[k] = codes[k]
            self.lo[k] = lo[k]
            self.hi[k] = hi[k]
            self.fmax[k] = fmax[k]
        self.names = names
        self.converters = converters
        self.sinks = sinks
        self.flush_rows = 1 << 62
        self.flush_bytes = 1 << 62

    def __dealloc__(self):
        free(self.codes)
        free(self.lo)
        free(self.hi)
        free(self.fmax)

    def write(self, object row):
        """Pack ``row`` as row number ``rows`` and count it.

        Returns -1 if ``row`` is not a dict with exactly the schema's keys,
        1 when the buffered rows reach ``flush_rows`` or ``flush_bytes``,
        else 0.
        """
        cdef int64_t nbytes = self.pack(row, self.rows)
        if nbytes < 0:
            return -1
        self.rows += 1
        self.pending_rows += 1
        self.pending_bytes += nbytes
        return 1 if (self.pending_rows >= self.flush_rows
                     or self.pending_bytes >= self.flush_bytes) else 0

    cpdef int64_t pack(self, object row, int64_t index) except -2:
        """Convert one row; append to the sinks only if every field converts.

        Returns the payload bytes added, or -1 if ``row`` is not a dict with
        exactly the schema's keys (the caller then explains what is wrong).
        """
        cdef Py_ssize_t k, n = self.n
        cdef object value, out
        cdef int64_t nbytes = 0
        cdef long long as_int
        cdef int overflow, code
        cdef double d
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
            elif code == PACK_FLOAT and type(value) is float:
                # Beyond the dtype's range (not a given inf): convert raises.
                d = PyFloat_AS_DOUBLE(value)
                if fabs(d) > self.fmax[k] and not isinf(d):
                    self.converters[k](value, index)
                out = value
                nbytes += 8
            elif code == PACK_FLOAT and type(value) is int:
                as_int = PyLong_AsLongLongAndOverflow(value, &overflow)
                if overflow or fabs(<double>as_int) > self.fmax[k]:
                    self.converters[k](value, index)
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
