"""H5Writer: streaming, atomic files, clear errors that keep earlier rows."""

from __future__ import annotations

import os

import numpy as np
import pytest

import h5record.writer
from h5record import (
    Bytes,
    Float,
    H5Dataset,
    H5RecordError,
    H5Writer,
    Image,
    Integer,
    RowError,
    RowTypeError,
    Sequence,
    String,
)

SCHEMA = [String("text"), Integer("label"), Sequence("tokens", dtype="int32"), Float("score")]


def _row(i: int) -> dict:
    return {"text": f"t{i}", "label": i, "tokens": np.arange(i % 5, dtype=np.int32), "score": i / 2}


def test_many_flushes_one_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(h5record.writer, "FLUSH_ROWS", 7)
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 100)
    path = tmp_path / "f.h5"
    with H5Writer(path, SCHEMA, progress=False, chunk_bytes=32) as w:
        for i in range(100):
            w.write(_row(i))
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


def test_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "atomic.h5"
    w = H5Writer(path, SCHEMA, progress=False)
    w.write(_row(0))
    assert not path.exists()
    w.close()
    assert path.exists() and len(H5Dataset(path)) == 1
    assert os.listdir(tmp_path) == ["atomic.h5"]


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "gone.h5"
    with pytest.raises(KeyError), H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(0))
        raise KeyError("user code failed")
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "x.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        w.write(_row(0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        H5Writer(path, SCHEMA, progress=False)
    with H5Writer(path, SCHEMA, overwrite=True, progress=False) as w:
        w.write(_row(1))
    assert H5Dataset(path)[0]["label"] == 1


def test_zero_rows(tmp_path):
    path = tmp_path / "empty.h5"
    with H5Writer(path, SCHEMA, progress=False):
        pass
    ds = H5Dataset(path)
    assert len(ds) == 0
    with pytest.raises(IndexError):
        ds[0]


BAD_ROWS = [
    ({"text": 5}, RowTypeError, r"field 'text', row 3: expected str, got int 5"),
    ({"text": None}, RowTypeError, r"field 'text', row 3: expected str, got NoneType"),
    ({"text": "\ud800"}, RowError, r"field 'text', row 3: string cannot be encoded as UTF-8"),
    ({"label": "3"}, RowTypeError, r"field 'label', row 3: expected an integer, got str"),
    ({"label": 1.5}, RowTypeError, r"field 'label', row 3: expected an integer"),
    ({"label": 2**63}, RowError, r"field 'label', row 3: value 9223372036854775808 is out of"),
    ({"tokens": [1.5]}, RowTypeError, r"field 'tokens', row 3: .*floating point"),
    ({"tokens": [2**40]}, RowError, r"field 'tokens', row 3: value 1099511627776 is out of range"),
    ({"tokens": [[1, 2]]}, RowError, r"field 'tokens', row 3: expected a 1-D sequence"),
    ({"tokens": "abc"}, RowTypeError, r"field 'tokens', row 3"),
    ({"score": None}, RowTypeError, r"field 'score', row 3: expected a number, got NoneType"),
    ({"score": "x"}, RowTypeError, r"field 'score', row 3"),
]


@pytest.mark.parametrize("change,error,message", BAD_ROWS, ids=[m for *_, m in BAD_ROWS])
def test_bad_value_names_field_row_and_keeps_earlier_rows(tmp_path, change, error, message):
    path = tmp_path / "bad.h5"
    with H5Writer(path, SCHEMA, progress=False) as w:
        for i in range(3):
            w.write(_row(i))
        with pytest.raises(error, match=message) as info:
            w.write({**_row(3), **change})
        assert isinstance(info.value, H5RecordError) and isinstance(info.value, ValueError)
        w.write(_row(4))  # the writer goes on
    ds = H5Dataset(path)
    assert [ds[i]["label"] for i in range(len(ds))] == [0, 1, 2, 4]


@pytest.mark.parametrize(
    "row,message",
    [
        ({"text": "a", "label": 1, "tokens": []}, r"row 0: missing field\(s\) \['score'\]"),
        ({**_row(0), "extra": 1}, r"row 0: unknown field\(s\) \['extra'\]"),
        ([1, 2, 3, 4], r"row 0: expected a dict"),
    ],
)
def test_missing_and_extra_fields(tmp_path, row, message):
    with H5Writer(tmp_path / "k.h5", SCHEMA, progress=False) as w:
        with pytest.raises(RowError, match=message):
            w.write(row)


def test_write_batch_errors_name_the_row(tmp_path):
    with H5Writer(tmp_path / "b.h5", [String("t"), Integer("n")], progress=False) as w:
        w.write({"t": "a", "n": 0})
        with pytest.raises(RowTypeError, match=r"field 't', row 3: expected str"):
            w.write_batch({"t": ["b", "c", 7], "n": [1, 2, 3]})
        with pytest.raises(RowError, match="differ in length"):
            w.write_batch({"t": ["b"], "n": [1, 2]})
        with pytest.raises(RowError, match="missing"):
            w.write_batch({"t": ["b"]})
        w.write_batch({"t": ["b"], "n": [1]})
    assert len(H5Dataset(tmp_path / "b.h5")) == 2


def test_image_channel_last_and_wrong_shape(tmp_path):
    path = tmp_path / "img.h5"
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    with H5Writer(path, [Image(4, 5, name="img"), Bytes("b")], progress=False) as w:
        w.write({"img": hwc, "b": b"x"})
        with pytest.raises(RowError, match=r"field 'img', row 1: expected image shape"):
            w.write({"img": np.zeros((3, 5, 4), np.uint8), "b": b""})
        with pytest.raises(RowTypeError, match=r"field 'b', row 1: expected bytes"):
            w.write({"img": hwc, "b": "text"})
    np.testing.assert_array_equal(H5Dataset(path)[0]["img"], hwc.transpose(2, 0, 1))


def test_closed_writer_refuses(tmp_path):
    w = H5Writer(tmp_path / "c.h5", SCHEMA, progress=False)
    w.close()
    with pytest.raises(H5RecordError, match="closed"):
        w.write(_row(0))


def test_progress_bar_reports_rows(tmp_path, capsys):
    with H5Writer(tmp_path / "p.h5", SCHEMA, progress=True, total=10) as w:
        for i in range(10):
            w.write(_row(i))
    err = capsys.readouterr().err
    assert "writing p.h5" in err and "100%" in err and "rows/s" in err and "MB/s" in err
