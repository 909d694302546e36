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
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport INFINITY, NAN, ldexp, fabs, isinf
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_AsUTF8String
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.buffer cimport (
    PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS, PyBUF_FORMAT
)
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


cdef inline int64_t frame_bound(int64_t size) noexcept nogil:
    """The most a zstd frame of ``size`` bytes can decompress to, whatever it declares.

    A block holds at most 128 KiB and takes at least 4 bytes (a 3-byte header
    and the one byte of an RLE block).
    """
    return (size // 4 + 1) * (128 << 10)

from h5record.errors import FormatError

cnp.import_array()


class ForeignThreadError(RuntimeError):
    """A Decoder was used from a thread other than the one that made it.

    A Decoder keeps per-call state (decompressed zstd blocks, span lists)
    that it fills with the GIL released; each thread needs its own.
    """

# Field kinds: the numbers of ``fields.Kind``, which every field carries.
cdef enum:
    K_STRING = 0
    K_BYTES = 1
    K_SCALAR = 2
    K_FIXED = 3
    K_VARIABLE = 4

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
# a sample missed the page cache, and single rows between two samples (a test
# costs ~2 us of mincore calls: every 256th row keeps it under 1% of warm reads).
cdef enum:
    SAMPLE_ROWS = 2
    COLD_BATCHES = 16
    WARM_STREAK = 8        # warm tests in a row after which only every
    WARM_TEST_EVERY = 4    # WARM_TEST_EVERY-th batch is tested (~1% of a warm batch)
    COLD_ROWS = 512
    ROW_CHECK_EVERY = 256
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


# -- stateless kernels: typed inputs, caller-owned outputs, no Python objects ------------

cdef object new_array(int nprefix, int64_t n0, int64_t n1, tuple shape, int typenum):
    """An uninitialised array of shape (n0[, n1], *shape)."""
    cdef cnp.npy_intp dims[MAX_DIMS]
    cdef Py_ssize_t e, ns = len(shape)
    if nprefix + ns > MAX_DIMS:
        raise ValueError(f"arrays of more than {MAX_DIMS} dimensions are not supported")
    dims[0] = n0
    dims[1] = n1
    for e in range(ns):
        dims[nprefix + e] = shape[e]
    return cnp.PyArray_SimpleNew(nprefix + ns, dims, typenum)


# The kernels below read row j from ``vals`` (and ``offs``), or, given ``part``,
# from ``vals[part[j]]``: one array per shard, for batches over shards.
cdef inline const Paged* part_of(const Paged* p, const int64_t* part, Py_ssize_t j) noexcept nogil:
    return p if part == NULL else p + part[j]


cdef Py_ssize_t gather_fixed(const Paged* vals, const int64_t* part, const int64_t* idx,
                             Py_ssize_t n, uint8_t* out) noexcept nogil:
    """Copy element ``idx[j]`` of ``vals`` to ``out[j]``; the first bad j, or -1."""
    cdef Py_ssize_t j
    cdef int64_t eb = vals.elem_bytes
    cdef const uint8_t* p
    for j in range(n):
        if j + PREFETCH_AHEAD < n:
            p = paged_addr(part_of(vals, part, j + PREFETCH_AHEAD), idx[j + PREFETCH_AHEAD])
            if p != NULL:
                prefetch(p)
        if paged_copy(part_of(vals, part, j), idx[j], idx[j] + 1, out + j * eb) < 0:
            return j
    return -1


cdef Py_ssize_t gather_bits(const Paged* bits, const int64_t* idx, Py_ssize_t n,
                            uint8_t* out) noexcept nogil:
    """Bit ``idx[j]`` of a bitmap (least significant first) to ``out[j]``; the first
    bad j, or -1."""
    cdef Py_ssize_t j
    cdef const uint8_t* p
    for j in range(n):
        p = paged_addr(bits, idx[j] >> 3)
        if p == NULL:
            return j
        out[j] = (p[0] >> (idx[j] & 7)) & 1
    return -1


cdef Py_ssize_t row_bounds(const Paged* offs, const Paged* vals, const int64_t* part,
                           const int64_t* idx, Py_ssize_t n, int64_t* starts, int64_t* lens,
                           int64_t* total) noexcept nogil:
    """Start element and length of every row ``idx[j]``; the first bad j, or -1."""
    cdef Py_ssize_t j
    cdef int64_t o0, o1
    cdef const uint8_t* p
    total[0] = 0
    for j in range(min(n, PREFETCH_AHEAD)):
        p = paged_addr(part_of(offs, part, j), idx[j])
        if p != NULL:
            prefetch(p)
    for j in range(n):
        if j + PREFETCH_AHEAD < n:
            p = paged_addr(part_of(offs, part, j + PREFETCH_AHEAD), idx[j + PREFETCH_AHEAD])
            if p != NULL:
                prefetch(p)
        if read_bounds(part_of(offs, part, j), idx[j], &o0, &o1) < 0 \
                or o1 > part_of(vals, part, j).length:
            return j
        starts[j] = o0
        lens[j] = o1 - o0
        total[0] += o1 - o0
    return -1


cdef Py_ssize_t gather_rows(const Paged* vals, const int64_t* part, const int64_t* starts,
                            const int64_t* lens, Py_ssize_t n, int64_t width,
                            const uint8_t* pad, uint8_t* out) noexcept nogil:
    """Copy rows of ``lens[j]`` elements from ``starts[j]`` to ``out``.

    ``width`` < 0 packs them back to back; otherwise each row takes
    ``width`` elements, its tail filled with the element ``pad`` (NULL: zeros).
    Returns the first bad j, or -1.
    """
    cdef Py_ssize_t j
    cdef int64_t e, eb = vals.elem_bytes
    for j in range(n):
        if paged_copy(part_of(vals, part, j), starts[j], starts[j] + lens[j], out) < 0:
            return j
        if width < 0:
            out += lens[j] * eb
            continue
        if pad == NULL:
            memset(out + lens[j] * eb, 0, (width - lens[j]) * eb)
        else:
            for e in range(lens[j], width):
                memcpy(out + e * eb, pad, eb)
        out += width * eb
    return -1


cdef int64_t decompress_frame(ZSTD_DCtx* dctx, const ZSTD_DDict* ddict, const uint8_t* src,
                              int64_t size, uint8_t* dst, int64_t cap) noexcept nogil:
    """Decompress one zstd frame into ``dst``; its size, or -1 if it is not valid."""
    cdef size_t res
    if ddict != NULL:
        res = ZSTD_decompress_usingDDict(dctx, dst, cap, src, size, ddict)
    else:
        res = ZSTD_decompressDCtx(dctx, dst, cap, src, size)
    return -1 if ZSTD_isError(res) else <int64_t>res


# What the cold-read stage needs of a field, as plain data.
cdef struct FieldIO:
    const Paged* index       # offsets (raw variable), blocks (zstd) or values (raw fixed)
    const Paged* values
    const Paged* validity    # nullable fields; NULL otherwise
    int64_t rows_per_block   # zstd fields; 0 for raw ones
    bint variable


cdef int field_spans(const FieldIO* io, int64_t i, bint data, const uint8_t* map_base,
                     Spans* out) noexcept nogil:
    """Add the map spans row ``i`` of a field needs: its index entries or, with
    ``data``, the values (or zstd frame) they point at. Damage is skipped."""
    cdef int64_t j = i, lo, hi
    if io.values == NULL:  # a reader over shards: each shard fetches its own
        return 0
    if io.validity != NULL and not data:
        if paged_spans(io.validity, map_base, i >> 3, (i >> 3) + 1, out) < 0:
            return -1
    if io.rows_per_block > 0:
        j = i // io.rows_per_block
    elif not io.variable:
        return 0 if data else paged_spans(io.values, map_base, i, i + 1, out)
    if not data:
        return paged_spans(io.index, map_base, j, j + 2, out)
    if read_bounds(io.index, j, &lo, &hi) < 0:
        return 0
    return paged_spans(io.values, map_base, lo, hi, out)


# -- field readers: one per storage kind ----------------------------------------------------

cdef class FieldReader:
    """Read one field: a row in three steps (``hint``, ``locate``, ``take``), a
    column or padded column of a batch, and the byte spans of the cold stage.

    A reader belongs to one Decoder, hence to one thread. Subclasses:
    :class:`RawField` (docs/FORMAT.md, section 4) and :class:`ZstdField`
    (section 5).
    """

    cdef readonly str name
    cdef str where             # "<path>: field '<name>'", for errors
    cdef readonly int kind
    cdef readonly tuple element_shape
    cdef object dtype
    cdef int code          # ScalarCode of the dtype
    cdef int typenum
    cdef int64_t eb        # bytes of one element
    cdef bint variable
    cdef int64_t n_rows
    cdef FieldIO io
    cdef list keep_alive
    cdef readonly bint nullable  # has a validity bitmap (docs/FORMAT.md, section 10)
    cdef Paged validity

    def __init__(self, int64_t n_rows, dict spec):
        self.n_rows = n_rows
        self.name = spec["name"]
        # Errors name the file too, when the caller says which (docs/FORMAT.md, section 11).
        path = spec.get("path")
        self.where = f"{path}: field {self.name!r}" if path else f"field {self.name!r}"
        self.kind = spec["kind"]
        self.dtype = np.dtype(spec["dtype"])
        self.code = scalar_code(self.dtype)
        self.typenum = self.dtype.num
        self.element_shape = tuple(spec["element_shape"])
        self.eb = self.dtype.itemsize * int(np.prod(self.element_shape, dtype=np.int64))
        self.variable = self.kind in (K_STRING, K_BYTES, K_VARIABLE)
        self.keep_alive = []
        if spec.get("validity") is not None:
            self.set_paged(&self.validity, spec["validity"])
            self.nullable = True
            self.io.validity = &self.validity

    cdef int set_paged(self, Paged* p, dict spec) except -1:
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
        return 0

    cdef void hint(self, int64_t i) noexcept:
        """Start loading row ``i``'s index entry into the CPU cache."""
        pass

    cdef int bit(self, int64_t i) except -1:
        """Row ``i``'s validity bit: 1 if it holds a value, 0 if it is null."""
        cdef const uint8_t* p
        if not self.nullable:
            return 1
        p = paged_addr(&self.validity, i >> 3)
        if p == NULL:
            raise self.damaged_validity(i)
        return (p[0] >> (i & 7)) & 1

    cdef object damaged_validity(self, int64_t row):
        return FormatError(
            f"{self.where}, row {row}: the validity bitmap is out of bounds; "
            "the file is damaged or truncated"
        )

    cdef object valid_column(self, const int64_t[::1] idx):
        """A bool array: whether each row ``idx[j]`` holds a value."""
        cdef Py_ssize_t j, bad = -1, n = idx.shape[0]
        cdef cnp.npy_intp dims[1]
        dims[0] = n
        out = cnp.PyArray_SimpleNew(1, dims, cnp.NPY_BOOL)
        cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
        if not self.nullable:
            memset(dst, 1, n)
        elif self.io.validity == NULL:  # a reader over shards: each row's own shard
            for j in range(n):
                dst[j] = self.bit(idx[j])
        elif n:
            with nogil:
                bad = gather_bits(&self.validity, &idx[0], n, dst)
            if bad >= 0:
                raise self.damaged_validity(idx[bad])
        return out

    cdef int locate(self, int64_t i) except -1:
        """Find row ``i``'s data (after every field's ``hint``)."""
        return 0

    cdef object take(self, int64_t i):
        """Row ``i`` as a Python value (after ``locate``)."""
        raise NotImplementedError

    cdef object column(self, const int64_t[::1] idx, bint raw):
        raise NotImplementedError

    cdef object padded(self, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len):
        raise NotImplementedError

    cdef object damaged(self, int64_t row):
        return FormatError(
            f"{self.where}, row {row}: stored offsets or chunk addresses are "
            "out of bounds; the file is damaged or truncated"
        )

    cdef object text(self, int64_t row, const uint8_t* ptr, int64_t size):
        try:
            return PyUnicode_DecodeUTF8(<const char*>ptr, size, "strict")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"{self.where}, row {row}: stored text is not valid UTF-8; "
                "the file is damaged"
            ) from exc

    cdef object build(self, int64_t row, const uint8_t* ptr, int64_t nelem):
        """The Python value of a row of ``nelem`` elements at ``ptr``."""
        cdef object arr
        cdef int64_t nbytes = nelem * self.eb
        if self.kind == K_STRING:
            return self.text(row, ptr, nbytes)
        if self.kind == K_BYTES:
            return PyBytes_FromStringAndSize(<const char*>ptr, nbytes)
        if self.kind == K_SCALAR and self.code != S_NONE:
            return scalar_object(self.code, ptr)
        if self.kind == K_VARIABLE:
            arr = new_array(1, nelem, 0, self.element_shape, self.typenum)
        else:
            arr = new_array(0, 0, 0, self.element_shape, self.typenum)
        memcpy(cnp.PyArray_DATA(arr), ptr, nbytes)
        return arr

    cdef int check_pad(self, const uint8_t[::1] pad) except -1:
        if not self.variable:
            raise TypeError(f"field {self.name!r} has a fixed size; nothing to pad")
        if pad.shape[0] != self.eb:
            raise ValueError(f"pad must be {self.eb} bytes, got {pad.shape[0]}")
        return 0


cdef class RawField(FieldReader):
    """A field stored raw (docs/FORMAT.md, section 4): fixed rows in ``values``,
    or variable rows as ``offsets`` into ``values``."""

    cdef Paged values
    cdef Paged offsets
    cdef int64_t lo, hi        # the located row's elements (variable fields)
    cdef uint8_t* scratch      # a row that spans chunks, made contiguous
    cdef int64_t scratch_size

    def __init__(self, int64_t n_rows, dict spec):
        FieldReader.__init__(self, n_rows, spec)
        self.set_paged(&self.values, spec["values"])
        if self.variable:
            self.set_paged(&self.offsets, spec["offsets"])
        self.io.index = &self.offsets if self.variable else &self.values
        self.io.values = &self.values
        self.io.variable = self.variable

    def __dealloc__(self):
        free(self.scratch)

    cdef void hint(self, int64_t i) noexcept:
        cdef const uint8_t* p = paged_addr(self.io.index, i)
        if p != NULL:
            prefetch(p)

    cdef int locate(self, int64_t i) except -1:
        cdef const uint8_t* p
        if self.variable:
            # Checked before anything is sized by the row's length.
            if read_bounds(&self.offsets, i, &self.lo, &self.hi) < 0 or self.hi > self.values.length:
                raise self.damaged(i)
            p = paged_addr(&self.values, self.lo)
            if p != NULL:
                prefetch(p)
        return 0

    cdef object take(self, int64_t i):
        cdef const uint8_t* ptr
        cdef int r
        if not self.variable:
            if self.kind == K_SCALAR and self.code != S_NONE:
                if paged_ptr(&self.values, i, i + 1, &ptr) != 1:
                    raise self.damaged(i)
                return scalar_object(self.code, ptr)
            arr = new_array(0, 0, 0, self.element_shape, self.typenum)
            if paged_copy(&self.values, i, i + 1, <uint8_t*>cnp.PyArray_DATA(arr)) < 0:
                raise self.damaged(i)
            return arr
        if self.kind == K_VARIABLE:
            arr = new_array(1, self.hi - self.lo, 0, self.element_shape, self.typenum)
            if paged_copy(&self.values, self.lo, self.hi, <uint8_t*>cnp.PyArray_DATA(arr)) < 0:
                raise self.damaged(i)
            return arr
        r = paged_ptr(&self.values, self.lo, self.hi, &ptr)
        if r < 0:
            raise self.damaged(i)
        if r == 0:
            ptr = self.contiguous(i, self.lo, self.hi)
        return self.build(i, ptr, self.hi - self.lo)

    cdef const uint8_t* contiguous(self, int64_t row, int64_t lo, int64_t hi) except NULL:
        """Elements [lo, hi) copied to the scratch buffer."""
        cdef int64_t size = (hi - lo) * self.eb
        if size > self.scratch_size:
            free(self.scratch)
            self.scratch = <uint8_t*>malloc(max(size, 4096))
            self.scratch_size = 0 if self.scratch == NULL else max(size, 4096)
            if self.scratch == NULL:
                raise MemoryError()
        if paged_copy(&self.values, lo, hi, self.scratch) < 0:
            raise self.damaged(row)
        return self.scratch

    cdef int64_t bounds(self, const int64_t[::1] idx, int64_t* starts,
                        int64_t* lens) except -1:
        """Fill every row's start and length; return the elements in all."""
        cdef int64_t total
        cdef Py_ssize_t bad, n = idx.shape[0]
        if n == 0:
            return 0
        with nogil:
            bad = row_bounds(&self.offsets, &self.values, NULL, &idx[0], n, starts, lens, &total)
        if bad >= 0:
            raise self.damaged(idx[bad])
        return total

    cdef object column(self, const int64_t[::1] idx, bint raw):
        if not self.variable:
            return self.fixed_column(idx)
        if self.kind == K_VARIABLE or raw:
            return self.ragged_column(idx)
        return self.object_column(idx)

    cdef object fixed_column(self, const int64_t[::1] idx):
        cdef Py_ssize_t bad = -1, n = idx.shape[0]
        arr = new_array(1, n, 0, self.element_shape, self.typenum)
        cdef uint8_t* out = <uint8_t*>cnp.PyArray_DATA(arr)
        if n:
            with nogil:
                bad = gather_fixed(&self.values, NULL, &idx[0], n, out)
        if bad >= 0:
            raise self.damaged(idx[bad])
        return arr

    cdef object ragged_column(self, const int64_t[::1] idx):
        cdef Py_ssize_t j, bad = -1, n = idx.shape[0]
        starts = np.empty(n, np.int64)
        offsets = np.zeros(n + 1, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(starts)
        cdef int64_t* of = <int64_t*>cnp.PyArray_DATA(offsets)
        cdef int64_t total = self.bounds(idx, st, of + 1)
        flat = new_array(1, total, 0, self.element_shape, self.typenum)
        cdef uint8_t* out = <uint8_t*>cnp.PyArray_DATA(flat)
        with nogil:
            bad = gather_rows(&self.values, NULL, st, of + 1, n, -1, NULL, out)
            for j in range(n):
                of[j + 1] += of[j]
        if bad >= 0:
            raise self.damaged(idx[bad])
        return flat, offsets

    cdef list object_column(self, const int64_t[::1] idx):
        """str or bytes of every row, made in one loop."""
        cdef Py_ssize_t j = 0, n = idx.shape[0]
        cdef list out = PyList_New(n)
        cdef object item
        cdef const uint8_t* p
        bounds = np.empty(2 * n, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(bounds)
        cdef int64_t* ln = st + n
        self.bounds(idx, st, ln)
        for j in range(n):
            if j + PREFETCH_AHEAD < n:
                p = paged_addr(&self.values, st[j + PREFETCH_AHEAD])
                if p != NULL:
                    prefetch(p)
            if paged_ptr(&self.values, st[j], st[j] + ln[j], &p) != 1:  # spans chunks
                p = self.contiguous(idx[j], st[j], st[j] + ln[j])
            item = self.build(idx[j], p, ln[j])
            Py_INCREF(item)
            PyList_SET_ITEM(out, j, item)
        return out

    cdef object padded(self, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len):
        cdef Py_ssize_t j, bad = -1, n = idx.shape[0]
        cdef int64_t e, width = min_len
        cdef bint zero_pad = True
        self.check_pad(pad)
        starts = np.empty(n, np.int64)
        lengths = np.empty(n, np.int64)
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(starts)
        cdef int64_t* ln = <int64_t*>cnp.PyArray_DATA(lengths)
        self.bounds(idx, st, ln)
        for j in range(n):
            width = max(width, ln[j])
        for e in range(self.eb):
            zero_pad = zero_pad and pad[e] == 0
        out = new_array(2, n, width, self.element_shape, self.typenum)
        cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
        with nogil:
            bad = gather_rows(&self.values, NULL, st, ln, n, width, NULL if zero_pad else &pad[0],
                              dst)
        if bad >= 0:
            raise self.damaged(idx[bad])
        return out, lengths


cdef class ZstdField(FieldReader):
    """A field stored as zstd frames of ``rows_per_block`` rows (docs/FORMAT.md,
    section 5). The last decompressed block is kept, for rows read in order."""

    cdef Paged values
    cdef Paged blocks
    cdef int64_t max_block
    cdef ZSTD_DDict* ddict
    cdef ZSTD_DCtx* dctx       # per field: a context keeps its dictionary's tables warm
    cdef int64_t cached        # the block in ``cache``, or -1
    cdef uint8_t* cache
    cdef int64_t cache_cap
    cdef int64_t* starts       # variable fields: each cached row's first element
    cdef int64_t starts_cap
    cdef uint8_t* frame        # a frame that spans chunks, made contiguous
    cdef int64_t frame_cap

    def __init__(self, int64_t n_rows, dict spec):
        cdef const uint8_t[::1] dictionary
        FieldReader.__init__(self, n_rows, spec)
        zstd = spec["zstd"]
        self.set_paged(&self.values, spec["values"])
        self.set_paged(&self.blocks, zstd["blocks"])
        self.io.index = &self.blocks
        self.io.values = &self.values
        self.io.rows_per_block = max(<int64_t>zstd["rows_per_block"], 1)
        self.io.variable = self.variable
        self.max_block = zstd["max_block_bytes"]
        self.cached = -1
        self.dctx = ZSTD_createDCtx()
        if self.dctx == NULL:
            raise MemoryError()
        if zstd.get("dictionary") is not None:
            dictionary = zstd["dictionary"]
            if dictionary.shape[0] == 0:
                raise FormatError(f"{self.where}: the stored zstd dictionary is empty")
            self.ddict = ZSTD_createDDict(&dictionary[0], dictionary.shape[0])
            if self.ddict == NULL:
                raise FormatError(f"{self.where}: the stored zstd dictionary is invalid")

    def __dealloc__(self):
        free(self.cache)
        free(self.starts)
        free(self.frame)
        if self.ddict != NULL:
            ZSTD_freeDDict(self.ddict)
        if self.dctx != NULL:
            ZSTD_freeDCtx(self.dctx)

    cdef uint8_t* grow(self, uint8_t** buf, int64_t* cap, int64_t size) except NULL:
        if size > cap[0]:
            free(buf[0])
            buf[0] = <uint8_t*>malloc(max(size, 64))
            cap[0] = 0 if buf[0] == NULL else max(size, 64)
            if buf[0] == NULL:
                raise MemoryError()
        return buf[0]

    cdef object bad_frame(self, int64_t j, int64_t r):
        """The error for frame ``j`` (of ``r`` rows): zstd checks each frame's content
        checksum as it decodes (FORMAT.md, section 6), so damaged bytes end here."""
        rows = f"row {j * self.io.rows_per_block}" if r == 1 else (
            f"rows {j * self.io.rows_per_block}-{j * self.io.rows_per_block + r - 1}")
        return FormatError(
            f"{self.where}, {rows}: zstd frame {j} does not decode to its rows (its bytes, "
            "its checksum, its offsets in blocks or the field's dictionary are damaged); "
            "the file is damaged"
        )

    cdef int load(self, int64_t j) except -1:
        """Make block ``j`` the cached, decompressed block."""
        cdef int64_t c0, c1, size, got, r, p, R = self.io.rows_per_block
        cdef const uint8_t* src
        cdef unsigned long long content
        cdef const uint32_t* lens
        cdef int ok
        if self.cached == j:
            return 0
        self.cached = -1
        if read_bounds(&self.blocks, j, &c0, &c1) < 0:
            raise self.damaged(j * R)
        ok = paged_ptr(&self.values, c0, c1, &src)
        if ok == 0:
            src = self.grow(&self.frame, &self.frame_cap, c1 - c0)
            ok = 1 if paged_copy(&self.values, c0, c1, <uint8_t*>src) == 0 else -1
        if ok < 0:
            raise self.damaged(j * R)
        content = ZSTD_getFrameContentSize(src, c1 - c0)
        r = min(R, self.n_rows - j * R)
        if content > <unsigned long long>self.max_block:  # also catches zstd's error codes
            raise self.bad_frame(j, r)
        size = <int64_t>content
        # The declared size is checked before it is allocated: against the block's
        # rows, and against what a frame of this many bytes can produce at most.
        if (size < 4 * r if self.variable else size != r * self.eb) or size > frame_bound(c1 - c0):
            raise self.bad_frame(j, r)
        self.grow(&self.cache, &self.cache_cap, size)
        with nogil:
            got = decompress_frame(self.dctx, self.ddict, src, c1 - c0, self.cache, size)
        if got != size:
            raise self.bad_frame(j, r)
        if self.variable:
            if r + 1 > self.starts_cap:
                free(self.starts)
                self.starts = <int64_t*>malloc((r + 1) * sizeof(int64_t))
                self.starts_cap = 0 if self.starts == NULL else r + 1
                if self.starts == NULL:
                    raise MemoryError()
            lens = <const uint32_t*>self.cache
            self.starts[0] = 0
            for p in range(r):
                self.starts[p + 1] = self.starts[p] + lens[p]
            if 4 * r + self.starts[r] * self.eb != size:
                raise self.bad_frame(j, r)
        self.cached = j
        return 0

    def elements(self):
        """Elements of all rows together, from the frame headers alone (no decompression).

        Each frame's header records its decompressed size (docs/FORMAT.md,
        section 5); sizes that disagree with the block's rows are damage.
        """
        cdef int64_t R = self.io.rows_per_block, j, c0, c1, r, size, take, total = 0
        cdef int64_t nb = (self.n_rows + R - 1) // R
        cdef uint8_t head[18]  # ZSTD_FRAMEHEADERSIZE_MAX
        cdef unsigned long long content
        for j in range(nb):
            if read_bounds(&self.blocks, j, &c0, &c1) < 0:
                raise self.damaged(j * R)
            take = min(c1 - c0, 18)
            if paged_copy(&self.values, c0, c0 + take, head) < 0:
                raise self.damaged(j * R)
            content = ZSTD_getFrameContentSize(head, take)
            # Above the field's largest block or above what the frame's own bytes
            # can decompress to (this also catches zstd's error codes): a lie.
            if (content > <unsigned long long>self.max_block
                    or content > <unsigned long long>frame_bound(c1 - c0)):
                raise self.damaged(j * R)
            size = <int64_t>content
            r = min(R, self.n_rows - j * R)
            if not self.variable:
                if size != r * self.eb:
                    raise self.damaged(j * R)
                total += r
            elif size < 4 * r or self.eb <= 0 or (size - 4 * r) % self.eb:
                raise self.damaged(j * R)
            else:
                total += (size - 4 * r) // self.eb
        return total

    cdef int span(self, int64_t row, const uint8_t** ptr, int64_t* nelem) except -1:
        """Point at row ``row`` in its decompressed block."""
        cdef int64_t R = self.io.rows_per_block
        cdef int64_t j = row // R, p = row - j * R, r
        self.load(j)
        if self.variable:
            r = min(R, self.n_rows - j * R)
            ptr[0] = self.cache + 4 * r + self.starts[p] * self.eb
            nelem[0] = self.starts[p + 1] - self.starts[p]
        else:
            ptr[0] = self.cache + p * self.eb
            nelem[0] = 1
        return 0

    cdef object take(self, int64_t i):
        cdef const uint8_t* ptr
        cdef int64_t nelem
        self.span(i, &ptr, &nelem)
        return self.build(i, ptr, nelem)

    cdef object column(self, const int64_t[::1] idx, bint raw):
        """Rows copied out of their blocks (each block decompressed once for
        sorted or clustered rows, thanks to the one-block cache)."""
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef const uint8_t* ptr
        cdef int64_t nelem
        cdef list out
        cdef object item
        if (self.kind == K_STRING or self.kind == K_BYTES) and not raw:
            out = PyList_New(n)
            for j in range(n):
                item = self.take(idx[j])
                Py_INCREF(item)
                PyList_SET_ITEM(out, j, item)
            return out
        if not self.variable:
            arr = new_array(1, n, 0, self.element_shape, self.typenum)
            for j in range(n):
                self.span(idx[j], &ptr, &nelem)
                memcpy(<uint8_t*>cnp.PyArray_DATA(arr) + j * self.eb, ptr, self.eb)
            return arr
        return self.ragged_column(idx)

    cdef object ragged_column(self, const int64_t[::1] idx):
        """Variable rows gathered into a growing buffer, then copied once."""
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef const uint8_t* ptr
        cdef int64_t nelem, cap = 0, used = 0, want
        cdef uint8_t* buf = NULL
        cdef uint8_t* grown
        offsets = np.empty(n + 1, np.int64)
        cdef int64_t[::1] of = offsets
        of[0] = 0
        try:
            for j in range(n):
                self.span(idx[j], &ptr, &nelem)
                want = used + nelem * self.eb
                if want > cap:
                    cap = max(want, 2 * cap, 4096)
                    grown = <uint8_t*>realloc(buf, cap)
                    if grown == NULL:
                        raise MemoryError()
                    buf = grown
                memcpy(buf + used, ptr, nelem * self.eb)
                used = want
                of[j + 1] = of[j] + nelem
            flat = new_array(1, of[n], 0, self.element_shape, self.typenum)
            if used:
                memcpy(cnp.PyArray_DATA(flat), buf, used)
        finally:
            free(buf)
        return flat, offsets

    cdef object padded(self, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len):
        self.check_pad(pad)
        if self.kind != K_VARIABLE:
            raise TypeError(f"field {self.name!r}: only numeric sequences are padded")
        flat, offsets = self.ragged_column(idx)
        return pad_ragged(flat, offsets, pad, min_len)


cdef inline Py_ssize_t shard_of(const int64_t* starts, Py_ssize_t n_parts,
                                int64_t i) noexcept nogil:
    """The shard holding checked row ``i``: the last one starting at or before it.

    A binary search whose steps depend on ``n_parts`` only, each a conditional
    move: random rows cost no mispredicted branches.
    """
    cdef Py_ssize_t base = 0, half, size = n_parts
    while size > 1:
        half = size // 2
        base = base + half if starts[base + half] <= i else base
        size -= half
    return base


cdef void locate_rows(const int64_t* idx, Py_ssize_t n, const int64_t* starts,
                      Py_ssize_t n_parts, int64_t* part, int64_t* local) noexcept nogil:
    """Each checked row's shard and its row there."""
    cdef Py_ssize_t j, s
    for j in range(n):
        s = shard_of(starts, n_parts, idx[j])
        part[j] = s
        local[j] = idx[j] - starts[s]


cdef tuple group_rows(const int64_t* idx, Py_ssize_t n, const int64_t* starts,
                      Py_ssize_t n_parts):
    """Rows grouped by shard (a counting sort, keeping their order within a shard).

    Returns ``(grouped, begin, shard, where)``: the rows' local indices, shard
    by shard; where each shard's group begins (``n_parts + 1`` entries); each
    row's shard; and each row's place in ``grouped``.
    """
    cdef Py_ssize_t j, s
    begin = np.zeros(n_parts + 1, np.int64)
    shard = np.empty(n, np.int64)
    grouped = np.empty(n, np.int64)
    where = np.empty(n, np.int64)
    cdef int64_t* bg = <int64_t*>cnp.PyArray_DATA(begin)
    cdef int64_t* sh = <int64_t*>cnp.PyArray_DATA(shard)
    cdef int64_t* gr = <int64_t*>cnp.PyArray_DATA(grouped)
    cdef int64_t* wh = <int64_t*>cnp.PyArray_DATA(where)
    cdef int64_t* fill = <int64_t*>malloc(max(n_parts, 1) * sizeof(int64_t))
    if fill == NULL:
        raise MemoryError()
    for j in range(n):
        sh[j] = shard_of(starts, n_parts, idx[j])
        bg[sh[j] + 1] += 1
    for s in range(n_parts):
        bg[s + 1] += bg[s]
        fill[s] = bg[s]
    for j in range(n):
        s = sh[j]
        wh[j] = fill[s]
        gr[fill[s]] = idx[j] - starts[s]
        fill[s] += 1
    free(fill)
    return grouped, begin, shard, where


def split_by_shard(const int64_t[::1] idx, const int64_t[::1] starts):
    """Checked global rows as ``(local rows grouped by shard, where each group
    begins, each row's place among the grouped rows)``; ``starts`` holds each
    shard's first row and the total."""
    if starts.shape[0] < 2:
        raise ValueError("starts must hold each shard's first row and the total")
    cdef Py_ssize_t n = idx.shape[0]
    grouped, begin, _, where = group_rows(&idx[0] if n else NULL, n, &starts[0],
                                          starts.shape[0] - 1)
    return grouped, begin, where


cdef class ShardRows:
    """Rows numbered across shards: each shard's first row (and the total), and the
    last batch located in them, which every field of the batch asks for again."""

    cdef int64_t* starts
    cdef Py_ssize_t n_parts
    cdef bytes last            # the last batch's rows
    cdef object located        # their shards, then rows there: 2n int64, read-only

    def __init__(self, const int64_t[::1] starts):
        cdef Py_ssize_t s
        if starts.shape[0] < 2:
            raise ValueError("starts must hold each shard's first row and the total")
        self.n_parts = starts.shape[0] - 1
        self.starts = <int64_t*>malloc((self.n_parts + 1) * sizeof(int64_t))
        if self.starts == NULL:
            raise MemoryError()
        for s in range(self.n_parts + 1):
            self.starts[s] = starts[s]

    def __dealloc__(self):
        free(self.starts)

    cdef object locate(self, const int64_t[::1] idx):
        """Each checked row's shard, then each one's row there, as 2n int64."""
        cdef Py_ssize_t n = idx.shape[0]
        cdef Py_ssize_t size = n * sizeof(int64_t)
        if (self.last is not None and PyBytes_GET_SIZE(self.last) == size
                and memcmp(PyBytes_AS_STRING(self.last), &idx[0], size) == 0):
            return self.located
        rows = new_array(1, 2 * n, 0, (), cnp.NPY_INT64)
        cdef int64_t* part = <int64_t*>cnp.PyArray_DATA(rows)
        locate_rows(&idx[0], n, self.starts, self.n_parts, part, part + n)
        self.last = PyBytes_FromStringAndSize(<const char*>&idx[0], size)
        self.located = rows
        return rows


cdef class ShardedField(FieldReader):
    """One field over several shards, rows numbered across them in shard order.

    When every shard stores the field raw, a batch is read in one pass by the
    kernels of :class:`RawField`, each row from its own shard's arrays.
    Otherwise each shard's reader decodes its rows (one call per shard) and
    they are put back in the order asked for, in C.
    """

    cdef list parts            # a FieldReader per shard
    cdef ShardRows rows        # shared by the fields of a joined Decoder
    cdef const int64_t* starts  # first row of each shard, and the total
    cdef Py_ssize_t n_parts
    cdef FieldReader current   # the located row's shard reader
    cdef int64_t local         # and its row there
    # Raw shards: a copy of each shard's paged arrays (their readers, in ``parts``,
    # keep the memory they point at).
    cdef Paged* values
    cdef Paged* offsets

    def __init__(self, list parts, ShardRows rows):
        cdef FieldReader first, part
        cdef Py_ssize_t s
        if not parts or rows.n_parts != len(parts):
            raise ValueError("ShardedField needs a reader per shard")
        first = parts[0]
        for part in parts:
            if (part.kind, part.dtype, part.element_shape) != (first.kind, first.dtype,
                                                              first.element_shape):
                raise ValueError(f"field {first.name!r} is stored differently in two shards")
        self.name, self.kind, self.dtype = first.name, first.kind, first.dtype
        self.where = f"field {self.name!r}"  # a damaged row is named by its shard's reader
        self.code, self.typenum, self.eb = first.code, first.typenum, first.eb
        self.element_shape, self.variable = first.element_shape, first.variable
        self.nullable = any(part.nullable for part in parts)
        self.keep_alive = []
        self.parts = parts
        self.rows = rows
        self.starts = rows.starts
        self.n_parts = rows.n_parts
        self.n_rows = self.starts[self.n_parts]
        # Exactly RawField: a subclass may read more than these arrays.
        if all(type(part) is RawField for part in parts):
            self.values = <Paged*>malloc(self.n_parts * sizeof(Paged))
            self.offsets = <Paged*>malloc(self.n_parts * sizeof(Paged))
            if self.values == NULL or self.offsets == NULL:
                raise MemoryError()
            for s in range(self.n_parts):
                self.values[s] = (<RawField>parts[s]).values
                self.offsets[s] = (<RawField>parts[s]).offsets

    def __dealloc__(self):
        free(self.values)
        free(self.offsets)

    cdef inline Py_ssize_t shard_of(self, int64_t i) noexcept nogil:
        return shard_of(self.starts, self.n_parts, i)

    cdef void hint(self, int64_t i) noexcept:
        cdef Py_ssize_t s = self.shard_of(i)
        (<FieldReader>self.parts[s]).hint(i - self.starts[s])

    cdef int bit(self, int64_t i) except -1:
        cdef Py_ssize_t s = self.shard_of(i)
        return (<FieldReader>self.parts[s]).bit(i - self.starts[s])

    cdef int locate(self, int64_t i) except -1:
        cdef Py_ssize_t s = self.shard_of(i)
        self.current = <FieldReader>self.parts[s]
        self.local = i - self.starts[s]
        return self.current.locate(self.local)

    cdef object take(self, int64_t i):
        return self.current.take(self.local)

    cdef object column(self, const int64_t[::1] idx, bint raw):
        cdef Py_ssize_t s, n = idx.shape[0]
        if self.n_parts == 1 or n == 0:
            return (<FieldReader>self.parts[0]).column(idx, raw)
        if self.values != NULL:
            return self.raw_column(idx, raw)
        grouped, begin, shard, where = group_rows(&idx[0], n, self.starts, self.n_parts)
        parts = [(<FieldReader>self.parts[s]).column(grouped[begin[s]:begin[s + 1]], raw)
                 if begin[s + 1] > begin[s] else None for s in range(self.n_parts)]
        return self.interleave(parts, shard, where, begin, raw)

    cdef object damaged_at(self, int64_t row):
        cdef Py_ssize_t s = self.shard_of(row)
        return (<FieldReader>self.parts[s]).damaged(row - self.starts[s])

    cdef object raw_column(self, const int64_t[::1] idx, bint raw):
        """A column of raw shards in one pass over the rows, as RawField reads one."""
        cdef Py_ssize_t j, bad = -1, n = idx.shape[0]
        cdef int64_t total
        cdef uint8_t* dst
        rows = self.rows.locate(idx)
        cdef const int64_t* part = <const int64_t*>cnp.PyArray_DATA(rows)
        cdef const int64_t* local = part + n
        if not self.variable:
            arr = new_array(1, n, 0, self.element_shape, self.typenum)
            dst = <uint8_t*>cnp.PyArray_DATA(arr)
            with nogil:
                bad = gather_fixed(self.values, part, local, n, dst)
            if bad >= 0:
                raise self.damaged_at(idx[bad])
            return arr
        bounds = np.empty((2, n), np.int64)  # each row's first element, and length
        cdef int64_t* st = <int64_t*>cnp.PyArray_DATA(bounds)
        cdef int64_t* ln = st + n
        with nogil:
            bad = row_bounds(self.offsets, self.values, part, local, n, st, ln, &total)
        if bad >= 0:
            raise self.damaged_at(idx[bad])
        if (self.kind == K_STRING or self.kind == K_BYTES) and not raw:
            return self.objects(idx, part, local, st, ln)
        offsets = np.empty(n + 1, np.int64)
        cdef int64_t* of = <int64_t*>cnp.PyArray_DATA(offsets)
        flat = new_array(1, total, 0, self.element_shape, self.typenum)
        dst = <uint8_t*>cnp.PyArray_DATA(flat)
        with nogil:
            bad = gather_rows(self.values, part, st, ln, n, -1, NULL, dst)
            of[0] = 0
            for j in range(n):
                of[j + 1] = of[j] + ln[j]
        if bad >= 0:
            raise self.damaged_at(idx[bad])
        return flat, offsets

    cdef list objects(self, const int64_t[::1] idx, const int64_t* part, const int64_t* local,
                      const int64_t* st, const int64_t* ln):
        """str or bytes of every row, made in one loop."""
        cdef Py_ssize_t j, n = idx.shape[0]
        cdef list out = PyList_New(n)
        cdef object item
        cdef const uint8_t* p
        cdef const Paged* values = self.values
        for j in range(n):
            if j + PREFETCH_AHEAD < n:
                p = paged_addr(values + part[j + PREFETCH_AHEAD], st[j + PREFETCH_AHEAD])
                if p != NULL:
                    prefetch(p)
            if paged_ptr(values + part[j], st[j], st[j] + ln[j], &p) != 1:  # spans chunks
                p = (<RawField>self.parts[part[j]]).contiguous(local[j], st[j], st[j] + ln[j])
            item = self.build(idx[j], p, ln[j])
            Py_INCREF(item)
            PyList_SET_ITEM(out, j, item)
        return out

    cdef object interleave(self, list parts, shard, where, begin, bint raw):
        """Rows of the per-shard columns, in the asked order."""
        cdef Py_ssize_t j, s, p, n = len(shard)
        cdef const int64_t* sh = <const int64_t*>cnp.PyArray_DATA(shard)
        cdef const int64_t* wh = <const int64_t*>cnp.PyArray_DATA(where)
        cdef const int64_t* bg = <const int64_t*>cnp.PyArray_DATA(begin)
        cdef list out
        cdef object item
        if (self.kind == K_STRING or self.kind == K_BYTES) and not raw:
            out = PyList_New(n)
            for j in range(n):
                s = sh[j]
                item = (<list>parts[s])[wh[j] - bg[s]]
                Py_INCREF(item)
                PyList_SET_ITEM(out, j, item)
            return out
        # Each shard's data (and offsets) as pointers, kept alive by ``keep``.
        keep = []
        cdef const uint8_t** data = <const uint8_t**>calloc(self.n_parts, sizeof(uint8_t*))
        cdef const int64_t** offs = <const int64_t**>calloc(self.n_parts, sizeof(int64_t*))
        cdef int64_t e, eb = self.eb
        try:
            if data == NULL or offs == NULL:
                raise MemoryError()
            for s in range(self.n_parts):
                part = parts[s]
                if part is None:
                    continue
                arr = np.ascontiguousarray(part[0] if self.variable else part)
                keep.append(arr)
                data[s] = <const uint8_t*>cnp.PyArray_DATA(arr)
                if self.variable:
                    arr = np.ascontiguousarray(part[1], np.int64)
                    keep.append(arr)
                    offs[s] = <const int64_t*>cnp.PyArray_DATA(arr)
            if not self.variable:
                out_arr = new_array(1, n, 0, self.element_shape, self.typenum)
                for j in range(n):
                    s = sh[j]
                    memcpy(<uint8_t*>cnp.PyArray_DATA(out_arr) + j * eb,
                           data[s] + (wh[j] - bg[s]) * eb, eb)
                return out_arr
            offsets = np.empty(n + 1, np.int64)
            of = <int64_t*>cnp.PyArray_DATA(offsets)
            of[0] = 0
            for j in range(n):
                s = sh[j]
                p = wh[j] - bg[s]
                of[j + 1] = of[j] + offs[s][p + 1] - offs[s][p]
            flat = new_array(1, of[n], 0, self.element_shape, self.typenum)
            for j in range(n):
                s = sh[j]
                p = wh[j] - bg[s]
                e = offs[s][p]
                memcpy(<uint8_t*>cnp.PyArray_DATA(flat) + of[j] * eb, data[s] + e * eb,
                       (of[j + 1] - of[j]) * eb)
            return flat, offsets
        finally:
            free(data)
            free(offs)

    cdef object padded(self, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len):
        cdef Py_ssize_t j, bad = -1, n = idx.shape[0]
        cdef int64_t total, e, width = min_len
        cdef const uint8_t* fill = NULL
        self.check_pad(pad)
        if self.n_parts == 1 or n == 0:
            return (<FieldReader>self.parts[0]).padded(idx, pad, min_len)
        if self.values == NULL:
            flat, offsets = self.column(idx, True)
            return pad_ragged(flat, offsets, pad, min_len)
        rows = self.rows.locate(idx)
        cdef const int64_t* part = <const int64_t*>cnp.PyArray_DATA(rows)
        lengths = np.empty(2 * n, np.int64)  # each row's length, then its first element
        cdef int64_t* ln = <int64_t*>cnp.PyArray_DATA(lengths)
        cdef int64_t* st = ln + n
        with nogil:
            bad = row_bounds(self.offsets, self.values, part, part + n, n, st, ln, &total)
        if bad >= 0:
            raise self.damaged_at(idx[bad])
        for j in range(n):
            width = max(width, ln[j])
        for e in range(self.eb):
            if pad[e] != 0:
                fill = &pad[0]  # else zeros: a memset
        out = new_array(2, n, width, self.element_shape, self.typenum)
        cdef uint8_t* dst = <uint8_t*>cnp.PyArray_DATA(out)
        with nogil:
            bad = gather_rows(self.values, part, st, ln, n, width, fill, dst)
        if bad >= 0:
            raise self.damaged_at(idx[bad])
        return out, lengths[:n]


def join_readers(list decoders, const int64_t[::1] starts):
    """One Decoder over shards: each field of the first decoder, read from every
    decoder (same fields, same order), rows numbered across them in order."""
    cdef Decoder first, d
    cdef Py_ssize_t j
    if not decoders or starts.shape[0] != len(decoders) + 1:
        raise ValueError("join_readers needs a decoder per shard and shards + 1 starts")
    first = decoders[0]
    for j, d in enumerate(decoders):
        if d.names != first.names:
            raise ValueError(f"every decoder must read the same fields, got {d.names} and "
                             f"{first.names}")
        if starts[j + 1] - starts[j] != d.n_rows:
            raise ValueError(f"shard {j} holds {d.n_rows} rows, but starts gives it "
                             f"{starts[j + 1] - starts[j]}")
    rows = ShardRows(starts)
    readers = [ShardedField([(<Decoder>d).readers[k] for d in decoders], rows)
               for k in range(first.n_fields)]
    cdef Decoder joined = Decoder(starts[len(decoders)], readers)
    cdef Py_ssize_t s, n = len(decoders)
    joined.shard_starts = <int64_t*>malloc((n + 1) * sizeof(int64_t))
    if joined.shard_starts == NULL:
        raise MemoryError()
    for s in range(n + 1):
        joined.shard_starts[s] = starts[s]
    joined.n_shards = n
    joined.shard_decoders = list(decoders)
    joined.mapped_shards = any((<Decoder>d).map_base != NULL for d in decoders)
    return joined


# -- the Decoder: a row, a column, and the cold stage over a set of field readers ----------

cdef class Decoder:
    """Decode rows and batches of a set of fields from paged buffers.

    Parameters
    ----------
    n_rows : int
        Number of rows.
    fields : list of dict or FieldReader
        One entry per field: a reader, or a dict with keys ``name``, ``kind`` (a ``fields.Kind``),
        ``dtype``, ``element_shape``, ``values`` and, for variable fields,
        ``offsets``, or for zstd fields ``zstd`` (``blocks``,
        ``rows_per_block``, ``max_block_bytes``, ``dictionary``).
        ``values``/``offsets``/``blocks`` are dicts with ``buffer`` (any
        object exporting bytes), ``table`` (int64 chunk addresses),
        ``chunk_len``, ``elem_bytes`` and ``length``. Tables must already
        be validated against the buffer sizes.
    memory_map : buffer, optional
        The memory map of the whole file that every ``buffer`` points into.
        Given, reads that miss the page cache are prefetched (see
        :meth:`prefetch`); in-memory buffers need none.

    A Decoder keeps per-call state (decompressed zstd blocks, span lists)
    filled with the GIL released, so it serves only the thread that made it.
    """

    cdef readonly int64_t n_rows
    cdef readonly list names
    cdef list readers
    cdef Py_ssize_t n_fields
    cdef FieldIO* io          # each reader's FieldIO, for the cold stage without the GIL
    cdef unsigned long owner
    # Cold reads (memory maps only): the map, a reused span list, and the policy state.
    cdef object map_view
    cdef const uint8_t* map_base
    cdef int64_t map_size
    cdef Spans spans
    cdef int cold_batches, cold_rows, row_countdown, warm_streak, warm_skip
    cdef int64_t last_row, ahead_until
    # A Decoder over shards (join_readers): single rows go to the shard's own
    # decoder, which keeps its cold-read policy.
    cdef list shard_decoders
    cdef int64_t* shard_starts
    cdef Py_ssize_t n_shards
    cdef bint mapped_shards   # some shard is memory-mapped: batches may be cold

    def __init__(self, int64_t n_rows, list fields, memory_map=None):
        cdef const uint8_t[::1] view
        cdef FieldReader reader
        self.n_rows = n_rows
        self.readers = [
            spec if isinstance(spec, FieldReader)
            else ZstdField(n_rows, spec) if spec.get("zstd") is not None
            else RawField(n_rows, spec)
            for spec in fields
        ]
        self.names = [(<FieldReader>reader).name for reader in self.readers]
        self.n_fields = len(fields)
        self.io = <FieldIO*>malloc(max(self.n_fields, 1) * sizeof(FieldIO))
        if self.io == NULL:
            raise MemoryError()
        for k in range(self.n_fields):
            reader = self.readers[k]
            self.io[k] = reader.io
        if memory_map is not None and len(memory_map):
            view = memory_map
            self.map_view = view
            self.map_base = &view[0]
            self.map_size = view.shape[0]
        self.row_countdown = 1  # the first row tells a cold file from a warm one
        self.last_row = -2
        self.owner = PyThread_get_thread_ident()

    def __dealloc__(self):
        free(self.io)
        free(self.spans.data)
        free(self.shard_starts)

    def owned(self):
        """Whether the calling thread is the one that made this Decoder."""
        return PyThread_get_thread_ident() == self.owner

    cdef inline int _own(self) except -1:
        if PyThread_get_thread_ident() != self.owner:
            raise ForeignThreadError("this Decoder belongs to another thread; make one per thread")
        return 0

    cdef inline int64_t _check_row(self, int64_t i) except -1:
        if i < 0:
            i += self.n_rows
        if i < 0 or i >= self.n_rows:
            raise IndexError(f"row index out of range for a dataset of {self.n_rows} rows")
        return i

    cdef FieldReader _reader(self, int k):
        if not 0 <= k < self.n_fields:
            raise IndexError(f"field index {k} out of range for {self.n_fields} fields")
        return <FieldReader>self.readers[k]

    def row(self, int64_t i):
        """Decode row ``i`` (negative counts from the end) into a dict."""
        cdef Py_ssize_t s
        self._own()
        i = self._check_row(i)
        if self.shard_decoders is not None:
            s = shard_of(self.shard_starts, self.n_shards, i)
            return (<Decoder>self.shard_decoders[s]).decode_row(i - self.shard_starts[s])
        return self.decode_row(i)

    cdef dict decode_row(self, int64_t i):
        """Row ``i``, checked, as a dict."""
        cdef Py_ssize_t k
        cdef dict out = {}
        cdef FieldReader reader
        if self.map_base != NULL:
            self._row_prefetch(i)
        # Random rows miss the CPU caches: touch every field's index entry, then
        # every field's data, so the misses overlap instead of queueing.
        for k in range(self.n_fields):
            (<FieldReader>self.readers[k]).hint(i)
        for k in range(self.n_fields):
            (<FieldReader>self.readers[k]).locate(i)
        for k in range(self.n_fields):
            reader = <FieldReader>self.readers[k]
            if reader.nullable and not reader.bit(i):
                out[reader.name] = None
            else:
                out[reader.name] = reader.take(i)
        return out

    def value(self, int k, int64_t i):
        """Decode field ``k`` of row ``i``."""
        cdef FieldReader reader
        self._own()
        reader = self._reader(k)
        i = self._check_row(i)
        if reader.nullable and not reader.bit(i):
            return None
        reader.locate(i)
        return reader.take(i)

    def column(self, int k, const int64_t[::1] idx, bint raw=False):
        """Decode field ``k`` of the checked rows ``idx`` in one call.

        Returns a list of str (String), a list of bytes (Bytes), an ndarray
        of shape (n, *element_shape) (fixed fields), or a tuple
        ``(flat, offsets)`` of the concatenated elements and n + 1 int64
        offsets (variable numeric fields, and String/Bytes when ``raw``).
        Null rows are ``None`` in lists, and as stored elsewhere: zeros, or
        rows of no elements (see :meth:`valid`).
        """
        cdef FieldReader reader
        cdef Py_ssize_t j
        cdef list items
        cdef const uint8_t* valid
        self._own()
        reader = self._reader(k)
        col = reader.column(idx, raw)
        if reader.nullable and type(col) is list:
            items = col
            mask = reader.valid_column(idx)
            valid = <const uint8_t*>cnp.PyArray_DATA(mask)
            for j in range(idx.shape[0]):
                if not valid[j]:
                    items[j] = None
        return col

    def valid(self, int k, const int64_t[::1] idx):
        """Whether field ``k`` of each checked row ``idx`` holds a value (bool array);
        all True for a field that is not nullable."""
        cdef FieldReader reader
        self._own()
        reader = self._reader(k)
        return reader.valid_column(idx)

    def zstd_elements(self, int k):
        """Elements of all rows of zstd field ``k``, from its frame headers (no decompression)."""
        cdef FieldReader reader
        self._own()
        reader = self._reader(k)
        if not isinstance(reader, ZstdField):
            raise TypeError(f"field {reader.name!r} is not a zstd field")
        return (<ZstdField>reader).elements()

    def padded(self, int k, const int64_t[::1] idx, const uint8_t[::1] pad, int64_t min_len=0):
        """Gather variable field ``k`` of rows ``idx`` into one padded array.

        Returns ``(out, lengths)``: ``out`` has shape
        (n, max(max_len, min_len), *element_shape) with each row's tail
        filled with the element ``pad`` (its raw bytes); ``lengths`` is int64.
        """
        cdef FieldReader reader
        self._own()
        reader = self._reader(k)
        return reader.padded(idx, pad, min_len)

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

    # -- the cold stage: resolve rows to byte spans, ask for them all at once ---------

    cdef int _collect(self, const int64_t* rows, Py_ssize_t n, bint data) noexcept nogil:
        """Fill the span list with every field's spans of ``rows``; -1 if out of memory."""
        cdef Py_ssize_t j, k
        self.spans.n = 0
        for j in range(n):
            for k in range(self.n_fields):
                if field_spans(&self.io[k], rows[j], data, self.map_base, &self.spans) < 0:
                    return -1
        return 0

    cdef bint _resident(self, const int64_t* rows, Py_ssize_t n) except -1:
        """Whether rows' index entries, then their data, are in the page cache."""
        cdef bint data
        if self.shard_decoders is not None:
            return self._shards_resident(rows, n)
        for data in (False, True):
            if self._collect(rows, n, data) < 0:
                raise MemoryError()
            if not spans_resident(self.map_base, self.map_size, self.spans.data,
                                  self.spans.n, self.spans.n):
                return False
        return True

    cdef int _fetch(self, const int64_t* rows, Py_ssize_t n) except -1:
        """Two rounds of madvise(WILLNEED): every index span, then every data
        span (reading the index entries waits for the first round only)."""
        cdef bint data
        cdef int failed = 0
        if self.shard_decoders is not None:
            return self._fetch_shards(rows, n)
        with nogil:
            for data in (False, True):
                failed = self._collect(rows, n, data)
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
        A warm batch costs a residency test of ``SAMPLE_ROWS`` rows (after
        ``WARM_STREAK`` warm tests, of every ``WARM_TEST_EVERY``-th batch only);
        once a test misses, the next ``COLD_BATCHES`` batches fetch without testing.
        Returns whether a fetch was made.
        """
        cdef Py_ssize_t n = idx.shape[0], j
        cdef int64_t sample[SAMPLE_ROWS]
        cdef Py_ssize_t m = min(n, SAMPLE_ROWS)
        self._own()
        if n == 0 or (self.map_base == NULL and not self.mapped_shards):
            return False
        if self.cold_batches > 0:
            self.cold_batches -= 1
        elif self.warm_skip > 0:
            self.warm_skip -= 1
            return False
        else:
            for j in range(m):
                sample[j] = idx[j * (n // m)]
            if self._resident(sample, m):
                self.warm_streak = min(self.warm_streak + 1, WARM_STREAK)
                if self.warm_streak == WARM_STREAK:
                    self.warm_skip = WARM_TEST_EVERY - 1
                return False
            self.warm_streak = 0
            self.cold_batches = COLD_BATCHES
        self._fetch(&idx[0], n)
        return True

    # Over shards, the policy above is this decoder's, as for one file (a warm batch
    # costs one sample); its rows are tested and fetched by their shards' decoders.
    cdef bint _shards_resident(self, const int64_t* rows, Py_ssize_t n) except -1:
        cdef Py_ssize_t j, s
        cdef int64_t local
        cdef Decoder shard
        for j in range(n):
            s = shard_of(self.shard_starts, self.n_shards, rows[j])
            shard = <Decoder>self.shard_decoders[s]
            local = rows[j] - self.shard_starts[s]
            if shard.map_base != NULL and not shard._resident(&local, 1):
                return False
        return True

    cdef int _fetch_shards(self, const int64_t* rows, Py_ssize_t n) except -1:
        cdef Py_ssize_t s
        cdef Decoder shard
        grouped, begin, _, _ = group_rows(rows, n, self.shard_starts, self.n_shards)
        cdef const int64_t[::1] gr = grouped
        cdef const int64_t[::1] bg = begin
        for s in range(self.n_shards):
            shard = <Decoder>self.shard_decoders[s]
            if bg[s + 1] > bg[s] and shard.map_base != NULL:
                shard._fetch(&gr[bg[s]], bg[s + 1] - bg[s])
        return 0

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
            if self.cold_rows == 0:
                self.row_countdown = 1  # still cold? test the next row
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


# How batch_rows takes each column's value of a row.
cdef enum RowFrom:
    FROM_LIST, FROM_SCALAR, FROM_ITEM, FROM_RAGGED


def batch_rows(tuple names, list columns, Py_ssize_t start, Py_ssize_t stop, list valid=None):
    """Rows ``start..stop-1`` of decoded batch columns as a list of dicts.

    ``columns[k]`` is field ``names[k]`` in the form ``Decoder.column``
    returns: a list (String, Bytes), a 1-D array (scalars, given back as
    Python numbers), an n-D array (fixed fields, a row is ``col[j]``) or
    ``(flat, offsets)`` (variable fields, a row is a view of ``flat``).
    ``valid[k]``, if given and not None, is a bool array: where it is False
    the row's value is ``None`` (a null).
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
    cdef const uint8_t** masks = <const uint8_t**>calloc(max(nf, 1), sizeof(uint8_t*))
    cdef list keep = []
    cdef cnp.ndarray arr
    if start < 0 or stop < start:
        raise IndexError(f"rows {start}..{stop} are not a range of a batch")
    if valid is not None and len(valid) != nf:
        raise ValueError(f"valid has {len(valid)} entries for {nf} columns")
    try:
        if not (modes and codes and data and itemsize and offs and masks):
            raise MemoryError()
        for k in range(nf):
            if valid is not None and valid[k] is not None:
                arr = np.ascontiguousarray(valid[k], np.bool_)
                if arr.ndim != 1 or arr.shape[0] < stop:
                    raise IndexError(f"valid of column {names[k]!r} has {arr.shape[0]} rows")
                keep.append(arr)
                masks[k] = <const uint8_t*>cnp.PyArray_DATA(arr)
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
                if masks[k] != NULL and not masks[k][j]:
                    value = None
                elif modes[k] == FROM_LIST:
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
        free(masks)
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
        if nbytes:  # rows all empty: flat may have no element 0 to point at
            memcpy(dst + pos, &flat[0] + offsets[first] * elem_bytes, nbytes)
        pos += nbytes
        seg[2 * b + 1] = pos - seg[2 * b]
    return out, segments


ctypedef uint64_t (*xxh3_64_fn)(const void* data, size_t size) noexcept nogil

cdef extern from *:
    """
    #include <stdint.h>
    static int h5r_swap(uint32_t* state, uint32_t from, uint32_t to) {
        return __atomic_compare_exchange_n(state, &from, to, 0, __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE);
    }
    """
    int h5r_swap(uint32_t* state, uint32_t frm, uint32_t to) noexcept nogil

cdef enum PieceState:  # of a piece of blocks shared by hash_pieces and its helper
    PIECE_FREE = 0
    PIECE_HELPER = 1  # being hashed by the helper
    PIECE_HELPED = 2  # hashed by the helper, into its own output
    PIECE_OWNER = 3  # hashed by the owner


cdef inline void hash_range(xxh3_64_fn fn, const uint8_t* data, Py_ssize_t n,
                            Py_ssize_t block_bytes, uint64_t* out, Py_ssize_t b0,
                            Py_ssize_t b1) noexcept nogil:
    cdef Py_ssize_t b, lo
    for b in range(b0, b1):
        lo = b * block_bytes
        out[b] = fn(data + lo, min(block_bytes, n - lo))


cdef int check_hash_args(Py_ssize_t n, Py_ssize_t block_bytes, Py_ssize_t nb,
                         size_t xxh3_64) except -1:
    if block_bytes <= 0 or xxh3_64 == 0:
        raise ValueError("block_bytes must be positive and xxh3_64 a function address")
    if nb != (n + block_bytes - 1) // block_bytes:
        raise ValueError(f"out must have one entry per block of data: {nb} given")
    return 0


def hash_blocks(const uint8_t[::1] data, Py_ssize_t block_bytes, uint64_t[::1] out,
                size_t xxh3_64):
    """XXH3-64 of every ``block_bytes`` block of ``data`` (the last may be short) into ``out``.

    ``xxh3_64`` is the address of a C function with the signature of
    libxxhash's ``XXH3_64bits``. The loop runs without the GIL.
    """
    cdef Py_ssize_t n = data.shape[0], nb = out.shape[0]
    check_hash_args(n, block_bytes, nb, xxh3_64)
    if nb:
        with nogil:
            hash_range(<xxh3_64_fn>xxh3_64, &data[0], n, block_bytes, &out[0], 0, nb)


cdef int check_pieces(Py_ssize_t nb, const uint32_t[::1] state, Py_ssize_t per) except -1:
    if per <= 0 or state.shape[0] != (nb + per - 1) // per:
        raise ValueError("state must have one entry per piece of blocks_per_piece blocks")
    return 0


def hash_pieces_helper(const uint8_t[::1] data, Py_ssize_t block_bytes, uint64_t[::1] helped,
                       uint32_t[::1] state, Py_ssize_t blocks_per_piece, size_t xxh3_64):
    """The helper's part of :func:`hash_pieces`: pieces from the front into ``helped``
    until one is the owner's."""
    cdef Py_ssize_t n = data.shape[0], nb = helped.shape[0], p, per = blocks_per_piece
    cdef xxh3_64_fn fn = <xxh3_64_fn>xxh3_64
    check_hash_args(n, block_bytes, nb, xxh3_64)
    check_pieces(nb, state, per)
    with nogil:
        for p in range(state.shape[0]):
            if not h5r_swap(&state[p], PIECE_FREE, PIECE_HELPER):
                break
            hash_range(fn, &data[0], n, block_bytes, &helped[0], p * per, min((p + 1) * per, nb))
            if not h5r_swap(&state[p], PIECE_HELPER, PIECE_HELPED):
                break


def hash_pieces(const uint8_t[::1] data, Py_ssize_t block_bytes, uint64_t[::1] out,
                const uint64_t[::1] helped, uint32_t[::1] state, Py_ssize_t blocks_per_piece,
                size_t xxh3_64):
    """:func:`hash_blocks` shared with a helper thread, without waiting for it.

    The blocks go in pieces of ``blocks_per_piece``; ``state`` (one entry a
    piece, zeros at first) is shared with a call of :func:`hash_pieces_helper`
    on another thread, which hashes pieces from the front into ``helped``.
    This call goes over every piece from the back: it copies those the
    helper has finished from ``helped`` and hashes every other into ``out``,
    one the helper is still on included (the helper then drops it), so
    that it never waits for the helper; on return ``out`` holds every hash.
    """
    cdef Py_ssize_t n = data.shape[0], nb = out.shape[0], p, b0, b1, per = blocks_per_piece
    cdef xxh3_64_fn fn = <xxh3_64_fn>xxh3_64
    check_hash_args(n, block_bytes, nb, xxh3_64)
    check_pieces(nb, state, per)
    if helped.shape[0] != nb:
        raise ValueError("helped must have one entry per block, as out")
    with nogil:
        for p in range(state.shape[0] - 1, -1, -1):
            b0, b1 = p * per, min((p + 1) * per, nb)
            if h5r_swap(&state[p], PIECE_FREE, PIECE_OWNER) or h5r_swap(
                &state[p], PIECE_HELPER, PIECE_OWNER
            ):
                hash_range(fn, &data[0], n, block_bytes, &out[0], b0, b1)
            else:  # the helper finished it: its hashes are visible since the swap failed
                memcpy(&out[b0], &helped[b0], (b1 - b0) * sizeof(uint64_t))


def join_buffers(list parts, uint8_t[::1] out, Py_ssize_t head=0, Py_ssize_t block_bytes=0,
                 uint64_t[::1] hashes=None, size_t xxh3_64=0, Py_ssize_t start=0):
    """Copy the bytes of ``parts`` (bytes or arrays) back to back into ``out[start:]``.

    With ``block_bytes``, also hash every whole ``block_bytes`` block of
    ``out`` from byte ``head`` on into ``hashes`` (XXH3-64, through the C
    function at ``xxh3_64``), each as soon as its last byte is copied: the
    block is then in the CPU's cache, which makes hashing it cheaper than a
    later pass over memory. ``out[:start]`` was filled before (by an earlier
    join into the same buffer); the first block may begin there, but must
    end past ``start``. ``parts`` must fill ``out[start:]`` exactly; a
    part that is not C-contiguous is made so first.
    """
    cdef Py_ssize_t n = out.shape[0], pos = start, b = 0, nb = 0, take, end, k
    cdef bint held
    cdef Py_buffer view
    cdef const uint8_t* src
    cdef uint8_t* dst = &out[0] if n else NULL
    cdef xxh3_64_fn fn = <xxh3_64_fn>xxh3_64
    cdef object part
    if block_bytes:
        if head < 0 or hashes is None:
            raise ValueError("hashing needs a head >= 0 and a hashes array")
        nb = (n - head) // block_bytes if n > head else 0
        check_hash_args(nb * block_bytes, block_bytes, hashes.shape[0], xxh3_64)
        if nb and head + block_bytes <= start:
            raise ValueError("the first block to hash must end past start")
    if start < 0 or start > n:
        raise ValueError(f"start must lie in out (0..{n}), got {start}")
    end = head + block_bytes  # where block b ends in out
    for part in parts:
        # bytes and contiguous numeric arrays directly: numpy's buffer export
        # builds a format string for each (a 512-byte row costs more than its copy)
        held = False
        if type(part) is bytes:
            src = <const uint8_t*>PyBytes_AS_STRING(part)
            take = PyBytes_GET_SIZE(part)
        elif (cnp.PyArray_CheckExact(part) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>part)
              and cnp.PyArray_ISNUMBER(<cnp.ndarray>part)):
            src = <const uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>part)
            take = cnp.PyArray_NBYTES(<cnp.ndarray>part)
        else:
            try:
                PyObject_GetBuffer(part, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            except (BufferError, ValueError):  # numpy raises ValueError
                part = np.ascontiguousarray(part)
                PyObject_GetBuffer(part, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            held = True
            src = <const uint8_t*>view.buf
            take = view.len
        try:
            if held and view.format != NULL and b"O" in <bytes>view.format:
                raise TypeError("parts must hold numbers or bytes, not Python objects")
            if take > n - pos:
                raise ValueError(f"the parts hold more than the {n - start} bytes of out")
            while take:
                # Up to the end of the block being filled, then hash it.
                k = min(take, end - pos) if b < nb else take
                memcpy(dst + pos, src, k)
                pos += k
                src += k
                take -= k
                if b < nb and pos == end:
                    hashes[b] = fn(dst + end - block_bytes, block_bytes)
                    b += 1
                    end += block_bytes
        finally:
            if held:
                PyBuffer_Release(&view)
    if pos != n:
        raise ValueError(f"the parts hold {pos - start} bytes, out {n - start}")


def encode_text(list values, bint text):
    """The bytes of a column of str (``text``, as UTF-8) or bytes values.

    Returns ``(parts, lengths, bad)``: a list of each value's bytes, each
    one's length, and -1; or, if a value is not a str (bytes) or cannot be
    encoded, ``(None, None, its index)``. The parts are joined by
    :func:`join_buffers`.
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
    return parts, lengths, -1


def null_mask(list values, object fill=None):
    """Where a column of values holds something other than ``None``.

    Returns None if no value is ``None``, else a bool array (False at each
    ``None``); with ``fill``, the ``None`` entries of ``values`` are replaced
    by ``fill`` in place.
    """
    cdef Py_ssize_t j, n = len(values)
    cdef object mask = None
    cdef uint8_t* m = NULL
    for j in range(n):
        if values[j] is None:
            if m == NULL:
                mask = np.ones(n, np.bool_)
                m = <uint8_t*>cnp.PyArray_DATA(mask)
            m[j] = 0
            if fill is not None:
                values[j] = fill
    return mask


# Writer side: how pack_row treats each field.
PACK_UTF8 = 0     # String: str -> UTF-8 bytes
PACK_FLOAT = 1    # Float scalars: int or float -> float
PACK_INT = 2      # Integer scalars: int in [lo, hi]
PACK_OTHER = 3    # anything else: call the field's converter

# How pack_row treats None (a null).
NULL_REFUSE = 0   # the field is not nullable: its converter raises the error
NULL_KEEP = 1     # appended as None, for the writer to fill
NULL_CONVERT = 2  # given to the converter, which keeps its own account of nulls


cdef class RowPacker:
    """Convert rows for the writer and append each field's value to a sink list.

    ``codes[k]`` says how field ``k`` is converted (PACK_*), ``lo``/``hi``
    bound PACK_INT values, ``fmax`` is the largest finite value of PACK_FLOAT
    fields, and ``converters[k](value, index)`` handles everything off the
    fast paths, raising the descriptive error. ``nulls[k]`` (NULL_*, default
    NULL_REFUSE) says what ``None`` is for field ``k``.
    """

    cdef tuple names
    cdef tuple converters
    cdef list sinks
    cdef int* codes
    cdef int* nulls
    cdef int64_t* lo
    cdef int64_t* hi
    cdef double* fmax
    cdef Py_ssize_t n
    # Rows packed so far (the next row's index), and what the sinks hold unflushed.
    cdef public int64_t rows, pending_rows, pending_bytes
    cdef public int64_t flush_rows, flush_bytes

    def __cinit__(self, tuple names, codes, lo, hi, fmax, tuple converters, list sinks,
                  nulls=None):
        self.n = len(names)
        self.codes = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.nulls = <int*>calloc(max(self.n, 1), sizeof(int))
        self.lo = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.hi = <int64_t*>malloc(max(self.n, 1) * sizeof(int64_t))
        self.fmax = <double*>malloc(max(self.n, 1) * sizeof(double))
        if not (self.codes and self.nulls and self.lo and self.hi and self.fmax):
            raise MemoryError()
        for k in range(self.n):
            if nulls is not None:
                self.nulls[k] = nulls[k]
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
        free(self.nulls)
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
            if value is None and self.nulls[k] != NULL_REFUSE:
                out = None if self.nulls[k] == NULL_KEEP else self.converters[k](value, index)
            elif code == PACK_UTF8 and type(value) is str:
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


# -- writing: UTF-8 checks ---------------------------------------------------

cdef int64_t utf8_error_at(const uint8_t* s, int64_t n) noexcept nogil:
    """Index of the first byte of ``s[:n]`` that starts no valid UTF-8 character, or -1.

    Strict like Python's decoder: no overlong forms, no surrogates, nothing
    past U+10FFFF. Runs of ASCII are skipped 8 bytes at a time.
    """
    cdef int64_t i = 0
    cdef uint64_t word
    cdef uint8_t c, c1, lo, hi
    while i < n:
        while i + 8 <= n:
            memcpy(&word, s + i, 8)
            if word & 0x8080808080808080ULL:
                break
            i += 8
        if i >= n:
            break
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return i
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
        elif c < 0xF5:
            # Bounds of the second byte: they exclude overlong forms, surrogates
            # (after 0xED) and code points past U+10FFFF (after 0xF4).
            lo = 0xA0 if c == 0xE0 else (0x90 if c == 0xF0 else 0x80)
            hi = 0x9F if c == 0xED else (0x8F if c == 0xF4 else 0xBF)
            if c < 0xF0:
                if i + 2 >= n:
                    return i
                c1 = s[i + 1]
                if c1 < lo or c1 > hi or (s[i + 2] & 0xC0) != 0x80:
                    return i
                i += 3
            else:
                if i + 3 >= n:
                    return i
                c1 = s[i + 1]
                if c1 < lo or c1 > hi or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                    return i
                i += 4
        else:
            return i
    return -1


def first_bad_utf8_row(const uint8_t[::1] values, const int64_t[::1] offsets):
    """The first row ``values[offsets[r]:offsets[r + 1]]`` that is not valid UTF-8
    on its own, or -1. ``offsets`` must be checked by the caller (non-decreasing,
    within ``values``)."""
    cdef Py_ssize_t r, bad = -1, n = offsets.shape[0] - 1
    cdef const uint8_t* base = &values[0] if values.shape[0] else NULL
    with nogil:
        for r in range(n):
            if offsets[r + 1] > offsets[r] and utf8_error_at(
                    base + offsets[r], offsets[r + 1] - offsets[r]) >= 0:
                bad = r
                break
    return bad
