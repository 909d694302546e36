"""H5Dataset: round trips, indexing, batches, pickling, the 1.0.4 form, damaged files."""

from __future__ import annotations

import json
import os
import pickle

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5record import (
    Array,
    Batch,
    Bytes,
    Float,
    FormatError,
    H5Dataset,
    H5RecordError,
    H5Writer,
    Integer,
    Sequence,
    String,
)
from h5record.checksums import metadata_hash
from tests.strategies import (
    assert_row_equal,
    assert_value_equal,
    expected_row,
    indices,
    schema_and_rows,
)


def _write(path, schema, rows, **kw):
    with H5Writer(path, schema, overwrite=True, progress=False, **kw) as w:
        for row in rows:
            w.write(row)
    return H5Dataset(path)


def _check_batch(batch, want_rows, idx) -> None:
    assert isinstance(batch, Batch)
    assert len(batch) == len(idx)
    np.testing.assert_array_equal(batch.indices, [i % len(want_rows) for i in idx])
    got = batch.to_list()
    for j, i in enumerate(idx):
        assert_row_equal(got[j], want_rows[i])
        assert_row_equal(batch[j], want_rows[i])
    if idx:
        assert_row_equal(batch[-1], want_rows[idx[-1]])


def _check_columns(ds, batch, want_rows, idx) -> None:
    """Batch.column gives each field whole, in the documented form."""
    for name in ds.names:
        col = batch.column(name)
        wants = [want_rows[i][name] for i in idx]
        valid = batch.valid(name)
        assert valid.dtype == np.bool_ and valid.tolist() == [w is not None for w in wants]
        if ds.kind(name) in (0, 1):  # String, Bytes: lists, None at nulls
            assert col == wants
        elif isinstance(col, tuple):  # variable numeric: (flat, offsets), nulls empty
            flat, offsets = col
            assert offsets[0] == 0 and len(offsets) == len(idx) + 1
            for j, want in enumerate(wants):
                got = flat[offsets[j] : offsets[j + 1]]
                assert len(got) == 0 if want is None else assert_value_equal(got, want) is None
        else:  # fixed: an array, zeros at nulls
            assert col.shape[0] == len(idx)
            for j, want in enumerate(wants):
                got = col[j].item() if col.ndim == 1 else col[j]
                if want is None:
                    assert not np.any(col[j])
                else:
                    assert_value_equal(got, want)
    assert list(batch.columns) == ds.names


def _round_trip(path, fields, rows, idx, **write_kw) -> None:
    ds = _write(path, fields, rows, **write_kw)
    want = [expected_row(fields, r) for r in rows]
    n = len(rows)
    assert len(ds) == n and ds.names == [f.name for f in fields]
    for i in range(n):
        assert_row_equal(ds[i], want[i])
        assert_row_equal(ds[i - n], want[i])
        assert_row_equal(ds[np.int64(i)], want[i])
    for bad in (n, -n - 1, n + 1000):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds[[*idx, n]]
    _check_batch(ds[idx], want, idx)
    _check_batch(ds[np.array(idx, dtype=np.int64)], want, idx)
    _check_batch(ds.__getitems__(idx), want, idx)
    _check_columns(ds, ds[idx], want, idx)
    _check_batch(ds[1:-1], want, list(range(n))[1:-1])
    _check_batch(ds[::-2], want, list(range(n))[::-2])
    # The in-memory modes give the same rows as the memory map.
    for mode in (True, "process"):
        with H5Dataset(path, in_memory=mode) as mem:
            assert len(mem) == n
            for i in range(n):
                assert_row_equal(mem[i], want[i])
            _check_batch(mem[idx], want, idx)
            _check_columns(mem, mem[idx], want, idx)
    ds.close()


@settings(max_examples=50)
@given(data=schema_and_rows(), draw=st.data())
def test_round_trip_every_field_type(tmp_path, data, draw):
    fields, rows = data
    idx = draw.draw(indices(len(rows)))
    _round_trip(tmp_path / "rt.h5", fields, rows, idx, chunk_bytes=64)


@settings(max_examples=40)
@given(data=schema_and_rows(max_fields=3, max_rows=15, with_codecs=True), draw=st.data())
def test_round_trip_every_codec(tmp_path, data, draw):
    fields, rows = data
    idx = draw.draw(indices(len(rows)))
    _round_trip(tmp_path / "codec.h5", fields, rows, idx)


@pytest.fixture
def pairs(tmp_path):
    rows = [{"a": f"row {i}", "b": i, "s": np.arange(i % 4, dtype=np.int64)} for i in range(50)]
    schema = [String("a"), Integer("b"), Sequence("s")]
    return _write(tmp_path / "pairs.h5", schema, rows), rows


def test_indexing_forms(pairs):
    ds, rows = pairs
    assert ds[-1]["a"] == "row 49"
    assert ds[np.int64(3)]["b"] == 3
    assert ds[np.uint8(4)]["b"] == 4
    assert [r["b"] for r in ds[10:15]] == [10, 11, 12, 13, 14]
    assert [r["b"] for r in ds[::-20]] == [49, 29, 9]
    assert [r["b"] for r in ds[45:100]] == [45, 46, 47, 48, 49]
    assert [r["b"] for r in ds[np.array([5, -1, 5])]] == [5, 49, 5]
    assert [r["b"] for r in ds[range(3, 6)]] == [3, 4, 5]
    assert [r["b"] for r in ds[(7, 8)]] == [7, 8]
    assert [r["b"] for r in ds.__getitems__([7, 8])] == [7, 8]
    assert len(ds[0:0]) == 0 and len(ds[[]]) == 0
    for bad in (50, -51):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds[[1, 50]]
    with pytest.raises(IndexError):
        ds[np.array([-51])]
    with pytest.raises(TypeError):
        ds["a"]
    with pytest.raises(TypeError):
        ds[1.0]
    assert [r["b"] for r in ds] == list(range(50))


@pytest.mark.parametrize(
    "index",
    [np.array([0.7, 1.9]), [1.5], np.array([True, False, True]), ["1"]],
    ids=["float-array", "float-list", "bool-mask", "str-list"],
)
def test_non_integer_index_arrays_are_refused(pairs, index):
    ds, _ = pairs
    with pytest.raises((TypeError, IndexError)):
        ds[index]


def test_batch_columns(pairs):
    ds, _ = pairs
    batch = ds[[3, 1, 2]]
    assert batch.column("a") == ["row 3", "row 1", "row 2"]
    np.testing.assert_array_equal(batch.column("b"), [3, 1, 2])
    flat, offsets = batch.column("s")
    np.testing.assert_array_equal(offsets, [0, 3, 4, 6])
    np.testing.assert_array_equal(flat, [0, 1, 2, 0, 0, 1])
    assert batch == [ds[3], ds[1], ds[2]]
    assert batch != [ds[3], ds[1], ds[1]]
    assert batch != [ds[3], ds[1]]
    sub = batch[1:]
    assert isinstance(sub, Batch) and sub == [ds[1], ds[2]]
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(IndexError):
        batch[-4]


def test_transform_applies_to_rows_and_batches(tmp_path):
    ds = _write(tmp_path / "t.h5", [Integer("x")], [{"x": i} for i in range(5)])
    ds2 = H5Dataset(ds.path, transform=lambda row: row["x"] * 10)
    assert ds2[2] == 20
    assert ds2[np.int64(-1)] == 40
    assert ds2[[1, 4]] == [10, 40]
    assert ds2[1:3] == [10, 20]
    assert list(ds2) == [0, 10, 20, 30, 40]
    assert H5Dataset(ds.path, in_memory="process", transform=lambda r: -r["x"])[3] == -3


def test_pickles_as_path_and_options(pairs):
    ds, _ = pairs
    ds[0]  # opened: the memory map must not be pickled
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert clone[[7]] == [ds[7]]
    assert clone[7]["a"] == ds[7]["a"] and len(clone) == len(ds)


def test_pickled_in_memory_copy_reloads(pairs):
    ds, _ = pairs
    mem = H5Dataset(ds.path, in_memory="process")
    clone = pickle.loads(pickle.dumps(mem))
    assert clone.in_memory == "process"
    assert clone[list(range(50))] == ds[list(range(50))]


def test_replaced_file_is_detected(tmp_path):
    ds = _write(tmp_path / "r.h5", [Integer("x")], [{"x": 1}])
    clone = pickle.loads(pickle.dumps(ds))
    _write(tmp_path / "r.h5", [Integer("x")], [{"x": 1}, {"x": 2}])
    with pytest.raises(FormatError, match="changed since it was opened"):
        clone[0]


def test_bad_options(pairs):
    ds, _ = pairs
    with pytest.raises(ValueError, match="in_memory"):
        H5Dataset(ds.path, in_memory="disk")
    with pytest.raises(FileNotFoundError):
        H5Dataset(os.path.join(os.path.dirname(ds.path), "absent.h5"))


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
    before = os.stat("question_pair.h5")
    with pytest.warns(UserWarning, match="append_mode=True"):
        exec(compile(README_1_0_4, "readme", "exec"), {})  # second run opens the file
    assert capsys.readouterr().out == expected
    after = os.stat("question_pair.h5")
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert sorted(os.listdir(tmp_path)) == ["question_pair.h5"]


def test_1_0_4_form_does_not_consume_the_iterator_when_the_file_exists(tmp_path):
    path = str(tmp_path / "once.h5")
    schema = (Integer(name="x"),)
    H5Dataset(schema, path, iter([{"x": 1}, {"x": 2}]))

    def must_not_run():
        raise AssertionError("the existing file must be opened, not rewritten")
        yield  # pragma: no cover

    with pytest.warns(UserWarning, match="data_iter is not read"):
        ds = H5Dataset(schema, path, must_not_run())
    assert [r["x"] for r in ds] == [1, 2]


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
    with h5py.File(path) as f:
        assert f["fields/x/values"].compression == "gzip"
    with pytest.raises(TypeError):
        H5Dataset(path, "unexpected positional")
    with pytest.raises(TypeError):
        H5Dataset(schema, path, bad_keyword=1)
    with pytest.raises(FileNotFoundError):
        H5Dataset(schema, str(tmp_path / "absent.h5"))


def test_1_0_4_form_with_a_bad_row_leaves_no_file(tmp_path):
    path = str(tmp_path / "bad.h5")
    rows = [{"x": 1}, {"x": "two"}]
    with pytest.raises(H5RecordError, match="field 'x', row 1"):
        H5Dataset((Integer(name="x"),), path, iter(rows))
    assert os.listdir(tmp_path) == []


# -- the format's rules for readers (docs/FORMAT.md, sections 2, 4 and 8) ---------------


@pytest.fixture
def mixed_file(tmp_path):
    path = tmp_path / "m.h5"
    rng = np.random.default_rng(7)
    rows = [
        {
            "i": i,
            "t": "é" * (i % 5),
            "s": rng.integers(-9, 9, i % 4).astype(np.int16),
            "a": rng.random(2).astype(np.float32),
            "b": bytes([i % 256]) * (i % 3),
        }
        for i in range(120)
    ]
    schema = [Integer("i"), String("t"), Sequence("s", "int16"), Array("a", (2,)), Bytes("b")]
    _write(path, schema, rows, chunk_bytes=64)
    return path, rows


def _copy_with_layout(src, dst, layout) -> None:
    """Copy a file with h5py, storing every dataset contiguous or with other chunks."""
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            data = obj[()]
            if layout == "contiguous" or name.endswith("_chunks"):
                g.create_dataset(name, data=data)
            else:
                chunks = (layout, *data.shape[1:])
                g.create_dataset(name, data=data, chunks=chunks, maxshape=(None, *data.shape[1:]))

        f.visititems(visit)


@pytest.mark.parametrize("layout", ["contiguous", 1, 5, 4096])
def test_stale_chunk_tables_are_ignored(mixed_file, tmp_path, layout):
    # As after h5repack: the datasets are laid out anew, the old tables remain.
    src, rows = mixed_file
    dst = tmp_path / "re.h5"
    _copy_with_layout(src, dst, layout)
    a, b = H5Dataset(src), H5Dataset(dst)
    everything = list(range(len(rows)))
    assert b[everything] == a[everything]
    assert [b[i] for i in everything] == a[everything]
    with H5Dataset(dst, in_memory=True) as mem:
        assert mem[everything] == a[everything]


def test_rows_past_num_rows_are_not_read(mixed_file):
    # An interrupted append: datasets are longer than the committed row count.
    path, rows = mixed_file
    with h5py.File(path, "r+") as f:
        for name in ("i", "t", "s", "a", "b"):
            for key in ("values", "offsets"):
                if key in f[f"fields/{name}"]:
                    d = f[f"fields/{name}/{key}"]
                    end = d.shape[0]
                    d.resize((end + 50, *d.shape[1:]))
                    d[end:] = 7 if key == "values" else 10**9
    for mode in (False, True, "process"):
        with H5Dataset(path, in_memory=mode) as ds:
            assert len(ds) == len(rows)
            assert ds[-1]["i"] == len(rows) - 1
            assert ds[list(range(len(rows)))] == [ds[i] for i in range(len(rows))]
            with pytest.raises(IndexError):
                ds[len(rows)]


def test_unknown_datasets_and_attributes_are_ignored(mixed_file):
    path, rows = mixed_file
    before = H5Dataset(path)[list(range(len(rows)))].to_list()
    with h5py.File(path, "r+") as f:
        f.attrs["added_by_a_later_version"] = "x"
        f["fields/t/values_crc32"] = np.zeros(3, np.uint32)
        f["fields/t"].attrs["note"] = 1
        f.create_group("extra")["data"] = np.arange(4)
        schema = json.loads(f.attrs["schema"])
        schema["fields"][0]["future_key"] = {"anything": [1, 2]}
        schema["future_top_level"] = True
        f.attrs["schema"] = json.dumps(schema)
        # As a later version writes it: the metadata hash follows the schema.
        f.attrs["metadata_xxh3"] = metadata_hash(len(rows), f.attrs["schema"], 1)
    assert H5Dataset(path)[list(range(len(rows)))] == before


# -- damaged files: an error, never a crash -------------------------------------------


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "d.h5"
    rows = [{"t": "x" * (i % 30), "v": float(i)} for i in range(2000)]
    _write(path, [String("t"), Float("v")], rows, chunk_bytes=512)
    return path


def _read_everything(path, in_memory=False) -> None:
    with H5Dataset(path, in_memory=in_memory) as ds:
        for i in range(len(ds)):
            ds[i]
        ds[list(range(len(ds)))].to_list()


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.5, 0.999])
@pytest.mark.parametrize("in_memory", [False, True])
def test_truncated_file(text_file, keep, in_memory):
    size = os.path.getsize(text_file)
    with open(text_file, "r+b") as fh:
        fh.truncate(int(size * keep))
    with pytest.raises(FormatError, match=str(text_file)):
        _read_everything(text_file, in_memory)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.h5"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        H5Dataset(path)
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="not a readable HDF5 file"):
        H5Dataset(path)


def test_plain_hdf5_file_is_not_h5record(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(FormatError, match="not an h5record file"):
        H5Dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["h5record_format"] = "something else"
    with pytest.raises(FormatError, match="not an h5record file"):
        H5Dataset(path)


def test_newer_version_is_refused(text_file):
    with h5py.File(text_file, "r+") as f:
        f.attrs["h5record_version"] = np.int64(3)
    with pytest.raises(FormatError, match=r"version 3\b.*up to 2\b"):
        H5Dataset(text_file)


@pytest.mark.parametrize(
    "damage",
    ["missing-values", "wrong-dtype", "too-few-offsets", "too-many-rows"],
)
def test_damaged_tree_is_a_format_error(text_file, damage):
    with h5py.File(text_file, "r+") as f:
        if damage == "missing-values":
            del f["fields/v/values"]
        elif damage == "wrong-dtype":
            del f["fields/v/values"]
            f["fields/v/values"] = np.zeros(2000, np.int32)
        elif damage == "too-few-offsets":
            f["fields/t/offsets"].resize((1000,))
        else:
            f.attrs["num_rows"] = np.int64(5000)
            del f.attrs["metadata_xxh3"]  # else the metadata hash names the damage first
    with pytest.raises(FormatError, match=f"{text_file}: field '[tv]'"):
        H5Dataset(text_file)


@pytest.mark.parametrize(
    "key,value",
    [
        ("schema", "{not json"),
        ("num_rows", np.int64(-3)),
        ("num_rows", "many"),
        ("h5record_version", "one"),
    ],
)
def test_damaged_root_attributes_are_format_errors(text_file, key, value):
    with h5py.File(text_file, "r+") as f:
        f.attrs[key] = value
    with pytest.raises(FormatError, match=str(text_file)):
        ds = H5Dataset(text_file)
        len(ds)


@pytest.mark.parametrize("in_memory", [False, True, "process"])
@pytest.mark.parametrize(
    "row,value", [(100, 10**12), (100, -5), (101, 0)], ids=["huge", "negative", "decreasing"]
)
def test_corrupted_offsets(text_file, row, value, in_memory):
    with h5py.File(text_file, "r+") as f:
        f["fields/t/offsets"][row] = value
    try:
        ds = H5Dataset(text_file, in_memory=in_memory)
    except FormatError as exc:  # a whole-field load may find it at once
        assert "field 't'" in str(exc)
        return
    with pytest.raises(FormatError, match=r"field 't', row (99|100)"):
        for i in (99, 100):
            ds[i]
    with pytest.raises(FormatError, match="field 't'"):
        ds[list(range(90, 110))].column("t")
    assert ds[5]["t"] == "x" * 5  # the rest still reads
    ds.close()


def test_chunk_table_pointing_outside_the_file(text_file):
    with h5py.File(text_file, "r+") as f:
        table = f["fields/t/values_chunks"]
        table[0] = 10**12
        table[-1] = 10**12
    # HDF5's own index disagrees at the ends: the table is ignored.
    ds = H5Dataset(text_file)
    assert [ds[i]["t"] for i in range(0, 2000, 97)] == ["x" * (i % 30) for i in range(0, 2000, 97)]


def test_absent_chunk_in_a_batch_is_an_error(tmp_path):
    import h5record

    path = tmp_path / "absent.h5"
    rows = [{"s": np.arange(i % 5, dtype=np.int32) + i} for i in range(200)]
    _write(path, [Sequence("s", "int32")], rows, chunk_bytes=64)
    with h5py.File(path, "r+") as f:
        f["fields/s/values_chunks"][3] = -1  # an inner entry: the ends still agree with HDF5
    ds = H5Dataset(path)
    everything = list(range(200))
    with pytest.raises(FormatError, match="field 's'"):
        [ds[i] for i in everything]  # row by row: already an error
    with pytest.raises(FormatError, match="field 's'"):
        ds[everything].column("s")
    with pytest.raises(FormatError, match="field 's'"):
        h5record.collate(ds[everything])


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


def _filtered_file(tmp_path, compression):
    path = tmp_path / f"{compression}.h5"
    rows = [{"t": f"text number {i} " * 3, "a": np.full(4, i, np.float32)} for i in range(3000)]
    _write(path, [String("t"), Array("a", (4,), "float32")], rows, compression=compression)
    with h5py.File(path) as f:
        info = f["fields/t/values"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 10)
        fh.write(b"\xff" * 50)
    return path


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_damaged_filtered_chunk_is_an_error(tmp_path, compression):
    path = _filtered_file(tmp_path, compression)
    ds = H5Dataset(path)
    np.testing.assert_array_equal(ds[2999]["a"], np.full(4, 2999))  # undamaged field
    with pytest.raises((FormatError, OSError)):
        ds[0]


@pytest.mark.parametrize("in_memory", [False, True, "process"])
@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_damaged_filtered_chunk_is_a_format_error(tmp_path, compression, in_memory):
    path = _filtered_file(tmp_path, compression)
    with pytest.raises(FormatError, match="field 't'"):
        H5Dataset(path, in_memory=in_memory)[0]


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_filtered_batches_read_in_runs_equal_single_rows(tmp_path, compression):
    path = tmp_path / f"{compression}.h5"
    rows = [{"t": "é" * (i % 7), "s": np.arange(i % 5, dtype=np.int16), "x": i} for i in range(500)]
    _write(path, [String("t"), Sequence("s", "int16"), Integer("x")], rows, compression=compression)
    ds = H5Dataset(path)
    # Clustered, far apart, repeated, unordered, and a whole sequential run.
    for idx in ([5, 3, 4, 4, 400, 37, 6, 499, 0], list(range(100, 356)), [7]):
        batch = ds[idx]
        assert batch.column("t") == [rows[i]["t"] for i in idx]
        np.testing.assert_array_equal(batch.column("x"), [rows[i]["x"] for i in idx])
        flat, offsets = batch.column("s")
        np.testing.assert_array_equal(flat, np.concatenate([rows[i]["s"] for i in idx]))
        assert offsets.tolist() == [0, *np.cumsum([len(rows[i]["s"]) for i in idx]).tolist()]
        for row, i in zip(batch, idx, strict=True):
            single = ds[i]
            assert row["t"] == single["t"] and row["x"] == single["x"]
            np.testing.assert_array_equal(row["s"], single["s"])
