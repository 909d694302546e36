"""Two baseline storage formats that h5record is compared against.

``LegacyH5Dataset`` ("h5record 1.0.4 layout")
    One HDF5 dataset per field at the file root, as the original h5record
    1.0.4 laid files out: variable-length UTF-8 strings, variable-length
    ``uint8`` for binary blobs, variable-length ``int32`` for token
    sequences, ``float32``/``int64`` for labels, chunks of 300 rows. A row is
    read with one h5py call per field.

``FlatMemmapDataset`` ("numpy memmap flat+offsets")
    The layout of Megatron-style indexed datasets: per variable-length field
    a flat binary file of all values back to back plus an ``int64`` offsets
    array; fixed-size fields as ``.npy``. Everything is memory-mapped and a
    row is sliced out in plain Python.

Both readers hold only a path when pickled and open their files on first
use in each process, so they work in a ``torch.utils.data.DataLoader`` with
worker processes started by fork or spawn. An open HDF5 file of the 1.0.4
layout is closed before every fork (and reopened on next use): a child must
not inherit HDF5 state, not even to close it.

Run ``python -m benchmarks.baselines --selftest`` to check both round trips
on small workloads.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Field kinds, inferred from the column values.
STR, BYTES, SEQ, FLOAT, INT = "str", "bytes", "seq", "float", "int"
VARIABLE = (STR, BYTES, SEQ)


def column_kind(values: Any) -> str:
    """Return the field kind of a workload column.

    Parameters
    ----------
    values : list or np.ndarray
        ``list[str]``, ``list[bytes]``, ``list[np.ndarray]`` or a 1-D
        numeric array.
    """
    if isinstance(values, np.ndarray):
        if np.issubdtype(values.dtype, np.floating):
            return FLOAT
        if np.issubdtype(values.dtype, np.integer):
            return INT
        raise TypeError(f"unsupported column dtype {values.dtype}")
    first = values[0] if len(values) else ""
    if isinstance(first, str):
        return STR
    if isinstance(first, bytes):
        return BYTES
    if isinstance(first, np.ndarray):
        return SEQ
    raise TypeError(f"unsupported column element type {type(first).__name__}")


def _columns(data: Any) -> dict[str, Any]:
    """Accept a ``Workload`` or a plain ``{name: column}`` dict."""
    columns = getattr(data, "columns", data)
    lengths = {len(col) for col in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    return columns


def _seq_dtype(values: Sequence[np.ndarray]) -> np.dtype:
    return np.asarray(values[0]).dtype if len(values) else np.dtype(np.int32)


def _object_array(items: Iterable[Any], count: int) -> np.ndarray:
    # Filling an empty object array keeps numpy from turning equal-length
    # sequences into a 2-D array.
    out = np.empty(count, dtype=object)
    for k, item in enumerate(items):
        out[k] = item
    return out


def _check_index(i: int, n: int) -> int:
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"row {i} out of range for {n} rows")
    return i


class _LazyReader:
    """Shared plumbing: open on first use, per process; pickle the path only."""

    label = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._pid: int | None = None
        self._n_rows: int | None = None

    def _open(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def _close_handles(self) -> None:
        self._pid = None

    def _ensure_open(self) -> None:
        # A handle inherited through fork shares the parent's file state
        # (HDF5 caches, file offsets); reopen in every new process instead.
        if self._pid != os.getpid():
            self._close_handles()
            self._open()
            self._pid = os.getpid()

    def __len__(self) -> int:
        if self._n_rows is None:
            self._ensure_open()
        assert self._n_rows is not None
        return self._n_rows

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_pid": None, "_n_rows": self._n_rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]
        self._n_rows = state["_n_rows"]

    def close(self) -> None:
        """Close open files; the next access reopens them."""
        self._close_handles()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


# --- (a) h5record 1.0.4 layout ----------------------------------------------

_H5_DTYPES = {
    STR: h5py.string_dtype("utf-8"),
    BYTES: h5py.vlen_dtype(np.uint8),
    FLOAT: np.dtype(np.float32),
    INT: np.dtype(np.int64),
}


def _h5_block(kind: str, values: Sequence[Any], seq_dtype: np.dtype) -> np.ndarray:
    if kind == STR:
        return _object_array(values, len(values))
    if kind == BYTES:
        return _object_array((np.frombuffer(v, dtype=np.uint8) for v in values), len(values))
    if kind == SEQ:
        return _object_array((np.asarray(v, dtype=seq_dtype) for v in values), len(values))
    return np.asarray(values, dtype=_H5_DTYPES[kind])


def _h5_value(kind: str, raw: Any) -> Any:
    # h5py returns UTF-8 strings as bytes and vlen uint8 as an array.
    if kind == STR:
        return raw.decode("utf-8")
    if kind == BYTES:
        return raw.tobytes()
    if kind == FLOAT:
        return float(raw)
    if kind == INT:
        return int(raw)
    return raw


# Readers with an open HDF5 file, closed before any fork (see _close_before_fork).
_OPEN_H5: weakref.WeakSet[LegacyH5Dataset] = weakref.WeakSet()


def _close_before_fork() -> None:
    """Close every open 1.0.4-layout file: no HDF5 handle is inherited through fork.

    A forked DataLoader worker that inherits an open h5py file drops it when
    it reopens the file, which runs HDF5's close in the child on the
    parent's library state (file locks shared with the parent, caches, ids).
    Closing in the parent first leaves the child nothing to release; the
    parent reopens the file on its next read.
    """
    for reader in list(_OPEN_H5):
        reader.close()


os.register_at_fork(before=_close_before_fork)


class LegacyH5Dataset(_LazyReader):
    """Reader of the h5record 1.0.4 layout: one HDF5 dataset per field.

    Dataset handles are looked up once per process; 1.0.4 looked each one up
    by name for every row, which only made it slower.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file written by :meth:`write`.
    """

    label = "h5record 1.0.4 layout"

    def _open(self) -> None:
        self._file = h5py.File(self.path, "r")
        # HDF5 lists datasets by name; the attribute keeps the written order.
        names = [str(name) for name in self._file.attrs["fields"]]
        self._fields = [
            (name, str(self._file[name].attrs["kind"]), self._file[name]) for name in names
        ]
        self._n_rows = int(self._file.attrs["n_rows"])
        _OPEN_H5.add(self)

    def _close_handles(self) -> None:
        _OPEN_H5.discard(self)
        file = getattr(self, "_file", None)
        if file is not None and self._pid == os.getpid():
            file.close()
        self._file = None
        self._fields = []
        super()._close_handles()

    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        data: Any,
        compression: str | None = None,
        chunk_size: int = 300,
    ) -> None:
        """Write ``data`` (a ``Workload`` or column dict) to an HDF5 file.

        Parameters
        ----------
        path : str or os.PathLike
            File to create (overwritten).
        data : Workload or dict
            Columns to store.
        compression : {None, 'lzf', 'gzip'}
            HDF5 filter for every dataset. For variable-length fields HDF5
            compresses only the per-row heap references, not the payload.
        chunk_size : int
            Rows per HDF5 chunk, and per resize-and-assign while writing
            (1.0.4's default was 300).
        """
        columns = _columns(data)
        n = len(next(iter(columns.values()))) if columns else 0
        with h5py.File(path, "w") as f:
            f.attrs["n_rows"] = n
            f.attrs["fields"] = list(columns)
            plan = []
            for name, values in columns.items():
                kind = column_kind(values)
                seq_dtype = _seq_dtype(values) if kind == SEQ else None
                dtype = h5py.vlen_dtype(seq_dtype) if kind == SEQ else _H5_DTYPES[kind]
                ds = f.create_dataset(
                    name,
                    shape=(0,),
                    maxshape=(None,),
                    chunks=(chunk_size,),
                    dtype=dtype,
                    compression=compression,
                )
                ds.attrs["kind"] = kind
                plan.append((ds, kind, values, seq_dtype))
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                for ds, kind, values, seq_dtype in plan:
                    ds.resize((stop,))
                    ds[start:stop] = _h5_block(kind, values[start:stop], seq_dtype)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self._ensure_open()
        i = _check_index(i, self._n_rows)
        return {name: _h5_value(kind, ds[i]) for name, kind, ds in self._fields}

    def get_batch(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Read many rows with one h5py call per field.

        h5py's fancy indexing needs increasing, unique indices, so the
        indices are sorted and de-duplicated, then put back in order.
        """
        self._ensure_open()
        n = self._n_rows
        wanted = np.asarray([_check_index(i, n) for i in indices], dtype=np.int64)
        rows: list[dict[str, Any]] = [{} for _ in range(len(wanted))]
        if len(wanted) == 0:
            return rows
        unique, where = np.unique(wanted, return_inverse=True)
        for name, kind, ds in self._fields:
            raw = ds[unique]
            for row, k in zip(rows, where.tolist(), strict=True):
                row[name] = _h5_value(kind, raw[k])
        return rows


# --- (b) numpy memmap flat buffer + offsets ---------------------------------

_SCHEMA = "schema.json"


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    # np.memmap refuses empty files; a field of only empty values has one.
    if path.stat().st_size == 0:
        return np.empty(0, dtype=dtype)
    # A plain ndarray view: slicing a np.memmap subclass costs extra per call.
    return np.asarray(np.memmap(path, dtype=dtype, mode="r"))


class FlatMemmapDataset(_LazyReader):
    """Reader of a directory of flat memory-mapped buffers plus offsets.

    Files per field: ``<name>.bin`` (values back to back) and
    ``<name>.idx.npy`` (``n + 1`` ``int64`` offsets, in elements) for
    strings, bytes and sequences; ``<name>.npy`` for numeric labels.

    Parameters
    ----------
    path : str or os.PathLike
        Directory written by :meth:`write`.
    """

    label = "numpy memmap flat+offsets"

    def _open(self) -> None:
        root = Path(self.path)
        schema = json.loads((root / _SCHEMA).read_text())
        self._fields = []
        for spec in schema["fields"]:
            name, kind, dtype = spec["name"], spec["kind"], np.dtype(spec["dtype"])
            if kind in VARIABLE:
                offsets = np.load(root / f"{name}.idx.npy", mmap_mode="r")
                values = _map(root / f"{name}.bin", dtype)
            else:
                offsets = None
                values = np.load(root / f"{name}.npy", mmap_mode="r")
            self._fields.append((name, kind, values, offsets))
        self._n_rows = int(schema["n_rows"])

    def _close_handles(self) -> None:
        # Maps are released when the arrays are garbage collected.
        self._fields = []
        super()._close_handles()

    @classmethod
    def write(cls, path: str | os.PathLike[str], data: Any) -> None:
        """Write ``data`` (a ``Workload`` or column dict) into directory ``path``.

        Rows are streamed in one pass: each value is encoded and appended to
        its field's buffered ``.bin`` file while its length is recorded.

        Parameters
        ----------
        path : str or os.PathLike
            Directory to create (existing files of the same names are
            overwritten).
        data : Workload or dict
            Columns to store.
        """
        columns = _columns(data)
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        names = list(columns)
        kinds = [column_kind(columns[name]) for name in names]
        dtypes = []
        for name, kind in zip(names, kinds, strict=True):
            if kind == SEQ:
                dtypes.append(_seq_dtype(columns[name]))
            elif kind in (STR, BYTES):
                dtypes.append(np.dtype(np.uint8))
            else:
                dtypes.append(np.asarray(columns[name]).dtype)
        n = len(columns[names[0]]) if names else 0

        files = {
            name: open(root / f"{name}.bin", "wb", buffering=1 << 20)
            for name, kind in zip(names, kinds, strict=True)
            if kind in VARIABLE
        }
        lengths = {name: np.empty(n, dtype=np.int64) for name in files}
        fixed: dict[str, list] = {
            name: [] for name, kind in zip(names, kinds, strict=True) if kind not in VARIABLE
        }
        try:
            for row, values in enumerate(zip(*(columns[name] for name in names), strict=True)):
                for name, kind, dtype, value in zip(names, kinds, dtypes, values, strict=True):
                    if kind == STR:
                        encoded = value.encode("utf-8")
                        files[name].write(encoded)
                        lengths[name][row] = len(encoded)
                    elif kind == BYTES:
                        files[name].write(value)
                        lengths[name][row] = len(value)
                    elif kind == SEQ:
                        array = np.ascontiguousarray(value, dtype=dtype)
                        files[name].write(array.data)
                        lengths[name][row] = array.size
                    else:
                        fixed[name].append(value)
        finally:
            for handle in files.values():
                handle.close()

        for name, counts in lengths.items():
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            np.save(root / f"{name}.idx.npy", offsets)
        for name, dtype in zip(names, dtypes, strict=True):
            if name in fixed:
                np.save(root / f"{name}.npy", np.asarray(fixed[name], dtype=dtype))
        schema = {
            "n_rows": n,
            "fields": [
                {"name": name, "kind": kind, "dtype": dtype.str}
                for name, kind, dtype in zip(names, kinds, dtypes, strict=True)
            ],
        }
        (root / _SCHEMA).write_text(json.dumps(schema, indent=1))

    def __getitem__(self, i: int) -> dict[str, Any]:
        self._ensure_open()
        i = _check_index(i, self._n_rows)
        row: dict[str, Any] = {}
        for name, kind, values, offsets in self._fields:
            if offsets is None:
                row[name] = values[i].item()
                continue
            o0, o1 = offsets[i], offsets[i + 1]
            if kind == STR:
                row[name] = bytes(values[o0:o1]).decode("utf-8")
            elif kind == BYTES:
                row[name] = bytes(values[o0:o1])
            else:
                row[name] = np.array(values[o0:o1])  # copy out of the map
        return row

    def get_batch(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Read many rows; offsets and labels are gathered with one numpy call each."""
        self._ensure_open()
        n = self._n_rows
        wanted = np.asarray([_check_index(i, n) for i in indices], dtype=np.int64)
        rows: list[dict[str, Any]] = [{} for _ in range(len(wanted))]
        for name, kind, values, offsets in self._fields:
            if offsets is None:
                for row, value in zip(rows, values[wanted].tolist(), strict=True):
                    row[name] = value
                continue
            starts = offsets[wanted].tolist()
            stops = offsets[wanted + 1].tolist()
            for row, o0, o1 in zip(rows, starts, stops, strict=True):
                if kind == STR:
                    row[name] = bytes(values[o0:o1]).decode("utf-8")
                elif kind == BYTES:
                    row[name] = bytes(values[o0:o1])
                else:
                    row[name] = np.array(values[o0:o1])
        return rows


BASELINES = {"h5-1.0.4": LegacyH5Dataset, "memmap-flat": FlatMemmapDataset}


def path_for(baseline: type[_LazyReader], directory: str | os.PathLike[str], name: str) -> Path:
    """Return a conventional storage path for ``name`` under ``directory``."""
    suffix = ".h5" if baseline is LegacyH5Dataset else ".flat"
    return Path(directory) / f"{name}{suffix}"


# --- self-test ---------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    return type(a) is type(b) and a == b


def _check_rows(got: Sequence[dict], expected: Sequence[dict], what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} rows, expected {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.keys() == e.keys(), f"{what}: row {k} has fields {sorted(g)}"
        for name in e:
            assert _same(g[name], e[name]), f"{what}: row {k} field {name!r} differs"


def selftest(n: int = 1000) -> None:
    """Round-trip small workloads through both baselines and a DataLoader."""
    import pickle
    import tempfile
    import time

    from . import harness, workloads

    built = [
        workloads.text_pairs(n, install=False),
        workloads.images(n, install=False, pool_size=64),
        workloads.tokens(n),
    ]
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for workload in built:
            expected = list(workloads.rows(workload))
            variants = [
                (LegacyH5Dataset, {}),
                (LegacyH5Dataset, {"compression": "lzf"}),
                (LegacyH5Dataset, {"compression": "gzip"}),
                (FlatMemmapDataset, {}),
            ]
            for k, (cls, options) in enumerate(variants):
                path = Path(tmp) / f"{workload.name}-{k}"
                start = time.perf_counter()
                cls.write(path, workload, **options)
                what = " ".join([cls.label, *options.values(), "/", workload.name])
                reader = pickle.loads(pickle.dumps(cls(path)))
                assert len(reader) == n, what
                _check_rows([reader[i] for i in range(n)], expected, what)
                picks = rng.integers(-n, n, 300).tolist()
                _check_rows(reader.get_batch(picks), [expected[i] for i in picks], what)
                _check_rows([reader[-1]], [expected[-1]], what)
                try:
                    reader[n]
                except IndexError:
                    pass
                else:
                    raise AssertionError(f"{what}: no IndexError past the end")
                reader.close()
                print(f"ok  {what:55s} {time.perf_counter() - start:5.2f} s")

        # Worker processes started by spawn must reopen the files themselves.
        import torch.utils.data

        path = Path(tmp) / "images-3"
        dataset = FlatMemmapDataset(path)
        len(dataset)  # opens in the parent first, as a training script would
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=64,
            num_workers=2,
            multiprocessing_context="spawn",
            collate_fn=harness.list_collate,
        )
        got = [row for batch in loader for row in batch]
        _check_rows(got, list(workloads.rows(built[1])), "DataLoader spawn, 2 workers")
        print("ok  DataLoader, 2 spawn workers over", FlatMemmapDataset.label)

        # With fork the workers inherit the parent's open HDF5 file and must
        # not use it.
        legacy = LegacyH5Dataset(Path(tmp) / "text-0")
        expected = list(workloads.rows(built[0]))
        _check_rows([legacy[0]], expected[:1], "parent read")
        loader = torch.utils.data.DataLoader(
            legacy,
            batch_size=64,
            num_workers=2,
            multiprocessing_context="fork",
            collate_fn=harness.list_collate,
        )
        got = [row for batch in loader for row in batch]
        _check_rows(got, expected, "DataLoader fork, 2 workers")
        print("ok  DataLoader, 2 fork workers over", LegacyH5Dataset.label)
        result = harness.dataloader_rate(
            dataset, 64, 2, "spawn", harness.list_collate, max_batches=8, repeats=1
        )
        print(f"ok  harness.dataloader_rate: {result}")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selftest", action="store_true", help="run the round-trip checks")
    args = parser.parse_args(argv)
    if args.selftest:
        selftest()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
