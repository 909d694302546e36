"""Nullable fields (docs/FORMAT.md, section 10): written row by row and column-wise,
read back as None through every read path, counted in checksums, refused where a
field is not nullable."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import h5record.spec
from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    FormatError,
    H5Dataset,
    H5Writer,
    Image,
    ImageSequence,
    Integer,
    RowError,
    SchemaError,
    Sequence,
    String,
    codecs,
)
from h5record.columns import Masked, Ragged
from h5record.fields import Schema, field_from_json
from h5record.verify import verify_file
from tests.strategies import assert_row_equal, assert_value_equal

N = 53  # not a multiple of 8: the last validity byte is partly filled


def every_type(codec=None) -> list:
    return [
        String("text", compression=codec, nullable=True),
        Bytes("blob", compression=codec, nullable=True),
        Integer("id", compression=codec, nullable=True),
        Integer("small", dtype="uint8", compression=codec, nullable=True),
        Float("score", compression=codec, nullable=True),
        Float16("half", compression=codec, nullable=True),
        Sequence("tokens", dtype="int16", compression=codec, nullable=True),
        FloatSequence("floats", compression=codec, nullable=True),
        Float16Sequence("halves", compression=codec, nullable=True),
        Array("matrix", (2, 3), "float64", compression=codec, nullable=True),
        Image(3, 4, 2, name="img", compression=codec, nullable=True),
        ImageSequence(2, 3, 1, name="frames", compression=codec, nullable=True),
        String("never", compression=codec, nullable=True),  # nullable, no null
        Sequence("always", compression=codec, nullable=True),  # null in every row
        Integer("plain", compression=codec),  # not nullable
    ]


def _value(name: str, i: int, rng: np.random.Generator):
    return {
        "text": "ünï ✓ " * (i % 4),
        "blob": rng.bytes(i % 7),
        "id": i * 1_000_003 - 2**40,
        "small": i % 256,
        "score": i / 3,
        "half": float(np.float16(i / 5)),
        "tokens": rng.integers(-(2**15), 2**15, i % 6).astype("<i2"),
        "floats": rng.random(i % 4).astype(np.float32),
        "halves": rng.random(i % 3).astype(np.float16),
        "matrix": rng.random((2, 3)) + 1,
        "img": rng.integers(1, 256, (2, 3, 4), dtype=np.uint8),
        "frames": rng.integers(1, 256, (i % 3 + 1, 1, 2, 3), dtype=np.uint8),
        "never": f"row {i}",
        "always": np.arange(i % 5),
        "plain": i,
    }[name]


def _null(name: str, i: int) -> bool:
    """Nulls in the first and last rows, runs, and a pattern of their own a field."""
    if name in ("never", "plain"):
        return False
    if name == "always":
        return True
    return i in (0, N - 1) or (i * 5 + len(name)) % 4 == 0 or 20 <= i < 29


def rows(schema, n: int = N, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {f.name: None if _null(f.name, i) else _value(f.name, i, rng) for f in schema}
        for i in range(n)
    ]


def expected(row: dict) -> dict:
    out = {}
    for name, v in row.items():
        if isinstance(v, np.ndarray) and name in ("matrix",):
            out[name] = v.astype(np.float64)
        elif name == "always" and v is not None:
            out[name] = np.asarray(v, np.int64)
        else:
            out[name] = v
    return out


def _as_columns(schema, part: list[dict]) -> dict:
    """Columns in every form write_batch takes for nulls: lists holding None, Masked
    arrays and Masked Ragged columns whose null rows hold placeholders."""
    columns = {}
    for f in schema:
        values = [row[f.name] for row in part]
        valid = np.array([v is not None for v in values])
        if f.name == "id":  # placeholders that are not zero
            columns[f.name] = Masked(np.array([-7 if v is None else v for v in values]), valid)
        elif f.name == "img":
            junk = np.full((2, 3, 4), 9, np.uint8)
            columns[f.name] = Masked(np.stack([junk if v is None else v for v in values]), valid)
        elif f.name == "tokens":  # null rows' placeholders hold elements
            full = [np.array([5, 6], "<i2") if v is None else v for v in values]
            offsets = np.zeros(len(full) + 1, np.int64)
            np.cumsum([len(v) for v in full], out=offsets[1:])
            flat = np.concatenate(full) if full else np.empty(0, "<i2")
            columns[f.name] = Masked(Ragged(flat, offsets), valid)
        elif f.name == "blob":
            columns[f.name] = Masked([b"junk" if v is None else v for v in values], valid)
        else:
            columns[f.name] = values
    return columns


def _write(path, schema, data, codec=None, split=30, **kw):
    with H5Writer(path, schema, progress=False, chunk_bytes=64, **kw) as w:
        for row in data[:split]:
            w.write(row)
        w.write_batch(_as_columns(schema, data[split:]))


def _check(ds, data) -> None:
    want = [expected(r) for r in data]
    assert len(ds) == len(want)
    for i in range(len(want)):
        assert_row_equal(ds[i], want[i])
    idx = [len(want) - 1, 0, 3, 21, 0, 40]
    batch = ds[idx]
    for j, i in enumerate(idx):
        assert_row_equal(batch[j], want[i])
    assert_row_equal(batch.to_list()[2], want[3])
    for f in ds.schema:
        valid = batch.valid(f.name)
        assert valid.dtype == np.bool_
        assert valid.tolist() == [want[i][f.name] is not None for i in idx], f.name
        col = batch.column(f.name)
        if f.kind in (0, 1):
            assert col == [want[i][f.name] for i in idx]
        elif f.variable:
            flat, offsets = col
            lengths = np.diff(offsets)
            assert not lengths[~valid].any()  # nulls are empty rows
        else:
            assert not col[~valid].any()  # nulls are zeros
            for j in np.flatnonzero(valid):
                assert_value_equal(col[j].item() if col.ndim == 1 else col[j], want[idx[j]][f.name])
    assert ds[[]].to_list() == []


@pytest.mark.parametrize("codec", [None, "lzf", "gzip", "zstd", codecs.zstd(block_bytes=1)])
def test_every_type_and_codec_round_trips_nulls(tmp_path, codec):
    schema = every_type(codec)
    data = rows(schema)
    path = tmp_path / "n.h5"
    _write(path, schema, data)
    with h5py.File(path, "r") as f:
        assert f.attrs["h5record_version"] == 2
        entries = json.loads(f.attrs["schema"])["fields"]
        assert [e.get("nullable") for e in entries] == [True] * 14 + [None]
        # Null rows store zeros or empty rows, whatever the placeholder held.
        if codec is None:
            assert not f["fields/id/values"][0] and not f["fields/img/values"][N - 1].any()
            o = f["fields/tokens/offsets"][()]
            assert o[N] - o[N - 1] == 0 and o[34 + 1] - o[34] == 0
        assert "validity" not in f["fields/plain"]
    for options in (
        {},
        {"in_memory": True},
        {"in_memory": True, "cache_compressed": True},
        {"in_memory": "process"},
        {"verify": True},
        {"verify": True, "in_memory": "process"},
    ):
        with H5Dataset(path, **options) as ds:
            _check(ds, data)
    assert verify_file(str(path)).ok


def test_node_cache_and_the_1_0_4_form(tmp_path):
    schema = [String("t", nullable=True), Integer("i", nullable=True, compression="zstd")]
    data = [{"t": None if i % 3 else f"r{i}", "i": None if i % 4 == 1 else i} for i in range(30)]
    path = tmp_path / "legacy.h5"
    ds = H5Dataset(schema, str(path), iter(data))  # writes the file, row by row
    assert [ds[i] for i in range(30)] == data
    ds.close()
    with H5Dataset(path, in_memory="node") as node:
        assert node[[3, 1, 0]].to_list() == [data[3], data[1], data[0]]


def test_schema_json_and_versions(tmp_path):
    plain = [String("t"), Integer("i")]
    assert "nullable" not in json.dumps([f.to_json() for f in plain])
    assert Schema(plain).format_version == 1
    nullable = [String("t", nullable=True), Integer("i")]
    assert nullable[0].to_json() == {
        "name": "t",
        "type": "String",
        "nullable": True,
        "codec": {"id": "none"},
    }
    assert Schema(nullable).format_version == 2
    assert field_from_json(nullable[0].to_json()) == nullable[0]
    assert nullable[0] != plain[0] and "nullable=True" in repr(nullable[0])
    with pytest.raises(SchemaError, match="nullable"):
        String("t", nullable="yes")
    with pytest.raises(SchemaError, match="invalid field entry"):
        field_from_json({"name": "t", "type": "String", "nullable": 1})
    difference = Schema(nullable).storage_difference(Schema(plain), "the file", "the rows")
    assert difference == "field 't' is nullable in the file, but not in the rows"
    for schema, version in ((plain, 1), (nullable, 2)):
        path = tmp_path / f"v{version}.h5"
        with H5Writer(path, schema, progress=False) as w:
            w.write({"t": "a", "i": 1})
        with h5py.File(path, "r") as f:
            assert f.attrs["h5record_version"] == version


def test_an_older_reader_refuses_a_file_with_nulls(tmp_path, monkeypatch):
    path = tmp_path / "n.h5"
    with H5Writer(path, [String("t", nullable=True)], progress=False) as w:
        w.write({"t": None})
    monkeypatch.setattr(h5record.spec, "FORMAT_VERSION", 1)
    with pytest.raises(FormatError, match=r"version 2, but this h5record reads versions up to 1"):
        H5Dataset(path)
    with pytest.raises(FormatError, match="version 2"):
        H5Writer(path, mode="a", progress=False)


def test_a_version_1_file_claiming_nullable_fields_is_damaged(tmp_path):
    path = tmp_path / "n.h5"
    with H5Writer(path, [String("t", nullable=True)], progress=False, checksums=False) as w:
        w.write({"t": None})
    with h5py.File(path, "r+") as f:
        f.attrs["h5record_version"] = np.int64(1)
    with pytest.raises(FormatError, match="nullable fields, which need format version 2"):
        H5Dataset(path)
    for version in (0, -3):
        with h5py.File(path, "r+") as f:
            f.attrs["h5record_version"] = np.int64(version)
        with pytest.raises(FormatError, match=f"unknown h5record format version {version}"):
            H5Dataset(path)


def test_none_in_a_field_that_is_not_nullable_says_what_to_do(tmp_path):
    path = tmp_path / "e.h5"
    schema = [String("t"), Sequence("s"), Integer("i", nullable=True)]
    with H5Writer(path, schema, progress=False) as w:
        w.write({"t": "a", "s": [1], "i": None})
        for bad, name in (({"t": None}, "t"), ({"s": None}, "s")):
            row = {"t": "b", "s": [2], "i": 3, **bad}
            with pytest.raises(RowError, match=rf"field '{name}', row 1: expected .*, got None;"):
                w.write(row)
        with pytest.raises(RowError, match=r"field 't', row 2: expected str, got None; declare"):
            w.write_batch({"t": ["x", None], "s": [[], []], "i": [1, 2]})
        valid = np.array([True, True, False])
        with pytest.raises(RowError, match=r"field 's', row 3: .*nullable=True"):
            w.write_batch({"t": ["x"] * 3, "s": Masked([[1], [2], [3]], valid), "i": [1, 2, 3]})
        w.write({"t": "c", "s": [], "i": 4})
        # A Masked column without a null is fine for a field that is not nullable.
        w.write_batch({"t": Masked(["d"], np.array([True])), "s": [[5]], "i": [None]})
    with H5Dataset(path) as ds:  # the refused rows left nothing behind
        assert [ds[i]["i"] for i in range(len(ds))] == [None, 4, None]
        assert ds[2]["t"] == "d"


def test_masked_columns_of_every_form(tmp_path):
    path = tmp_path / "m.h5"
    schema = [
        String("t", nullable=True),
        Bytes("b", nullable=True),
        Float("f", nullable=True),
        Sequence("s", dtype="int32", nullable=True),
        Array("a", (2,), "int8", nullable=True),
    ]
    valid = np.array([False, True, True, False, True])
    text = Ragged(np.frombuffer(b"xxabcyyzz", np.uint8), np.array([0, 2, 3, 5, 7, 9]), "text")
    with H5Writer(path, schema, progress=False) as w:
        w.write_batch(
            {
                "t": Masked(text, valid),
                "b": Masked(np.array([b"q", b"r", b"s", b"t", b"u"], dtype=object), valid),
                "f": Masked(np.array([np.nan, 1.5, 2.5, np.inf, 3.5]), valid),
                "s": Masked([None, [1, 2], np.array([3]), "junk", []], valid),
                "a": Masked(np.array([[9, 9], [1, 2], [3, 4], [9, 9], [5, 6]]), valid),
            }
        )
        # All-valid and all-null columns; an object array holding None.
        w.write_batch(
            {
                "t": Masked(["z"], np.array([True])),
                "b": np.array([None], dtype=object),
                "f": [None],
                "s": Masked(Ragged(np.zeros(3, np.int32), np.array([0, 3])), np.array([False])),
                "a": [None],
            }
        )
    with H5Dataset(path) as ds:
        got = [ds[i] for i in range(len(ds))]
    assert [r["t"] for r in got] == [None, "a", "bc", None, "zz", "z"]
    assert [r["b"] for r in got] == [None, b"r", b"s", None, b"u", None]
    assert [r["f"] for r in got] == [None, 1.5, 2.5, None, 3.5, None]
    assert [None if r["s"] is None else r["s"].tolist() for r in got] == [
        None,
        [1, 2],
        [3],
        None,
        [],
        None,
    ]
    with h5py.File(path, "r") as f:
        assert f["fields/t/values"][()].tobytes() == b"abczz" + b"z"
        assert f["fields/a/values"][()].tolist() == [[0, 0], [1, 2], [3, 4], [0, 0], [5, 6], [0, 0]]
        assert np.all(f["fields/f/values"][[0, 3, 5]] == 0)


@pytest.mark.parametrize("codec", [None, "zstd"])
def test_append_and_resume_across_commits_inside_a_validity_byte(tmp_path, codec):
    schema = [String("t", compression=codec, nullable=True), Integer("i", nullable=True)]
    data = [
        {"t": None if i % 3 == 0 else f"r{i}", "i": None if i % 7 in (1, 2) else i}
        for i in range(61)
    ]
    path = tmp_path / "a.h5"
    # A write interrupted after commits at rows 5 and 10 (mid-byte), resumed.
    with pytest.raises(KeyboardInterrupt):
        with H5Writer(path, schema, progress=False, commit_every=5, chunk_bytes=64) as w:
            for row in data[:13]:
                w.write(row)
            raise KeyboardInterrupt
    with H5Writer(path, schema, progress=False, resume=True, chunk_bytes=64) as w:
        assert w.num_rows == 13  # the interrupted block committed on the way out
        for row in data[13:19]:
            w.write(row)
    for a, b in ((19, 19), (19, 20), (20, 33), (33, 61)):  # appends of 0, 1, 13, 28 rows
        with H5Writer(path, mode="a", progress=False) as w:
            for row in data[a:b]:
                w.write(row)
        with H5Dataset(path, verify=True) as ds:
            assert [ds[i] for i in range(b)] == data[:b]
        assert verify_file(str(path)).ok
    with h5py.File(path, "r") as f:
        bits = f["fields/i/validity"][()]
        assert len(bits) == 8 and bits[-1] >> 5 == 0  # 61 rows: unused high bits are zero
    with pytest.raises(SchemaError, match="'i' is nullable in the file, but not in the given"):
        H5Writer(path, [String("t", compression=codec, nullable=True), Integer("i")], mode="a")


def test_verify_finds_a_flipped_validity_byte(tmp_path):
    path = tmp_path / "v.h5"
    schema = [String("t", nullable=True), Integer("i", nullable=True)]
    with H5Writer(path, schema, progress=False) as w:
        for i in range(100):
            w.write({"t": None if i % 2 else "x", "i": i})
    with h5py.File(path, "r+") as f:
        bits = f["fields/t/validity"]
        bits[5] ^= 0x04
    report = verify_file(str(path))
    assert not report.ok
    assert any("field 't', dataset 'validity': checksum block 0" in d for d in report.damage)
    with H5Dataset(path, verify=True) as ds, pytest.raises(FormatError, match="'validity'"):
        ds[42]
    with H5Dataset(path) as ds:  # without checksums, a flipped bit reads as changed data
        assert ds[42]["t"] is None and ds[41]["t"] is None


def test_damaged_validity_is_a_format_error(tmp_path):
    path = tmp_path / "d.h5"
    with H5Writer(path, [Integer("i", nullable=True)], progress=False, checksums=False) as w:
        w.write_batch({"i": [None, *range(39)]})
    with h5py.File(path, "r+") as f:
        f["fields/i/validity"].resize((3,))
    with pytest.raises(FormatError, match="5 validity bytes are needed"):
        H5Dataset(path)
    with h5py.File(path, "r+") as f:
        del f["fields/i/validity"]
    with pytest.raises(FormatError, match="validity dataset is missing"):
        H5Dataset(path)


# -- collate, DataLoader, shards, merge, the command line -----------------------------

COLLATE_SCHEMA = [
    Integer("id"),
    String("text", nullable=True),
    Sequence("tok", dtype="int32", nullable=True),
    Float("y", dtype="float32", nullable=True),
    Array("pos", (2,), "float32", nullable=True),
]


def _collate_row(i: int) -> dict:
    return {
        "id": i,
        "text": None if i % 3 == 0 else f"é{i}",
        "tok": None if i % 4 == 1 else np.arange(i % 5, dtype=np.int32) + i,
        "y": None if i % 5 == 2 else i / 4,
        "pos": None if i % 2 else np.array([i, -i], np.float32),
    }


@pytest.fixture(scope="module")
def collate_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nulls") / "c.h5"
    with H5Writer(path, COLLATE_SCHEMA, progress=False) as w:
        for i in range(120):
            w.write(_collate_row(i))
    return str(path)


def _check_collated(out: dict, ids: list[int]) -> None:
    import torch

    assert out["id"].tolist() == ids
    for j, i in enumerate(ids):
        want = _collate_row(i)
        for name in ("text", "tok", "y", "pos"):
            assert bool(out[name + "_valid"][j]) == (want[name] is not None), (i, name)
        assert out["text"][j] == want["text"]
        n = int(out["tok_lengths"][j])
        if want["tok"] is None:
            assert n == 0 and not out["tok"][j].any()
        else:
            assert out["tok"][j, :n].tolist() == want["tok"].tolist()
        assert float(out["y"][j]) == (0.0 if want["y"] is None else want["y"])
        assert out["pos"][j].tolist() == (
            [0.0, 0.0] if want["pos"] is None else want["pos"].tolist()
        )
    assert out["tok_valid"].dtype == torch.bool and out["y"].dtype == torch.float32
    assert "id_valid" not in out


def test_collate_gives_a_mask_for_each_nullable_field(collate_file):
    from h5record import collate

    ds = H5Dataset(collate_file)
    idx = [5, 0, 1, 2, 119, 3]
    _check_collated(collate(ds[idx]), idx)
    # Rows changed by a transform (dicts holding None) collate the same way.
    rows = ds[idx]
    from h5record.dataset import TransformedRows

    _check_collated(collate(TransformedRows(rows.to_list(), ds.schema)), idx)
    plain = collate(rows.to_list())  # no schema: masks where a column holds None
    assert plain["tok_valid"].tolist() == [r["tok"] is not None for r in rows]
    assert plain["tok_lengths"].tolist() == [0 if r["tok"] is None else len(r["tok"]) for r in rows]
    all_null = [{"y": None, "t": None}, {"y": None, "t": None}]
    assert collate(TransformedRows(all_null, Schema([Float("y", nullable=True), String("t")])))[
        "y"
    ].tolist() == [0.0, 0.0]


def test_collate_valid_suffix_and_clash(tmp_path):
    from h5record import Collate

    path = tmp_path / "clash.h5"
    with H5Writer(path, [Float("y", nullable=True), Float("y_valid")], progress=False) as w:
        w.write({"y": None, "y_valid": 1.0})
    ds = H5Dataset(path)
    with pytest.raises(ValueError, match="valid key 'y_valid' of field 'y' clashes"):
        Collate()(ds[[0]])
    out = Collate(valid_suffix="_mask")(ds[[0]])
    assert out["y_mask"].tolist() == [False] and out["y_valid"].tolist() == [1.0]
    with pytest.raises(ValueError, match="both"):
        Collate(valid_suffix="_x", lengths_suffix="_x")


def test_dataloader_with_workers_gives_masks(collate_file):
    from h5record import DataLoader

    ds = H5Dataset(collate_file)
    seen = []
    for batch in DataLoader(ds, batch_size=16, num_workers=2):
        ids = batch["id"].tolist()
        _check_collated(batch, ids)
        seen += ids
    assert seen == list(range(120))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("nullshards")
    single = root / "one.h5"
    with H5Writer(single, COLLATE_SCHEMA, progress=False) as w:
        for i in range(120):
            w.write(_collate_row(i))
    folder = root / "parts"
    folder.mkdir()
    bounds = [0, 45, 45, 80, 120]
    plans = {"raw": [None, None, None, None], "mixed": [None, "zstd", "lzf", "gzip"]}
    out = {}
    for kind, codecs_ in plans.items():
        paths = []
        for k, codec in enumerate(codecs_):
            path = folder / f"{kind}-{k}.h5"
            with H5Writer(path, COLLATE_SCHEMA, compression=codec, progress=False) as w:
                for i in range(bounds[k], bounds[k + 1]):
                    w.write(_collate_row(i))
            paths.append(str(path))
        out[kind] = paths
    return str(single), out


@pytest.mark.parametrize("kind", ["raw", "mixed"])
@pytest.mark.parametrize("in_memory", [False, True])
def test_shards_read_nulls_as_the_single_file(sharded, kind, in_memory):
    from h5record import collate

    single, plans = sharded
    one = H5Dataset(single)
    ds = H5Dataset(plans[kind], in_memory=in_memory)
    assert len(ds) == 120
    for i in range(120):
        assert_row_equal(ds[i], one[i])
    idx = [119, 0, 44, 45, 80, 3, 79, 46]
    assert ds[idx] == one[idx].to_list()
    for name in ds.names:
        assert ds[idx].valid(name).tolist() == one[idx].valid(name).tolist()
        col, want = ds[idx].column(name), one[idx].column(name)
        if isinstance(want, tuple):
            assert all(np.array_equal(a, b) for a, b in zip(col, want, strict=True))
        elif isinstance(want, list):
            assert col == want
        else:
            assert np.array_equal(col, want)
    _check_collated(collate(ds[idx]), idx)
    ds.close()


def test_merge_keeps_nulls(sharded, tmp_path):
    from h5record.merge import merge

    single, plans = sharded
    for kind, paths in plans.items():
        out = tmp_path / f"{kind}.h5"
        assert merge(out, paths) == 120
        merged, one = H5Dataset(out), H5Dataset(single)
        assert merged.schema.format_version == 2
        assert merged[0:120] == one[0:120].to_list()
        assert [f.nullable for f in merged.schema] == [f.nullable for f in COLLATE_SCHEMA]


def test_command_line_shows_nulls_and_nullability(collate_file, capsys):
    from h5record.cli import main

    assert main(["head", collate_file, "-n", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"id": 0, "text": None, "tok": [], "y": 0.0, "pos": [0.0, -0.0]}
    assert lines[1]["tok"] is None and lines[1]["pos"] is None and lines[2]["y"] is None
    assert main(["schema", collate_file]) == 0
    out = capsys.readouterr().out
    assert "text  String(nullable)" in out and "id    Integer(dtype=int64)\n" in out
    assert main(["info", collate_file]) == 0
    out = capsys.readouterr().out
    assert "h5record format 2" in out and "codec=none nullable" in out
