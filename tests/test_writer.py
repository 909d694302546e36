"""H5Writer: streaming, atomic files, clear errors that keep earlier rows."""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Mapping
from types import MappingProxyType

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import h5record.writer
from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    H5Dataset,
    H5RecordError,
    H5Writer,
    Image,
    ImageSequence,
    Integer,
    RowError,
    RowTypeError,
    SchemaError,
    Sequence,
    String,
    codecs,
)
from tests.strategies import assert_row_equal, expected_row, schema_and_rows

SCHEMA = [String("text"), Integer("label"), Sequence("tokens", dtype="int32"), Float("score")]


def _row(i: int) -> dict:
    return {"text": f"t{i}", "label": i, "tokens": np.arange(i % 5, dtype=np.int32), "score": i / 2}


def _labels(path) -> list[int]:
    ds = path if isinstance(path, H5Dataset) else H5Dataset(path)
    return [ds[i]["label"] for i in range(len(ds))]


@settings(max_examples=40)
@given(
    data=schema_and_rows(max_fields=3, max_rows=30, with_codecs=True),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    batch_first=st.booleans(),
    flush_rows=st.integers(1, 8),
    flush_bytes=st.sampled_from([1, 100, 10_000]),
)
def test_write_and_write_batch_mixed_with_many_flushes(
    tmp_path, data, cuts, batch_first, flush_rows, flush_bytes
):
    fields, rows = data
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    path = tmp_path / "mixed.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5record.writer, "FLUSH_ROWS", flush_rows)
        mp.setattr(h5record.writer, "FLUSH_BYTES", flush_bytes)
        with H5Writer(path, fields, progress=False, overwrite=True, chunk_bytes=128) as w:
            for k, (a, b) in enumerate(itertools.pairwise(bounds)):
                if (k % 2 == 0) == batch_first:
                    w.write_batch({f.name: [r[f.name] for r in rows[a:b]] for f in fields})
                else:
                    for row in rows[a:b]:
                        w.write(row)
                assert w.num_rows == b
    with H5Dataset(path) as ds:
        assert len(ds) == len(rows)
        for i, row in enumerate(rows):
            assert_row_equal(ds[i], expected_row(fields, row))


def test_many_flushes_one_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", 7)
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 100)
    path = tmp_path / "f.h5"
    with H5Writer(path, SCHEMA, progress=False, chunk_bytes=32) as w:
        for i in range(100):
            w.write(_row(i))
            assert w.num_rows == i + 1
            # Memory stays bounded: never more than FLUSH_ROWS rows buffered.
            assert all(len(column.rows) < 7 for column in w._columns)
        w.write_batch(
            {
                "text": [f"t{i}" for i in range(100, 150)],
                "label": np.arange(100, 150),
                "tokens": [np.arange(i % 5, dtype=np.int32) for i in range(100, 150)],
                "score": [i / 2 for i in range(100, 150)],
            }
        )
        for i in range(150, 160):
            w.write(_row(i))
    ds = H5Dataset(path)
    assert len(ds) == 160
    for i in range(160):
        row = ds[i]
        assert (row["text"], row["label"], row["score"]) == (f"t{i}", i, i / 2)
        np.testing.assert_array_equal(row["tokens"], np.arange(i % 5))
    with h5py.File(path) as f:  # many chunks really were written
        assert f["fields/tokens/values"].id.get_num_chunks() > 10


def test_rows_bigger_than_the_flush_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 1000)
    path = tmp_path / "big.h5"
    blobs = [np.random.default_rng(i).bytes(50_000 * (i % 3)) for i in range(7)]
    with H5Writer(path, [Bytes("b"), Integer("i")], progress=False) as w:
        for i, blob in enumerate(blobs):
            w.write({"b": blob, "i": i})
    ds = H5Dataset(path)
    assert [ds[i]["b"] for i in range(7)] == blobs


ALL_TYPES = [
    String("s"),
    Bytes("b"),
    Integer("i", dtype="int16"),
    Float("f"),
    Float16("h"),
    Sequence("q", dtype="uint32"),
    FloatSequence("fs"),
    Float16Sequence("hs"),
    Array("a", (2, 3), "float64"),
    Image(3, 4, 2, name="img"),
    ImageSequence(2, 2, 1, name="gif"),
]


def _all_types_row(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "s": "é✓🎉"[: i % 4] * (i % 50),
        "b": rng.bytes(i % 40),
        "i": i - 300,
        "f": i / 7,
        "h": float(np.float16(i / 3)),
        "q": rng.integers(0, 2**32, i % 6, dtype=np.uint32),
        "fs": rng.random(i % 3).astype(np.float32),
        "hs": rng.random(i % 4).astype(np.float16),
        "a": rng.random((2, 3)),
        "img": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
        "gif": rng.integers(0, 256, (i % 3, 1, 2, 2), dtype=np.uint8),
    }


@pytest.mark.parametrize(
    "compression", [None, "lzf", "gzip", ("gzip", 0), ("gzip", 9), "zstd"], ids=str
)
def test_compression_round_trip(tmp_path, compression):
    path = tmp_path / "c.h5"
    rows = [_all_types_row(i) for i in range(400)]
    with H5Writer(path, ALL_TYPES, compression=compression, progress=False) as w:
        for row in rows[:150]:
            w.write(row)
        w.write_batch({f.name: [r[f.name] for r in rows[150:]] for f in ALL_TYPES})
    with h5py.File(path) as f:
        name = compression[0] if isinstance(compression, tuple) else compression
        # lzf and gzip are HDF5 filters; zstd is h5record's own blocks of rows.
        assert f["fields/s/values"].compression == (None if name == "zstd" else name)
        assert ("blocks" in f["fields/s"]) == (name == "zstd")
        if compression in ("lzf", "gzip"):
            assert "values_chunks" not in f["fields/s"]  # filtered: no address table
            assert "offsets_chunks" in f["fields/s"]  # offsets stay raw
    for mode in (False, "process"):
        with H5Dataset(path, in_memory=mode) as ds:
            assert len(ds) == 400
            for i in range(0, 400, 3):
                assert_row_equal(ds[i], expected_row(ALL_TYPES, rows[i]))
            everything = ds[list(range(400))].to_list()
            for i in range(0, 400, 7):
                assert_row_equal(everything[i], expected_row(ALL_TYPES, rows[i]))


@pytest.mark.parametrize("compression", [None, "lzf", "gzip", "zstd"])
def test_zero_rows(tmp_path, compression):
    path = tmp_path / "empty.h5"
    with H5Writer(path, ALL_TYPES, compression=compression, progress=False) as w:
        assert w.num_rows == 0
    for mode in (False, True, "process"):
        with H5Dataset(path, in_memory=mode) as ds:
            assert len(ds) == 0
            assert ds.names == [f.name for f in ALL_TYPES]
            assert len(ds[[]]) == 0 and len(ds[0:10]) == 0
            with pytest.raises(IndexError):
                ds[0]
            with pytest.raises(IndexError):
                ds[-1]


def test_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "atomic.h5"
    w = H5Writer(path, SCHEMA, progress=False)
    w.write(_row(0))
    w.flush()
    assert not path.exists()
    # The unfinished file lives in the same folder, under a visible name.
    assert os.listdir(tmp_path) == ["atomic.h5.partial"]
    w.close()
    w.close()  # closing twice is harmless
    assert path.exists() and len(H5Dataset(path)) == 1
    assert os.listdir(tmp_path) == ["atomic.h5"]
    with pytest.raises(H5RecordError, match="closed"):
        w.write(_row(1))
    with pytest.raises(H5RecordError, match="closed"):
        w.write_batch({"text": [], "label": [], "tokens": [], "score": []})


def test_exception_inside_with_commits_and_keeps_the_partial_file(tmp_path):
    path = tmp_path / "kept.h5"
    with pytest.raises(KeyError), H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(0))
        w.flush()
        raise KeyError("user code failed")
    assert os.listdir(tmp_path) == ["kept.h5.partial"]
    assert _labels(H5Dataset(str(path) + ".partial", partial=True)) == [0]
    with H5Writer(path, SCHEMA, progress=False, resume=True) as w:
        assert w.num_rows == 1
        w.write(_row(1))
    assert _labels(path) == [0, 1]
    assert os.listdir(tmp_path) == ["kept.h5"]


def test_uncaught_bad_row_inside_with_keeps_the_rows_before_it(tmp_path):
    path = tmp_path / "bad.h5"
    with pytest.raises(RowTypeError), H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(0))
        w.write({**_row(1), "label": "one"})
    assert _labels(H5Dataset(str(path) + ".partial", partial=True)) == [0]


def test_exception_before_any_row_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), H5Writer(tmp_path / "gone.h5", SCHEMA, progress=False):
        raise KeyError("user code failed")
    assert os.listdir(tmp_path) == []


def test_failure_while_overwriting_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(7))
    with pytest.raises(RuntimeError), H5Writer(path, SCHEMA, progress=False, overwrite=True) as w:
        w.write(_row(8))
        raise RuntimeError
    assert _labels(path) == [7]
    assert sorted(os.listdir(tmp_path)) == ["keep.h5", "keep.h5.partial"]


def test_abort_and_garbage_collection_leave_nothing(tmp_path):
    w = H5Writer(tmp_path / "a.h5", SCHEMA, progress=False)
    w.write(_row(0))
    w.abort()
    w.abort()
    with pytest.raises(H5RecordError, match="closed"):
        w.write(_row(1))
    w = H5Writer(tmp_path / "b.h5", SCHEMA, progress=False)
    w.write(_row(0))
    del w
    gc.collect()
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "x.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        H5Writer(path, SCHEMA, progress=False)
    assert os.listdir(tmp_path) == ["x.h5"]  # no temporary file either
    with H5Writer(path, SCHEMA, overwrite=True, progress=False) as w:
        w.write(_row(1))
    assert _labels(path) == [1]


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"compression": "brotli"}, SchemaError),
        ({"chunk_bytes": 0}, ValueError),
        ({"chunk_bytes": 1.5}, ValueError),
    ],
)
def test_bad_writer_options_leave_nothing(tmp_path, kwargs, error):
    with pytest.raises(error):
        H5Writer(tmp_path / "o.h5", SCHEMA, progress=False, **kwargs)
    with pytest.raises(SchemaError):
        H5Writer(tmp_path / "o.h5", [String("a"), String("a")], progress=False)
    assert os.listdir(tmp_path) == []


BAD_ROWS = [
    ({"text": 5}, RowTypeError, r"field 'text', row 3: expected str, got int 5"),
    (
        {"text": None},
        RowTypeError,
        r"field 'text', row 3: expected str, got None; declare .* nullable=True",
    ),
    ({"text": "\ud800"}, RowError, r"field 'text', row 3: string cannot be encoded as UTF-8"),
    ({"label": "3"}, RowTypeError, r"field 'label', row 3: expected an integer, got str"),
    ({"label": 1.5}, RowTypeError, r"field 'label', row 3: expected an integer"),
    ({"label": None}, RowTypeError, r"field 'label', row 3: expected an integer"),
    ({"label": 2**63}, RowError, r"field 'label', row 3: value 9223372036854775808 is out of"),
    ({"label": -(2**63) - 1}, RowError, r"field 'label', row 3: value -9223372036854775809 is"),
    ({"tokens": [1.5]}, RowTypeError, r"field 'tokens', row 3: .*floating point"),
    ({"tokens": np.zeros(2)}, RowTypeError, r"field 'tokens', row 3: .*floating point"),
    ({"tokens": [2**40]}, RowError, r"field 'tokens', row 3: value 1099511627776 is out of range"),
    ({"tokens": [[1, 2]]}, RowError, r"field 'tokens', row 3: expected a 1-D sequence"),
    ({"tokens": "abc"}, RowTypeError, r"field 'tokens', row 3"),
    ({"tokens": None}, RowTypeError, r"field 'tokens', row 3"),
    (
        {"score": None},
        RowTypeError,
        r"field 'score', row 3: expected a number, got None;",
    ),
    ({"score": "x"}, RowTypeError, r"field 'score', row 3"),
    ({"score": True}, RowTypeError, r"field 'score', row 3"),
]


@pytest.mark.parametrize("flush_rows", [1, 2, 1 << 16])
@pytest.mark.parametrize("change,error,message", BAD_ROWS, ids=[m for *_, m in BAD_ROWS])
def test_bad_value_names_field_row_and_keeps_earlier_rows(
    tmp_path, monkeypatch, change, error, message, flush_rows
):
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", flush_rows)
    path = tmp_path / "bad.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        for i in range(3):
            w.write(_row(i))
        with pytest.raises(error, match=message) as info:
            w.write({**_row(3), **change})
        assert isinstance(info.value, H5RecordError) and isinstance(info.value, ValueError)
        assert w.num_rows == 3
        w.write(_row(4))  # the writer goes on
        w.write(_row(5))
    ds = H5Dataset(path)
    assert [ds[i]["label"] for i in range(len(ds))] == [0, 1, 2, 4, 5]
    assert [ds[i]["text"] for i in range(len(ds))] == ["t0", "t1", "t2", "t4", "t5"]
    assert [len(ds[i]["tokens"]) for i in range(len(ds))] == [0, 1, 2, 4, 0]


@pytest.mark.parametrize(
    "row,message",
    [
        ({"text": "a", "label": 1, "tokens": []}, r"row 0: missing field\(s\) \['score'\]"),
        ({**_row(0), "extra": 1}, r"row 0: unknown field\(s\) \['extra'\]"),
        (
            {"text": "a", "label": 1, "tokens": [1], "scor": 1.0},
            r"row 0: missing field\(s\) \['score'\] and unknown field\(s\) \['scor'\]",
        ),
        ({}, r"row 0: missing field\(s\) \['text', 'label', 'tokens', 'score'\]"),
    ],
)
def test_missing_and_extra_fields(tmp_path, row, message):
    path = tmp_path / "k.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        with pytest.raises(RowError, match=message):
            w.write(row)
        w.write(_row(0))
    assert _labels(path) == [0]


@pytest.mark.parametrize("row", [[1, 2, 3, 4], "text", None, 5])
def test_rows_must_be_mappings(tmp_path, row):
    with H5Writer(tmp_path / "m.h5", SCHEMA, progress=False) as w:
        with pytest.raises(RowTypeError, match=r"row 0: expected a dict of field values"):
            w.write(row)


class _Row(Mapping):
    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_any_mapping_is_a_row(tmp_path):
    path = tmp_path / "map.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        w.write(MappingProxyType(_row(0)))
        w.write(_Row(_row(1)))
        w.write_batch(MappingProxyType({k: [v] for k, v in _row(2).items()}))
        with pytest.raises(RowError, match="missing"):
            w.write(_Row({"text": "x"}))
    assert _labels(path) == [0, 1, 2]


def test_write_batch_errors_name_the_row_and_keep_earlier_rows(tmp_path):
    path = tmp_path / "b.h5"
    with H5Writer(path, [String("t"), Integer("n")], progress=False) as w:
        w.write({"t": "a", "n": 0})
        with pytest.raises(RowTypeError, match=r"field 't', row 3: expected str"):
            w.write_batch({"t": ["b", "c", 7], "n": [1, 2, 3]})
        with pytest.raises(RowError, match=r"field 'n', row 2: value 18446744073709551616"):
            w.write_batch({"t": ["b", "c"], "n": [1, 2**64]})
        with pytest.raises(RowError, match="differ in length"):
            w.write_batch({"t": ["b"], "n": [1, 2]})
        with pytest.raises(RowError, match=r"write_batch: missing field\(s\) \['n'\]"):
            w.write_batch({"t": ["b"]})
        with pytest.raises(RowError, match=r"unknown field\(s\) \['z'\]"):
            w.write_batch({"t": ["b"], "n": [1], "z": [0]})
        with pytest.raises(RowError, match="dict of columns"):
            w.write_batch([("t", ["b"])])
        assert w.num_rows == 1
        w.write_batch({"t": ["b", "c"], "n": [1, 2]})
        w.write({"t": "d", "n": 3})
    ds = H5Dataset(path)
    assert [(r["t"], r["n"]) for r in ds] == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]


def test_write_batch_is_checked_whole_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", 1)
    path = tmp_path / "whole.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        good = [_row(i) for i in range(5)]
        columns = {k: [r[k] for r in good] for k in good[0]}
        columns["score"][-1] = "bad"  # the last field of the last row
        with pytest.raises(RowTypeError, match=r"field 'score', row 4"):
            w.write_batch(columns)
        assert w.num_rows == 0
        w.write(_row(9))
    assert _labels(path) == [9]


def test_rows_are_copied_when_written(tmp_path):
    path = tmp_path / "reuse.h5"
    schema = [Sequence("s"), Array("a", (2,), "float32"), Image(2, 2, 1, name="im")]
    s, a, im = np.zeros(3, np.int64), np.zeros(2, np.float32), np.zeros((1, 2, 2), np.uint8)
    with H5Writer(path, schema, progress=False) as w:
        for i in range(4):
            s[:], a[:], im[:] = i, i, i
            w.write({"s": s, "a": a, "im": im})
    ds = H5Dataset(path)
    assert [ds[i]["s"].tolist() for i in range(4)] == [[i] * 3 for i in range(4)]
    assert [ds[i]["a"].tolist() for i in range(4)] == [[i] * 2 for i in range(4)]
    assert [int(ds[i]["im"].max()) for i in range(4)] == [0, 1, 2, 3]


def test_write_batch_columns_are_copied(tmp_path):
    path = tmp_path / "reuse.h5"
    column = np.arange(10, dtype=np.int64)
    with H5Writer(path, [Integer("x", compression="zstd")], progress=False) as w:
        w.write_batch({"x": column})
        column[:] = -1
        w.write_batch({"x": column})
    ds = H5Dataset(path)
    assert [ds[i]["x"] for i in range(20)] == list(range(10)) + [-1] * 10


@pytest.mark.parametrize("how", ["write", "write_batch"])
def test_int_too_large_for_a_float_field_is_a_row_error(tmp_path, how):
    path = tmp_path / "overflow.h5"
    with H5Writer(path, [Float("f"), Integer("i")], progress=False) as w:
        w.write({"f": 1.0, "i": 0})
        with pytest.raises(RowError, match="field 'f', row 1"):
            if how == "write":
                w.write({"f": 10**400, "i": 1})
            else:
                w.write_batch({"f": [10**400], "i": [1]})
        w.write({"f": 2.0, "i": 2})
    assert [r["i"] for r in H5Dataset(path)] == [0, 2]


def test_image_channel_last_and_wrong_shape(tmp_path):
    path = tmp_path / "img.h5"
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    with H5Writer(path, [Image(4, 5, name="img"), Bytes("b")], progress=False) as w:
        w.write({"img": hwc, "b": b"x"})
        with pytest.raises(RowError, match=r"field 'img', row 1: expected image shape"):
            w.write({"img": np.zeros((3, 5, 4), np.uint8), "b": b""})
        with pytest.raises(RowTypeError, match=r"field 'b', row 1: expected bytes"):
            w.write({"img": hwc, "b": "text"})
        w.write_batch({"img": [hwc, hwc], "b": [b"", b"y"]})
    ds = H5Dataset(path)
    assert len(ds) == 3
    for i in range(3):
        np.testing.assert_array_equal(ds[i]["img"], hwc.transpose(2, 0, 1))


def test_zstd_blocks_span_flushes(tmp_path, monkeypatch):
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", 3)
    path = tmp_path / "z.h5"
    codec = codecs.zstd(block_bytes=200)
    schema = [String("t", compression=codec), Integer("i", compression=codec)]
    with H5Writer(path, schema, progress=False) as w:
        for i in range(500):
            w.write({"t": f"line {i} " * (i % 4), "i": i})
            if i % 97 == 0:
                w.write_batch({"t": ["batch"], "i": [-i]})
    ds = H5Dataset(path)
    want = []
    for i in range(500):
        want.append((f"line {i} " * (i % 4), i))
        if i % 97 == 0:
            want.append(("batch", -i))
    assert [(r["t"], r["i"]) for r in ds] == want


def test_schema_attribute_records_stored_codecs(tmp_path):
    path = tmp_path / "s.h5"
    schema = [String("t", compression="gzip"), Integer("i"), Bytes("b", compression="lzf")]
    with H5Writer(path, schema, progress=False) as w:
        w.write({"t": "x", "i": 1, "b": b"y"})
    assert H5Dataset(path).schema == h5record.Schema(schema)


def test_progress_bar_reports_rows(tmp_path, capsys):
    with H5Writer(tmp_path / "p.h5", SCHEMA, progress=True, total=10) as w:
        for i in range(10):
            w.write(_row(i))
    err = capsys.readouterr().err
    assert "writing p.h5" in err and "100%" in err and "rows/s" in err and "MB/s" in err


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_schema_of_a_file_follows_the_next_writers_compression(tmp_path, compression):
    rows = {"t": ["the same words again and again"] * 2000, "n": list(range(2000))}
    raw_path, packed_path = tmp_path / "raw.h5", tmp_path / "packed.h5"
    small = {"progress": False, "chunk_bytes": 4096}  # storage sizes follow the data
    with H5Writer(raw_path, [String("t"), Integer("n")], **small) as w:
        w.write_batch(rows)
    with H5Writer(packed_path, H5Dataset(raw_path).schema, compression=compression, **small) as w:
        w.write_batch(rows)
    packed = H5Dataset(packed_path)
    assert packed.schema["t"].codec["id"] == compression
    with h5py.File(raw_path) as raw, h5py.File(packed_path) as f:
        stored = f["fields/t/values"].id.get_storage_size()
        assert stored < raw["fields/t/values"].id.get_storage_size() / 4
    assert packed[1999] == {"t": rows["t"][0], "n": 1999}
    # A field stored raw by choice stays raw.
    with H5Writer(raw_path, [String("t", compression="none"), Integer("n")], overwrite=True) as w:
        w.write_batch(rows)
    again = tmp_path / "again.h5"
    with H5Writer(again, H5Dataset(raw_path).schema, compression=compression) as w:
        w.write_batch(rows)
    assert H5Dataset(again).schema["t"].codec == {"id": "none", "requested": "none"}


def test_sequence_rows_rejected_by_a_later_field_and_a_reused_array(tmp_path, monkeypatch):
    # Sequence rows are copied into one buffer as they arrive: a row that a
    # later field rejects must not shift the rows after it, and a caller
    # refilling one array for every row must not change the rows written.
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", 50)
    path = tmp_path / "f.h5"
    schema = [Sequence("tokens", dtype="int32"), Integer("label", dtype="int8")]
    buf = np.zeros(6, np.int32)
    expected = []
    with H5Writer(path, schema, progress=False, chunk_bytes=64) as w:
        for i in range(400):
            buf[:] = i
            tokens = buf[: i % 6]
            if i % 7 == 3:
                with pytest.raises(RowError, match="label"):
                    w.write({"tokens": tokens, "label": 1000})
                if i % 49 != 3:
                    continue  # otherwise the rejected row is the last before a flush
                w.flush()
                continue
            w.write({"tokens": tokens, "label": i % 100})
            expected.append((np.full(i % 6, i, np.int32), i % 100))
            if i == 200:
                w.commit()
    ds = H5Dataset(path)
    assert len(ds) == len(expected)
    for k, (tokens, label) in enumerate(expected):
        row = ds[k]
        np.testing.assert_array_equal(row["tokens"], tokens)
        assert row["label"] == label
