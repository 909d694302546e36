"""Fields and schema: JSON round trip, invalid definitions, image helpers."""

from __future__ import annotations

import numpy as np
import pytest

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
    Schema,
    SchemaError,
    Sequence,
    String,
    codecs,
)

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


def test_schema_forms_of_1_0_4():
    fields = (String(name="a"), Float(name="b"))
    assert Schema.coerce(fields) == Schema.coerce(list(fields))
    assert Schema.coerce({"a": fields[0], "b": fields[1]}) == Schema(fields)
    with pytest.raises(SchemaError, match="differs"):
        Schema.coerce({"x": fields[0]})


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Schema([String("a"), Integer("a")]), "duplicate field name 'a'"),
        (lambda: Schema([]), "at least one field"),
        (lambda: String("a/b"), "without '/'"),
        (lambda: String(""), "non-empty"),
        (lambda: Sequence("x", dtype="U4"), "numeric"),
        (lambda: Sequence("x", dtype="nonsense"), "not a numpy dtype"),
        (lambda: Integer("x", dtype="float32"), "integer dtype"),
        (lambda: Float("x", dtype="int32"), "floating dtype"),
        (lambda: Array("x", (0, 3)), "positive"),
        (lambda: Image(4, "w"), "tuple of ints"),
        (lambda: String("x", compression="snappy"), "unknown compression"),
        (lambda: Sequence("x", sub_attributes=["a"]), "sub_attributes"),
        (lambda: Schema.from_json("{not json"), "not valid schema JSON"),
        (lambda: Schema.from_json('{"fields": [{"name": "x", "type": "Nope"}]}'), "invalid field"),
    ],
)
def test_invalid_definitions(make, message):
    with pytest.raises(SchemaError, match=message):
        make()


def test_codec_helper():
    assert codecs.zstd(level=5, block_bytes=4096) == {
        "id": "zstd",
        "level": 5,
        "block_bytes": 4096,
        "dictionary": None,
    }
    assert codecs.parse(("gzip", 2)) == {"id": "gzip", "level": 2}
    assert codecs.parse(None) == {"id": "none"}


def test_read_image_and_gif(tmp_path):
    from PIL import Image as PILImage

    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :, 0] = 200
    PILImage.fromarray(rgb).save(tmp_path / "a.png")
    arr = Image(5, 8).read_image(str(tmp_path / "a.png"))
    assert arr.shape == (3, 5, 8) and arr.dtype == np.uint8 and arr[0].min() == 200
    frames = [PILImage.fromarray(np.full((6, 6), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    gif = ImageSequence(3, 3, 1).read_gif(str(tmp_path / "a.gif"))
    assert gif.shape == (3, 1, 3, 3)
