"""Hugging Face ``datasets``: ``Dataset``, ``IterableDataset`` and ``save_to_disk``
folders (``h5record[hf]``).

Batches are taken as Arrow tables, so a dataset on disk is read through its
memory map and no Python object is made per row. Image and Audio features
are stored as their encoded bytes (``Bytes`` fields).
"""

from __future__ import annotations

import os
from typing import Any

from . import BATCH_ROWS, need, write_tables


def load(src: Any, split: str | None = None) -> Any:
    """A ``Dataset`` or ``IterableDataset`` from a dataset, a DatasetDict or a folder."""
    datasets = need("datasets", "hf")
    if isinstance(src, (str, os.PathLike)):
        src = datasets.load_from_disk(os.fspath(src))
    if isinstance(src, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None:
            if len(src) != 1:
                raise ValueError(f"the dataset has splits {list(src)}; choose one with split=")
            split = next(iter(src))
        if split not in src:
            raise ValueError(f"no split {split!r}; the dataset has {list(src)}")
        src = src[split]
    elif split is not None:
        raise ValueError(f"split={split!r} given for a dataset without splits")
    return src


def from_hf(
    src: Any,
    out: str | os.PathLike[str],
    split: str | None = None,
    batch_rows: int = BATCH_ROWS,
    **kw: Any,
) -> int:
    """Convert a Hugging Face dataset (or a ``save_to_disk`` folder) to an h5record file.

    Parameters
    ----------
    src:
        ``datasets.Dataset``, ``IterableDataset``, a ``DatasetDict`` (with
        ``split``), or the folder ``save_to_disk`` wrote.
    out:
        The h5record file to write.
    split:
        Which split of a ``DatasetDict``.
    batch_rows:
        Rows per batch taken from the dataset.
    **kw:
        As for :func:`h5record.convert.convert`.
    """
    datasets = need("datasets", "hf")
    ds = load(src, split)
    features = ds.features
    like = features.arrow_schema if features is not None else None
    total = len(ds) if isinstance(ds, datasets.Dataset) else None
    if isinstance(ds, datasets.Dataset):  # null counts are kept with the Arrow data
        table = ds.data.table
        kw["null_columns"] = {n for n in table.schema.names if table.column(n).null_count}
    batches = ds.with_format("arrow").iter(batch_size=batch_rows)
    name = getattr(getattr(ds, "info", None), "dataset_name", None)
    source = f"dataset {name}" if name else "the dataset"
    return write_tables(batches, out, like=like, source=source, total=total, **kw)
