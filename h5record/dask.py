"""Write a Dask bag or dataframe as a sharded h5record dataset.

Each partition becomes one shard, ``part-<k>.h5``, written by whichever
worker computes it (through the active ``dask.distributed`` client, or
Dask's default scheduler); the client then writes ``manifest.json``
(docs/FORMAT.md, section 7). Needs the extra ``h5record[dask]``.
"""

from __future__ import annotations

import os
from typing import Any

from .fields import Schema
from .parallel import shard_name
from .reader import read_layout
from .shards import MANIFEST_NAME, shard_entry, write_manifest
from .writer import H5Writer


def _dask() -> Any:
    try:
        import dask
    except ImportError as exc:
        raise ImportError(
            "h5record.dask needs Dask: pip install 'h5record[dask]' (dask[distributed])"
        ) from exc
    return dask


def write_bag(
    bag: Any,
    out_dir: str | os.PathLike[str],
    schema: Any,
    *,
    compression: Any = None,
    overwrite: bool = False,
) -> str:
    """Write a ``dask.bag.Bag`` of row dicts, one shard per partition; return the manifest's path.

    A rerun keeps shards already complete (their partitions are computed
    but not written again) unless ``overwrite=True``.
    """
    return _write(bag.to_delayed(), _write_rows, out_dir, schema, compression, overwrite)


def write_dataframe(
    df: Any,
    out_dir: str | os.PathLike[str],
    schema: Any,
    *,
    compression: Any = None,
    overwrite: bool = False,
) -> str:
    """Write a ``dask.dataframe.DataFrame``, one shard per partition; return the manifest's path.

    Each schema field is read from the column of the same name.
    """
    return _write(df.to_delayed(), _write_frame, out_dir, schema, compression, overwrite)


def _write(
    parts: list[Any], write: Any, out_dir: Any, schema: Any, compression: Any, overwrite: bool
) -> str:
    dask = _dask()
    schema = Schema.coerce(schema)
    folder = os.fspath(out_dir)
    os.makedirs(folder, exist_ok=True)
    manifest = os.path.join(folder, MANIFEST_NAME)
    if os.path.exists(manifest):
        if not overwrite:
            raise FileExistsError(f"{manifest} exists; pass overwrite=True to write it again")
        os.unlink(manifest)
    task = dask.delayed(write, pure=False)
    options = (folder, schema.to_json(), compression, overwrite)
    counts = dask.compute(*[task(part, k, options) for k, part in enumerate(parts)])
    entries = [shard_entry(os.path.join(folder, shard_name(k)), n) for k, n in enumerate(counts)]
    return write_manifest(folder, schema, entries)


def _open(k: int, options: tuple) -> tuple[H5Writer | None, int]:
    folder, schema_json, compression, overwrite = options
    path = os.path.join(folder, shard_name(k))
    if os.path.exists(path) and not overwrite:
        return None, read_layout(path).num_rows
    writer = H5Writer(
        path,
        Schema.from_json(schema_json),
        compression=compression,
        overwrite=True,
        progress=False,
    )
    return writer, 0


def _write_rows(rows: Any, k: int, options: tuple) -> int:
    writer, n = _open(k, options)
    if writer is None:
        return n
    with writer:
        for row in rows:
            writer.write(row)
    return writer.num_rows


def _write_frame(frame: Any, k: int, options: tuple) -> int:
    writer, n = _open(k, options)
    if writer is None:
        return n
    with writer:
        columns = {}
        for name in writer.schema.names:
            col = frame[name]
            columns[name] = col.to_numpy() if col.dtype.kind in "biuf" else col.tolist()
        writer.write_batch(columns)
    return writer.num_rows
