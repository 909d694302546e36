"""Checksums of docs/FORMAT.md section 6: XXH3-64 over fixed-size blocks of each dataset.

Writing, :class:`FieldSums` hashes the bytes each dataset of a field receives,
in order, from the writer's own buffers (hashing memory is ~20x faster than
reading the data back from HDF5), and writes at each commit only the
entries that changed: those of the blocks filled since the last commit and
of the partly filled last block. The columns given to ``write_batch`` are
joined into a buffer per field (checked row by row, or small): where a CPU
is idle, a helper thread hashes that buffer while HDF5 writes it;
otherwise each block is hashed as the join fills it (:meth:`FieldSums.join`),
while it is in the CPU's cache. Other appends are hashed by a compiled
loop without the GIL; a large one on a helper thread during HDF5's write of
the same bytes when a CPU is idle: xxh3 runs at ~10 GB/s from memory, a
tenth of the time HDF5 takes to write 12-16 KB rows, which only an idle
core hides.

Reading, :class:`Verifier` checks the blocks under the bytes that rows are
decoded from, each block once, through the same chunk addresses and the
same buffers as the decoder, so that a damaged chunk table is caught too.
"""

from __future__ import annotations

import _thread
import bisect
import ctypes
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import xxhash

from . import _fast, spec
from .errors import FormatError, H5RecordError

_hash = xxhash.xxh3_64_intdigest

# Table entries read at a time: 64k entries cover 4 GiB of data.
PAGE_ENTRIES = 1 << 16
# Bytes read at a time by a whole-file check.
SCAN_BYTES = 16 << 20
# Appends from this size on get a helper thread that hashes while HDF5 writes.
# Starting one costs about as long as hashing 128 KiB on an idle machine,
# and several times that on a busy one.
THREAD_BYTES = 4 << 20
# Bytes a thread hashes between two looks at the work left.
PIECE_BYTES = 1 << 20
# A helper is worth its start and its share of memory bandwidth only where
# hashing a dataset's appends would take the writing thread more than this
# share of its time, at HASH_BYTES_PER_S (XXH3 reads 10-14 GB/s from memory
# on a 2020s server core). Measured on 2 CPUs, one idle, the writing
# thread's CPU time against a writer without checksums: text and token rows
# (conversion-bound, a 5 MB append of tokens every ~14 ms) +3.4% hashing
# inline and +5.2% with a helper; 12 KB images (6 MB every ~7 ms) +11% inline
# and +3% with a helper. (The buffers write_batch gathers skip this test: left
# unhashed when joined because a CPU was idle, they get a helper if one still is.)
HELPER_SHARE = 0.05
HASH_BYTES_PER_S = 10e9


def metadata_hash(num_rows: int, schema: str, version: int) -> np.uint64:
    """The root ``metadata_xxh3`` attribute (FORMAT.md section 6)."""
    text = json.dumps(
        {"num_rows": int(num_rows), "schema": schema, "version": int(version)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return np.uint64(_hash(text.encode("utf-8")))


def check_metadata(f: h5py.File, path: str) -> bool:
    """Check a file's metadata hash; False if it has none (a file without checksums)."""
    stored = f.attrs.get(spec.ATTR_METADATA_XXH3)
    if stored is None:
        return False
    schema = f.attrs.get(spec.ATTR_SCHEMA)
    schema = schema.decode("utf-8", "replace") if isinstance(schema, bytes) else str(schema)
    try:
        expected = metadata_hash(
            f.attrs.get(spec.ATTR_NUM_ROWS), schema, f.attrs.get(spec.ATTR_VERSION)
        )
        same = int(stored) == int(expected)
    except (TypeError, ValueError, OverflowError):
        same = False
    if not same:
        raise FormatError(
            f"{path}: the metadata (num_rows, schema, version) does not match its checksum "
            f"{spec.ATTR_METADATA_XXH3}; the file is damaged"
        )
    return True


# -- writing --------------------------------------------------------------------


def _xxh3_address() -> int:
    """Address of xxhash's C function for XXH3-64 in the xxhash package's extension, or 0.

    The package exports libxxhash's functions on Linux and macOS; the
    ``_dispatch`` variant picks the widest vector unit of the CPU at run
    time (AVX2, AVX-512), which hashes cached data about twice as fast.
    Where neither is exported, or one disagrees with ``xxh3_64_intdigest``
    on lengths across the algorithm's size classes, blocks are hashed one
    Python call each, on the appending thread.
    """
    try:
        import xxhash._xxhash as ext

        lib = ctypes.CDLL(ext.__file__)
    except (ImportError, OSError):
        return 0
    probe = np.frombuffer(np.random.default_rng(0).bytes(70_000), np.uint8)
    sizes = (1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 4353, len(probe))
    for name in ("XXH3_64bits_dispatch", "XXH3_64bits"):
        try:
            address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
        except AttributeError:
            continue
        out = np.empty(1, np.uint64)
        for n in sizes:
            _fast.hash_blocks(probe[:n], n, out, address)
            if int(out[0]) != _hash(probe[:n]):
                break
        else:
            return address
    return 0


_XXH3 = _xxh3_address()


def _load_leaves_a_cpu() -> bool:
    """Whether the load average of the last minute, this process included, leaves
    a CPU idle: the guess where the idle time of the CPUs cannot be read."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return os.getloadavg()[0] <= cpus - 1


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _idle_seconds() -> float | None:
    """CPU seconds the CPUs this process may run on have spent idle since boot
    (/proc/stat), or None where that cannot be read. CPU quotas of a container
    are not seen."""
    try:
        allowed = {f"cpu{c}".encode() for c in os.sched_getaffinity(0)}
        idle = 0
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                fields = line.split()
                if fields and fields[0] in allowed:
                    idle += int(fields[4]) + int(fields[5])  # idle + iowait
        return idle / _TICKS if allowed else None
    except (OSError, IndexError, ValueError, AttributeError):
        return None


class _SpareCpu:
    """Whether a helper thread is likely to find an idle CPU: the CPUs left idle
    since the last look, plus what this process's helpers took, make half a CPU.

    Where every CPU is busy, a helper only takes CPU time from the writer and
    other processes: measured on 2 busy CPUs, 123 MB of 12 KB images took 17%
    longer to write with checksums hashed by a helper, 14% longer hashed by
    the writer itself. The idle time is read at most every ``WINDOW``
    seconds; the load average is a poorer guess (a machine can show a load
    of 1 with both of its CPUs idle), used only at a first look or where
    /proc/stat cannot be read.
    """

    WINDOW = 0.25

    def __init__(self) -> None:
        self.looked_at: float | None = None
        self.idle_then = 0.0  # idle CPU seconds at the last look
        self.helper_cpu_then = 0.0  # helper_cpu at the last look
        self.helper_cpu = 0.0  # CPU seconds of every helper thread so far
        self.spare = False  # the answer of the last look
        self._lock = threading.Lock()

    def add_helper_cpu(self, seconds: float) -> None:
        with self._lock:  # helpers of two datasets may end at the same time
            self.helper_cpu += seconds

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.looked_at is not None and now - self.looked_at < self.WINDOW:
            return self.spare
        idle = _idle_seconds()
        if idle is None:
            return _load_leaves_a_cpu()
        if self.looked_at is None:
            self.spare = _load_leaves_a_cpu()
        else:
            free = idle - self.idle_then + self.helper_cpu - self.helper_cpu_then
            self.spare = free >= 0.5 * (now - self.looked_at)
        self.looked_at, self.idle_then, self.helper_cpu_then = now, idle, self.helper_cpu
        return self.spare


_spare_cpu = _SpareCpu()


def hash_blocks(data: Any, block_bytes: int, out: np.ndarray | None = None) -> np.ndarray:
    """XXH3-64 of every ``block_bytes`` block of a C-contiguous buffer (the last may be short),
    into ``out`` if given (one uint64 a block)."""
    view = memoryview(data).cast("B")
    if out is None:
        out = np.empty(-(-len(view) // block_bytes), np.uint64)
    if _XXH3:
        _fast.hash_blocks(view, block_bytes, out, _XXH3)
    else:
        out[:] = [_hash(view[s : s + block_bytes]) for s in range(0, len(view), block_bytes)]
    return out


class _Append:
    """Bytes appended to a stream, and the hashes of their whole blocks.

    A large append gets a helper thread (:meth:`help`) that hashes its
    blocks without the GIL while HDF5 writes them. :meth:`hashes` then
    takes the pieces the helper has not finished, the one it is on
    included: the appender never waits for a helper that gets no CPU.
    """

    def __init__(
        self,
        hasher: StreamHasher,
        view: memoryview,
        head: int,
        stop: int,
        block_bytes: int,
        hashes: np.ndarray | None = None,
    ) -> None:
        self.hasher = hasher  # the stream it is appended to
        self.view = view
        self.head = head  # bytes that go into the stream's partly filled block
        self.stop = stop  # view[head:stop] are whole blocks
        self.block_bytes = block_bytes
        self.per_piece = max(1, PIECE_BYTES // block_bytes)
        self.helped: np.ndarray | None = None  # the helper's hashes
        self.state: np.ndarray | None = None  # of each piece, shared with the helper
        self._hashes = hashes

    @property
    def hashed(self) -> bool:
        return self._hashes is not None

    @property
    def body(self) -> memoryview:
        return self.view[self.head : self.stop]

    def help(self) -> None:
        """Start a helper thread. It holds the data until it stops, at most a
        piece after :meth:`hashes`."""
        blocks = (self.stop - self.head) // self.block_bytes
        self.helped = np.empty(blocks, np.uint64)
        self.state = np.zeros(-(-blocks // self.per_piece), np.uint32)
        # Not threading.Thread: its start() waits until the thread runs, which
        # on a busy machine takes longer than the hashing it saves.
        _thread.start_new_thread(self._helper, ())

    def _helper(self) -> None:
        args = (self.body, self.block_bytes, self.helped, self.state, self.per_piece, _XXH3)
        cpu = time.thread_time()
        _fast.hash_pieces_helper(*args)
        _spare_cpu.add_helper_cpu(time.thread_time() - cpu)

    def hashes(self) -> np.ndarray:
        if self._hashes is None:
            out = np.empty((self.stop - self.head) // self.block_bytes, np.uint64)
            if self.state is None:
                hash_blocks(self.body, self.block_bytes, out)
            else:
                body, bb, per = self.body, self.block_bytes, self.per_piece
                _fast.hash_pieces(body, bb, out, self.helped, self.state, per, _XXH3)
            self._hashes = out
        return self._hashes


class StreamHasher:
    """XXH3-64 of every ``block_bytes`` block of a byte stream that only grows.

    Only what the file does not hold yet is kept: the hashes of the blocks
    filled since the last commit, and XXH3's running state over the partly
    filled last block (not its bytes), so memory stays small whatever the
    file's size.
    """

    def __init__(self, block_bytes: int = spec.CHECKSUM_BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self.stored = 0  # entries in the file that never change again (full blocks)
        self.full = 0  # full blocks hashed
        self.pending: list[np.ndarray] = []  # hashes of full blocks stored..full-1
        self.partial = xxhash.xxh3_64()  # over the bytes of the partly filled block
        self.partial_len = 0

    @property
    def length(self) -> int:
        return self.full * self.block_bytes + self.partial_len

    def update(self, data: Any) -> None:
        self.add(self.start(data))

    def start(self, data: Any, hashed: Any = None) -> _Append:
        """Hash ``data`` (C-contiguous) as it is appended: :meth:`add` takes it in.

        Nothing changes until then, so an append that fails leaves the
        stream as it was. ``hashed``: ``(head, hashes)`` of its blocks from
        :meth:`FieldSums.join`, used if they are the blocks this stream needs.
        """
        view = memoryview(data).cast("B")
        bb = self.block_bytes
        head = min(self.head(self.partial_len), len(view))
        stop = head + (len(view) - head) // bb * bb
        hashes = None
        if hashed is not None and hashed[0] == head and len(hashed[1]) * bb == stop - head:
            hashes = hashed[1]
        return _Append(self, view, head, stop, bb, hashes)

    def head(self, at: int) -> int:
        """Bytes an append at byte ``at`` of the stream puts in its partly filled block."""
        return -at % self.block_bytes

    def add(self, append: _Append) -> None:
        """Take in an append (its blocks not hashed yet are hashed here)."""
        hashes = append.hashes()
        view = append.view
        if append.head:
            self.partial.update(view[: append.head])
            self.partial_len += append.head
            if self.partial_len == self.block_bytes:
                self.pending.append(np.array([self.partial.intdigest()], np.uint64))
                self.partial.reset()
                self.partial_len = 0
                self.full += 1
        self.pending.append(hashes)
        self.full += len(hashes)
        if append.stop < len(view):
            self.partial.update(view[append.stop :])
            self.partial_len += len(view) - append.stop

    def entries(self, extra: bytes = b"") -> np.ndarray:
        """Entries ``stored`` onward of the stream followed by ``extra`` (not kept)."""
        tail = np.empty(0, np.uint64)
        if self.partial_len or extra:
            room = self.block_bytes - self.partial_len
            last = self.partial.copy()
            last.update(extra[:room])
            rest = hash_blocks(extra[room:], self.block_bytes)
            tail = np.concatenate([np.array([last.intdigest()], np.uint64), rest])
        return np.concatenate([*self.pending, tail])

    def written(self) -> None:
        """The entries of full blocks are in the file now."""
        self.stored = self.full
        self.pending.clear()

    @classmethod
    def resume(cls, dset: h5py.Dataset, length: int, table: h5py.Dataset | None) -> StreamHasher:
        """Continue the checksums of the first ``length`` bytes of ``dset``.

        With the dataset's table, only the last partly filled block is read
        back; without one (a dataset created since the last commit) the
        bytes are read back and hashed.
        """
        bb = spec.CHECKSUM_BLOCK_BYTES
        usable = table is not None and _block_bytes(table) is not None
        if usable:
            assert table is not None
            bb = int(_block_bytes(table) or bb)
            usable = table.shape[0] >= length // bb
        hasher = cls(bb)
        start = length // bb * bb if usable else 0
        if usable:
            hasher.full = hasher.stored = length // bb
        for lo in range(start, length, SCAN_BYTES):
            hasher.update(_dataset_bytes(dset, lo, min(length, lo + SCAN_BYTES)))
        return hasher


def _block_bytes(table: h5py.Dataset) -> int | None:
    value = table.attrs.get(spec.ATTR_BLOCK_BYTES)
    try:
        bb = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return bb if bb >= 4096 and bb & (bb - 1) == 0 else None


def _row_bytes(dset: h5py.Dataset) -> int:
    """Bytes of one element along the first axis."""
    return int(dset.dtype.itemsize * np.prod(dset.shape[1:], dtype=np.int64))


def _dataset_bytes(dset: h5py.Dataset, lo: int, hi: int) -> bytes:
    """Bytes ``lo:hi`` of a dataset's stream, ``dset[...].tobytes()`` as FORMAT.md reads it."""
    if hi <= lo:
        return b""
    rb = _row_bytes(dset)
    e0, e1 = lo // rb, -(-hi // rb)
    data = np.ascontiguousarray(dset[e0:e1]).reshape(-1).view(np.uint8)
    return data[lo - e0 * rb : hi - e0 * rb].tobytes()


def _name(dset: h5py.Dataset) -> str:
    return dset.name.rsplit("/", 1)[1]


def _nbytes(dset: h5py.Dataset) -> int:
    return dset.shape[0] * _row_bytes(dset)


class _WrittenStream:
    """One dataset's checksums while it is written, and what never changes about
    the dataset: each h5py call costs ~5-50 us, several times per append."""

    __slots__ = ("dset", "dtype", "hasher", "last", "name", "new", "row_bytes", "table")

    def __init__(self, dset: h5py.Dataset, name: str, hasher: StreamHasher, new: bool) -> None:
        self.dset = dset
        self.name = name
        self.dtype = dset.dtype
        self.row_bytes = _row_bytes(dset)
        self.hasher = hasher
        self.new = new  # made by this writer: its table is not in the file yet
        self.table: h5py.Dataset | None = None
        self.last = time.perf_counter()  # when the last append began, or the writer

    def hashing_share(self, nbytes: int) -> float:
        """The share of the time since this dataset's last append (or since the
        writer began) that hashing this append's ``nbytes`` would take."""
        now = time.perf_counter()
        since, self.last = now - self.last, now
        return nbytes / HASH_BYTES_PER_S / max(since, 1e-9)


class FieldSums:
    """The checksums of one field's datasets while it is written.

    Made when the writer opens the file, from ``datasets`` as they are
    then: empty or, when a file is continued, cut back to its last commit.
    """

    def __init__(self, datasets: list[h5py.Dataset], new: bool = False) -> None:
        """``new``: the datasets were just made by the writer, and have no tables."""
        self.streams: dict[str, _WrittenStream] = {}
        self._by_id: dict[int, _WrittenStream] = {}
        for dset in datasets:
            name = _name(dset)
            table = None if new else dset.parent.get(name + spec.CHECKSUM_SUFFIX)
            hasher = StreamHasher.resume(dset, _nbytes(dset), table)
            self.streams[name] = _WrittenStream(dset, name, hasher, new)

    def _stream(self, dset: h5py.Dataset) -> _WrittenStream:
        stream = self._by_id.get(id(dset))
        if stream is not None and stream.dset is dset:
            return stream
        name = _name(dset)
        stream = self.streams.get(name)
        if stream is None:
            # Created since the writer opened the file (a zstd field's datasets,
            # once it has chosen its blocks): holding the first entry, 0, of an
            # index (offsets, blocks), or nothing.
            first = 8 if name in (spec.OFFSETS, spec.BLOCKS) else 0
            stream = _WrittenStream(dset, name, StreamHasher.resume(dset, first, None), True)
            self.streams[name] = stream
        stream.dset = dset
        self._by_id[id(dset)] = stream
        return stream

    def join(
        self,
        dset: h5py.Dataset,
        buffers: list[Any],
        out: np.ndarray,
        start: int = 0,
        before: Any = None,
    ) -> Any:
        """Copy ``buffers`` into ``out`` from byte ``start`` on: ``out`` holds the values
        to append to ``dset`` next, ``out[:start]`` those of earlier joins, which
        returned ``before``. Each block the values fill is hashed as it fills,
        while it is in the CPU's cache (cheaper than a second pass over memory).

        Returns what :meth:`hashed` turns into the ``hashed`` argument of
        :meth:`begin`, or None where the values would be converted to the
        dataset's dtype (a file not written by h5record), no C hash is at hand,
        or the earlier joins were not hashed."""
        stream = self._stream(dset)
        flat = out.reshape(-1).view(np.uint8)
        if not _XXH3 or out.dtype != stream.dtype or (start and before is None):
            _fast.join_buffers(buffers, flat, start=start)
            return None
        bb = stream.hasher.block_bytes
        if before is None:
            # Where the stream ends now; begin() checks that the append starts
            # there (after a failed append it does not) and else hashes itself.
            before = (stream.hasher.head(stream.hasher.length), [], 0)
        head, done, blocks = before
        first = head + blocks * bb  # the first block not hashed yet
        if len(flat) < first + bb:  # it does not fill
            _fast.join_buffers(buffers, flat, start=start)
            return before
        base = min(first, start)
        region = flat[base:]
        hashes = np.empty((len(region) - (first - base)) // bb, np.uint64)
        _fast.join_buffers(buffers, region, first - base, bb, hashes, _XXH3, start - base)
        return head, [*done, hashes], blocks + len(hashes)

    @staticmethod
    def hashed(joined: Any) -> Any:
        """The ``hashed`` argument of :meth:`begin` from what :meth:`join` returned."""
        if joined is None:
            return None
        head, done, _ = joined
        return head, np.concatenate(done) if done else np.empty(0, np.uint64)

    @staticmethod
    def hash_when_joining() -> bool:
        """Whether values joined now for a large append later are best hashed as they
        are joined (:meth:`join`), or, where a CPU is likely idle, by a helper
        thread while HDF5 writes them (``helper`` of :meth:`begin`)."""
        return not (_XXH3 and _spare_cpu())

    def begin(
        self,
        dset: h5py.Dataset,
        data: np.ndarray,
        start: int,
        hashed: Any = None,
        helper: bool = False,
    ) -> _Append:
        """Start hashing ``data``, to be appended to ``dset``, which holds ``start``
        elements before (``hashed``: what :meth:`join` hashed of it, which made
        it only for values in the dataset's dtype). Once the append succeeded,
        :meth:`end` takes it into the checksums; an append that fails is
        never ended.

        A large append is hashed by a helper thread, without the GIL, while
        HDF5 writes it, where a CPU is idle and hashing would take a large
        share of the writing thread's time, or the values were left to a
        helper (``helper``) when joined.
        """
        stream = self._stream(dset)
        data = np.ascontiguousarray(data, stream.dtype)
        hasher = stream.hasher
        before = start * stream.row_bytes
        if hasher.length < before:  # written without a hash (a zstd tail): read it back
            hasher.update(_dataset_bytes(dset, hasher.length, before))
        elif hasher.length > before:
            raise H5RecordError(
                f"{dset.file.filename}: {dset.name} was cut below the bytes its checksums "
                "cover; please report this as a bug"
            )
        append = hasher.start(data, hashed)
        whole = 0 if append.hashed else append.stop - append.head
        share = stream.hashing_share(whole)
        if _XXH3 and whole >= THREAD_BYTES and (helper or share > HELPER_SHARE) and _spare_cpu():
            append.help()
        return append

    @staticmethod
    def end(append: _Append) -> None:
        """Take a successful append begun by :meth:`begin` into the checksums."""
        append.hasher.add(append)

    def commit(self, datasets: list[h5py.Dataset]) -> None:
        """Write the entries that changed since the last commit into ``<dataset>_xxh3``.

        Bytes a dataset holds past its hashed stream (the short last frame
        of a zstd field, which its next write replaces) are read back and
        hashed into this commit's entries only.
        """
        for dset in datasets:
            stream = self._stream(dset)
            hasher = stream.hasher
            end = dset.shape[0] * stream.row_bytes
            if end < hasher.length:
                raise H5RecordError(
                    f"{dset.file.filename}: {dset.name} holds {end} bytes, its checksums "
                    f"cover {hasher.length}; please report this as a bug"
                )
            entries = hasher.entries(_dataset_bytes(dset, hasher.length, end))
            if stream.table is None:
                name = stream.name + spec.CHECKSUM_SUFFIX
                stream.table = _table(dset, name, hasher.block_bytes, stream.new)
            _write_tail(stream.table, hasher.stored, entries)
            hasher.written()


def _table(dset: h5py.Dataset, name: str, block_bytes: int, new: bool = False) -> h5py.Dataset:
    """The checksum table ``name`` beside ``dset``, made if missing (``new``: known
    to be, so not looked up), through h5py's low-level calls where h5py's own
    take 0.2-0.5 ms (a few ms a file)."""
    table = None if new else dset.parent.get(name)
    if table is None:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4096,))
        dcpl.set_obj_track_times(False)  # as h5py does: the same rows make the same file
        space = h5py.h5s.create_simple((0,), (h5py.h5s.UNLIMITED,))
        # by its path from the file: h5py's dset.parent costs as much as the rest
        path = f"{dset.name.rsplit('/', 1)[0]}/{name}".encode()
        fid = h5py.h5i.get_file_id(dset.id)
        table = h5py.Dataset(h5py.h5d.create(fid, path, h5py.h5t.STD_U64LE, space, dcpl=dcpl))
    elif _block_bytes(table) == block_bytes:
        return table
    else:
        table.attrs.pop(spec.ATTR_BLOCK_BYTES, None)
    attr = spec.ATTR_BLOCK_BYTES.encode()
    scalar = h5py.h5s.create(h5py.h5s.SCALAR)
    h5py.h5a.create(table.id, attr, h5py.h5t.STD_I64LE, scalar).write(np.array(block_bytes, "<i8"))
    return table


def _write_tail(table: h5py.Dataset, start: int, entries: np.ndarray) -> None:
    """``table[start:] = entries``, ``table`` resized to end there; through h5py's
    low-level calls, 3-4x faster than its slicing for the few entries of a commit."""
    table.id.set_extent((start + len(entries),))
    if len(entries):
        space = table.id.get_space()
        space.select_hyperslab((start,), (len(entries),))
        table.id.write(h5py.h5s.create_simple((len(entries),)), space, entries)


# -- reading --------------------------------------------------------------------


class _Source:
    """Bytes of one dataset's stream, read the way the decoder reads them."""

    elem_bytes: int

    def read(self, lo: int, hi: int) -> Any:
        raise NotImplementedError

    def elements(self, idx: np.ndarray) -> np.ndarray:
        """int64 elements ``idx`` of an index dataset (offsets, blocks)."""
        data = np.frombuffer(self.read_elements(idx), "<i8")
        return data.reshape(idx.shape)

    def read_elements(self, idx: np.ndarray) -> bytes:
        return b"".join(bytes(self.read(int(e) * 8, int(e) * 8 + 8)) for e in idx.reshape(-1))

    def close(self) -> None:
        pass


class _PagedSource(_Source):
    """Through the chunk addresses of the reader's layout, over a map of the file."""

    def __init__(self, paged: Any, buffer: Any) -> None:
        self.paged = paged
        self.buffer = buffer  # a callable giving the map, made again in each process
        self.elem_bytes = paged.elem_bytes

    def read(self, lo: int, hi: int) -> Any:
        if hi <= lo:
            return b""
        p = self.paged
        chunk_bytes = p.chunk_len * p.elem_bytes
        pieces = []
        buffer = self.buffer()
        size = len(buffer)
        for c in range(lo // chunk_bytes, (hi - 1) // chunk_bytes + 1):
            a, b = max(lo, c * chunk_bytes), min(hi, (c + 1) * chunk_bytes)
            addr = int(p.table[c]) if c < len(p.table) else -1
            if addr < 0:  # never allocated: HDF5 reads its fill value, zeros
                pieces.append(bytes(b - a))
                continue
            start = addr + a - c * chunk_bytes
            if start + (b - a) > size:
                raise FormatError("a chunk lies past the end of the file; the file is damaged")
            pieces.append(memoryview(buffer)[start : start + b - a])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def elements(self, idx: np.ndarray) -> np.ndarray:
        from .reader import _element_values

        return _element_values(self.paged, idx, self.buffer())


class _H5Source(_Source):
    """Through h5py (fields with HDF5 filters, read by the reader through h5py)."""

    def __init__(self, path: str, field: str, dataset: str, elem_bytes: int) -> None:
        self.path = path
        self.name = spec.field_path(field, dataset)
        self.where = f"{path}: field {field!r}, dataset {dataset!r}"
        self.elem_bytes = elem_bytes
        self._file: h5py.File | None = None
        self._pid = -1

    def _dataset(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.name]

    def read(self, lo: int, hi: int) -> Any:
        from .reader import HDF5_LOCK, read_hdf5

        eb = self.elem_bytes
        e0, e1 = lo // eb, -(-hi // eb)
        with HDF5_LOCK:
            data = read_hdf5(self._dataset(), np.s_[e0:e1], self.where)
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)[lo - e0 * eb : hi - e0 * eb]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            from .reader import HDF5_LOCK

            with HDF5_LOCK:
                self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}


class _ArraySource(_Source):
    """An array in memory (``in_memory`` datasets): the stream is its bytes."""

    def __init__(self, array: np.ndarray, elem_bytes: int) -> None:
        self.data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self.elem_bytes = elem_bytes

    def read(self, lo: int, hi: int) -> Any:
        return self.data[lo:hi]


@dataclass
class Damage:
    """A run of checksum blocks of one dataset that do not match."""

    field: str
    dataset: str
    blocks: tuple[int, int]  # first, stop
    bytes: tuple[int, int]
    rows: tuple[int, int]

    def __str__(self) -> str:
        first, stop = self.blocks
        one = stop == first + 1
        blocks = f"block {first} does" if one else f"blocks {first}-{stop - 1} do"
        return (
            f"field {self.field!r}, dataset {self.dataset!r}: checksum {blocks} not match "
            f"(bytes {self.bytes[0]}-{self.bytes[1] - 1}, {row_range(*self.rows)})"
        )


def row_range(first: int, stop: int) -> str:
    """``rows 3-9``, ``row 3`` or ``no rows``."""
    if stop <= first:
        return "no rows"
    return f"row {first}" if stop == first + 1 else f"rows {first}-{stop - 1}"


class _Stream:
    """One checksummed dataset of a field: its table, its source, its checked blocks."""

    def __init__(self, path: str, field: str, dataset: str, source: _Source, table: Any) -> None:
        self.path = path
        self.field = field
        self.dataset = dataset
        self.source = source
        self.block_bytes = int(table[0])
        self.table_len = int(table[1])
        self.table_name = spec.field_path(field, dataset + spec.CHECKSUM_SUFFIX)
        self.end = -1  # bytes of the committed stream, once known
        self.checked: np.ndarray | None = None
        self.pages: dict[int, np.ndarray] = {}
        self.owner: Any = None  # the _FieldCheck that knows how bytes map to rows

    def set_end(self, end: int) -> None:
        if end == self.end:
            return
        n = -(-end // self.block_bytes)
        if self.table_len < n:
            raise FormatError(
                f"{self.path}: field {self.field!r}: {self.table_name} has {self.table_len} "
                f"entries, {n} expected for {end} bytes of {self.dataset!r}; the file is damaged"
            )
        self.end = end
        self.checked = np.zeros(n, bool)

    def entry(self, b: int) -> int:
        page = self.pages.get(b // PAGE_ENTRIES)
        if page is None:
            page = self.pages[b // PAGE_ENTRIES] = self._load(b // PAGE_ENTRIES)
        return int(page[b % PAGE_ENTRIES])

    def _load(self, page: int) -> np.ndarray:
        from .reader import HDF5_LOCK, read_hdf5

        lo = page * PAGE_ENTRIES
        with HDF5_LOCK, h5py.File(self.path, "r") as f:
            where = f"{self.path}: {self.table_name}"
            return read_hdf5(f[self.table_name], np.s_[lo : lo + PAGE_ENTRIES], where)

    def span(self, b: int) -> tuple[int, int]:
        return b * self.block_bytes, min((b + 1) * self.block_bytes, self.end)

    def matches(self, b: int, data: Any = None) -> bool:
        if data is None:
            data = self.source.read(*self.span(b))
        return _hash(data) == self.entry(b)

    def check(self, blocks: np.ndarray) -> None:
        """Check blocks not checked yet; FormatError naming the first damaged one."""
        assert self.checked is not None
        blocks = blocks[~self.checked[blocks]]
        for b in np.unique(blocks).tolist():
            if not self.matches(b):
                raise FormatError(f"{self.path}: {self.damage(b, b + 1)}; the file is damaged")
            self.checked[b] = True

    def check_bytes(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Check the blocks under byte ranges ``[lo, hi)`` (empty ranges need none)."""
        keep = hi > lo
        lo, hi = lo[keep], np.minimum(hi[keep], self.end)
        if not len(lo):
            return
        first, last = lo // self.block_bytes, (hi - 1) // self.block_bytes
        counts = np.maximum(last - first + 1, 0)
        if int(counts.max(initial=0)) == 1:
            self.check(first)
            return
        starts = np.repeat(first - np.cumsum(counts) + counts, counts)
        self.check(starts + np.arange(int(counts.sum())))

    def damage(self, first: int, stop: int) -> Damage:
        span = first * self.block_bytes, min(stop * self.block_bytes, self.end)
        try:
            rows = self.owner.rows_for(self.dataset, *span)
        except Exception:  # the index to find them by is damaged too
            rows = (0, 0)
        return Damage(self.field, self.dataset, (first, stop), span, rows)

    def scan(self) -> Iterator[Damage]:
        """Every run of damaged blocks, reading the stream ``SCAN_BYTES`` at a time."""
        bb = self.block_bytes
        n = -(-self.end // bb)
        run: int | None = None
        step = max(1, SCAN_BYTES // bb)
        for b0 in range(0, n, step):
            b1 = min(n, b0 + step)
            try:
                data = memoryview(self.source.read(b0 * bb, min(b1 * bb, self.end))).cast("B")
                bad = {b for b in range(b0, b1) if not self.matches(b, data[(b - b0) * bb :][:bb])}
            except FormatError:
                bad = set(range(b0, b1))
            assert self.checked is not None
            self.checked[b0:b1] = True
            for b in range(b0, b1):
                if b in bad and run is None:
                    run = b
                elif b not in bad and run is not None:
                    yield self.damage(run, b)
                    run = None
        if run is not None:
            yield self.damage(run, n)


class _FieldCheck:
    """The streams of one field and how its rows map onto them."""

    def __init__(
        self,
        verifier: Verifier,
        fl: Any,
        streams: dict[str, _Stream],
        error: FormatError | None = None,
    ) -> None:
        self.fl = fl
        self.n = verifier.num_rows
        self.streams = streams
        self.error = error  # found at open: raised when the field is read
        self.ready = False
        for stream in streams.values():
            stream.owner = self

    def rows_for(self, dataset: str, lo: int, hi: int) -> tuple[int, int]:
        """The rows whose bytes lie in ``lo:hi`` of a stream, for error messages."""
        fl, n = self.fl, self.n
        if dataset == spec.VALIDITY:  # a byte a row of eight
            return min(lo * 8, n), min(hi * 8, n)
        if dataset == spec.VALUES:
            if fl.zstd is not None:
                return self._zstd_rows(lo, hi, fl.zstd["rows_per_block"])
            if fl.field.variable:
                return self._variable_rows(lo, hi)
            eb = fl.field.element_bytes
            return lo // eb, min(-(-hi // eb), n)
        # Entry e of an index is the end of row (zstd: block) e - 1 and the start of e.
        R = fl.zstd["rows_per_block"] if fl.zstd is not None else 1
        return min(max(lo // 8 - 1, 0) * R, n), min(-(-hi // 8) * R, n)

    def prepare(self) -> None:
        """Find each stream's end, checking the index entries that give it."""
        if self.error is not None:
            raise self.error
        if self.ready:
            return
        fl, n, s = self.fl, self.n, self.streams
        if spec.VALIDITY in s:
            s[spec.VALIDITY].set_end(-(-n // 8))
        values = s[spec.VALUES]
        eb = values.source.elem_bytes
        if fl.zstd is not None:
            index = s[spec.BLOCKS]
            last = -(-n // fl.zstd["rows_per_block"])
        elif fl.field.variable:
            index = s[spec.OFFSETS]
            last = n
        else:
            values.set_end(n * eb)
            self.ready = True
            return
        index.set_end((last + 1) * 8)
        index.check_bytes(np.array([last * 8]), np.array([last * 8 + 8]))
        end = int(index.source.elements(np.array([last], np.int64))[0])
        if not 0 <= end * eb <= fl.values_len * eb:
            raise FormatError(f"{index.path}: field {fl.field.name!r}: index is damaged")
        values.set_end(end * eb)
        self.ready = True

    def _index(self) -> _Stream:
        return self.streams.get(spec.OFFSETS) or self.streams[spec.BLOCKS]

    def _search(self, value: int, side: str, count: int) -> int:
        """Position of ``value`` among the ``count`` sorted entries of the index stream."""
        source = self._index().source
        keys = _Lazy(source, count)
        return (bisect.bisect_right if side == "right" else bisect.bisect_left)(keys, value)

    def _variable_rows(self, lo: int, hi: int) -> tuple[int, int]:
        eb = self.streams[spec.VALUES].source.elem_bytes
        first = max(self._search(lo // eb, "right", self.n + 1) - 1, 0)
        return first, max(min(self._search(-(-hi // eb), "left", self.n + 1), self.n), first)

    def _zstd_rows(self, lo: int, hi: int, R: int) -> tuple[int, int]:
        k = -(-self.n // R)
        first = max(self._search(lo, "right", k + 1) - 1, 0)
        stop = max(min(self._search(hi, "left", k + 1), k), first)
        return first * R, min(stop * R, self.n)

    def check_rows(self, idx: np.ndarray) -> None:
        self.prepare()
        fl, s = self.fl, self.streams
        if spec.VALIDITY in s:
            s[spec.VALIDITY].check_bytes(idx >> 3, (idx >> 3) + 1)
        values = s[spec.VALUES]
        eb = values.source.elem_bytes
        if fl.zstd is None and not fl.field.variable:
            values.check_bytes(idx * eb, (idx + 1) * eb)
            return
        if fl.zstd is not None:
            index, entries = s[spec.BLOCKS], idx // fl.zstd["rows_per_block"]
        else:
            index, entries = s[spec.OFFSETS], idx
        entries = np.unique(entries)
        index.check_bytes(entries * 8, entries * 8 + 16)
        bounds = index.source.elements(np.stack([entries, entries + 1], axis=1))
        values.check_bytes(bounds[:, 0] * eb, bounds[:, 1] * eb)

    def scan(self) -> Iterator[Damage | str]:
        """Every damaged run of blocks, the index first; its damage may leave the
        values unchecked, which is said."""
        name = self.fl.field.name
        if self.error is not None:
            yield str(self.error)
            return
        validity = self.streams.get(spec.VALIDITY)
        if validity is not None:
            validity.set_end(-(-self.n // 8))
            yield from validity.scan()
        index = self.streams.get(spec.OFFSETS) or self.streams.get(spec.BLOCKS)
        try:
            if index is not None:
                R = self.fl.zstd["rows_per_block"] if self.fl.zstd is not None else 1
                index.set_end((-(-self.n // R) + 1) * 8)
                yield from index.scan()
            self.prepare()
        except FormatError as exc:
            yield f"field {name!r}: {spec.VALUES!r} cannot be checked ({exc})"
            return
        yield from self.streams[spec.VALUES].scan()

    def blocks(self) -> int:
        return sum(int(s.checked.sum()) for s in self.streams.values() if s.checked is not None)


class _Lazy:
    """A read-only sequence of int64 index entries, read one at a time for bisect."""

    def __init__(self, source: _Source, count: int) -> None:
        self.source = source
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> int:
        return int(self.source.elements(np.array([i], np.int64))[0])


class Verifier:
    """Check the checksum blocks under the bytes of rows before they are decoded.

    Each block is checked once (one bitmap per dataset). Datasets of fields
    read through h5py (lzf, gzip) are hashed through h5py, the others
    through the chunk addresses the decoder uses, or the arrays of an
    in-memory dataset.
    """

    def __init__(
        self,
        layout: Any,
        arrays: dict[str, dict[str, np.ndarray]] | None = None,
        sequential: bool = False,
    ) -> None:
        from .reader import HDF5_LOCK

        self.path = layout.path
        self.sequential = sequential
        self.num_rows = layout.num_rows
        self._map: Any = None
        self._pid = -1
        self.fields: list[_FieldCheck] = []
        with HDF5_LOCK, h5py.File(self.path, "r") as f:
            for fl in layout.fields:
                name = fl.field.name
                group = f[spec.FIELDS_GROUP][name]
                streams = {}
                error = None
                for dset, source in self._sources(fl, arrays).items():
                    table = group.get(dset + spec.CHECKSUM_SUFFIX)
                    bb = None
                    if isinstance(table, h5py.Dataset) and table.ndim == 1:
                        bb = _block_bytes(table)
                    if bb is None:
                        error = FormatError(
                            f"{self.path}: field {name!r}: {dset!r} has no valid checksums "
                            f"({dset}{spec.CHECKSUM_SUFFIX}) while the file has them; "
                            "the file is damaged"
                        )
                        continue
                    streams[dset] = _Stream(self.path, name, dset, source, (bb, table.shape[0]))
                self.fields.append(_FieldCheck(self, fl, streams, error))

    def _sources(self, fl: Any, arrays: dict[str, dict[str, np.ndarray]] | None) -> dict:
        sources = self._data_sources(fl, arrays)
        if fl.validity is not None and spec.VALIDITY not in sources:
            data = (arrays or {}).get(fl.field.name, {})
            if spec.VALIDITY in data:  # loaded beside decompressed zstd rows
                sources[spec.VALIDITY] = _ArraySource(data[spec.VALIDITY], 1)
            else:
                sources[spec.VALIDITY] = _PagedSource(fl.validity, self.buffer)
        return sources

    def _data_sources(self, fl: Any, arrays: dict[str, dict[str, np.ndarray]] | None) -> dict:
        name = fl.field.name
        data = None if arrays is None else arrays.get(name)
        compressed = data is not None and spec.BLOCKS in data
        if data is not None and (fl.zstd is None or compressed):
            values_bytes = 1 if compressed else fl.field.element_bytes
            sizes = {spec.VALUES: values_bytes, spec.VALIDITY: 1}
            return {dset: _ArraySource(arr, sizes.get(dset, 8)) for dset, arr in data.items()}
        if fl.zstd is not None:
            return {
                spec.VALUES: _PagedSource(fl.values, self.buffer),
                spec.BLOCKS: _PagedSource(fl.zstd["blocks"], self.buffer),
            }
        if fl.values is None:  # filtered: the reader reads values and offsets through h5py
            out: dict[str, _Source] = {
                spec.VALUES: _H5Source(self.path, name, spec.VALUES, fl.field.element_bytes)
            }
            if fl.field.variable:
                out[spec.OFFSETS] = _H5Source(self.path, name, spec.OFFSETS, 8)
            return out
        out = {spec.VALUES: _PagedSource(fl.values, self.buffer)}
        if fl.offsets is not None:
            out[spec.OFFSETS] = _PagedSource(fl.offsets, self.buffer)
        return out

    def buffer(self) -> Any:
        if self._map is None or self._pid != os.getpid():
            from .reader import map_file

            self._map = map_file(self.path, random=not self.sequential)
            self._pid = os.getpid()
        return self._map

    def check_rows(self, idx: np.ndarray) -> None:
        """Check every block under the bytes of rows ``idx`` (checked int64 indices)."""
        if len(idx):
            for field in self.fields:
                field.check_rows(idx)

    def check_all(self) -> None:
        """Check every block; FormatError naming the first damaged one."""
        for field in self.fields:
            for damage in field.scan():
                raise FormatError(f"{self.path}: {damage}; the file is damaged")

    def scan(self) -> Iterator[Damage | str]:
        """Every damaged run of blocks of every dataset, reading the whole file once;
        what cannot be checked is said instead."""
        for field in self.fields:
            yield from field.scan()

    def blocks(self) -> int:
        return sum(field.blocks() for field in self.fields)

    def close(self) -> None:
        for field in self.fields:
            for stream in field.streams.values():
                stream.source.close()
        self._map = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None, "_pid": -1}
