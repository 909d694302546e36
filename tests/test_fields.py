"""Fields and schema: JSON round trip, invalid definitions, converting values, image helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings

from h5record import (
    Array,
    Bytes,
    Field,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    H5RecordError,
    Image,
    ImageSequence,
    Integer,
    RowError,
    RowTypeError,
    Schema,
    SchemaError,
    Sequence,
    String,
    codecs,
)
from h5record.fields import field_from_json
from tests.strategies import INT_DTYPES, NUMERIC_DTYPES, schemas

ALL = [
    String("s", compression="zstd"),
    Bytes("b", compression="lzf"),
    Integer("i", dtype="int8"),
    Float("f", dtype="float32"),
    Float16("h"),
    Sequence("q", dtype="uint16"),
    FloatSequence("fs"),
    Float16Sequence("hs"),
    Array("a", (2, 2), "int64"),
    Image(8, 6, 1, name="img", compression=("gzip", 9)),
    ImageSequence(4, 4, name="gif"),
]


def test_schema_json_round_trip():
    schema = Schema(ALL)
    again = Schema.from_json(schema.to_json())
    assert again == schema
    assert [f.type_name for f in again] == [f.type_name for f in ALL]
    assert again["img"].element_shape == (1, 8, 6)
    assert again["img"].codec == {"id": "gzip", "level": 9}
    assert again["gif"].element_shape == (3, 4, 4) and again["gif"].variable


@settings(max_examples=50)
@given(schemas())
def test_schema_json_round_trip_of_any_schema(fields):
    schema = Schema(fields)
    text = schema.to_json()
    again = Schema.from_json(text)
    assert again == schema
    for a, b in zip(again, schema, strict=True):
        assert type(a) is type(b)
        assert (a.name, a.dtype, a.element_shape, a.variable) == (
            b.name,
            b.dtype,
            b.element_shape,
            b.variable,
        )
        assert a.codec == b.codec
    # Dtypes are numpy strings with explicit byte order (FORMAT.md, section 3).
    for entry in json.loads(text)["fields"]:
        assert set(entry) >= {"name", "type", "codec"}
        if "dtype" in entry:
            assert entry["dtype"][0] in "<|" and np.dtype(entry["dtype"]).kind in "iuf"


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_dtypes_are_stored_little_endian(dtype):
    big = np.dtype(dtype).newbyteorder(">")
    for field in (Sequence("x", dtype=big), Array("x", (2,), big)):
        assert field.dtype == np.dtype(dtype).newbyteorder("<")
        assert field.to_json()["dtype"] == np.dtype(dtype).newbyteorder("<").str
    if dtype in INT_DTYPES:
        assert Integer("x", dtype=big).to_json()["dtype"] == np.dtype(dtype).newbyteorder("<").str


def test_field_equality_and_repr():
    assert Integer("a") == Integer("a") and hash(Integer("a")) == hash(Integer("a"))
    assert Integer("a") != Integer("a", dtype="int32")
    assert Integer("a") != Integer("b")
    assert String("a") != Bytes("a")
    assert String("a") != String("a", compression="lzf")
    assert Integer("a") != "a"
    assert repr(Sequence("q", dtype="uint16")).startswith("Sequence(name='q'")
    assert Schema([String("a")]) != Schema([String("b")])


def test_schema_forms_of_1_0_4():
    fields = (String(name="a"), Float(name="b"))
    assert Schema.coerce(fields) == Schema.coerce(list(fields))
    assert Schema.coerce({"a": fields[0], "b": fields[1]}) == Schema(fields)
    assert Schema.coerce(fields[0]) == Schema([fields[0]])
    assert Schema.coerce(Schema(fields)) == Schema(fields)
    with pytest.raises(SchemaError, match="differs"):
        Schema.coerce({"x": fields[0]})
    with pytest.raises(SchemaError, match="tuple, list or dict"):
        Schema.coerce("a")
    with pytest.raises(SchemaError, match="must be h5record fields"):
        Schema.coerce([fields[0], "b"])
    schema = Schema(fields)
    assert len(schema) == 2 and schema.names == ["a", "b"] and schema["b"] is fields[1]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Schema([String("a"), Integer("a")]), "duplicate field name 'a'"),
        (lambda: Schema([]), "at least one field"),
        (lambda: String("a/b"), "without '/'"),
        (lambda: String("/"), "without '/'"),
        (lambda: String(""), "non-empty"),
        (lambda: Integer(5), "non-empty string"),
        (lambda: Float(None), "non-empty string"),
        (lambda: String(".hidden"), "got '.hidden'"),
        (lambda: Sequence("x", dtype="U4"), "numeric"),
        (lambda: Sequence("x", dtype="bool"), "numeric"),
        (lambda: Sequence("x", dtype="complex64"), "numeric"),
        (lambda: Sequence("x", dtype="datetime64[s]"), "numeric"),
        (lambda: Sequence("x", dtype="nonsense"), "not a numpy dtype"),
        (lambda: Array("x", (2,), object), "numeric"),
        (lambda: Integer("x", dtype="float32"), "integer dtype"),
        (lambda: Float("x", dtype="int32"), "floating dtype"),
        (lambda: Array("x", (0, 3)), "positive"),
        (lambda: Array("x", (2, -1)), "positive"),
        (lambda: Array("x", 5), "tuple of ints"),
        (lambda: Array("x", ("a",)), "tuple of ints"),
        (lambda: Image(4, "w"), "tuple of ints"),
        (lambda: Image(0, 4), "positive"),
        (lambda: ImageSequence(4, 4, c=0), "positive"),
        (lambda: String("x", compression="snappy"), "unknown compression"),
        (lambda: Sequence("x", sub_attributes=["a"]), "sub_attributes"),
        (lambda: Schema.from_json("{not json"), "not valid schema JSON"),
        (lambda: Schema.from_json('{"no_fields": []}'), "not valid schema JSON"),
        (lambda: Schema.from_json('{"fields": [{"name": "x", "type": "Nope"}]}'), "invalid field"),
        (lambda: Schema.from_json('{"fields": [{"type": "String"}]}'), "invalid field"),
        (lambda: Schema.from_json('{"fields": [{"name": "x", "type": "Image"}]}'), "invalid field"),
        (
            lambda: Schema.from_json('{"fields": [{"name": "x", "type": "Array", "shape": [2]}]}'),
            "invalid field",
        ),
        (
            lambda: Schema.from_json(
                '{"fields": [{"name": "x", "type": "Sequence", "dtype": "<U2"}]}'
            ),
            "invalid field",
        ),
    ],
)
def test_invalid_definitions(make, message):
    with pytest.raises(SchemaError, match=message) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, H5RecordError)


def test_field_from_json_keeps_the_codec():
    field = field_from_json({"name": "t", "type": "String", "codec": {"id": "lzf"}})
    assert isinstance(field, String) and field.codec == {"id": "lzf"}
    with pytest.raises(SchemaError):
        field_from_json({"name": "t", "type": "String", "codec": {"id": "brotli"}})


def test_codec_helper():
    assert codecs.zstd(level=5, block_bytes=4096) == {
        "id": "zstd",
        "level": 5,
        "block_bytes": 4096,
        "dictionary": None,
        "dictionary_bytes": None,
    }
    for bad in (0, 255, 1.5, "big", codecs.ZSTD_MAX_DICT_BYTES + 1):
        with pytest.raises(SchemaError, match="dictionary_bytes"):
            codecs.zstd(dictionary_bytes=bad)
    assert codecs.parse(("gzip", 2)) == {"id": "gzip", "level": 2}
    assert codecs.parse("gzip") == {"id": "gzip", "level": codecs.DEFAULT_GZIP_LEVEL}
    assert codecs.parse(None) == {"id": "none"}
    assert codecs.parse("none") == {"id": "none"}


# -- converting one value for the writer ---------------------------------------------


def _convert(field: Field, value):
    return field.convert(value, 7)


BAD_VALUES = [
    # String
    (String("x"), 5, RowTypeError, "expected str, got int 5"),
    (
        String("x"),
        None,
        RowTypeError,
        "expected str, got None; declare the field with nullable",
    ),
    (String("x"), b"bytes", RowTypeError, "expected str, got bytes"),
    (String("x"), ["a"], RowTypeError, "expected str, got list"),
    (String("x"), "ok \ud800", RowError, "cannot be encoded as UTF-8.*position 3"),
    (String("x"), "\udfff", RowError, "cannot be encoded as UTF-8"),
    # Bytes
    (Bytes("x"), "text", RowTypeError, "expected bytes.*got str"),
    (Bytes("x"), None, RowTypeError, "expected bytes, got None; declare"),
    (Bytes("x"), 5, RowTypeError, "expected bytes.*got int"),
    (Bytes("x"), [1, 2], RowTypeError, "expected bytes.*got list"),
    (Bytes("x"), np.zeros((2, 2), np.uint8), RowTypeError, r"shape \(2, 2\)"),
    (Bytes("x"), np.zeros(3, np.int32), RowTypeError, "dtype int32"),
    # Integer
    (Integer("x"), "3", RowTypeError, "expected an integer, got str"),
    (Integer("x"), None, RowTypeError, "expected an integer, got None; declare"),
    (Integer("x"), 1.5, RowTypeError, "expected an integer, got float"),
    (Integer("x"), 2.0, RowTypeError, "expected an integer, got float"),
    (Integer("x"), np.float64(2.0), RowTypeError, "expected an integer"),
    (Integer("x"), float("nan"), RowTypeError, "expected an integer"),
    (Integer("x"), [1], RowTypeError, "expected an integer, got list"),
    (Integer("x"), 2**63, RowError, "value 9223372036854775808 is out of range for int64"),
    (Integer("x"), -(2**63) - 1, RowError, "out of range for int64"),
    (Integer("x", dtype="uint8"), 256, RowError, r"value 256 is out of range for uint8 \[0, 255\]"),
    (Integer("x", dtype="uint8"), -1, RowError, "value -1 is out of range for uint8"),
    (Integer("x", dtype="int8"), np.int64(128), RowError, "value 128 is out of range for int8"),
    (Integer("x", dtype="uint64"), 2**64, RowError, "out of range for uint64"),
    # Float and Float16
    (Float("x"), "1.0", RowTypeError, "expected a number, got str"),
    (Float("x"), None, RowTypeError, "expected a number, got None; declare"),
    (Float("x"), True, RowTypeError, "expected a number, got bool"),
    (Float("x"), [1.0], RowTypeError, "expected a number, got list"),
    (Float("x"), 1 + 2j, RowTypeError, "expected a number, got complex"),
    (Float16("x"), "x", RowTypeError, "expected a number"),
    (Float16("x"), None, RowTypeError, "expected a number"),
    # Sequence
    (Sequence("x"), [1.5], RowTypeError, "floating point data"),
    (Sequence("x"), np.array([1.0, 2.0]), RowTypeError, "floating point data"),
    (Sequence("x"), "abc", RowTypeError, "expected a 1-D sequence of int64, got str"),
    (Sequence("x"), None, RowTypeError, "expected a 1-D sequence of int64, got None"),
    (Sequence("x"), ["a"], RowTypeError, "expected a 1-D sequence"),
    (Sequence("x"), [1, None], RowTypeError, "expected a 1-D sequence"),
    (Sequence("x"), [[1], [1, 2]], RowTypeError, "expected a 1-D sequence"),
    (Sequence("x"), [[1, 2]], RowError, r"expected a 1-D sequence, got shape \(1, 2\)"),
    (Sequence("x"), 5, RowError, r"expected a 1-D sequence, got shape \(\)"),
    (Sequence("x", dtype="uint8"), [300], RowError, "value 300 is out of range for uint8"),
    (Sequence("x", dtype="uint8"), [1, -1], RowError, "value -1 is out of range for uint8"),
    (Sequence("x", dtype="int8"), np.array([200], np.uint64), RowError, "value 200 is out"),
    (Sequence("x", dtype="int32"), [2**40], RowError, "value 1099511627776 is out of range"),
    (Sequence("x", dtype="uint64"), [-1], RowError, "value -1 is out of range for uint64"),
    (Sequence("x", dtype="uint64"), [2**64], RowTypeError, "expected a 1-D sequence"),
    (FloatSequence("x"), ["a"], RowTypeError, "expected a 1-D sequence of float32"),
    (FloatSequence("x"), None, RowTypeError, "got None"),
    (FloatSequence("x"), [[1.0]], RowError, "expected a 1-D sequence, got shape"),
    (Float16Sequence("x"), "abc", RowTypeError, "expected a 1-D sequence of float16"),
    # Array
    (Array("x", (2, 3), "int32"), np.zeros((3, 2), np.int32), RowError, "expected shape"),
    (Array("x", (2, 3), "int32"), np.zeros(6, np.int32), RowError, r"got \(6,\)"),
    (Array("x", (2, 3), "int32"), np.zeros((2, 3)), RowTypeError, "floating point data"),
    (
        Array("x", (2, 3), "int32"),
        None,
        RowTypeError,
        r"int32 of shape \(2, 3\), got None",
    ),
    (Array("x", (2,), "int32"), [[1], [1, 2]], RowTypeError, "expected an array of shape"),
    (Array("x", (2,), "int32"), ["a", "b"], RowTypeError, "expected an array of shape"),
    (Array("x", (2,), "int32"), [2**31, 0], RowError, "value 2147483648 is out of range"),
    (Array("x", (2,), "uint16"), [-1, 0], RowError, "value -1 is out of range for uint16"),
    # Image and ImageSequence
    (Image(4, 5, name="x"), np.zeros((3, 4, 5)), RowTypeError, "floating point data"),
    (Image(4, 5, name="x"), np.zeros((3, 5, 4), np.uint8), RowError, "expected image shape"),
    (Image(4, 5, name="x"), np.zeros((4, 5), np.uint8), RowError, r"got shape \(4, 5\)"),
    (Image(4, 5, name="x"), np.full((3, 4, 5), 256), RowError, "value 256 is out of range"),
    (Image(4, 5, name="x"), np.full((3, 4, 5), -1), RowError, "value -1 is out of range"),
    (Image(4, 5, name="x"), None, RowTypeError, "got None"),
    (Image(4, 5, name="x"), "img.png", RowTypeError, "expected a uint8 image array"),
    (ImageSequence(2, 2, 1, name="x"), np.zeros((1, 2, 2), np.uint8), RowError, "(t, c, h, w)"),
    (ImageSequence(2, 2, 1, name="x"), np.zeros((1, 1, 3, 3), np.uint8), RowError, "image shape"),
    (ImageSequence(2, 2, 1, name="x"), np.zeros((1, 1, 2, 2)), RowTypeError, "floating point"),
    (
        ImageSequence(2, 2, 1, name="x"),
        None,
        RowTypeError,
        r"uint8 of shape \(n, 1, 2, 2\), got None;",
    ),
]


@pytest.mark.parametrize(
    "field,value,error,message",
    BAD_VALUES,
    ids=[f"{f.type_name}-{m}"[:60] for f, _, _, m in BAD_VALUES],
)
def test_bad_value_names_field_and_row(field, value, error, message):
    with pytest.raises(error, match=f"field 'x', row 7: .*{message}") as info:
        _convert(field, value)
    exc = info.value
    assert type(exc) is error  # a type problem is a RowTypeError, a value problem is not
    assert isinstance(exc, RowError) and isinstance(exc, ValueError)
    assert isinstance(exc, H5RecordError)
    assert isinstance(exc, TypeError) == (error is RowTypeError)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        (String("x"), "é✓🎉\x00", "é✓🎉\x00".encode()),
        (String("x"), "", b""),
        (Bytes("x"), b"\x00\xff", b"\x00\xff"),
        (Bytes("x"), bytearray(b"ab"), b"ab"),
        (Bytes("x"), memoryview(b"ab"), b"ab"),
        (Bytes("x"), np.array([1, 2], np.uint8), b"\x01\x02"),
        (Integer("x"), np.int8(-3), -3),
        (Integer("x"), np.array(5), 5),
        (Integer("x", dtype="uint64"), 2**64 - 1, 2**64 - 1),
        (Integer("x", dtype="int8"), -128, -128),
        (Float("x"), 3, 3.0),
        (Float("x"), np.float32(0.5), 0.5),
        (Float("x"), float("inf"), float("inf")),
        (Float16("x"), 1.5, 1.5),
    ],
)
def test_good_values(field, value, expected):
    got = _convert(field, value)
    assert got == expected
    if isinstance(expected, bytes):
        assert type(got) is bytes


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_sequences_convert_to_the_field_dtype(dtype):
    field = Sequence("x", dtype=dtype)
    for value in ([1, 2, 3], (1, 2, 3), np.array([1, 2, 3], np.int64), np.array([1, 2, 3])):
        got = _convert(field, value)
        assert got.dtype == np.dtype(dtype) and got.tolist() == [1, 2, 3]
    assert _convert(field, np.zeros(0, dtype)).shape == (0,)
    if dtype in INT_DTYPES:
        info = np.iinfo(dtype)
        edges = _convert(field, np.array([info.min, info.max], dtype))
        assert edges.tolist() == [info.min, info.max]
        assert _convert(field, [int(info.min), int(info.max)]).tolist() == edges.tolist()


@pytest.mark.parametrize("how", ["sequence", "array", "integer-column"])
def test_uint64_values_given_as_python_ints(how):
    values = [0, 2**64 - 1]
    if how == "sequence":
        got = Sequence("x", dtype="uint64").convert(values, 0)
    elif how == "array":
        got = Array("x", (2,), "uint64").convert(values, 0)
    else:
        got, _ = Integer("x", dtype="uint64").convert_column(values, 0)
    assert got.dtype == np.uint64 and got.tolist() == values


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_empty_list_is_an_empty_integer_sequence(dtype, empty):
    got = Sequence("x", dtype=dtype).convert(empty, 0)
    assert got.dtype == np.dtype(dtype) and got.shape == (0,)


@pytest.mark.parametrize("field", [FloatSequence("x"), Float16Sequence("x")])
def test_empty_list_is_an_empty_float_sequence(field):
    got = field.convert([], 0)
    assert got.dtype == field.dtype and got.shape == (0,)


def test_images_accept_channel_last_and_other_int_dtypes():
    chw = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    field = Image(4, 5, name="x")
    np.testing.assert_array_equal(_convert(field, chw), chw)
    got = _convert(field, hwc)
    np.testing.assert_array_equal(got, chw)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(_convert(field, chw.astype(np.int64)), chw)
    frames = np.stack([chw, chw[::-1]])
    seq = ImageSequence(4, 5, name="x")
    np.testing.assert_array_equal(_convert(seq, frames), frames)
    np.testing.assert_array_equal(_convert(seq, frames.transpose(0, 2, 3, 1)), frames)
    assert _convert(seq, np.zeros((0, 3, 4, 5), np.uint8)).shape == (0, 3, 4, 5)


@pytest.mark.parametrize(
    "field,value",
    [
        (Float("x"), 10**400),
        (Float("x", dtype="float32"), 1e300),
        (Float16("x"), 1e5),
        (FloatSequence("x"), [1.0, 1e300]),
    ],
    ids=["int-too-big-for-float64", "float32-overflow", "float16-overflow", "sequence"],
)
def test_numbers_too_large_for_the_float_dtype_are_row_errors(field, value):
    with pytest.raises(RowError, match="field 'x', row 7"):
        _convert(field, value)


# -- converting a column (write_batch) --------------------------------------------------


def test_convert_column_equals_converting_each_value():
    cases = [
        (String("x"), ["a", "", "é🎉"]),
        (Bytes("x"), [b"a", bytearray(b"bc"), b""]),
        (Integer("x", dtype="int16"), [1, -2, 3]),
        (Float("x", dtype="float32"), [0.5, 2, -1.25]),
        (Sequence("x", dtype="uint8"), [[1, 2], np.array([3], np.uint8), [255]]),
        (Array("x", (2,), "int8"), [[1, 2], np.array([3, 4]), (5, 6)]),
        (Image(2, 2, 1, name="x"), [np.ones((1, 2, 2), np.uint8)] * 2),
    ]
    for field, values in cases:
        flat, lengths = field.convert_column(values, 0)
        parts = [field.convert(v, i) for i, v in enumerate(values)]
        if field.variable:
            want = [np.frombuffer(p, np.uint8) if isinstance(p, bytes) else p for p in parts]
            np.testing.assert_array_equal(flat, np.concatenate(want))
            assert lengths.tolist() == [len(p) for p in parts]
        else:
            assert lengths is None
            np.testing.assert_array_equal(flat, np.asarray(parts, field.dtype))
        assert flat.dtype == field.dtype


@pytest.mark.parametrize(
    "field,values,message",
    [
        (String("x"), ["a", "b", 3], "field 'x', row 12: expected str"),
        (String("x"), ["a", "\ud800"], "field 'x', row 11: string cannot be encoded"),
        (Bytes("x"), [b"a", "b"], "field 'x', row 11: expected bytes"),
        (Integer("x"), [1, None], "field 'x', row 11: expected an integer"),
        (Integer("x"), [1, 2**70], "field 'x', row 11: value 1180591620717411303424 is out"),
        (Sequence("x"), [[1], [1.5]], "field 'x', row 11: .*floating point"),
    ],
)
def test_column_errors_name_field_and_row(field, values, message):
    with pytest.raises(RowError, match=message):
        field.convert_column(values, 10)


@pytest.mark.parametrize(
    "field,values,message",
    [
        (Integer("x", dtype="uint8"), [1, 2, 300], "field 'x', row 12: value 300"),
        (Array("x", (3,), "float32"), [np.zeros(3), np.zeros(4)], "field 'x', row 11"),
        (
            Image(2, 3, 1, name="x"),
            [np.zeros((1, 2, 3), np.uint8), np.zeros((1, 3, 2), np.uint8)],
            "field 'x', row 11",
        ),
    ],
    ids=["out-of-range", "array-wrong-shape", "image-wrong-shape"],
)
def test_fixed_column_errors_name_the_row(field, values, message):
    with pytest.raises(RowError, match=message):
        field.convert_column(values, 10)


def test_column_refuses_what_a_single_row_refuses():
    with pytest.raises(RowTypeError):
        Float("x").convert(True, 0)
    with pytest.raises(RowTypeError, match="field 'x'"):
        Float("x").convert_column([True, False], 0)


# -- image files ------------------------------------------------------------------------


def test_read_image_and_gif(tmp_path):
    from PIL import Image as PILImage

    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :, 0] = 200
    PILImage.fromarray(rgb).save(tmp_path / "a.png")
    arr = Image(5, 8).read_image(str(tmp_path / "a.png"))
    assert arr.shape == (3, 5, 8) and arr.dtype == np.uint8 and arr[0].min() == 200
    assert arr[1].max() == 0
    full = Image(10, 20).read_image(str(tmp_path / "a.png"), resize=False)
    np.testing.assert_array_equal(full, rgb.transpose(2, 0, 1))
    gray = Image(10, 20, c=1).read_image(str(tmp_path / "a.png"))
    assert gray.shape == (1, 10, 20)
    frames = [PILImage.fromarray(np.full((6, 6), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    gif = ImageSequence(3, 3, 1).read_gif(str(tmp_path / "a.gif"))
    assert gif.shape == (3, 1, 3, 3) and gif.dtype == np.uint8
    assert [int(f.mean()) for f in gif] == [0, 128, 255]
    with pytest.raises(SchemaError, match="1, 3 or 4 channels"):
        Image(4, 4, c=2).read_image(str(tmp_path / "a.png"))


def test_image_fields_take_the_name_first_too():
    assert Image("img", 224, 224) == Image(224, 224, name="img")
    assert Image("img", 32, 24, 1).element_shape == (1, 32, 24)
    assert ImageSequence("clip", 8, 6).to_json() == ImageSequence(8, 6, name="clip").to_json()
    assert Image(5, 4).name == "image" and Image(5, 4).element_shape == (3, 5, 4)
    with pytest.raises(SchemaError, match=r"call it as Image\(name, h, w, c=3\)"):
        Image("img", 224)  # no width
    with pytest.raises(SchemaError, match=r"call it as Image\(name, h, w"):
        Image("img", 224, 224, name="other")
    with pytest.raises(SchemaError, match=r"call it as Image\(h, w, c=3, name=...\)"):
        Image(224, "img", 224)


def test_codec_none_read_back_tells_a_default_from_a_choice():
    # {"id": "none"} alone is what a field that set no codec is stored with: unset
    # again when read back, so that a schema reused with another default follows it.
    unset, chosen = String("a"), String("b", compression="none")
    assert unset.to_json()["codec"] == {"id": "none"}
    assert chosen.to_json()["codec"] == {"id": "none", "requested": "none"}
    again = Schema.from_json(Schema([unset, chosen]).to_json())
    assert again["a"].codec is None
    assert again["b"].codec == {"id": "none", "requested": "none"}
    stored_raw = field_from_json(
        {"name": "j", "type": "Bytes", "codec": {"id": "none", "requested": "zstd"}}
    )
    assert stored_raw.codec == {"id": "none", "requested": "zstd"}
