"""H5Writer: stream rows into a new h5record file in one pass.

Rows are checked as they arrive, buffered per field, and appended to
chunked HDF5 datasets a few MiB at a time, so memory stays bounded and no
HDF5 call is made per row. A new file is written as ``<path>.partial`` and
renamed into place only when it is complete; commits (periodic, on a
signal, on close) follow docs/FORMAT.md, section 9, through
:class:`~h5record.commit.CommitFile`.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from . import codecs, spec
from ._fast import (
    NULL_CONVERT,
    NULL_KEEP,
    NULL_REFUSE,
    PACK_FLOAT,
    PACK_INT,
    PACK_OTHER,
    PACK_UTF8,
    RowPacker,
    join_buffers,
    null_mask,
)
from ._version import __version__
from .checksums import FieldSums, metadata_hash
from .commit import CommitFile, commit_pending, fsync_dir, journal_path, write_error
from .errors import FormatError, H5RecordError, RowError, RowTypeError, SchemaError
from .fields import Field, Schema, Sequence, String, Unjoined

# Flush buffered rows to HDF5 when this many raw bytes are pending: rows
# given one by one, or those write_batch holds back in all fields together
# (values and offsets; not a zstd field's, which it buffers by its blocks).
FLUSH_BYTES = 16 << 20
# write_batch columns of fixed-size fields up to this size are copied into the
# field's buffer too (a copy of 10,000 labels costs less than an append of
# their own); larger ones (images) are written from the caller's memory.
STAGE_COPY_BYTES = 1 << 20
FLUSH_ROWS = 1 << 16
# Chunk size of lzf/gzip datasets. HDF5 filters inflate a whole chunk to read
# one row: measured on 1M text pairs, 16 KiB chunks read random rows 2.5x
# faster than 64 KiB ones for a file 4% (lzf) to 7% (gzip) larger.
FILTERED_CHUNK_BYTES = 16 << 10


def _chunk_len(element_bytes: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // max(1, element_bytes))


class _Column:
    """Buffered, not yet written values of one field."""

    def __init__(
        self,
        group: h5py.Group,
        field: Field,
        codec: dict[str, Any],
        chunk_bytes: int,
        rows: int | None = None,
    ) -> None:
        self.field = field
        self.rows: list[Any] = []  # values of single rows, not yet joined
        self.parts: list[Any] = []  # joined (flat, lengths) pieces, not yet written
        self.pending_bytes = 0
        self.sums: FieldSums | None = None  # set by a writer with checksums
        # write_batch columns joined as they arrive, into a buffer that flushes
        # reuse (only while no part waits: the file gets the rows in order)
        self.stage = np.empty(0, np.uint8)
        self.staged = 0  # bytes of stage in use
        self.stage_lengths: list[np.ndarray] = []  # of a variable-length field's rows
        self.staged_rows = 0
        self.stage_joined: Any = None  # what FieldSums.join hashed of stage[:staged]
        self.stage_helper = False  # its values are left to a helper thread to hash
        if rows is not None:
            self._open(group, rows)
            return
        elem_shape = field.element_shape
        filters = codecs.hdf5_filter(codec)
        values_chunk = chunk_bytes
        if filters:
            # Reading one row inflates its whole chunk: keep filtered chunks small.
            values_chunk = min(chunk_bytes, FILTERED_CHUNK_BYTES)
        self.values = group.create_dataset(
            spec.VALUES,
            shape=(0, *elem_shape),
            maxshape=(None, *elem_shape),
            chunks=(_chunk_len(field.element_bytes, values_chunk), *elem_shape),
            dtype=field.dtype,
            **filters,
        )
        self.offsets = None
        self.end = 0  # elements written to values
        if field.variable:
            self.offsets = group.create_dataset(
                spec.OFFSETS,
                shape=(1,),
                maxshape=(None,),
                chunks=(_chunk_len(8, chunk_bytes),),
                dtype="<i8",
            )
            self.offsets[0] = 0
        self._open_appenders()

    def _open_appenders(self) -> None:
        self.values_out = _ChunkAppender(self.values)
        self.offsets_out = None if self.offsets is None else _ChunkAppender(self.offsets)

    def _open(self, group: h5py.Group, rows: int) -> None:
        """Continue the committed rows of an existing file; later data is dropped."""
        self.values = _resizable_dataset(group, spec.VALUES)
        self.offsets = None
        if self.field.variable:
            self.offsets = _resizable_dataset(group, spec.OFFSETS)
            self.offsets.resize((rows + 1,))
            self.end = int(self.offsets[rows])
        else:
            self.end = rows
        self.values.resize((self.end, *self.field.element_shape))
        self._open_appenders()

    def stage_rows(self, flat: np.ndarray | Unjoined, lengths: np.ndarray | None) -> Any:
        """Join the rows of a write_batch column into the stage, past the rows it
        holds: :meth:`append_many` takes them in (an error before leaves the
        column as it was). Returns what it takes, and ``lengths``: ``flat``
        itself where they are not staged."""
        if self.parts:  # rows given one by one come first: nothing is staged
            return flat, lengths
        if isinstance(flat, Unjoined):
            parts, rows = flat.parts, -1  # counted by their lengths
        elif (
            type(flat) is np.ndarray
            and flat.dtype == self.field.dtype
            and flat.nbytes <= STAGE_COPY_BYTES
        ):
            parts, rows = [flat], len(flat)
        else:
            self._unstage()  # here, as it allocates: the staged rows come first
            return flat, lengths
        need = self.staged + flat.nbytes
        if need > len(self.stage):
            grown = np.empty(max(need, min(2 * len(self.stage), need + FLUSH_BYTES)), np.uint8)
            grown[: self.staged] = self.stage[: self.staged]
            self.stage = grown
        if not self.staged:
            self.stage_helper = self.sums is not None and not self.sums.hash_when_joining()
        if self.sums is None or self.stage_helper:
            join_buffers(parts, self.stage[:need], start=self.staged)
            joined = None
        else:
            out = self.stage[:need].view(self.field.dtype)
            joined = self.sums.join(self.values, parts, out, self.staged, self.stage_joined)
        return _StagedRows(self.staged, need, joined, rows), lengths

    @property
    def held(self) -> int:
        """Bytes of the staged rows, their offsets to be included."""
        return self.staged + 8 * self.staged_rows if self.field.variable else self.staged

    @property
    def stage_bytes(self) -> int:
        """The size of the stage's buffer."""
        return len(self.stage)

    def release_stage(self) -> int:
        """Free the stage's buffer if it holds no rows; returns the bytes freed."""
        if self.staged_rows:
            return 0
        freed, self.stage = len(self.stage), np.empty(0, np.uint8)
        return freed

    def append_many(self, flat: Any, lengths: np.ndarray | None) -> None:
        if isinstance(flat, _StagedRows):
            assert flat.start == self.staged, "rows staged out of turn"
            self.pending_bytes += flat.stop - flat.start
            self.staged, self.stage_joined = flat.stop, flat.joined
            if lengths is not None:
                self.stage_lengths.append(lengths)
            self.staged_rows += len(flat) if lengths is None else len(lengths)
            return
        self._unstage()
        self.parts.append((flat, lengths))
        self.pending_bytes += flat.nbytes

    def _staged(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The values and lengths of the staged rows."""
        values = self.stage[: self.staged].view(self.field.dtype)
        values = values.reshape((-1, *self.field.element_shape))
        return values, np.concatenate(self.stage_lengths) if self.field.variable else None

    def _unstage(self) -> None:
        """Make the staged rows an ordinary part, before a part of other rows."""
        if self.staged_rows:
            self.parts.append(self._staged())
            self.stage = np.empty(0, np.uint8)  # lent to the part
            self._clear_stage()

    def _clear_stage(self) -> None:
        self.staged = self.staged_rows = 0
        self.stage_lengths.clear()
        self.stage_joined = None

    def flush(self, final: bool = False, soft: bool = False) -> None:
        """Write the rows held to the file; ``soft``: not the staged rows, which the
        writer writes when its columns together stage ``FLUSH_BYTES``."""
        if self.staged_rows:  # of 0 bytes, maybe
            if soft:
                return
            hashed = FieldSums.hashed(self.stage_joined)
            self._write(*self._staged(), hashed, self.stage_helper)
            self._clear_stage()
            self.pending_bytes = 0
            return
        if not self.parts:
            return
        # Joined first: a join that fails (out of memory) has written nothing.
        flat, hashed = _join_hashed([p[0] for p in self.parts], self.field, self.sums, self.values)
        lengths = np.concatenate([p[1] for p in self.parts]) if self.field.variable else None
        self._write(flat, lengths, hashed)
        self.parts.clear()
        self.pending_bytes = 0

    def _write(
        self, flat: np.ndarray, lengths: np.ndarray | None, hashed: Any, helper: bool = False
    ) -> None:
        if lengths is not None:
            starts = self.end + np.cumsum(lengths, dtype=np.int64)
            self.offsets_out.append(starts, self.sums)
        if len(flat):
            self.values_out.append(flat, self.sums, hashed, helper)
            self.end += len(flat)

    def commit_tail(self) -> None:
        """Nothing to do: a commit's flush writes the staged rows too."""

    def finish(self) -> None:
        self.flush()
        self.stage = np.empty(0, np.uint8)

    def datasets(self) -> list[h5py.Dataset]:
        return [d for d in (self.values, self.offsets) if d is not None]

    def stored_codec(self, codec: dict[str, Any]) -> dict[str, Any]:
        return codec


class _StagedRows:
    """Rows joined into a column's stage, bytes ``start:stop``, not taken in yet."""

    __slots__ = ("joined", "rows", "start", "stop")

    def __init__(self, start: int, stop: int, joined: Any, rows: int) -> None:
        self.start, self.stop, self.joined = start, stop, joined
        self.rows = rows  # of a fixed-size field (-1: counted by their lengths)

    def __len__(self) -> int:
        if self.rows < 0:
            raise TypeError("staged rows of a variable-length field are counted by their lengths")
        return self.rows


class _Joined:
    """Rows of a write_batch column joined into memory of their own."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)


class _Staged:
    """The values of a Sequence field's rows, copied into one buffer as they arrive.

    The field's converter copies every row (the caller may refill its array)
    and a flush then joined the copies: two copies of every value. Here each
    row is copied once, into a buffer that flushes reuse. A row that a later
    field rejects was copied already: the next row, which gets the same row
    index, or the flush drops it.
    """

    def __init__(self, field: Sequence) -> None:
        self.field = field
        self.buf = np.empty(0, field.dtype)
        self.used = 0
        self.last = -1  # row index of the last row copied
        self.last_start = 0
        self.lent = False  # a flush is writing buf[:used] out

    def convert(self, value: Any, index: int) -> np.ndarray | None:
        if value is None and self.field.nullable:  # a null: an empty row staged
            if index == self.last:  # a row that another field rejected
                self.used = self.last_start
            self.last, self.last_start = index, self.used
            return None
        arr = self.field.convert(value, index, copy=False)
        if index == self.last:  # that row was rejected by another field
            self.used = self.last_start
        if self.lent:  # still being written (an error interrupted a flush)
            self.buf = np.empty(len(self.buf), self.buf.dtype)
            self.lent = False
        start = self.used
        end = start + len(arr)
        if end > len(self.buf):
            grown = np.empty(max(end, 2 * len(self.buf), 1 << 16), self.buf.dtype)
            grown[:start] = self.buf[:start]
            self.buf = grown
        self.buf[start:end] = arr
        self.used, self.last, self.last_start = end, index, start
        return arr

    def take(self, accepted: int) -> np.ndarray:
        """The values of the rows before row index ``accepted``, lent until the flush ends."""
        if self.last >= accepted:  # the last row copied was rejected
            self.used = self.last_start
        flat = self.buf[: self.used]
        self.used, self.last, self.lent = 0, -1, True
        return flat


class _ChunkAppender:
    """Appends to a chunked dataset; whole chunks of an unfiltered one go straight to the file.

    ``dset[a:b] = data`` makes HDF5 copy every chunk it writes; a whole chunk
    written with ``write_direct_chunk`` reaches the file object as it is
    (about twice the rate for 16 KB rows). The ends of an append that only
    partly fill a chunk take the ordinary path.
    """

    def __init__(self, dset: h5py.Dataset) -> None:
        self.dset = dset
        self.chunk = dset.chunks[0]
        self.direct = dset.id.get_create_plist().get_nfilters() == 0
        self.row_shape = dset.shape[1:]
        self.zeros = (0,) * len(self.row_shape)

    def append(
        self,
        data: np.ndarray,
        sums: FieldSums | None = None,
        hashed: Any = None,
        helper: bool = False,
    ) -> None:
        """Append ``data``, hashed into ``sums`` (None: no checksums); ``hashed``:
        hashes of its blocks already made by :meth:`FieldSums.join`; ``helper``:
        left to a helper thread to hash (:meth:`FieldSums.begin`)."""
        dset = self.dset
        start, n = dset.shape[0], len(data)
        if not n:
            return
        direct = self.direct and n >= self.chunk
        if direct:  # raw bytes go to the file as they are: in the dataset's own dtype
            data = np.ascontiguousarray(data, dtype=dset.dtype)
        append = None if sums is None else sums.begin(dset, data, start, hashed, helper)
        dset.resize((start + n, *self.row_shape))
        if not direct:
            dset[start:] = data
        else:
            head = -start % self.chunk  # up to the end of a started chunk
            whole = head + (n - head) // self.chunk * self.chunk
            if head:
                dset[start : start + head] = data[:head]
            write = dset.id.write_direct_chunk
            for at in range(head, whole, self.chunk):
                write((start + at, *self.zeros), data[at : at + self.chunk])
            if whole < n:
                dset[start + whole :] = data[whole:]
        if append is not None:  # not reached when the write fails
            FieldSums.end(append)


def _resizable_dataset(group: h5py.Group, name: str) -> h5py.Dataset:
    dset = group.get(name)
    if not isinstance(dset, h5py.Dataset) or dset.maxshape[0] is not None:
        raise FormatError(
            f"{group.file.filename}: {group.name}/{name} is missing or cannot grow "
            "(not a chunked dataset with maxshape None); rows cannot be added to this file"
        )
    return dset


def _resizable(
    group: h5py.Group, name: str, dtype: str, chunk_bytes: int, first: Any = None
) -> h5py.Dataset:
    dset = group.create_dataset(
        name,
        shape=(0,),
        maxshape=(None,),
        chunks=(_chunk_len(np.dtype(dtype).itemsize, chunk_bytes),),
        dtype=dtype,
    )
    if first is not None:
        dset.resize((1,))
        dset[0] = first
    return dset


def _append(dset: h5py.Dataset, data: np.ndarray, sums: FieldSums | None = None) -> None:
    """Append ``data`` to ``dset``, hashed into ``sums`` (None: no checksums)."""
    if len(data):
        end = dset.shape[0]
        append = None if sums is None else sums.begin(dset, data, end)
        dset.resize((end + len(data),))
        dset[end:] = data
        if append is not None:  # not reached when the write fails
            FieldSums.end(append)


# zstd fields plan their blocks (rows per block, dictionary) on the first
# rows; they wait for this much data, or for a commit, before they do.
ZSTD_PLAN_BYTES = 8 << 20


class _ZstdColumn:
    """Buffered rows of a zstd field, written as whole blocks of rows.

    The rows of an unfinished last block stay buffered. A commit writes them
    as a last, short frame (FORMAT.md allows it) that the next flush
    replaces by the full block, so the block layout is the one of an
    uninterrupted write.
    """

    def __init__(
        self,
        group: h5py.Group,
        field: Field,
        codec: dict[str, Any],
        chunk_bytes: int,
        rows: int | None = None,
    ) -> None:
        self.group = group
        self.chunk_bytes = chunk_bytes
        self.field = field
        self.codec = codec
        self.encoder = codecs.ZstdBlockEncoder(codec, field.element_bytes, field.variable)
        self.rows: list[Any] = []
        self.parts: list[Any] = []
        self.pending_bytes = 0
        self.sums: FieldSums | None = None  # set by a writer with checksums
        self.plain: _Column | None = None
        self.planned = False
        self.values: h5py.Dataset | None = None
        self.blocks: h5py.Dataset | None = None
        self.written = 0  # compressed bytes of whole blocks in values
        self.tail = False  # values and blocks end with a short frame of a commit
        if rows is not None:
            self._open(rows)

    def _open(self, rows: int) -> None:
        self.planned = True
        self.values = _resizable_dataset(self.group, spec.VALUES)
        self.blocks = _resizable_dataset(self.group, spec.BLOCKS)
        dictionary = None
        if self.codec.get("dictionary"):
            dictionary = self.group[spec.DICTIONARY][()].tobytes()
        self.encoder.restore(self.codec, dictionary)
        R = self.encoder.rows_per_block
        whole, rest = divmod(rows, R)
        self.written = int(self.blocks[whole])
        if rest:  # the committed short block becomes buffered rows again
            frame = self.values[self.written : int(self.blocks[whole + 1])].tobytes()
            self.parts.append(self._rows_of(self.encoder.decode(frame), rest))
            self.pending_bytes = self.parts[0][0].nbytes
        self.blocks.resize((whole + 1,))
        self.values.resize((self.written,))

    def _rows_of(self, raw: bytes, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        field = self.field
        if not field.variable:
            flat = np.frombuffer(raw, field.dtype).reshape((n, *field.element_shape))
            return flat.copy(), None
        lengths = np.frombuffer(raw, "<u4", n).astype(np.int64)
        flat = np.frombuffer(raw, field.dtype, offset=4 * n)
        return flat.reshape((-1, *field.element_shape)).copy(), lengths

    def stage_rows(self, flat: np.ndarray | Unjoined, lengths: np.ndarray | None) -> Any:
        """A write_batch column's values and lengths in memory of their own where this
        column keeps them past the batch (joined; before the plan, copied), else as
        they are; :meth:`append_many` takes them in (an error before leaves the
        column as it was)."""
        if self.plain is not None:
            return self.plain.stage_rows(flat, lengths)
        if isinstance(flat, Unjoined):
            flat = _Joined(flat.join())
        elif not self.planned:  # kept until the plan: never the caller's own array
            flat = _Joined(flat.copy())
        if lengths is not None and not self.planned:
            lengths = lengths.copy()
        # once planned, written but for the rows of an unfinished block, which flush copies
        return flat, lengths

    @property
    def held(self) -> int:
        return self.plain.held if self.plain is not None else 0

    @property
    def stage_bytes(self) -> int:
        return self.plain.stage_bytes if self.plain is not None else 0

    def release_stage(self) -> int:
        return self.plain.release_stage() if self.plain is not None else 0

    def append_many(self, flat: Any, lengths: np.ndarray | None) -> None:
        if self.plain is not None:
            self.plain.append_many(flat, lengths)
            self.pending_bytes = self.plain.pending_bytes
            return
        if isinstance(flat, _Joined):  # from stage_rows
            flat = flat.values
        self.parts.append((flat, lengths))
        self.pending_bytes += flat.nbytes

    def _plan(self, flat: np.ndarray, offsets: np.ndarray | None) -> None:
        self.planned = True
        if not self.encoder.plan(flat, offsets):
            # Incompressible (JPEG bytes, say): store it raw, as FORMAT.md allows.
            self.plain = _Column(self.group, self.field, {"id": spec.CODEC_NONE}, self.chunk_bytes)
            self.plain.sums = self.sums
            return
        self.values = _resizable(self.group, spec.VALUES, "u1", self.chunk_bytes)
        # The block index is small (8 bytes a block): smaller chunks waste less of
        # the file in the last, partly filled chunk.
        index_chunk = max(4096, self.chunk_bytes // 8)
        self.blocks = _resizable(self.group, spec.BLOCKS, "<i8", index_chunk, first=0)
        if self.encoder.dictionary is not None:
            self.group.create_dataset(
                spec.DICTIONARY, data=np.frombuffer(self.encoder.dictionary, np.uint8)
            )

    def flush(self, final: bool = False, plan: bool = False, soft: bool = False) -> None:
        if self.plain is not None:
            self.plain.flush(soft=soft)
            self.pending_bytes = self.plain.pending_bytes
            return
        if not self.parts:
            return
        if not (self.planned or final or plan) and self.pending_bytes < ZSTD_PLAN_BYTES:
            return  # too few rows yet to choose the block size and dictionary from
        if self.tail:  # the next block replaces the short frame of the last commit
            assert self.values is not None and self.blocks is not None
            self.blocks.resize((self.blocks.shape[0] - 1,))
            self.values.resize((self.written,))
            self.tail = False
        flat = _join([p[0] for p in self.parts], self.field)
        lengths = np.concatenate([p[1] for p in self.parts]) if self.field.variable else None
        self.parts.clear()
        offsets = None
        n = len(flat)
        if lengths is not None:
            n = len(lengths)
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
        if not self.planned:
            self._plan(flat, offsets)
            if self.plain is not None:
                self.plain.append_many(flat, lengths)
                self.plain.flush()
                self.pending_bytes = 0
                return
        R = self.encoder.rows_per_block
        whole = n if final else n - n % R
        if whole:
            cut = int(offsets[whole]) if offsets is not None else whole
            frames, sizes = self.encoder.encode(
                flat[:cut], offsets[: whole + 1] if offsets is not None else None
            )
            assert self.values is not None and self.blocks is not None
            ends = self.written + np.cumsum(sizes)
            data = np.frombuffer(frames, np.uint8)
            _append(self.values, data, self.sums)
            _append(self.blocks, ends, self.sums)
            self.written += len(frames)
        if whole < n:  # carry the rows of an unfinished block into the next flush
            # As copies: flat may be the caller's write_batch column, which the
            # caller is free to change once write_batch returns.
            if offsets is not None:
                rest = flat[int(offsets[whole]) :].copy()
                self.parts.append((rest, lengths[whole:].copy()))
            else:
                self.parts.append((flat[whole:].copy(), None))
            self.pending_bytes = self.parts[0][0].nbytes
        else:
            self.pending_bytes = 0

    def commit_tail(self) -> None:
        """Write the rows of the unfinished block as a short last frame, and keep them."""
        if not self.planned and self.parts:
            self.flush(plan=True)
        if self.plain is not None or not self.parts:
            return
        if self.tail:
            assert self.values is not None and self.blocks is not None
            self.blocks.resize((self.blocks.shape[0] - 1,))
            self.values.resize((self.written,))
            self.tail = False
        flat, lengths = self.parts[0] if len(self.parts) == 1 else self._joined()
        self.parts[:] = [(flat, lengths)]
        offsets = None
        if lengths is not None:
            offsets = np.zeros(len(lengths) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
        frame, sizes = self.encoder.encode(flat, offsets)
        assert self.values is not None and self.blocks is not None and len(sizes) == 1
        _append(self.values, np.frombuffer(frame, np.uint8))
        _append(self.blocks, np.array([self.written + len(frame)], np.int64))
        self.tail = True

    def _joined(self) -> tuple[np.ndarray, np.ndarray | None]:
        flat = _join([p[0] for p in self.parts], self.field)
        lengths = np.concatenate([p[1] for p in self.parts]) if self.field.variable else None
        return flat, lengths

    def finish(self) -> None:
        if not self.planned and not self.parts:
            self.parts.append(
                (
                    np.empty((0, *self.field.element_shape), self.field.dtype),
                    np.zeros(0, np.int64) if self.field.variable else None,
                )
            )
        if self.tail and not self.parts:
            return  # the short frame of the last commit is the final block
        self.flush(final=True)

    def datasets(self) -> list[h5py.Dataset]:
        if self.plain is not None:
            return self.plain.datasets()
        return [d for d in (self.values, self.blocks) if d is not None]

    def stored_codec(self, codec: dict[str, Any]) -> dict[str, Any]:
        if self.plain is not None:
            return {"id": spec.CODEC_NONE, "requested": spec.CODEC_ZSTD}
        return self.encoder.config(codec)


class _Validity:
    """The validity bitmap of a nullable field (docs/FORMAT.md, section 10).

    Whole bytes are written and hashed as rows arrive; the bits of rows past
    the last whole byte are kept here and written as a last, partly filled
    byte, which the next flush replaces (as a zstd field's short last frame).
    """

    def __init__(self, group: h5py.Group, chunk_bytes: int, rows: int | None = None) -> None:
        self.parts: list[np.ndarray | int] = []  # an int: that many rows, all valid
        self.sums: FieldSums | None = None
        if rows is None:
            self.dset = group.create_dataset(
                spec.VALIDITY,
                shape=(0,),
                maxshape=(None,),
                chunks=(_chunk_len(1, max(1, chunk_bytes // 8)),),
                dtype="u1",
            )
            self.tail = np.empty(0, np.bool_)
        else:  # continue the committed rows: the partly filled last byte is held back
            self.dset = _resizable_dataset(group, spec.VALIDITY)
            whole, rest = divmod(rows, 8)
            if (
                self.dset.dtype != np.uint8
                or self.dset.ndim != 1
                or self.dset.shape[0] < whole + (rest > 0)
            ):
                raise FormatError(
                    f"{group.file.filename}: {group.name}/{spec.VALIDITY} does not hold the "
                    f"bits of {rows} rows; the file is damaged"
                )
            last = self.dset[whole : whole + 1] if rest else np.zeros(0, np.uint8)
            self.tail = np.unpackbits(last, bitorder="little")[:rest].astype(np.bool_)
            self.dset.resize((whole,))
        self.tail_written = False  # the dataset ends with the bits of self.tail
        self.out = _ChunkAppender(self.dset)

    def append(self, valid: np.ndarray | None, n: int) -> None:
        """The validity of ``n`` more rows; None: every one holds a value."""
        if n:  # a count where every row holds a value: nothing allocated here
            self.parts.append(n if valid is None else valid)

    def flush(self) -> None:
        if not self.parts and (self.tail_written or not len(self.tail)):
            return
        parts = (np.ones(p, np.bool_) if isinstance(p, int) else p for p in self.parts)
        bits = np.concatenate([self.tail, *parts])
        self.parts.clear()
        if self.tail_written:
            self.dset.resize((self.dset.shape[0] - 1,))
            self.tail_written = False
        whole = len(bits) // 8 * 8
        if whole:
            data = np.packbits(bits[:whole], bitorder="little")
            self.out.append(data, self.sums)
        self.tail = bits[whole:]
        if len(self.tail):
            # Not hashed as it arrives: a commit hashes the bytes past the hashed
            # stream into its entries only (as FieldSums.commit does for zstd tails).
            self.out.append(np.packbits(self.tail, bitorder="little"))
            self.tail_written = True


class _Nullable:
    """A column of a nullable field: its own column plus the validity bitmap."""

    def __init__(self, column: Any, validity: _Validity) -> None:
        self.column = column
        self.validity = validity
        self.field = column.field
        self.rows = column.rows

    @property
    def pending_bytes(self) -> int:
        return int(self.column.pending_bytes)

    @property
    def sums(self) -> FieldSums | None:
        return self.column.sums

    @sums.setter
    def sums(self, sums: FieldSums | None) -> None:
        self.column.sums = self.validity.sums = sums

    def stage_rows(self, flat: np.ndarray | Unjoined, lengths: np.ndarray | None) -> Any:
        return self.column.stage_rows(flat, lengths)

    @property
    def held(self) -> int:
        return int(self.column.held)

    @property
    def stage_bytes(self) -> int:
        return int(self.column.stage_bytes)

    def release_stage(self) -> int:
        return int(self.column.release_stage())

    def append_many(
        self,
        flat: Any,
        lengths: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> None:
        self.column.append_many(flat, lengths)
        self.validity.append(valid, len(flat) if lengths is None else len(lengths))

    def flush(self, soft: bool = False) -> None:
        self.column.flush(soft=soft)
        self.validity.flush()

    def commit_tail(self) -> None:
        self.column.commit_tail()

    def finish(self) -> None:
        self.column.finish()
        self.validity.flush()

    def datasets(self) -> list[h5py.Dataset]:
        return [*self.column.datasets(), self.validity.dset]

    def stored_codec(self, codec: dict[str, Any]) -> dict[str, Any]:
        return self.column.stored_codec(codec)


def _is_scalar(field: Field) -> bool:
    return not field.variable and field.element_shape == ()


def _make_column(
    group: h5py.Group,
    field: Field,
    codec: dict[str, Any],
    chunk_bytes: int,
    rows: int | None = None,
) -> Any:
    if codec["id"] == spec.CODEC_ZSTD:
        column: Any = _ZstdColumn(group, field, codec, chunk_bytes, rows)
    else:
        column = _Column(group, field, codec, chunk_bytes, rows)
    if field.nullable:
        return _Nullable(column, _Validity(group, chunk_bytes, rows))
    return column


def _join(parts: list[np.ndarray | Unjoined], field: Field) -> np.ndarray:
    return _join_hashed(parts, field)[0]


def _join_hashed(
    parts: list[np.ndarray | Unjoined],
    field: Field,
    sums: FieldSums | None = None,
    dset: h5py.Dataset | None = None,
) -> tuple[np.ndarray, Any]:
    """The values of ``parts`` in one array of the field's dtype (a part itself
    if it is the only one); with ``sums``, and the hashes of the blocks they
    fill appended to ``dset``, made as they are joined (None if not)."""
    if len(parts) == 1 and not isinstance(parts[0], Unjoined):
        return np.asarray(parts[0], field.dtype), None
    buffers: list[Any] = []
    for p in parts:
        buffers.extend(p.parts if isinstance(p, Unjoined) else [np.asarray(p, field.dtype)])
    out = np.empty((sum(len(p) for p in parts), *field.element_shape), field.dtype)
    if sums is None or dset is None:
        join_buffers(buffers, out.reshape(-1).view(np.uint8))
        return out, None
    return out, FieldSums.hashed(sums.join(dset, buffers, out))


# Periodic commits (docs/FORMAT.md, section 9): by default every 60 seconds,
# a bound on the work a kill can lose that costs well under 1% of the time.
COMMIT_SECONDS = 60.0
_INTERRUPTS = ("SIGINT", "SIGTERM")


class H5Writer:
    """Write rows into an h5record file, with commits that survive a kill.

    Parameters
    ----------
    path:
        Destination. A new file is written as ``<path>.partial`` and renamed
        to ``path`` when the writer closes successfully.
    schema:
        A :class:`~h5record.Schema`, or a tuple, list or dict of fields.
        Optional with ``mode='a'`` and ``resume=True``, where the file's
        schema is used; if given, it must match the file's.
    compression:
        Default codec of every field that sets none: ``None``, ``'lzf'``,
        ``'gzip'``, ``('gzip', level)``, ``'zstd'`` or a
        :func:`h5record.codecs.zstd` config (a zstd default leaves scalar
        fields raw). Fields of a schema read from a file keep the codec they
        were stored with, but for those stored uncompressed only because
        that was the default: they take this one. A file that is continued
        keeps its own codecs.
    overwrite:
        Replace an existing file at ``path`` on close (default: refuse), and
        discard a ``<path>.partial`` left by an interrupted write.
    progress:
        Show a progress bar; ``None`` shows one when stderr is a terminal.
    total:
        Expected row count, only for the progress bar.
    chunk_bytes:
        Target size of an HDF5 chunk. The default (1 MiB) keeps chunk tables
        small for huge files; small files waste less with smaller chunks.
    mode:
        ``'w'`` (default) writes a new file; ``'a'`` appends rows to the
        complete h5record file at ``path``, with its schema and codecs.
    resume:
        Continue the write that ``<path>.partial`` holds from its last
        commit; :attr:`num_rows` then says how many rows it has, that is how
        many source rows to skip. Without a ``.partial`` file a new write starts.
    commit_every:
        Commit after every this many rows (default: no row limit).
    commit_seconds:
        Commit when this many seconds have passed since the last commit
        (default 60; ``None`` for no time limit). It is checked when
        buffered rows are written out, at least about once a second.
    checksums:
        Write checksums (docs/FORMAT.md, section 6) into a new file
        (default). A continued file keeps what it has: checksums, or none.

    A commit makes every row written so far durable: a kill (even SIGKILL)
    loses at most the rows written since. SIGINT and SIGTERM received while
    the writer is open commit first, then act as they would have. Leaving a
    ``with`` block by an exception commits too and keeps ``<path>.partial``
    for ``resume=True``; :meth:`abort` drops everything since the last commit.

    Examples
    --------
    >>> from h5record import H5Writer, String, Integer
    >>> with H5Writer("/tmp/doc_example.h5", [String("text"), Integer("label")],
    ...               overwrite=True, progress=False) as w:
    ...     w.write({"text": "hello", "label": 1})
    ...     w.write_batch({"text": ["a", "b"], "label": [2, 3]})
    >>> w.num_rows
    3
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Any = None,
        compression: Any = None,
        overwrite: bool = False,
        progress: bool | None = None,
        total: int | None = None,
        chunk_bytes: int = spec.TARGET_CHUNK_BYTES,
        mode: str = "w",
        resume: bool = False,
        commit_every: int | None = None,
        commit_seconds: float | None = COMMIT_SECONDS,
        checksums: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self._checksums = bool(checksums)
        self._closed = True  # until the file is open
        self._packer: RowPacker | None = None
        self._io: CommitFile | None = None
        self._file: h5py.File | None = None
        self._handlers: dict[int, Any] = {}
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        if mode not in ("w", "a"):
            raise ValueError(f"mode must be 'w' (new file) or 'a' (append), got {mode!r}")
        if resume and mode != "w":
            raise ValueError("resume=True continues a new file (mode='w'); mode='a' appends")
        if commit_every is not None and (not isinstance(commit_every, int) or commit_every < 1):
            raise ValueError(f"commit_every must be a positive int or None, got {commit_every!r}")
        if commit_seconds is not None and not commit_seconds > 0:
            raise ValueError(f"commit_seconds must be positive or None, got {commit_seconds!r}")
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.mode = mode
        given = None if schema is None else Schema.coerce(schema)
        default_codec = codecs.parse(compression)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                errno.ENOENT, f"folder {folder} does not exist (writing {self.path})", folder
            )
        self._file_path = self.path if mode == "a" else self.path + spec.PARTIAL_SUFFIX
        existing = mode == "a"
        if mode == "a":
            if not os.path.exists(self.path):
                raise FileNotFoundError(
                    errno.ENOENT,
                    f"{self.path} does not exist; mode='a' appends to a file",
                    self.path,
                )
        else:
            if os.path.exists(self.path) and not overwrite:
                raise FileExistsError(
                    f"{self.path} exists; pass overwrite=True to replace it, mode='a' to "
                    "append to it, or open it with H5Dataset"
                )
            if os.path.exists(self._file_path):
                if resume:
                    existing = True
                elif overwrite:
                    _remove(self._file_path)
                else:
                    raise FileExistsError(
                        f"{self._file_path} holds {_describe_partial(self._file_path)} of an "
                        "interrupted write; pass resume=True to continue it, or overwrite=True "
                        "to start again"
                    )
        if not existing and given is None:
            raise TypeError("H5Writer needs a schema to write a new file")
        self._schema_json = ""
        try:
            if existing:
                self._open_existing(given, default_codec, chunk_bytes)
            else:
                self._create(given, default_codec, chunk_bytes)
        except BaseException:
            # A file this writer did not create (another writer's) is never removed.
            self._release(remove=not existing and self._io is not None)
            raise
        self._closed = False
        if self._checksums:
            for column in self._columns:
                column.sums = FieldSums(column.datasets(), new=not existing)
        self._names = self.schema.names
        self._name_set = frozenset(self._names)
        self._fields = self.schema.fields
        # Sequence rows copied once as they arrive (zstd columns keep parts
        # across flushes, so they keep the converter's own copies).
        self._stages = {
            k: _Staged(f)
            for k, (f, c) in enumerate(zip(self._fields, self._columns, strict=True))
            if isinstance(f, Sequence) and isinstance(getattr(c, "column", c), _Column)
        }
        self._packer = RowPacker(
            tuple(self._names),
            [_pack_code(f) for f in self._fields],
            [_int_bounds(f)[0] for f in self._fields],
            [_int_bounds(f)[1] for f in self._fields],
            [_float_max(f) for f in self._fields],
            tuple(
                self._stages[k].convert if k in self._stages else f.convert
                for k, f in enumerate(self._fields)
            ),
            [c.rows for c in self._columns],
            [
                NULL_REFUSE if not f.nullable else NULL_CONVERT if k in self._stages else NULL_KEEP
                for k, f in enumerate(self._fields)
            ],
        )
        self._packer.rows = self._committed_rows
        self._packer.flush_bytes = FLUSH_BYTES
        self._busy = 0
        self._signal: int | None = None
        self._bar = _progress_bar(progress, total, self.path)
        if self._bar is not None:
            self._bar.n = self._committed_rows
        self._start = time.perf_counter()
        self._bytes_written = 0
        self._last_commit = self._last_flush = time.monotonic()
        self._packer.flush_rows = self._next_flush_rows(0, 0.0)
        self._install_handlers()

    # -- opening -----------------------------------------------------------
    def _create(self, schema: Schema, default_codec: dict[str, Any], chunk_bytes: int) -> None:
        self.schema = schema
        self._committed_rows = 0
        try:
            self._io = CommitFile(self._file_path, create=True)
        except FileExistsError:
            raise FileExistsError(
                f"{self._file_path} appeared while opening it: is another writer writing "
                f"{self.path}?"
            ) from None
        self._io.what = "the file's structure"
        self._file = h5py.File(self._io, "w")
        self._codecs: dict[str, dict[str, Any]] = {}
        self._columns: list[Any] = []
        fields_group = self._file.create_group(spec.FIELDS_GROUP)
        for field in self.schema:
            codec = field.codec or default_codec
            if field.codec is None and codec["id"] == spec.CODEC_ZSTD and _is_scalar(field):
                # A dataset-wide zstd default skips scalars: 8 bytes a row gain
                # little, and would cost a block decompression on every read.
                codec = {"id": spec.CODEC_NONE}
            if self._checksums and codec["id"] == spec.CODEC_ZSTD:
                codec = {**codec, "checksum": True}
            self._codecs[field.name] = codec
            self._columns.append(
                _make_column(fields_group.create_group(field.name), field, codec, chunk_bytes)
            )
        # The skeleton is committed without num_rows: a file with nothing committed.
        f = self._file
        f.attrs[spec.ATTR_FORMAT] = spec.FORMAT_NAME
        f.attrs[spec.ATTR_VERSION] = np.int64(self.schema.format_version)
        f.attrs[spec.ATTR_WRITER] = f"h5record {__version__}"
        f.flush()
        self._io.commit()

    def _open_existing(
        self, given: Schema | None, default_codec: dict[str, Any], chunk_bytes: int
    ) -> None:
        path = self._file_path
        try:
            self._io = CommitFile(path, create=False)
        except OSError as exc:
            raise write_error(path, exc, "the end of an interrupted commit") from exc
        # An unfinished file killed before its first commit may hold no
        # readable HDF5 tree yet, or none of h5record's attributes: nothing to keep.
        unfinished = self.mode != "a" and path.endswith(spec.PARTIAL_SUFFIX)
        try:
            self._file = h5py.File(self._io, "r+")
        except OSError as exc:
            if unfinished and given is not None:
                self._release(remove=True)
                self._create(given, default_codec, chunk_bytes)
                return
            raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
        f = self._file
        if f.attrs.get(spec.ATTR_FORMAT) != spec.FORMAT_NAME:
            if unfinished and given is not None and spec.ATTR_NUM_ROWS not in f.attrs:
                self._release(remove=True)
                self._create(given, default_codec, chunk_bytes)
                return
            raise FormatError(f"{path}: not an h5record file")
        version = int(f.attrs.get(spec.ATTR_VERSION, 0))
        if not spec.FIRST_VERSION <= version <= spec.FORMAT_VERSION:
            raise FormatError(
                f"{path}: written in h5record format version {version}; this h5record "
                f"adds rows to files of versions {spec.FIRST_VERSION} to {spec.FORMAT_VERSION}"
            )
        if spec.ATTR_NUM_ROWS not in f.attrs or spec.ATTR_SCHEMA not in f.attrs:
            if self.mode == "a":
                raise FormatError(f"{path}: has no committed rows (no num_rows attribute)")
            # Killed before its first commit: nothing to keep, start again.
            if given is None:
                raise TypeError(f"{path} has no committed rows yet: give a schema to start again")
            self._release(remove=True)
            self._create(given, default_codec, chunk_bytes)
            return
        text = f.attrs[spec.ATTR_SCHEMA]
        self._schema_json = text.decode() if isinstance(text, bytes) else str(text)
        stored = Schema.from_json(self._schema_json)
        if stored.format_version > version:
            raise FormatError(
                f"{path}: its schema needs format version {stored.format_version} (nullable "
                f"fields), but the file says version {version}; the file is damaged"
            )
        if given is not None:
            _check_same_schema(given, stored, path)
        self.schema = given if given is not None else stored
        self._committed_rows = rows = int(f.attrs[spec.ATTR_NUM_ROWS])
        self._checksums = spec.ATTR_METADATA_XXH3 in f.attrs
        self._codecs = {}
        self._columns = []
        for field, kept in zip(self.schema, stored, strict=True):
            codec = dict(kept.codec or {"id": spec.CODEC_NONE})
            self._codecs[field.name] = codec
            group = f[spec.field_path(field.name, "")[:-1]]
            self._columns.append(_make_column(group, field, codec, chunk_bytes, rows))

    @property
    def num_rows(self) -> int:
        """Rows written so far, buffered ones included (those of the file, when continued)."""
        return self._committed_rows if self._packer is None else self._packer.rows

    @property
    def committed_rows(self) -> int:
        """Rows that the last commit made durable."""
        return self._committed_rows

    # -- context manager ------------------------------------------------
    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._interrupted()

    # -- writing ---------------------------------------------------------
    def write(self, row: Mapping[str, Any]) -> None:
        """Check and buffer one row (a dict of field name to value).

        A bad row raises a :class:`~h5record.errors.RowError` naming the
        field and row; the rows before it stay written and the writer can
        go on.
        """
        if self._closed:
            self._check_open()
        # The packer counts rows and buffered bytes, and says when to flush.
        status = self._packer.write(row)
        if status > 0:
            self.flush()
        elif status < 0:
            if isinstance(row, Mapping) and not isinstance(row, dict):
                return self.write(dict(row))
            if not isinstance(row, Mapping):
                raise RowTypeError(
                    f"row {self.num_rows}: expected a dict of field values, "
                    f"got {type(row).__name__}"
                )
            self._raise_key_error(row.keys(), self.num_rows)

    def write_batch(self, columns: Mapping[str, Any]) -> None:
        """Check and write many rows given column-wise.

        ``columns`` maps every field name to a sequence (list or array) of
        values, all of the same length. The whole batch is checked before
        any of it is written. A nullable field's column may hold ``None``
        (lists) or be a :class:`~h5record.columns.Masked` column.

        Columns are gathered, copied, into a buffer per field (those of
        variable-length rows joined from checked rows, those of fixed-size
        values up to 1 MiB); once the fields together hold 16 MiB those
        holding the most go to the file, and all at a commit or at the end:
        fewer, larger appends. Other columns (images, say) are written at
        once; zstd fields keep their rows until they fill a block. The
        caller may change its arrays once this returns.
        """
        self._check_open()
        from .columns import to_columns  # DataFrames, Arrow tables and columns, numpy records

        columns = to_columns(columns, self.num_rows)
        if not isinstance(columns, Mapping):
            raise RowError(f"write_batch expects a dict of columns, got {type(columns).__name__}")
        if set(columns) != self._name_set:
            self._raise_key_error(columns.keys(), None)
        lengths = {name: len(columns[name]) for name in self._names}
        n = lengths[self._names[0]]
        if any(v != n for v in lengths.values()):
            raise RowError(f"write_batch columns differ in length: {lengths}")
        self._busy += 1
        try:
            self._flush_rows()
            converted = []
            for field in self._fields:
                values, valid = field.split_nulls(columns[field.name], self.num_rows)
                converted.append((*field.convert_column(values, self.num_rows), valid))
            # Joined into the columns' buffers first: an error there (out of
            # memory) leaves every column as it was.
            staged = [
                column.stage_rows(flat, lens)
                for column, (flat, lens, _) in zip(self._columns, converted, strict=True)
            ]
            for column, (rows, lens), (_, _, valid) in zip(
                self._columns, staged, converted, strict=True
            ):
                if isinstance(column, _Nullable):
                    column.append_many(rows, lens, valid)
                else:
                    column.append_many(rows, lens)
            self._packer.rows += n
        finally:
            self._leave()
        self._flush(soft=True)

    def _raise_key_error(self, keys: Iterable[str], index: int | None) -> None:
        keys = set(keys)
        where = "write_batch" if index is None else f"row {index}"
        missing = [n for n in self._names if n not in keys]
        extra = sorted(k for k in keys if k not in self._name_set)
        parts = []
        if missing:
            parts.append(f"missing field(s) {missing}")
        if extra:
            parts.append(f"unknown field(s) {extra}")
        raise RowError(f"{where}: {' and '.join(parts)}; the schema has {self._names}")

    def _flush_rows(self) -> None:
        """Turn per-row buffers into one column part per field."""
        if not self._packer.pending_rows:
            return
        for k, column in enumerate(self._columns):
            rows = column.rows
            field = column.field
            valid = None
            if field.nullable:  # nulls arrive as None: stored as empty rows or zeros
                valid = null_mask(rows, field.null_value())
            if field.variable:
                stage = self._stages.get(k)
                if stage is not None:
                    flat = stage.take(self._packer.rows)
                else:
                    flat = _join_rows(rows, field)
                lens = np.fromiter(map(len, rows), np.int64, len(rows))
            else:
                flat = np.asarray(rows, dtype=field.dtype).reshape(
                    (len(rows), *field.element_shape)
                )
                lens = None
            rows.clear()  # the same list stays the row sink
            if field.nullable:
                column.append_many(flat, lens, valid)
            else:
                column.append_many(flat, lens)
        self._packer.pending_rows = 0

    def flush(self) -> None:
        """Write everything buffered to the file (not yet committed), and commit when due."""
        self._flush()

    def _flush(self, soft: bool = False) -> None:
        """:meth:`flush`; ``soft``: rows of write_batch columns stay buffered until
        they fill ``FLUSH_BYTES``, or a commit is due: fewer, larger appends."""
        self._check_open()
        self._busy += 1
        try:
            due = self._commit_due(time.monotonic())
            self._write_columns(soft=soft and not due)
            now = time.monotonic()
            self._packer.flush_rows = self._next_flush_rows(
                self._packer.rows - self._committed_rows, now - self._last_flush
            )
            self._last_flush = now
            if due:
                self._commit()
        finally:
            self._leave()
        self._update_bar()

    def _update_bar(self) -> None:
        if self._bar is not None:
            self._bar.n = self.num_rows
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix_str(
                f"{self._bytes_written / elapsed / 1e6:.1f} MB/s", refresh=False
            )
            self._bar.refresh()

    def _write_columns(self, final: bool = False, soft: bool = False) -> None:
        self._flush_rows()
        written = 0
        assert self._io is not None
        try:
            for column in self._columns:
                written += self._write_column(column, final, soft)
            held = sorted(self._columns, key=lambda c: c.held, reverse=True) if soft else []
            total = sum(c.held for c in held)
            if total >= FLUSH_BYTES:  # written largest first, down to half of that
                for column in held:
                    if total < FLUSH_BYTES // 2:
                        break
                    total -= column.held
                    written += self._write_column(column)
            self._trim_stages()
        except Exception as exc:
            self._raise_io_error(exc)
        for stage in self._stages.values():
            stage.lent = False  # written out: the buffer is free again
        self._io.check()
        self._bytes_written += written
        self._packer.pending_bytes = 0

    def _trim_stages(self) -> None:
        """Free the buffers of fields that hold no rows, largest first, while all the
        fields' buffers together take more than twice ``FLUSH_BYTES``."""
        total = sum(c.stage_bytes for c in self._columns)
        if total <= 2 * FLUSH_BYTES:
            return
        for column in sorted(self._columns, key=lambda c: c.stage_bytes, reverse=True):
            total -= column.release_stage()
            if total <= 2 * FLUSH_BYTES:
                return

    def _write_column(self, column: Any, final: bool = False, soft: bool = False) -> int:
        """Write a column's rows (see :meth:`_Column.flush`); returns the bytes written."""
        pending = column.pending_bytes
        assert self._io is not None
        self._io.what = f"rows up to {self.num_rows} of field {column.field.name!r}"
        if final:
            column.finish()
        elif soft:
            column.flush(soft=True)
        else:
            column.flush()
        return int(pending - column.pending_bytes)

    def _raise_io_error(self, exc: BaseException) -> None:
        """An HDF5 error caused by a refused write becomes that write's error."""
        if self._io is not None and self._io.error is not None:
            raise self._io.error from None
        raise exc

    def _next_flush_rows(self, since_commit: int, seconds: float) -> int:
        """Rows to buffer before the next flush: commits come on time, flushes stay large."""
        rows = FLUSH_ROWS
        if self.commit_every is not None:
            rows = min(rows, max(1, self.commit_every - since_commit))
        if self.commit_seconds is not None:
            if seconds <= 0:
                return min(rows, 1024)
            # About one flush a second at the rate of the last flush.
            flushed = self._packer.flush_rows if self._packer is not None else 1
            rows = min(rows, max(1, int(flushed / seconds)))
        return rows

    def _commit_due(self, now: float) -> bool:
        new = self._packer.rows - self._committed_rows
        if not new:
            return False
        if self.commit_every is not None and new >= self.commit_every:
            return True
        return self.commit_seconds is not None and now - self._last_commit >= self.commit_seconds

    # -- commits -----------------------------------------------------------
    def commit(self) -> None:
        """Make every row written so far durable (docs/FORMAT.md, section 9)."""
        self._check_open()
        self._busy += 1
        try:
            self._write_columns()
            self._commit()
        finally:
            self._leave()

    def _commit(self, final: bool = False) -> None:
        assert self._io is not None and self._file is not None
        try:
            if not final:
                for column in self._columns:
                    self._io.what = f"the last block of field {column.field.name!r}"
                    column.commit_tail()
            self._io.what = "the commit's metadata"
            self._write_metadata()
            if final:
                self._file.close()
            else:
                self._file.flush()
        except Exception as exc:
            self._raise_io_error(exc)
        self._io.commit()
        self._committed_rows = self.num_rows
        self._last_commit = time.monotonic()

    def _write_metadata(self) -> None:
        f = self._file
        assert f is not None
        for column in self._columns:
            for dset in column.datasets():
                _write_chunk_table(dset)
            if column.sums is not None:
                column.sums.commit(column.datasets())
        schema = Schema(
            _with_codec(field, column.stored_codec(self._codecs[field.name]))
            for field, column in zip(self.schema.fields, self._columns, strict=True)
        )
        text = schema.to_json()
        if text != self._schema_json:  # rewritten only when a codec entry changed
            f.attrs[spec.ATTR_SCHEMA] = text
            self._schema_json = text
        if self._checksums:
            version = int(f.attrs[spec.ATTR_VERSION])
            f.attrs[spec.ATTR_METADATA_XXH3] = metadata_hash(
                self.num_rows, self._schema_json, version
            )
        # num_rows last: it is the commit point (docs/FORMAT.md, section 2).
        f.attrs[spec.ATTR_NUM_ROWS] = np.int64(self.num_rows)

    # -- finishing -------------------------------------------------------
    def close(self) -> None:
        """Write the last rows, commit, and move a new file to its path."""
        if self._closed:
            return
        if self._file_path == self.path and self.num_rows == self._committed_rows:
            self._release(remove=False)  # an append of no rows leaves the file untouched
            return
        self._busy += 1
        try:
            self._write_columns(final=True)
            self._commit(final=True)
            assert self._io is not None
            self._io.close()
            if self._file_path != self.path:
                os.replace(self._file_path, self.path)
                fsync_dir(self.path)
        except BaseException:
            self._interrupted(commit=False)
            raise
        finally:
            self._busy -= 1
        self._closed = True
        previous = {s: p for s, (_, p) in self._handlers.items()}
        self._restore_handlers()
        if self._bar is not None:
            self._update_bar()
            self._bar.close()
        if self._signal is not None:  # arrived while closing: act on it now
            _pass_on(self._signal, previous.get(self._signal, signal.SIG_DFL))

    def abort(self) -> None:
        """Drop the rows since the last commit; a new file is removed entirely."""
        if self._closed:
            return
        self._release(remove=self._file_path != self.path)

    def _interrupted(self, commit: bool = True) -> None:
        """Leave the file of the last commit (after committing, if possible) for resume."""
        if self._closed:
            return
        if commit and self._io is not None and self._io.error is None:
            try:
                self._busy += 1
                self._write_columns()
                self._commit()
            except Exception:
                pass  # the rows of the last commit stay
            finally:
                self._busy -= 1
        self._release(remove=self._file_path != self.path and self._committed_rows == 0)

    def _release(self, remove: bool) -> None:
        """Close without committing: the file keeps its last commit, or goes."""
        self._closed = True
        self._restore_handlers()
        io = self._io
        try:
            if io is not None:
                io.discard()
            if self._file is not None and self._file.id.valid:
                self._file.close()
        finally:
            self._file = None
            if io is not None:
                io.rollback()
                io.close()
            if remove:
                _remove(self._file_path)
            bar = getattr(self, "_bar", None)
            if bar is not None:
                bar.close()

    def _check_open(self) -> None:
        if self._closed:
            raise H5RecordError(f"writer for {self.path} is closed")
        if self._io is not None and self._io.error is not None:
            raise self._io.error

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._release(remove=self._file_path != self.path and self._committed_rows == 0)

    # -- signals -----------------------------------------------------------
    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        ref = weakref.ref(self)
        for name in _INTERRUPTS:
            signum = getattr(signal, name)
            previous = signal.getsignal(signum)
            handler = _signal_handler(ref, previous)
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):
                continue
            self._handlers[signum] = (handler, previous)

    def _restore_handlers(self) -> None:
        handlers, self._handlers = self._handlers, {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, (handler, previous) in handlers.items():
            if signal.getsignal(signum) is handler:  # not replaced since
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _leave(self) -> None:
        self._busy -= 1
        if not self._busy and self._signal is not None:
            signum, self._signal = self._signal, None
            self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        """Commit what was written (not in the middle of a flush), then pass the signal on."""
        if self._busy:
            self._signal = signum
            return
        _, previous = self._handlers.get(signum, (None, signal.SIG_DFL))
        if previous == signal.SIG_IGN:
            return
        if not self._closed and (self._io is None or self._io.error is None):
            try:
                self.commit()
            except H5RecordError:
                pass  # the rows of the last commit stay; the caller sees the signal
        _pass_on(signum, previous)


def _signal_handler(ref: weakref.ref[H5Writer], previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        writer = ref()
        if writer is None or writer._closed:
            _pass_on(signum, previous, frame)
        else:
            writer._on_signal(signum)

    return handler


def _pass_on(signum: int, previous: Any, frame: Any = None) -> None:
    """Act on a signal as the handler before the writer's would have."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:  # SIGTERM's default ends the process; this ends it by unwinding.
        raise SystemExit(128 + signum)


def _check_same_schema(given: Schema, stored: Schema, path: str) -> None:
    """Fields must agree in name, order, type, dtype and shape; codecs are the file's."""
    difference = stored.storage_difference(given, "the file", "the given schema")
    if difference is not None:
        raise SchemaError(f"{path}: schema differs from the file's: {difference}")


def check_file_schema(path: str, schema: Any) -> None:
    """Raise SchemaError naming the difference if the file at ``path`` has another schema."""
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs[spec.ATTR_SCHEMA]
    except (OSError, KeyError) as exc:
        raise FormatError(f"{path}: not a readable h5record file ({exc})") from exc
    text = text.decode() if isinstance(text, bytes) else str(text)
    _check_same_schema(Schema.coerce(schema), Schema.from_json(text), path)


def _describe_partial(path: str) -> str:
    rows = partial_rows(path)
    return "no committed rows" if rows is None else f"{rows:,} committed rows"


def partial_rows(path: str) -> int | None:
    """Committed rows of an unfinished file (``<path>.partial``): None if it has
    none, or while a commit past its commit point is not finished."""
    if commit_pending(path):
        return None  # a commit between its commit point and its end: not known yet
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(spec.ATTR_NUM_ROWS)
            return None if value is None else int(value)
    except (OSError, ValueError):
        return None


def _remove(path: str) -> None:
    for p in (path, journal_path(path)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _pack_code(field: Field) -> int:
    if isinstance(field, String):
        return PACK_UTF8
    if not field.variable and field.element_shape == ():
        return PACK_FLOAT if field.dtype.kind == "f" else PACK_INT
    return PACK_OTHER


def _int_bounds(field: Field) -> tuple[int, int]:
    if field.dtype.kind in "iu" and not field.variable and field.element_shape == ():
        info = np.iinfo(field.dtype)
        return max(int(info.min), -(2**63)), min(int(info.max), 2**63 - 1)
    return 0, 0


def _float_max(field: Field) -> float:
    """Largest finite value of a float field packed as is (PACK_FLOAT), else 0."""
    return float(np.finfo(field.dtype).max) if _pack_code(field) == PACK_FLOAT else 0.0


def _join_rows(rows: list[Any], field: Field) -> np.ndarray:
    if not rows:
        return np.empty((0, *field.element_shape), field.dtype)
    if isinstance(rows[0], bytes):
        return np.frombuffer(b"".join(rows), np.uint8)
    return np.concatenate(rows).astype(field.dtype, copy=False)


def _with_codec(field: Field, codec: dict[str, Any]) -> Field:
    clone = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    clone.codec = codec
    return clone


def _write_chunk_table(dset: h5py.Dataset) -> None:
    """Record the file address of every chunk of an unfiltered dataset."""
    if dset.compression is not None or dset.chunks is None:
        return
    chunk_len = dset.chunks[0]
    n_chunks = -(-dset.shape[0] // chunk_len)
    table = np.full(n_chunks, -1, np.int64)

    def visit(info: Any) -> None:
        table[info.chunk_offset[0] // chunk_len] = info.byte_offset

    if n_chunks:
        dset.id.chunk_iter(visit)
    name = dset.name.rsplit("/", 1)[1] + spec.CHUNK_TABLE_SUFFIX
    if name in dset.parent:
        del dset.parent[name]
    dset.parent.create_dataset(name, data=table)


def _progress_bar(progress: bool | None, total: int | None, path: str) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=f"writing {os.path.basename(path)}", unit=" rows", unit_scale=True
    )
