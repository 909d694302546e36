"""Each compiled kernel against its pure-Python twin in h5record._reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5record import FormatError, _fast, _reference
from h5record._fast import KIND_BYTES, KIND_FIXED, KIND_SCALAR, KIND_STRING, KIND_VARIABLE


def _scatter(data: bytes, elem_bytes: int, chunk_len: int, rng: np.random.Generator):
    """Store ``data`` as chunks placed in shuffled order, with gaps, in one buffer."""
    chunk_bytes = chunk_len * elem_bytes
    n_chunks = max(1, -(-len(data) // chunk_bytes))
    order = rng.permutation(n_chunks)
    buf = bytearray(rng.integers(0, 256, 7, dtype=np.uint8).tobytes())  # junk first
    table = np.zeros(n_chunks, np.int64)
    for c in order:
        table[c] = len(buf)
        piece = data[c * chunk_bytes : (c + 1) * chunk_bytes]
        buf += piece + bytes(chunk_bytes - len(piece)) + b"\xee" * int(rng.integers(0, 5))
    return bytes(buf), table


def _paged(data: bytes, elem_bytes: int, chunk_len: int, length: int, rng):
    buf, table = _scatter(data, elem_bytes, chunk_len, rng)
    return {
        "buffer": buf,
        "table": table,
        "chunk_len": chunk_len,
        "elem_bytes": elem_bytes,
        "length": length,
    }


@st.composite
def decoder_inputs(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(0, 40))
    chunk = draw(st.integers(1, 9))
    texts = [draw(st.text(max_size=12)) for _ in range(n)]
    seqs = [rng.integers(-1000, 1000, int(rng.integers(0, 6))).astype(np.int32) for _ in range(n)]
    fixed = rng.random((n, 2)).astype(np.float32)
    scal = rng.integers(-5, 5, n).astype(np.int16)
    fields = []
    raw = [t.encode() for t in texts]
    offs = np.zeros(n + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offs[1:])
    fields.append(
        {
            "name": "text",
            "kind": KIND_STRING,
            "dtype": "u1",
            "element_shape": (),
            "values": _paged(b"".join(raw), 1, chunk, int(offs[-1]), rng),
            "offsets": _paged(offs.tobytes(), 8, chunk, n + 1, rng),
        }
    )
    fields.append(
        {
            "name": "blob",
            "kind": KIND_BYTES,
            "dtype": "u1",
            "element_shape": (),
            "values": _paged(b"".join(raw[::-1]), 1, chunk + 1, int(offs[-1]), rng),
            "offsets": _paged(
                np.concatenate(
                    [[0], np.cumsum([len(r) for r in raw[::-1]], dtype=np.int64)]
                ).tobytes(),
                8,
                chunk,
                n + 1,
                rng,
            ),
        }
    )
    soffs = np.zeros(n + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=soffs[1:])
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int32)
    fields.append(
        {
            "name": "seq",
            "kind": KIND_VARIABLE,
            "dtype": "<i4",
            "element_shape": (),
            "values": _paged(flat.tobytes(), 4, chunk, len(flat), rng),
            "offsets": _paged(soffs.tobytes(), 8, chunk + 2, n + 1, rng),
        }
    )
    fields.append(
        {
            "name": "fixed",
            "kind": KIND_FIXED,
            "dtype": "<f4",
            "element_shape": (2,),
            "values": _paged(fixed.tobytes(), 8, chunk, n, rng),
        }
    )
    fields.append(
        {
            "name": "scal",
            "kind": KIND_SCALAR,
            "dtype": "<i2",
            "element_shape": (),
            "values": _paged(scal.tobytes(), 2, chunk, n, rng),
        }
    )
    idx = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=30)) if n else []
    return n, fields, np.array(idx, np.int64)


def _same(a, b) -> None:
    if isinstance(b, tuple):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(b, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(b, dict):
        assert a.keys() == b.keys()
        for k in b:
            _same(a[k], b[k])
    else:
        assert a == b and type(a) is type(b)


@settings(max_examples=60, deadline=None)
@given(decoder_inputs())
def test_decoder_equals_reference(inputs):
    n, fields, idx = inputs
    fast, ref = _fast.Decoder(n, fields), _reference.Decoder(n, fields)
    for i in range(n):
        _same(fast.row(i), ref.row(i))
        _same(fast.row(i - n), ref.row(i))
    _same(fast.rows_index(idx), ref.rows_index(idx))
    for k in range(len(fields)):
        _same(fast.column(k, idx), ref.column(k, idx))
    pad = np.array([7, 0, 0, 0], np.uint8)
    _same(fast.padded(2, idx, pad, 3), ref.padded(2, idx, pad, 3))


def _one_field(offsets: np.ndarray, values: bytes, table=None, chunk_len=4):
    rng = np.random.default_rng(0)
    n = len(offsets) - 1
    f = {
        "name": "t",
        "kind": KIND_STRING,
        "dtype": "u1",
        "element_shape": (),
        "values": _paged(values, 1, chunk_len, len(values), rng),
        "offsets": _paged(offsets.astype(np.int64).tobytes(), 8, chunk_len, n + 1, rng),
    }
    if table is not None:
        f["values"]["table"] = table
    return n, [f]


@pytest.mark.parametrize(
    "offsets,table",
    [
        ([0, 3, 99], None),  # past the end of values
        ([0, 5, 2], None),  # decreasing
        ([-4, 2, 3], None),  # negative
        ([0, 3, 6], [0, -1]),  # chunk never written
        ([0, 3, 6], [0, 10**9]),  # chunk address outside the buffer
    ],
)
def test_damaged_inputs_raise_in_both(offsets, table):
    n, fields = _one_field(
        np.array(offsets), b"abcdefgh", None if table is None else np.array(table, np.int64)
    )
    for decoder in (_fast.Decoder(n, fields), _reference.Decoder(n, fields)):
        with pytest.raises(FormatError):
            for i in range(n):
                decoder.row(i)
    with pytest.raises(FormatError):
        _fast.Decoder(n, fields).column(0, np.arange(n, dtype=np.int64))


def test_pad_ragged_and_build_blocks():
    flat = np.arange(6, dtype=np.int16)
    out, lengths = _fast.pad_ragged(flat, np.array([0, 2, 2, 6]), np.array([9, 0], np.uint8))
    assert out.tolist() == [[0, 1, 9, 9], [9, 9, 9, 9], [2, 3, 4, 5]]
    assert lengths.tolist() == [2, 0, 4]
    raw, segments = _fast.build_blocks(
        np.frombuffer(b"abcdef", np.uint8), np.array([0, 1, 3, 6]), 2, 1
    )
    assert segments.tolist() == [[0, 11], [11, 7]]
    assert raw.tobytes() == b"\x01\0\0\0\x02\0\0\0abc" + b"\x03\0\0\0def"


def test_join_text_reports_first_bad_value():
    flat, lengths, bad = _fast.join_text(["a", "é", ""], True)
    assert flat.tobytes() == "aé".encode() and lengths.tolist() == [1, 2, 0] and bad == -1
    assert _fast.join_text(["a", 3], True)[2] == 1
    assert _fast.join_text(["a", "\ud800"], True)[2] == 1
    assert _fast.join_text([b"x", "y"], False)[2] == 1
