"""zstd blocks, lzf and gzip: round trips, the spec alone decodes, damage is reported."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zstandard

from h5record import (
    Array,
    Bytes,
    Float,
    FormatError,
    H5Dataset,
    H5Writer,
    Image,
    Integer,
    SchemaError,
    Sequence,
    String,
    codecs,
)

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _rows(n: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    text = [
        " ".join(WORDS[w] for w in rng.integers(0, len(WORDS), rng.integers(0, 30)))
        for _ in range(n)
    ]
    text[::17] = [""] * len(text[::17])  # empty rows
    text[5::23] = ["héllo wörld ✓ " * int(k % 4) for k in range(len(text[5::23]))]
    tokens = [rng.integers(0, 1000, rng.integers(0, 60)).astype(np.int32) for _ in range(n)]
    blobs = [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]
    return {
        "text": text,
        "tokens": tokens,
        "blob": blobs,
        "label": rng.integers(-5, 5, n),
        "score": rng.random(n),
        "vec": rng.random((n, 3)).astype(np.float32),
    }


SCHEMA = [
    String("text"),
    Sequence("tokens", dtype="int32"),
    Bytes("blob"),
    Integer("label"),
    Float("score"),
    Array("vec", (3,), "float32"),
]


def _check_equal(ds: H5Dataset, cols: dict[str, list], rows) -> None:
    for i in rows:
        row = ds[int(i)]
        assert row["text"] == cols["text"][i]
        np.testing.assert_array_equal(row["tokens"], cols["tokens"][i])
        assert row["blob"] == cols["blob"][i]
        assert row["label"] == cols["label"][i]
        assert row["score"] == cols["score"][i]
        np.testing.assert_array_equal(row["vec"], cols["vec"][i])


CODECS = [
    None,
    "lzf",
    "gzip",
    ("gzip", 9),
    "zstd",
    codecs.zstd(level=1, block_bytes=1),  # one row per frame
    codecs.zstd(level=5, block_bytes=4096, dictionary=False),
    codecs.zstd(level=3, block_bytes=1 << 20),  # one huge block
]


@pytest.mark.parametrize("compression", CODECS, ids=str)
def test_round_trip_every_codec(tmp_path, compression):
    n = 1500
    cols = _rows(n)
    path = tmp_path / "c.h5"
    with H5Writer(path, SCHEMA, compression=compression, progress=False) as w:
        w.write_batch({k: v[:700] for k, v in cols.items()})
        for i in range(700, n):
            w.write({k: v[i] for k, v in cols.items()})
    ds = H5Dataset(path)
    assert len(ds) == n
    _check_equal(ds, cols, range(n))
    # batch decode equals per-row decode, in any order, with repeats
    idx = np.random.default_rng(1).integers(0, n, 300)
    assert ds[idx] == [ds[int(i)] for i in idx]
    # the in-memory copy is decompressed and equal
    mem = H5Dataset(path, in_memory="process")
    assert mem[idx] == [ds[int(i)] for i in idx]


def test_zstd_field_overrides_dataset_default(tmp_path):
    path = tmp_path / "f.h5"
    schema = [String("a", compression="zstd"), String("b"), Float("x", compression="zstd")]
    with H5Writer(path, schema, compression="lzf", progress=False) as w:
        for i in range(200):
            w.write({"a": f"row {i} " * 5, "b": "b" * (i % 7), "x": i / 3})
    with h5py.File(path) as f:
        entries = {e["name"]: e for e in json.loads(f.attrs["schema"])["fields"]}
        assert entries["a"]["codec"]["id"] == "zstd"
        assert entries["b"]["codec"]["id"] == "lzf"
        assert entries["x"]["codec"]["id"] == "zstd"
        assert "blocks" in f["fields/a"] and "offsets" not in f["fields/a"]
    ds = H5Dataset(path)
    assert ds[13] == {"a": "row 13 " * 5, "b": "b" * 6, "x": 13 / 3}


def test_dataset_zstd_default_leaves_scalars_raw(tmp_path):
    path = tmp_path / "s.h5"
    with H5Writer(path, [String("t"), Integer("y")], compression="zstd", progress=False) as w:
        w.write_batch({"t": ["some text here"] * 500, "y": list(range(500))})
    with h5py.File(path) as f:
        entries = {e["name"]: e for e in json.loads(f.attrs["schema"])["fields"]}
    assert entries["t"]["codec"]["id"] == "zstd"
    assert entries["y"]["codec"]["id"] == "none"


def test_incompressible_bytes_are_stored_raw(tmp_path):
    path = tmp_path / "jpeg.h5"
    rng = np.random.default_rng(3)
    blobs = [rng.bytes(2000) for _ in range(300)]  # random bytes stand in for JPEG
    with H5Writer(path, [Bytes("jpeg")], compression="zstd", progress=False) as w:
        w.write_batch({"jpeg": blobs})
    with h5py.File(path) as f:
        entry = json.loads(f.attrs["schema"])["fields"][0]
        assert entry["codec"] == {"id": "none", "requested": "zstd"}
        assert "offsets" in f["fields/jpeg"]
    ds = H5Dataset(path)
    assert [ds[i]["jpeg"] for i in range(300)] == blobs


def test_small_records_get_a_dictionary(tmp_path):
    path = tmp_path / "d.h5"
    cols = _rows(5000)
    with H5Writer(path, [String("text")], compression="zstd", progress=False) as w:
        w.write_batch({"text": cols["text"]})
    with h5py.File(path) as f:
        entry = json.loads(f.attrs["schema"])["fields"][0]
        assert entry["codec"]["dictionary"] is True
        assert f["fields/text/dictionary"].shape[0] > 0
    ds = H5Dataset(path)
    assert [ds[i]["text"] for i in range(0, 5000, 7)] == cols["text"][::7]


@pytest.mark.parametrize(
    "codec,limit",
    [
        ("zstd", codecs.ZSTD_DICT_BYTES_SMALL_BLOCKS),  # small blocks: a small dictionary
        (codecs.zstd(block_bytes=2048, dictionary_bytes=8192), 8192),  # as asked
    ],
)
def test_dictionary_size(tmp_path, codec, limit):
    path = tmp_path / "d.h5"
    cols = _rows(20000)
    with H5Writer(path, [String("text")], compression=codec, progress=False) as w:
        w.write_batch({"text": cols["text"]})
    with h5py.File(path) as f:
        assert 0 < f["fields/text/dictionary"].shape[0] <= limit
    ds = H5Dataset(path)
    assert list(ds[0:20000:13].column("text")) == cols["text"][::13]


def _decode_with_spec_only(path, name: str) -> list[bytes]:
    """Every row of a variable zstd field, using h5py, zstandard and FORMAT.md only."""
    out = []
    with h5py.File(path, "r") as f:
        entry = next(e for e in json.loads(f.attrs["schema"])["fields"] if e["name"] == name)
        codec = entry["codec"]
        n = int(f.attrs["num_rows"])
        g = f["fields"][name]
        R = codec["rows_per_block"]
        blocks = g["blocks"][()]
        values = g["values"][()]
        d = None
        if codec["dictionary"]:
            d = zstandard.ZstdCompressionDict(g["dictionary"][()].tobytes())
        dctx = zstandard.ZstdDecompressor(dict_data=d)
        itemsize = np.dtype(entry.get("dtype", "u1")).itemsize
        for j in range(-(-n // R)):
            raw = dctx.decompress(values[blocks[j] : blocks[j + 1]].tobytes())
            r = min(R, n - j * R)
            lengths = np.frombuffer(raw, "<u4", r)
            pos = 4 * r
            for length in lengths:
                out.append(raw[pos : pos + int(length) * itemsize])
                pos += int(length) * itemsize
            assert pos == len(raw)
    return out


@pytest.mark.parametrize("block_bytes", [1, 700, 65536])
def test_spec_alone_decodes_zstd(tmp_path, block_bytes):
    cols = _rows(2000, seed=5)
    path = tmp_path / "spec.h5"
    codec = codecs.zstd(block_bytes=block_bytes)
    schema = [String("text", compression=codec), Sequence("tokens", "int32", compression=codec)]
    with H5Writer(path, schema, progress=False) as w:
        w.write_batch({"text": cols["text"], "tokens": cols["tokens"]})
    texts = _decode_with_spec_only(path, "text")
    assert [t.decode("utf-8") for t in texts] == cols["text"]
    tokens = _decode_with_spec_only(path, "tokens")
    for raw, want in zip(tokens, cols["tokens"], strict=True):
        np.testing.assert_array_equal(np.frombuffer(raw, "<i4"), want)


def test_lzf_and_gzip_are_plain_hdf5_filters(tmp_path):
    path = tmp_path / "g.h5"
    with H5Writer(path, [String("t")], compression="gzip", progress=False) as w:
        w.write_batch({"t": ["x" * (i % 50) for i in range(1000)]})
    with h5py.File(path) as f:
        assert f["fields/t/values"].compression == "gzip"
        o = f["fields/t/offsets"][10:12]
        assert f["fields/t/values"][o[0] : o[1]].tobytes().decode() == "x" * 10


def _damage(path, name: str, dataset: str, at: int, value: int) -> None:
    with h5py.File(path, "r+") as f:
        d = f["fields"][name][dataset]
        d[at] = value


def test_damaged_zstd_frame_is_an_error_naming_field_and_row(tmp_path):
    cols = _rows(3000, seed=2)
    path = tmp_path / "bad.h5"
    with H5Writer(path, [String("text")], compression="zstd", progress=False) as w:
        w.write_batch({"text": cols["text"]})
    with h5py.File(path, "r+") as f:
        values = f["fields/text/values"]
        blocks = f["fields/text/blocks"][()]
        start = int(blocks[10])
        frame = values[start : int(blocks[11])]
        values[start : int(blocks[11])] = np.frombuffer(bytes(reversed(frame.tobytes())), np.uint8)
        R = json.loads(f.attrs["schema"])["fields"][0]["codec"]["rows_per_block"]
    ds = H5Dataset(path)
    with pytest.raises(FormatError, match=rf"field 'text', rows? {10 * R}\b.*zstd frame 10 "):
        ds[10 * R]
    with pytest.raises(FormatError):
        ds[np.arange(10 * R, 10 * R + 5)].column("text")
    assert ds[0]["text"] == cols["text"][0]  # other blocks still read


def test_block_table_pointing_past_the_data_is_an_error(tmp_path):
    path = tmp_path / "bad2.h5"
    with H5Writer(path, [String("text")], compression="zstd", progress=False) as w:
        w.write_batch({"text": _rows(1000)["text"]})
    _damage(path, "text", "blocks", 3, 1 << 40)
    ds = H5Dataset(path)
    with pytest.raises(FormatError, match="field 'text'"):
        for i in range(len(ds)):
            ds[i]


@pytest.mark.parametrize(
    "bad",
    [
        "brotli",
        ("gzip", 12),
        {"id": "zstd", "level": 99},
        {"id": "lzf", "level": 1},
        {"id": "zstd", "block_bytes": 0},
    ],
    ids=str,
)
def test_bad_codec_configs_are_schema_errors(bad):
    with pytest.raises(SchemaError):
        codecs.parse(bad, "f")


def test_zstd_image_field(tmp_path):
    path = tmp_path / "img.h5"
    rng = np.random.default_rng(0)
    imgs = [
        np.repeat(rng.integers(0, 255, (3, 8, 1), dtype=np.uint8), 8, axis=2) for _ in range(50)
    ]
    with H5Writer(path, [Image(8, 8, name="img", compression="zstd")], progress=False) as w:
        for im in imgs:
            w.write({"img": im})
    ds = H5Dataset(path)
    for i in (0, 17, 49):
        np.testing.assert_array_equal(ds[i]["img"], imgs[i])
