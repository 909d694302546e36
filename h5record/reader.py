"""Open an h5record file: read its metadata once, map its buffers.

This is the one module that talks to HDF5 on the read side. Opening reads
the root attributes and a few dataset headers, then closes the HDF5 file:
unfiltered data is read later through a read-only memory map of the file
(addresses from the chunk tables, docs/FORMAT.md section 4), so no HDF5
handle is kept open and none can cross a fork. Filtered datasets (lzf,
gzip) are read through h5py by :class:`H5Column`.
"""

from __future__ import annotations

import itertools
import mmap
import operator
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from . import _io, spec
from .checksums import check_metadata
from .errors import FormatError
from .fields import Field, Kind, Schema

# HDF5 chunk cache for filtered (lzf, gzip) fields, per field and process.
CHUNK_CACHE_BYTES = 32 << 20

# One lock around every HDF5 call made after opening.
HDF5_LOCK = threading.RLock()


@dataclass
class PagedArray:
    """Where one stored array lives: chunk addresses in a byte buffer."""

    table: np.ndarray  # int64 address of each chunk, -1 when absent
    chunk_len: int
    elem_bytes: int
    length: int


@dataclass
class FieldLayout:
    field: Field
    kind: int
    values: PagedArray | None  # None: read through h5py
    offsets: PagedArray | None
    values_len: int
    filtered: bool
    zstd: dict[str, Any] | None = None  # blocks, rows_per_block, max_block_bytes, dictionary
    validity: PagedArray | None = None  # nullable fields (docs/FORMAT.md section 10)


@dataclass
class FileLayout:
    path: str
    schema: Schema
    num_rows: int
    version: int
    file_size: int
    fields: list[FieldLayout] = field(default_factory=list)
    checksums: bool = False  # docs/FORMAT.md section 6; the metadata hash was checked

    @property
    def mappable(self) -> bool:
        return all(not f.filtered for f in self.fields)


def _attr(f: h5py.File, key: str, path: str) -> Any:
    try:
        return f.attrs[key]
    except KeyError as exc:
        raise FormatError(f"{path}: not an h5record file (root attribute {key!r} missing)") from exc


def _int_attr(f: h5py.File, name: str, path: str) -> int:
    value = _attr(f, name, path)
    try:
        return operator.index(value)
    except TypeError:
        raise FormatError(f"{path}: attribute {name!r} must be an integer, got {value!r}") from None


# What h5py raises when HDF5 meets a damaged object header, attribute or tree
# (a group where a dataset belongs, say): the file is damaged, not the caller wrong.
_HDF5_ERRORS = (OSError, KeyError, RuntimeError, TypeError, ValueError, AttributeError)


def read_layout(path: str) -> FileLayout:
    """Read a file's metadata; raise FormatError if it is not a valid h5record file."""
    try:
        return _read_layout(path)
    except (FormatError, FileNotFoundError):
        raise
    except _HDF5_ERRORS as exc:
        raise FormatError(
            f"{path}: the file's metadata cannot be read ({type(exc).__name__}: {exc}); "
            "the file is damaged"
        ) from exc


def _read_layout(path: str) -> FileLayout:
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        if spec.ATTR_FORMAT not in f.attrs:
            from .convert.legacy import looks_like_1_0_4

            if looks_like_1_0_4(f):
                raise FormatError(
                    f"{path}: not an h5record file, but laid out as an h5record 1.0.4 file "
                    f"(one HDF5 dataset a field); convert it with: h5record convert {path} NEW.h5"
                )
        if _attr(f, spec.ATTR_FORMAT, path) != spec.FORMAT_NAME:
            raise FormatError(f"{path}: not an h5record file")
        version = _int_attr(f, spec.ATTR_VERSION, path)
        if version > spec.FORMAT_VERSION:
            raise FormatError(
                f"{path}: written in h5record format version {version}, but this h5record "
                f"reads versions up to {spec.FORMAT_VERSION}; upgrade h5record"
            )
        if version < spec.FIRST_VERSION:
            raise FormatError(f"{path}: unknown h5record format version {version}; damaged file")
        # Before the rest is used: a damaged attribute is named as damage.
        checked = check_metadata(f, path)
        schema_text = _attr(f, spec.ATTR_SCHEMA, path)
        if isinstance(schema_text, bytes):
            schema_text = schema_text.decode("utf-8")
        try:
            schema = Schema.from_json(schema_text)
        except (ValueError, TypeError, KeyError) as exc:  # bad JSON or an unknown field
            raise FormatError(f"{path}: the stored schema is invalid ({exc})") from exc
        if schema.format_version > version:
            raise FormatError(
                f"{path}: the schema has nullable fields, which need format version "
                f"{schema.format_version}, but the file says version {version}; the file is damaged"
            )
        num_rows = _int_attr(f, spec.ATTR_NUM_ROWS, path)
        if num_rows < 0:
            raise FormatError(f"{path}: attribute {spec.ATTR_NUM_ROWS!r} is {num_rows}")
        layout = FileLayout(path, schema, num_rows, version, os.path.getsize(path))
        layout.checksums = checked
        for fld in schema:
            try:
                fl = _field_layout(f, fld, num_rows, layout.file_size, path)
                if fld.nullable:
                    fl.validity = _validity_layout(f, fld, num_rows, layout.file_size, path)
            except FormatError:
                raise
            except _HDF5_ERRORS as exc:
                raise FormatError(
                    f"{path}: field {fld.name!r}: its datasets cannot be read "
                    f"({type(exc).__name__}: {exc}); the file is damaged"
                ) from exc
            layout.fields.append(fl)
    return layout


def _field_layout(f: h5py.File, fld: Field, n: int, file_size: int, path: str) -> FieldLayout:
    where = f"{path}: field {fld.name!r}"
    if fld.codec is not None and fld.codec.get("id") == spec.CODEC_ZSTD:
        return _zstd_layout(f, fld, n, file_size, where)
    try:
        values = f[spec.field_path(fld.name, spec.VALUES)]
        offsets = f[spec.field_path(fld.name, spec.OFFSETS)] if fld.variable else None
    except KeyError as exc:
        raise FormatError(f"{where}: dataset missing ({exc}); the file is damaged") from exc
    if (
        values.ndim != 1 + len(fld.element_shape)
        or values.shape[1:] != fld.element_shape
        or values.dtype != fld.dtype
    ):
        raise FormatError(
            f"{where}: values have shape {values.shape} and dtype {values.dtype}, "
            f"the schema says (n, {fld.element_shape}) of {fld.dtype}"
        )
    if offsets is not None and (offsets.ndim != 1 or offsets.dtype != np.int64):
        raise FormatError(f"{where}: offsets are {offsets.dtype} {offsets.shape}, not 1-D int64")
    if offsets is not None and offsets.shape[0] < n + 1:
        raise FormatError(f"{where}: {offsets.shape[0]} offsets for {n} rows; the file is damaged")
    if offsets is None and values.shape[0] < n:
        raise FormatError(f"{where}: {values.shape[0]} values for {n} rows; the file is damaged")
    filtered = bool(values.id.get_create_plist().get_nfilters())
    values_paged = None if filtered else _paged(f, values, fld.element_bytes, file_size, where)
    offsets_paged = None if offsets is None else _paged(f, offsets, 8, file_size, where)
    if offsets_paged is None and offsets is not None:
        raise FormatError(f"{where}: offsets must not be filtered")
    values_len = _stored_length(values, values_paged)
    if offsets_paged is not None:
        _check_stored(offsets_paged.length, n + 1, "offsets", where)
    else:
        _check_stored(values_len, n, "values", where)
    return FieldLayout(fld, fld.kind, values_paged, offsets_paged, values_len, filtered)


def _validity_layout(f: h5py.File, fld: Field, n: int, file_size: int, path: str) -> PagedArray:
    """The validity bitmap of a nullable field: 1-D uint8, unfiltered, ceil(n / 8) bytes."""
    where = f"{path}: field {fld.name!r}"
    try:
        dset = f[spec.field_path(fld.name, spec.VALIDITY)]
    except KeyError as exc:
        raise FormatError(
            f"{where}: nullable, but its validity dataset is missing; the file is damaged"
        ) from exc
    if not isinstance(dset, h5py.Dataset) or dset.dtype != np.uint8 or dset.ndim != 1:
        raise FormatError(f"{where}: the validity dataset is not 1-D uint8; the file is damaged")
    paged = _paged(f, dset, 1, file_size, where)
    if paged is None:
        raise FormatError(f"{where}: the validity dataset must not be filtered")
    _check_stored(paged.length, -(-n // 8), "validity bytes", where)
    return paged


def _stored_length(dset: h5py.Dataset, paged: PagedArray | None) -> int:
    """Elements of a dataset that can hold data: its declared length bounded by its storage."""
    if paged is not None:
        return paged.length
    # Filtered (always chunked): only allocated chunks hold data; counting them
    # walks HDF5's chunk index once (~0.3 us a chunk).
    return min(dset.shape[0], dset.id.get_num_chunks() * dset.chunks[0])


def _check_stored(stored: int, needed: int, what: str, where: str) -> None:
    """Refuse declared sizes the file cannot hold, before anything is sized by them."""
    if stored < needed:
        raise FormatError(
            f"{where}: {needed} {what} are needed for the rows declared, but the file "
            f"holds at most {stored}; the file is damaged or truncated"
        )


def _zstd_layout(f: h5py.File, fld: Field, n: int, file_size: int, where: str) -> FieldLayout:
    codec = fld.codec or {}
    try:
        group = f[spec.FIELDS_GROUP][fld.name]
        values, blocks = group[spec.VALUES], group[spec.BLOCKS]
        R = _json_int(codec, "rows_per_block")
        max_block = _json_int(codec, "max_block_bytes")
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(
            f"{where}: zstd field is incomplete ({exc}); the file is damaged"
        ) from exc
    n_blocks = -(-n // R) if R > 0 else -1
    if (
        R <= 0
        or blocks.shape[0] < n_blocks + 1
        or values.dtype != np.uint8
        or values.ndim != 1
        or blocks.dtype != np.int64
        or blocks.ndim != 1
    ):
        raise FormatError(f"{where}: zstd block table does not match {n} rows; damaged")
    # Every block holds min(R, n) rows but the last: its raw size is known, or
    # (variable fields) at least its 4-byte row lengths.
    smallest_block = min(R, n) * (4 if fld.variable else fld.element_bytes)
    if not smallest_block <= max_block < 1 << 62:
        raise FormatError(
            f"{where}: zstd max_block_bytes is {max_block}, but a block of {min(R, n)} rows "
            f"takes {smallest_block} bytes; the file is damaged"
        )
    dictionary = None
    if codec.get("dictionary"):
        if spec.DICTIONARY not in group:
            raise FormatError(f"{where}: zstd dictionary missing; the file is damaged")
        stored = group[spec.DICTIONARY]
        if not isinstance(stored, h5py.Dataset) or stored.dtype != np.uint8 or stored.ndim != 1:
            raise FormatError(f"{where}: the zstd dictionary is not 1-D uint8; damaged")
        dictionary = stored[()]
        if not len(dictionary):
            raise FormatError(f"{where}: the zstd dictionary is empty; the file is damaged")
    values_paged = _paged(f, values, 1, file_size, where)
    blocks_paged = _paged(f, blocks, 8, file_size, where)
    if values_paged is None or blocks_paged is None:
        raise FormatError(f"{where}: zstd datasets must not carry HDF5 filters")
    _check_stored(blocks_paged.length, n_blocks + 1, "block offsets", where)
    zstd = {
        "blocks": blocks_paged,
        "rows_per_block": R,
        "max_block_bytes": max_block,
        "dictionary": dictionary,
    }
    return FieldLayout(fld, fld.kind, values_paged, None, values_paged.length, False, zstd)


def _json_int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if type(value) is not int:
        raise TypeError(f"{key} must be an integer, got {value!r}")
    return value


def _paged(f: h5py.File, dset: h5py.Dataset, elem_bytes: int, file_size: int, where: str):
    """Find the chunk addresses of an unfiltered dataset, or None if filtered."""
    if dset.id.get_create_plist().get_nfilters():
        return None
    # A shape is only declared: elements past what the file can store are not
    # there, and no table is sized by them (an unfiltered chunk takes its whole
    # size in the file, and a valid file stores its chunks from the first on).
    length = min(dset.shape[0], file_size // elem_bytes)
    if dset.chunks is None:  # contiguous, e.g. after h5repack
        offset = dset.id.get_offset()
        table = np.array([-1 if offset is None else offset], np.int64)
        return PagedArray(table, max(length, 1), elem_bytes, length)
    chunk_len = dset.chunks[0]
    chunk_bytes = chunk_len * elem_bytes
    n_chunks = min(-(-length // chunk_len), file_size // chunk_bytes)
    length = min(length, n_chunks * chunk_len)
    table = _stored_table(f, dset, n_chunks)
    if table is None:
        table = _scan_table(dset, chunk_len, n_chunks)
    valid = table >= 0
    if np.any(table[valid] > file_size - chunk_bytes):  # not table + size: it may overflow
        raise FormatError(f"{where}: chunk addresses point past the end of the file; damaged")
    return PagedArray(table, chunk_len, elem_bytes, length)


def _stored_table(f: h5py.File, dset: h5py.Dataset, n_chunks: int) -> np.ndarray | None:
    name = dset.name + spec.CHUNK_TABLE_SUFFIX
    if name not in f:
        return None
    table_ds = f[name]
    if table_ds.shape != (n_chunks,) or table_ds.dtype != np.int64:
        return None
    table = table_ds[()]
    # The table is an accelerator: trust it only if HDF5 agrees at both ends.
    for c in {0, n_chunks - 1} if n_chunks else ():
        info = dset.id.get_chunk_info_by_coord((c * dset.chunks[0],) + (0,) * (dset.ndim - 1))
        expected = -1 if info.byte_offset is None else info.byte_offset
        if table[c] != expected:
            return None
    return table


def _scan_table(dset: h5py.Dataset, chunk_len: int, n_chunks: int) -> np.ndarray:
    return _chunk_index(dset, chunk_len, n_chunks)[0]


def _chunk_index(
    dset: h5py.Dataset, chunk_len: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray]:
    """File address (-1 if absent) and stored size of every chunk, in one pass of HDF5's index."""
    table = np.full(n_chunks, -1, np.int64)
    sizes = np.zeros(n_chunks, np.int64)

    def visit(info: Any) -> None:
        c = info.chunk_offset[0] // chunk_len
        if c < n_chunks:
            table[c] = info.byte_offset
            sizes[c] = info.size

    if n_chunks:
        dset.id.chunk_iter(visit)
    return table, sizes


def map_file(path: str, random: bool = True) -> mmap.mmap | bytes:
    """A read-only memory map of the whole file (empty files give b"").

    With ``random`` (the reader's default) a page fault reads only its page:
    the device's read-ahead around every fault (often MBs) would cost more
    than the row on a file larger than the page cache. Batches and scans ask
    for their ranges ahead instead (``Decoder.prefetch``).
    """
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_RANDOM if random else mmap.MADV_SEQUENTIAL)
    return mapped


def paged_spec(buffer: Any, paged: PagedArray) -> dict[str, Any]:
    return {
        "buffer": buffer,
        "table": paged.table,
        "chunk_len": paged.chunk_len,
        "elem_bytes": paged.elem_bytes,
        "length": paged.length,
    }


def decoder_fields(layout: FileLayout, buffer: Any) -> list[dict[str, Any]]:
    """Kernel field specs for every unfiltered field, over one mapped buffer."""
    out = []
    for fl in layout.fields:
        if fl.values is None:
            continue
        entry = {
            "name": fl.field.name,
            "path": layout.path,
            "kind": fl.kind,
            "dtype": fl.field.dtype,
            "element_shape": fl.field.element_shape,
            "values": paged_spec(buffer, fl.values),
        }
        if fl.offsets is not None:
            entry["offsets"] = paged_spec(buffer, fl.offsets)
        if fl.zstd is not None:
            entry["zstd"] = {**fl.zstd, "blocks": paged_spec(buffer, fl.zstd["blocks"])}
        if fl.validity is not None:
            entry["validity"] = paged_spec(buffer, fl.validity)
        out.append(entry)
    return out


def zstd_extent(f: h5py.File, fl: FieldLayout, n: int) -> tuple[int, int]:
    """Blocks of a zstd field and the bytes of its frames, checked against the file."""
    assert fl.zstd is not None
    n_blocks = -(-n // fl.zstd["rows_per_block"])
    where = f"{f.filename}: field {fl.field.name!r}"
    end = int(read_hdf5(f[spec.field_path(fl.field.name, spec.BLOCKS)], n_blocks, where))
    if not 0 <= end <= fl.values_len:
        raise FormatError(f"{where}: zstd block table is damaged")
    return n_blocks, end


def load_arrays(
    layout: FileLayout, names: list[str] | None = None, compressed: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Read whole fields into memory: name -> {values, offsets, validity}.

    zstd fields are decompressed, or with ``compressed`` kept as their
    frames and block index (``{values, blocks}``), decompressed on access.
    Nullable fields add their validity bytes.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    n = layout.num_rows
    zstd_fields = [fl for fl in layout.fields if fl.zstd is not None]
    if zstd_fields and not compressed:
        out.update(_decompress_fields(layout, zstd_fields))
    with HDF5_LOCK, h5py.File(layout.path, "r") as f:
        for fl in layout.fields:
            name = fl.field.name
            where = f"{layout.path}: field {name!r}"
            if fl.validity is not None and (names is None or name in names):
                bits = f[spec.field_path(name, spec.VALIDITY)]
                out.setdefault(name, {})[spec.VALIDITY] = read_hdf5(
                    bits, np.s_[: -(-n // 8)], where
                )
            if (names is not None and name not in names) or (fl.zstd and not compressed):
                continue  # not asked for, or decompressed above
            arrays: dict[str, np.ndarray] = out.setdefault(name, {})
            values = f[spec.field_path(name, spec.VALUES)]
            if fl.zstd is not None:
                n_blocks, end = zstd_extent(f, fl, n)
                blocks = f[spec.field_path(name, spec.BLOCKS)]
                arrays[spec.BLOCKS] = read_hdf5(blocks, np.s_[: n_blocks + 1], where)
                arrays[spec.VALUES] = read_hdf5(values, np.s_[:end], where)
            elif fl.field.variable:
                offsets = read_hdf5(f[spec.field_path(name, spec.OFFSETS)], np.s_[: n + 1], where)
                end = int(offsets[-1]) if len(offsets) else 0
                if end > fl.values_len or np.any(np.diff(offsets) < 0):
                    raise FormatError(f"{where}: offsets are damaged")
                arrays["offsets"] = offsets.astype(np.int64, copy=False)
                arrays["values"] = read_hdf5(values, np.s_[:end], where)
            else:
                arrays["values"] = read_hdf5(values, np.s_[:n], where)
    return out


def zstd_decoder(layout: FileLayout, fields: list[FieldLayout]) -> Any:
    """A Decoder of just ``fields`` (zstd fields) over a sequential map of the file."""
    from ._fast import Decoder

    sub = FileLayout(
        layout.path, layout.schema, layout.num_rows, layout.version, layout.file_size, fields
    )
    return Decoder(layout.num_rows, decoder_fields(sub, map_file(layout.path, random=False)))


def _decompress_fields(layout: FileLayout, fields: list[FieldLayout]) -> dict[str, dict]:
    """Decompress zstd fields whole, block by block, through the kernels."""
    decoder = zstd_decoder(layout, fields)
    out = {}
    everything = np.arange(layout.num_rows, dtype=np.int64)
    for k, fl in enumerate(fields):
        if fl.field.variable:
            flat, offsets = decoder.column(k, everything, raw=True)
            out[fl.field.name] = {"values": flat, "offsets": offsets}
        else:
            out[fl.field.name] = {"values": decoder.column(k, everything)}
    return out


def memory_fields(layout: FileLayout, arrays: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """Kernel field specs over in-memory arrays (one chunk per array)."""
    out = []
    for fl in layout.fields:
        fld = fl.field
        data = arrays[fld.name]
        values = np.ascontiguousarray(data["values"])
        frames = spec.BLOCKS in data  # zstd frames kept compressed: bytes
        entry = {
            "name": fld.name,
            "path": layout.path,
            "kind": fl.kind,
            "dtype": fld.dtype,
            "element_shape": fld.element_shape,
            "values": _whole(values, 1 if frames else fld.element_bytes),
        }
        if "offsets" in data:
            entry["offsets"] = _whole(np.ascontiguousarray(data["offsets"], np.int64), 8)
        if frames:
            blocks = np.ascontiguousarray(data[spec.BLOCKS], np.int64)
            entry["zstd"] = {**(fl.zstd or {}), "blocks": _whole(blocks, 8)}
        if spec.VALIDITY in data:
            entry["validity"] = _whole(np.ascontiguousarray(data[spec.VALIDITY], np.uint8), 1)
        out.append(entry)
    return out


def _whole(arr: np.ndarray, elem_bytes: int) -> dict[str, Any]:
    length = arr.shape[0]
    return {
        "buffer": arr.reshape(-1).view(np.uint8),
        "table": np.zeros(1, np.int64),
        "chunk_len": max(length, 1),
        "elem_bytes": elem_bytes,
        "length": length,
    }


def read_hdf5(dset: h5py.Dataset, sel: Any, where: str, out: np.ndarray | None = None) -> Any:
    """``dset[sel]``, or a read into ``out``; HDF5 errors on damaged chunks become FormatError."""
    try:
        if out is not None:
            dset.read_direct(out, sel)
            return out
        return dset[sel]
    except OSError as exc:
        error = str(exc)
    # Raised outside the handler so that no traceback keeps ``out`` (often a
    # view of a shared-memory map that the caller must then close) alive.
    out = None
    raise FormatError(f"{where}: HDF5 cannot read the data ({error}); the file is damaged")


# Rows of a filtered field fewer than this apart are read in one run.
RUN_GAP = 32

# Batches of a filtered field that prefetch without a residency test, once a
# test missed the page cache (as Decoder.prefetch does).
COLD_BATCHES = 16

# Filtered fields of more chunks are not prefetched: their chunk index (read
# once, 16 bytes and ~1 us a chunk; HDF5's per-chunk lookup costs ~250 us)
# would cost more than it saves.
MAX_INDEXED_CHUNKS = 1 << 22


def _element_values(paged: PagedArray, elements: np.ndarray, buffer: Any) -> np.ndarray:
    """Little-endian int64 elements of an unfiltered array, read from a map of the file."""
    spans = _element_spans(paged, elements.reshape(-1))
    if len(spans) != elements.size:
        raise FormatError("offsets of a filtered field point outside their chunks; damaged")
    data = np.frombuffer(buffer, np.uint8)
    if len(spans) and spans[:, 0].max() + 8 > len(data):
        raise FormatError("offsets of a filtered field lie past the end of the file; damaged")
    return data[spans[:, :1] + np.arange(8)].view("<i8").reshape(elements.shape)


def _element_spans(paged: PagedArray, elements: np.ndarray) -> np.ndarray:
    """(file address, bytes) of single elements of an unfiltered array."""
    elements = elements[(elements >= 0) & (elements < paged.length)]
    addr = paged.table[elements // paged.chunk_len]
    keep = addr >= 0
    addr = addr[keep] + (elements[keep] % paged.chunk_len) * paged.elem_bytes
    return np.stack([addr, np.full(len(addr), paged.elem_bytes, np.int64)], axis=1)


def validity_bits(paged: PagedArray, idx: np.ndarray, buffer: Any, where: str) -> np.ndarray:
    """Whether rows ``idx`` hold a value: their bits of a validity bitmap, read from a map
    of the file (docs/FORMAT.md, section 10)."""
    if not len(idx):
        return np.ones(0, np.bool_)
    byte = idx >> 3
    data = np.frombuffer(buffer, np.uint8) if len(buffer) else np.empty(0, np.uint8)
    damaged = int(byte.max()) >= min(paged.length, len(paged.table) * paged.chunk_len)
    if not damaged:
        addr = paged.table[byte // paged.chunk_len] + byte % paged.chunk_len
        damaged = bool((addr < 0).any()) or int(addr.max()) >= len(data)
    if damaged:
        raise FormatError(f"{where}: the validity bitmap is out of bounds; the file is damaged")
    return ((data[addr] >> (idx & 7).astype(np.uint8)) & 1).astype(np.bool_)


class H5Column:
    """Read one filtered field through h5py (the slow path for lzf/gzip)."""

    def __init__(self, layout: FileLayout, fl: FieldLayout) -> None:
        self.path = layout.path
        self.field = fl.field
        self.kind = fl.kind
        self._offsets_table = fl.offsets  # unfiltered: its addresses are known
        self._validity = fl.validity  # unfiltered too
        self._file: h5py.File | None = None
        self._pid = -1
        self._map: Any = None
        self._cold_batches = 0
        self._chunks: tuple[np.ndarray, np.ndarray] | None = None  # address, size

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset | None]:
        if self._file is None or self._pid != os.getpid():
            # Never reuse an HDF5 handle inherited through fork. The chunk
            # cache lives with the open dataset objects, so keep them.
            self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=4099)
            self._pid = os.getpid()
            name = self.field.name
            self._values = self._file[spec.field_path(name, spec.VALUES)]
            self._offsets = (
                self._file[spec.field_path(name, spec.OFFSETS)] if self.field.variable else None
            )
        return self._values, self._offsets

    def value(self, i: int) -> Any:
        if self._validity is not None and not self.valid(np.array([i], np.int64))[0]:
            return None
        return self._run(i, i + 1)[0]

    def valid(self, idx: np.ndarray) -> np.ndarray:
        """Whether rows ``idx`` hold a value (all True for a field that is not nullable)."""
        idx = np.asarray(idx, np.int64)
        if self._validity is None:
            return np.ones(len(idx), np.bool_)
        where = f"{self.path}: field {self.field.name!r}"
        return validity_bits(self._validity, idx, self._buffer(), where)

    def _buffer(self) -> Any:
        if self._map is None or self._pid != os.getpid():
            with HDF5_LOCK:
                self._datasets()
            self._map = map_file(self.path)
        return self._map

    def _run(self, start: int, stop: int) -> list[Any]:
        """Rows ``start..stop-1`` with one or two HDF5 reads."""
        with HDF5_LOCK:
            values, offsets = self._datasets()
            where = f"{self.path}: field {self.field.name!r}, row {start}"
            if offsets is None:
                arr = read_hdf5(values, np.s_[start:stop], where)
                if self.kind == Kind.SCALAR:
                    return arr.tolist()
                return list(arr)
            bounds = read_hdf5(offsets, np.s_[start : stop + 1], where).astype(np.int64)
            o0, o1 = int(bounds[0]), int(bounds[-1])
            if len(bounds) != stop - start + 1 or np.any(np.diff(bounds) < 0):
                raise FormatError(f"{where}: offsets out of order; the file is damaged")
            if not 0 <= o0 <= o1 <= values.shape[0]:
                raise FormatError(f"{where}: offsets out of bounds; the file is damaged")
            data = read_hdf5(values, np.s_[o0:o1], where)
        rel = (bounds - o0).tolist()
        rows = [data[a:b] for a, b in itertools.pairwise(rel)]
        if self.kind == Kind.STRING:
            try:
                return [row.tobytes().decode("utf-8") for row in rows]
            except UnicodeDecodeError as exc:
                raise FormatError(f"{where}: invalid UTF-8; the file is damaged") from exc
        if self.kind == Kind.BYTES:
            return [row.tobytes() for row in rows]
        return [row.copy() for row in rows]  # not views that keep the whole run alive

    def column(self, idx: np.ndarray) -> Any:
        idx = np.asarray(idx, np.int64)
        items: list[Any] = [None] * len(idx)
        if not len(idx):
            return self._assemble(items)
        # Rows close together (a sequential scan, a sorted batch) are read as one
        # run: each HDF5 read costs far more than the few rows read in between.
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        breaks = np.flatnonzero(np.diff(ordered) > RUN_GAP) + 1
        runs = np.split(np.arange(len(idx)), breaks)
        self._prefetch([(int(ordered[r[0]]), int(ordered[r[-1]]) + 1) for r in runs])
        for run in runs:
            first = int(ordered[run[0]])
            rows = self._run(first, int(ordered[run[-1]]) + 1)
            for p in run.tolist():
                items[order[p]] = rows[int(ordered[p]) - first]
        if self._validity is not None and self.kind in (Kind.STRING, Kind.BYTES):
            for j in np.flatnonzero(~self.valid(idx)).tolist():
                items[j] = None
        return self._assemble(items)

    # -- the cold stage: the same policy as Decoder.prefetch, for HDF5 chunks -----
    def _prefetch(self, runs: list[tuple[int, int]]) -> None:
        """Ask the OS for the offsets, then the compressed chunks, of every run."""
        if not len(self._buffer()) or self._too_many_chunks():
            return
        if self._cold_batches > 0:
            self._cold_batches -= 1
        else:
            sample = runs[:: max(1, len(runs) // 2)][:2]
            if all(_io.resident(self._map, r) for r in self._spans(sample)):
                return
            self._cold_batches = COLD_BATCHES
        for spans in self._spans(runs):
            _io.willneed(self._map, spans)

    def _too_many_chunks(self) -> bool:
        values = self._values
        return values.chunks is None or values.shape[0] // values.chunks[0] > MAX_INDEXED_CHUNKS

    def _spans(self, runs: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
        """Yield the file spans of the runs' offsets, then of their values' chunks."""
        if self._offsets_table is not None:
            ends = np.array(runs, np.int64).reshape(-1)
            yield _element_spans(self._offsets_table, ends)
        yield self._chunk_spans(runs)

    def _chunk_spans(self, runs: list[tuple[int, int]]) -> np.ndarray:
        if self._offsets_table is not None:  # elements of each run, from its two offsets
            ends = _element_values(self._offsets_table, np.array(runs, np.int64), self._map)
            runs = ends.reshape(-1, 2).tolist()
        with HDF5_LOCK:
            values, _ = self._datasets()
            chunk_len = values.chunks[0]
            if self._chunks is None:
                self._chunks = _chunk_index(values, chunk_len, -(-values.shape[0] // chunk_len))
        table, sizes = self._chunks
        # Damaged offsets are the read's to report: prefetching skips them.
        length = len(table) * chunk_len
        ranges = [
            np.arange(a // chunk_len, (b - 1) // chunk_len + 1)
            for a, b in runs
            if 0 <= a < b <= length
        ]
        chunks = np.unique(np.concatenate(ranges)) if ranges else np.empty(0, np.int64)
        chunks = chunks[chunks < len(table)]
        chunks = chunks[table[chunks] >= 0]
        return np.stack([table[chunks], sizes[chunks]], axis=1)

    def _assemble(self, items: list[Any]) -> Any:
        if self.kind in (Kind.STRING, Kind.BYTES):
            return items
        if self.kind == Kind.VARIABLE:
            lengths = np.fromiter((len(x) for x in items), np.int64, len(items))
            offsets = np.zeros(len(items) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            shape = (0, *self.field.element_shape)
            flat = np.concatenate(items) if items else np.empty(shape, self.field.dtype)
            return flat, offsets
        return np.asarray(items, dtype=self.field.dtype).reshape(
            (len(items), *self.field.element_shape)
        )

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            with HDF5_LOCK:
                self._file.close()
        self._file = None
        self._map = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _pid=-1, _values=None, _offsets=None, _map=None, _chunks=None)
        return state
