"""The commit protocol of a writer (docs/FORMAT.md, section 9).

HDF5 is not crash-safe: its metadata lives in a cache inside the process
and is written back in no particular order, so a process killed mid-write
can leave a file that does not open. :class:`CommitFile` is the file object
that HDF5 writes through (h5py's ``fileobj`` driver). It keeps one promise:
**bytes of the last commit are never changed between two commits**. Writes
past the committed end go to the file at once; writes into the committed
part (HDF5 rewriting a header, a B-tree node or a partly filled chunk) are
held in memory, page by page, and reach the file only inside
:meth:`CommitFile.commit`, through a journal written first (a redo log). A
process killed at any moment therefore leaves the file of its last commit,
plus unreferenced bytes at its end, or a complete journal with which
:func:`recover` finishes the commit.

An OS error (a full disk, say) is recorded instead of raised into HDF5,
which reacts to errors in a file object badly (``SystemError``, and a
process that crashes at exit). Later writes are dropped, the committed file
stays as it was, and :meth:`CommitFile.check` raises the error to the writer.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import zlib

from . import spec
from .errors import WriteError

PAGE = 4096
_HEADER = struct.Struct("<8sQII")  # magic, file size, page size, page count
_ENTRY = struct.Struct("<Q")  # page index, followed by the page's new bytes
_CRC = struct.Struct("<I")


def journal_path(path: str) -> str:
    return path + spec.JOURNAL_SUFFIX


def fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(path: str) -> int | None:
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return None


def write_error(path: str, exc: OSError, what: str) -> WriteError:
    """A WriteError naming the file, the free space and what was being written."""
    free = free_bytes(path)
    space = "" if free is None else f"; {free / 1e6:,.1f} MB free on its filesystem"
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space, then continue with H5Writer(..., resume=True)"
    return WriteError(
        exc.errno or 0, f"{path}: {exc.strerror or exc} while writing {what}{space}{hint}"
    )


class CommitFile:
    """A file for h5py's ``fileobj`` driver with commits that survive a kill.

    Parameters
    ----------
    path:
        The file. ``create=True`` makes a new one (it must not exist; its
        mode follows the umask); otherwise it is opened for update, after
        finishing a commit that was interrupted (:func:`recover`).
    """

    def __init__(self, path: str, create: bool) -> None:
        self.path = path
        if create:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        else:
            recover(path)
            self.fd = os.open(path, os.O_RDWR)
        self.committed = os.fstat(self.fd).st_size
        self.size = self.committed
        self.pos = 0
        self.pages: dict[int, bytearray] = {}
        self.error: WriteError | None = None
        self.dropping = False  # after discard(): writes go nowhere
        self.what = "the file"  # what is being written, for error messages

    # -- the file object h5py's fileobj driver uses -----------------------
    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = pos
        elif whence == 1:
            self.pos += pos
        else:
            self.pos = self.size + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _limit(self) -> int:
        """First byte that is free to change: the committed end, page aligned up."""
        return -(-self.committed // PAGE) * PAGE

    def _page(self, index: int) -> bytearray:
        page = self.pages.get(index)
        if page is None:
            old = os.pread(self.fd, PAGE, index * PAGE)
            page = bytearray(old.ljust(PAGE, b"\0"))
            self.pages[index] = page
        return page

    def readinto(self, buf: memoryview) -> int:
        view = memoryview(buf).cast("B")
        n = len(view)
        start = self.pos
        self.pos += n
        if self.pages and start < self._limit():
            self._read_paged(view, start)
        else:
            self._pread(view, start)
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(max(0, n if n >= 0 else self.size - self.pos))
        self.readinto(memoryview(buf))
        return bytes(buf)

    def _pread(self, view: memoryview, start: int) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], start + done)
            if got <= 0:
                view[done:] = bytes(len(view) - done)  # past the end reads as zeros
                return
            done += got

    def _read_paged(self, view: memoryview, start: int) -> None:
        pos = 0
        while pos < len(view):
            addr = start + pos
            index, within = divmod(addr, PAGE)
            take = min(PAGE - within, len(view) - pos)
            page = self.pages.get(index)
            if page is not None:
                view[pos : pos + take] = page[within : within + take]
            else:
                self._pread(view[pos : pos + take], addr)
            pos += take

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        start = self.pos
        self.pos += n
        if self.error is not None or self.dropping:
            return n
        self.size = max(self.size, start + n)
        limit = self._limit()
        pos = 0
        while pos < n and start + pos < limit:  # the committed part: held back
            addr = start + pos
            index, within = divmod(addr, PAGE)
            take = min(PAGE - within, n - pos)
            self._page(index)[within : within + take] = view[pos : pos + take]
            pos += take
        if pos < n:
            try:
                self._pwrite(view[pos:], start + pos)
            except OSError as exc:
                self.error = write_error(self.path, exc, self.what)
        return n

    def _pwrite(self, view: memoryview, addr: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], addr + done)

    def truncate(self, size: int | None = None) -> int:
        # HDF5 trims the file to its end of allocation when it flushes. The
        # committed bytes stay until the next commit, whatever HDF5 freed.
        size = self.pos if size is None else size
        keep = max(size, self.committed)
        if self.error is None and not self.dropping:
            try:
                if os.fstat(self.fd).st_size > keep:
                    os.ftruncate(self.fd, keep)
            except OSError as exc:
                self.error = write_error(self.path, exc, self.what)
        self.size = keep
        return size

    def flush(self) -> None:
        """HDF5 flushes often; durability is the job of :meth:`commit`."""

    # -- commits -----------------------------------------------------------
    def check(self) -> None:
        """Raise the first OS error met since the file was opened."""
        if self.error is not None:
            raise self.error

    def commit(self) -> None:
        """Make everything written so far the new committed state.

        Order: new bytes past the committed end are made durable; then the
        new content of every committed page that changes goes to the journal,
        made durable: that is the commit point. Then the pages are written in
        place and the journal is removed. A kill before the commit point
        leaves the old state; after it, :func:`recover` finishes the commit.
        """
        self.check()
        try:
            os.fsync(self.fd)
            if self.pages:
                self._write_journal()
                for index in sorted(self.pages):
                    self._pwrite(
                        memoryview(self.pages[index])[: self._page_end(index)], index * PAGE
                    )
                os.fsync(self.fd)
                os.unlink(journal_path(self.path))
        except OSError as exc:
            self.error = write_error(self.path, exc, "a commit")
            raise self.error from exc
        self.pages.clear()
        self.committed = os.fstat(self.fd).st_size
        self.size = max(self.size, self.committed)

    def _page_end(self, index: int) -> int:
        return max(0, min(PAGE, self.size - index * PAGE))

    def _write_journal(self) -> None:
        parts = [_HEADER.pack(spec.JOURNAL_MAGIC, self.size, PAGE, len(self.pages))]
        for index in sorted(self.pages):
            parts += [_ENTRY.pack(index), bytes(self.pages[index])]
        body = b"".join(parts)
        body += _CRC.pack(zlib.crc32(body))
        jpath = journal_path(self.path)
        fd = os.open(jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(body)
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(jpath)

    def discard(self) -> None:
        """Drop every later write: HDF5 may close its file without touching this one."""
        self.dropping = True
        self.pages.clear()

    def rollback(self) -> None:
        """Forget everything since the last commit and trim the file back to it."""
        self.pages.clear()
        self.size = self.committed
        if self.fd >= 0:
            try:
                if os.fstat(self.fd).st_size != self.committed:
                    os.ftruncate(self.fd, self.committed)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_journal(path: str) -> tuple[bool, bytes]:
    """Whether ``path`` has a complete journal (its commit reached its commit
    point), and the journal's bytes; (False, b"") when there is none."""
    try:
        with open(journal_path(path), "rb") as fh:
            body = fh.read()
    except FileNotFoundError:
        return False, b""
    complete = len(body) >= _HEADER.size + _CRC.size and (
        zlib.crc32(body[: -_CRC.size]) == _CRC.unpack(body[-_CRC.size :])[0]
    )
    if complete:
        magic, _, page, count = _HEADER.unpack_from(body)
        complete = magic == spec.JOURNAL_MAGIC and len(body) == (
            _HEADER.size + count * (_ENTRY.size + page) + _CRC.size
        )
    return complete, body


def commit_pending(path: str) -> bool:
    """Whether a commit of ``path`` passed its commit point and is not finished:
    a live writer is finishing it, or a killed one left it to the next writer."""
    return _read_journal(path)[0]


def recover(path: str) -> bool:
    """Finish the interrupted commit of ``path``, if any; True if one was finished.

    Only a writer calls this: a complete journal means the commit reached its
    commit point, and its pages are written (again); an incomplete one means
    the commit never changed the file. Either way the journal is removed.
    Readers never write: beside a live writer, pages of an old journal would
    undo a newer commit.
    """
    complete, body = _read_journal(path)
    if not body and not os.path.exists(journal_path(path)):
        return False
    if complete:
        _, size, page, count = _HEADER.unpack_from(body)
        fd = os.open(path, os.O_RDWR)
        try:
            at = _HEADER.size
            for _ in range(count):
                (index,) = _ENTRY.unpack_from(body, at)
                at += _ENTRY.size
                end = max(0, min(page, size - index * page))
                os.pwrite(fd, body[at : at + end], index * page)
                at += page
            os.fsync(fd)
        finally:
            os.close(fd)
    jpath = journal_path(path)
    os.unlink(jpath)
    fsync_dir(jpath)
    return complete
