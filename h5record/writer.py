"""H5Writer: stream rows into a new h5record file in one pass.

Rows are checked as they arrive, buffered per field, and appended to
chunked HDF5 datasets a few MiB at a time, so memory stays bounded and no
HDF5 call is made per row. The file is written under a temporary name in
the target folder and renamed into place only when it is complete.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from . import codecs, spec
from ._fast import PACK_FLOAT, PACK_INT, PACK_OTHER, PACK_UTF8, RowPacker
from ._version import __version__
from .errors import H5RecordError, RowError, RowTypeError
from .fields import Field, Schema, String

# Flush buffered rows to HDF5 when this many raw bytes are pending.
FLUSH_BYTES = 16 << 20
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
        self, group: h5py.Group, field: Field, codec: dict[str, Any], chunk_bytes: int
    ) -> None:
        self.field = field
        self.rows: list[Any] = []  # values of single rows, not yet joined
        self.parts: list[Any] = []  # joined (flat, lengths) pieces, not yet written
        self.pending_bytes = 0
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
            self.lengths: list[int] = []

    def append_many(self, flat: np.ndarray, lengths: np.ndarray | None) -> None:
        self.parts.append((flat, lengths))
        self.pending_bytes += flat.nbytes

    def flush(self) -> None:
        if not self.parts:
            return
        if self.field.variable:
            flat = _join([p[0] for p in self.parts], self.field)
            lengths = np.concatenate([p[1] for p in self.parts])
            starts = self.end + np.cumsum(lengths, dtype=np.int64)
            n_old = self.offsets.shape[0]
            self.offsets.resize((n_old + len(starts),))
            self.offsets[n_old:] = starts
        else:
            flat = _join([p[0] for p in self.parts], self.field)
        if len(flat):
            self.values.resize((self.end + len(flat), *self.field.element_shape))
            self.values[self.end :] = flat
            self.end += len(flat)
        self.parts.clear()
        self.pending_bytes = 0

    def finish(self) -> None:
        self.flush()

    def datasets(self) -> list[h5py.Dataset]:
        return [d for d in (self.values, self.offsets) if d is not None]

    def stored_codec(self, codec: dict[str, Any]) -> dict[str, Any]:
        return codec


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


def _append(dset: h5py.Dataset, data: np.ndarray) -> None:
    if len(data):
        end = dset.shape[0]
        dset.resize((end + len(data),))
        dset[end:] = data


class _ZstdColumn:
    """Buffered rows of a zstd field, written as whole blocks of rows."""

    def __init__(
        self, group: h5py.Group, field: Field, codec: dict[str, Any], chunk_bytes: int
    ) -> None:
        self.group = group
        self.chunk_bytes = chunk_bytes
        self.field = field
        self.codec = codec
        self.encoder = codecs.ZstdBlockEncoder(codec, field.element_bytes, field.variable)
        self.rows: list[Any] = []
        self.parts: list[Any] = []
        self.pending_bytes = 0
        self.plain: _Column | None = None
        self.planned = False
        self.values: h5py.Dataset | None = None
        self.blocks: h5py.Dataset | None = None
        self.written = 0  # compressed bytes in values

    def append_many(self, flat: np.ndarray, lengths: np.ndarray | None) -> None:
        if self.plain is not None:
            self.plain.append_many(flat, lengths)
        else:
            self.parts.append((flat, lengths))
        self.pending_bytes += flat.nbytes

    def _plan(self, flat: np.ndarray, offsets: np.ndarray | None) -> None:
        self.planned = True
        if not self.encoder.plan(flat, offsets):
            # Incompressible (JPEG bytes, say): store it raw, as FORMAT.md allows.
            self.plain = _Column(self.group, self.field, {"id": spec.CODEC_NONE}, self.chunk_bytes)
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

    def flush(self, final: bool = False) -> None:
        if self.plain is not None:
            self.plain.flush()
            self.pending_bytes = 0
            return
        if not self.parts:
            return
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
            _append(self.values, np.frombuffer(frames, np.uint8))
            _append(self.blocks, self.written + np.cumsum(sizes))
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

    def finish(self) -> None:
        if not self.planned and not self.parts:
            self.parts.append(
                (
                    np.empty((0, *self.field.element_shape), self.field.dtype),
                    np.zeros(0, np.int64) if self.field.variable else None,
                )
            )
        self.flush(final=True)

    def datasets(self) -> list[h5py.Dataset]:
        if self.plain is not None:
            return self.plain.datasets()
        return [d for d in (self.values, self.blocks) if d is not None]

    def stored_codec(self, codec: dict[str, Any]) -> dict[str, Any]:
        if self.plain is not None:
            return {"id": spec.CODEC_NONE, "requested": spec.CODEC_ZSTD}
        return self.encoder.config(codec)


def _is_scalar(field: Field) -> bool:
    return not field.variable and field.element_shape == ()


def _make_column(group: h5py.Group, field: Field, codec: dict[str, Any], chunk_bytes: int) -> Any:
    if codec["id"] == spec.CODEC_ZSTD:
        return _ZstdColumn(group, field, codec, chunk_bytes)
    return _Column(group, field, codec, chunk_bytes)


def _join(parts: list[np.ndarray], field: Field) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts).astype(field.dtype, copy=False)


class H5Writer:
    """Write rows into a new h5record file.

    Parameters
    ----------
    path:
        Destination. It appears only when the writer closes successfully.
    schema:
        A :class:`~h5record.Schema`, or a tuple, list or dict of fields.
    compression:
        Default codec of every field that sets none: ``None``, ``'lzf'``,
        ``'gzip'``, ``('gzip', level)``.
    overwrite:
        Replace an existing file at ``path`` on close (default: refuse).
    progress:
        Show a progress bar; ``None`` shows one when stderr is a terminal.
    total:
        Expected row count, only for the progress bar.
    chunk_bytes:
        Target size of an HDF5 chunk. The default (1 MiB) keeps chunk tables
        small for huge files; small files waste less with smaller chunks.

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
        schema: Any,
        compression: Any = None,
        overwrite: bool = False,
        progress: bool | None = None,
        total: int | None = None,
        chunk_bytes: int = spec.TARGET_CHUNK_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        self.schema = Schema.coerce(schema)
        if os.path.exists(self.path) and not overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True to replace it, or open it with H5Dataset"
            )
        default_codec = codecs.parse(compression)
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp_path = tempfile.mkstemp(
            prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=folder
        )
        os.close(fd)
        self._packer: RowPacker | None = None
        self._closed = False
        try:
            self._file = h5py.File(self._tmp_path, "w")
            self._codecs = {}
            self._columns: list[_Column] = []
            fields_group = self._file.create_group(spec.FIELDS_GROUP)
            for field in self.schema:
                codec = field.codec or default_codec
                if field.codec is None and codec["id"] == spec.CODEC_ZSTD and _is_scalar(field):
                    # A dataset-wide zstd default skips scalars: 8 bytes a row gain
                    # little, and would cost a block decompression on every read.
                    codec = {"id": spec.CODEC_NONE}
                self._codecs[field.name] = codec
                self._columns.append(
                    _make_column(fields_group.create_group(field.name), field, codec, chunk_bytes)
                )
        except BaseException:
            self._discard()
            raise
        self._names = self.schema.names
        self._name_set = frozenset(self._names)
        self._fields = self.schema.fields
        self._packer = RowPacker(
            tuple(self._names),
            [_pack_code(f) for f in self._fields],
            [_int_bounds(f)[0] for f in self._fields],
            [_int_bounds(f)[1] for f in self._fields],
            [_float_max(f) for f in self._fields],
            tuple(f.convert for f in self._fields),
            [c.rows for c in self._columns],
        )
        self._packer.flush_rows = FLUSH_ROWS
        self._packer.flush_bytes = FLUSH_BYTES
        self._bar = _progress_bar(progress, total, self.path)
        self._start = time.perf_counter()
        self._bytes_written = 0

    @property
    def num_rows(self) -> int:
        """Rows written so far, buffered ones included."""
        return 0 if self._packer is None else self._packer.rows

    # -- context manager ------------------------------------------------
    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

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
        any of it is written.
        """
        self._check_open()
        if not isinstance(columns, Mapping):
            raise RowError(f"write_batch expects a dict of columns, got {type(columns).__name__}")
        if set(columns) != self._name_set:
            self._raise_key_error(columns.keys(), None)
        lengths = {name: len(columns[name]) for name in self._names}
        n = lengths[self._names[0]]
        if any(v != n for v in lengths.values()):
            raise RowError(f"write_batch columns differ in length: {lengths}")
        self._flush_rows()
        converted = [
            field.convert_column(columns[field.name], self.num_rows) for field in self._fields
        ]
        for column, (flat, lens) in zip(self._columns, converted, strict=True):
            column.append_many(flat, lens)
        self._packer.rows += n
        self.flush()

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
        for column in self._columns:
            rows = column.rows
            field = column.field
            if field.variable:
                flat = _join_rows(rows, field)
                lens = np.fromiter(map(len, rows), np.int64, len(rows))
            else:
                flat = np.asarray(rows, dtype=field.dtype).reshape(
                    (len(rows), *field.element_shape)
                )
                lens = None
            rows.clear()  # the same list stays the row sink
            column.append_many(flat, lens)
        self._packer.pending_rows = 0

    def flush(self) -> None:
        """Write everything buffered to the file."""
        self._check_open()
        self._flush_rows()
        written = 0
        for column in self._columns:
            written += column.pending_bytes
            column.flush()
        self._bytes_written += written
        self._packer.pending_bytes = 0
        if self._bar is not None:
            self._bar.n = self.num_rows
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix_str(
                f"{self._bytes_written / elapsed / 1e6:.1f} MB/s", refresh=False
            )
            self._bar.refresh()

    # -- finishing -------------------------------------------------------
    def close(self) -> None:
        """Flush, commit the file and move it to its path."""
        if self._closed:
            return
        try:
            self.flush()
            self._commit()
            self._file.close()
            os.replace(self._tmp_path, self.path)
        except BaseException:
            self._discard()
            raise
        self._closed = True
        if self._bar is not None:
            self._bar.close()

    def abort(self) -> None:
        """Drop everything; no file appears at the path."""
        if self._closed:
            return
        self._discard()
        if self._bar is not None:
            self._bar.close()

    def _discard(self) -> None:
        self._closed = True
        try:
            if getattr(self, "_file", None) is not None and self._file.id.valid:
                self._file.close()
        finally:
            if os.path.exists(self._tmp_path):
                os.unlink(self._tmp_path)

    def _commit(self) -> None:
        f = self._file
        for column in self._columns:
            column.finish()
        f.flush()
        for column in self._columns:
            for dset in column.datasets():
                _write_chunk_table(dset)
        f.attrs[spec.ATTR_FORMAT] = spec.FORMAT_NAME
        f.attrs[spec.ATTR_VERSION] = np.int64(spec.FORMAT_VERSION)
        f.attrs[spec.ATTR_WRITER] = f"h5record {__version__}"
        schema = Schema(
            _with_codec(field, column.stored_codec(self._codecs[field.name]))
            for field, column in zip(self.schema.fields, self._columns, strict=True)
        )
        f.attrs[spec.ATTR_SCHEMA] = schema.to_json()
        # num_rows last: it is the commit point (docs/FORMAT.md, section 2).
        f.attrs[spec.ATTR_NUM_ROWS] = np.int64(self.num_rows)

    def _check_open(self) -> None:
        if self._closed:
            raise H5RecordError(f"writer for {self.path} is closed")

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.abort()


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
    dset.parent.create_dataset(dset.name.rsplit("/", 1)[1] + spec.CHUNK_TABLE_SUFFIX, data=table)


def _progress_bar(progress: bool | None, total: int | None, path: str) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=f"writing {os.path.basename(path)}", unit=" rows", unit_scale=True
    )
