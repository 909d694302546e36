"""JSON lines and CSV files, read in blocks by pyarrow (``h5record[arrow]``).

Column types are inferred from the first block of the first file; a later
value of another type stops the conversion with pyarrow's message; a larger
``block_bytes`` lets the first block show every column's type.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from . import need, write_tables

# Bytes of text parsed at a time: bounds memory, and is what types are inferred from.
BLOCK_BYTES = 16 << 20


def _files(files: list[str] | str) -> list[str]:
    return [os.fspath(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files)]


def _stream(files: list[str], open_one: Any) -> tuple[Any, Iterator[Any]]:
    """The first file's schema and the batches of every file read with that schema."""
    first = open_one(files[0], None)

    def batches() -> Iterator[Any]:
        yield from first
        for path in files[1:]:
            yield from open_one(path, first.schema)

    return first.schema, batches()


def from_jsonl(
    files: list[str] | str,
    out: str | os.PathLike[str],
    block_bytes: int = BLOCK_BYTES,
    **kw: Any,
) -> int:
    """Convert JSON lines files (one object a line; ``.gz`` too) to one h5record file."""
    pj = need("pyarrow.json", "arrow")
    files = _files(files)

    def open_one(path: str, schema: Any) -> Any:
        parse = pj.ParseOptions(explicit_schema=schema) if schema is not None else None
        return pj.open_json(
            path, read_options=pj.ReadOptions(block_size=block_bytes), parse_options=parse
        )

    schema, batches = _stream(files, open_one)
    return write_tables(batches, out, like=schema, source=files[0], **kw)


def from_csv(
    files: list[str] | str,
    out: str | os.PathLike[str],
    block_bytes: int = BLOCK_BYTES,
    delimiter: str | None = None,
    **kw: Any,
) -> int:
    """Convert CSV files with a header line (``.tsv`` is split at tabs) to one h5record file."""
    pc = need("pyarrow.csv", "arrow")
    files = _files(files)
    if delimiter is None:
        delimiter = "\t" if files[0].lower().endswith((".tsv", ".tsv.gz")) else ","

    def open_one(path: str, schema: Any) -> Any:
        convert = pc.ConvertOptions(column_types=schema) if schema is not None else None
        return pc.open_csv(
            path,
            read_options=pc.ReadOptions(block_size=block_bytes),
            parse_options=pc.ParseOptions(delimiter=delimiter),
            convert_options=convert,
        )

    schema, batches = _stream(files, open_one)
    return write_tables(batches, out, like=schema, source=files[0], **kw)
