"""Typed stubs of the compiled kernels (h5record/_fast.pyx)."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

PACK_UTF8: int
PACK_FLOAT: int
PACK_INT: int
PACK_OTHER: int
NULL_REFUSE: int
NULL_KEEP: int
NULL_CONVERT: int

class ForeignThreadError(RuntimeError): ...

class FieldReader:
    name: str
    kind: int
    element_shape: tuple[int, ...]
    nullable: bool

class RawField(FieldReader):
    def __init__(self, n_rows: int, spec: dict[str, Any]) -> None: ...

class ZstdField(FieldReader):
    def __init__(self, n_rows: int, spec: dict[str, Any]) -> None: ...
    def elements(self) -> int: ...

class ShardRows:
    def __init__(self, starts: npt.NDArray[np.int64]) -> None: ...

class ShardedField(FieldReader):
    def __init__(self, parts: list[FieldReader], rows: ShardRows) -> None: ...

def join_readers(decoders: list[Decoder], starts: npt.NDArray[np.int64]) -> Decoder: ...
def split_by_shard(
    idx: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...

class Decoder:
    n_rows: int
    names: list[str]
    def __init__(self, n_rows: int, fields: list[Any], memory_map: Any = None) -> None: ...
    def owned(self) -> bool: ...
    def prefetch(self, idx: npt.NDArray[np.int64]) -> bool: ...
    def row(self, i: int) -> dict[str, Any]: ...
    def value(self, k: int, i: int) -> Any: ...
    def rows_index(self, index: Any) -> npt.NDArray[np.int64]: ...
    def column(self, k: int, idx: npt.NDArray[np.int64], raw: bool = ...) -> Any: ...
    def zstd_elements(self, k: int) -> int: ...
    def valid(self, k: int, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]: ...
    def padded(
        self, k: int, idx: npt.NDArray[np.int64], pad: npt.NDArray[np.uint8], min_len: int = ...
    ) -> tuple[np.ndarray, npt.NDArray[np.int64]]: ...

class RowPacker:
    def __init__(
        self,
        names: tuple[str, ...],
        codes: list[int],
        lo: list[int],
        hi: list[int],
        fmax: list[float],
        converters: tuple[Callable[[Any, int], Any], ...],
        sinks: list[list[Any]],
        nulls: list[int] | None = ...,
    ) -> None: ...
    rows: int
    pending_rows: int
    pending_bytes: int
    flush_rows: int
    flush_bytes: int
    def write(self, row: Any) -> int: ...
    def pack(self, row: Any, index: int) -> int: ...

def batch_rows(
    names: tuple[str, ...],
    columns: list[Any],
    start: int,
    stop: int,
    valid: list[npt.NDArray[np.bool_] | None] | None = ...,
) -> list[dict[str, Any]]: ...
def pad_ragged(
    flat: np.ndarray, offsets: npt.NDArray[np.int64], pad: npt.NDArray[np.uint8], min_len: int = ...
) -> tuple[np.ndarray, npt.NDArray[np.int64]]: ...
def hash_blocks(data: Any, block_bytes: int, out: npt.NDArray[np.uint64], xxh3_64: int) -> None: ...
def hash_pieces_helper(
    data: Any,
    block_bytes: int,
    helped: npt.NDArray[np.uint64],
    state: npt.NDArray[np.uint32],
    blocks_per_piece: int,
    xxh3_64: int,
) -> None: ...
def hash_pieces(
    data: Any,
    block_bytes: int,
    out: npt.NDArray[np.uint64],
    helped: npt.NDArray[np.uint64],
    state: npt.NDArray[np.uint32],
    blocks_per_piece: int,
    xxh3_64: int,
) -> None: ...
def build_blocks(
    flat: npt.NDArray[np.uint8],
    offsets: npt.NDArray[np.int64],
    rows_per_block: int,
    elem_bytes: int,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64]]: ...
def join_buffers(
    parts: list[Any],
    out: npt.NDArray[np.uint8],
    head: int = ...,
    block_bytes: int = ...,
    hashes: npt.NDArray[np.uint64] | None = ...,
    xxh3_64: int = ...,
    start: int = ...,
) -> None: ...
def encode_text(
    values: list[Any], text: bool
) -> tuple[list[bytes] | None, npt.NDArray[np.int64] | None, int]: ...
def null_mask(values: list[Any], fill: Any = ...) -> npt.NDArray[np.bool_] | None: ...
def first_bad_utf8_row(values: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64]) -> int: ...
