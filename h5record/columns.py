"""Columnar input for the writer: DataFrames, Arrow tables, numpy records.

:func:`to_columns` turns a pandas DataFrame, a pyarrow ``Table`` or
``RecordBatch``, a numpy structured array or a dict of such columns into a
dict of columns that :meth:`H5Writer.write_batch` accepts. No Python object
is made per row for Arrow data: numeric columns become numpy views of the
Arrow buffers, and string, binary and list columns become :class:`Ragged`
columns, a flat buffer and row offsets, as Arrow stores them and as the
file stores them.

This module imports pyarrow and pandas only when given their objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import RowError, RowTypeError

TEXT = "text"
BYTES = "bytes"
ARRAY = "array"


class Ragged:
    """A variable-length column joined: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    Parameters
    ----------
    values:
        Every row's elements, one after the other: uint8 for text and bytes;
        for an ``ImageSequence``, its frames, of shape ``(frames, c, h, w)``.
    offsets:
        int64, one more than the rows, starting at 0 and never decreasing.
    kind:
        ``'text'`` (UTF-8 rows, read as ``str``), ``'bytes'`` or ``'array'``.
    """

    __slots__ = ("kind", "offsets", "values")

    def __init__(self, values: np.ndarray, offsets: np.ndarray, kind: str = ARRAY) -> None:
        if kind not in (TEXT, BYTES, ARRAY):
            raise ValueError(f"kind must be 'text', 'bytes' or 'array', got {kind!r}")
        offsets = np.asarray(offsets, np.int64)
        if offsets.ndim != 1 or not len(offsets) or offsets[0] != 0:
            raise ValueError("offsets must be 1-D, with one more entry than rows, starting at 0")
        if int(offsets[-1]) != len(values) or (len(offsets) > 1 and np.any(np.diff(offsets) < 0)):
            raise ValueError(
                f"offsets must not decrease and must end at len(values) = {len(values)}"
            )
        self.values = values
        self.offsets = offsets
        self.kind = kind

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of a column of {len(self)} rows")
        i %= len(self)
        part = self.values[self.offsets[i] : self.offsets[i + 1]]
        if self.kind == ARRAY:
            return part
        raw = part.tobytes()
        return raw.decode("utf-8", "replace") if self.kind == TEXT else raw

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        """Elements in each row."""
        return np.diff(self.offsets)

    def __repr__(self) -> str:
        return f"Ragged({len(self)} rows of {self.kind}, {len(self.values)} {self.values.dtype})"

    @classmethod
    def concat(cls, parts: list[Ragged]) -> Ragged:
        """One column of the rows of ``parts``, in order."""
        if len(parts) == 1:
            return parts[0]
        ends = np.cumsum([0] + [len(p.values) for p in parts[:-1]])
        offsets = np.concatenate(
            [np.zeros(1, np.int64)]
            + [p.offsets[1:] + end for p, end in zip(parts, ends, strict=True)]
        )
        return cls(np.concatenate([p.values for p in parts]), offsets, parts[0].kind)


class Masked:
    """A column with nulls: row ``i`` is null where ``valid[i]`` is False.

    Parameters
    ----------
    values:
        The column in any form :meth:`H5Writer.write_batch` takes (numpy
        array, list, :class:`Ragged`), one entry a row; the entries of null
        rows are placeholders, stored as zeros or empty rows whatever they hold.
    valid:
        bool, one a row: True where the row holds a value.
    """

    __slots__ = ("valid", "values")

    def __init__(self, values: Any, valid: np.ndarray) -> None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_ or valid.ndim != 1 or len(valid) != len(values):
            raise ValueError(
                f"valid must be a 1-D bool array of {len(values)} entries (one a row), "
                f"got {valid.dtype} of shape {valid.shape}"
            )
        self.values = values
        self.valid = valid

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, i: int) -> Any:
        return self.values[i] if self.valid[i] else None

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    @property
    def null_count(self) -> int:
        return int(len(self.valid) - np.count_nonzero(self.valid))

    def __repr__(self) -> str:
        return f"Masked({self.values!r}, {self.null_count} nulls)"


def to_columns(data: Any, first_row: int = 0) -> dict[str, Any]:
    """A dict of columns for :meth:`H5Writer.write_batch` from tabular ``data``.

    Parameters
    ----------
    data:
        A dict of columns (each a list, numpy array, pandas Series or Arrow
        array), a pandas DataFrame, a pyarrow Table or RecordBatch, or a
        numpy structured array.
    first_row:
        Row number of the first row, for error messages.

    Returns
    -------
    dict
        Field name to column: numpy arrays (which may share memory with
        ``data``), lists, or :class:`Ragged` columns.

    Raises
    ------
    RowError
        A list column holds a null element (naming the column and the row).
    RowTypeError
        A column's type has no h5record field (naming the column and type).
    """
    if isinstance(data, np.ndarray):
        if data.dtype.names is None:
            raise RowTypeError(
                f"expected a structured numpy array (with named fields), got dtype {data.dtype}"
            )
        return {name: data[name] for name in data.dtype.names}
    module = type(data).__module__.split(".")[0]
    if module == "pyarrow" and hasattr(data, "schema") and hasattr(data, "column"):
        return {
            name: arrow_column(data.column(k), name, first_row)
            for k, name in enumerate(data.schema.names)
        }
    if module == "pandas" and hasattr(data, "columns"):
        return {str(name): _pandas_column(data[name], str(name), first_row) for name in data}
    if isinstance(data, Mapping):
        return {str(name): _any_column(col, str(name), first_row) for name, col in data.items()}
    raise RowTypeError(
        "expected a dict of columns, a pandas DataFrame, a pyarrow Table or RecordBatch, "
        f"or a structured numpy array, got {type(data).__name__}"
    )


def is_tabular(data: Any) -> bool:
    """Whether ``data`` is a table that :func:`to_columns` converts (not a plain dict)."""
    if isinstance(data, np.ndarray):
        return data.dtype.names is not None
    module = type(data).__module__.split(".")[0]
    return (module == "pyarrow" and hasattr(data, "schema")) or (
        module == "pandas" and hasattr(data, "columns")
    )


def _any_column(col: Any, name: str, first_row: int) -> Any:
    module = type(col).__module__.split(".")[0]
    if module == "pyarrow":
        return arrow_column(col, name, first_row)
    if module == "pandas":
        return _pandas_column(col, name, first_row)
    return col


# -- Arrow ------------------------------------------------------------------


def arrow_column(col: Any, name: str, first_row: int = 0) -> Any:
    """A numpy array or :class:`Ragged` column of an Arrow Array or ChunkedArray.

    Numeric columns and the buffers of strings, binaries and lists are
    shared with Arrow, not copied, when they hold one chunk.
    """
    import pyarrow as pa

    if isinstance(col, pa.ChunkedArray):
        parts = []
        row = first_row
        for chunk in col.chunks:
            parts.append(arrow_column(chunk, name, row))
            row += len(chunk)
        if not parts:
            return arrow_column(pa.array([], col.type), name, first_row)
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], Ragged):
            return Ragged.concat(parts)
        return np.concatenate(parts)
    return _arrow_array(col, col.type, name, first_row)


def _arrow_array(arr: Any, typ: Any, name: str, first_row: int) -> Any:
    import pyarrow as pa

    t = pa.types
    if t.is_null(typ):
        return [None] * len(arr)
    if arr.null_count:
        # Null slots hold whatever Arrow left there; filling them gives the
        # writer a column of the usual form, and the mask says which rows are null.
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        filled = _fill_nulls(arr, typ)
        return Masked(_arrow_array(filled, filled.type, name, first_row), valid)
    if isinstance(typ, pa.BaseExtensionType):
        if isinstance(typ, pa.FixedShapeTensorType):
            if typ.permutation is not None and list(typ.permutation) != sorted(typ.permutation):
                raise RowTypeError(
                    f"field {name!r}: tensors with a permuted dimension order are not supported; "
                    "make them row-major first"
                )
            flat = _arrow_array(arr.storage, arr.storage.type, name, first_row)
            return flat.reshape((len(arr), *typ.shape))
        return _arrow_array(arr.storage, typ.storage_type, name, first_row)
    if t.is_dictionary(typ):
        return _arrow_array(arr.dictionary_decode(), typ.value_type, name, first_row)
    if t.is_string_view(typ) or t.is_binary_view(typ):
        wide = pa.large_string() if t.is_string_view(typ) else pa.large_binary()
        return _arrow_array(arr.cast(wide), wide, name, first_row)
    if t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ):
        kind = TEXT if (t.is_string(typ) or t.is_large_string(typ)) else BYTES
        offsets = _offsets(arr, typ)
        start, end = int(offsets[0]), int(offsets[-1])
        data = arr.buffers()[2]
        values = np.frombuffer(data, np.uint8)[start:end] if data is not None else np.empty(0, "u1")
        return Ragged(values, offsets - start, kind)
    if t.is_fixed_size_binary(typ):
        width = typ.byte_width
        start = arr.offset * width
        values = np.frombuffer(arr.buffers()[1], np.uint8)[start : start + len(arr) * width]
        return Ragged(values, np.arange(len(arr) + 1, dtype=np.int64) * width, BYTES)
    if t.is_struct(typ) and typ.get_field_index("bytes") >= 0:
        # Hugging Face Image and Audio: {"bytes": ..., "path": ...}
        child = arr.flatten()[typ.get_field_index("bytes")]  # flatten() applies the slice
        if child.null_count:
            row = first_row + _first_null(child)
            raise RowError(
                f"field {name!r}, row {row}: no bytes (a file referred to by path only?); "
                "embed the files first, e.g. with datasets' embed_table_storage"
            )
        return _arrow_array(child, child.type, name, first_row)
    if t.is_list_view(typ) or t.is_large_list_view(typ):
        wide = pa.large_list(typ.value_field)
        return _arrow_array(arr.cast(wide), wide, name, first_row)
    if t.is_list(typ) or t.is_large_list(typ):
        offsets = np.asarray(arr.offsets, np.int64) if len(arr) else np.zeros(1, np.int64)
        child = arr.flatten()
        values = _list_values(child, name, typ, first_row, offsets - offsets[0])
        if isinstance(values, Ragged):
            raise RowTypeError(
                f"field {name!r}: Arrow type {typ} (lists of variable-length values) has no "
                "h5record field"
            )
        return Ragged(values, offsets - offsets[0], ARRAY)
    if t.is_fixed_size_list(typ):
        child = arr.flatten()
        size = typ.list_size
        values = _list_values(
            child, name, typ, first_row, np.arange(len(arr) + 1, dtype=np.int64) * size
        )
        if isinstance(values, Ragged):
            raise RowTypeError(f"field {name!r}: Arrow type {typ} has no h5record field")
        return values.reshape((len(arr), typ.list_size, *values.shape[1:]))
    if t.is_integer(typ) or t.is_floating(typ):
        return arr.to_numpy(zero_copy_only=True)
    if t.is_boolean(typ):
        return arr.to_numpy(zero_copy_only=False)
    raise RowTypeError(
        f"field {name!r}: Arrow type {typ} has no h5record field; cast the column first "
        "(e.g. timestamps to int64, decimals to float64, structs to separate columns)"
    )


def _list_values(child: Any, name: str, typ: Any, first_row: int, offsets: np.ndarray) -> Any:
    """The elements of a list column; nulls among them are refused, naming the row."""
    if child.null_count:
        row = first_row + int(np.searchsorted(offsets, _first_null(child), side="right")) - 1
        raise RowError(
            f"field {name!r}, row {row}: a null element inside a list ({typ}); h5record "
            "stores nulls of whole rows only: fill them first (pyarrow.compute.fill_null)"
        )
    return _arrow_array(child, child.type, f"{name}[]", 0)


def _fill_nulls(arr: Any, typ: Any) -> Any:
    """``arr`` with its null slots filled by an empty or zero value of its type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(typ, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(typ, _fill_nulls(arr.storage, typ.storage_type))
    if pa.types.is_dictionary(typ):
        arr = arr.dictionary_decode()
        typ = typ.value_type
    if pa.types.is_string_view(typ) or pa.types.is_binary_view(typ):  # fill_null has no kernel
        typ = pa.large_string() if pa.types.is_string_view(typ) else pa.large_binary()
        arr = arr.cast(typ)
    return pc.fill_null(arr, pa.scalar(_zero(typ), typ))


def _zero(typ: Any) -> Any:
    """The Python value of an empty row of Arrow type ``typ``."""
    import pyarrow as pa

    t = pa.types
    if t.is_fixed_size_list(typ):
        return [_zero(typ.value_type)] * typ.list_size
    if t.is_list(typ) or t.is_large_list(typ) or t.is_list_view(typ) or t.is_large_list_view(typ):
        return []
    if t.is_fixed_size_binary(typ):
        return bytes(typ.byte_width)
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_binary_view(typ):
        return b""
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ):
        return ""
    if t.is_struct(typ):
        return {f.name: _zero(f.type) if f.name == "bytes" else None for f in typ}
    if t.is_boolean(typ):
        return False
    return 0


def _offsets(arr: Any, typ: Any) -> np.ndarray:
    """Row offsets of a string or binary array, its slice offset applied."""
    import pyarrow as pa

    wide = pa.types.is_large_string(typ) or pa.types.is_large_binary(typ)
    buf = arr.buffers()[1]
    if buf is None or not len(arr):
        return np.zeros(1, np.int64)
    raw = np.frombuffer(buf, np.int64 if wide else np.int32)
    return raw[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def _first_null(arr: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.index(arr.is_null(), True).as_py())


# -- pandas -----------------------------------------------------------------


def _pandas_column(series: Any, name: str, first_row: int) -> Any:
    import pandas as pd

    values = series.array
    if hasattr(values, "__arrow_array__"):
        try:
            import pyarrow as pa
        except ImportError:
            pa = None
        if pa is not None and not isinstance(series.dtype, pd.CategoricalDtype):
            return arrow_column(pa.array(values), name, first_row)
    missing = np.asarray(series.isna())
    numpy_float = isinstance(series.dtype, np.dtype) and series.dtype.kind == "f"
    if missing.any() and not numpy_float:  # NaN is a value of a float column, NA is not
        return _pandas_nulls(series, missing, name, first_row)
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.astype(series.dtype.categories.dtype).to_numpy()
    if series.dtype.kind in "biuf":
        return series.to_numpy()
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
        kind = getattr(series.dtype, "kind", "O")
        if kind in "biuf":  # nullable Int64, Float64, boolean without nulls
            return series.to_numpy(dtype=series.dtype.numpy_dtype)
    if series.dtype.kind == "O":
        return series.to_numpy()
    raise RowTypeError(
        f"field {name!r}: pandas dtype {series.dtype} has no h5record field; convert the "
        "column first (e.g. datetimes to int64)"
    )


def _pandas_nulls(series: Any, missing: np.ndarray, name: str, first_row: int) -> Any:
    """A column with nulls (``None``, ``NA``, ``NaT``): numbers as :class:`Masked`
    arrays, objects as a list holding ``None`` at the nulls."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):  # a null is code -1
        categories = series.dtype.categories.to_numpy()
        codes = series.cat.codes.to_numpy()
        if len(categories) and categories.dtype.kind in "biuf":
            return Masked(categories[np.maximum(codes, 0)], codes >= 0)
        return [categories[c] if c >= 0 else None for c in codes.tolist()]
    dtype = getattr(series.dtype, "numpy_dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":  # Int64, Float64, boolean
        values = series.to_numpy(dtype=dtype, na_value=0)
        return Masked(values, ~missing)
    if series.dtype.kind == "O" or str(series.dtype) == "string":
        values = series.to_numpy(dtype=object, copy=True)  # pandas may lend a read-only view
        values[missing] = None
        return list(values)
    raise RowTypeError(
        f"field {name!r}: pandas dtype {series.dtype} has no h5record field; convert the "
        "column first (e.g. datetimes to int64)"
    )
