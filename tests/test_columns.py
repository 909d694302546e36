"""Columnar input: DataFrames, Arrow tables and numpy records for write_batch."""

from __future__ import annotations

import numpy as np
import pytest

from h5record import Bytes, H5Dataset, H5Writer, ImageSequence, Integer, RowError, Sequence, String
from h5record.columns import Masked, Ragged, to_columns
from h5record.fields import Unjoined

pa = pytest.importorskip("pyarrow")


def _rows(rng: np.random.Generator, n: int) -> dict[str, list]:
    words = ["a", "bé", "ç∂", "", "longer words here", "日本"]
    return {
        "text": [" ".join(rng.choice(words, rng.integers(0, 4))) for _ in range(n)],
        "blob": [rng.bytes(int(rng.integers(0, 9))) for _ in range(n)],
        "tokens": [rng.integers(-50, 50, rng.integers(0, 6)).astype(np.int32) for _ in range(n)],
        "label": rng.integers(0, 10, n).tolist(),
    }


SCHEMA = [String("text"), Bytes("blob"), Sequence("tokens", dtype="int32"), Integer("label")]


def test_ragged_column_equals_the_general_path():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cols = _rows(rng, int(rng.integers(0, 40)))
        table = pa.table(
            {
                "text": pa.array(cols["text"], pa.large_string()),
                "blob": pa.array(cols["blob"], pa.binary()),
                "tokens": pa.array(cols["tokens"], pa.list_(pa.int32())),
                "label": pa.array(cols["label"], pa.int64()),
            }
        )
        start = int(rng.integers(0, max(1, table.num_rows)))
        fast = to_columns(table.slice(start), first_row=start)
        assert isinstance(fast["text"], Ragged) and isinstance(fast["tokens"], Ragged)
        for field in SCHEMA:
            got = field.convert_column(fast[field.name], start)
            want = field.convert_column(cols[field.name][start:], start)
            flat = want[0].join() if isinstance(want[0], Unjoined) else want[0]
            np.testing.assert_array_equal(got[0], flat)
            if want[1] is not None:
                np.testing.assert_array_equal(got[1], want[1])


def test_arrow_buffers_are_shared_not_copied():
    arr = pa.array(["abc", "de", "f"] * 10)
    col = to_columns(pa.table({"t": arr}))["t"]
    data = np.frombuffer(arr.buffers()[2], np.uint8)
    assert np.shares_memory(col.values, data)
    nums = pa.array(np.arange(10, dtype=np.int32))
    assert np.shares_memory(
        to_columns(pa.table({"n": nums}))["n"], np.frombuffer(nums.buffers()[1], np.int32)
    )


def test_arrow_types_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    emb = rng.random((n, 2, 3), dtype=np.float32)
    tensor_type = pa.fixed_shape_tensor(pa.float32(), (2, 3))
    table = pa.table(
        {
            "cat": pa.array(rng.choice(["x", "y", "z"], n)).dictionary_encode(),
            "view": pa.array([f"v{i}" for i in range(n)], pa.string_view()),
            "fixed": pa.array([emb[i].ravel() for i in range(n)], pa.list_(pa.float32(), 6)),
            "tensor": pa.ExtensionArray.from_storage(
                tensor_type, pa.array([emb[i].ravel() for i in range(n)], pa.list_(pa.float32(), 6))
            ),
            "flag": pa.array(rng.random(n) < 0.5),
            "image": pa.array(
                [{"bytes": bytes([i % 256]) * 4, "path": f"{i}.png"} for i in range(n)]
            ),
        }
    )
    from h5record import infer_schema

    schema = infer_schema(table)
    path = tmp_path / "t.h5"
    with H5Writer(path, schema, progress=False) as w:
        for batch in table.to_batches(max_chunksize=64):
            w.write_batch(to_columns(batch, w.num_rows))
    ds = H5Dataset(path)
    expected = table.to_pylist()
    for i in (0, 7, n - 1):
        row = ds[i]
        assert row["cat"] == expected[i]["cat"] and row["view"] == f"v{i}"
        np.testing.assert_array_equal(row["fixed"], emb[i].ravel())
        np.testing.assert_array_equal(row["tensor"], emb[i])
        assert row["flag"] == int(expected[i]["flag"])
        assert row["image"] == bytes([i % 256]) * 4


def test_chunked_columns_join():
    chunked = pa.chunked_array([["a", "bb"], [], ["ccc"]])
    col = to_columns(pa.table({"t": chunked}))["t"]
    assert list(col) == ["a", "bb", "ccc"]
    lists = pa.chunked_array([[[1], [2, 3]], [[4, 5, 6]]], pa.list_(pa.int16()))
    assert [v.tolist() for v in to_columns({"s": lists})["s"]] == [[1], [2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("values", "typ", "empty"),
    [
        (["a", None, "ccc", None], pa.string(), ""),
        (["a", None, "ccc", None], pa.large_string(), ""),
        ([b"a", None, b"ccc", None], pa.binary(), b""),
        ([b"ab", None, b"cd", None], pa.binary(2), b"\0\0"),
        ([1, None, 3, None], pa.int16(), 0),
        ([1.5, None, 3.5, None], pa.float32(), 0),
        ([True, None, False, None], pa.bool_(), False),
        ([[1, 2], None, [3], None], pa.list_(pa.int32()), []),
        ([[1, 2], None, [3, 4], None], pa.list_(pa.int8(), 2), [0, 0]),
        (["x", None, "x", None], pa.dictionary(pa.int8(), pa.string()), ""),
    ],
)
def test_arrow_nulls_become_a_mask_over_empty_rows(values, typ, empty):
    if pa.types.is_dictionary(typ):
        arr = pa.array(values).dictionary_encode()
    else:
        arr = pa.array(values, typ)
    col = to_columns(pa.table({"c": arr}).slice(0), first_row=5)["c"]
    assert isinstance(col, Masked)
    assert col.valid.tolist() == [True, False, True, False]
    got = [v.tolist() if isinstance(v, np.ndarray) else v for v in col]
    assert got[1] is None and got[3] is None
    assert got[0] == values[0] and got[2] == values[2]
    placeholder = col.values[1]
    placeholder = placeholder.tolist() if isinstance(placeholder, np.ndarray) else placeholder
    assert placeholder == empty


def test_arrow_nulls_of_a_sliced_array_keep_their_rows():
    arr = pa.array([None, "a", None, "bb", "c"]).slice(1, 3)
    col = to_columns({"t": arr})["t"]
    assert list(col) == ["a", None, "bb"]


def test_arrow_null_column_is_all_none():
    assert to_columns({"n": pa.nulls(3)})["n"] == [None, None, None]


def test_null_inside_a_list_names_the_row():
    arr = pa.array([[1], [2, 3], [4, None]], pa.list_(pa.int64()))
    with pytest.raises(RowError, match=r"field 's', row 12: a null element inside a list"):
        to_columns({"s": arr}, first_row=10)


def test_pandas_nulls():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "o": ["a", None, "c"],
            "f": [1.0, float("nan"), 2.0],
        }
    )
    cols = to_columns(frame)
    assert isinstance(cols["n"], Masked) and list(cols["n"]) == [1, None, 3]
    assert cols["n"].values.dtype == np.int64
    assert list(cols["o"]) == ["a", None, "c"]
    assert np.isnan(cols["f"][1])  # NaN is a value of a float column, not a null


def test_unsupported_arrow_type_is_named():
    with pytest.raises(TypeError, match=r"field 'when': Arrow type timestamp"):
        to_columns(pa.table({"when": pa.array([0], pa.timestamp("s"))}))


def test_string_field_checks_utf8_per_row():
    flat = np.frombuffer("aé".encode(), np.uint8)  # b"a\xc3\xa9": row 0 ends inside é
    split = Ragged(flat, np.array([0, 2, 3]), "bytes")
    with pytest.raises(RowError, match=r"field 't', row 4: bytes are not valid UTF-8"):
        String("t").convert_column(split, 4)
    bad = Ragged(np.frombuffer(b"ok\xff", np.uint8), np.array([0, 2, 3]), "bytes")
    with pytest.raises(RowError, match=r"row 1: bytes are not valid UTF-8"):
        String("t").convert_column(bad, 0)
    with pytest.raises(TypeError, match=r"field 'b', row 0: expected bytes"):
        Bytes("b").convert_column(Ragged(flat, np.array([0, 3]), "text"), 0)


def test_sequence_out_of_range_names_the_row():
    col = Ragged(np.array([1, 2, 300, 4]), np.array([0, 1, 2, 2, 4]))
    with pytest.raises(RowError, match=r"field 's', row 3: value 300 is out of range for int8"):
        Sequence("s", dtype="int8").convert_column(col, 0)


def test_pandas_frames(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    cols = _rows(rng, 200)
    df = pd.DataFrame(cols)
    path = tmp_path / "p.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        w.write_batch(to_columns(df))
    ds = H5Dataset(path)
    assert [ds[i]["text"] for i in range(200)] == cols["text"]
    np.testing.assert_array_equal(ds[199]["tokens"], cols["tokens"][199])
    nulls = to_columns(pd.DataFrame({"n": pd.array([1, 2, None], dtype="Int64")}))["n"]
    assert list(nulls) == [1, 2, None]
    with pytest.raises(RowError, match=r"field 'n', row 2: .*nullable=True"):
        with H5Writer(tmp_path / "n.h5", [Integer("n")], progress=False) as w:
            w.write_batch(pd.DataFrame({"n": pd.array([1, 2, None], dtype="Int64")}))
    cat = to_columns(pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])}))["c"]
    assert list(cat) == ["x", "y", "x"]
    floats = to_columns(pd.DataFrame({"f": [1.0, np.nan]}))["f"]  # NaN is a float value
    assert np.isnan(floats[1])


def test_numpy_structured_arrays():
    rec = np.zeros(4, dtype=[("x", "<f4"), ("v", "<i2", (3,))])
    rec["v"] = np.arange(12).reshape(4, 3)
    cols = to_columns(rec)
    np.testing.assert_array_equal(cols["v"][2], [6, 7, 8])
    with pytest.raises(TypeError, match="structured numpy array"):
        to_columns(np.zeros(3))
    with pytest.raises(TypeError, match="got int"):
        to_columns(3)


def test_write_batch_takes_tables_directly(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "w.h5"
    with H5Writer(path, [String("t"), Integer("n")], progress=False) as w:
        w.write_batch(pd.DataFrame({"t": ["a", "b"], "n": [1, 2]}))
        w.write_batch(pa.table({"t": ["c"], "n": [3]}))
        w.write_batch({"t": pa.array(["d"]), "n": pa.array([4])})
        w.write_batch(np.array([("e", 5)], dtype=[("t", object), ("n", "<i8")]))
        with pytest.raises(RowError, match=r"field 't', row 6: .*nullable=True"):
            w.write_batch(pa.table({"t": ["f", None], "n": [6, 7]}))
    assert [r["t"] for r in H5Dataset(path)[:]] == ["a", "b", "c", "d", "e"]


def test_image_sequence_frames_joined():
    field = ImageSequence(2, 3, c=1, name="clip")
    offsets = np.array([0, 2, 2, 5])
    frames = np.arange(5 * 6).reshape(5, 1, 2, 3)  # int64, cast to uint8 as a whole
    flat, lengths = field.convert_column(Ragged(frames, offsets), 0)
    assert flat.dtype == np.uint8 and flat.shape == (5, 1, 2, 3)
    np.testing.assert_array_equal(flat, frames)
    np.testing.assert_array_equal(lengths, [2, 0, 3])
    frames[3, 0, 1, 2] = 300
    with pytest.raises(RowError, match=r"field 'clip', row 12: value 300 is out of range"):
        field.convert_column(Ragged(frames, offsets), 10)
    # Channel-last frames, as Pillow gives them, are turned row by row, as in a list.
    last = np.arange(5 * 6, dtype=np.uint8).reshape(5, 2, 3, 1)
    flat, _ = field.convert_column(Ragged(last, offsets), 0)
    np.testing.assert_array_equal(flat, np.moveaxis(last, -1, -3))


def test_pandas_null_columns_of_every_kind_write(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "b": pd.Series([b"x", None, b"y"], dtype=object),
            "s": pd.Series([np.arange(2), None, np.arange(1)], dtype=object),
            "c": pd.Categorical([1, None, 2]),
            "w": pd.Categorical(["u", None, "u"]),
        }
    )
    schema = [
        Bytes("b", nullable=True),
        Sequence("s", dtype="int64", nullable=True),
        Integer("c", "int64", nullable=True),
        String("w", nullable=True),
    ]
    with H5Writer(tmp_path / "p.h5", schema, progress=False) as w:
        w.write_batch(frame)
    ds = H5Dataset(tmp_path / "p.h5")
    assert [ds[i]["b"] for i in range(3)] == [b"x", None, b"y"]
    assert ds[1]["s"] is None and ds[2]["s"].tolist() == [0]
    assert [ds[i]["c"] for i in range(3)] == [1, None, 2]
    assert [ds[i]["w"] for i in range(3)] == ["u", None, "u"]


@pytest.mark.parametrize("typ", [pa.string_view(), pa.binary_view()])
def test_arrow_view_nulls(typ):
    values = ["x", None, "yy"] if pa.types.is_string_view(typ) else [b"x", None, b"yy"]
    col = to_columns({"v": pa.array(values, typ)})["v"]
    assert list(col) == values
