"""Each compiled kernel against its pure-Python twin (h5record._reference) or a plain oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h5record import (
    FormatError,
    H5Writer,
    Integer,
    RowError,
    RowTypeError,
    Sequence,
    String,
    _fast,
    _reference,
    codecs,
    reader,
)
from h5record.fields import Kind
from tests.strategies import NUMERIC_DTYPES, small_text

VARIABLE_KINDS = (Kind.STRING, Kind.BYTES, Kind.VARIABLE)

# -- building paged buffers by hand --------------------------------------------------------


class Pages:
    """One byte buffer holding the chunks of many paged arrays, like a file.

    Chunks are placed in shuffled order with junk in between, so that a
    kernel that ignores the chunk table, or reads past a chunk, returns
    wrong bytes.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.pending: list[tuple[dict, int, bytes]] = []

    def add(self, data: bytes, elem_bytes: int, chunk_len: int, length: int) -> dict:
        chunk_bytes = chunk_len * elem_bytes
        n_chunks = max(1, -(-len(data) // chunk_bytes))
        spec = {
            "buffer": None,
            "table": np.zeros(n_chunks, np.int64),
            "chunk_len": chunk_len,
            "elem_bytes": elem_bytes,
            "length": length,
        }
        for c in range(n_chunks):
            piece = data[c * chunk_bytes : (c + 1) * chunk_bytes]
            self.pending.append((spec, c, piece + bytes(chunk_bytes - len(piece))))
        return spec

    def build(self) -> bytes:
        buf = bytearray(self.rng.integers(0, 256, 7, dtype=np.uint8).tobytes())
        specs = []
        for j in self.rng.permutation(len(self.pending)):
            spec, c, piece = self.pending[j]
            spec["table"][c] = len(buf)
            buf += piece + b"\xee" * int(self.rng.integers(0, 5))
            specs.append(spec)
        data = bytes(buf)
        for spec in specs:
            spec["buffer"] = data
        return data


def _values_bytes(values: list, dtype: np.dtype, tail: tuple[int, ...]) -> bytes:
    if not values:
        return b""
    return np.concatenate([np.asarray(v, dtype).reshape(-1, *tail) for v in values]).tobytes()


def variable_field(pages, name, kind, rows, dtype="u1", tail=(), chunks=(3, 3)) -> dict:
    """A variable field over ``rows`` (bytes for String/Bytes, arrays otherwise)."""
    dtype = np.dtype(dtype)
    elem = dtype.itemsize * int(np.prod(tail, dtype=np.int64))
    if kind in (Kind.STRING, Kind.BYTES):
        data, lengths = b"".join(rows), [len(r) for r in rows]
    else:
        data, lengths = _values_bytes(rows, dtype, tail), [len(r) for r in rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return {
        "name": name,
        "kind": kind,
        "dtype": dtype,
        "element_shape": tail,
        "values": pages.add(data, elem, chunks[0], int(offsets[-1])),
        "offsets": pages.add(offsets.tobytes(), 8, chunks[1], len(rows) + 1),
    }


def fixed_field(pages, name, values: np.ndarray, chunk=3, scalar=False) -> dict:
    tail = values.shape[1:]
    return {
        "name": name,
        "kind": Kind.SCALAR if scalar else Kind.FIXED,
        "dtype": values.dtype,
        "element_shape": tail,
        "values": pages.add(values.tobytes(), values[0:1].nbytes or 1, chunk, len(values)),
    }


def _random_values(rng, dtype: np.dtype, shape) -> np.ndarray:
    """Any bit pattern, NaN payloads and subnormals included."""
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(rng.bytes(size), dtype).reshape(shape).copy()


@st.composite
def decoder_inputs(draw):
    """(n_rows, field specs, row indices) over every kind, dtype and tiny chunk length."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 25))
    pages = Pages(rng)
    fields = []
    chunk = st.integers(1, 7)
    for k in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["string", "bytes", "scalar", "fixed", "variable", "frames"]))
        dtype = np.dtype(draw(st.sampled_from(NUMERIC_DTYPES))).newbyteorder("<")
        name = f"{kind}{k}"
        chunks = (draw(chunk), draw(chunk))
        if kind == "string":
            rows = [draw(small_text).encode() for _ in range(n)]
            fields.append(variable_field(pages, name, Kind.STRING, rows, chunks=chunks))
        elif kind == "bytes":
            rows = [rng.bytes(int(rng.integers(0, 9))) for _ in range(n)]
            fields.append(variable_field(pages, name, Kind.BYTES, rows, chunks=chunks))
        elif kind == "scalar":
            values = _random_values(rng, dtype, (max(n, 1),))
            fields.append(fixed_field(pages, name, values, chunks[0], scalar=True))
        elif kind == "fixed":
            shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
            values = _random_values(rng, dtype, (max(n, 1), *shape))
            fields.append(fixed_field(pages, name, values, chunks[0]))
        else:
            tail = () if kind == "variable" else (2, 1, 3)
            rows = [_random_values(rng, dtype, (int(rng.integers(0, 5)), *tail)) for _ in range(n)]
            fields.append(
                variable_field(pages, name, Kind.VARIABLE, rows, dtype, tail, chunks=chunks)
            )
        if draw(st.integers(0, 2)) == 0:  # nullable: a validity bitmap (FORMAT.md section 10)
            bits = np.packbits(rng.random(n) < 0.6, bitorder="little")
            fields[-1]["validity"] = pages.add(bits.tobytes(), 1, draw(chunk), len(bits))
    pages.build()
    idx = draw(st.lists(st.integers(-n, n - 1), max_size=30)) if n else []
    return n, fields, idx


def _same(a, b) -> None:
    """Equal to the bit, NaN and signed zeros included."""
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray), (a, b)
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        assert a.tobytes() == b.tobytes()
    elif isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b)
        for k in b:
            _same(a[k], b[k])
    elif isinstance(b, float):
        assert type(a) is float
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        ), (a, b)
    else:
        assert type(a) is type(b) and a == b, (a, b)


def _pad_for(field: dict, rng) -> np.ndarray:
    eb = np.dtype(field["dtype"]).itemsize * int(np.prod(field["element_shape"], dtype=np.int64))
    return np.frombuffer(rng.bytes(eb), np.uint8).copy()


@settings(max_examples=60)
@given(decoder_inputs(), st.integers(0, 6))
def test_decoder_equals_reference(inputs, min_len):
    n, fields, idx = inputs
    fast, ref = _fast.Decoder(n, fields), _reference.Decoder(n, fields)
    assert fast.n_rows == n and fast.names == ref.names
    for i in range(n):
        _same(fast.row(i), ref.row(i))
        _same(fast.row(i - n), ref.row(i))
        for k in range(len(fields)):
            _same(fast.value(k, i), ref.value(k, i))
            _same(fast.value(k, i - n), ref.value(k, i))
    for bad in (n, -n - 1):
        for decoder in (fast, ref):
            with pytest.raises(IndexError):
                decoder.row(bad)
            with pytest.raises(IndexError):
                decoder.value(0, bad)
            with pytest.raises(IndexError):
                decoder.rows_index([*idx, bad])
    checked = fast.rows_index(idx)
    _same(checked, ref.rows_index(idx))
    _same(fast.rows_index(np.array(idx, np.int32)), checked)
    columns = [fast.column(k, checked) for k in range(len(fields))]
    valid = [fast.valid(k, checked) for k in range(len(fields))]
    for k in range(len(fields)):
        _same(valid[k], ref.valid(k, checked))
        assert "validity" in fields[k] or valid[k].all()
    masks = [v if "validity" in f else None for v, f in zip(valid, fields, strict=True)]
    names = tuple(fast.names)
    for start, stop in ((0, len(checked)), (len(checked) // 2, len(checked))):
        fast_rows = _fast.batch_rows(names, columns, start, stop, masks)
        ref_rows = _reference.batch_rows(names, columns, start, stop, masks)
        assert len(fast_rows) == len(ref_rows) == stop - start
        for a, b in zip(fast_rows, ref_rows, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert type(a[key]) is type(b[key])
                _same(a[key], b[key])
    if fields:
        with pytest.raises(IndexError):
            _fast.batch_rows(names, columns, 0, len(checked) + 1)
    rng = np.random.default_rng(len(idx))
    for k, field in enumerate(fields):
        _same(fast.column(k, checked), ref.column(k, checked))
        _same(fast.column(k, checked[:0]), ref.column(k, checked[:0]))
        if field["kind"] in VARIABLE_KINDS:
            pad = _pad_for(field, rng)
            _same(fast.padded(k, checked, pad, min_len), ref.padded(k, checked, pad, min_len))
        else:
            with pytest.raises(TypeError):
                fast.padded(k, checked, np.zeros(1, np.uint8))


def test_raw_column_of_text_is_bytes_and_offsets():
    pages = Pages(np.random.default_rng(0))
    rows = ["a", "", "é🎉", "xyz"]
    field = variable_field(pages, "t", Kind.STRING, [r.encode() for r in rows], chunks=(2, 2))
    pages.build()
    fast = _fast.Decoder(4, [field])
    idx = np.array([3, 2, 0], np.int64)
    flat, offsets = fast.column(0, idx, raw=True)
    assert offsets.tolist() == [0, 3, 9, 10]
    assert flat.tobytes() == "xyzé🎉a".encode()


def test_float16_scalars_every_bit_pattern():
    bits = np.arange(1 << 16, dtype=np.uint16)
    halves = bits.view("<f2")
    pages = Pages(np.random.default_rng(1))
    field = fixed_field(pages, "h", halves, chunk=4096, scalar=True)
    pages.build()
    fast, ref = _fast.Decoder(len(bits), [field]), _reference.Decoder(len(bits), [field])
    for i in range(len(bits)):
        got = fast.value(0, i)
        _same(got, ref.value(0, i))
        _same(got, float(halves[i]))
    column = fast.column(0, np.arange(len(bits), dtype=np.int64))
    assert column.dtype == np.float16 and column.view(np.uint16).tolist() == bits.tolist()


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_scalar_extremes(dtype):
    dt = np.dtype(dtype).newbyteorder("<")
    info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
    values = np.array([info.min, info.max, 0, 1], dt)
    if dt.kind == "f":
        values = np.concatenate([values, np.array([np.inf, -np.inf, np.nan, -0.0, info.tiny], dt)])
    pages = Pages(np.random.default_rng(2))
    field = fixed_field(pages, "x", values, chunk=2, scalar=True)
    pages.build()
    fast = _fast.Decoder(len(values), [field])
    for i, v in enumerate(values):
        _same(fast.value(0, i), v.item())


# -- damaged inputs ---------------------------------------------------------------------------

DAMAGE_KINDS = ["string", "bytes", "variable", "frames", "fixed", "scalar"]


def _damaged_field(kind: str, damage: str) -> tuple[int, list[dict]]:
    """Six valid rows of one field, then one kind of damage."""
    rng = np.random.default_rng(5)
    pages = Pages(rng)
    n = 6
    if kind in ("string", "bytes"):
        rows = [b"abc"[: i % 4] * 2 for i in range(n)]
        code = Kind.STRING if kind == "string" else Kind.BYTES
        field = variable_field(pages, "x", code, rows, chunks=(2, 2))
    elif kind in ("variable", "frames"):
        tail = () if kind == "variable" else (1, 2)
        rows = [np.full((1 + i % 3, *tail), i, np.int16) for i in range(n)]
        field = variable_field(pages, "x", Kind.VARIABLE, rows, "<i2", tail, chunks=(2, 2))
    else:
        values = np.arange(n * 2, dtype="<i4").reshape(n, 2)
        if kind == "scalar":
            values = values[:, 0].copy()
        field = fixed_field(pages, "x", values, chunk=2, scalar=kind == "scalar")
    buffer = pages.build()
    if damage == "none":
        pass
    elif damage == "values-chunk-absent":
        field["values"]["table"][1] = -1
    elif damage == "values-chunk-outside":
        field["values"]["table"][1] = len(buffer) + 100
    elif damage == "values-table-short":
        field["values"]["table"] = field["values"]["table"][:1]
    else:
        offsets = np.frombuffer(b"".join(_read_all(field["offsets"])), np.int64).copy()
        if damage == "offsets-past-end":
            offsets[3] = 10**6
        elif damage == "offsets-decreasing":
            offsets[3] = offsets[2] - 1
        elif damage == "offsets-negative":
            offsets[0] = -3
        offsets_pages = Pages(rng)
        field["offsets"] = offsets_pages.add(offsets.tobytes(), 8, 2, n + 1)
        offsets_pages.build()
        if damage == "offsets-chunk-absent":
            field["offsets"]["table"][1] = -1
    return n, [field]


def _read_all(paged: dict) -> list[bytes]:
    eb, cl, buf = paged["elem_bytes"], paged["chunk_len"], paged["buffer"]
    out = []
    for e in range(paged["length"]):
        addr = paged["table"][e // cl] + (e % cl) * eb
        out.append(buf[addr : addr + eb])
    return out


def _damage_cases():
    cases = []
    for kind in DAMAGE_KINDS:
        damages = ["values-chunk-absent", "values-chunk-outside", "values-table-short"]
        if kind not in ("fixed", "scalar"):
            damages += [
                "offsets-past-end",
                "offsets-decreasing",
                "offsets-negative",
                "offsets-chunk-absent",
            ]
        cases += [(kind, d) for d in damages]
    return cases


def _all_rows(decoder, n):
    return [decoder.row(i) for i in range(n)]


@pytest.mark.parametrize("kind,damage", _damage_cases())
def test_damaged_rows_raise_in_the_kernel(kind, damage):
    n, fields = _damaged_field(kind, damage)
    fast = _fast.Decoder(n, fields)
    with pytest.raises(FormatError, match=r"field 'x', row \d"):
        _all_rows(fast, n)
    with pytest.raises(FormatError, match=r"field 'x', row \d"):
        [fast.value(0, i) for i in range(n)]
    if kind in ("string", "bytes", "fixed", "scalar") or damage.startswith("offsets"):
        with pytest.raises(FormatError, match="field 'x'"):
            fast.column(0, np.arange(n, dtype=np.int64))


@pytest.mark.parametrize("kind,damage", _damage_cases())
def test_damaged_rows_raise_in_the_reference(kind, damage):
    n, fields = _damaged_field(kind, damage)
    ref = _reference.Decoder(n, fields)
    with pytest.raises(FormatError, match=r"field 'x', row \d"):
        _all_rows(ref, n)
    with pytest.raises(FormatError, match="field 'x'"):
        ref.column(0, np.arange(n, dtype=np.int64))


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_reference_checks_addresses_against_the_buffer(kind):
    n, fields = _damaged_field(kind, "values-chunk-outside")
    with pytest.raises(FormatError, match="field 'x'"):
        _all_rows(_reference.Decoder(n, fields), n)


@pytest.mark.parametrize("damage", ["values-chunk-absent", "values-chunk-outside"])
@pytest.mark.parametrize(
    "kind,method",
    [
        ("variable", "column"),
        ("frames", "column"),
        ("variable", "padded"),
        ("frames", "padded"),
        ("string", "padded"),
        ("bytes", "padded"),
    ],
)
def test_damaged_values_in_batches_raise(kind, method, damage):
    n, fields = _damaged_field(kind, damage)
    fast = _fast.Decoder(n, fields)
    idx = np.arange(n, dtype=np.int64)
    with pytest.raises(FormatError, match="field 'x'"):
        if method == "column":
            fast.column(0, idx)
        else:
            fast.padded(0, idx, _pad_for(fields[0], np.random.default_rng(0)))


@pytest.mark.parametrize("method", ["row", "value", "column"])
def test_text_spanning_a_chunk_outside_the_buffer_raises(method):
    n, fields = _damaged_field("bytes", "values-chunk-outside")
    fast = _fast.Decoder(n, fields)
    with pytest.raises(FormatError, match="field 'x'"):
        if method == "row":
            _all_rows(fast, n)
        elif method == "value":
            [fast.value(0, i) for i in range(n)]
        else:
            fast.column(0, np.arange(n, dtype=np.int64))


def test_more_rows_than_stored_is_damage_not_a_crash():
    pages = Pages(np.random.default_rng(3))
    field = fixed_field(pages, "x", np.arange(4, dtype="<i8"), chunk=2, scalar=True)
    pages.build()
    for decoder in (_fast.Decoder(10, [field]), _reference.Decoder(10, [field])):
        assert decoder.value(0, 3) == 3
        with pytest.raises(FormatError, match="field 'x', row 4"):
            decoder.row(4)


def test_bad_pad_and_fixed_fields():
    n, fields = _damaged_field("variable", "none")
    fast = _fast.Decoder(n, fields)
    idx = np.arange(n, dtype=np.int64)
    with pytest.raises(ValueError, match="pad must be 2 bytes, got 3"):
        fast.padded(0, idx, np.zeros(3, np.uint8))


# -- zstd blocks: the compiled reader against the reference, which decodes with zstandard --


@pytest.mark.parametrize("block_bytes", [1, 64, 100_000])
def test_zstd_fields_equal_the_reference(tmp_path, block_bytes):
    rng = np.random.default_rng(block_bytes)
    path = tmp_path / "z.h5"
    codec = codecs.zstd(level=1, block_bytes=block_bytes)
    schema = [
        String("t", compression=codec),
        Sequence("s", dtype="int16", compression=codec),
        Integer("i", compression=codec),
    ]
    n = 300
    with H5Writer(path, schema, progress=False) as w:
        for _ in range(n):
            w.write(
                {
                    "t": "word " * int(rng.integers(0, 60)),
                    "s": (rng.integers(0, 4, int(rng.integers(0, 70))) * 100).astype(np.int16),
                    "i": int(rng.integers(-3, 3)),
                }
            )
    layout = reader.read_layout(str(path))
    assert layout.fields[0].zstd is not None and layout.fields[1].zstd is not None
    fields = reader.decoder_fields(layout, reader.map_file(str(path)))
    fast, ref = _fast.Decoder(n, fields), _reference.Decoder(n, fields)
    for i in rng.permutation(n):
        _same(fast.row(int(i)), ref.row(int(i)))
    idx = fast.rows_index(rng.integers(-n, n, 200))
    for k in range(3):
        _same(fast.column(k, idx), ref.column(k, idx))
    pad = np.array([1, 2], np.uint8)
    _same(fast.padded(1, idx, pad, 2), ref.padded(1, idx, pad, 2))


# -- the other kernels -----------------------------------------------------------------------


def _pad_oracle(flat: np.ndarray, offsets: np.ndarray, pad: np.ndarray, min_len: int):
    n = len(offsets) - 1
    lengths = np.diff(offsets).astype(np.int64)
    width = max([min_len, *lengths.tolist()])
    element = np.frombuffer(pad.tobytes(), flat.dtype).reshape(flat.shape[1:])
    out = np.empty((n, width, *flat.shape[1:]), flat.dtype)
    out[...] = element
    for j in range(n):
        out[j, : lengths[j]] = flat[offsets[j] : offsets[j + 1]]
    return out, lengths


@settings(max_examples=50)
@given(
    st.lists(st.integers(0, 6), max_size=10),
    st.sampled_from(NUMERIC_DTYPES),
    st.sampled_from([(), (2,), (1, 3)]),
    st.integers(0, 8),
    st.integers(0, 2**32 - 1),
)
def test_pad_ragged_equals_oracle(lengths, dtype, tail, min_len, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    flat = _random_values(rng, dt, (sum(lengths), *tail))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pad = np.frombuffer(rng.bytes(flat[0:1].nbytes or dt.itemsize * int(np.prod(tail))), np.uint8)
    _same(_fast.pad_ragged(flat, offsets, pad, min_len), _pad_oracle(flat, offsets, pad, min_len))


def test_pad_ragged_refuses_bad_input():
    flat = np.arange(4, dtype=np.int16)
    with pytest.raises(ValueError, match="pad must be 2 bytes"):
        _fast.pad_ragged(flat, np.array([0, 4]), np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="offsets are not valid at row 0"):
        _fast.pad_ragged(flat, np.array([0, 5]), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="offsets are not valid at row 1"):
        _fast.pad_ragged(flat, np.array([0, 3, 2]), np.zeros(2, np.uint8))


def _blocks_oracle(flat: bytes, offsets: list[int], R: int, eb: int):
    out, segments = b"", []
    n = len(offsets) - 1
    for first in range(0, n, R):
        last = min(first + R, n)
        start = len(out)
        for p in range(first, last):
            out += int(offsets[p + 1] - offsets[p]).to_bytes(4, "little")
        out += flat[offsets[first] * eb : offsets[last] * eb]
        segments.append([start, len(out) - start])
    return out, segments


@settings(max_examples=50)
@given(st.lists(st.integers(0, 5), max_size=20), st.integers(1, 7), st.sampled_from([1, 2, 8]))
def test_build_blocks_equals_oracle(lengths, R, eb):
    offsets = [0, *np.cumsum(lengths).tolist()]
    flat = bytes(range(256)) * (1 + offsets[-1] * eb // 256)
    flat = flat[: offsets[-1] * eb]
    raw, segments = _fast.build_blocks(
        np.frombuffer(flat, np.uint8), np.array(offsets, np.int64), R, eb
    )
    want_raw, want_segments = _blocks_oracle(flat, offsets, R, eb)
    assert raw.tobytes() == want_raw
    assert segments.dtype == np.uint64 and segments.tolist() == (want_segments or [])


def test_pad_ragged_and_build_blocks_examples():
    flat = np.arange(6, dtype=np.int16)
    out, lengths = _fast.pad_ragged(flat, np.array([0, 2, 2, 6]), np.array([9, 0], np.uint8))
    assert out.tolist() == [[0, 1, 9, 9], [9, 9, 9, 9], [2, 3, 4, 5]]
    assert lengths.tolist() == [2, 0, 4]
    raw, segments = _fast.build_blocks(
        np.frombuffer(b"abcdef", np.uint8), np.array([0, 1, 3, 6]), 2, 1
    )
    assert segments.tolist() == [[0, 11], [11, 7]]
    assert raw.tobytes() == b"\x01\0\0\0\x02\0\0\0abc" + b"\x03\0\0\0def"


def _join_oracle(values: list, text: bool):
    parts = []
    for j, v in enumerate(values):
        if type(v) is not (str if text else bytes):
            return None, None, j
        try:
            parts.append(v.encode("utf-8") if text else v)
        except UnicodeEncodeError:
            return None, None, j
    return b"".join(parts), [len(p) for p in parts], -1


_join_values = st.lists(
    st.one_of(small_text, st.binary(max_size=5), st.just("\ud800"), st.integers(0, 3)),
    max_size=8,
)


@settings(max_examples=50)
@given(_join_values, st.booleans())
def test_encode_text_equals_oracle(values, text):
    parts, lengths, bad = _fast.encode_text(values, text)
    want_flat, want_lengths, want_bad = _join_oracle(values, text)
    assert bad == want_bad
    if bad < 0:
        assert all(type(p) is bytes for p in parts) and b"".join(parts) == want_flat
        assert lengths.tolist() == want_lengths


_buffer_parts = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=80).map(
            lambda v: np.array(v, np.int32)
        ),
        # every other element: not C-contiguous
        st.lists(st.integers(0, 2**16 - 1), max_size=80).map(lambda v: np.array(v, np.uint16)[::2]),
    ),
    max_size=12,
)


@settings(max_examples=200)
@given(_buffer_parts, st.sampled_from([1, 7, 64, 256]), st.data())
def test_join_buffers_copies_and_hashes_every_whole_block(parts, block_bytes, data):
    import xxhash

    from h5record.checksums import _XXH3

    want = b"".join(p if isinstance(p, bytes) else p.tobytes() for p in parts)
    out = np.empty(len(want), np.uint8)
    _fast.join_buffers(parts, out)
    assert out.tobytes() == want
    if not _XXH3:
        return
    head = data.draw(st.integers(0, block_bytes - 1))
    blocks = max(0, (len(want) - head) // block_bytes)
    hashes = np.empty(blocks, np.uint64)
    out[:] = 0
    _fast.join_buffers(parts, out, head, block_bytes, hashes, _XXH3)
    assert out.tobytes() == want
    expected = [
        xxhash.xxh3_64_intdigest(want[head + b * block_bytes : head + (b + 1) * block_bytes])
        for b in range(blocks)
    ]
    assert hashes.tolist() == expected


def test_join_buffers_refuses_parts_that_do_not_fill_out():
    with pytest.raises(ValueError, match="more than the 3 bytes"):
        _fast.join_buffers([b"ab", b"cd"], np.empty(3, np.uint8))
    with pytest.raises(ValueError, match="hold 4 bytes, out 5"):
        _fast.join_buffers([b"ab", b"cd"], np.empty(5, np.uint8))
    with pytest.raises(ValueError, match="one entry per block"):
        _fast.join_buffers([b"abcd"], np.empty(4, np.uint8), 0, 2, np.empty(1, np.uint64), 1)
    with pytest.raises(TypeError, match="not Python objects"):  # their pointers
        _fast.join_buffers([np.array([b"x"], object)], np.empty(8, np.uint8))


# -- RowPacker: the writer's per-row converter against the fields' convert() -----------------


def _packer(fields):
    from h5record.writer import _float_max, _int_bounds, _pack_code

    sinks = [[] for _ in fields]
    packer = _fast.RowPacker(
        tuple(f.name for f in fields),
        [_pack_code(f) for f in fields],
        [_int_bounds(f)[0] for f in fields],
        [_int_bounds(f)[1] for f in fields],
        [_float_max(f) for f in fields],
        tuple(f.convert for f in fields),
        sinks,
    )
    return packer, sinks


def _pack_fields():
    from h5record import Bytes, Float, Float16

    return [
        String("s"),
        Integer("i", dtype="int8"),
        Float("f"),
        Float16("h"),
        Float("g", dtype="float32"),
        Bytes("b"),
        Sequence("q"),
    ]


_pack_rows = st.fixed_dictionaries(
    {
        "s": st.one_of(small_text, st.just("\ud800"), st.integers()),
        "i": st.one_of(st.integers(-200, 200), st.floats(), st.booleans()),
        "f": st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.text(max_size=1)),
        # Around the float16 and float32 limits: inside, at the edge, beyond.
        "h": st.one_of(st.floats(), st.integers(-70_000, 70_000), st.sampled_from([65519, 65520])),
        "g": st.one_of(st.floats(), st.integers(-(2**130), 2**130), st.just(1e39)),
        "b": st.one_of(st.binary(max_size=4), st.text(max_size=2)),
        "q": st.one_of(st.lists(st.integers(-5, 5), min_size=1, max_size=3), st.just("x")),
    }
)


@settings(max_examples=60)
@given(st.lists(_pack_rows, max_size=6))
def test_row_packer_equals_field_convert(rows):
    fields = _pack_fields()
    packer, sinks = _packer(fields)
    want = [[] for _ in fields]
    for index, row in enumerate(rows):
        try:
            converted = [f.convert(row[f.name], index) for f in fields]
        except (RowError, RowTypeError) as exc:
            with pytest.raises(type(exc)) as info:
                packer.pack(row, index)
            assert str(info.value) == str(exc)
            continue
        assert packer.pack(row, index) > 0
        for sink, value in zip(want, converted, strict=True):
            sink.append(value)
    assert len(sinks) == len(want)
    for got, expected in zip(sinks, want, strict=True):
        assert len(got) == len(expected)  # a bad row adds to no sink
        for a, b in zip(got, expected, strict=True):
            if isinstance(b, np.ndarray):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
            else:
                assert type(a) is type(b) and (a is b or a == b), (a, b)


def test_row_packer_refuses_rows_that_are_not_exact_dicts():
    packer, sinks = _packer(_pack_fields())
    good = {"s": "a", "i": 1, "f": 1.0, "h": 2.0, "g": 3, "b": b"", "q": [1]}
    assert packer.pack(good, 0) > 0
    for bad in ({**good, "extra": 1}, {"s": "a"}, list(range(len(good))), None):
        assert packer.pack(bad, 1) == -1
    renamed = dict(good)
    renamed["z"] = renamed.pop("q")
    assert packer.pack(renamed, 1) == -1
    assert [len(s) for s in sinks] == [1] * len(sinks)


def _python_bad_row(rows: list[bytes]) -> int:
    for r, raw in enumerate(rows):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return r
    return -1


def test_first_bad_utf8_row_agrees_with_python():
    from h5record._fast import first_bad_utf8_row

    rng = np.random.default_rng(7)
    chars = ["a", "é", "€", "😀", "\ud7ff", "\ue000", "\U0010ffff", "eight or more ascii"]
    # Bytes around the edges of UTF-8: overlong leads, surrogates, past U+10FFFF
    edges = [0x41, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xE0, 0xED, 0xF0]
    edges += [0xF4, 0xF5, 0xFF]
    for _ in range(3000):
        rows = []
        for _ in range(int(rng.integers(0, 5))):
            if rng.random() < 0.5:
                rows.append("".join(rng.choice(chars, int(rng.integers(0, 4)))).encode())
            else:
                rows.append(bytes(rng.choice(edges, int(rng.integers(0, 9))).tolist()))
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        values = np.frombuffer(b"".join(rows), np.uint8)
        assert first_bad_utf8_row(values, offsets) == _python_bad_row(rows), rows
    # a character split across two rows is valid as a whole but not row by row
    whole = "é".encode()
    assert first_bad_utf8_row(np.frombuffer(whole, np.uint8), np.array([0, 1, 2])) == 0


def test_row_packer_nulls():
    from h5record import Float

    fields = [String("s"), Integer("i"), Float("f")]
    seen = []

    def convert_f(value, index):
        seen.append((value, index))
        return value

    names = tuple(f.name for f in fields)
    sinks = [[] for _ in fields]
    packer = _fast.RowPacker(
        names,
        [_fast.PACK_UTF8, _fast.PACK_INT, _fast.PACK_FLOAT],
        [0, -(2**63), 0],
        [0, 2**63 - 1, 0],
        [0.0, 0.0, float(np.finfo(np.float64).max)],
        (fields[0].convert, fields[1].convert, convert_f),
        sinks,
        [_fast.NULL_REFUSE, _fast.NULL_KEEP, _fast.NULL_CONVERT],
    )
    assert packer.pack({"s": "a", "i": None, "f": None}, 0) == 1  # nulls add no bytes
    assert sinks == [[b"a"], [None], [None]] and seen == [(None, 0)]
    with pytest.raises(RowTypeError, match="field 's', row 1: expected str, got None; declare"):
        packer.pack({"s": None, "i": 1, "f": 2.0}, 1)
    assert [len(s) for s in sinks] == [1, 1, 1]


def test_null_mask():
    values = [1, None, "a", None]
    assert _fast.null_mask(values).tolist() == [True, False, True, False]
    assert values == [1, None, "a", None]
    assert _fast.null_mask(values, 0).tolist() == [True, False, True, False]
    assert values == [1, 0, "a", 0]
    assert _fast.null_mask([np.arange(3), b""]) is None and _fast.null_mask([]) is None
