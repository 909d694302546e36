# cython: language_level=3
"""I/O kernels: ask the kernel for byte ranges of a memory map ahead of use.

Why ``madvise(MADV_WILLNEED)`` and not ``preadv`` from threads or io_uring:
on a memory map, WILLNEED starts asynchronous reads of exactly the pages
asked for and returns at once, so one call per batch puts every range of
the batch in the device queue together (queue depth = ranges in flight),
and the decoders then copy from the map as before, zero-copy when warm.
``preadv`` would need a copy into private buffers and a thread pool of our
own; io_uring is often disabled in containers. Measured on a 32 GB file of
16 KB rows (page cache cold): 41,000 rows/s with WILLNEED per batch against
3,200 with faults alone.

``pread_random`` is the device probe that the benchmark sets every cold
figure beside: random reads of one size from native threads.
"""

from libc.stdint cimport int64_t, uint8_t, uintptr_t
from libc.stdlib cimport malloc, free, qsort
from libc.errno cimport errno

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* addr, size_t length, int advice)
    int mincore(void* addr, size_t length, unsigned char* vec)
    int MADV_WILLNEED

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    int _SC_PAGESIZE
    ssize_t pread(int fd, void* buf, size_t count, long offset)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t* thread, const void* attr, void* (*start)(void*) noexcept nogil,
                       void* arg)
    int pthread_join(pthread_t thread, void** retval)

cdef int64_t PAGE = sysconf(_SC_PAGESIZE)

# Linux reads at most max(read-ahead, device I/O size) per WILLNEED call and
# silently drops the rest; 128 KiB is the smallest default of both.
cdef enum:
    ADVICE_BYTES = 128 * 1024

# Pages longer than this are not sampled by ``resident`` (a 4 MiB row needs
# no residency check to be worth prefetching).
cdef enum:
    MAX_SAMPLE_PAGES = 64


cdef int _by_start(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


cdef Py_ssize_t willneed_spans(const uint8_t* base, int64_t size, int64_t* spans,
                               Py_ssize_t m, int64_t gap) noexcept nogil:
    """madvise(WILLNEED) the ``m`` (start, stop) byte spans of a page-aligned map.

    Sorts ``spans`` in place, merges spans fewer than ``gap`` bytes apart and
    returns the number of requests made.
    """
    cdef Py_ssize_t j, out = 0
    cdef int64_t s, e, cur_s = -1, cur_e = -1
    qsort(spans, m, 2 * sizeof(int64_t), _by_start)
    for j in range(m + 1):
        if j < m:
            s = max(spans[2 * j], 0)
            e = min(spans[2 * j + 1], size)
            if e <= s:
                continue
            s -= s % PAGE
            if cur_e >= 0 and s <= cur_e + gap:
                cur_e = max(cur_e, e)
                continue
        while cur_e > cur_s >= 0:
            madvise(<void*>(base + cur_s), min(cur_e - cur_s, ADVICE_BYTES), MADV_WILLNEED)
            cur_s += ADVICE_BYTES
            out += 1
        if j < m:
            cur_s = s
            cur_e = e
    return out


cdef bint spans_resident(const uint8_t* base, int64_t size, const int64_t* spans,
                         Py_ssize_t m, Py_ssize_t sample) noexcept nogil:
    """Whether ``sample`` spans spread over the ``m`` (start, stop) spans are cached.

    One ``mincore`` per sampled span: cheap enough to decide, per batch,
    whether a warm reader may skip prefetching.
    """
    cdef Py_ssize_t j = 0, step, p, npages
    cdef int64_t s, e
    cdef unsigned char vec[MAX_SAMPLE_PAGES]
    step = max(m // max(sample, 1), 1)
    while j < m:
        s = max(spans[2 * j], 0)
        e = min(spans[2 * j + 1], size)
        if e > s:
            s -= s % PAGE
            npages = min((e - s + PAGE - 1) // PAGE, MAX_SAMPLE_PAGES)
            if mincore(<void*>(base + s), npages * PAGE, vec) == 0:
                for p in range(npages):
                    if not (vec[p] & 1):
                        return False
        j += step
    return True


cdef int64_t* _spans(const int64_t[:, ::1] ranges) except NULL:
    """(start, length) rows as a malloc'd array of (start, stop) pairs."""
    cdef Py_ssize_t j, m = ranges.shape[0]
    if ranges.shape[1] != 2:
        raise ValueError("ranges must have shape (m, 2)")
    cdef int64_t* spans = <int64_t*>malloc(max(2 * m, 1) * sizeof(int64_t))
    if spans == NULL:
        raise MemoryError()
    for j in range(m):
        spans[2 * j] = ranges[j, 0]
        spans[2 * j + 1] = ranges[j, 0] + ranges[j, 1]
    return spans


cdef bint _is_map(const uint8_t[::1] buffer):
    return buffer.shape[0] > 0 and (<uintptr_t>&buffer[0]) % PAGE == 0


def willneed(const uint8_t[::1] buffer, const int64_t[:, ::1] ranges, int64_t gap=0):
    """Start reading the pages of every ``(start, length)`` range of a memory map.

    Ranges are sorted and merged when fewer than ``gap`` bytes apart, so a
    sequential scan becomes one large request. Returns the requests made.
    """
    if not _is_map(buffer):
        raise ValueError("willneed needs a page-aligned buffer (a memory map)")
    cdef int64_t* spans = _spans(ranges)
    try:
        return willneed_spans(&buffer[0], buffer.shape[0], spans, ranges.shape[0], gap)
    finally:
        free(spans)


def resident(const uint8_t[::1] buffer, const int64_t[:, ::1] ranges, Py_ssize_t sample=8):
    """Whether ``sample`` ranges spread over ``ranges`` are all in the page cache."""
    if not _is_map(buffer):
        return True  # memory that is not a file map is resident by definition
    cdef int64_t* spans = _spans(ranges)
    try:
        return spans_resident(&buffer[0], buffer.shape[0], spans, ranges.shape[0], sample)
    finally:
        free(spans)


cdef struct ReadJob:
    int fd
    const int64_t* offsets
    Py_ssize_t count
    Py_ssize_t first
    Py_ssize_t stride
    int64_t size
    int64_t done
    int error


cdef void* _read_job(void* arg) noexcept nogil:
    cdef ReadJob* job = <ReadJob*>arg
    cdef Py_ssize_t j = job.first
    cdef ssize_t got
    cdef uint8_t* buf = <uint8_t*>malloc(job.size if job.size > 0 else 1)
    if buf == NULL:
        job.error = 12  # ENOMEM
        return NULL
    while j < job.count:
        got = pread(job.fd, buf, job.size, job.offsets[j])
        if got < 0:
            job.error = errno
            break
        job.done += got
        j += job.stride
    free(buf)
    return NULL


def pread_random(int fd, const int64_t[::1] offsets, int64_t size, int threads=1):
    """Read ``size`` bytes at every offset with ``threads`` native threads.

    The device probe of the benchmark: with 1 thread it measures latency
    (queue depth 1), with 32 the throughput of random reads at queue
    depth 32. Returns the bytes read; an OS error raises ``OSError``.
    """
    cdef Py_ssize_t t, n = offsets.shape[0]
    cdef int64_t total = 0
    cdef int error = 0
    if not 1 <= threads <= 1024:
        raise ValueError(f"threads must be 1 to 1024, got {threads}")
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    if n == 0:
        return 0
    cdef ReadJob* jobs = <ReadJob*>malloc(threads * sizeof(ReadJob))
    cdef pthread_t* ids = <pthread_t*>malloc(threads * sizeof(pthread_t))
    cdef int* started = <int*>malloc(threads * sizeof(int))
    if jobs == NULL or ids == NULL or started == NULL:
        free(jobs)
        free(ids)
        free(started)
        raise MemoryError()
    with nogil:
        for t in range(threads):
            jobs[t].fd = fd
            jobs[t].offsets = &offsets[0]
            jobs[t].count = n
            jobs[t].first = t
            jobs[t].stride = threads
            jobs[t].size = size
            jobs[t].done = 0
            jobs[t].error = 0
            started[t] = pthread_create(&ids[t], NULL, _read_job, &jobs[t]) == 0
            if not started[t]:
                _read_job(&jobs[t])  # run it here rather than fail the probe
        for t in range(threads):
            if started[t]:
                pthread_join(ids[t], NULL)
            total += jobs[t].done
            if jobs[t].error and not error:
                error = jobs[t].error
    free(jobs)
    free(ids)
    free(started)
    if error:
        raise OSError(error, "pread failed in the device probe")
    return total
