"""Converters: Parquet, Arrow IPC, JSON lines, CSV, Hugging Face datasets,
WebDataset tar shards and h5record 1.0.4 files into h5record files.

Each source is read in batches (a Parquet row group, an Arrow record batch,
a block of text, a few thousand samples) and written with
:class:`~h5record.H5Writer`, so memory stays bounded by a batch, a progress
bar shows on a terminal, and the file appears only when complete. The
schema is inferred (:func:`~h5record.infer_schema`) unless given.

One module per source format; each imports its optional dependency only
when it is used: ``pip install 'h5record[arrow]'`` for Parquet, Arrow, JSON
lines and CSV, ``'h5record[hf]'`` for Hugging Face datasets.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

from ..columns import is_tabular, to_columns
from ..errors import RowError, SchemaError
from ..fields import Field, Schema
from ..infer import infer_schema
from ..writer import H5Writer

# Rows per batch read from a source, when the source does not set it.
BATCH_ROWS = 65536

# Source formats by file name ending; "hf" and "webdataset" folders are told apart below.
SUFFIXES = {
    "parquet": (".parquet", ".pq"),
    "arrow": (".arrow", ".feather", ".ipc", ".arrows"),
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".json.gz", ".ndjson.gz"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
    "webdataset": (".tar", ".tar.gz", ".tgz"),
    "h5": (".h5", ".hdf5", ".hdf"),
}
FORMATS = (*SUFFIXES, "hf")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def need(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this converter needs {module.split('.')[0]}: pip install 'h5record[{extra}]'"
        ) from exc


def write_tables(
    tables: Iterable[Any],
    out: str | os.PathLike[str],
    *,
    schema: Any = None,
    like: Any = None,
    overrides: dict[str, Field | None] | None = None,
    nullable: bool | Iterable[str] | None = None,
    null_columns: Iterable[str] = (),
    source: str = "the source",
    total: int | None = None,
    compression: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    prefetch: bool = True,
) -> int:
    """Write tables (anything :func:`~h5record.columns.to_columns` takes) to one file.

    Parameters
    ----------
    tables:
        Iterable of tables, written in order.
    out:
        The h5record file to write.
    schema:
        The schema; by default inferred from ``like``, or from the first table.
    like:
        What to infer the schema from (an Arrow schema, say), when not the first table.
    overrides, nullable:
        Passed to :func:`~h5record.infer_schema`; besides the columns named
        by ``nullable``, the inferred fields of ``null_columns`` and of the
        columns holding a null in the first table may hold nulls.
    null_columns:
        Columns the source knows to hold nulls (from its metadata).
    source:
        Name of the source, for error messages.
    total:
        Rows expected, for the progress bar.
    compression, overwrite, progress:
        As for :class:`~h5record.H5Writer`.
    resume:
        Continue an interrupted conversion (``<out>.partial``): the rows it
        holds are skipped in the source.
    prefetch:
        Read the next table in a thread while this one is written (Arrow
        and h5py read without holding the GIL).

    Returns
    -------
    int
        Rows written.
    """
    tables = iter(tables)
    first: list[Any] = []
    if schema is None:
        # The first table is looked at even when the schema comes from ``like``:
        # its nulls make fields nullable.
        first = [t for t in [next(tables, None)] if t is not None]
        if like is None:
            if not first:
                raise SchemaError(f"{source} has no rows to infer a schema from; give a schema")
            like = first[0]
        if nullable not in (True, False):
            found = set(null_columns) | (_null_columns(first[0]) if first else set())
            if nullable is not None:
                found |= {nullable} if isinstance(nullable, str) else set(nullable)
            nullable = found
        schema = infer_schema(like, overrides, nullable=nullable)
    schema = Schema.coerce(schema)
    writer = H5Writer(
        out,
        schema,
        compression=compression,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        total=total,
    )
    skip = writer.num_rows
    if prefetch:
        tables = prefetched(tables)
    with writer:  # an interruption commits, keeping <out>.partial for resume=True
        try:
            for table in chain(first, tables):
                if skip:
                    table, skip = _skip(table, skip)
                    if table is None:
                        continue
                columns = to_columns(table, writer.num_rows)
                missing = [n for n in schema.names if n not in columns]
                if missing:
                    raise SchemaError(
                        f"{source}: column(s) {missing} missing at row {writer.num_rows:,}; "
                        f"it has {list(columns)}"
                    )
                writer.write_batch({n: columns[n] for n in schema.names})
        except (RowError, SchemaError):
            if not writer.committed_rows:
                writer.abort()  # the source is at fault: no file is left behind
            raise
    return writer.num_rows


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``items``, read ahead by a thread; its errors are raised here."""
    done = object()
    q: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # raised in the consumer
            put((done, exc))

    thread = threading.Thread(target=read, name="h5record-convert-read", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _null_columns(table: Any) -> set[str]:
    """Columns of an Arrow table or record batch that hold a null."""
    if not hasattr(table, "schema") or not hasattr(table, "column"):
        return set()  # not Arrow: infer_schema looks at it when it is ``like``
    return {name for name in table.schema.names if table.column(name).null_count}


def _skip(table: Any, rows: int) -> tuple[Any, int]:
    """Drop the first ``rows`` rows of a table: (the rest or None, rows still to skip)."""
    n = _num_rows(table)
    if rows >= n:
        return None, rows - n
    if hasattr(table, "slice"):  # Arrow
        return table.slice(rows), 0
    if hasattr(table, "iloc"):  # pandas
        return table.iloc[rows:], 0
    if is_tabular(table):  # structured numpy
        return table[rows:], 0
    return {k: v[rows:] for k, v in table.items()}, 0


def _num_rows(table: Any) -> int:
    if hasattr(table, "num_rows"):
        return int(table.num_rows)
    if hasattr(table, "columns") or isinstance(table, (list,)) or hasattr(table, "dtype"):
        return len(table)
    return len(next(iter(table.values()))) if table else 0


def detect_format(paths: list[str]) -> str:
    """The source format of files or a folder, from their names."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        folder = paths[0]
        if any(os.path.exists(os.path.join(folder, m)) for m in _HF_MARKERS):
            return "hf"
        paths = source_files(folder)
        if not paths:
            raise ValueError(f"{folder}: no file of a known format ({', '.join(SUFFIXES)})")
    formats = [_format_of(p) for p in paths]
    if None in formats:
        bad = paths[formats.index(None)]
        raise ValueError(
            f"{bad}: unknown source format; name it with --format ({', '.join(FORMATS)})"
        )
    found = {f for f in formats if f is not None}
    if len(found) > 1:
        raise ValueError(f"the sources mix formats {sorted(found)}; convert them one at a time")
    return found.pop()


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for fmt, endings in SUFFIXES.items():
        if lower.endswith(endings):
            return fmt
    return None


def source_files(folder: str, fmt: str | None = None) -> list[str]:
    """Files of a folder (and its subfolders) in a known format, in name order."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.startswith((".", "_")) and _format_of(path) == (fmt or _format_of(path)):
                if _format_of(path) is not None:
                    out.append(path)
    return out


def expand(paths: Iterable[str | os.PathLike[str]], fmt: str) -> list[str]:
    """Files and folders given as sources, folders replaced by their files of ``fmt``."""
    given = [os.fspath(p) for p in paths]
    out: list[str] = []
    for p in given:
        out.extend(source_files(p, fmt) if os.path.isdir(p) else [p])
    if not out:
        raise FileNotFoundError(f"no {fmt} file in {given}")
    return out


def convert(
    src: Any,
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    schema: Any = None,
    overrides: dict[str, Field | None] | None = None,
    nullable: bool | Iterable[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    split: str | None = None,
    compression: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
) -> int:
    """Convert a file, a folder, or an in-memory table or dataset to an h5record file.

    Parameters
    ----------
    src:
        A path or a list of paths (Parquet, Arrow IPC, JSON lines, CSV,
        WebDataset tar shards, an h5record 1.0.4 file, or a folder of
        them, or a Hugging Face ``save_to_disk`` folder); or a pyarrow
        Table, a pandas DataFrame, a numpy structured array, or a Hugging
        Face ``Dataset`` / ``IterableDataset``.
    out:
        The h5record file to write.
    format:
        One of ``FORMATS``; by default told from the file names.
    schema, overrides:
        The schema, or overrides of the inferred one
        (see :func:`~h5record.infer_schema`).
    nullable:
        Which inferred fields may hold nulls: by default those whose column
        the source's metadata or its first rows show to hold a null (a null
        found later stops the conversion, naming the column: give it here);
        ``True`` for every field, ``False`` for none, or column names.
    batch_rows:
        Rows read from the source at a time (bounds memory).
    split:
        Split of a Hugging Face ``DatasetDict``.
    compression, overwrite, progress, resume:
        As for :func:`write_tables`.

    Returns
    -------
    int
        Rows written.

    Examples
    --------
    >>> from h5record.convert import convert
    >>> convert("train.parquet", "train.h5")  # doctest: +SKIP
    1000000
    """
    kw: dict[str, Any] = dict(
        schema=schema,
        overrides=overrides,
        nullable=nullable,
        compression=compression,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
    )
    module = type(src).__module__.split(".")[0]
    if module == "datasets":
        from . import hf

        return hf.from_hf(src, out, split=split, batch_rows=batch_rows, **kw)
    if is_tabular(src):
        from . import arrow

        return arrow.from_table(src, out, batch_rows=batch_rows, **kw)
    paths = [os.fspath(p) for p in (src if isinstance(src, (list, tuple)) else [src])]
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} does not exist")
    fmt = format or detect_format(paths)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "hf":
        from . import hf

        if len(paths) != 1:
            raise ValueError("give one Hugging Face save_to_disk folder at a time")
        return hf.from_hf(paths[0], out, split=split, batch_rows=batch_rows, **kw)
    if fmt == "h5":
        from . import legacy

        if len(paths) != 1:
            raise ValueError("give one h5record 1.0.4 file at a time")
        return legacy.from_legacy(paths[0], out, batch_rows=batch_rows, **kw)
    files = expand(paths, fmt)
    if fmt == "parquet":
        from . import arrow

        return arrow.from_parquet(files, out, batch_rows=batch_rows, **kw)
    if fmt == "arrow":
        from . import arrow

        return arrow.from_arrow(files, out, **kw)
    if fmt == "webdataset":
        from . import webdataset

        return webdataset.from_webdataset(files, out, batch_rows=batch_rows, **kw)
    from . import text

    read = text.from_jsonl if fmt == "jsonl" else text.from_csv
    return read(files, out, **kw)


def batches_of(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` items (the last may be shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["BATCH_ROWS", "FORMATS", "convert", "detect_format", "write_tables"]
