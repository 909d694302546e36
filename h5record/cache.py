"""The in-memory cache: every field of a file, decompressed, in shared memory.

``H5Dataset(path, in_memory=True)`` loads the data once into an anonymous
shared memory file (``memfd``). DataLoader workers map the same pages:
fork inherits the mapping, spawn and forkserver receive the file
descriptor while the dataset is pickled. The memory has no name, so nothing
can leak: the kernel frees it when the last process holding it exits, even
after SIGKILL. It is not limited by the size of ``/dev/shm``.

``in_memory='node'`` shares one copy among unrelated processes of one
machine (the ranks of a distributed job): the segment is named after the
file's identity in ``/dev/shm``. The first process loads it, the others
attach. Every process using it holds a shared ``flock`` on it, which the
kernel drops when the process dies however it dies; a small reaper
process, started by the loader in its own session, unlinks the segment once
no process holds it any more.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import reader
from .errors import H5RecordError

ALIGN = 64
SHM_DIR = "/dev/shm"
NAME_PREFIX = "h5record-"
_MAGIC = b"H5RCACHE"
_HEADER = struct.Struct("<8sQQ")  # magic, state, header JSON length
_HEADER_BYTES = 64 << 10  # header page: magic, state, JSON slot table
_READY = 1
_PROGRESS_BYTES = 256 << 20
# zstd fields are decompressed into the cache about this many bytes at a time.
DECOMPRESS_BYTES = 64 << 20


class SharedMemoryError(H5RecordError, MemoryError):
    """The shared-memory cache does not fit, or cannot be created."""


@dataclass(frozen=True)
class Slot:
    """One array inside the segment."""

    field: str
    key: str  # the dataset: "values", "offsets", "blocks" or "validity"
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _plan(shapes: list[tuple[str, str, str, tuple[int, ...]]]) -> tuple[list[Slot], int]:
    slots, pos = [], _HEADER_BYTES
    for field, key, dtype, shape in shapes:
        slot = Slot(field, key, pos, dtype, tuple(int(s) for s in shape))
        slots.append(slot)
        pos += -(-max(slot.nbytes, 1) // ALIGN) * ALIGN
    return slots, pos


class _Decompress:
    """The zstd fields that the cache holds decompressed, decoded straight into it.

    Their sizes come from the frames' headers, so the cache's size is known
    (and checked against its limit and the free memory) before anything is
    decompressed, and each field is then decompressed a few blocks at a time
    into its place in the segment, never whole into private memory first.
    """

    def __init__(self, layout: reader.FileLayout, compressed: bool) -> None:
        fields = [] if compressed else [fl for fl in layout.fields if fl.zstd is not None]
        self.index = {fl.field.name: k for k, fl in enumerate(fields)}
        self.decoder = reader.zstd_decoder(layout, fields) if fields else None

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def elements(self, name: str) -> int:
        return int(self.decoder.zstd_elements(self.index[name]))

    def fill(self, fl: reader.FieldLayout, dest: dict[str, np.ndarray], where: str) -> None:
        """Decompress field ``fl`` into ``dest`` (values, and offsets if variable)."""
        assert fl.zstd is not None
        k, n = self.index[fl.field.name], self.decoder.n_rows
        blocks = max(1, DECOMPRESS_BYTES // max(int(fl.zstd["max_block_bytes"]), 1))
        step = int(fl.zstd["rows_per_block"]) * blocks
        values, offsets = dest["values"], dest.get("offsets")
        end = 0
        for a in range(0, n, step):
            b = min(n, a + step)
            rows = np.arange(a, b, dtype=np.int64)
            if offsets is None:
                values[a:b] = self.decoder.column(k, rows)
                continue
            flat, starts = self.decoder.column(k, rows, raw=True)
            if end + len(flat) > len(values):
                raise reader.FormatError(
                    f"{where}: rows {a}-{b - 1} hold more elements than the frame headers "
                    "declare; the file is damaged"
                )
            values[end : end + len(flat)] = flat
            offsets[a + 1 : b + 1] = starts[1:] + end
            end += len(flat)
        if offsets is not None:
            offsets[0] = 0
            if end != len(values):
                raise reader.FormatError(
                    f"{where}: its rows hold {end} elements, the frame headers declare "
                    f"{len(values)}; the file is damaged"
                )


def _array_shapes(layout: reader.FileLayout, decompress: _Decompress, compressed: bool):
    """(field, key, dtype, shape) of every array the cache will hold."""
    import h5py

    from . import spec

    n = layout.num_rows
    out = []
    with reader.HDF5_LOCK, h5py.File(layout.path, "r") as f:
        for fl in layout.fields:
            fld = fl.field
            if fl.validity is not None:  # nullable: its bitmap too, as stored
                out.append((fld.name, spec.VALIDITY, "|u1", (-(-n // 8),)))
            if compressed and fl.zstd is not None:
                n_blocks, end = reader.zstd_extent(f, fl, n)
                out.append((fld.name, spec.BLOCKS, "<i8", (n_blocks + 1,)))
                out.append((fld.name, spec.VALUES, "|u1", (end,)))
                continue
            if fld.variable:
                if fld.name in decompress:
                    end = decompress.elements(fld.name)
                else:
                    end = int(f[spec.field_path(fld.name, spec.OFFSETS)][n]) if n else 0
                    if not 0 <= end <= fl.values_len:
                        raise reader.FormatError(
                            f"{layout.path}: field {fld.name!r}: offsets are damaged"
                        )
                out.append((fld.name, "offsets", "<i8", (n + 1,)))
                out.append((fld.name, "values", fld.dtype.str, (end, *fld.element_shape)))
            else:
                out.append((fld.name, "values", fld.dtype.str, (n, *fld.element_shape)))
    return out


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_room(needed: int, named: bool, path: str) -> None:
    """Raise SharedMemoryError before loading if the cache cannot fit."""
    if named:
        st = os.statvfs(SHM_DIR)
        free = st.f_bavail * st.f_frsize
        if needed > free:
            raise SharedMemoryError(
                f"{path}: in_memory='node' needs {_gb(needed)} of shared memory but {SHM_DIR} "
                f"has {_gb(free)} free. Give the container more (docker run --shm-size="
                f"{-(-needed // 2**30) + 1}g), use in_memory=True (not limited by {SHM_DIR}), "
                "or in_memory=False to read from the file"
            )
    available = _mem_available()
    if available is not None and needed > 0.9 * available:
        raise SharedMemoryError(
            f"{path}: the in-memory cache needs {_gb(needed)} of RAM but only "
            f"{_gb(available)} is available; use in_memory=False to read from the file"
        )


class SharedCache:
    """Arrays of a file in one shared memory segment, mapped read-only after loading."""

    def __init__(self, fd: int, size: int, slots: list[Slot], name: str | None = None) -> None:
        self.fd = fd
        self.size = size
        self.slots = slots
        self.name = name
        self._mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        self._pid = os.getpid()

    # -- creation --------------------------------------------------------
    @classmethod
    def load(
        cls,
        layout: reader.FileLayout,
        named: bool = False,
        progress: bool | None = None,
        limit: int | None = None,
        compressed: bool = False,
    ) -> SharedCache:
        """Load every field of ``layout`` into a new segment (or attach, if named).

        With ``compressed``, zstd fields keep their frames and block index and
        are decompressed on access instead of once at load.
        """
        if named:
            return _load_named(layout, progress, limit, compressed)
        decompress = _Decompress(layout, compressed)
        slots, size = _plan(_array_shapes(layout, decompress, compressed))
        _check(size, False, layout.path, limit)
        fd = os.memfd_create(f"h5record:{os.path.basename(layout.path)}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            _fill(fd, size, slots, layout, decompress, progress)
            return cls(fd, size, slots)
        except BaseException:
            os.close(fd)
            raise

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for slot in self.slots:
            arr = np.frombuffer(
                self._mm, slot.dtype, int(np.prod(slot.shape, dtype=np.int64)), slot.offset
            ).reshape(slot.shape)
            out.setdefault(slot.field, {})[slot.key] = arr
        return out

    # -- pickling: workers map the same memory ------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        if self.name is not None:
            return (_attach_named_by_name, (self.name, self.size, self.slots))
        from multiprocessing.reduction import DupFd

        return (_from_dupfd, (DupFd(self.fd), self.size, self.slots))

    def close(self) -> None:
        """Unmap; the memory is freed when no process maps it any more."""
        if self._mm is None:
            return
        try:
            self._mm.close()
        except BufferError:
            return  # arrays still point into it; the mapping goes with them
        self._mm = None
        if self.name is not None:
            _release_named(self.fd, self.name)
        else:
            os.close(self.fd)

    def __del__(self) -> None:
        if getattr(self, "_mm", None) is not None and self._pid == os.getpid():
            try:
                self.close()
            except Exception:
                pass


def _check(size: int, named: bool, path: str, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise SharedMemoryError(
            f"{path}: the in-memory cache needs {_gb(size)} but its limit is {_gb(limit)}; "
            "raise the limit or use in_memory=False"
        )
    check_room(size, named, path)


def _from_dupfd(dupfd: Any, size: int, slots: list[Slot]) -> SharedCache:
    return SharedCache(dupfd.detach(), size, slots)


def _fill(
    fd: int,
    size: int,
    slots: list[Slot],
    layout: reader.FileLayout,
    decompress: _Decompress,
    progress: bool | None,
) -> None:
    """Write every array into the segment: HDF5 reads and zstd decompresses straight into it."""
    import h5py

    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    bar = _bar(progress, size, layout.path)
    by_field: dict[str, list[Slot]] = {}
    for slot in slots:
        by_field.setdefault(slot.field, []).append(slot)
    try:
        with reader.HDF5_LOCK, h5py.File(layout.path, "r") as f:
            for fl in layout.fields:
                _fill_field(f, mm, fl, by_field[fl.field.name], decompress, layout.path)
                if bar is not None:
                    bar.update(sum(slot.nbytes for slot in by_field[fl.field.name]))
    finally:
        try:
            mm.close()
        except BufferError:  # views held by an error's traceback: unmapped when it goes
            pass
        if bar is not None:
            bar.close()


def _fill_field(
    f: Any,
    mm: mmap.mmap,
    fl: reader.FieldLayout,
    slots: list[Slot],
    decompress: _Decompress,
    path: str,
) -> None:
    from . import spec

    name = fl.field.name
    where = f"{path}: field {name!r}"
    dest = {
        slot.key: np.frombuffer(
            mm, slot.dtype, int(np.prod(slot.shape, dtype=np.int64)), slot.offset
        ).reshape(slot.shape)
        for slot in slots
    }
    if name in decompress:
        decompress.fill(fl, dest, where)
        dest = {key: arr for key, arr in dest.items() if key == spec.VALIDITY}  # as stored
    for key, arr in dest.items():
        if arr.shape[0]:
            dset = f[spec.field_path(name, key)]
            reader.read_hdf5(dset, np.s_[0 : arr.shape[0]], where, out=arr)


def _bar(progress: bool | None, size: int, path: str) -> Any:
    if progress is None:
        progress = size >= _PROGRESS_BYTES and sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=size, unit="B", unit_scale=True, desc=f"loading {os.path.basename(path)}")


# -- named segments (in_memory='node') ------------------------------------------


def segment_name(path: str, compressed: bool = False) -> str:
    """A name derived from the file's identity (path, inode, size, mtime) and the cache kind."""
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"
    if compressed:
        key += "|compressed"
    return NAME_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:20]


def _lock_path(name: str) -> str:
    return os.path.join(SHM_DIR, name + ".lock")


def _load_named(
    layout: reader.FileLayout, progress: bool | None, limit: int | None, compressed: bool
) -> SharedCache:
    name = segment_name(layout.path, compressed)
    seg_path = os.path.join(SHM_DIR, name)
    lock_fd = os.open(_lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # The init lock serialises loaders and the reaper; holders of the
        # segment keep a shared flock on the segment itself for their lifetime.
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(seg_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            attached = _read_ready(fd)
            if attached is None:
                # New, or stale: a loader died before marking it ready.
                os.ftruncate(fd, 0)
                decompress = _Decompress(layout, compressed)
                slots, size = _plan(_array_shapes(layout, decompress, compressed))
                # The reaper starts first: it also removes the segment if the
                # size check or the filling fails, or this process dies.
                _start_reaper(name)
                _check(size, True, layout.path, limit)
                os.ftruncate(fd, size)
                _fill(fd, size, slots, layout, decompress, progress)
                _write_ready(fd, slots)
            else:
                slots, size = attached
            fcntl.flock(fd, fcntl.LOCK_SH)
            return SharedCache(fd, size, slots, name=name)
        except BaseException:
            os.close(fd)
            raise
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def _attach_named_by_name(name: str, size: int, slots: list[Slot]) -> SharedCache:
    lock_fd = os.open(_lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        except FileNotFoundError as exc:
            raise SharedMemoryError(
                f"shared cache {name} is gone (its owners exited); open the dataset again"
            ) from exc
        if _read_ready(fd) is None:
            os.close(fd)
            raise SharedMemoryError(f"shared cache {name} is not ready; open the dataset again")
        fcntl.flock(fd, fcntl.LOCK_SH)
        return SharedCache(fd, size, slots, name=name)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def _read_ready(fd: int) -> tuple[list[Slot], int] | None:
    """The slot table of a ready segment; None if empty, unfinished or foreign."""
    size = os.fstat(fd).st_size
    if size < _HEADER_BYTES:
        return None
    head = os.pread(fd, _HEADER_BYTES, 0)
    magic, state, length = _HEADER.unpack_from(head)
    if magic != _MAGIC or state != _READY or length > _HEADER_BYTES - _HEADER.size:
        return None
    try:
        table = json.loads(head[_HEADER.size : _HEADER.size + length])
        slots = [
            Slot(s["field"], s["key"], s["offset"], s["dtype"], tuple(s["shape"]))
            for s in table["slots"]
        ]
    except (ValueError, KeyError, TypeError):
        return None
    if table.get("size") != size:
        return None
    return slots, size


def _write_ready(fd: int, slots: list[Slot]) -> None:
    size = os.fstat(fd).st_size
    table = json.dumps(
        {
            "size": size,
            "slots": [
                {
                    "field": s.field,
                    "key": s.key,
                    "offset": s.offset,
                    "dtype": s.dtype,
                    "shape": list(s.shape),
                }
                for s in slots
            ],
        }
    ).encode()
    if len(table) > _HEADER_BYTES - _HEADER.size:
        raise SharedMemoryError("too many fields for a named shared cache")
    os.pwrite(fd, table, _HEADER.size)
    # The ready mark is written last: a loader that dies before it leaves a
    # segment the next loader recognises as stale and rebuilds.
    os.pwrite(fd, _HEADER.pack(_MAGIC, _READY, len(table)), 0)


def _release_named(fd: int, name: str) -> None:
    """Drop this process's hold; unlink if it was the last one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    reap(name, wait=False)


def reap(name: str, wait: bool = True, poll: float = 0.5) -> bool:
    """Unlink segment ``name`` once no process holds it; True if unlinked."""
    seg_path = os.path.join(SHM_DIR, name)
    while True:
        try:
            lock_fd = os.open(_lock_path(name), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                fd = os.open(seg_path, os.O_RDWR)
            except FileNotFoundError:
                _unlink(_lock_path(name))
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # still held by some process
            else:
                _unlink(seg_path)
                _unlink(_lock_path(name))
                return True
            finally:
                os.close(fd)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        if not wait:
            return False
        time.sleep(poll)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _start_reaper(name: str) -> None:
    """A detached process that unlinks the segment when its last holder is gone."""
    # The shell puts the reaper in the background and exits at once, so the
    # reaper is nobody's child: it outlives this process whatever kills it.
    subprocess.run(
        [
            "/bin/sh",
            "-c",
            'exec "$0" -m h5record.cache --reap "$1" </dev/null >/dev/null 2>&1 &',
            sys.executable,
            name,
        ],
        start_new_session=True,
        close_fds=True,
        check=True,
    )


if __name__ == "__main__":  # the reaper: python -m h5record.cache --reap NAME
    if len(sys.argv) == 3 and sys.argv[1] == "--reap":
        reap(sys.argv[2])
