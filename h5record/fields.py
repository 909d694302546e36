"""Typed fields and the schema.

A field knows its storage (dtype, element shape, fixed or variable length)
and how to check and convert one value or a column of values for the
writer. The names and constructor arguments of h5record 1.0.4 are kept.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from . import codecs, spec
from ._fast import first_bad_utf8_row
from .columns import ARRAY, TEXT, Masked, Ragged
from .errors import RowError, RowTypeError, SchemaError

_NUMBER_KINDS = "biuf"


def _where(field: str, row: int | None) -> str:
    return f"field {field!r}" + ("" if row is None else f", row {row}")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _range_error(value: Any, dtype: np.dtype, where: str) -> RowError:
    info = np.iinfo(dtype)
    return RowError(
        f"{where}: value {int(value)} is out of range for {dtype.name} [{info.min}, {info.max}]"
    )


def _int_overflows(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Whether an integer array holds values outside the integer ``dtype``."""
    if not (arr.size and arr.dtype.kind in "iu" and dtype.kind in "iu"):
        return False
    if np.can_cast(arr.dtype, dtype):
        return False
    info = np.iinfo(dtype)
    return bool(arr.min() < info.min or arr.max() > info.max)


def _check_int_range(arr: np.ndarray, dtype: np.dtype, where: str) -> None:
    if _int_overflows(arr, dtype):
        info = np.iinfo(dtype)
        lo, hi = arr.min(), arr.max()
        raise _range_error(lo if lo < info.min else hi, dtype, where)


def _rounds_to_inf(dtype: np.dtype) -> float:
    """The smallest magnitude that a float ``dtype`` rounds to inf."""
    top = np.finfo(dtype).max
    below = np.nextafter(top, dtype.type(0))
    return float(top) + float(top - below) / 2


# Narrower floats than float64, by itemsize. float64 needs no entry: a
# Python float always fits it, and float() refuses ints that do not.
_ROUNDS_TO_INF = {dt.itemsize: _rounds_to_inf(dt) for dt in map(np.dtype, ("<f2", "<f4"))}


def _float_range_error(value: Any, dtype: np.dtype, where: str) -> RowError:
    top = float(np.finfo(dtype).max)
    return RowError(
        f"{where}: expected a number in the {dtype.name} range [{-top:g}, {top:g}], "
        f"got {_describe(value)}"
    )


def _fits_float(value: Any, dtype: np.dtype) -> bool:
    """Whether a number stays finite as ``dtype``; inf and nan given as such fit."""
    try:
        number = float(value)
    except OverflowError:  # an int past the float64 range
        return False
    if math.isfinite(number):
        return abs(number) < _ROUNDS_TO_INF.get(dtype.itemsize, math.inf)
    return isinstance(value, float) or not np.isfinite(value)


def _may_overflow(src: np.dtype, dst: np.dtype) -> bool:
    """Whether casting ``src`` to the float ``dst`` can turn finite values into inf."""
    if src.kind == "f":
        return src.itemsize > dst.itemsize
    if src.kind in "iu":
        magnitude_bits = 8 * src.itemsize - (src.kind == "i")
        return 2.0**magnitude_bits >= _ROUNDS_TO_INF.get(dst.itemsize, math.inf)
    return False


def _cast_float(arr: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``arr`` as the float ``dtype``: (values, None), or (None, where finite values become inf)."""
    try:
        with np.errstate(over="raise"):
            return arr.astype(dtype), None
    except FloatingPointError:
        with np.errstate(over="ignore"):
            cast = arr.astype(dtype)
        return None, np.isinf(cast) & np.isfinite(arr)


def _exact_ints(value: Any, dtype: np.dtype, where: str) -> np.ndarray | None:
    """Python ints on both sides of 2**63, converted exactly; None if not all ints.

    ``np.asarray`` makes float64 of them, losing the low bits of large uint64
    values; converting through an object array keeps them.
    """
    items = np.array(value, dtype=object)
    flat = items.ravel().tolist()
    if not all(isinstance(v, (int, np.integer)) for v in flat):
        return None
    info = np.iinfo(dtype)
    lo, hi = min(flat), max(flat)
    if lo < info.min or hi > info.max:
        raise _range_error(lo if lo < info.min else hi, dtype, where)
    return items.astype(dtype)


def _as_numeric_array(value: Any, dtype: np.dtype, where: str, expected: str) -> np.ndarray:
    """Convert a value to an array of ``dtype`` refusing unsafe casts.

    The result may share memory with ``value``; see :func:`_own`.
    """
    if value is None:
        raise RowTypeError(f"{where}: expected {expected}, got None")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise RowTypeError(f"{where}: expected {expected}, got {_describe(value)}") from exc
    if isinstance(value, (list, tuple)) and arr.dtype.kind in "fO":
        # np.asarray guessed the dtype of Python numbers: float64 for an empty
        # list, and for ints on both sides of 2**63.
        if arr.size == 0:
            return np.empty(arr.shape, dtype)
        if arr.dtype.kind == "f" and dtype.kind in "iu":
            exact = _exact_ints(value, dtype, where)
            if exact is not None:
                return exact
    if arr.dtype.kind not in _NUMBER_KINDS:
        raise RowTypeError(f"{where}: expected {expected}, got {_describe(value)}")
    if arr.dtype.kind == "f" and dtype.kind in "iub":
        raise RowTypeError(
            f"{where}: expected {expected}, got floating point data ({arr.dtype}); "
            "round and cast it first"
        )
    if dtype.kind == "f" and _may_overflow(arr.dtype, dtype):
        cast, overflow = _cast_float(arr, dtype)
        if overflow is not None:
            raise _float_range_error(arr[overflow][0].item(), dtype, where)
        return cast
    _check_int_range(arr, dtype, where)
    return arr.astype(dtype, copy=False)


def _own(arr: np.ndarray, value: Any) -> np.ndarray:
    """``arr``, copied if it may share memory with the caller's ``value``.

    The writer buffers converted rows until its next flush: a caller that
    refills one buffer for every row must not change the rows buffered.
    """
    if arr is value or arr.base is not None:
        return arr.copy()
    return arr


class Kind(enum.IntEnum):
    """How a field's rows are read back; the compiled reader uses the same numbers."""

    STRING = 0  # variable UTF-8 text -> str
    BYTES = 1  # variable bytes -> bytes
    SCALAR = 2  # one number per row -> a Python number
    FIXED = 3  # a fixed-shape array per row
    VARIABLE = 4  # a variable-length array of elements per row


class Field:
    """Base class of schema fields.

    Parameters
    ----------
    name:
        Field name, unique within a schema.
    compression:
        Codec for this field; ``None`` takes the dataset's default. See
        :mod:`h5record.codecs`. ``"none"`` stores this field uncompressed
        whatever the default (kept as ``{"id": "none", "requested": "none"}``).
    nullable:
        Whether rows may hold no value (``None``, read back as ``None``); a
        file with a nullable field is written in format version 2
        (docs/FORMAT.md, section 10).
    """

    type_name: ClassVar[str] = ""
    variable: ClassVar[bool] = False
    dtype: np.dtype
    element_shape: tuple[int, ...] = ()

    def __init__(self, name: str, compression: Any = None, *, nullable: bool = False) -> None:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise SchemaError(f"field name must be a non-empty string without '/', got {name!r}")
        if not isinstance(nullable, (bool, np.bool_)):
            raise SchemaError(f"field {name!r}: nullable must be True or False, got {nullable!r}")
        self.name = name
        self.nullable = bool(nullable)
        self.codec = None if compression is None else codecs.parse(compression, name)
        if self.codec == _UNSET_CODEC:
            # Told apart from a field that set nothing, which a writer stores as
            # {"id": "none"} alone when the dataset's default is none.
            self.codec = {"id": spec.CODEC_NONE, "requested": spec.CODEC_NONE}

    # -- schema JSON ---------------------------------------------------
    def _extra_json(self) -> dict[str, Any]:
        return {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type_name}
        out.update(self._extra_json())
        if self.nullable:  # absent otherwise: schemas of version 1 files stay as they were
            out["nullable"] = True
        out["codec"] = self.codec if self.codec is not None else {"id": "none"}
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items() if k != "type")
        return f"{self.type_name}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    @property
    def kind(self) -> Kind:
        """How rows of this field are read back (see :class:`Kind`)."""
        if self.variable:
            return Kind.VARIABLE
        return Kind.SCALAR if self.element_shape == () else Kind.FIXED

    def storage_json(self) -> dict[str, Any]:
        """The schema entry without its codec (nullability included): what the files
        of one dataset share."""
        entry = self.to_json()
        entry.pop("codec", None)
        return entry

    @property
    def element_bytes(self) -> int:
        return int(self.dtype.itemsize * int(np.prod(self.element_shape, dtype=np.int64)))

    # -- nulls ------------------------------------------------------------
    def null_value(self) -> Any:
        """What a null row stores (docs/FORMAT.md, section 10): an empty row of a
        variable field, zeros of a fixed one; in the form :meth:`convert` returns."""
        if self.kind in (Kind.STRING, Kind.BYTES):
            return b""
        if self.variable:
            return np.empty((0, *self.element_shape), self.dtype)
        if self.element_shape == ():
            return 0
        return np.zeros(self.element_shape, self.dtype)

    @property
    def expected(self) -> str:
        """What a value of this field is, in words (for error messages)."""
        if self.kind == Kind.STRING:
            return "str"
        if self.kind == Kind.BYTES:
            return "bytes"
        if self.kind == Kind.SCALAR:
            return "an integer" if self.dtype.kind in "iu" else "a number"
        if self.variable and self.element_shape == ():
            return f"a 1-D sequence of {self.dtype.name}"
        if self.variable:
            dims = ", ".join(map(str, self.element_shape))
            return f"an array of {self.dtype.name} of shape (n, {dims})"
        return f"an array of {self.dtype.name} of shape {self.element_shape}"

    def null_error(self, row: int | None) -> RowError:
        """The error for a null (``None``) given to a field that is not nullable."""
        return RowTypeError(
            f"{_where(self.name, row)}: expected {self.expected}, got None; declare the "
            f"field with nullable=True to store nulls"
        )

    def split_nulls(self, values: Any, first_row: int) -> tuple[Any, np.ndarray | None]:
        """A column without its nulls: ``(values, valid)``.

        ``values`` may be a :class:`~h5record.columns.Masked` column, or hold
        ``None`` entries (a list, a tuple or a 1-D object array). Null rows' entries become
        :meth:`null_value` whatever they held; ``valid`` is None when every
        row holds a value. A null in a field that is not nullable raises
        the error of :meth:`null_error` for its first row.
        """
        from ._fast import null_mask

        valid: np.ndarray | None = None
        if isinstance(values, Masked):
            valid, values = values.valid, values.values
        elif isinstance(values, (list, tuple)):
            valid = null_mask(values if isinstance(values, list) else list(values))
        elif isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
            valid = null_mask(values.tolist())  # e.g. a pandas object column
        if valid is None or valid.all():
            return values, None
        if not self.nullable:
            raise self.null_error(first_row + int(np.argmin(valid)))
        return self._fill_nulls(values, valid), valid

    def _fill_nulls(self, values: Any, valid: np.ndarray) -> Any:
        """``values`` with the rows where ``valid`` is False made null rows."""
        if isinstance(values, Ragged):
            # Without the null rows' elements: lengths of 0, no Python object a row.
            lengths = np.where(valid, values.lengths, 0)
            keep = np.repeat(valid, values.lengths)
            offsets = np.zeros(len(lengths) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            return Ragged(values.values[keep], offsets, values.kind)
        if (
            isinstance(values, np.ndarray)
            and not self.variable
            and values.dtype.kind in _NUMBER_KINDS
            and values.ndim >= 1
        ):
            filled = values.copy()
            filled[~valid] = 0
            return filled
        fill = "" if self.kind == Kind.STRING else self.null_value()  # a value to convert
        return [v if ok else fill for v, ok in zip(values, valid.tolist(), strict=True)]

    # -- conversion for the writer --------------------------------------
    def convert(self, value: Any, row: int | None, copy: bool = True) -> Any:
        """Check one value; return what the writer buffers.

        Variable fields return ``bytes`` or an array of elements; fixed
        fields return an array of ``element_shape`` or a scalar. An array
        returned never shares memory with ``value`` unless ``copy`` is
        False, for callers that copy it anyway.
        """
        raise NotImplementedError

    def convert_column(
        self, values: Any, first_row: int
    ) -> tuple[np.ndarray | Unjoined, np.ndarray | None]:
        """Check a whole column; return (flat values, lengths or None).

        The values returned may share memory with ``values``. Values checked
        row by row come back :class:`Unjoined`, for the writer to join.
        """
        if self.variable:
            # A joined column (ImageSequence: frames of element_shape) is checked
            # whole; one of another element shape goes row by row to name its error.
            if isinstance(values, Ragged) and values.values.shape[1:] == self.element_shape:
                return self._ragged_column(values, first_row)
            if isinstance(self, (String, Bytes)):
                from ._fast import encode_text

                parts, lengths, bad = encode_text(list(values), isinstance(self, String))
                if bad < 0:
                    return Unjoined(parts, self, int(lengths.sum())), lengths
                self.convert(values[bad], first_row + bad)  # raises the precise error
            parts = [self.convert(v, first_row + i, copy=False) for i, v in enumerate(values)]
            lengths = np.fromiter(map(len, parts), np.int64, len(parts))
            return Unjoined(parts, self, int(lengths.sum())), lengths
        shape = self.element_shape
        arr = _column_array(values)
        if (
            arr is not None
            and arr.ndim == 1 + len(shape)
            and arr.shape[1:] == shape
            and arr.dtype.kind in self._column_kinds()
        ):
            flat, bad = self._cast_column(arr)
            if flat is not None:
                return flat, None
            self.convert(values[bad], first_row + bad, copy=False)  # raises the precise error
        # Values of several shapes or Python types: each row says what is wrong with it.
        parts = [self.convert(v, first_row + i, copy=False) for i, v in enumerate(values)]
        return np.asarray(parts, dtype=self.dtype).reshape((len(parts), *shape)), None

    def _ragged_column(self, col: Ragged, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Check a column already joined (Arrow's layout): no Python object per row."""
        text = isinstance(self, String)
        if text or isinstance(self, Bytes):
            # Bytes refuses text, as convert() refuses str; String checks bytes.
            ok = col.values.dtype == np.uint8 and col.kind != (ARRAY if text else TEXT)
            if ok and text:
                bad = _bad_utf8_row(col)
                if bad >= 0:
                    raise RowError(
                        f"{_where(self.name, first_row + bad)}: bytes are not valid UTF-8"
                    )
        else:
            ok = col.kind == ARRAY and col.values.dtype.kind in self._column_kinds()
            if ok:
                flat, bad = self._cast_column(col.values)
                if flat is not None:
                    return flat, col.lengths
                row = int(np.searchsorted(col.offsets, bad, "right")) - 1
                self.convert(col[row], first_row + row)  # raises the precise error
        if not ok:
            if len(col):
                self.convert(col[0], first_row)  # raises the error of a wrong type
            raise RowTypeError(
                f"{_where(self.name, first_row)}: a {col.kind} column of {col.values.dtype} "
                f"does not fit a {self.type_name} field"
            )
        return col.values, col.lengths

    def _column_kinds(self) -> str:
        """Array kinds that :meth:`convert` accepts for every value of a fixed field."""
        return "biuf" if self.dtype.kind == "f" else "biu"

    def _cast_column(self, arr: np.ndarray) -> tuple[np.ndarray | None, int]:
        """Cast a fixed column; return (values, -1), or (None, its first bad row)."""
        dtype = self.dtype
        if dtype.kind == "f" and _may_overflow(arr.dtype, dtype):
            cast, overflow = _cast_float(arr, dtype)
            if overflow is not None:
                return None, _first_row(overflow)
            arr = cast
        elif _int_overflows(arr, dtype):
            info = np.iinfo(dtype)
            return None, _first_row((arr < info.min) | (arr > info.max))
        return np.ascontiguousarray(arr, dtype=dtype), -1


def _column_array(values: Any) -> np.ndarray | None:
    """A column as one array, or None if its values differ in shape."""
    if isinstance(values, np.ndarray):
        return values
    try:
        return np.asarray(values)
    except (ValueError, TypeError):
        return None


def _bad_utf8_row(col: Ragged) -> int:
    """The first row of a text column that is not valid UTF-8 on its own, or -1."""
    values = np.ascontiguousarray(col.values, np.uint8)
    return first_bad_utf8_row(values, np.ascontiguousarray(col.offsets, np.int64))


def _first_row(mask: np.ndarray) -> int:
    """Index of the first row of a column with a True in ``mask``."""
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


class Unjoined:
    """The checked values of a variable field's rows, in order, not joined yet.

    Each part is ``bytes`` or an array of the field's dtype and element
    shape. Joining copies every byte once; the writer does it where it
    knows where the bytes go in the file, to hash them in the same pass
    (:func:`h5record._fast.join_buffers`).
    """

    __slots__ = ("dtype", "element_shape", "elements", "parts")

    def __init__(self, parts: list[Any], field: Field, elements: int) -> None:
        self.parts = parts
        self.dtype = field.dtype
        self.element_shape = field.element_shape
        self.elements = elements  # along the first axis, all parts together

    def __len__(self) -> int:
        return self.elements

    @property
    def nbytes(self) -> int:
        row = int(np.prod(self.element_shape, dtype=np.int64)) * self.dtype.itemsize
        return self.elements * row

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("the rows of an Unjoined column are joined by a copy")
        return self.join() if dtype is None else self.join().astype(dtype, copy=False)

    def join(self) -> np.ndarray:
        """The values in one array."""
        from ._fast import join_buffers

        out = np.empty((self.elements, *self.element_shape), self.dtype)
        join_buffers(self.parts, out.reshape(-1).view(np.uint8))
        return out


class String(Field):
    """UTF-8 text of any length; read back as ``str``."""

    type_name = "String"
    variable = True
    kind = Kind.STRING  # type: ignore[assignment]
    dtype = np.dtype(np.uint8)

    def __init__(
        self, name: str = "string", compression: Any = None, *, nullable: bool = False
    ) -> None:
        super().__init__(name, compression, nullable=nullable)

    def convert(self, value: Any, row: int | None, copy: bool = True) -> bytes:
        if not isinstance(value, str):
            if value is None:
                raise self.null_error(row)
            raise RowTypeError(f"{_where(self.name, row)}: expected str, got {_describe(value)}")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RowError(
                f"{_where(self.name, row)}: string cannot be encoded as UTF-8 "
                f"({exc.reason} at position {exc.start})"
            ) from exc


class Bytes(Field):
    """Raw or encoded blobs (JPEG, PNG, audio, ...); read back as ``bytes``."""

    type_name = "Bytes"
    variable = True
    kind = Kind.BYTES  # type: ignore[assignment]
    dtype = np.dtype(np.uint8)

    def __init__(
        self, name: str = "bytes", compression: Any = None, *, nullable: bool = False
    ) -> None:
        super().__init__(name, compression, nullable=nullable)

    def convert(self, value: Any, row: int | None, copy: bool = True) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
            return value.tobytes()
        if value is None:
            raise self.null_error(row)
        raise RowTypeError(
            f"{_where(self.name, row)}: expected bytes, bytearray, memoryview or 1-D uint8 "
            f"array, got {_describe(value)}"
        )


class Sequence(Field):
    """A 1-D numeric sequence of any length; read back as a 1-D ndarray.

    ``dtype`` is any numeric numpy dtype (default int64).
    """

    type_name = "Sequence"
    variable = True

    def __init__(
        self,
        name: str = "sequence",
        dtype: Any = "int64",
        compression: Any = None,
        sub_attributes: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        super().__init__(name, compression, nullable=nullable)
        if sub_attributes is not None:
            raise SchemaError(
                f"field {name!r}: sub_attributes of h5record 1.0.4 are not supported; "
                "declare one Sequence field per attribute instead"
            )
        self.dtype = _numeric_dtype(dtype, name)

    def _extra_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str}

    def convert(self, value: Any, row: int | None, copy: bool = True) -> np.ndarray:
        if type(value) is np.ndarray and value.dtype == self.dtype and value.ndim == 1:
            return value.copy() if copy else value  # already exactly what is stored
        if value is None:
            raise self.null_error(row)
        where = _where(self.name, row)
        arr = _as_numeric_array(value, self.dtype, where, f"a 1-D sequence of {self.dtype.name}")
        if arr.ndim != 1:
            raise RowError(f"{where}: expected a 1-D sequence, got shape {arr.shape}")
        return _own(arr, value) if copy else arr


class FloatSequence(Sequence):
    """A 1-D float32 sequence."""

    type_name = "FloatSequence"

    def __init__(
        self, name: str = "sequence", compression: Any = None, *, nullable: bool = False
    ) -> None:
        super().__init__(name, "float32", compression, nullable=nullable)

    def _extra_json(self) -> dict[str, Any]:
        return {}


class Float16Sequence(Sequence):
    """A 1-D float16 sequence."""

    type_name = "Float16Sequence"

    def __init__(
        self, name: str = "sequence", compression: Any = None, *, nullable: bool = False
    ) -> None:
        super().__init__(name, "float16", compression, nullable=nullable)

    def _extra_json(self) -> dict[str, Any]:
        return {}


class _Scalar(Field):
    python_type: ClassVar[type] = int

    def convert(self, value: Any, row: int | None, copy: bool = True) -> Any:
        ok = (int, np.integer) if self.dtype.kind in "iu" else (int, float, np.integer, np.floating)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if not isinstance(value, ok) or (isinstance(value, bool) and self.dtype.kind == "f"):
            if value is None:
                raise self.null_error(row)
            raise RowTypeError(
                f"{_where(self.name, row)}: expected {self.expected}, got {_describe(value)}"
            )
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            if not info.min <= value <= info.max:
                raise _range_error(value, self.dtype, _where(self.name, row))
        elif not _fits_float(value, self.dtype):
            raise _float_range_error(value, self.dtype, _where(self.name, row))
        return value

    def _column_kinds(self) -> str:
        # Like convert: Python bools are ints, but not numbers for a float field.
        return "iuf" if self.dtype.kind == "f" else "biu"


class Integer(_Scalar):
    """One integer per row (default int64); read back as ``int``."""

    type_name = "Integer"

    def __init__(
        self,
        name: str = "label",
        dtype: Any = "int64",
        compression: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        super().__init__(name, compression, nullable=nullable)
        self.dtype = _numeric_dtype(dtype, name)
        if self.dtype.kind not in "iu":
            raise SchemaError(f"field {name!r}: Integer needs an integer dtype, got {self.dtype}")

    def _extra_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str}


class Float(_Scalar):
    """One floating point number per row (default float64); read back as ``float``."""

    type_name = "Float"

    def __init__(
        self,
        name: str = "label",
        dtype: Any = "float64",
        compression: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        super().__init__(name, compression, nullable=nullable)
        self.dtype = _numeric_dtype(dtype, name)
        if self.dtype.kind != "f":
            raise SchemaError(f"field {name!r}: Float needs a floating dtype, got {self.dtype}")

    def _extra_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.str}


class Float16(_Scalar):
    """One float16 number per row; read back as ``float``."""

    type_name = "Float16"
    dtype = np.dtype("<f2")

    def __init__(
        self, name: str = "label", compression: Any = None, *, nullable: bool = False
    ) -> None:
        super().__init__(name, compression, nullable=nullable)


class Array(Field):
    """A fixed-shape array of any numeric dtype per row."""

    type_name = "Array"

    def __init__(
        self,
        name: str,
        shape: Iterable[int],
        dtype: Any = "float32",
        compression: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        super().__init__(name, compression, nullable=nullable)
        self.dtype = _numeric_dtype(dtype, name)
        self.element_shape = _shape(shape, name)

    def _extra_json(self) -> dict[str, Any]:
        return {"shape": list(self.element_shape), "dtype": self.dtype.str}

    def convert(self, value: Any, row: int | None, copy: bool = True) -> np.ndarray:
        if value is None:
            raise self.null_error(row)
        where = _where(self.name, row)
        arr = _as_numeric_array(value, self.dtype, where, f"an array of shape {self.element_shape}")
        if arr.shape != self.element_shape:
            raise RowError(f"{where}: expected shape {self.element_shape}, got {arr.shape}")
        return _own(arr, value) if copy else arr


def _image_array(field: Field, value: Any, row: int | None, frames: bool, copy: bool) -> np.ndarray:
    c, h, w = field.chw  # type: ignore[attr-defined]
    if value is None:
        raise field.null_error(row)
    where = _where(field.name, row)
    what = "(t, c, h, w)" if frames else "(c, h, w)"
    arr = _as_numeric_array(value, np.dtype(np.uint8), where, f"a uint8 image array {what}")
    tail = arr.shape[1:] if frames else arr.shape
    if (frames and arr.ndim != 4) or (not frames and arr.ndim != 3):
        raise RowError(f"{where}: expected an array {what} = {(c, h, w)}, got shape {arr.shape}")
    if tail != (c, h, w):
        if tail != (h, w, c):
            raise RowError(
                f"{where}: expected image shape {(c, h, w)} (or {(h, w, c)}), got {tail}"
            )
        arr = np.ascontiguousarray(np.moveaxis(arr, -1, -3))  # channel-last, as PIL gives it
    return _own(arr, value) if copy else arr


def _image_args(
    cls: type, h: Any, w: Any, c: Any, name: Any, default_name: str
) -> tuple[Any, Any, Any, Any]:
    """``(h, w, c, name)`` of an image field, also given name first as for other fields.

    ``Image("img", 224, 224)`` and ``Image("img", 224, 224, 3)`` mean
    ``Image(224, 224, name="img")`` and ``Image(224, 224, 3, name="img")``.
    """
    call = f"{cls.__name__}(name, h, w, c=3) or {cls.__name__}(h, w, c=3, name=...)"
    if not isinstance(h, str):
        return h, w, 3 if c is None else c, name
    if c is None or not (name == default_name or type(name) is int):
        raise SchemaError(
            f"{cls.__name__}: got h={h!r}, w={w!r}, c={c!r}, name={name!r}; call it as {call}"
        )
    return w, c, 3 if name == default_name else name, h


class Image(Field):
    """A uint8 image of fixed size, stored and read back as (c, h, w).

    ``Image(h, w, c=3, name="image")``; the name may also come first, as for
    other fields: ``Image("img", 224, 224)``.
    """

    type_name = "Image"
    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        h: Any,
        w: Any,
        c: Any = None,
        name: Any = "image",
        compression: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        h, w, c, name = _image_args(Image, h, w, c, name, "image")
        super().__init__(name, compression, nullable=nullable)
        self.chw = _shape((c, h, w), name, "Image(h, w, c=3, name=...)")
        self.element_shape = self.chw

    def _extra_json(self) -> dict[str, Any]:
        return {"shape": list(self.chw)}

    def convert(self, value: Any, row: int | None, copy: bool = True) -> np.ndarray:
        return _image_array(self, value, row, frames=False, copy=copy)

    def read_image(self, filename: str, resize: bool = True) -> np.ndarray:
        """Read an image file with Pillow into a (c, h, w) uint8 array."""
        return _read_pil(filename, self.chw, resize)


class ImageSequence(Field):
    """Any number of uint8 frames of fixed size; read back as (t, c, h, w).

    ``ImageSequence(h, w, c=3, name="frames")``, or name first as for other
    fields: ``ImageSequence("clip", 64, 64)``.
    """

    type_name = "ImageSequence"
    variable = True
    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        h: Any,
        w: Any,
        c: Any = None,
        name: Any = "frames",
        compression: Any = None,
        *,
        nullable: bool = False,
    ) -> None:
        h, w, c, name = _image_args(ImageSequence, h, w, c, name, "frames")
        super().__init__(name, compression, nullable=nullable)
        self.chw = _shape((c, h, w), name, "ImageSequence(h, w, c=3, name=...)")
        self.element_shape = self.chw

    def _extra_json(self) -> dict[str, Any]:
        return {"shape": list(self.chw)}

    def convert(self, value: Any, row: int | None, copy: bool = True) -> np.ndarray:
        return _image_array(self, value, row, frames=True, copy=copy)

    def read_gif(self, filename: str, resize: bool = True) -> np.ndarray:
        """Read every frame of an animated image with Pillow into (t, c, h, w) uint8."""
        pil = _pil()
        frames = []
        with pil.open(filename) as img:
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                frames.append(_pil_to_chw(img.copy(), self.chw, resize))
        return np.stack(frames)


def _pil() -> Any:
    try:
        from PIL import Image as PILImage
    except ImportError as exc:
        raise ImportError(
            "reading image files needs Pillow: pip install 'h5record[images]'"
        ) from exc
    return PILImage


def _pil_to_chw(img: Any, chw: tuple[int, ...], resize: bool) -> np.ndarray:
    c, h, w = chw
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
    if mode is None:
        raise SchemaError(f"reading image files supports 1, 3 or 4 channels, not {c}")
    img = img.convert(mode)
    if resize:
        img = img.resize((w, h))
    arr = np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], c)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _read_pil(filename: str, chw: tuple[int, ...], resize: bool) -> np.ndarray:
    with _pil().open(filename) as img:
        return _pil_to_chw(img, chw, resize)


def _numeric_dtype(dtype: Any, name: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise SchemaError(f"field {name!r}: {dtype!r} is not a numpy dtype") from exc
    if dt.kind not in _NUMBER_KINDS or dt.kind == "b":
        raise SchemaError(f"field {name!r}: dtype must be a numeric type, got {dt}")
    return dt.newbyteorder("<") if dt.itemsize > 1 else dt


# The reader builds arrays of a batch axis, a padded axis and the element
# shape; numpy 1.x allows 32 dimensions in all.
MAX_ELEMENT_DIMS = 30


def _shape(shape: Iterable[int], name: str, call: str = "") -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        hint = f"; call it as {call}" if call else ""
        raise SchemaError(
            f"field {name!r}: shape must be a tuple of ints, got {shape!r}{hint}"
        ) from exc
    if any(s <= 0 for s in out):
        raise SchemaError(f"field {name!r}: shape must be positive, got {out}")
    if len(out) > MAX_ELEMENT_DIMS:
        raise SchemaError(
            f"field {name!r}: shape has {len(out)} dimensions; at most {MAX_ELEMENT_DIMS} "
            "are supported"
        )
    return out


FIELD_TYPES: dict[str, type[Field]] = {
    cls.type_name: cls
    for cls in (
        String,
        Bytes,
        Sequence,
        FloatSequence,
        Float16Sequence,
        Integer,
        Float,
        Float16,
        Array,
        Image,
        ImageSequence,
    )
}


def field_from_json(obj: Mapping[str, Any]) -> Field:
    """Rebuild a field from its schema JSON entry."""
    try:
        cls = FIELD_TYPES[obj["type"]]
        name = obj["name"]
        codec = obj.get("codec")
        nullable = obj.get("nullable", False)
        if type(nullable) is not bool:
            raise TypeError(f"nullable must be true or false, got {nullable!r}")
        if cls is Image or cls is ImageSequence:
            c, h, w = obj["shape"]
            field: Field = cls(h, w, c, name=name, nullable=nullable)
        elif cls is Array:
            field = Array(name, obj["shape"], obj["dtype"], nullable=nullable)
        elif "dtype" in obj:
            field = cls(name, dtype=obj["dtype"], nullable=nullable)  # type: ignore[call-arg]
        else:
            field = cls(name, nullable=nullable)  # type: ignore[call-arg]
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"invalid field entry in schema: {obj!r}") from exc
    parsed = codecs.parse(codec, field.name) if codec else None
    # {"id": "none"} alone is what a field that set no codec is stored with:
    # read back as unset, a schema taken from a file follows the default of
    # the writer it is given to (FORMAT.md, section 5).
    field.codec = None if parsed == _UNSET_CODEC else parsed
    return field


# The stored codec of a field that took a dataset default of no compression.
_UNSET_CODEC = {"id": spec.CODEC_NONE}


class Schema:
    """An ordered collection of uniquely named fields."""

    def __init__(self, fields: Iterable[Field]) -> None:
        self.fields = list(fields)
        seen: set[str] = set()
        for field in self.fields:
            if not isinstance(field, Field):
                raise SchemaError(f"schema entries must be h5record fields, got {field!r}")
            if field.name in seen:
                raise SchemaError(f"duplicate field name {field.name!r} in schema")
            seen.add(field.name)
        if not self.fields:
            raise SchemaError("a schema needs at least one field")
        self.names = [f.name for f in self.fields]
        self.by_name = {f.name: f for f in self.fields}

    @classmethod
    def coerce(cls, schema: Any) -> Schema:
        """Accept a Schema, or a tuple, list or dict of fields (as 1.0.4 did)."""
        if isinstance(schema, Schema):
            return schema
        if isinstance(schema, Field):
            return cls([schema])
        if isinstance(schema, Mapping):
            fields = []
            for key, field in schema.items():
                if isinstance(field, Field) and field.name != key:
                    raise SchemaError(
                        f"schema key {key!r} differs from its field's name {field.name!r}"
                    )
                fields.append(field)
            return cls(fields)
        if isinstance(schema, (list, tuple)):
            return cls(schema)
        raise SchemaError(
            f"schema must be a tuple, list or dict of fields, got {type(schema).__name__}"
        )

    def to_json(self) -> str:
        return json.dumps({"fields": [f.to_json() for f in self.fields]})

    @property
    def format_version(self) -> int:
        """The format version a file of this schema is written in (FORMAT.md, section 8):
        2 with a nullable field, else 1."""
        if any(f.nullable for f in self.fields):
            return spec.NULLABLE_VERSION
        return spec.FIRST_VERSION

    def storage_difference(
        self, other: Schema, this: str = "this schema", that: str = "the other"
    ) -> str | None:
        """How ``other`` stores rows differently (field names, order, types, dtypes,
        shapes; codecs may differ), in words naming ``this`` and ``that``; None if not."""
        mine = [f.storage_json() for f in self.fields]
        theirs = [f.storage_json() for f in other.fields]
        if mine == theirs:
            return None
        names, other_names = [e["name"] for e in mine], [e["name"] for e in theirs]
        if names != other_names:
            missing = [n for n in names if n not in other_names]
            extra = [n for n in other_names if n not in names]
            parts = [f"{this} has field(s) {missing} that {that} lacks"] if missing else []
            if extra:
                parts.append(f"{that} has field(s) {extra} that {this} lacks")
            return "; ".join(parts) or f"{this} orders its fields {names}, {that} {other_names}"
        a, b = next((a, b) for a, b in zip(mine, theirs, strict=True) if a != b)
        if {**a, "nullable": True} == {**b, "nullable": True}:
            yes, no = (this, that) if a.get("nullable") else (that, this)
            return f"field {a['name']!r} is nullable in {yes}, but not in {no}"
        return f"field {a['name']!r} is {a} in {this}, but {b} in {that}"

    @classmethod
    def from_json(cls, text: str) -> Schema:
        try:
            obj = json.loads(text)
            entries = obj["fields"]
            if not isinstance(entries, list):
                raise TypeError(f"'fields' is a {type(entries).__name__}, not a list")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise SchemaError(
                f"schema attribute is not valid schema JSON: {str(text)[:200]!r} ({exc})"
            ) from exc
        return cls(field_from_json(e) for e in entries)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.fields == other.fields

    def __repr__(self) -> str:
        return f"Schema({self.fields!r})"
