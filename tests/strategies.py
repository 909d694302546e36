"""Hypothesis strategies for schemas and rows of every field type (the one place for them)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    Image,
    ImageSequence,
    Integer,
    Sequence,
    String,
)

# Text without lone surrogates (those cannot be UTF-8 encoded: a separate test).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", "é", "✓ emoji 🎉", "a" * 3000]
)
SEQ_DTYPES = ["int8", "uint8", "int16", "int32", "int64", "uint64", "float32", "float64"]


def _array(dtype: str, shape) -> st.SearchStrategy[np.ndarray]:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        elements = st.floats(width=dt.itemsize * 8, allow_nan=False, allow_infinity=False)
    else:
        info = np.iinfo(dt)
        elements = st.integers(int(info.min), int(info.max))
    return st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda xs: np.array(xs, dtype=dt).reshape(shape)
    )


def _ragged(dtype: str, max_len: int = 20) -> st.SearchStrategy[np.ndarray]:
    return st.integers(0, max_len).flatmap(lambda n: _array(dtype, (n,)))


def field_and_values(index: int):
    """A strategy of (field, value strategy) pairs, field names made unique by index."""
    name = f"f{index}"
    choices = [
        st.just((String(name), text)),
        st.just((Bytes(name), st.binary(max_size=50))),
        st.just((Integer(name), st.integers(-(2**63), 2**63 - 1))),
        st.just((Integer(name, dtype="uint16"), st.integers(0, 2**16 - 1))),
        st.just((Float(name), st.floats(allow_nan=False))),
        st.just((Float16(name), st.sampled_from([0.0, 1.5, -2.25, 65504.0]))),
        st.sampled_from(SEQ_DTYPES).map(lambda d: (Sequence(name, dtype=d), _ragged(d))),
        st.just((FloatSequence(name), _ragged("float32"))),
        st.just((Float16Sequence(name), _ragged("float16", 5))),
        st.just((Array(name, (2, 3), "int32"), _array("int32", (2, 3)))),
        st.just((Image(3, 2, 1, name=name), _array("uint8", (1, 3, 2)))),
        st.just(
            (
                ImageSequence(2, 2, 3, name=name),
                st.integers(0, 3).flatmap(lambda t: _array("uint8", (t, 3, 2, 2))),
            )
        ),
    ]
    return st.one_of(choices)


@st.composite
def schema_and_rows(draw, max_fields: int = 4, max_rows: int = 30):
    """A schema of 1..max_fields fields and up to max_rows rows for it."""
    n_fields = draw(st.integers(1, max_fields))
    pairs = [draw(field_and_values(k)) for k in range(n_fields)]
    fields = [f for f, _ in pairs]
    row = st.fixed_dictionaries({f.name: values for f, values in pairs})
    rows = draw(st.lists(row, max_size=max_rows))
    return fields, rows


def assert_value_equal(got, want) -> None:
    """Equality as a user sees it: arrays by value, numbers by value."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), (got, want)
        assert got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, float):
        assert got == want or (np.isnan(got) and np.isnan(want))
    else:
        assert got == want, (got, want)
