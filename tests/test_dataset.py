"""H5Dataset: round trips, indexing, batches, pickling, the 1.0.4 form, damaged files."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from h5record import (
    Batch,
    Float,
    FormatError,
    H5Dataset,
    H5Writer,
    Integer,
    Sequence,
    String,
)
from tests.strategies import assert_value_equal, schema_and_rows

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _write(path, schema, rows, **kw):
    with H5Writer(path, schema, overwrite=True, progress=False, **kw) as w:
        for row in rows:
            w.write(row)
    return H5Dataset(path)


@SETTINGS
@given(schema_and_rows())
def test_round_trip_every_field_type(tmp_path, data):
    fields, rows = data
    ds = _write(tmp_path / "rt.h5", fields, rows, chunk_bytes=64)
    assert len(ds) == len(rows)
    for i, row in enumerate(rows):
        got = ds[i]
        assert list(got) == [f.name for f in fields]
        for name, want in row.items():
            assert_value_equal(got[name], want)
    if rows:
        idx = list(range(len(rows)))[::-1] + [0]
        batch = ds[idx]
        assert isinstance(batch, Batch)
        for j, i in enumerate(idx):
            for name, want in rows[i].items():
                assert_value_equal(batch[j][name], want)
        mem = H5Dataset(tmp_path / "rt.h5", in_memory="process")
        for name in ds.names:
            for j, i in enumerate(idx):
                assert_value_equal(mem[idx][j][name], rows[i][name])


@pytest.fixture
def pairs(tmp_path):
    rows = [{"a": f"row {i}", "b": i, "s": np.arange(i % 4, dtype=np.int64)} for i in range(50)]
    schema = [String("a"), Integer("b"), Sequence("s")]
    return _write(tmp_path / "pairs.h5", schema, rows), rows


def test_indexing_forms(pairs):
    ds, rows = pairs
    assert ds[-1]["a"] == "row 49"
    assert ds[np.int64(3)]["b"] == 3
    assert [r["b"] for r in ds[10:15]] == [10, 11, 12, 13, 14]
    assert [r["b"] for r in ds[::-20]] == [49, 29, 9]
    assert [r["b"] for r in ds[np.array([5, -1, 5])]] == [5, 49, 5]
    assert [r["b"] for r in ds.__getitems__([7, 8])] == [7, 8]
    assert len(ds[0:0]) == 0
    for bad in (50, -51):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds[[1, 50]]
    with pytest.raises(TypeError):
        ds["a"]
    assert [r["b"] for r in ds] == list(range(50))


def test_batch_columns(pairs):
    ds, _ = pairs
    batch = ds[[3, 1, 2]]
    assert batch.column("a") == ["row 3", "row 1", "row 2"]
    np.testing.assert_array_equal(batch.column("b"), [3, 1, 2])
    flat, offsets = batch.column("s")
    np.testing.assert_array_equal(offsets, [0, 3, 4, 6])
    np.testing.assert_array_equal(flat, [0, 1, 2, 0, 0, 1])
    assert batch == [ds[3], ds[1], ds[2]]


def test_transform_applies_to_rows_and_batches(tmp_path):
    ds = _write(tmp_path / "t.h5", [Integer("x")], [{"x": i} for i in range(5)])
    ds2 = H5Dataset(ds.path, transform=lambda row: row["x"] * 10)
    assert ds2[2] == 20
    assert ds2[[1, 4]] == [10, 40]


def test_pickles_as_path_and_options(pairs):
    ds, _ = pairs
    ds[0]  # opened: the memory map must not be pickled
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert clone[[7]] == [ds[7]]


def test_replaced_file_is_detected(tmp_path):
    ds = _write(tmp_path / "r.h5", [Integer("x")], [{"x": 1}])
    clone = pickle.loads(pickle.dumps(ds))
    _write(tmp_path / "r.h5", [Integer("x")], [{"x": 1}, {"x": 2}])
    with pytest.raises(FormatError, match="changed since it was opened"):
        clone[0]


README_1_0_4 = """
from h5record import H5Dataset, Float, String
schema = (String(name='sentence1'), String(name='sentence2'), Float(name='label'))
data = [['Sent 1.', 'Sent 2', 0.1], ['Sent 3', 'Sent 4', 0.2]]
def pair_iter():
    for row in data:
        yield {'sentence1': row[0], 'sentence2': row[1], 'label': row[2]}
dataset = H5Dataset(schema, './question_pair.h5', pair_iter())
for idx in range(len(dataset)):
    print(dataset[idx])
"""


def test_h5record_1_0_4_readme_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expected = (
        "{'sentence1': 'Sent 1.', 'sentence2': 'Sent 2', 'label': 0.1}\n"
        "{'sentence1': 'Sent 3', 'sentence2': 'Sent 4', 'label': 0.2}\n"
    )
    exec(compile(README_1_0_4, "readme", "exec"), {})
    assert capsys.readouterr().out == expected
    mtime = os.stat("question_pair.h5").st_mtime_ns
    exec(compile(README_1_0_4, "readme", "exec"), {})  # second run opens the file
    assert capsys.readouterr().out == expected
    assert os.stat("question_pair.h5").st_mtime_ns == mtime


def test_1_0_4_keyword_form(tmp_path):
    path = str(tmp_path / "k.h5")
    schema = {"x": Integer(name="x")}
    ds = H5Dataset(
        schema,
        path,
        iter([{"x": 1}, {"x": 2}]),
        data_length=2,
        chunk_size=300,
        compression="gzip",
        transform=None,
        to_memory=True,
        multiprocess=True,
    )
    assert ds.in_memory is True and [r["x"] for r in ds] == [1, 2]
    ds.close()
    with pytest.raises(TypeError):
        H5Dataset(path, "unexpected positional")
    with pytest.raises(FileNotFoundError):
        H5Dataset(schema, str(tmp_path / "absent.h5"))


# -- damaged files: an error, never a crash -------------------------------------------


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "d.h5"
    rows = [{"t": "x" * (i % 30), "v": float(i)} for i in range(2000)]
    _write(path, [String("t"), Float("v")], rows, chunk_bytes=512)
    return path


def test_truncated_file(text_file):
    size = os.path.getsize(text_file)
    with open(text_file, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(FormatError):
        ds = H5Dataset(text_file)
        for i in range(len(ds)):
            ds[i]


def test_garbage_file(tmp_path):
    path = tmp_path / "g.h5"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        H5Dataset(path)


def test_plain_hdf5_file_is_not_h5record(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(FormatError, match="not an h5record file"):
        H5Dataset(path)


def test_newer_version_is_refused(text_file):
    with h5py.File(text_file, "r+") as f:
        f.attrs["h5record_version"] = np.int64(99)
    with pytest.raises(FormatError, match="version 99.*up to 1"):
        H5Dataset(text_file)


@pytest.mark.parametrize("row,value", [(100, 10**12), (100, -5), (101, 0)])
def test_corrupted_offsets(text_file, row, value):
    with h5py.File(text_file, "r+") as f:
        f["fields/t/offsets"][row] = value
    ds = H5Dataset(text_file)
    with pytest.raises(FormatError, match=r"field 't', row (99|100)"):
        for i in (99, 100):
            ds[i]
    with pytest.raises(FormatError, match="field 't'"):
        ds[list(range(90, 110))].column("t")
    assert ds[5]["t"] == "x" * 5  # the rest still reads


def test_chunk_table_pointing_outside_the_file(text_file):
    with h5py.File(text_file, "r+") as f:
        table = f["fields/t/values_chunks"]
        table[table.shape[0] // 2] = 10**12
    # The table is only an accelerator: HDF5's own index disagrees with it at
    # the ends, or the address is past the end of the file; either way no crash.
    try:
        ds = H5Dataset(text_file)
        for i in range(len(ds)):
            ds[i]
    except FormatError:
        pass


def test_invalid_utf8_is_reported(text_file):
    with h5py.File(text_file, "r+") as f:
        o = f["fields/t/offsets"][5:7]
        values = f["fields/t/values"]
        values[o[0]] = 0xFF
    ds = H5Dataset(text_file)
    with pytest.raises(FormatError, match=r"field 't', row 5.*UTF-8"):
        ds[5]
    with pytest.raises(FormatError, match=r"field 't', row 5"):
        ds[[4, 5, 6]].column("t")
