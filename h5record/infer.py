"""Schema inference: h5record fields from Arrow, pandas and numpy types, or from rows.

=========================================  =====================================
source type                                field
=========================================  =====================================
string, large_string, string_view          ``String``
binary, large_binary, fixed_size_binary    ``Bytes``
a struct with a ``bytes`` field            ``Bytes`` (Hugging Face Image, Audio)
int8 ... uint64, bool                      ``Integer(dtype)`` (bool as uint8)
float16, float32, float64                  ``Float(dtype)``
list<number> (any list kind)               ``Sequence(dtype)``
fixed_size_list<number> (nested), tensor   ``Array(shape, dtype)``
dictionary<T>                              the field of T
=========================================  =====================================

Every other type raises :class:`~h5record.errors.SchemaError` naming the
column and the type. Overrides replace or drop inferred fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import numpy as np

from .columns import Masked
from .errors import SchemaError
from .fields import Array, Bytes, Field, Float, Integer, Schema, Sequence, String, field_from_json

# Rows looked at when inferring a schema from row dicts.
SAMPLE_ROWS = 1000


def infer_schema(
    data: Any,
    overrides: Mapping[str, Field | None] | None = None,
    *,
    nullable: bool | Iterable[str] | None = None,
) -> Schema:
    """Infer an h5record schema from a table, a frame, an array or rows.

    Parameters
    ----------
    data:
        A pyarrow ``Table``, ``RecordBatch`` or ``Schema``; a pandas
        ``DataFrame``; a numpy structured array; a dict of columns; or an
        iterable of row dicts (the first 1,000 rows are looked at).
    overrides:
        Field name to the :class:`~h5record.fields.Field` to use instead of
        the inferred one, or to ``None`` to leave the column out.
    nullable:
        Which inferred fields may hold nulls. By default (``None``), those
        whose column holds a null in the data looked at (an Arrow schema
        holds no data: no field). ``True``: every field; ``False``: none.
        Column names: those columns, besides the ones holding a null.

    Returns
    -------
    Schema

    Raises
    ------
    SchemaError
        A column's type maps to no field (naming the column and type), or an
        override names no column.

    Examples
    --------
    >>> import numpy as np
    >>> from h5record import infer_schema, Sequence
    >>> infer_schema({"text": ["a"], "tokens": [np.arange(3, dtype=np.int32)]})
    Schema([String(name='text', codec={'id': 'none'}), Sequence(name='tokens', dtype='<i4', codec={'id': 'none'})])
    >>> infer_schema({"text": ["a"], "n": [1]}, overrides={"n": None}).names
    ['text']
    """  # noqa: E501
    if _is_rows(data):  # sampled once: an iterator cannot be read twice
        data = list(islice(iter(data), SAMPLE_ROWS))
    fields = _infer(data)
    if nullable is True:
        with_nulls = set(fields)
    elif nullable is False:
        with_nulls = set()
    else:
        with_nulls = _columns_with_nulls(data, fields)
    if nullable not in (None, True, False):
        asked = {nullable} if isinstance(nullable, str) else set(nullable)
        unknown_nullable = sorted(asked - set(fields))
        if unknown_nullable:
            raise SchemaError(
                f"nullable names no column: {unknown_nullable}; the columns are {list(fields)}"
            )
        with_nulls |= asked
    fields = {n: _as_nullable(f) if n in with_nulls else f for n, f in fields.items()}
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in fields]
    if unknown:
        raise SchemaError(f"overrides name no column: {unknown}; the columns are {list(fields)}")
    out = []
    for name, field in fields.items():
        if name in overrides:
            chosen = overrides[name]
            if chosen is None:
                continue
            if not isinstance(chosen, Field):
                raise SchemaError(
                    f"override of {name!r} must be an h5record field or None, got {chosen!r}"
                )
            field = chosen
        out.append(field)
    return Schema(out)


def _infer(data: Any) -> dict[str, Field]:
    module = type(data).__module__.split(".")[0]
    if module == "pyarrow" or module == "datasets":
        schema = getattr(data, "schema", data)
        if hasattr(schema, "arrow_schema"):  # datasets.Features
            schema = schema.arrow_schema
        return {f.name: arrow_field(f.name, f.type) for f in schema}
    if module == "pandas" and hasattr(data, "columns"):
        return {str(name): _pandas_field(str(name), data[name]) for name in data}
    if isinstance(data, np.ndarray):
        if data.dtype.names is None:
            raise SchemaError(
                f"expected a structured numpy array (with named fields), got dtype {data.dtype}"
            )
        return {name: _numpy_field(name, data.dtype[name], data[name]) for name in data.dtype.names}
    if isinstance(data, Mapping):
        return {str(name): _column_field(str(name), col) for name, col in data.items()}
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        rows = list(islice(iter(data), SAMPLE_ROWS))
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise SchemaError("cannot infer a schema from no rows, or from rows that are not dicts")
        names = list(rows[0])
        return {str(n): _values_field(str(n), [r.get(n) for r in rows]) for n in names}
    raise SchemaError(f"cannot infer a schema from {type(data).__name__}")


def _is_rows(data: Any) -> bool:
    module = type(data).__module__.split(".")[0]
    return (
        module not in ("pyarrow", "datasets", "pandas")
        and not isinstance(data, (np.ndarray, Mapping, str, bytes))
        and isinstance(data, Iterable)
    )


def _as_nullable(field: Field) -> Field:
    return field_from_json({**field.to_json(), "nullable": True})


def _columns_with_nulls(data: Any, fields: Mapping[str, Field]) -> set[str]:
    """The columns of ``data`` that hold a null in what :func:`_infer` looked at."""
    module = type(data).__module__.split(".")[0]
    if module == "pyarrow" and hasattr(data, "column"):  # Table, RecordBatch
        return {n for n in fields if data.column(n).null_count}
    if module == "pandas" and hasattr(data, "columns"):
        return {n for n in fields if _column_has_null(data[n])}
    if isinstance(data, Mapping):
        return {n for n in fields if _column_has_null(data[n])}
    if isinstance(data, np.ndarray):
        return {n for n in fields if _column_has_null(data[n])}
    if isinstance(data, list):  # rows, as sampled by infer_schema
        return {n for n in fields if any(r.get(n) is None for r in data)}
    return set()  # an Arrow or datasets schema: no data


def _column_has_null(col: Any) -> bool:
    """Whether a column in memory holds a null anywhere."""
    if isinstance(col, Masked):
        return bool(col.null_count)
    module = type(col).__module__.split(".")[0]
    if module == "pyarrow":
        return bool(col.null_count)
    if module == "pandas":
        numpy_float = isinstance(col.dtype, np.dtype) and col.dtype.kind == "f"
        return not numpy_float and bool(col.isna().any())  # NaN is a float value
    if isinstance(col, np.ndarray):
        return col.dtype.kind == "O" and any(v is None for v in col)
    return any(v is None for v in col)


def _refuse(name: str, what: Any, hint: str = "") -> SchemaError:
    return SchemaError(f"column {name!r}: {what} maps to no h5record field{hint}")


def arrow_field(name: str, typ: Any) -> Field:
    """The field for an Arrow type; SchemaError naming ``name`` if there is none."""
    import pyarrow as pa

    t = pa.types
    if isinstance(typ, pa.BaseExtensionType):
        if isinstance(typ, pa.FixedShapeTensorType):
            return Array(name, typ.shape, _arrow_number(name, typ.value_type, typ))
        return arrow_field(name, typ.storage_type)
    if t.is_dictionary(typ):
        return arrow_field(name, typ.value_type)
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ):
        return String(name)
    if (
        t.is_binary(typ)
        or t.is_large_binary(typ)
        or t.is_binary_view(typ)
        or t.is_fixed_size_binary(typ)
    ):
        return Bytes(name)
    if t.is_struct(typ) and typ.get_field_index("bytes") >= 0:
        return arrow_field(name, typ.field("bytes").type)
    if t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ):
        dtype = _arrow_number(name, typ, typ)
        return Float(name, dtype) if dtype.kind == "f" else Integer(name, dtype)
    if t.is_list(typ) or t.is_large_list(typ) or t.is_list_view(typ) or t.is_large_list_view(typ):
        return Sequence(name, _arrow_number(name, typ.value_type, typ))
    if t.is_fixed_size_list(typ):
        shape = []
        inner = typ
        while t.is_fixed_size_list(inner):
            shape.append(inner.list_size)
            inner = inner.value_type
        return Array(name, shape, _arrow_number(name, inner, typ))
    hint = ""
    if t.is_null(typ):
        hint = " (the column holds only nulls)"
    elif t.is_temporal(typ) or t.is_decimal(typ):
        hint = "; cast it to a number first"
    elif t.is_struct(typ):
        hint = "; give each of its fields a column of its own"
    raise _refuse(name, f"Arrow type {typ}", hint)


def _arrow_number(name: str, typ: Any, whole: Any) -> np.dtype:
    import pyarrow as pa

    if pa.types.is_boolean(typ):
        return np.dtype(np.uint8)
    if pa.types.is_dictionary(typ):
        return _arrow_number(name, typ.value_type, whole)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return np.dtype(typ.to_pandas_dtype())
    raise _refuse(name, f"Arrow type {whole}", " (elements must be numbers)")


def _numpy_field(name: str, dtype: np.dtype, column: Any = None) -> Field:
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return Array(name, shape, _number_dtype(name, base))
    if dtype.kind == "U":
        return String(name)
    if dtype.kind == "S":
        return Bytes(name)
    if dtype.kind == "O":
        if column is None or not len(column):
            raise _refuse(name, "an empty object column", "; give its field in overrides")
        return _values_field(name, list(column[:SAMPLE_ROWS]))
    base = _number_dtype(name, dtype)
    return Float(name, base) if base.kind == "f" else Integer(name, base)


def _number_dtype(name: str, dtype: np.dtype) -> np.dtype:
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind in "iuf":
        return dtype
    raise _refuse(name, f"numpy dtype {dtype}")


def _column_field(name: str, col: Any) -> Field:
    module = type(col).__module__.split(".")[0]
    if module == "pyarrow":
        return arrow_field(name, col.type)
    if module == "pandas":
        return _pandas_field(name, col)
    if isinstance(col, np.ndarray):
        if col.ndim > 1:
            return Array(name, col.shape[1:], _number_dtype(name, col.dtype))
        return _numpy_field(name, col.dtype, col)
    return _values_field(name, list(islice(iter(col), SAMPLE_ROWS)))


def _pandas_field(name: str, series: Any) -> Field:
    values = series.array
    if hasattr(values, "__arrow_array__") and series.dtype.kind not in "biuf":
        import pyarrow as pa

        return arrow_field(name, pa.array(values).type)
    dtype = getattr(series.dtype, "numpy_dtype", series.dtype)
    if isinstance(dtype, np.dtype) and dtype.kind != "O":
        return _numpy_field(name, dtype)
    sample = series.dropna()
    if not len(sample):
        raise _refuse(name, "a column of nulls only", "; give its field in overrides")
    return _values_field(name, sample.iloc[:SAMPLE_ROWS].tolist())


def _values_field(name: str, values: list[Any]) -> Field:
    """The field of Python values (the rows of one column)."""
    present = [v for v in values if v is not None]
    if not present:
        raise _refuse(name, "a column of None only", "; give its field in overrides")
    first = present[0]
    if isinstance(first, str):
        return String(name)
    if isinstance(first, (bytes, bytearray, memoryview)):
        return Bytes(name)
    if isinstance(first, (bool, np.bool_)):
        return Integer(name, "uint8")
    if isinstance(first, (int, np.integer, float, np.floating)):
        arr = np.asarray([v for v in present if not isinstance(v, str)])
        if arr.dtype.kind == "f" or isinstance(first, np.floating):
            return Float(name, first.dtype if isinstance(first, np.floating) else "float64")
        return Integer(name, first.dtype if isinstance(first, np.integer) else "int64")
    if isinstance(first, (list, tuple, np.ndarray)):
        arrays = [np.asarray(v) for v in present]
        if any(a.dtype.kind not in "biuf" for a in arrays if a.size):
            raise _refuse(name, f"a sequence of {_first_kind(arrays)}", " (not numbers)")
        dtype = _common_dtype(arrays)
        shapes = {a.shape for a in arrays}
        if (
            len(shapes) == 1
            and next(iter(shapes))
            and (isinstance(first, np.ndarray) and first.ndim > 1)
        ):
            return Array(name, next(iter(shapes)), dtype)
        if all(a.ndim == 1 for a in arrays):
            return Sequence(name, dtype)
        raise _refuse(name, f"arrays of shapes {sorted(shapes)[:3]}", " (not 1-D, nor one shape)")
    raise _refuse(name, f"values of type {type(first).__name__}")


def _first_kind(arrays: list[np.ndarray]) -> str:
    return next(str(a.dtype) for a in arrays if a.size and a.dtype.kind not in "biuf")


def _common_dtype(arrays: list[np.ndarray]) -> np.dtype:
    typed = [a.dtype for a in arrays if a.size]
    if not typed:
        return np.dtype(np.int64)
    dtype = np.result_type(*typed)
    return np.dtype(np.uint8) if dtype.kind == "b" else dtype
