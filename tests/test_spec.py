"""Files follow docs/FORMAT.md: every row reads back with h5py, zstandard and the spec alone.

Nothing here uses h5record's reader: the functions below implement the
format from its description, and the writer's files must satisfy them.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings

from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    H5Writer,
    Image,
    ImageSequence,
    Integer,
    Sequence,
    String,
    codecs,
)
from tests.strategies import assert_row_equal, expected_row, schema_and_rows

# FORMAT.md, section 3: type -> (values dtype, element shape, variable)
VARIABLE_TYPES = {"String", "Bytes", "Sequence", "FloatSequence", "Float16Sequence"}


def storage(entry: dict) -> tuple[np.dtype, tuple[int, ...], bool]:
    kind = entry["type"]
    dtype = {
        "String": "|u1",
        "Bytes": "|u1",
        "Sequence": entry.get("dtype", "<i8"),
        "FloatSequence": "<f4",
        "Float16Sequence": "<f2",
        "ImageSequence": "|u1",
        "Integer": entry.get("dtype", "<i8"),
        "Float": entry.get("dtype", "<f8"),
        "Float16": "<f2",
        "Image": "|u1",
        "Array": entry.get("dtype"),
    }[kind]
    shape = tuple(entry["shape"]) if kind in ("Image", "ImageSequence", "Array") else ()
    return np.dtype(dtype), shape, kind in VARIABLE_TYPES or kind == "ImageSequence"


def _zstd_rows(group: h5py.Group, entry: dict, n: int) -> list[np.ndarray]:
    """Section 5: blocks of R rows, one zstd frame each."""
    dtype, shape, variable = storage(entry)
    element_bytes = dtype.itemsize * math.prod(shape)
    codec = entry["codec"]
    R = codec["rows_per_block"]
    blocks = group["blocks"][()]
    values = group["values"][()]
    d = None
    if codec["dictionary"]:
        d = zstandard.ZstdCompressionDict(group["dictionary"][()].tobytes())
    dctx = zstandard.ZstdDecompressor(dict_data=d)
    rows = []
    for j in range(-(-n // R)):
        frame = values[blocks[j] : blocks[j + 1]].tobytes()
        params = zstandard.get_frame_parameters(frame)
        assert params.has_checksum == bool(codec.get("checksum")) and params.dict_id == 0
        assert 0 <= params.content_size <= codec["max_block_bytes"]
        raw = dctx.decompress(frame)
        assert len(raw) == params.content_size
        r = min(R, n - j * R)
        if variable:
            lengths = np.frombuffer(raw, "<u4", r)
            pos = 4 * r
        else:
            lengths = np.ones(r, np.int64)
            pos = 0
        for length in lengths:
            size = int(length) * element_bytes
            rows.append(np.frombuffer(raw[pos : pos + size], dtype).reshape(-1, *shape))
            pos += size
        assert pos == len(raw)
    return rows if variable else [row[0] for row in rows]


def _plain_rows(group: h5py.Group, entry: dict, n: int) -> list[np.ndarray]:
    """Section 4: fixed rows are values[i]; variable rows values[offsets[i]:offsets[i + 1]]."""
    dtype, shape, variable = storage(entry)
    values = group["values"]
    assert values.dtype == dtype and values.shape[1:] == shape
    if not variable:
        assert "offsets" not in group
        assert values.shape[0] >= n
        return list(values[:n])
    offsets = group["offsets"]
    assert offsets.dtype == np.dtype("<i8") and offsets.shape[0] >= n + 1
    o = offsets[: n + 1]
    assert o[0] == 0 and np.all(np.diff(o) >= 0) and o[-1] <= values.shape[0]
    data = values[: o[-1]]
    return [data[o[i] : o[i + 1]] for i in range(n)]


def to_python(entry: dict, raw: np.ndarray):
    kind = entry["type"]
    if kind == "String":
        return raw.tobytes().decode("utf-8")
    if kind == "Bytes":
        return raw.tobytes()
    if kind == "Integer":
        return int(raw)
    if kind in ("Float", "Float16"):
        return float(raw)
    return np.ascontiguousarray(raw)


def _validity(group: h5py.Group, entry: dict, n: int) -> list[bool]:
    """Section 10: bit i % 8 (least significant first) of byte i // 8; zeros past n."""
    if not entry.get("nullable"):
        assert "validity" not in group
        return [True] * n
    assert entry["nullable"] is True
    bits = group["validity"]
    assert bits.dtype == np.uint8 and bits.ndim == 1 and bits.shape[0] >= -(-n // 8)
    assert bits.compression is None
    data = bits[: -(-n // 8)]
    if n % 8:
        assert data[-1] >> (n % 8) == 0  # the unused bits of the last byte
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(n)]


def read_with_spec(path) -> tuple[dict, list[dict]]:
    """Root attributes and every row, from h5py and FORMAT.md alone."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        n = int(attrs["num_rows"])
        entries = json.loads(attrs["schema"])["fields"]
        columns = {}
        for entry in entries:
            group = f["fields"][entry["name"]]
            if entry["codec"]["id"] == "zstd":
                raw = _zstd_rows(group, entry, n)
            else:
                raw = _plain_rows(group, entry, n)
            valid = _validity(group, entry, n)
            for r, ok in zip(raw, valid, strict=True):
                assert ok or not np.any(r)  # a null stores zeros or an empty row
            columns[entry["name"]] = [
                to_python(entry, r) if ok else None for r, ok in zip(raw, valid, strict=True)
            ]
    rows = [{e["name"]: columns[e["name"]][i] for e in entries} for i in range(n)]
    return attrs, rows


def _check_root(attrs: dict, fields, n: int) -> None:
    assert attrs["h5record_format"] == "h5record"
    version = 2 if any(f.nullable for f in fields) else 1  # section 10
    assert isinstance(attrs["h5record_version"], np.int64) and attrs["h5record_version"] == version
    assert isinstance(attrs["num_rows"], np.int64) and attrs["num_rows"] == n
    assert isinstance(attrs["writer"], str) and attrs["writer"].startswith("h5record ")
    entries = json.loads(attrs["schema"])["fields"]
    assert [e["name"] for e in entries] == [f.name for f in fields]
    assert [e["type"] for e in entries] == [f.type_name for f in fields]
    for entry, field in zip(entries, fields, strict=True):
        dtype, shape, variable = storage(entry)
        assert (dtype, shape, variable) == (field.dtype, field.element_shape, field.variable)
        if "dtype" in entry:
            assert entry["dtype"][0] in "<|"  # explicit byte order
        assert entry["codec"]["id"] in ("none", "lzf", "gzip", "zstd")


def _chunk_table_check(path) -> int:
    """Every `<dataset>_chunks` table equals HDF5's own chunk index; returns tables seen."""
    seen = 0
    with open(path, "rb") as fh:
        raw_file = fh.read()
    with h5py.File(path, "r") as f:
        for name in f["fields"]:
            group = f["fields"][name]
            for key in list(group):
                dset = group[key]
                if key.endswith(("_chunks", "_xxh3")) or key == "dictionary":
                    continue
                filtered = dset.id.get_create_plist().get_nfilters() > 0
                table_name = key + "_chunks"
                if filtered or dset.chunks is None:
                    assert table_name not in group
                    continue
                assert dset.maxshape[0] is None and dset.chunks[1:] == dset.shape[1:]
                table = group[table_name][()]
                chunk_len = dset.chunks[0]
                assert table.dtype == np.int64
                assert len(table) == -(-dset.shape[0] // chunk_len)
                expected = np.full(len(table), -1, np.int64)
                for j in range(dset.id.get_num_chunks()):
                    info = dset.id.get_chunk_info(j)
                    expected[info.chunk_offset[0] // chunk_len] = info.byte_offset
                np.testing.assert_array_equal(table, expected)
                # byte address of element e = table[e // chunk_len] + (e % chunk_len) * size
                size = dset.dtype.itemsize * math.prod(dset.shape[1:])
                data = dset[()]
                for e in range(dset.shape[0]):
                    addr = int(table[e // chunk_len]) + (e % chunk_len) * size
                    assert raw_file[addr : addr + size] == data[e].tobytes()
                seen += 1
    return seen


@settings(max_examples=30)
@given(schema_and_rows(max_fields=4, max_rows=15, with_codecs=True))
def test_generated_files_read_with_the_spec_alone(tmp_path, data):
    fields, rows = data
    path = tmp_path / "gen.h5"
    with H5Writer(path, fields, progress=False, overwrite=True, chunk_bytes=96) as w:
        for row in rows:
            w.write(row)
    attrs, got = read_with_spec(path)
    _check_root(attrs, fields, len(rows))
    assert len(got) == len(rows)
    for have, row in zip(got, rows, strict=True):
        assert_row_equal(have, expected_row(fields, row))
    _chunk_table_check(path)


EVERY_TYPE = [
    String("text"),
    Bytes("blob"),
    Integer("id"),
    Integer("small", dtype="uint8"),
    Float("score"),
    Float("score32", dtype="float32"),
    Float16("half"),
    Sequence("tokens", dtype="int16"),
    Sequence("wide", dtype="uint64"),
    FloatSequence("floats"),
    Float16Sequence("halves"),
    Array("matrix", (2, 3), "float64"),
    Image(3, 4, 2, name="img"),
    ImageSequence(2, 3, 1, name="frames"),
]


def _every_type_row(i: int, rng: np.random.Generator) -> dict:
    return {
        "text": "ünïcode ✓🎉 " * (i % 4),
        "blob": rng.bytes(i % 13),
        "id": i * 1_000_003 - 2**40,
        "small": i % 256,
        "score": i / 3,
        "score32": float(np.float32(i / 7)),
        "half": float(np.float16(i / 5)),
        "tokens": rng.integers(-(2**15), 2**15, i % 7).astype("<i2"),
        "wide": rng.integers(0, 2**64 - 1, i % 3, dtype=np.uint64, endpoint=True),
        "floats": rng.random(i % 4).astype(np.float32),
        "halves": rng.random(i % 5).astype(np.float16),
        "matrix": rng.random((2, 3)),
        "img": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
        "frames": rng.integers(0, 256, (i % 4, 1, 2, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize(
    "compression",
    [None, "lzf", "gzip", "zstd", codecs.zstd(block_bytes=1), codecs.zstd(dictionary=True)],
    ids=["none", "lzf", "gzip", "zstd", "zstd-row-per-block", "zstd-dictionary"],
)
def test_every_row_of_every_type_reads_with_the_spec(tmp_path, compression):
    path = tmp_path / "s.h5"
    rng = np.random.default_rng(0)
    rows = [_every_type_row(i, rng) for i in range(600)]
    with H5Writer(path, EVERY_TYPE, compression=compression, progress=False, chunk_bytes=256) as w:
        for row in rows[:250]:
            w.write(row)
        w.write_batch({f.name: [r[f.name] for r in rows[250:]] for f in EVERY_TYPE})
    attrs, got = read_with_spec(path)
    _check_root(attrs, EVERY_TYPE, len(rows))
    for have, row in zip(got, rows, strict=True):
        assert_row_equal(have, expected_row(EVERY_TYPE, row))
    assert _chunk_table_check(path) > 0
    with h5py.File(path, "r") as f:
        codec_ids = {e["name"]: e["codec"] for e in json.loads(f.attrs["schema"])["fields"]}
        for name, codec in codec_ids.items():
            group = f["fields"][name]
            values = group["values"]
            if codec["id"] in ("lzf", "gzip"):
                assert values.compression == codec["id"]
                if codec["id"] == "gzip":
                    assert values.compression_opts == codec["level"]
                if "offsets" in group:  # only values carry the filter
                    assert group["offsets"].compression is None
            elif codec["id"] == "zstd":
                assert "offsets" not in group and values.dtype == np.uint8 and values.ndim == 1
                blocks = group["blocks"][()]
                assert blocks[0] == 0 and np.all(np.diff(blocks) > 0)
                assert len(blocks) >= -(-len(rows) // codec["rows_per_block"]) + 1
                assert ("dictionary" in group) == codec["dictionary"]
                assert {"level", "block_bytes", "rows_per_block", "max_block_bytes"} <= set(codec)
            else:
                assert values.compression is None
                if codec.get("requested") is not None:
                    assert codec == {"id": "none", "requested": "zstd"}


def test_dictionary_is_used_when_requested(tmp_path):
    path = tmp_path / "d.h5"
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    rng = np.random.default_rng(1)
    text = [" ".join(rng.choice(words, int(rng.integers(3, 20)))) for _ in range(3000)]
    with H5Writer(path, [String("t", compression="zstd")], progress=False) as w:
        w.write_batch({"t": text})
    with h5py.File(path) as f:
        assert json.loads(f.attrs["schema"])["fields"][0]["codec"]["dictionary"] is True
    _, rows = read_with_spec(path)
    assert [r["t"] for r in rows] == text


def test_incompressible_zstd_field_is_plain_and_says_so(tmp_path):
    path = tmp_path / "r.h5"
    rng = np.random.default_rng(2)
    blobs = [rng.bytes(500) for _ in range(200)]
    with H5Writer(path, [Bytes("b", compression="zstd")], progress=False) as w:
        w.write_batch({"b": blobs})
    attrs, rows = read_with_spec(path)
    assert json.loads(attrs["schema"])["fields"][0]["codec"] == {
        "id": "none",
        "requested": "zstd",
    }
    assert [r["b"] for r in rows] == blobs


def test_format_example_reads_a_text_row(tmp_path):
    # The two-line example of section 4, verbatim.
    path = tmp_path / "t.h5"
    with H5Writer(path, [String("text")], progress=False) as w:
        for i in range(50):
            w.write({"text": f"row {i} é"})
    i = 37
    with h5py.File(path, "r") as f:
        o = f["fields/text/offsets"][i : i + 2]
        text = f["fields/text/values"][o[0] : o[1]].tobytes().decode("utf-8")
    assert text == "row 37 é"
