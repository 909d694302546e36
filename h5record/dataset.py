"""H5Dataset: a map-style dataset over an h5record file.

``ds[i]`` decodes one row in one compiled call; ``ds[list]``, ``ds[a:b]``
and ``__getitems__`` (PyTorch's batched fetch) return a :class:`Batch`
whose columns are decoded one compiled call per field. The dataset pickles
as its path and options and maps the file again in each process.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Sequence as SequenceABC
from typing import Any

import numpy as np

from . import reader
from ._fast import Decoder, ForeignThreadError, batch_rows, pad_ragged
from .cache import SharedCache
from .checksums import Verifier
from .commit import commit_pending
from .errors import FormatError
from .fields import Schema
from .spec import PARTIAL_SUFFIX
from .writer import H5Writer, check_file_schema

_IN_MEMORY_MODES = (False, True, "process", "node")


class H5Dataset:
    """Read an h5record file as a PyTorch map-style dataset.

    Parameters
    ----------
    path:
        The file. Its schema is read from the file itself.
    in_memory:
        ``False`` (default) reads through a memory map of the file.
        ``True`` loads every field into RAM once, decompressed, in shared
        memory that every DataLoader worker maps (fork, spawn and
        forkserver). ``'node'`` also shares that copy with other processes
        on the machine that open the same file (e.g. distributed ranks).
        ``'process'`` loads a private copy in each process.
    transform:
        Callable applied to each row dict before it is returned.
    cache_limit:
        Largest in-memory cache allowed, in bytes; a larger one raises
        :class:`~h5record.cache.SharedMemoryError` before loading.
    cache_compressed:
        With ``in_memory``, keep zstd fields compressed in memory and
        decompress rows on access (for data that fits in RAM only
        compressed); by default they are decompressed once at load.
    verify:
        Check the checksums (docs/FORMAT.md section 6) of the bytes of
        rows before decoding them, each checksum block once; a mismatch
        raises :class:`~h5record.errors.FormatError` naming the file, the
        field, the dataset and the rows of the block. In-memory datasets
        check everything once, when loaded. A file written without
        checksums is read with the structure checks of every read only,
        after one warning.

    The h5record 1.0.4 form ``H5Dataset(schema, path, data_iter, ...)`` is
    accepted too: it writes ``path`` from ``data_iter`` when the file does
    not exist yet, then opens it.

    Examples
    --------
    >>> from h5record import H5Dataset, H5Writer, String, Float
    >>> with H5Writer("/tmp/doc_pairs.h5", [String("text"), Float("label")],
    ...               overwrite=True, progress=False) as w:
    ...     w.write({"text": "a cat", "label": 0.5})
    >>> ds = H5Dataset("/tmp/doc_pairs.h5")
    >>> len(ds), ds[0]
    (1, {'text': 'a cat', 'label': 0.5})
    """

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> Any:
        # A folder, a list of files or a glob is a sharded dataset (FORMAT.md section 7).
        if cls is H5Dataset and path is not None:
            from . import shards

            if shards.is_sharded(path):
                return shards.ShardedDataset(path, *args, **kwargs)
        if cls is H5Dataset and kwargs.get("verify"):
            # A subclass, so that the default read path has no verify branch.
            return super().__new__(_VerifiedDataset)
        return super().__new__(cls)

    def __init__(
        self,
        path: Any,
        *legacy: Any,
        in_memory: bool | str | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        cache_limit: int | None = None,
        cache_compressed: bool = False,
        partial: bool = False,
        verify: bool = False,
        **legacy_kwargs: Any,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            path, in_memory, transform = _legacy_create(
                path, legacy, legacy_kwargs, in_memory, transform
            )
        elif legacy or legacy_kwargs:
            raise TypeError(
                "H5Dataset(path, in_memory=..., transform=...) takes no other arguments; "
                "the 1.0.4 form is H5Dataset(schema, path, data_iter, ...)"
            )
        if in_memory is None:
            in_memory = False
        if in_memory not in _IN_MEMORY_MODES:
            raise ValueError(f"in_memory must be one of {_IN_MEMORY_MODES}, got {in_memory!r}")
        self.path = os.fspath(path)
        if self.path.endswith(PARTIAL_SUFFIX) and not partial:
            raise FormatError(
                f"{self.path} is an unfinished file; continue it with H5Writer(..., resume=True), "
                "or read the rows of its last commit with H5Dataset(path, partial=True)"
            )
        if partial and commit_pending(self.path):
            raise FormatError(
                f"{self.path}: a commit is being finished (or its writer was killed while "
                "committing): open it again shortly, or continue it with "
                "H5Writer(..., resume=True), which finishes the commit"
            )
        self.in_memory = in_memory
        self.transform = transform
        self.verify = bool(verify)
        self._layout = reader.read_layout(self.path)
        self._stat = _stat(self.path)
        self.cache_limit = cache_limit
        self.cache_compressed = bool(cache_compressed)
        self._arrays: dict[str, dict[str, np.ndarray]] | None = None
        self._cache: SharedCache | None = None
        # The decoder of the thread that opened the dataset, and one per other
        # thread (a Decoder keeps per-call state filled with the GIL released).
        self._decoder: Decoder | None = None
        self._threads = threading.local()
        self._slow: dict[int, reader.H5Column] = {}
        self._load_cache()

    def _load_cache(self) -> None:
        if self.in_memory == "process":
            self._arrays = reader.load_arrays(self._layout, compressed=self.cache_compressed)
        elif self.in_memory:
            self._cache = SharedCache.load(
                self._layout,
                named=self.in_memory == "node",
                limit=self.cache_limit,
                compressed=self.cache_compressed,
            )
            self._arrays = self._cache.arrays()

    # -- opening ---------------------------------------------------------
    @property
    def schema(self) -> Schema:
        return self._layout.schema

    @property
    def names(self) -> list[str]:
        return self._layout.schema.names

    def _open(self) -> Decoder:
        """This thread's decoder, made on first use in each process and thread."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = self._new_decoder()
        elif not decoder.owned():
            decoder = getattr(self._threads, "decoder", None)
            if decoder is None:
                decoder = self._threads.decoder = self._new_decoder()
        return decoder

    def _new_decoder(self) -> Decoder:
        memory_map = None
        if self._arrays is not None:
            fields = reader.memory_fields(self._layout, self._arrays)
            self._slow = {}
        else:
            if _stat(self.path) != self._stat:
                raise FormatError(
                    f"{self.path} changed since it was opened; open it again with H5Dataset"
                )
            memory_map = reader.map_file(self.path)
            fields = reader.decoder_fields(self._layout, memory_map)
            if not self._slow:
                self._slow = {
                    k: reader.H5Column(self._layout, fl)
                    for k, fl in enumerate(self._layout.fields)
                    if fl.values is None
                }
        decoder = Decoder(self._layout.num_rows, fields, memory_map=memory_map)
        # Positions of each schema field among the decoder's fields.
        self._decoder_index = {name: k for k, name in enumerate(decoder.names)}
        return decoder

    def __getstate__(self) -> dict[str, Any]:
        # Pickle as path and options: every process maps the file itself.
        # A shared cache pickles as a handle to the same memory, never its data.
        state = self.__dict__.copy()
        state.update(_decoder=None, _slow={}, _arrays=None)
        del state["_threads"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._threads = threading.local()
        if self._cache is not None:
            self._arrays = self._cache.arrays()
        elif self.in_memory:
            self._load_cache()

    @property
    def cache(self) -> SharedCache | None:
        """The shared-memory cache, when ``in_memory`` is True or 'node'."""
        return self._cache

    # -- reading ---------------------------------------------------------
    def __len__(self) -> int:
        return self._layout.num_rows

    def __getitem__(self, index: Any) -> Any:
        if type(index) is int and self._decoder is not None and not self._slow:
            # The hot path of map-style loading: one compiled call.
            # The opening thread pays nothing for the thread check; another
            # thread's row costs a caught exception (threads mostly read batches).
            try:
                row = self._decoder.row(index)
            except ForeignThreadError:
                row = self._open().row(index)
            return row if self.transform is None else self.transform(row)
        if isinstance(index, (int, np.integer)):
            decoder = self._open()
            row = decoder.row(index) if not self._slow else self._mixed_row(int(index))
            return row if self.transform is None else self.transform(row)
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        if isinstance(index, (SequenceABC, np.ndarray, range)) and not isinstance(index, str):
            return self.__getitems__(index)
        raise TypeError(
            f"H5Dataset indices must be int, slice, list or int array, not {type(index).__name__}"
        )

    def __getitems__(self, indices: Iterable[int]) -> Any:
        """Fetch many rows at once (PyTorch calls this for each batch)."""
        batch = Batch(self, self.checked_rows(indices))
        if self.transform is None:
            return batch
        return TransformedRows([self.transform(row) for row in batch], self.schema)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(len(self)):
            yield self[i]

    def checked_rows(self, indices: Iterable[int]) -> np.ndarray:
        """Row indices as a checked int64 array, their byte ranges asked of the disk."""
        decoder = self._open()
        idx = decoder.rows_index(
            indices
            if not isinstance(indices, range)
            else np.arange(indices.start, indices.stop, indices.step)
        )
        self.fetch(idx)
        return idx

    def fetch(self, idx: np.ndarray) -> None:
        """Get checked rows ready to decode: every byte range they need is asked of
        the disk at once when the file is not in the page cache (no-op when warm)."""
        self._open().prefetch(idx)

    def _mixed_row(self, i: int) -> dict[str, Any]:
        decoder = self._open()
        if i < 0:
            i += len(self)
        row = {}
        for k, fl in enumerate(self._layout.fields):
            name = fl.field.name
            if k in self._slow:
                if not 0 <= i < len(self):
                    raise IndexError(f"row index out of range for a dataset of {len(self)} rows")
                row[name] = self._slow[k].value(i)
            else:
                row[name] = decoder.value(self._decoder_index[name], i)
        return row

    def column(self, name: str, idx: np.ndarray) -> Any:
        """Decode one field of checked rows ``idx`` (see :meth:`Decoder.column`)."""
        decoder = self._open()
        k = self._decoder_index.get(name)
        if k is None:
            pos = self.names.index(name)
            return self._slow[pos].column(idx)
        return decoder.column(k, idx)

    def valid(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Whether field ``name`` of each checked row ``idx`` holds a value: a bool
        array, False at nulls (all True for a field that is not nullable)."""
        if not self.schema[name].nullable:
            return np.ones(len(idx), np.bool_)
        decoder = self._open()
        k = self._decoder_index.get(name)
        if k is None:
            return self._slow[self.names.index(name)].valid(idx)
        return decoder.valid(k, np.ascontiguousarray(idx, np.int64))

    def padded(self, name: str, idx: np.ndarray, pad: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Gather a variable-length field of rows ``idx`` into a padded array."""
        decoder = self._open()
        k = self._decoder_index.get(name)
        if k is None:
            flat, offsets = self.column(name, idx)
            return _pad_ragged(flat, offsets, pad)
        return decoder.padded(k, idx, np.frombuffer(pad, np.uint8))

    def kind(self, name: str) -> int:
        return self._layout.fields[self.names.index(name)].kind

    def close(self) -> None:
        """Release the memory map, the cache and any HDF5 handle."""
        for column in self._slow.values():
            column.close()
        self._slow = {}
        self._decoder = None
        self._threads = threading.local()
        self._arrays = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None
            self.in_memory = False

    def __enter__(self) -> H5Dataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"H5Dataset({self.path!r}, rows={len(self)}, fields={self.names}, "
            f"in_memory={self.in_memory!r})"
        )


class _VerifiedDataset(H5Dataset):
    """``H5Dataset(path, verify=True)``: checksum blocks are checked before rows are decoded."""

    _verifier: Verifier | None = None

    def __init__(self, path: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        if not self._layout.checksums:
            warnings.warn(
                f"{self.path} has no checksums (written without them): verify=True checks "
                "the structure of the rows it reads, as every read does, and nothing more",
                UserWarning,
                stacklevel=2,
            )
        elif self._arrays is None:
            self._verifier = Verifier(self._layout)

    def _load_cache(self) -> None:
        super()._load_cache()
        if self._arrays is not None and self._layout.checksums:
            # The arrays are what rows are decoded from: check them all, once.
            verifier = Verifier(self._layout, self._arrays)
            try:
                verifier.check_all()
            finally:
                verifier.close()

    def __getitem__(self, index: Any) -> Any:
        if self._verifier is not None and isinstance(index, (int, np.integer)):
            n = len(self)
            if -n <= index < n:
                self._verifier.check_rows(np.array([int(index) % n], np.int64))
        return super().__getitem__(index)

    def fetch(self, idx: np.ndarray) -> None:
        super().fetch(idx)
        if self._verifier is not None:
            self._verifier.check_rows(idx)

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
        super().close()


def _pad_ragged(flat: np.ndarray, offsets: np.ndarray, pad: bytes) -> tuple[np.ndarray, np.ndarray]:
    return pad_ragged(flat, np.ascontiguousarray(offsets, np.int64), np.frombuffer(pad, np.uint8))


class TransformedRows(list):
    """A batch after the dataset's ``transform``: a list of whatever it returned.

    It remembers the schema so that :func:`h5record.collate` still knows the
    stored dtypes and which fields are variable-length, whatever values
    the transform left untouched.
    """

    def __init__(self, rows: list, schema: Schema) -> None:
        super().__init__(rows)
        self.schema = schema


class Batch(SequenceABC):
    """Rows fetched together; a sequence of row dicts, decoded column-wise.

    ``batch[j]`` is row ``j`` as a dict; :meth:`column` gives a whole
    field at once. :func:`h5record.collate` turns a batch into tensors
    without building per-row dicts.
    """

    __slots__ = ("_cache", "_valid", "dataset", "indices")

    def __init__(self, dataset: H5Dataset, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = indices
        self._cache: dict[str, Any] = {}
        self._valid: dict[str, np.ndarray] = {}

    def column(self, name: str) -> Any:
        """One field for every row: list (String, Bytes), ndarray (fixed
        fields) or ``(flat, offsets)`` (variable numeric fields).

        Null rows of a nullable field are ``None`` in lists, zeros in arrays
        and rows of no elements in ``(flat, offsets)``; :meth:`valid` says
        which rows are null.
        """
        col = self._cache.get(name)
        if col is None:
            col = self._cache[name] = self.dataset.column(name, self.indices)
        return col

    def valid(self, name: str) -> np.ndarray:
        """A bool array: whether each row's field ``name`` holds a value (False at
        nulls; all True for a field that is not nullable)."""
        valid = self._valid.get(name)
        if valid is None:
            valid = self._valid[name] = self.dataset.valid(name, self.indices)
        return valid

    @property
    def columns(self) -> dict[str, Any]:
        return {name: self.column(name) for name in self.dataset.names}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return Batch(self.dataset, self.indices[j])
        n = len(self.indices)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"batch index {j} out of range for a batch of {n} rows")
        return self._rows(j, j + 1)[0]

    def _rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        names = self.dataset.names
        columns = [self.column(name) for name in names]
        nulls = [self.valid(f.name) if f.nullable else None for f in self.dataset.schema]
        if not any(v is not None for v in nulls):
            return batch_rows(tuple(names), columns, start, stop)
        return batch_rows(tuple(names), columns, start, stop, nulls)

    def to_list(self) -> list[dict[str, Any]]:
        """Every row as a new dict, built in one compiled call."""
        return self._rows(0, len(self.indices))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Batch):
            other = other.to_list()
        if not isinstance(other, list) or len(other) != len(self):
            return NotImplemented if not isinstance(other, list) else False
        return all(_rows_equal(a, b) for a, b in zip(self.to_list(), other, strict=False))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Batch({len(self)} rows of {self.dataset.path!r})"


def _rows_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _legacy_create(
    schema: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    in_memory: Any,
    transform: Any,
) -> tuple[str, Any, Any]:
    """The h5record 1.0.4 signature: write the file if absent, then open it."""
    names = (
        "path",
        "data_iter",
        "data_length",
        "chunk_size",
        "compression",
        "transform",
        "to_memory",
        "multiprocess",
        "append_mode",
    )
    if len(args) > len(names):
        raise TypeError(f"H5Dataset(schema, ...) takes at most {len(names)} more arguments")
    params: dict[str, Any] = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names or key in params:
            raise TypeError(
                f"H5Dataset(schema, ...) got an unexpected or repeated argument {key!r}"
            )
        params[key] = value
    if "path" not in params:
        raise TypeError("H5Dataset(schema, path, data_iter) needs a path")
    path = os.fspath(params["path"])
    schema_obj = Schema.coerce(schema)
    if os.path.exists(path) and params.get("append_mode"):
        with H5Writer(path, schema_obj, mode="a", progress=False) as writer:
            for row in params.get("data_iter") or ():
                writer.write(row)
    elif os.path.exists(path):
        # 1.0.4 opens an existing file as it is (a script run again reads what
        # it wrote): its schema must be the given one, and the rows not read
        # from data_iter are said, not dropped in silence.
        check_file_schema(path, schema_obj)
        if params.get("data_iter") is not None:
            warnings.warn(
                f"{path} exists: it is opened as it is and data_iter is not read; pass "
                "append_mode=True to add its rows, or remove the file to write it again",
                UserWarning,
                stacklevel=3,
            )
    else:
        data_iter = params.get("data_iter")
        if data_iter is None:
            raise FileNotFoundError(f"{path} does not exist and no data_iter was given to write it")
        # chunk_size and multiprocess of 1.0.4 need no equivalent: chunking is
        # chosen per field, and every read mode is multi-process safe.
        # 1.0.4 wrote a file or nothing: a failed write leaves nothing (overwrite=True
        # also clears what an earlier, killed run left).
        writer = H5Writer(
            path,
            schema_obj,
            compression=params.get("compression"),
            total=params.get("data_length"),
            overwrite=True,
        )
        try:
            for row in data_iter:
                writer.write(row)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    if transform is None:
        transform = params.get("transform")
    if in_memory is None and params.get("to_memory"):
        in_memory = True
    return path, in_memory, transform
