"""Every row can be read with plain h5py and docs/FORMAT.md alone."""

from __future__ import annotations

import json

import h5py
import numpy as np

from h5record import H5Writer, Image, Integer, Sequence, String


def test_rows_read_with_h5py_and_the_spec(tmp_path):
    path = tmp_path / "s.h5"
    rng = np.random.default_rng(0)
    rows = [
        {
            "text": "ünïcode " * (i % 4),
            "n": i * 3,
            "seq": rng.integers(0, 9, i % 7).astype("<i2"),
            "img": rng.integers(0, 255, (2, 3, 4), dtype=np.uint8),
        }
        for i in range(500)
    ]
    schema = [
        String("text"),
        Integer("n"),
        Sequence("seq", dtype="int16"),
        Image(3, 4, 2, name="img"),
    ]
    with H5Writer(path, schema, progress=False, chunk_bytes=256) as w:
        for row in rows:
            w.write(row)
    with h5py.File(path, "r") as f:
        assert f.attrs["h5record_format"] == "h5record"
        assert int(f.attrs["h5record_version"]) == 1
        n = int(f.attrs["num_rows"])
        assert n == 500
        fields = json.loads(f.attrs["schema"])["fields"]
        assert [e["name"] for e in fields] == ["text", "n", "seq", "img"]
        assert [e["type"] for e in fields] == ["String", "Integer", "Sequence", "Image"]
        for i in (0, 1, 250, 499):
            o = f["fields/text/offsets"][i : i + 2]
            assert f["fields/text/values"][o[0] : o[1]].tobytes().decode() == rows[i]["text"]
            assert f["fields/n/values"][i] == rows[i]["n"]
            o = f["fields/seq/offsets"][i : i + 2]
            np.testing.assert_array_equal(f["fields/seq/values"][o[0] : o[1]], rows[i]["seq"])
            np.testing.assert_array_equal(f["fields/img/values"][i], rows[i]["img"])


def test_chunk_tables_match_hdf5(tmp_path):
    path = tmp_path / "c.h5"
    with H5Writer(path, [String("t")], progress=False, chunk_bytes=128) as w:
        for i in range(300):
            w.write({"t": "x" * (i % 17)})
    with h5py.File(path, "r") as f:
        for name in ("values", "offsets"):
            dset = f[f"fields/t/{name}"]
            table = f[f"fields/t/{name}_chunks"][()]
            chunk = dset.chunks[0]
            assert len(table) == -(-dset.shape[0] // chunk) > 1
            for c, addr in enumerate(table):
                assert dset.id.get_chunk_info_by_coord((c * chunk,)).byte_offset == addr
            # and the bytes at that address are the data
            with open(path, "rb") as fh:
                raw = fh.read()
            itemsize = dset.dtype.itemsize
            first = np.frombuffer(raw[table[0] : table[0] + chunk * itemsize], dset.dtype)
            np.testing.assert_array_equal(
                first[: min(chunk, dset.shape[0])], dset[: min(chunk, dset.shape[0])]
            )
