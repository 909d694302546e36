"""Pure-Python twins of the compiled kernels: the test oracle.

Never used at run time. Each class or function takes exactly the inputs of
its twin in ``_fast.pyx`` and must return equal results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from .errors import FormatError
from .fields import Kind


class _Paged:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.buf = (
            np.frombuffer(spec["buffer"], np.uint8)
            if len(spec["buffer"])
            else np.empty(0, np.uint8)
        )
        self.table = np.asarray(spec["table"], np.int64)
        self.chunk_len = max(int(spec["chunk_len"]), 1)
        self.elem_bytes = int(spec["elem_bytes"])
        self.length = min(int(spec["length"]), len(self.table) * self.chunk_len)

    def read(self, start: int, stop: int) -> bytes | None:
        if start < 0 or stop < start or stop > self.length:
            return None
        out = bytearray()
        for e in range(start, stop):
            addr = self.table[e // self.chunk_len]
            if addr < 0:
                return None
            pos = int(addr) + (e % self.chunk_len) * self.elem_bytes
            if pos + self.elem_bytes > len(self.buf):
                return None
            out += self.buf[pos : pos + self.elem_bytes].tobytes()
        return bytes(out)


class Decoder:
    """Twin of ``_fast.Decoder``."""

    def __init__(self, n_rows: int, fields: list[dict[str, Any]]) -> None:
        self.n_rows = n_rows
        self.names = [f["name"] for f in fields]
        self.fields = fields
        self.values = [_Paged(f["values"]) for f in fields]
        self.offsets = [_Paged(f["offsets"]) if "offsets" in f else None for f in fields]
        self.blocks = [_Paged(f["zstd"]["blocks"]) if f.get("zstd") else None for f in fields]
        self.validity = [_Paged(f["validity"]) if f.get("validity") else None for f in fields]

    def _damaged(self, k: int, row: int) -> FormatError:
        return FormatError(f"field {self.names[k]!r}, row {row}: damaged")

    def _check_row(self, i: int) -> int:
        if i < 0:
            i += self.n_rows
        if not 0 <= i < self.n_rows:
            raise IndexError(f"row index out of range for a dataset of {self.n_rows} rows")
        return i

    def _bounds(self, k: int, i: int) -> tuple[int, int]:
        raw = self.offsets[k].read(i, i + 2)  # type: ignore[union-attr]
        if raw is None:
            raise self._damaged(k, i)
        o0, o1 = (int(x) for x in np.frombuffer(raw, "<i8"))
        if o0 < 0 or o1 < o0:
            raise self._damaged(k, i)
        return o0, o1

    def _zstd_row(self, k: int, i: int) -> tuple[bytes, int]:
        """Row ``i`` of a zstd field decoded as docs/FORMAT.md section 5 says,
        with the ``zstandard`` package: (its bytes, its element count)."""
        zstd = self.fields[k]["zstd"]
        R = int(zstd["rows_per_block"])
        j, p = divmod(i, R)
        r = min(R, self.n_rows - j * R)
        bounds = self.blocks[k].read(j, j + 2)  # type: ignore[union-attr]
        if bounds is None:
            raise self._damaged(k, i)
        c0, c1 = (int(x) for x in np.frombuffer(bounds, "<i8"))
        frame = self.values[k].read(c0, c1) if 0 <= c0 <= c1 else None
        if frame is None:
            raise self._damaged(k, i)
        dictionary = zstd.get("dictionary")
        dict_data = None if dictionary is None else zstandard.ZstdCompressionDict(bytes(dictionary))
        try:
            raw = zstandard.ZstdDecompressor(dict_data=dict_data).decompress(frame)
        except zstandard.ZstdError as exc:
            raise self._damaged(k, i) from exc
        spec = self.fields[k]
        eb = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["element_shape"]))
        if spec["kind"] in (Kind.SCALAR, Kind.FIXED):
            if len(raw) != r * eb:
                raise self._damaged(k, i)
            return raw[p * eb : (p + 1) * eb], 1
        if len(raw) < 4 * r:
            raise self._damaged(k, i)
        lengths = np.frombuffer(raw, "<u4", r).astype(np.int64)
        if len(raw) != 4 * r + int(lengths.sum()) * eb:
            raise self._damaged(k, i)
        start = 4 * r + int(lengths[:p].sum()) * eb
        return raw[start : start + int(lengths[p]) * eb], int(lengths[p])

    def _row_bytes(self, k: int, i: int) -> tuple[bytes, int]:
        """Row ``i`` of field ``k``: its bytes and element count."""
        if self.blocks[k] is not None:
            return self._zstd_row(k, i)
        if self.offsets[k] is None:
            raw = self.values[k].read(i, i + 1)
            nelem = 1
        else:
            o0, o1 = self._bounds(k, i)
            raw, nelem = self.values[k].read(o0, o1), o1 - o0
        if raw is None:
            raise self._damaged(k, i)
        return raw, nelem

    def _valid(self, k: int, i: int) -> bool:
        """Bit ``i % 8`` (least significant first) of byte ``i // 8``: FORMAT.md section 10."""
        if self.validity[k] is None:
            return True
        byte = self.validity[k].read(i // 8, i // 8 + 1)  # type: ignore[union-attr]
        if byte is None:
            raise self._damaged(k, i)
        return bool(byte[0] >> (i % 8) & 1)

    def valid(self, k: int, idx: np.ndarray) -> np.ndarray:
        return np.array([self._valid(k, int(i)) for i in idx], np.bool_)

    def value(self, k: int, i: int) -> Any:
        i = self._check_row(i)
        if not self._valid(k, i):
            return None
        return self._stored(k, i)

    def _stored(self, k: int, i: int) -> Any:
        """Row ``i`` of field ``k`` as stored, null or not."""
        spec = self.fields[k]
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["element_shape"])
        kind = spec["kind"]
        raw, nelem = self._row_bytes(k, i)
        if kind in (Kind.SCALAR, Kind.FIXED):
            arr = np.frombuffer(raw, dtype).reshape(shape).copy()
            return arr.item() if kind == Kind.SCALAR else arr
        if kind == Kind.STRING:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._damaged(k, i) from exc
        if kind == Kind.BYTES:
            return raw
        assert kind == Kind.VARIABLE
        return np.frombuffer(raw, dtype).reshape((nelem, *shape)).copy()

    def row(self, i: int) -> dict[str, Any]:
        return {name: self.value(k, i) for k, name in enumerate(self.names)}

    def rows_index(self, index: Any) -> np.ndarray:
        arr = np.asarray(index)
        if arr.dtype.kind not in "iu" and arr.size:
            raise TypeError(f"row indices must be integers, got an array of {arr.dtype}")
        idx = arr.astype(np.int64).reshape(-1)
        return np.array([self._check_row(int(i)) for i in idx], np.int64)

    def column(self, k: int, idx: np.ndarray) -> Any:
        spec = self.fields[k]
        kind = spec["kind"]
        if kind in (Kind.STRING, Kind.BYTES):
            return [self.value(k, int(i)) for i in idx]
        items = [self._stored(k, int(i)) for i in idx]  # nulls: zeros or empty rows
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["element_shape"])
        if kind == Kind.VARIABLE:
            offsets = np.zeros(len(items) + 1, np.int64)
            np.cumsum([len(x) for x in items], out=offsets[1:])
            flat = np.concatenate(items) if items else np.empty((0, *shape), dtype)
            return flat.astype(dtype).reshape((-1, *shape)), offsets
        return np.array(items, dtype).reshape((len(items), *shape))

    def padded(
        self, k: int, idx: np.ndarray, pad: Any, min_len: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self.fields[k]
        dtype = np.dtype(spec["dtype"]) if spec["kind"] == Kind.VARIABLE else np.dtype(np.uint8)
        shape = tuple(spec["element_shape"])
        items = [self._stored(k, int(i)) for i in idx]
        if spec["kind"] in (Kind.STRING, Kind.BYTES):
            items = [
                np.frombuffer(x.encode() if isinstance(x, str) else x, np.uint8) for x in items
            ]
        lengths = np.array([len(x) for x in items], np.int64)
        width = max([min_len, *lengths.tolist()])
        pad_elem = np.frombuffer(bytes(pad), dtype).reshape(shape)
        out = np.empty((len(items), width, *shape), dtype)
        out[...] = pad_elem
        for j, x in enumerate(items):
            out[j, : len(x)] = x
        return out, lengths


def batch_rows(
    names: tuple[str, ...],
    columns: list[Any],
    start: int,
    stop: int,
    valid: list[Any] | None = None,
) -> list[dict]:
    """Twin of ``_fast.batch_rows``."""
    rows = []
    masks = valid if valid is not None else [None] * len(names)
    for j in range(start, stop):
        row = {}
        for name, col, mask in zip(names, columns, masks, strict=True):
            if mask is not None and not mask[j]:
                row[name] = None
            elif isinstance(col, tuple):
                flat, offsets = col
                row[name] = flat[offsets[j] : offsets[j + 1]]
            elif isinstance(col, np.ndarray) and col.ndim == 1:
                row[name] = col[j].item()
            else:
                row[name] = col[j]
        rows.append(row)
    return rows
