"""Merge shards into one h5record file.

The rows are read column-wise, a bounded number at a time, and written
with :meth:`H5Writer.write_batch`: variable-length fields travel as their
joined bytes and offsets (no Python object a row), fixed fields as arrays.
Nullable fields travel as :class:`~h5record.columns.Masked` columns, so nulls
stay nulls. Compressed fields are decompressed and compressed again (each shard has its
own zstd dictionary and block layout, and HDF5 chunks do not line up
across shards), so memory stays bounded by one batch, and the output is
written like any other file: as ``<out>.partial``, renamed when complete.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import spec
from .columns import ARRAY, BYTES, TEXT, Masked, Ragged
from .dataset import H5Dataset
from .fields import Field, Kind, Schema, field_from_json
from .shards import ShardedDataset, resolve
from .writer import H5Writer

# Rows per batch are chosen so that a batch holds about this many raw bytes.
BATCH_BYTES = 32 << 20
MAX_BATCH_ROWS = 1 << 16


def merge(
    out: str | os.PathLike[str],
    shards: Any,
    *,
    compression: Any = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> int:
    """Concatenate the rows of ``shards`` into the new file ``out``.

    Parameters
    ----------
    out:
        The file to write.
    shards:
        Anything :class:`~h5record.H5Dataset` reads as a sharded dataset: a
        folder with a manifest, a list of files, a glob pattern.
    compression:
        Codec of every field; by default each field keeps the codec of the
        first shard (its id and level: a zstd dictionary is trained anew).
    overwrite, progress:
        As for :class:`~h5record.H5Writer`.

    Returns
    -------
    The number of rows written.
    """
    opened = H5Dataset(shards)
    if isinstance(opened, ShardedDataset):
        ds = opened
    else:  # one file: copied as it is
        opened.close()
        ds = ShardedDataset([os.fspath(shards)])
    with ds:
        schema = ds.schema if compression is not None else _keep_codecs(ds.schema)
        writer = H5Writer(
            out,
            [field_from_json(f.storage_json()) for f in schema]
            if compression is not None
            else schema,
            compression=compression,
            overwrite=overwrite,
            progress=progress,
            total=len(ds),
        )
        try:
            for shard in ds.shards:
                _copy(shard, writer)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return len(ds)


def _copy(shard: H5Dataset, writer: H5Writer) -> None:
    n = len(shard)
    step = 1024
    start = 0
    while start < n:
        idx = np.arange(start, min(n, start + step), dtype=np.int64)
        columns = {}
        size = 0
        for field in shard.schema:
            col = _raw_column(shard, field, idx)
            size += col.values.nbytes if isinstance(col, Ragged) else _nbytes(col)
            if field.nullable:
                col = Masked(col, shard.valid(field.name, idx))
            columns[field.name] = col
        writer.write_batch(columns)
        start += len(idx)
        # Aim the next batch at BATCH_BYTES from what this one weighed.
        per_row = max(1, size // max(1, len(idx)))
        step = int(min(MAX_BATCH_ROWS, max(1, BATCH_BYTES // per_row)))


_RAGGED_KINDS = {Kind.STRING: TEXT, Kind.BYTES: BYTES, Kind.VARIABLE: ARRAY}


def _raw_column(shard: H5Dataset, field: Field, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a field as the writer takes them, without a Python object a
    row: variable fields as their joined bytes and offsets."""
    decoder = shard._open()
    k = shard._decoder_index.get(field.name)
    if k is not None and field.kind in _RAGGED_KINDS:
        flat, offsets = decoder.column(k, idx, raw=True)
        return Ragged(flat, offsets, _RAGGED_KINDS[field.kind])
    col = shard.column(field.name, idx)
    if field.kind == Kind.VARIABLE:  # a filtered field, read through HDF5
        flat, offsets = col
        return Ragged(flat, offsets, ARRAY)
    return col


def _nbytes(col: Any) -> int:
    if isinstance(col, np.ndarray):
        return int(col.nbytes)
    return sum(len(v) for v in col if v is not None)  # None: a null


def _without_codecs(schema: Schema) -> list[Field]:
    return [field_from_json(f.storage_json()) for f in schema]


def _keep_codecs(schema: Schema) -> Schema:
    """The schema with each field's codec as asked for at writing (id and level)."""
    fields = []
    for field in schema:
        entry = field.to_json()
        stored = entry.pop("codec", None) or {"id": spec.CODEC_NONE}
        cid = stored.get("requested", stored["id"])
        codec: dict[str, Any] = {"id": cid}
        if cid == stored["id"] and "level" in stored:
            codec["level"] = stored["level"]
        entry["codec"] = codec
        fields.append(field_from_json(entry))
    return Schema(fields)


def main(out: str, sources: Sequence[str], overwrite: bool = False) -> int:
    """``h5record merge OUT.h5 SHARDS...``: one source may be a folder or a glob."""
    source: Any = sources[0] if len(sources) == 1 else list(sources)
    rows = merge(out, source, overwrite=overwrite, progress=sys.stderr.isatty())
    print(f"{out}: {rows:,} rows merged from {len(resolve(source)[0])} files")
    return 0
