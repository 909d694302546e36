"""h5record 1.0.4 files: one HDF5 dataset per field at the root (no extra needed).

1.0.4 stored each field as a root dataset of the field's name, one entry
per row along the first axis: variable-length UTF-8 strings (``String``,
shape ``(rows, 1)``), variable-length int32 arrays (``Sequence``), int64
and float16 numbers, and fixed-shape uint8 images. This module reads any
such file: every root dataset is a field, typed from its HDF5 dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import spec
from ..errors import FormatError
from ..fields import Array, Bytes, Field, Float, Image, Integer, Sequence, String
from . import BATCH_ROWS, write_tables


def looks_like_1_0_4(f: Any) -> bool:
    """Whether an open ``h5py.File`` is an h5record 1.0.4 file, not a newer one.

    1.0.4 files have no format attribute, and hold only datasets at the root,
    all with the same number of rows (the first axis).
    """
    import h5py

    if spec.ATTR_FORMAT in f.attrs or not len(f):
        return False
    items = [f[name] for name in f]
    if not all(isinstance(d, h5py.Dataset) and d.shape for d in items):
        return False
    return len({d.shape[0] for d in items}) == 1


def field_of(dset: Any) -> Field:
    """The h5record field of a 1.0.4 dataset, from its dtype and shape."""
    import h5py

    name = dset.name.lstrip("/")
    dtype = dset.dtype
    vlen = h5py.check_vlen_dtype(dtype)
    if h5py.check_string_dtype(dtype) is not None:
        return String(name)
    if vlen is not None:
        if vlen == np.uint8:
            return Bytes(name)
        return Sequence(name, vlen)
    shape = tuple(dset.shape[1:])
    if dtype.kind not in "biuf":
        raise FormatError(f"{dset.file.filename}: dataset {name!r} of dtype {dtype} is no field")
    base = np.dtype(np.uint8) if dtype.kind == "b" else dtype
    if shape in ((), (1,)):
        return Float(name, base) if base.kind == "f" else Integer(name, base)
    if base == np.uint8 and len(shape) == 3 and shape[0] in (1, 3, 4):
        c, h, w = shape
        return Image(h, w, c, name=name)  # 1.0.4's Image: (c, h, w) uint8
    return Array(name, shape, base)


def _column(dset: Any, field: Field, start: int, stop: int) -> Any:
    raw = dset[start:stop]
    if isinstance(field, (String, Bytes, Sequence)):
        if raw.ndim > 1:  # 1.0.4 wrote strings as (rows, 1)
            raw = raw.reshape(len(raw), -1)[:, 0]
        if isinstance(field, String):
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw]
        if isinstance(field, Bytes):
            return [np.asarray(v, np.uint8).tobytes() for v in raw]
        return list(raw)
    if raw.ndim == 2 and raw.shape[1] == 1 and field.element_shape == ():
        raw = raw[:, 0]
    return raw


def from_legacy(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_rows: int = BATCH_ROWS,
    **kw: Any,
) -> int:
    """Convert an h5record 1.0.4 file to the current format; returns the rows written.

    Fields keep their names; their order is the file's ``fields`` attribute
    when it has one, else the names in HDF5's order.
    """
    import h5py

    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        if not looks_like_1_0_4(f):
            kind = "an h5record file already" if spec.ATTR_FORMAT in f.attrs else "not one"
            raise FormatError(f"{path}: not an h5record 1.0.4 file ({kind})")
        order = [str(n) for n in f.attrs.get("fields", [])] or list(f)
        fields = [field_of(f[name]) for name in order]
        rows = f[order[0]].shape[0]
        step = max(1, batch_rows // 4)  # h5py reads variable-length rows as objects

        def batches() -> Iterator[dict[str, Any]]:
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                yield {fl.name: _column(f[fl.name], fl, start, stop) for fl in fields}

        schema = kw.pop("schema", None)
        overrides = kw.pop("overrides", None)
        if schema is None:
            schema = _override(fields, overrides)
        return write_tables(batches(), out, schema=schema, source=path, total=rows, **kw)


def _override(fields: list[Field], overrides: dict[str, Field | None] | None) -> list[Field]:
    overrides = overrides or {}
    chosen = [overrides.get(fl.name, fl) for fl in fields]
    return [fl for fl in chosen if fl is not None]
