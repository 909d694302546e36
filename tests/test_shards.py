"""Sharded datasets: a folder, a list or a glob read as one dataset, equal to one file."""

from __future__ import annotations

import json
import os
import pickle
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import h5record
from h5record import (
    FormatError,
    H5Dataset,
    H5Writer,
    Integer,
    SchemaError,
    Sequence,
    String,
    _fast,
    _reference,
)
from h5record.fields import Kind
from h5record.profile import evict
from h5record.shards import MANIFEST_NAME, ShardedDataset, shard_entry, write_manifest

from . import strategies as sts
from .test_fast import (
    VARIABLE_KINDS,
    Pages,
    _damaged_field,
    _pad_for,
    _random_values,
    _same,
    variable_field,
)

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


# -- the compiled decoder over shards, against the reference over one buffer -----------------


def _build(rng, kinds, columns, a, b, chunks) -> list[dict]:
    """Field specs of rows ``a:b`` of ``columns``, in pages of their own."""
    pages = Pages(rng)
    fields = []
    for k, (kind, (dtype, tail, rows)) in enumerate(zip(kinds, columns, strict=True)):
        name = f"{kind}{k}"
        if kind in ("string", "bytes"):
            code = Kind.STRING if kind == "string" else Kind.BYTES
            fields.append(variable_field(pages, name, code, rows[a:b], chunks=chunks[k]))
        elif kind in ("variable", "frames"):
            fields.append(
                variable_field(pages, name, Kind.VARIABLE, rows[a:b], dtype, tail, chunks[k])
            )
        else:
            values = rows[a:b]
            fields.append(
                {
                    "name": name,
                    "kind": Kind.SCALAR if kind == "scalar" else Kind.FIXED,
                    "dtype": dtype,
                    "element_shape": tail,
                    "values": pages.add(
                        values.tobytes(), rows[0:1].nbytes, chunks[k][0], len(values)
                    ),
                }
            )
    pages.build()
    return fields


@st.composite
def sharded_inputs(draw):
    """Rows of every field kind as one set of fields and cut into shards (empty
    ones too), each shard with chunk lengths of its own; and batch indices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 30))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    kinds = draw(
        st.lists(
            st.sampled_from(["string", "bytes", "scalar", "fixed", "variable", "frames"]),
            min_size=1,
            max_size=4,
        )
    )
    columns = []
    for kind in kinds:
        dtype = np.dtype(draw(st.sampled_from(sts.NUMERIC_DTYPES))).newbyteorder("<")
        if kind == "string":
            rows = [draw(sts.small_text).encode() for _ in range(n)]
        elif kind == "bytes":
            rows = [rng.bytes(int(rng.integers(0, 9))) for _ in range(n)]
        elif kind in ("variable", "frames"):
            tail = () if kind == "variable" else (2, 1, 3)
            rows = [_random_values(rng, dtype, (int(rng.integers(0, 5)), *tail)) for _ in range(n)]
            columns.append((dtype, tail, rows))
            continue
        else:
            tail = () if kind == "scalar" else (2, 3)
            rows = _random_values(rng, dtype, (n, *tail))
            columns.append((dtype, tail, rows))
            continue
        columns.append((np.dtype("u1"), (), rows))
    chunk = st.tuples(st.integers(1, 7), st.integers(1, 7))
    whole = _build(rng, kinds, columns, 0, n, [draw(chunk) for _ in kinds])
    parts = [
        _build(rng, kinds, columns, a, b, [draw(chunk) for _ in kinds]) for a, b in pairwise(bounds)
    ]
    idx = draw(st.lists(st.integers(-n, n - 1), max_size=40))
    return n, bounds, whole, parts, idx


@settings(max_examples=60)
@given(sharded_inputs(), st.integers(0, 6))
def test_joined_decoder_equals_the_reference(inputs, min_len):
    """Raw shards: batches in any order, with repeats, read by the single-file
    kernels each row from its shard, equal to one decoder over all rows."""
    n, bounds, whole, parts, idx = inputs
    ref, one = _reference.Decoder(n, whole), _fast.Decoder(n, whole)
    decoders = [_fast.Decoder(b - a, p) for (a, b), p in zip(pairwise(bounds), parts, strict=True)]
    joined = _fast.join_readers(decoders, np.array(bounds, np.int64))
    assert joined.n_rows == n and joined.names == ref.names
    for i in range(n):
        _same(joined.row(i), ref.row(i))
        _same(joined.row(i - n), ref.row(i))
    checked = joined.rows_index(idx)
    assert joined.prefetch(checked) is False  # nothing is memory-mapped
    rng = np.random.default_rng(len(idx))
    for k, field in enumerate(whole):
        for rows in (checked, checked[:0], checked[::-1].copy()):
            _same(joined.column(k, rows), ref.column(k, rows))
        if field["kind"] in VARIABLE_KINDS:
            _same(joined.column(k, checked, True), one.column(k, checked, True))
            pad = _pad_for(field, rng)
            _same(joined.padded(k, checked, pad, min_len), ref.padded(k, checked, pad, min_len))


def test_a_batch_changed_in_place_is_located_again(tmp_path):
    """The fields of a batch share its rows' shards, found once: an index array
    changed in place between two calls is not taken for the last one."""
    one = H5Dataset(write(tmp_path / "one.h5", map(make_row, range(90))))
    paths = [
        write(tmp_path / f"{k}.h5", map(make_row, range(a, b)))
        for k, (a, b) in enumerate([(0, 40), (40, 41), (41, 90)])
    ]
    ds = H5Dataset(paths)
    joined, want = ds._decoder(), one._open()
    idx = np.array([0, 89, 40, 5, 41], np.int64)
    for k in range(len(joined.names)):
        _same(joined.column(k, idx), want.column(k, idx))
    idx[:] = idx[::-1].copy()
    for k in range(len(joined.names)):
        _same(joined.column(k, idx), want.column(k, idx))
    with pytest.raises(ValueError, match="same fields"):
        _fast.join_readers([joined, _fast.Decoder(3, [])], np.array([0, 90, 93], np.int64))
    with pytest.raises(ValueError, match="rows"):
        _fast.join_readers([joined, joined], np.array([0, 90, 91], np.int64))


@pytest.mark.parametrize("kind", ["string", "bytes", "variable", "fixed", "scalar"])
@pytest.mark.parametrize("damaged_shard", [0, 1])
def test_damage_in_one_shard_raises_in_batches(kind, damaged_shard):
    n, good = _damaged_field(kind, "none")
    damage = "values-chunk-absent" if kind in ("fixed", "scalar") else "offsets-past-end"
    _, bad = _damaged_field(kind, damage)
    fields = [bad, good] if damaged_shard == 0 else [good, bad]
    joined = _fast.join_readers(
        [_fast.Decoder(n, f) for f in fields], np.array([0, n, 2 * n], np.int64)
    )
    rows = np.arange(2 * n, dtype=np.int64)[::-1].copy()
    with pytest.raises(FormatError, match=r"field 'x', row \d"):
        joined.column(0, rows)
    if kind not in ("fixed", "scalar"):
        with pytest.raises(FormatError, match=r"field 'x', row \d"):
            joined.padded(0, rows, _pad_for(bad[0], np.random.default_rng(0)))
    good_rows = rows[rows >= n] if damaged_shard == 0 else rows[rows < n]
    _same(joined.column(0, good_rows), _fast.Decoder(n, good).column(0, good_rows % n))


# -- every codec, through the dataset ----------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        ("none", [None] * 5),  # one pass by the single-file kernels
        ("zstd", ["zstd"] * 5),  # each shard's reader, rows put back in order in C
        ("none+zstd", [None, "zstd", None, None, "zstd"]),
        ("filtered", ["lzf", None, "gzip", None, "zstd"]),  # fields some shards do not map
    ],
    ids=lambda p: p[0],
)
def codec_shards(request, tmp_path_factory, data):
    single, _, _ = data
    folder = tmp_path_factory.mktemp(f"codecs-{request.param[0]}")
    paths = []
    for k, codec in enumerate(request.param[1]):
        rows = map(make_row, range(BOUNDS[k], BOUNDS[k + 1]))
        paths.append(write(folder / f"part-{k:05d}.h5", rows, compression=codec))
    return single, paths


def test_every_codec_reads_batches_as_the_single_file(codec_shards):
    single, paths = codec_shards
    one, ds = H5Dataset(single), H5Dataset(paths)
    rng = np.random.default_rng(7)
    batches = [
        rng.integers(-300, 300, 64),  # across shards, unsorted, repeats, negative
        np.array([299, 0, 120, 37, 36, 120, 120, 0]),  # shard edges, the 1-row shard
        np.array([121, 121]),  # one shard
        np.array([], np.int64),
    ]
    for idx in batches:
        got, want = ds[idx], one[idx]
        for name in one.names:
            _assert_column_equal(got.column(name), want.column(name))
        assert_batches_equal(got, want)
        if len(idx):
            pad = h5record.Collate(pad_value=-3)
            assert_collated_equal(pad(got), pad(want))
            assert_collated_equal(h5record.collate(got), h5record.collate(want))
    for i in rng.integers(-300, 300, 50).tolist():
        sts.assert_row_equal(ds[i], one[i])


def test_cold_shards_are_fetched_by_their_own_decoders(tmp_path):
    rng = np.random.default_rng(3)
    schema = [String("text"), h5record.Bytes("blob"), Integer("label")]
    paths, rows = [], []
    for k in range(3):
        part = [
            {
                "text": f"row {k}-{i} " + "x" * int(rng.integers(0, 300)),
                "blob": rng.bytes(int(rng.integers(0, 9000))),
                "label": i,
            }
            for i in range(800)
        ]
        paths.append(write(tmp_path / f"part-{k}.h5", part, schema, "zstd" if k == 1 else None))
        rows += part
    for path in paths:
        Path(path).read_bytes()  # warm, and not mapped by any process
    ds = H5Dataset(paths)
    idx = ds.rows_index(np.arange(0, len(rows), 5)[::-1])
    decoder = ds._decoder()
    assert decoder.prefetch(idx) is False
    evict(paths)
    if decoder.prefetch(idx) is False:
        pytest.skip("this filesystem keeps the pages cached (e.g. tmpfs)")
    assert decoder.prefetch(idx) is True  # cold mode lasts a few batches
    assert ds[idx].to_list() == [rows[i] for i in idx.tolist()]
    mem = H5Dataset(paths, in_memory="process")
    assert mem._decoder().prefetch(idx) is False
