"""Appending rows to complete files: every field type and codec, schema checks, the 1.0.4 form."""

from __future__ import annotations

import itertools
import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5record import H5Dataset, H5Writer, Integer, SchemaError, String
from h5record.errors import FormatError
from tests.strategies import assert_row_equal, expected_row, schema_and_rows


@settings(max_examples=25)
@given(data=schema_and_rows(), cuts=st.lists(st.integers(0, 40), min_size=1, max_size=3))
def test_append_round_trip_every_field_and_codec(tmp_path_factory, data, cuts):
    schema, rows = data
    path = tmp_path_factory.mktemp("a") / "a.h5"
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    bounds += [len(rows)] * (2 - len(bounds))
    with H5Writer(path, schema, progress=False) as w:
        for r in rows[: bounds[1]]:
            w.write(r)
    with h5py.File(path) as f:
        stored = f.attrs["schema"]
    for start, stop in itertools.pairwise(bounds[1:]):
        with H5Writer(path, mode="a", progress=False) as w:
            assert w.num_rows == start
            for r in rows[start:stop]:
                w.write(r)
        with h5py.File(path) as f:
            kept = f.attrs["schema"]
        # Codecs are kept; a zstd entry only updates its largest block.
        for a, b in zip(_codec_ids(stored), _codec_ids(kept), strict=True):
            assert a == b
    ds = H5Dataset(path)
    assert len(ds) == len(rows)
    for i, r in enumerate(rows):
        assert_row_equal(ds[i], expected_row(schema, r))
    ds.close()
    assert os.listdir(path.parent) == ["a.h5"]


def _codec_ids(text: str) -> list[tuple]:
    import json

    out = []
    for e in json.loads(text)["fields"]:
        c = e["codec"]
        out.append((e["name"], c["id"], c.get("rows_per_block"), c.get("dictionary")))
    return out


def test_append_with_another_schema_names_the_difference(tmp_path):
    path = tmp_path / "s.h5"
    with H5Writer(path, [String("text"), Integer("label")], progress=False) as w:
        w.write({"text": "a", "label": 1})
    with pytest.raises(SchemaError, match="the given schema has field.*'extra'"):
        H5Writer(path, [String("text"), Integer("label"), Integer("extra")], mode="a")
    with pytest.raises(SchemaError, match="field 'label'"):
        H5Writer(path, [String("text"), Integer("label", dtype="int8")], mode="a")
    with pytest.raises(FileNotFoundError, match="mode='a' appends"):
        H5Writer(tmp_path / "absent.h5", mode="a")
    (tmp_path / "junk.h5").write_bytes(b"junk" * 100)
    with pytest.raises(FormatError):
        H5Writer(tmp_path / "junk.h5", mode="a")


def test_abort_of_an_append_keeps_the_old_rows(tmp_path):
    path = tmp_path / "k.h5"
    with H5Writer(path, [String("text")], progress=False) as w:
        w.write({"text": "old"})
    size = os.path.getsize(path)
    w = H5Writer(path, mode="a", progress=False)
    for i in range(1000):
        w.write({"text": f"new {i}"})
    w.flush()
    w.abort()
    assert os.path.getsize(path) == size
    assert [r["text"] for r in H5Dataset(path)] == ["old"]


def test_1_0_4_append_mode(tmp_path):
    from h5record import Float

    schema = (String(name="sentence1"), Float(name="label"))
    path = str(tmp_path / "pairs.h5")
    ds = H5Dataset(schema, path, iter([{"sentence1": "a", "label": 0.1}]))
    assert len(ds) == 1
    ds = H5Dataset(schema, path, iter([{"sentence1": "b", "label": 0.2}]), append_mode=True)
    assert [r["sentence1"] for r in ds] == ["a", "b"]
    with pytest.raises(SchemaError):
        H5Dataset((String(name="other"),), path, iter([]))
    np.testing.assert_allclose([r["label"] for r in ds], [0.1, 0.2])
