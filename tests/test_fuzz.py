"""Untrusted files: the fuzz target on a few cases, and one test for each bug it found.

The full run is ``make fuzz`` (tests/fuzz/run_asan.py: an AddressSanitizer
build, a few hundred cases). Here the same cases run over the normal build
with the address space limited, and each damage that once ended in something
other than a FormatError is checked on its own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from h5record import (
    FormatError,
    H5Dataset,
    H5Writer,
    ImageSequence,
    Integer,
    Sequence,
    String,
    codecs,
)

FUZZ = os.path.join(os.path.dirname(__file__), "fuzz", "run_asan.py")


def test_fuzz_cases_over_the_normal_build():
    # Every damage kind of cases.py, all field types and codecs, in 4 s or so.
    proc = subprocess.run(
        [sys.executable, FUZZ, "--plain", "--cases=56", "--first=1000", "--timeout=60"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "56 cases" in proc.stdout and "0 failing" in proc.stdout


def _write(path, schema, rows, **kw):
    with H5Writer(path, schema, overwrite=True, progress=False, **kw) as w:
        w.write_batch({f.name: [r[f.name] for r in rows] for f in schema})
    # As a hostile file would: no metadata hash to disagree with the edits below.
    with h5py.File(path, "r+") as f:
        f.attrs.pop("metadata_xxh3", None)
    return path


@pytest.fixture
def tokens(tmp_path):
    rows = [{"s": np.arange(i % 7, dtype=np.int32), "i": i} for i in range(300)]
    return _write(tmp_path / "t.h5", [Sequence("s", "int32"), Integer("i")], rows, chunk_bytes=64)


@pytest.fixture
def packed(tmp_path):
    rows = [{"t": f"row {i} " * (i % 5), "i": i % 9} for i in range(300)]
    schema = [String("t", compression="zstd"), Integer("i", compression="zstd")]
    return _write(tmp_path / "z.h5", schema, rows)


def _edit_schema(path, name, **codec):
    with h5py.File(path, "r+") as f:
        schema = json.loads(f.attrs["schema"])
        for entry in schema["fields"]:
            if entry["name"] == name:
                entry["codec"].update(codec)
        f.attrs["schema"] = json.dumps(schema)


# -- declared sizes: checked against the file before anything is sized by them ------


@pytest.mark.parametrize("rows", [2**31, 2**40])
def test_huge_declared_shapes_and_row_count(tokens, rows):
    # Datasets resized (no chunk written: the file stays small) and num_rows to match:
    # the chunk table and the in-memory copy were sized by them (TiBs).
    with h5py.File(tokens, "r+") as f:
        for key in ("s/values", "s/offsets", "i/values"):
            f[f"fields/{key}"].resize((rows + 1,))
        f.attrs["num_rows"] = np.int64(rows)
    for in_memory in (False, True, "process"):
        with pytest.raises(FormatError, match="the file holds at most"):
            H5Dataset(tokens, in_memory=in_memory)


def test_huge_declared_shape_alone_leaves_the_rows_readable(tokens):
    with h5py.File(tokens, "r+") as f:
        f["fields/s/values"].resize((2**40,))
    ds = H5Dataset(tokens)
    assert ds[299]["s"].tolist() == list(range(299 % 7))
    assert len(ds[list(range(300))].column("s")[0]) == sum(i % 7 for i in range(300))


def test_huge_declared_rows_of_a_filtered_field(tmp_path):
    rows = [{"i": i} for i in range(100)]
    path = _write(tmp_path / "g.h5", [Integer("i")], rows, compression="gzip")
    with h5py.File(path, "r+") as f:
        f["fields/i/values"].resize((2**40,))
        f.attrs["num_rows"] = np.int64(2**40)
    with pytest.raises(FormatError, match="field 'i'.*holds at most"):
        H5Dataset(path, in_memory="process")


def test_chunk_address_near_the_int64_limit(tokens):
    # table + chunk size overflowed to a negative number and passed the bounds check.
    with h5py.File(tokens, "r+") as f:
        f["fields/s/values_chunks"][2] = 2**63 - 16
    with pytest.raises(FormatError, match="field 's'.*past the end of the file"):
        H5Dataset(tokens)


@pytest.mark.parametrize("in_memory", [False, True])
@pytest.mark.parametrize("end", [2**31, 2**32 + 7, 2**62])
def test_row_end_past_the_values_is_refused_before_allocation(tokens, end, in_memory):
    # ds[i] allocated the row's declared length (GiBs to EiBs) before checking it.
    with h5py.File(tokens, "r+") as f:
        f["fields/s/offsets"][7:] = end
    try:
        ds = H5Dataset(tokens, in_memory=in_memory)
    except FormatError as exc:  # a whole-field load finds it at once
        assert "field 's'" in str(exc)
        return
    assert ds[5]["s"].tolist() == list(range(5))
    with pytest.raises(FormatError, match="field 's', row 6"):
        ds[6]


def test_image_rows_past_the_values(tmp_path):
    rows = [{"v": np.zeros((i % 3, 1, 2, 3), np.uint8)} for i in range(20)]
    path = _write(tmp_path / "v.h5", [ImageSequence(2, 3, 1, name="v")], rows)
    with h5py.File(path, "r+") as f:
        f["fields/v/offsets"][6:] = 2**32 - 2
    with pytest.raises(FormatError, match="field 'v', row 5"):
        H5Dataset(path)[5]


# -- metadata of the wrong kind: a FormatError, whatever h5py raised ----------------


@pytest.mark.parametrize(
    "edit",
    ["group-for-values", "2-d-offsets", "float-offsets", "scalar-values"],
)
def test_tree_of_the_wrong_kind(tokens, edit):
    with h5py.File(tokens, "r+") as f:
        if edit == "group-for-values":
            del f["fields/s/values"]
            f.create_group("fields/s/values")
        elif edit == "2-d-offsets":
            del f["fields/s/offsets"]
            f["fields/s/offsets"] = np.zeros((301, 2), np.int64)
        elif edit == "float-offsets":
            del f["fields/s/offsets"]
            f["fields/s/offsets"] = np.zeros(301, np.float64)
        else:
            del f["fields/i/values"]
            f["fields/i/values"] = np.int64(3)
    with pytest.raises(FormatError, match="field '[si]'"):
        H5Dataset(tokens)


@pytest.mark.parametrize(
    "value",
    [np.array([1, 2]), "[" * 100_000, json.dumps({"fields": {"a": 1}}), "{}"],
    ids=["array", "deeply-nested", "fields-not-a-list", "no-fields"],
)
def test_schema_attribute_of_the_wrong_kind(tokens, value):
    with h5py.File(tokens, "r+") as f:
        f.attrs["schema"] = value
    with pytest.raises(FormatError, match="schema"):
        H5Dataset(tokens)


# -- zstd: declared sizes and dictionaries --------------------------------------------


@pytest.mark.parametrize(
    "codec",
    [
        {"rows_per_block": "8"},
        {"rows_per_block": 1.5},
        {"max_block_bytes": 2**62},
        {"max_block_bytes": 1},  # smaller than a block of its rows
        {"rows_per_block": 2**40, "max_block_bytes": 2**40},
    ],
)
def test_zstd_codec_entry_of_the_wrong_kind(packed, codec):
    _edit_schema(packed, "i", **codec)
    with pytest.raises(FormatError, match="field 'i'"):
        ds = H5Dataset(packed)  # refused here, or when the rows are read
        [ds[i] for i in range(300)]


def _lie_about_size(frame: bytes, declared: int) -> bytes:
    """The frame with an 8-byte content size field saying ``declared``."""
    fhd = frame[4]
    single = (fhd >> 5) & 1
    fcs_bytes = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    head = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    return (
        frame[:4]
        + bytes([(fhd & 0x3F) | 0xC0])
        + frame[5:head]
        + declared.to_bytes(8, "little")
        + frame[head + fcs_bytes :]
    )


@pytest.mark.parametrize("in_memory", [False, True])
def test_zstd_frame_that_lies_about_its_size(packed, in_memory):
    # A frame may say anything about its size: it is checked against the block's
    # rows and against what its own compressed blocks can produce, before allocation.
    declared = 1 << 40
    with h5py.File(packed, "r+") as f:
        group = f["fields/t"]
        blocks = group["blocks"][()]
        values = group["values"][()].tobytes()
        frames = [values[a:b] for a, b in itertools.pairwise(blocks)]
        frames[1] = _lie_about_size(frames[1], declared)
        flat = np.frombuffer(b"".join(frames), np.uint8)
        group["values"].resize((len(flat),))
        group["values"][:] = flat
        group["blocks"][2:] = blocks[2:] + len(flat) - len(values)
    _edit_schema(packed, "t", max_block_bytes=2**41)
    try:
        ds = H5Dataset(packed, in_memory=in_memory)
    except FormatError as exc:
        assert "field 't'" in str(exc)
        return
    assert ds[0]["t"] == ""
    with pytest.raises(FormatError, match="field 't'"):
        [ds[i] for i in range(300)]


@pytest.mark.parametrize("stored", ["empty", "2-d", "int64", "noise"])
def test_zstd_dictionary_of_the_wrong_kind(tmp_path, stored):
    rows = [{"t": f"sentence {i % 17} of a text that repeats"} for i in range(600)]
    codec = codecs.zstd(block_bytes=64, dictionary=True)
    path = _write(tmp_path / "d.h5", [String("t", compression=codec)], rows)
    with h5py.File(path, "r+") as f:
        group = f["fields/t"]
        assert "dictionary" in group
        del group["dictionary"]
        if stored == "empty":
            group.create_dataset("dictionary", shape=(0,), dtype=np.uint8)
        elif stored == "2-d":
            group["dictionary"] = np.zeros((4, 4), np.uint8)
        elif stored == "int64":
            group["dictionary"] = np.zeros(16, np.int64)
        else:
            group["dictionary"] = np.random.default_rng(0).integers(0, 256, 999, np.uint8)
    try:
        ds = H5Dataset(path)
        [ds[i] for i in range(600)]
    except FormatError as exc:
        assert "field 't'" in str(exc)
    else:  # noise is a valid raw-content dictionary; the frames then fail to decode
        pytest.fail("a wrong dictionary read back rows")


def test_zstd_blocks_of_empty_rows(tmp_path):
    # build_blocks took the address of element 0 of an empty buffer: an
    # IndexError in the bounds-checked build, an invalid pointer in the other.
    from h5record._fast import build_blocks

    out, segments = build_blocks(np.empty(0, np.uint8), np.zeros(5, np.int64), 2, 1)
    assert out.tobytes() == bytes(16) and segments.tolist() == [[0, 8], [8, 8]]
    path = _write(tmp_path / "e.h5", [String("t", compression="zstd")], [{"t": ""}] * 50)
    assert [row["t"] for row in H5Dataset(path)[list(range(50))]] == [""] * 50


def test_kernel_errors_name_the_file(tmp_path):
    path = tmp_path / "named.h5"
    with H5Writer(path, [String("t")], progress=False, checksums=False) as w:
        for i in range(100):
            w.write({"t": f"row {i}"})
    with h5py.File(path, "r+") as f:
        offsets = f["fields/t/offsets"]
        bad = offsets[()]
        bad[50] = 10**12
        offsets[...] = bad
    for in_memory in (False, True):
        ds = H5Dataset(path, in_memory=in_memory)
        with pytest.raises(FormatError, match=rf"{re.escape(str(path))}: field 't', row 50:"):
            ds[50]
