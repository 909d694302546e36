"""Fuzz cases for the read path: small valid files, damaged on purpose, read every way.

Case ``k`` is fully determined by ``k``: its schema (one field type of each
kind in turn, with more drawn at random), its codec (every codec in turn), its
rows and its damage all come from ``numpy.random.default_rng(k)``.
:func:`run_case` writes the file, damages it and reads it through every read
path: single rows, batches, columns, padded columns, ``in_memory=True`` and a
private copy. A read may end in an :class:`~h5record.H5RecordError` or return
values of the types and shapes the file's schema promises; anything else (any
other exception, a crash, a hang) is a bug of the reader.

This module imports only numpy, h5py, zstandard and h5record, so that the
driver can run it against a separately built copy of h5record (an
AddressSanitizer build, see ``run_asan.py``).
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import zstandard

from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    H5Dataset,
    H5RecordError,
    H5Writer,
    Image,
    ImageSequence,
    Integer,
    Sequence,
    String,
    codecs,
)
from h5record.fields import Kind

# Listed, not taken from the registry: the order fixes what each case number
# reads, so that a reported case can be run again.
FIELD_TYPES = (
    "String",
    "Bytes",
    "Integer",
    "Float",
    "Float16",
    "Sequence",
    "FloatSequence",
    "Float16Sequence",
    "Array",
    "Image",
    "ImageSequence",
)
CODECS: tuple[Any, ...] = (
    None,
    "lzf",
    "gzip",
    "zstd",
    codecs.zstd(level=1, block_bytes=1),  # one row a block
    codecs.zstd(block_bytes=64, dictionary=True),
)
DAMAGES = (
    "none",
    "truncate",
    "flip",
    "zero",
    "offsets",
    "chunk_table",
    "num_rows",
    "huge_shape",
    "schema",
    "zstd_frame",
    "zstd_blocks",
    "dictionary",
    "tree",
    "attrs",
)
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
WORDS = ("the", "cat", "é", "名前", "sat", "on", "a", "mat", "🎉", "\x00", "and", "ran")
# Rows read one by one, at most: damaged row counts can be huge.
MAX_SINGLE_ROWS = 300
BIG = (2**31, 2**32 + 7, 2**40, 2**62, 2**63 - 1)


@dataclass
class Case:
    """What was written, and how it was damaged."""

    number: int
    path: str
    schema: list[Any]
    rows: list[dict[str, Any]]
    codec: Any
    damage: str
    detail: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)


# -- valid files ---------------------------------------------------------------


def _field(kind: str, name: str, rng: np.random.Generator, codec: Any) -> Any:
    dtype = str(rng.choice(INT_DTYPES))
    per_field = {"compression": codec} if codec is not None and rng.random() < 0.5 else {}
    if kind == "String":
        return String(name, **per_field)
    if kind == "Bytes":
        return Bytes(name, **per_field)
    if kind == "Integer":
        return Integer(name, dtype, **per_field)
    if kind == "Float":
        return Float(name, str(rng.choice(("float32", "float64"))), **per_field)
    if kind == "Float16":
        return Float16(name, **per_field)
    if kind == "Sequence":
        return Sequence(name, dtype, **per_field)
    if kind == "FloatSequence":
        return FloatSequence(name, **per_field)
    if kind == "Float16Sequence":
        return Float16Sequence(name, **per_field)
    if kind == "Array":
        shape = ((2, 3), (4,), (1, 1, 2))[int(rng.integers(3))]
        return Array(name, shape, str(rng.choice(("float32", "int16", "uint8"))), **per_field)
    if kind == "Image":
        return Image(4, 3, int(rng.choice((1, 3))), name=name, **per_field)
    return ImageSequence(2, 3, int(rng.choice((1, 3))), name=name, **per_field)


def _value(fld: Any, rng: np.random.Generator) -> Any:
    """A compressible value (so that zstd really compresses)."""
    n = int(rng.integers(0, 12))
    if isinstance(fld, String):
        return " ".join(rng.choice(WORDS, n).tolist())
    if isinstance(fld, Bytes):
        return bytes(rng.integers(0, 4, n * 3).astype(np.uint8))
    if isinstance(fld, (Integer,)):
        return int(rng.integers(0, 100))
    if isinstance(fld, (Float, Float16)):
        return float(rng.integers(0, 50)) / 4
    if isinstance(fld, Sequence):
        return rng.integers(0, 20, n).astype(fld.dtype)
    if isinstance(fld, ImageSequence):
        return rng.integers(0, 3, (int(rng.integers(0, 3)), *fld.element_shape)).astype(np.uint8)
    return rng.integers(0, 3, fld.element_shape).astype(fld.dtype)


def make_case(number: int, folder: str) -> Case:
    """Write case ``number``'s valid file into ``folder``."""
    rng = np.random.default_rng(number)
    codec = CODECS[(number // len(FIELD_TYPES)) % len(CODECS)]
    kinds = [FIELD_TYPES[number % len(FIELD_TYPES)]]
    kinds += rng.choice(FIELD_TYPES, int(rng.integers(0, 3))).tolist()
    schema = [_field(kind, f"f{j}", rng, codec) for j, kind in enumerate(kinds)]
    n = int(rng.integers(1, 60)) if rng.random() < 0.8 else int(rng.integers(200, 400))
    if isinstance(codec, dict) and codec.get("dictionary"):
        n = max(n, 300)  # a dictionary needs samples
    rows = [{f.name: _value(f, rng) for f in schema} for _ in range(n)]
    # Nullable fields and their nulls (FORMAT.md section 10) come from a generator
    # of their own, so that every other draw of a case stays as it was.
    nulls = np.random.default_rng([number, 3])
    for f in schema:
        f.nullable = bool(nulls.random() < 1 / 3)
    for row in rows:
        for f in schema:
            if f.nullable and nulls.random() < 0.25:
                row[f.name] = None
    path = os.path.join(folder, f"case{number}.h5")
    chunk_bytes = int(rng.choice((64, 512, 1 << 20)))
    options: dict[str, Any] = {}
    if "checksums" in inspect.signature(H5Writer).parameters:
        options["checksums"] = bool(rng.integers(2))  # the reader must cope either way
    with H5Writer(
        path,
        schema,
        compression=codec,
        overwrite=True,
        progress=False,
        chunk_bytes=chunk_bytes,
        **options,
    ) as writer:
        writer.write_batch({f.name: [r[f.name] for r in rows] for f in schema})
    damage = DAMAGES[(number * 5) % len(DAMAGES)]  # every damage in 14 cases
    return Case(number, path, schema, rows, codec, damage)


# -- damage --------------------------------------------------------------------


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _pick(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))] if items else None


def _codec_of(f: h5py.File, name: str) -> dict[str, Any]:
    entries = json.loads(f.attrs["schema"])["fields"]
    return next(e for e in entries if e["name"] == name)["codec"]


def _zstd_fields(f: h5py.File) -> list[str]:
    return [name for name in f["fields"] if "blocks" in f["fields"][name]]


def _damage_bytes(case: Case, rng: np.random.Generator) -> None:
    size = os.path.getsize(case.path)
    with open(case.path, "r+b") as fh:
        if case.damage == "truncate":
            keep = int(rng.integers(0, size))
            fh.truncate(keep)
            case.detail = f"kept {keep} of {size} bytes"
            return
        data = bytearray(fh.read())
        if case.damage == "flip":
            bits = rng.integers(0, 8 * size, int(rng.integers(1, 24)))
            for b in bits.tolist():
                data[b // 8] ^= 1 << (b % 8)
            case.detail = f"{len(bits)} bits"
        else:
            length = int(rng.choice((16, 512, 4096)))
            start = int(rng.integers(0, max(size - length, 1)))
            if length == 4096:
                start -= start % 4096
            data[start : start + length] = bytes(len(data[start : start + length]))
            case.detail = f"{length} zero bytes at {start}"
        fh.seek(0)
        fh.write(data)


def _bad_offsets(f: h5py.File, rng: np.random.Generator) -> str:
    names = [n for n in _datasets(f) if n.endswith(("/offsets", "/validity"))]
    name = _pick(rng, names)
    if name is None:
        return _bad_chunk_table(f, rng)
    d = f[name]
    if name.endswith("/validity"):  # too short, or other bits
        if rng.random() < 0.5:
            d.resize((int(rng.integers(0, d.shape[0])),))
            return f"{name} cut to {d.shape[0]} bytes"
        d[:] = rng.integers(0, 256, d.shape[0]).astype(np.uint8)
        return f"{name}: random bits"
    i = int(rng.integers(0, d.shape[0]))
    before = int(d[i - 1]) if i else 0
    value = _pick(rng, [-1, before - 1, 0, d.shape[0] * 1000, *BIG, -(2**63)])
    d[i] = value
    if rng.random() < 0.3:  # the last offset too: a huge total
        d[-1] = _pick(rng, list(BIG))
    return f"{name}[{i}] = {value}"


def _bad_chunk_table(f: h5py.File, rng: np.random.Generator) -> str:
    names = [n for n in _datasets(f) if n.endswith("_chunks")]
    name = _pick(rng, names)
    if name is None:
        return _bad_num_rows(f, rng)
    table = f[name]
    n = table.shape[0]
    size = os.path.getsize(f.filename)
    value = _pick(rng, [-2, -(2**63), size, size - 1, 3, *BIG, 2**63 - 100])
    inner = list(range(1, n - 1))
    which = _pick(rng, inner) if inner and rng.random() < 0.7 else _pick(rng, [0, n - 1])
    if which is not None:
        table[which] = value
    return f"{name}[{which}] = {value}"


def _bad_num_rows(f: h5py.File, rng: np.random.Generator) -> str:
    n = int(f.attrs["num_rows"])
    value = _pick(rng, [n + 1, 2 * n + 3, 0, *BIG])
    f.attrs["num_rows"] = np.int64(value)
    return f"num_rows = {value}"


def _huge_shape(f: h5py.File, rng: np.random.Generator) -> str:
    """Declared sizes far past the data: datasets resized (no chunk written) and num_rows."""
    rows = _pick(rng, [2**20, 2**31, 2**40])
    for name in _datasets(f):
        d = f[name]
        if d.chunks is not None and d.maxshape[0] is None and not name.endswith("_chunks"):
            d.resize((rows * 8 if name.endswith("values") else rows + 1, *d.shape[1:]))
    f.attrs["num_rows"] = np.int64(rows)
    return f"every dataset and num_rows ~{rows}"


def _bad_schema(f: h5py.File, rng: np.random.Generator) -> str:
    schema = json.loads(f.attrs["schema"])
    entry = _pick(rng, schema["fields"])
    edits: list[Callable[[], Any]] = [
        lambda: entry.update(type="Bogus"),
        lambda: entry.update(name=5),
        lambda: entry.update(name=""),
        lambda: entry.update(name="../x"),
        lambda: entry.update(shape="abc"),
        lambda: entry.update(shape=[2**31, 2**31, 2**31]),
        lambda: entry.update(shape=[-1, 2, 3]),
        lambda: entry.update(shape=[1] * 40),
        lambda: entry.update(dtype="object"),
        lambda: entry.update(dtype="<U4"),
        lambda: entry.update(dtype=">i8"),
        lambda: entry.update(dtype="V8"),
        lambda: entry.update(dtype=[["a", "<i4"]]),
        lambda: entry.update(dtype=7),
        lambda: entry.update(codec="zstd"),
        lambda: entry.update(codec={"id": "brotli"}),
        lambda: entry.update(codec={"id": "gzip", "level": "high"}),
        lambda: entry.update(codec=[1, 2]),
        lambda: entry.update(codec={"id": "zstd", "rows_per_block": 1, "max_block_bytes": 2**62}),
        lambda: entry["codec"].update(rows_per_block=_pick(rng, [0, -1, "8", 1.5, 2**62, None])),
        lambda: entry["codec"].update(max_block_bytes=_pick(rng, [0, -1, "x", 2**62, 2**64])),
        lambda: entry["codec"].update(dictionary=True),
        lambda: schema.update(fields={"a": 1}),
        lambda: schema.update(fields=[]),
        lambda: schema["fields"].append(dict(entry)),  # a duplicate name
        lambda: schema.pop("fields"),
    ]
    k = int(rng.integers(len(edits)))
    edits[k]()
    f.attrs["schema"] = json.dumps(schema)
    return f"schema edit {k}: {json.dumps(schema)[:200]}"


def _lying_frame(frame: bytes, declared: int | None) -> bytes:
    """The same frame with its content size field replaced (None: no size)."""
    fhd = frame[4]
    single = (fhd >> 5) & 1
    dict_bytes = (0, 1, 2, 4)[fhd & 3]
    fcs_bytes = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    head = 5 + (0 if single else 1)
    rest = frame[head + dict_bytes + fcs_bytes :]
    window = frame[5:head]
    dict_id = frame[head : head + dict_bytes]
    if declared is None:  # no size: needs a window descriptor
        new_fhd = fhd & 0x1F & ~0x20
        window = window or bytes([0x58])  # 16 MiB window, enough for any block here
        return frame[:4] + bytes([new_fhd]) + window + dict_id + rest
    new_fhd = (fhd & 0x3F) | 0xC0
    return frame[:4] + bytes([new_fhd]) + window + dict_id + declared.to_bytes(8, "little") + rest


def _rewrite_frames(f: h5py.File, name: str, frames: list[bytes]) -> None:
    group = f["fields"][name]
    bounds = np.zeros(len(frames) + 1, np.int64)
    np.cumsum([len(fr) for fr in frames], out=bounds[1:])
    flat = np.frombuffer(b"".join(frames), np.uint8)
    values, blocks = group["values"], group["blocks"]
    values.resize((len(flat),))
    if len(flat):
        values[:] = flat
    blocks.resize((len(bounds),))
    blocks[:] = bounds


def _zstd_frame(f: h5py.File, rng: np.random.Generator) -> str:
    name = _pick(rng, _zstd_fields(f))
    if name is None:
        return _bad_offsets(f, rng)
    group = f["fields"][name]
    blocks = group["blocks"][()]
    values = group["values"][()].tobytes()
    frames = [values[a:b] for a, b in itertools.pairwise(blocks)]
    j = int(rng.integers(len(frames)))
    codec = _codec_of(f, name)
    real = len(zstandard.ZstdDecompressor(dict_data=_dict(group)).decompress(frames[j]))
    choice = int(rng.integers(6))
    if choice == 0:  # a size that lies, by a little or a lot
        declared = _pick(rng, [real + 1, max(real - 1, 0), 0, codec["max_block_bytes"] + 1, *BIG])
        frames[j] = _lying_frame(frames[j], declared)
        detail = f"frame {j} declares {declared} bytes, holds {real}"
    elif choice == 1:
        frames[j] = _lying_frame(frames[j], None)
        detail = f"frame {j} declares no size"
    elif choice == 2:  # another frame's content, of another size
        payload = bytes(rng.integers(0, 3, int(rng.integers(0, 3 * real + 9))).astype(np.uint8))
        frames[j] = zstandard.ZstdCompressor().compress(payload)
        detail = f"frame {j} holds {len(payload)} other bytes"
    elif choice == 3:  # a decompression bomb whose size is told
        big = _pick(rng, [1 << 20, 64 << 20])
        frames[j] = zstandard.ZstdCompressor(level=1).compress(bytes(big))
        detail = f"frame {j} holds {big} zero bytes"
    elif choice == 4:
        frames[j] = frames[j][: int(rng.integers(0, len(frames[j])))]
        detail = f"frame {j} cut short"
    else:
        frames[j] = bytes(rng.integers(0, 256, len(frames[j])).astype(np.uint8))
        detail = f"frame {j} is noise"
    _rewrite_frames(f, name, frames)
    if rng.random() < 0.5:  # and the schema agrees with the lie
        schema = json.loads(f.attrs["schema"])
        for entry in schema["fields"]:
            if entry["name"] == name:
                entry["codec"]["max_block_bytes"] = _pick(rng, [2**40, 2**62])
        f.attrs["schema"] = json.dumps(schema)
        detail += ", max_block_bytes raised"
    return detail


def _dict(group: h5py.Group) -> zstandard.ZstdCompressionDict | None:
    if "dictionary" not in group:
        return None
    return zstandard.ZstdCompressionDict(group["dictionary"][()].tobytes())


def _zstd_blocks(f: h5py.File, rng: np.random.Generator) -> str:
    name = _pick(rng, _zstd_fields(f))
    if name is None:
        return _bad_offsets(f, rng)
    blocks = f["fields"][name]["blocks"]
    j = int(rng.integers(blocks.shape[0]))
    value = _pick(rng, [-1, int(blocks[j]) - 1, int(blocks[-1]) + 1, *BIG, -(2**63)])
    blocks[j] = value
    return f"{name}/blocks[{j}] = {value}"


def _bad_dictionary(f: h5py.File, rng: np.random.Generator) -> str:
    names = _zstd_fields(f)
    name = _pick(rng, names)
    if name is None:
        return _bad_schema(f, rng)
    group = f["fields"][name]
    if "dictionary" in group:
        del group["dictionary"]
    choice = int(rng.integers(6))
    if choice == 0:
        group["dictionary"] = rng.integers(0, 256, int(rng.integers(1, 5000))).astype(np.uint8)
    elif choice == 1:
        group.create_dataset("dictionary", shape=(0,), dtype=np.uint8)
    elif choice == 2:
        group["dictionary"] = np.arange(12, dtype=np.int64).reshape(3, 4)
    elif choice == 3:
        group["dictionary"] = np.uint8(7)
    elif choice == 4:  # a real dictionary, of other data
        samples = [bytes([i % 7]) * 40 + b"xyz" * (i % 5) for i in range(300)]
        group["dictionary"] = np.frombuffer(
            zstandard.train_dictionary(1024, samples).as_bytes(), np.uint8
        )
    schema = json.loads(f.attrs["schema"])
    for entry in schema["fields"]:
        if entry["name"] == name:
            entry["codec"]["dictionary"] = True
    f.attrs["schema"] = json.dumps(schema)
    return f"{name}/dictionary: kind {choice}"


def _bad_tree(f: h5py.File, rng: np.random.Generator) -> str:
    names = [n for n in _datasets(f) if n.startswith("fields/")]
    name = _pick(rng, names)
    choice = int(rng.integers(6))
    del f[name]
    if choice == 0:
        f[name] = np.zeros((3, 4), np.int64)
    elif choice == 1:
        f[name] = np.float64(1.5)
    elif choice == 2:
        f[name] = np.zeros(10, np.float32)
    elif choice == 3:
        f.create_group(name)
    elif choice == 4:
        f[name] = np.array([b"abc", b"de"])
    return f"{name}: replaced, kind {choice}"


def _bad_attrs(f: h5py.File, rng: np.random.Generator) -> str:
    key = _pick(rng, ["num_rows", "h5record_version", "schema", "h5record_format"])
    value = _pick(
        rng,
        [
            np.float64(3.5),
            np.array([1, 2]),
            "many",
            np.bytes_(b"\xff\xfe"),
            np.int64(-1),
            np.uint64(2**64 - 1),
            "[" * 100_000,
            json.dumps({"fields": [{"name": "a", "type": "String", "codec": None}] * 2}),
        ],
    )
    f.attrs[key] = value
    return f"{key} = {str(value)[:40]!r}"


ADVERSARIAL: dict[str, Callable[[h5py.File, np.random.Generator], str]] = {
    "offsets": _bad_offsets,
    "chunk_table": _bad_chunk_table,
    "num_rows": _bad_num_rows,
    "huge_shape": _huge_shape,
    "schema": _bad_schema,
    "zstd_frame": _zstd_frame,
    "zstd_blocks": _zstd_blocks,
    "dictionary": _bad_dictionary,
    "tree": _bad_tree,
    "attrs": _bad_attrs,
}


def damage(case: Case) -> None:
    rng = np.random.default_rng([case.number, 1])
    if case.damage == "none":
        return
    if case.damage in ("truncate", "flip", "zero"):
        _damage_bytes(case, rng)
        return
    with h5py.File(case.path, "r+") as f:
        case.detail = ADVERSARIAL[case.damage](f, rng)
        # As a hostile file would: its metadata hash (FORMAT.md section 6) agrees
        # with the edit, or there is none. The checks after it are the ones tested.
        f.attrs.pop("metadata_xxh3", None)


# -- reading -------------------------------------------------------------------


class ReadBug(AssertionError):
    """A read ended in something other than an H5RecordError or well-formed data."""


def _check_value(fld: Any, value: Any, where: str) -> None:
    """A row's value must have the type, dtype and shape that the field promises."""
    if value is None and fld.nullable:
        return
    if isinstance(fld, String):
        ok = isinstance(value, str)
    elif isinstance(fld, Bytes):
        ok = isinstance(value, bytes)
    elif fld.kind == Kind.SCALAR:
        ok = isinstance(value, (int, float))
    elif fld.variable:
        ok = (
            isinstance(value, np.ndarray)
            and value.dtype == fld.dtype
            and value.shape[1:] == fld.element_shape
            and value.ndim == 1 + len(fld.element_shape)
        )
    else:
        ok = (
            isinstance(value, np.ndarray)
            and value.dtype == fld.dtype
            and value.shape == fld.element_shape
        )
    if not ok:
        raise ReadBug(f"{where}: field {fld.name!r} read back as {type(value).__name__} {value!r}")


def _check_row(schema: Any, row: Any, where: str) -> None:
    if not isinstance(row, dict) or list(row) != schema.names:
        raise ReadBug(f"{where}: row is {row!r}")
    for fld in schema:
        _check_value(fld, row[fld.name], where)


def _rows_to_read(n: int, rng: np.random.Generator) -> list[int]:
    if n <= MAX_SINGLE_ROWS:
        return list(range(n))
    head = list(range(MAX_SINGLE_ROWS // 3))
    tail = list(range(n - MAX_SINGLE_ROWS // 3, n))
    return head + sorted(rng.integers(0, n, MAX_SINGLE_ROWS // 3).tolist()) + tail


def _read(ds: H5Dataset, case: Case, step: str) -> None:
    rng = np.random.default_rng([case.number, 2])
    n = len(ds)
    rows = _rows_to_read(n, rng)
    schema = ds.schema
    for i in rows:
        _check_row(schema, ds[i], f"{step} row {i}")
    if not rows:
        return
    shuffled = [rows[int(k)] for k in rng.integers(0, len(rows), len(rows))]
    for idx in (rows, shuffled, [rows[-1], rows[0], rows[-1]]):
        batch = ds[idx]
        for j, row in enumerate(batch.to_list()):
            _check_row(schema, row, f"{step} batch row {idx[j]}")
        for fld in schema:
            batch.column(fld.name)
            if fld.variable and fld.kind == Kind.VARIABLE:
                pad = np.zeros(fld.element_shape, fld.dtype).tobytes()
                ds.padded(fld.name, np.asarray(idx, np.int64), pad)
    ds[rows[0] : rows[0] + 5].to_list()


def _expect_original(ds: H5Dataset, case: Case) -> None:
    """An undamaged file reads back exactly what was written."""
    got = ds[list(range(len(case.rows)))].to_list()
    for i, (a, b) in enumerate(zip(got, case.rows, strict=True)):
        for name, want in b.items():
            have = a[name]
            same = (
                np.array_equal(np.asarray(have), np.asarray(want))
                if isinstance(want, np.ndarray) or isinstance(have, np.ndarray)
                else have == want
            )
            if not same:
                raise ReadBug(f"row {i} field {name!r}: read {have!r}, wrote {want!r}")


STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("map", {}),
    ("in_memory", {"in_memory": True}),
    ("process", {"in_memory": "process", "cache_compressed": True}),
)


def read_case(case: Case) -> None:
    """Read a (damaged) file every way; raise ReadBug on anything but errors or good data."""
    for step, options in STEPS:
        try:
            with H5Dataset(case.path, **options) as ds:
                _read(ds, case, step)
                if case.damage == "none":
                    _expect_original(ds, case)
            case.outcomes[step] = "ok"
        except H5RecordError as exc:
            if case.damage == "none":
                raise ReadBug(f"{step}: an undamaged file fails: {exc!r}") from exc
            case.outcomes[step] = type(exc).__name__
        except ReadBug:
            raise
        except Exception as exc:
            raise ReadBug(
                f"{step}: {type(exc).__name__} instead of an H5RecordError:\n"
                + "".join(traceback.format_exception(exc))
            ) from exc


def run_case(number: int, folder: str) -> Case:
    case = make_case(number, folder)
    damage(case)
    try:
        read_case(case)
    finally:
        for suffix in ("", ".journal"):
            if os.path.exists(case.path + suffix):
                os.remove(case.path + suffix)
    return case


def describe(case: Case) -> str:
    types = ",".join(type(f).__name__ for f in case.schema)
    codec = case.codec if not isinstance(case.codec, dict) else json.dumps(case.codec)
    return (
        f"case {case.number}: [{types}] codec={codec} rows={len(case.rows)} "
        f"damage={case.damage} ({case.detail})"
    )
