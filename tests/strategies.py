"""Hypothesis strategies for schemas and rows of every field type (the one place for them).

Row values are drawn in every form the writer accepts (lists, tuples, arrays of
another dtype, channel-last images, bytearray, memoryview, numpy scalars, ...);
:func:`expected_value` says what reading such a value back must give.
Large values (about 100 KB) turn up now and then; they are built from a drawn
seed so that they cost hypothesis almost nothing to generate. About one field
in three is nullable, and about one of its values in four is ``None``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from h5record import (
    Array,
    Bytes,
    Field,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    Image,
    ImageSequence,
    Integer,
    Sequence,
    String,
    codecs,
)
from h5record.fields import FIELD_TYPES as REGISTERED_TYPES

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
FLOAT_DTYPES = ("float16", "float32", "float64")
NUMERIC_DTYPES = INT_DTYPES + FLOAT_DTYPES
# Every registered field type: a type added to the registry is generated too.
FIELD_TYPES = tuple(REGISTERED_TYPES)
CODECS = (None, "lzf", "gzip", ("gzip", 1), "zstd", codecs.zstd(level=1, block_bytes=1))
BIG_BYTES = 100_000
NAME_STEMS = ("f", "é", "名前", "a b", "x.y", "-")

# -- text and bytes -------------------------------------------------------------

SPECIAL_TEXT = ("", "é", "✓ emoji 🎉", "\x00", "名前", "a" * 3000, "\U0010ffff", "\r\n")
_ALPHABET = [*"abc xyz\x00\n\t", "é", "ß", "✓", "名", "\U0001f389", "\U0001f600"]


def rarely(common: st.SearchStrategy, rare: st.SearchStrategy, one_in: int = 12):
    """``rare`` about once in ``one_in`` draws, ``common`` otherwise."""
    return st.integers(0, one_in - 1).flatmap(lambda k: rare if k == 0 else common)


def big_text(seed: int) -> str:
    """About 100 KB of UTF-8 text mixing 1- to 4-byte characters."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_ALPHABET), 57_000 + seed % 1000)
    return "".join([_ALPHABET[p] for p in picks])


def big_bytes(seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(BIG_BYTES + seed % 1000)


def big_array(dtype: np.dtype, seed: int, tail: tuple[int, ...] = ()) -> np.ndarray:
    """About 100 KB of elements of ``dtype`` with element shape ``tail``."""
    rng = np.random.default_rng(seed)
    per_element = dtype.itemsize * int(np.prod(tail, dtype=np.int64))
    n = max(1, BIG_BYTES // per_element)
    if dtype.kind == "f":
        return (rng.standard_normal((n, *tail)) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (n, *tail), dtype=dtype, endpoint=True)


seeds = st.integers(0, 2**32 - 1)
small_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
text = rarely(small_text | st.sampled_from(SPECIAL_TEXT), seeds.map(big_text))

_binary = st.binary(max_size=40)
blobs = rarely(
    st.one_of(
        _binary,
        _binary.map(bytearray),
        _binary.map(memoryview),
        _binary.map(lambda b: np.frombuffer(b, np.uint8).copy()),
    ),
    seeds.map(big_bytes),
)

# -- numbers --------------------------------------------------------------------


def int_scalars(dtype: str) -> st.SearchStrategy:
    """Integers in the range of ``dtype``, as Python ints or numpy scalars."""
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    values = st.integers(int(info.min), int(info.max)) | st.sampled_from(
        [int(info.min), int(info.max), 0]
    )
    return values | values.map(dt.type)


def float_scalars(dtype: str) -> st.SearchStrategy:
    """Numbers exactly representable in ``dtype`` (NaN and infinities included)."""
    dt = np.dtype(dtype)
    floats = st.floats(width=8 * dt.itemsize)
    return floats | floats.map(dt.type) | st.integers(-2048, 2048)


def elements(dtype: np.dtype) -> st.SearchStrategy:
    return hnp.from_dtype(dtype)


def sequences(dtype: str, max_len: int = 20) -> st.SearchStrategy:
    """1-D sequences for a Sequence field of ``dtype``, in the forms the writer accepts."""
    dt = np.dtype(dtype)
    arrays = hnp.arrays(dt, st.integers(0, max_len), elements=elements(dt))
    forms = [arrays]
    # Lists of Python numbers, empty ones and uint64 values past 2**63 included.
    lists = arrays.map(lambda a: a.tolist())
    forms += [lists, lists.map(tuple)]
    if dt.kind == "f":
        forms.append(arrays.map(lambda a: a.astype(np.float64)))  # wider, same values
    elif dt != np.uint64:  # int64 cannot hold every uint64
        forms.append(arrays.map(lambda a: a.astype(np.int64)))  # wider, in range
    return rarely(st.one_of(forms), seeds.map(lambda s: big_array(dt, s)))


def fixed_arrays(dtype: str, shape: tuple[int, ...]) -> st.SearchStrategy:
    dt = np.dtype(dtype)
    arrays = hnp.arrays(dt, shape, elements=elements(dt))
    return arrays | arrays.map(lambda a: a.tolist())


def _channel_last(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(arr, -3, -1))


def images(c: int, h: int, w: int, frames: bool = False) -> st.SearchStrategy:
    """uint8 images (c, h, w), or (t, c, h, w) with ``frames``; channel-last too."""
    if frames:
        shapes = st.integers(0, 3).map(lambda t: (t, c, h, w))
        big = seeds.map(lambda s: big_array(np.dtype(np.uint8), s, (c, h, w)))
    else:
        shapes = st.just((c, h, w))
        big = st.nothing()
    arrays = shapes.flatmap(lambda shape: hnp.arrays(np.uint8, shape))
    forms = [arrays, arrays.map(lambda a: a.astype(np.int64))]
    if (h, w, c) != (c, h, w):
        forms.append(arrays.map(_channel_last))
    return rarely(st.one_of(forms), big) if frames else st.one_of(forms)


# -- fields and schemas -----------------------------------------------------------


@st.composite
def field_and_values(draw, name: str, with_codecs: bool = False):
    """A field named ``name`` of any type, and a strategy of its values (``None``
    among them when the field is nullable)."""
    field, values = draw(_field_and_values(name, with_codecs))
    if draw(st.integers(0, 2)) == 0:
        field.nullable = True
        values = rarely(values, st.none(), 4)
    return field, values


@st.composite
def _field_and_values(draw, name: str, with_codecs: bool = False):
    kind = draw(st.sampled_from(FIELD_TYPES))
    codec = draw(st.sampled_from(CODECS)) if with_codecs else None
    if kind == "String":
        return String(name, compression=codec), text
    if kind == "Bytes":
        return Bytes(name, compression=codec), blobs
    if kind == "Integer":
        dtype = draw(st.sampled_from(INT_DTYPES))
        return Integer(name, dtype=dtype, compression=codec), int_scalars(dtype)
    if kind == "Float":
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
        return Float(name, dtype=dtype, compression=codec), float_scalars(dtype)
    if kind == "Float16":
        return Float16(name, compression=codec), float_scalars("float16")
    if kind == "Sequence":
        dtype = draw(st.sampled_from(NUMERIC_DTYPES))
        return Sequence(name, dtype=dtype, compression=codec), sequences(dtype)
    if kind == "FloatSequence":
        return FloatSequence(name, compression=codec), sequences("float32")
    if kind == "Float16Sequence":
        return Float16Sequence(name, compression=codec), sequences("float16")
    if kind == "Array":
        dtype = draw(st.sampled_from(NUMERIC_DTYPES))
        shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
        return Array(name, shape, dtype, compression=codec), fixed_arrays(dtype, shape)
    c, h, w = draw(st.sampled_from([1, 3, 4])), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if kind == "Image":
        return Image(h, w, c, name=name, compression=codec), images(c, h, w)
    assert kind == "ImageSequence"
    return ImageSequence(h, w, c, name=name, compression=codec), images(c, h, w, frames=True)


@st.composite
def fields_and_values(draw, max_fields: int = 4, with_codecs: bool = False):
    n_fields = draw(st.integers(1, max_fields))
    pairs = []
    for k in range(n_fields):
        name = draw(st.sampled_from(NAME_STEMS)) + str(k)  # unique by its suffix
        pairs.append(draw(field_and_values(name, with_codecs)))
    return pairs


def schemas(max_fields: int = 6, with_codecs: bool = True) -> st.SearchStrategy[list[Field]]:
    return fields_and_values(max_fields, with_codecs).map(lambda pairs: [f for f, _ in pairs])


@st.composite
def schema_and_rows(
    draw, max_fields: int = 4, max_rows: int = 20, with_codecs: bool = False, min_rows: int = 0
):
    """A schema of 1..max_fields fields and up to max_rows rows for it."""
    pairs = draw(fields_and_values(max_fields, with_codecs))
    row = st.fixed_dictionaries({f.name: values for f, values in pairs})
    n = draw(st.integers(min_rows, max_rows))  # lists alone favour very short ones
    rows = draw(st.lists(row, min_size=n, max_size=n))
    return [f for f, _ in pairs], rows


def indices(n: int, max_size: int = 30) -> st.SearchStrategy[list[int]]:
    """Row indices valid for ``n`` rows, negative ones included."""
    if n == 0:
        return st.just([])
    return st.lists(st.integers(-n, n - 1), max_size=max_size)


# -- what reading back must give ---------------------------------------------------


def expected_value(field: Field, value):
    """The value ``H5Dataset`` must return for ``value`` written to ``field``."""
    if value is None:  # a null
        return None
    if isinstance(field, String):
        return value
    if isinstance(field, Bytes):
        return bytes(value) if not isinstance(value, np.ndarray) else value.tobytes()
    if isinstance(field, (Integer, Float, Float16)):
        return int(value) if isinstance(field, Integer) else float(value)
    if isinstance(value, (list, tuple)) and field.dtype.kind in "iu":
        arr = np.array(value, dtype=field.dtype)  # exact: no detour through float64
    else:
        arr = np.asarray(value)
    if isinstance(field, (Image, ImageSequence)):
        if arr.shape[-3:] != tuple(field.chw):
            arr = np.moveaxis(arr, -1, -3)
        return np.ascontiguousarray(arr.astype(np.uint8))
    if isinstance(field, Sequence):
        return arr.astype(field.dtype).reshape(-1)
    return arr.astype(field.dtype).reshape(field.element_shape)


def expected_row(fields: list[Field], row: dict) -> dict:
    return {f.name: expected_value(f, row[f.name]) for f in fields}


def assert_value_equal(got, want) -> None:
    """Equality as a user sees it: same Python type or array dtype and shape, same values."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), (got, want)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, float):
        assert type(got) is float, (got, want)
        assert got == want or (np.isnan(got) and np.isnan(want)), (got, want)
    else:
        assert type(got) is type(want), (got, want)
        assert got == want, (got, want)


def assert_row_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert_value_equal(got[name], value)
