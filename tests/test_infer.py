"""Schema inference from Arrow, pandas, numpy and rows."""

from __future__ import annotations

import numpy as np
import pytest

from h5record import (
    Array,
    Bytes,
    Float,
    Integer,
    SchemaError,
    Sequence,
    String,
    infer_schema,
)


def test_rows_and_dicts_of_columns():
    rows = [
        {"t": "a", "b": b"x", "n": 1, "f": 0.5, "s": [1, 2], "e": np.zeros((2, 2), np.float32)},
        {"t": "b", "b": b"", "n": 2, "f": 1.5, "s": [], "e": np.ones((2, 2), np.float32)},
    ]
    schema = infer_schema(rows)
    assert schema.fields == [
        String("t"),
        Bytes("b"),
        Integer("n"),
        Float("f"),
        Sequence("s", dtype="int64"),
        Array("e", (2, 2), "float32"),
    ]
    cols = {"tok": [np.arange(3, dtype=np.uint16)], "x": np.zeros((1, 4), np.float16)}
    assert infer_schema(cols).fields == [Sequence("tok", dtype="uint16"), Array("x", (4,), "f2")]
    rec = np.zeros(2, dtype=[("a", "<i2"), ("b", "?"), ("c", "<f4", (3,))])
    assert infer_schema(rec).fields == [
        Integer("a", "i2"),
        Integer("b", "u1"),
        Array("c", (3,), "f4"),
    ]


def test_overrides_replace_and_drop():
    schema = infer_schema(
        {"a": [1], "b": ["x"], "c": [2.0]}, overrides={"a": Integer("a", "int8"), "c": None}
    )
    assert schema.fields == [Integer("a", "int8"), String("b")]
    with pytest.raises(SchemaError, match=r"name no column: \['z'\]"):
        infer_schema({"a": [1]}, overrides={"z": None})
    with pytest.raises(SchemaError, match="must be an h5record field"):
        infer_schema({"a": [1]}, overrides={"a": "int8"})


def test_refusals_name_the_column():
    with pytest.raises(SchemaError, match=r"column 'x': values of type dict"):
        infer_schema([{"x": {"a": 1}}])
    with pytest.raises(SchemaError, match=r"column 'x': a column of None only"):
        infer_schema([{"x": None}])
    with pytest.raises(SchemaError, match="from no rows"):
        infer_schema([])


def test_arrow_types():
    pa = pytest.importorskip("pyarrow")
    schema = pa.schema(
        [
            ("s", pa.string()),
            ("ls", pa.large_string()),
            ("b", pa.large_binary()),
            ("fb", pa.binary(4)),
            ("i8", pa.int8()),
            ("u64", pa.uint64()),
            ("h", pa.float16()),
            ("ok", pa.bool_()),
            ("seq", pa.list_(pa.int32())),
            ("lseq", pa.large_list(pa.float32())),
            ("fix", pa.list_(pa.list_(pa.uint8(), 3), 2)),
            ("tensor", pa.fixed_shape_tensor(pa.int16(), (2, 5))),
            ("cat", pa.dictionary(pa.int8(), pa.string())),
            ("img", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ]
    )
    assert infer_schema(schema).fields == [
        String("s"),
        String("ls"),
        Bytes("b"),
        Bytes("fb"),
        Integer("i8", "int8"),
        Integer("u64", "uint64"),
        Float("h", "float16"),
        Integer("ok", "uint8"),
        Sequence("seq", dtype="int32"),
        Sequence("lseq", dtype="float32"),
        Array("fix", (2, 3), "uint8"),
        Array("tensor", (2, 5), "int16"),
        String("cat"),
        Bytes("img"),
    ]
    for typ, words in [
        (pa.timestamp("ms"), "cast it to a number"),
        (pa.struct([("a", pa.int8())]), "a column of its own"),
        (pa.list_(pa.string()), "elements must be numbers"),
        (pa.null(), "only nulls"),
    ]:
        with pytest.raises(SchemaError, match=rf"column 'c': Arrow type .*{words}"):
            infer_schema(pa.schema([("c", typ)]))


def test_pandas_frames():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "t": ["a", "b"],
            "n": np.array([1, 2], np.int32),
            "f": [0.5, np.nan],
            "o": pd.Series([np.arange(2), np.arange(3)], dtype=object),
            "ni": pd.array([1, 2], dtype="Int16"),
        }
    )
    assert infer_schema(df).fields == [
        String("t"),
        Integer("n", "int32"),
        Float("f"),
        Sequence("o", dtype="int64"),
        Integer("ni", "int16"),
    ]


def _nullable(schema):
    return {f.name for f in schema if f.nullable}


def test_columns_holding_nulls_are_nullable():
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"t": ["a", None], "n": [1, 2], "s": [[1], None]})
    schema = infer_schema(table)
    assert _nullable(schema) == {"t", "s"}
    assert schema.fields[0] == String("t", nullable=True)
    assert _nullable(infer_schema(table.schema)) == set()  # a schema holds no data
    assert _nullable(infer_schema(table.schema, nullable=["n"])) == {"n"}
    assert _nullable(infer_schema(table, nullable=True)) == {"t", "n", "s"}
    rows = iter([{"t": "a", "n": 1}, {"t": None, "n": 2}, {"n": 3}])
    assert _nullable(infer_schema(rows)) == {"t"}
    assert _nullable(infer_schema({"t": ["a", None], "u": np.array(["a"], object)})) == {"t"}
    with pytest.raises(SchemaError, match=r"nullable names no column: \['x'\]"):
        infer_schema(table, nullable=["x"])


def test_pandas_nulls_make_nullable_fields():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None], dtype="Int64"),
            "f": [1.0, float("nan")],  # NaN is a float value
            "o": ["a", None],
        }
    )
    schema = infer_schema(frame)
    assert _nullable(schema) == {"n", "o"}
    assert schema.fields[0] == Integer("n", "int64", nullable=True)


def test_nulls_anywhere_in_a_column_in_memory_count():
    from h5record.columns import Masked

    n = 2500
    valid = np.ones(n, bool)
    valid[-1] = False
    cols = {"m": Masked(np.arange(n), valid), "l": [1] * (n - 1) + [None]}
    assert _nullable(infer_schema(cols)) == {"m", "l"}
    assert _nullable(infer_schema(cols, nullable=False)) == set()
