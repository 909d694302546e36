"""WebDataset tar shards: files sharing a key are one sample (no extra needed).

``0001.jpg``, ``0001.txt`` and ``0001.cls`` become the fields ``jpg``,
``txt`` and ``cls`` of one row, plus ``__key__`` (``0001``). The key is the
member's path up to the first dot of its file name; the field is the rest.
The fields are those of the first sample, typed by extension: text
(``txt``, ``json``, ...) as ``String``, class numbers (``cls``, ``idx``,
...) as ``Integer``, anything else as ``Bytes``. Shards are read as
streams, in order.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import Any

from ..errors import RowError
from ..fields import Bytes, Field, Integer, String
from . import BATCH_ROWS, write_tables

KEY = "__key__"
TEXT_EXTENSIONS = frozenset({"txt", "text", "json", "jsonl", "caption", "transcript", "html"})
INT_EXTENSIONS = frozenset({"cls", "cls2", "idx", "index", "inx", "id", "label"})
# Samples are written in batches of at most this many bytes (and batch_rows rows).
BATCH_BYTES = 64 << 20


def field_for(ext: str) -> Field:
    """The field of a member extension (its last part decides: ``seg.png`` is bytes)."""
    last = ext.rsplit(".", 1)[-1].lower()
    if last in TEXT_EXTENSIONS:
        return String(ext)
    if last in INT_EXTENSIONS:
        return Integer(ext)
    return Bytes(ext)


def split_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, None for names without an extension."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext


def samples(shards: list[str]) -> Iterator[tuple[str, str, dict[str, bytes]]]:
    """(shard, key, {extension: bytes}) of each sample of the shards, in order."""
    for shard in shards:
        with tarfile.open(shard, "r|*") as tar:
            key: str | None = None
            parts: dict[str, bytes] = {}
            for member in tar:
                if not member.isfile():
                    continue
                split = split_name(member.name)
                if split is None or os.path.basename(member.name).startswith("."):
                    continue
                k, ext = split
                if k != key:
                    if key is not None:
                        yield shard, key, parts
                    key, parts = k, {}
                if ext in parts:
                    raise RowError(f"{shard}: sample {k!r} has two members {ext!r}")
                data = tar.extractfile(member)
                parts[ext] = data.read() if data is not None else b""
            if key is not None:
                yield shard, key, parts


def _value(field: Field, raw: bytes, shard: str, key: str) -> Any:
    if isinstance(field, Bytes):
        return raw
    try:
        text = raw.decode("utf-8")
        return int(text.strip()) if isinstance(field, Integer) else text
    except (UnicodeDecodeError, ValueError) as exc:
        raise RowError(
            f"{shard}: sample {key!r}, member {field.name!r}: expected "
            f"{'an integer' if isinstance(field, Integer) else 'UTF-8 text'} ({exc})"
        ) from exc


def from_webdataset(
    shards: list[str] | str,
    out: str | os.PathLike[str],
    batch_rows: int = BATCH_ROWS,
    schema: Any = None,
    **kw: Any,
) -> int:
    """Convert WebDataset tar shards (``.tar``, ``.tar.gz``) to one h5record file.

    ``schema`` may retype fields (say, ``String("json")`` to ``Bytes``): the
    field names are the extensions, and ``__key__`` is optional in it.
    """
    shards = [
        os.fspath(s) for s in ([shards] if isinstance(shards, (str, os.PathLike)) else shards)
    ]
    stream = samples(shards)
    first = next(stream, None)
    if first is None:
        raise RowError(f"{shards[0]}: no sample found (no member named key.extension)")
    inferred = schema is None
    if schema is None:
        overrides = kw.pop("overrides", None) or {}
        fields = [String(KEY)] + [field_for(ext) for ext in first[2]]
        fields = [overrides.get(f.name, f) for f in fields]
        schema = [f for f in fields if f is not None]
    kw.pop("overrides", None)
    names = [f.name for f in schema]
    by_name = {f.name: f for f in schema}
    wanted = set(names) - {KEY}
    known = set(first[2])

    def batches() -> Iterator[dict[str, list[Any]]]:
        columns: dict[str, list[Any]] = {n: [] for n in names}
        size = 0
        for shard, key, parts in _chain(first, stream):
            have = set(parts)
            if not wanted <= have:
                raise RowError(
                    f"{shard}: sample {key!r} lacks member(s) {sorted(wanted - have)}; "
                    f"it has {sorted(have)}"
                )
            if inferred and not have <= known:
                raise RowError(
                    f"{shard}: sample {key!r} has member(s) {sorted(have - known)} that the "
                    "first sample lacks; give a schema (or overrides) to keep or drop them"
                )
            for n in names:
                if n == KEY:
                    columns[n].append(key)
                else:
                    raw = parts[n]
                    size += len(raw)
                    columns[n].append(_value(by_name[n], raw, shard, key))
            if len(columns[names[0]]) >= batch_rows or size >= BATCH_BYTES:
                yield columns
                columns, size = {n: [] for n in names}, 0
        if columns[names[0]]:
            yield columns

    return write_tables(batches(), out, schema=schema, source=shards[0], **kw)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
