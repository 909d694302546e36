"""Files written by earlier releases keep reading: one committed fixture per format version."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from h5record import H5Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import fixture_v1
import fixture_v2


def _equal(a, b) -> bool:
    if b is None:
        return a is None
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("in_memory", [False, True, "process"])
def test_v1_fixture_reads_every_row(in_memory):
    ds = H5Dataset(fixture_v1.PATH, in_memory=in_memory)
    expected = fixture_v1.rows()
    assert len(ds) == len(expected) == fixture_v1.ROWS
    assert ds.schema.names == [f.name for f in fixture_v1.schema()]
    for i, want in enumerate(expected):
        got = ds[i]
        for name, value in want.items():
            assert _equal(got[name], value), (i, name, got[name], value)
    everything = ds[list(range(len(ds)))]
    assert everything == expected
    ds.close()


@pytest.mark.parametrize("in_memory", [False, True, "process"])
def test_v2_fixture_reads_every_row_and_null(in_memory):
    ds = H5Dataset(fixture_v2.PATH, in_memory=in_memory)
    expected = fixture_v2.rows()
    assert len(ds) == len(expected) == fixture_v2.ROWS
    stored = [f.storage_json() for f in ds.schema]  # nullability included
    assert stored == [f.storage_json() for f in fixture_v2.schema()]
    assert sum(v is None for row in expected for v in row.values()) > 100
    for i, want in enumerate(expected):
        got = ds[i]
        for name, value in want.items():
            assert _equal(got[name], value), (i, name, got[name], value)
    everything = ds[list(range(len(ds)))]
    assert everything == expected
    for name in ds.names:
        valid = [row[name] is not None for row in expected]
        assert everything.valid(name).tolist() == valid, name
    ds.close()
