"""Sharded datasets: several h5record files read as one (docs/FORMAT.md, section 7).

A sharded dataset is a folder holding the shards and ``manifest.json``
(written last), a list of files, or a glob pattern. :class:`ShardedDataset`
composes one :class:`~h5record.H5Dataset` per shard and maps global row
``i`` to ``(shard, local row)`` over the cumulative row counts; a batch
that spans shards is decoded by one compiled call per field, in the
batch's order (``_fast.ShardedField``). ``H5Dataset(folder | list | glob)``
returns one.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, pairwise
from operator import itemgetter
from typing import Any

import numpy as np

from ._fast import Decoder, ForeignThreadError, join_readers, split_by_shard
from .commit import fsync_dir
from .dataset import Batch, H5Dataset, TransformedRows
from .errors import FormatError, SchemaError
from .fields import Kind, Schema

MANIFEST_NAME = "manifest.json"
MANIFEST_KEY = "h5record_manifest"
MANIFEST_VERSION = 1
_GLOB_CHARS = frozenset("*?[")


# -- naming a sharded dataset ------------------------------------------------
def is_sharded(source: Any) -> bool:
    """Whether ``source`` names several files: a folder, a list of paths, or a glob."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(isinstance(p, (str, os.PathLike)) for p in source)
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = os.fspath(source)
    if os.path.isdir(path):
        return True
    return not os.path.exists(path) and bool(_GLOB_CHARS.intersection(str(path)))


def resolve(source: Any) -> tuple[list[str], dict[str, Any] | None]:
    """The shard paths of ``source`` in reading order, and its manifest if any."""
    if isinstance(source, (list, tuple)):
        return [os.fspath(p) for p in source], None
    path = os.fspath(source)
    if os.path.isdir(path):
        manifest = read_manifest(path)
        return [os.path.join(path, s["file"]) for s in manifest["shards"]], manifest
    paths = sorted(glob.glob(path))
    if not paths:
        raise FileNotFoundError(errno.ENOENT, f"no file matches the pattern {path!r}", path)
    return paths, None


def read_manifest(folder: str) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``."""
    where = os.path.join(folder, MANIFEST_NAME)
    try:
        with open(where, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT,
            f"{folder} has no {MANIFEST_NAME}, so it is not a complete sharded dataset (its "
            "write may be unfinished: run it again to resume); to read its files anyway, "
            f"pass a glob such as {os.path.join(folder, '*.h5')!r}",
            where,
        ) from None
    except ValueError as exc:
        raise FormatError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or MANIFEST_KEY not in manifest:
        raise FormatError(f"{where}: not an h5record manifest (no {MANIFEST_KEY!r} key)")
    version = manifest[MANIFEST_KEY]
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise FormatError(
            f"{where}: manifest version {version!r}, but this h5record reads versions up to "
            f"{MANIFEST_VERSION}; upgrade h5record"
        )
    try:
        shards = manifest["shards"]
        Schema.from_json(json.dumps(manifest["schema"]))
        total = sum(int(s["num_rows"]) for s in shards)
        names = [s["file"] for s in shards]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: malformed manifest ({exc!r})") from exc
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise FormatError(f"{where}: shard file {name!r} is not a name inside the folder")
    if total != manifest.get("num_rows", total):
        raise FormatError(
            f"{where}: num_rows is {manifest['num_rows']} but the shards hold {total} rows"
        )
    return manifest


def schema_entry(schema: Schema) -> dict[str, Any]:
    """A schema as the manifest stores it: without codec parameters."""
    return {"fields": [f.storage_json() for f in schema]}


def shard_entry(path: str, num_rows: int) -> dict[str, Any]:
    return {
        "file": os.path.basename(path),
        "num_rows": int(num_rows),
        "bytes": os.path.getsize(path),
        "xxh3": None,
    }


def write_manifest(folder: str, schema: Schema, shards: Sequence[dict[str, Any]]) -> str:
    """Write ``folder/manifest.json`` atomically: a temporary file, fsync, rename, fsync."""
    manifest = {
        MANIFEST_KEY: MANIFEST_VERSION,
        "schema": schema_entry(schema),
        "num_rows": sum(int(s["num_rows"]) for s in shards),
        "shards": list(shards),
    }
    path = os.path.join(folder, MANIFEST_NAME)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_schemas(paths: Sequence[str], schemas: Sequence[Schema]) -> None:
    """Raise SchemaError naming the first shard that stores rows unlike the first."""
    for path, schema in zip(paths[1:], schemas[1:], strict=True):
        difference = schemas[0].storage_difference(schema, paths[0], path)
        if difference is not None:
            raise SchemaError(f"{path}: every shard needs the same schema: {difference}")


# -- reading -------------------------------------------------------------------
class ShardedDataset:
    """Several h5record files read as one map-style dataset.

    Made by :class:`~h5record.H5Dataset` when given a folder with a
    ``manifest.json``, a list of files, or a glob pattern (files sorted by
    name). It has the API of ``H5Dataset``: ``len``, ``ds[i]``, batches
    (``ds[list]``, slices, ``__getitems__``) as :class:`~h5record.Batch`,
    ``column``, ``padded``, ``in_memory``, ``transform``; it pickles as
    its shards' paths and options.

    Shards must share their schema (names, types, dtypes and shapes); each
    may compress its fields differently. Other keyword options are given to
    the ``H5Dataset`` of every shard.
    """

    def __init__(
        self,
        source: Any,
        in_memory: bool | str | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        cache_limit: int | None = None,
        cache_compressed: bool = False,
        **options: Any,
    ) -> None:
        self.paths, manifest = resolve(source)
        self.path: str | list[str] = (
            self.paths if isinstance(source, (list, tuple)) else os.fspath(source)
        )
        self.transform = transform
        self.shards: list[H5Dataset] = []
        try:
            for p in self.paths:
                self.shards.append(
                    H5Dataset(
                        p,
                        in_memory=in_memory,
                        cache_limit=cache_limit,
                        cache_compressed=cache_compressed,
                        **options,
                    )
                )
            if manifest is not None:
                self._check_manifest(manifest)
            check_schemas(self.paths, [s.schema for s in self.shards])
        except BaseException:
            self.close()
            raise
        self.in_memory = self.shards[0].in_memory
        counts = np.array([len(s) for s in self.shards], np.int64)
        self._starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=self._starts[1:])
        self._start_list = self._starts.tolist()
        self._n = self._start_list[-1]
        # The split of the last batch by shard: Batch asks each column with the same array.
        self._last_split: tuple[Any, Any] = (None, None)
        self._kinds = {f.name: int(f.kind) for f in self.schema}
        # One compiled decoder over every shard (per thread, as H5Dataset's), for the
        # fields every shard maps; other fields are joined here, shard by shard.
        self._joined: Decoder | None = None
        self._joined_all = False  # the joined decoder reads every field
        # Shards opened with verify=True check rows in Python (H5Dataset.fetch).
        self._verified = any(type(shard).fetch is not H5Dataset.fetch for shard in self.shards)
        self._threads = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_joined=None, _joined_all=False, _last_split=(None, None))
        del state["_threads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._threads = threading.local()

    def _decoder(self) -> Decoder:
        """This thread's decoder over every shard."""
        joined = self._joined
        if joined is not None and joined.owned():
            return joined
        made = getattr(self._threads, "joined", None)
        if made is None:
            decoders = [shard._open() for shard in self.shards]
            if any(d.names != decoders[0].names for d in decoders):
                decoders = [Decoder(len(shard), []) for shard in self.shards]
            made = join_readers(decoders, self._starts)
            if joined is None:
                self._joined = made
                self._joined_index = {name: k for k, name in enumerate(made.names)}
                # Rows of verified shards go through their own checks (H5Dataset).
                self._joined_all = made.names == self.names and not self._verified
            else:
                self._threads.joined = made
        return made

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        assert isinstance(self.path, str)
        where = os.path.join(self.path, MANIFEST_NAME)
        stated = Schema.from_json(json.dumps(manifest["schema"]))
        check_schemas([where, *self.paths[:1]], [stated, self.shards[0].schema])
        for entry, ds, p in zip(manifest["shards"], self.shards, self.paths, strict=True):
            if int(entry["num_rows"]) != len(ds):
                raise FormatError(
                    f"{p}: holds {len(ds)} rows, but {where} says {entry['num_rows']}; "
                    "the shard was changed after the manifest was written"
                )
            size = entry.get("bytes")
            if size is not None and int(size) != os.path.getsize(p):
                raise FormatError(
                    f"{p}: is {os.path.getsize(p)} bytes, but {where} says {size}; "
                    "the shard was changed after the manifest was written"
                )

    # -- the dataset API ---------------------------------------------------
    @property
    def schema(self) -> Schema:
        return self.shards[0].schema

    @property
    def names(self) -> list[str]:
        return self.shards[0].names

    @property
    def starts(self) -> np.ndarray:
        """The first global row of each shard, and the total row count last."""
        return self._starts

    def kind(self, name: str) -> int:
        return self._kinds[name]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """``(shard, local row)`` of global row ``i`` (negative counts from the end)."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row index out of range for a dataset of {n} rows")
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return s, i - int(self._starts[s])

    def __getitem__(self, index: Any) -> Any:
        if type(index) is int and self._joined_all:
            # The hot path: one compiled call, which hands the row to its shard's decoder.
            try:
                row = self._joined.row(index)  # type: ignore[union-attr]
            except ForeignThreadError:  # another thread: its own decoder
                row = self._decoder().row(index)
            return row if self.transform is None else self.transform(row)
        if type(index) is int and 0 <= index < self._n:
            if self._joined is None:
                self._decoder()  # made once: the next rows take the compiled path
            # The hot path of map-style loading: a bisection, then the shard's own.
            s = bisect_right(self._start_list, index) - 1
            row = self.shards[s][index - self._start_list[s]]
            return row if self.transform is None else self.transform(row)
        if isinstance(index, (int, np.integer)):
            s, local = self.locate(int(index))
            row = self.shards[s][local]
            return row if self.transform is None else self.transform(row)
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        if isinstance(index, (Sequence, np.ndarray, range)) and not isinstance(index, str):
            return self.__getitems__(index)
        raise TypeError(
            f"H5Dataset indices must be int, slice, list or int array, not {type(index).__name__}"
        )

    def rows_index(self, indices: Iterable[int]) -> np.ndarray:
        """Global row indices as a checked int64 array (negatives wrap)."""
        return self._decoder().rows_index(indices)

    def __getitems__(self, indices: Iterable[int]) -> Any:
        """Fetch many rows at once (PyTorch calls this for each batch)."""
        idx = self.rows_index(indices)
        # Each shard asks the disk for its rows' byte ranges (its cold-read
        # stage), and checks their checksums when opened with verify=True,
        # before anything is decoded.
        if not self._verified:
            self._decoder().prefetch(idx)  # each shard's decoder, its own rows
        else:
            local, begin, _ = split_by_shard(idx, self._starts)
            for s, (b0, b1) in enumerate(zip(begin[:-1].tolist(), begin[1:].tolist(), strict=True)):
                if b1 > b0:
                    self.shards[s].fetch(local[b0:b1])
        batch = Batch(self, idx)  # type: ignore[arg-type]
        if self.transform is None:
            return batch
        return TransformedRows([self.transform(row) for row in batch], self.schema)

    def _split(self, idx: np.ndarray) -> _Split:
        # Batch asks for every column with the same array: split it once.
        last, split = self._last_split
        if last is not idx:
            split = _Split(idx, self._starts)
            self._last_split = (idx, split)
        return split

    def column(self, name: str, idx: np.ndarray) -> Any:
        """Decode one field of checked global rows ``idx``, in their order."""
        decoder = self._decoder()
        k = self._joined_index.get(name)
        if k is not None:
            return decoder.column(k, idx)
        split = self._split(np.asarray(idx, np.int64))
        cols = [self.shards[s].column(name, local) for s, local in split.parts]
        if split.inverse is None:
            if cols:
                return cols[0]
            return self.shards[0].column(name, np.empty(0, np.int64))
        kind = self._kinds[name]
        if kind in (Kind.STRING, Kind.BYTES):
            joined = list(chain.from_iterable(cols))
            return list(itemgetter(*split.inverse_list)(joined)) if len(joined) > 1 else joined
        if kind != Kind.VARIABLE:
            return np.concatenate(cols)[split.inverse]
        return _reorder_ragged(cols, split.inverse)

    def valid(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Whether field ``name`` of each checked global row ``idx`` holds a value."""
        if not self.schema[name].nullable:
            return np.ones(len(idx), np.bool_)
        decoder = self._decoder()
        k = self._joined_index.get(name)
        if k is not None:
            return decoder.valid(k, np.ascontiguousarray(idx, np.int64))
        split = self._split(np.asarray(idx, np.int64))
        parts = [self.shards[s].valid(name, local) for s, local in split.parts]
        if split.inverse is None:
            return parts[0] if parts else np.ones(0, np.bool_)
        return np.concatenate(parts)[split.inverse]

    def padded(self, name: str, idx: np.ndarray, pad: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Gather a variable-length field of rows ``idx`` into a padded array."""
        decoder = self._decoder()
        k = self._joined_index.get(name)
        if k is not None:
            return decoder.padded(k, idx, np.frombuffer(pad, np.uint8))
        split = self._split(np.asarray(idx, np.int64))
        done = [self.shards[s].padded(name, local, pad) for s, local in split.parts]
        if split.inverse is None:
            return done[0] if done else self.shards[0].padded(name, np.empty(0, np.int64), pad)
        field = self.schema[name]
        width = max(p.shape[1] for p, _ in done)
        out = np.empty((len(split.inverse), width, *field.element_shape), field.dtype)
        row = 0
        for p, _ in done:
            out[row : row + len(p), : p.shape[1]] = p
            out[row : row + len(p), p.shape[1] :] = np.frombuffer(pad, field.dtype).reshape(
                field.element_shape
            )
            row += len(p)
        return out[split.inverse], np.concatenate([n for _, n in done])[split.inverse]

    def __iter__(self) -> Iterator[Any]:
        for shard in self.shards:
            for row in shard:
                yield row if self.transform is None else self.transform(row)

    @property
    def caches(self) -> list[Any]:
        """The shared-memory cache of each shard (None where there is none)."""
        return [s.cache for s in self.shards]

    def close(self) -> None:
        """Close every shard."""
        self._joined = None
        self._joined_all = False
        self._threads = threading.local()
        for shard in self.shards:
            shard.close()
        self.in_memory = False

    def __enter__(self) -> ShardedDataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"H5Dataset({self.path!r}, shards={len(self.shards)}, rows={len(self)}, "
            f"fields={self.names}, in_memory={self.in_memory!r})"
        )


class _Split:
    """Global rows grouped by shard.

    ``parts`` holds ``(shard, local rows)`` in shard order; decoded parts
    joined in that order and indexed by ``inverse`` give the rows in the
    order asked (``inverse`` is None when one shard holds them all).
    """

    __slots__ = ("_inverse_list", "inverse", "parts")

    def __init__(self, idx: np.ndarray, starts: np.ndarray) -> None:
        self.inverse: np.ndarray | None = None
        self._inverse_list: list[int] | None = None
        local, begin, where = split_by_shard(idx, starts)
        bounds = begin.tolist()
        self.parts: list[tuple[int, np.ndarray]] = [
            (s, local[a:b]) for s, (a, b) in enumerate(pairwise(bounds)) if b > a
        ]
        if len(self.parts) > 1:
            self.inverse = where

    @property
    def inverse_list(self) -> list[int]:
        if self._inverse_list is None:
            assert self.inverse is not None
            self._inverse_list = self.inverse.tolist()
        return self._inverse_list


def _reorder_ragged(
    cols: list[tuple[np.ndarray, np.ndarray]], inverse: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Join ``(flat, offsets)`` columns, then put their rows in the order ``inverse`` gives."""
    lengths = np.concatenate([np.diff(offsets) for _, offsets in cols])
    flat = np.concatenate([part[int(offsets[0]) : int(offsets[-1])] for part, offsets in cols])
    starts = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    lengths = lengths[inverse]
    out_offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    # Element e of output row r comes from starts[inverse[r]] + (e - out_offsets[r]).
    shift = np.repeat(starts[inverse] - out_offsets[:-1], lengths)
    return flat[np.arange(int(out_offsets[-1]), dtype=np.int64) + shift], out_offsets
