"""Sharded datasets: a folder, a list or a glob read as one dataset, equal to one file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import h5record
from h5record import FormatError, H5Dataset, H5Writer, Integer, SchemaError, Sequence, String
from h5record.shards import MANIFEST_NAME, ShardedDataset, shard_entry, write_manifest

from . import strategies as sts

SCHEMA = [
    Integer("id"),
    String("text"),
    Sequence("tok", dtype="int32"),
    h5record.Array("pos", (2,), "float32"),
    h5record.Bytes("blob"),
]
BOUNDS = [0, 37, 37, 120, 121, 300]  # one empty shard, one of a single row
CODECS = [None, "zstd", None, "lzf", "gzip"]


def make_row(i: int) -> dict:
    return {
        "id": i,
        "text": f"row é{i}" * (i % 4),
        "tok": np.arange(i % 7, dtype=np.int32) + i,
        "pos": np.array([i, -i], np.float32),
        "blob": bytes([i % 256]) * (i % 5),
    }


def write(path, rows, schema=SCHEMA, compression=None) -> str:
    with H5Writer(path, schema, compression=compression, progress=False) as w:
        for row in rows:
            w.write(row)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One file of 300 rows and the same rows in 5 shards with a manifest."""
    root = tmp_path_factory.mktemp("shards")
    single = write(root / "one.h5", map(make_row, range(BOUNDS[-1])))
    folder = root / "train"
    folder.mkdir()
    paths = []
    for k, codec in enumerate(CODECS):
        rows = map(make_row, range(BOUNDS[k], BOUNDS[k + 1]))
        paths.append(write(folder / f"part-{k:05d}.h5", rows, compression=codec))
    entries = [shard_entry(p, BOUNDS[k + 1] - BOUNDS[k]) for k, p in enumerate(paths)]
    write_manifest(str(folder), H5Dataset(single).schema, entries)
    return single, str(folder), paths


def assert_batches_equal(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        sts.assert_row_equal(a, b)


def assert_collated_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("form", ["folder", "list", "glob"])
def test_every_form_reads_as_the_single_file(data, form):
    single, folder, paths = data
    source = {"folder": folder, "list": paths, "glob": os.path.join(folder, "part-*.h5")}[form]
    one, ds = H5Dataset(single), H5Dataset(source)
    assert isinstance(ds, ShardedDataset) and len(ds) == len(one) == 300
    assert ds.names == one.names and ds.starts.tolist() == BOUNDS
    for i in (0, 36, 37, 119, 120, 121, 299, -1, -300):
        sts.assert_row_equal(ds[i], one[i])
        sts.assert_row_equal(ds[np.int64(i)], one[i])
    for index in (
        slice(30, 130),
        slice(None, None, -7),
        [299, 0, 120, 37, 36, 120],
        range(5, 300, 11),
    ):
        assert_batches_equal(ds[index], one[index])
    assert_batches_equal(ds[np.array([], np.int64)], [])
    assert [r["id"] for r in ds] == list(range(300))


@settings(max_examples=25)
@given(st.lists(st.integers(-300, 299), max_size=70))
def test_batches_spanning_shards(data, idx):
    single, folder, _ = data
    one, ds = H5Dataset(single), H5Dataset(folder)
    got, want = ds.__getitems__(idx), one.__getitems__(idx)
    for name in one.names:
        _assert_column_equal(got.column(name), want.column(name))
    assert_batches_equal(got, want)
    if idx:
        assert_collated_equal(h5record.collate(got), h5record.collate(want))
        pad = h5record.Collate(pad_value=-3)
        assert_collated_equal(pad(got), pad(want))


def _assert_column_equal(got, want) -> None:
    if isinstance(want, tuple):
        for a, b in zip(got, want, strict=True):
            sts.assert_value_equal(a, b)
    else:
        sts.assert_value_equal(got, want)


@pytest.mark.parametrize("in_memory", [True, "process", "node"])
def test_in_memory_modes(data, in_memory):
    single, folder, _ = data
    one = H5Dataset(single)
    with H5Dataset(folder, in_memory=in_memory) as ds:
        assert ds.in_memory == in_memory
        assert_batches_equal(ds[0:300], one[0:300])
        clone = pickle.loads(pickle.dumps(ds))
        assert_batches_equal(clone[[250, 3, 120]], one[[250, 3, 120]])
        clone.close()


def test_transform_and_pickling(data):
    single, folder, _ = data
    ds = H5Dataset(folder, transform=_negate)
    assert ds[121] == -121
    assert list(ds[[200, 5, 40]]) == [-200, -5, -40]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[-1] == -299 and clone.paths == ds.paths
    rows = H5Dataset(folder, transform=_tag)[[1, 200]]
    assert h5record.collate(rows)["id"].tolist() == [1, 200]


def _negate(row: dict) -> int:
    return -row["id"]


def _tag(row: dict) -> dict:
    return {**row, "tag": "x"}


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_with_workers(data, context):
    single, folder, _ = data
    ds = H5Dataset(folder)
    loader = h5record.DataLoader(
        ds, batch_size=32, num_workers=2, multiprocessing_context=context, shuffle=False
    )
    one = h5record.collate(H5Dataset(single)[0:300])
    got = list(loader)
    assert sum(len(b["id"]) for b in got) == 300
    ids = torch.cat([b["id"] for b in got])
    assert torch.equal(ids, one["id"])
    texts = [t for b in got for t in b["text"]]
    assert texts == one["text"]
    for b in got:
        first = int(b["id"][0])
        want = h5record.collate(H5Dataset(single)[first : first + len(b["id"])])
        assert_collated_equal(b, want)


def test_index_errors(data):
    _, folder, _ = data
    ds = H5Dataset(folder)
    with pytest.raises(IndexError, match="300 rows"):
        ds[300]
    with pytest.raises(IndexError):
        ds[[0, -301]]
    with pytest.raises(TypeError):
        ds["a"]
    with pytest.raises(TypeError):
        ds[[0.5]]


def test_missing_manifest_names_the_folder(tmp_path):
    write(tmp_path / "part-0.h5", [make_row(0)])
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no {MANIFEST_NAME}"):
        H5Dataset(str(tmp_path))
    assert len(H5Dataset(str(tmp_path / "*.h5"))) == 1


def test_empty_glob(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        H5Dataset(str(tmp_path / "part-*.h5"))


def test_schemas_that_differ_name_the_field(tmp_path):
    a = write(tmp_path / "a.h5", [{"x": 1}], [Integer("x")])
    b = write(tmp_path / "b.h5", [{"x": 1}], [Integer("x", dtype="int32")])
    c = write(tmp_path / "c.h5", [{"y": 1}], [Integer("y")])
    with pytest.raises(SchemaError, match="field 'x'"):
        H5Dataset([a, b])
    with pytest.raises(SchemaError, match=r"\['y'\]"):
        H5Dataset([a, c])
    # Codecs may differ between shards.
    d = write(tmp_path / "d.h5", [{"x": 2}], [Integer("x")], compression="gzip")
    assert [r["x"] for r in H5Dataset([a, d])] == [1, 2]


def _manifest(folder) -> dict:
    with open(os.path.join(folder, MANIFEST_NAME)) as f:
        return json.load(f)


def _rewrite(folder, manifest) -> None:
    with open(os.path.join(folder, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f)


def test_manifest_is_checked(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    p = write(folder / "part-00000.h5", [{"x": 1}, {"x": 2}], [Integer("x")])
    write_manifest(str(folder), H5Dataset(p).schema, [shard_entry(p, 2)])
    good = _manifest(folder)
    assert good["h5record_manifest"] == 1 and good["num_rows"] == 2
    assert good["schema"] == {"fields": [{"name": "x", "type": "Integer", "dtype": "<i8"}]}
    assert len(H5Dataset(str(folder))) == 2
    bad = [
        ({**good, "h5record_manifest": 2}, FormatError, "upgrade h5record"),
        ({**good, "num_rows": 3}, FormatError, "shards hold 2 rows"),
        (
            {**good, "shards": [{**good["shards"][0], "num_rows": 3}], "num_rows": 3},
            FormatError,
            "holds 2 rows",
        ),
        ({**good, "shards": [{**good["shards"][0], "bytes": 5}]}, FormatError, "is .* bytes"),
        ({**good, "shards": [{**good["shards"][0], "file": "../x.h5"}]}, FormatError, "inside"),
        ({"shards": []}, FormatError, "not an h5record manifest"),
        ({**good, "schema": {"fields": [{"name": "x", "type": "String"}]}}, SchemaError, "'x'"),
    ]
    for manifest, error, match in bad:
        _rewrite(folder, manifest)
        with pytest.raises(error, match=match):
            H5Dataset(str(folder))
    (folder / MANIFEST_NAME).write_text("{")
    with pytest.raises(FormatError, match="not valid JSON"):
        H5Dataset(str(folder))


def test_manifest_is_written_atomically(tmp_path):
    p = write(tmp_path / "part-00000.h5", [{"x": 1}], [Integer("x")])
    write_manifest(str(tmp_path), H5Dataset(p).schema, [shard_entry(p, 1)])
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_NAME, "part-00000.h5"]


def test_a_schema_list_is_still_the_1_0_4_form(tmp_path):
    path = tmp_path / "legacy.h5"
    ds = H5Dataset([Integer("x"), Sequence("s")], str(path), iter([{"x": 1, "s": [1]}]))
    assert not isinstance(ds, ShardedDataset) and ds[0]["x"] == 1
    assert isinstance(H5Dataset(str(path)), H5Dataset)


def test_verify_checks_the_rows_of_every_shard(tmp_path):
    schema = [String("t"), Integer("i")]
    paths = []
    for k in range(2):
        p = tmp_path / f"v{k}.h5"
        with H5Writer(p, schema, progress=False) as w:
            w.write_batch({"t": [f"row {k}-{j}" for j in range(50)], "i": list(range(50))})
        paths.append(str(p))
    raw = bytearray(Path(paths[1]).read_bytes())
    at = raw.find(b"row 1-7")
    raw[at + 4] ^= 0x01  # 'row 1-7' -> 'row 0-7': valid text, wrong bytes
    Path(paths[1]).write_bytes(bytes(raw))
    ds = H5Dataset(paths, verify=True)
    assert ds[[0, 1]].to_list() == [{"t": "row 0-0", "i": 0}, {"t": "row 0-1", "i": 1}]
    with pytest.raises(FormatError, match="v1.h5"):
        ds[[3, 57]].to_list()


def test_verify_checks_single_rows_of_every_shard_too(tmp_path):
    schema = [Integer("i")]
    paths = []
    for k in range(2):
        p = tmp_path / f"r{k}.h5"
        with H5Writer(p, schema, progress=False) as w:
            w.write_batch({"i": np.arange(50, dtype=np.int64) + 1000 * k})
        paths.append(str(p))
    raw = bytearray(Path(paths[1]).read_bytes())
    at = raw.find(np.int64(1007).tobytes())
    raw[at] ^= 0x01
    Path(paths[1]).write_bytes(bytes(raw))
    ds = H5Dataset(paths, verify=True)
    assert ds[3] == {"i": 3}
    for _ in range(2):  # every read, not only the first
        with pytest.raises(FormatError, match="r1.h5"):
            ds[57]
