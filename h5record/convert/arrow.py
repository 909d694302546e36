"""Parquet files, Arrow IPC files and in-memory tables (``h5record[arrow]``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from . import BATCH_ROWS, need, write_tables


def parquet_batches(files: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[Any]:
    """Record batches of Parquet files, one row group at a time."""
    pq = need("pyarrow.parquet", "arrow")
    for path in files:
        with pq.ParquetFile(path) as pf:
            for group in range(pf.num_row_groups):
                yield from pf.iter_batches(batch_size=batch_rows, row_groups=[group])


def from_parquet(
    files: list[str] | str, out: str | os.PathLike[str], batch_rows: int = BATCH_ROWS, **kw: Any
) -> int:
    """Convert Parquet files (in order) to one h5record file; returns the rows written.

    Memory is bounded by a row group's column chunks and ``batch_rows`` rows.
    Keyword arguments are those of :func:`h5record.convert.convert`.
    """
    pq = need("pyarrow.parquet", "arrow")
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    files = [os.fspath(f) for f in files]
    schemas, total, nulls = [], 0, set()
    for path in files:
        meta = pq.read_metadata(path)
        total += meta.num_rows
        schemas.append(meta.schema.to_arrow_schema())
        nulls |= _parquet_null_columns(meta)
    _same_schema(files, schemas)
    return write_tables(
        parquet_batches(files, batch_rows),
        out,
        like=schemas[0],
        null_columns=nulls,
        source=files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more",
        total=total,
        **kw,
    )


def _parquet_null_columns(meta: Any) -> set[str]:
    """Top-level columns whose statistics count a null in some row group.

    Nested columns are left to the first rows: their statistics count an
    empty list as a null.
    """
    flat = {
        meta.schema.column(c).path: c
        for c in range(meta.num_columns)
        if meta.schema.column(c).max_repetition_level == 0
    }
    out = set()
    for name in meta.schema.to_arrow_schema().names:
        c = flat.get(name)
        if c is None:
            continue
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(c).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                out.add(name)
                break
    return out


def _same_schema(files: list[str], schemas: list[Any]) -> None:
    for path, schema in zip(files[1:], schemas[1:], strict=True):
        if not schema.equals(schemas[0]):
            raise ValueError(
                f"{path}: its schema differs from {files[0]}'s:\n{schema}\nagainst\n{schemas[0]}"
            )


def _open_ipc(path: str) -> tuple[Any, Any, Any, set[str]]:
    """(schema, iterator of record batches, rows or None, columns holding nulls) of an
    Arrow IPC file or stream."""
    pa = need("pyarrow", "arrow")
    source = pa.memory_map(path)
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid:  # the stream format (Hugging Face's .arrow files use it)
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        return stream.schema, iter(stream), None, set()
    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return reader.schema, batches, rows, _ipc_null_columns(reader)


def _ipc_null_columns(reader: Any) -> set[str]:
    """Columns holding a null in some record batch (counts stored in the file: no scan)."""
    names = reader.schema.names
    out: set[str] = set()
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        out.update(n for k, n in enumerate(names) if batch.column(k).null_count)
    return out


def from_arrow(files: list[str] | str, out: str | os.PathLike[str], **kw: Any) -> int:
    """Convert Arrow IPC files or streams (Feather v2 included) to one h5record file.

    Record batches are memory-mapped and written one at a time.
    """
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    files = [os.fspath(f) for f in files]
    opened = [_open_ipc(f) for f in files]
    _same_schema(files, [o[0] for o in opened])
    rows = [o[2] for o in opened]

    def batches() -> Iterator[Any]:
        for _, it, _, _ in opened:
            yield from it

    return write_tables(
        batches(),
        out,
        like=opened[0][0],
        null_columns=set().union(*(o[3] for o in opened)),
        source=files[0],
        total=None if None in rows else sum(rows),
        **kw,
    )


def from_table(
    table: Any, out: str | os.PathLike[str], batch_rows: int = BATCH_ROWS, **kw: Any
) -> int:
    """Write a pyarrow Table, a pandas DataFrame or a numpy structured array in slices."""
    n = table.num_rows if hasattr(table, "num_rows") else len(table)
    step = max(1, batch_rows)

    def part(start: int) -> Any:
        if hasattr(table, "slice"):
            return table.slice(start, step)
        if hasattr(table, "iloc"):
            return table.iloc[start : start + step]
        return table[start : start + step]

    first = part(0)
    rest = (part(start) for start in range(step, n, step))
    schema = kw.pop("schema", None)
    if schema is None:
        from ..infer import infer_schema

        schema = infer_schema(table, kw.pop("overrides", None), nullable=kw.pop("nullable", None))
    kw.pop("overrides", None)
    kw.pop("nullable", None)
    return write_tables(
        _chain(first, rest), out, schema=schema, source=type(table).__name__, total=n, **kw
    )


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
