"""Cold page cache: random reads of files that are not in memory.

Every other section reads files warm from the page cache. This one measures
what a training run over a data set larger than RAM sees. Before each
measured repeat the reader is closed (so that none of its pages stays
mapped) and every file it uses is evicted from the OS page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (:func:`harness.evict`, no root
needed; files are fsynced once after writing, as dirty pages stay).

Each figure is set beside the device's own limit, measured in the same run
on the same file by ``h5record._io.pread_random``: random ``pread`` calls
of one row's size (the median row, rounded up to 4 KiB) at 4 KiB-aligned
offsets, from 1 native thread (queue depth 1) and from 32 (queue depth 32).

For the text pairs, ~15 KB images and token sequences, each written
uncompressed and with zstd, and for baseline (b) (numpy memmap of a flat
buffer and offsets), it reports: cold open time; random ``ds[i]``; random
batches of 256; ``h5record.DataLoader`` with 0 and 2 workers and a plain
torch DataLoader with :func:`harness.simple_collate`; bytes read from disk
per row; each rate as a multiple of the device limit and of (b). For text
it also evicts before every batch and compares with :class:`FlatProbe`, a
pure-Python reader of (b)'s files that prefetches each batch with two
rounds of ``madvise(MADV_WILLNEED)``. Last, a file of 10^8 rows is opened
cold: open time and growth of the resident set.

``python -m benchmarks.run --sections cold`` runs this section alone.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import h5record
from h5record import H5Dataset, H5Writer, Integer
from h5record._io import pread_random

from . import harness, workloads
from .baselines import STR, VARIABLE, FlatMemmapDataset
from .harness import DiskReads, Table

BATCH = 256
SEED = 0
ALIGN = 4096  # probe reads are 4 KiB-aligned and a multiple of 4 KiB long
PAGE = mmap.PAGESIZE

# Systems, as named in the tables and in the results dict.
H5 = "h5record"
H5_ZSTD = "h5record zstd"
FLAT = "(b) numpy memmap"
PROBE = "probe: (b) + madvise"
DEVICE = "device: pread"

# A read function times itself: ``read(reader, repeat) -> (rows, rows_per_s)``.
Read = Callable[[Any, int], tuple[int, float]]


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run of the section.

    Attributes
    ----------
    rows : dict
        Fewest rows per workload. A repeat reads distinct rows, but the
        more of the file it reads, the more often a row shares a page with
        one read before it: the rows of a repeat should be a small part of
        the file.
    repeats : int
        Evicted repeats of open, ``ds[i]`` and batch figures (medians).
    row_reads : int
        Random ``ds[i]`` per repeat.
    batches : int
        Random batches of 256 per repeat.
    evicted_batches : int
        Batches of the text table that evicts before every batch.
    loader_batches, loader_repeats : int
        Batches per DataLoader run, and evicted runs.
    probe_reads : tuple of int
        Reads of the device probe at queue depth 1 and at 32.
    synthetic_rows : int
        Rows of the file opened for the open-time and memory test.
    """

    rows: dict[str, int]
    repeats: int
    row_reads: int
    batches: int
    evicted_batches: int
    loader_batches: int
    loader_repeats: int
    probe_reads: tuple[int, int]
    synthetic_rows: int


QUICK = Plan(
    rows={"text": 300_000, "images": 12_000, "tokens": 50_000},
    repeats=3,
    row_reads=300,
    batches=8,
    evicted_batches=20,
    loader_batches=8,
    loader_repeats=2,
    probe_reads=(500, 4_000),
    synthetic_rows=100_000_000,
)
# Images: more rows than the core section's 20,000, so that the 10,240 rows
# of a DataLoader run are a fifth of the file rather than half of it.
FULL = Plan(
    rows={"text": workloads.TEXT_ROWS, "images": 50_000, "tokens": workloads.TOKEN_ROWS},
    repeats=5,
    row_reads=2_000,
    batches=20,
    evicted_batches=60,
    loader_batches=40,
    loader_repeats=3,
    probe_reads=(2_000, 16_000),
    synthetic_rows=100_000_000,
)


@dataclass
class Cold:
    """One cold figure: rows per second and KiB read from disk per row."""

    rows_per_s: float
    kib_per_row: float | None


# --- measuring on evicted files ----------------------------------------------


def _close(reader: Any) -> None:
    # Releasing the memory map explicitly: a reference cycle could otherwise
    # keep it, and its pages, past the next eviction.
    close = getattr(reader, "close", None)
    if close is not None:
        close()


def measure(
    paths: list[str],
    open_reader: Callable[[], Any],
    read: Read,
    repeats: int,
    counter: DiskReads,
) -> Cold:
    """Run ``read`` ``repeats`` times, each on freshly evicted files.

    Parameters
    ----------
    paths : list of str
        Every file or folder the reader uses; evicted before each repeat.
    open_reader : callable
        Makes a new reader after the eviction (untimed, not counted).
    read : callable
        ``read(reader, repeat) -> (rows, rows_per_s)``; it times itself.
    repeats : int
        Number of repeats; the median rate is returned.
    counter : DiskReads
        Counts the bytes read from disk during ``read``.

    Returns
    -------
    Cold
        Median rows/s, and bytes read over all repeats per row read.
    """
    rates = []
    rows_total = bytes_total = 0
    for repeat in range(repeats):
        harness.evict(paths)
        reader = open_reader()
        before = counter()
        rows, rate = read(reader, repeat)
        bytes_total += counter() - before
        rows_total += rows
        rates.append(rate)
        _close(reader)
        del reader
    kib = bytes_total / max(rows_total, 1) / 1024 if counter.available else None
    return Cold(statistics.median(rates), kib)


@dataclass
class EvictedReader:
    """A reader whose files are evicted before each of its batches.

    Attributes
    ----------
    paths : list of str
        Every file or folder it reads.
    fetch : callable
        ``fetch(indices)`` reads and decodes a batch (the timed part).
    release : callable
        Unmaps every page read so far, so that eviction can drop them.
    prepare : callable
        Maps the files again after eviction, reading no row.
    """

    paths: list[str]
    fetch: Callable[[list[int]], Any]
    release: Callable[[], Any]
    prepare: Callable[[], Any]


def measure_per_batch(
    readers: dict[str, EvictedReader], n: int, batches: int, counter: DiskReads
) -> dict[str, Cold]:
    """Random batches of 256 with the files evicted before every batch.

    The readers take turns on each batch of rows, so that they read the same
    rows at nearly the same time of a noisy disk. A turn evicts the reader's
    files, prepares it, times ``fetch`` and releases the reader's pages at
    once (pages a reader keeps mapped could not be evicted before the next
    reader's turn on the same files). Rates are medians over batches.
    """
    rates: dict[str, list[float]] = {label: [] for label in readers}
    read_bytes = dict.fromkeys(readers, 0)
    rows = 0
    for indices in _batches(n, batches, SEED):
        for label, reader in readers.items():
            harness.evict(reader.paths)
            reader.prepare()
            before = counter()
            start = time.perf_counter()
            reader.fetch(indices)
            rates[label].append(len(indices) / (time.perf_counter() - start))
            read_bytes[label] += counter() - before
            reader.release()
        rows += len(indices)
    return {
        label: Cold(
            statistics.median(rates[label]),
            read_bytes[label] / max(rows, 1) / 1024 if counter.available else None,
        )
        for label in readers
    }


def cold_open_ms(paths: list[str], open_reader: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of ``open_reader()`` right after evicting ``paths``."""
    times = []
    for _ in range(repeats):
        harness.evict(paths)
        start = time.perf_counter()
        reader = open_reader()
        times.append(time.perf_counter() - start)
        _close(reader)
        del reader
    return 1e3 * statistics.median(times)


def _distinct(n: int, count: int, seed: int) -> list[int]:
    """``count`` distinct random rows of ``n`` (all of them, shuffled, if fewer)."""
    rng = np.random.default_rng(seed)
    return rng.choice(n, min(count, n), replace=False).tolist()


def _batches(n: int, count: int, seed: int) -> list[list[int]]:
    """``count`` batches of 256 random rows, distinct across all the batches."""
    rows = _distinct(n, BATCH * count, seed)
    return [rows[k : k + BATCH] for k in range(0, len(rows), BATCH)]


def random_rows(n: int, count: int) -> Read:
    """``ds[i]`` for ``count`` distinct random rows, in a Python loop."""

    def read(ds: Any, repeat: int) -> tuple[int, float]:
        indices = _distinct(n, count, SEED + repeat)
        start = time.perf_counter()
        for i in indices:
            ds[i]
        return len(indices), len(indices) / (time.perf_counter() - start)

    return read


def random_batches(fetch: Callable[[Any, list[int]], Any], n: int, count: int) -> Read:
    """``fetch(ds, indices)`` for ``count`` batches of 256 distinct random rows."""

    def read(ds: Any, repeat: int) -> tuple[int, float]:
        picks = _batches(n, count, SEED + repeat)
        rows = sum(map(len, picks))
        start = time.perf_counter()
        for indices in picks:
            fetch(ds, indices)
        return rows, rows / (time.perf_counter() - start)

    return read


def loader(workers: int, batches: int, loader_cls: Any, collate: Any) -> Read:
    """A shuffling DataLoader over ``batches`` batches of 256 distinct random rows.

    The rate is the steady one (after the first batch), as in the core
    section; the bytes count every batch.
    """

    def read(ds: Any, repeat: int) -> tuple[int, float]:
        rate = harness.dataloader_rate(
            ds,
            BATCH,
            workers,
            "fork",
            collate,
            repeats=1,
            time_budget=60.0,  # the run is bounded by num_samples
            seed=SEED + repeat,
            loader_cls=loader_cls,
            num_samples=BATCH * batches,
        )
        return rate.rows, rate.steady_rows_per_s

    return read


# --- the device's limit --------------------------------------------------------


def median_row_bytes(workload: workloads.Workload, sample: int = 10_000) -> int:
    """Median payload bytes of a row, over the first ``sample`` rows."""
    n = min(workload.n_rows, sample)
    sizes = np.zeros(n, dtype=np.int64)
    for column in workload.columns.values():
        if isinstance(column, np.ndarray):
            sizes += column.itemsize
            continue
        for k, value in enumerate(column[:n]):
            if isinstance(value, str):
                sizes[k] += len(value.encode())
            elif isinstance(value, np.ndarray):
                sizes[k] += value.nbytes
            else:
                sizes[k] += len(value)
    return int(np.median(sizes))


def device_limits(
    path: str, row_bytes: int, reads: tuple[int, int], repeats: int, counter: DiskReads
) -> dict[str, float]:
    """Random reads per second of the device at queue depth 1 and 32.

    Reads of ``row_bytes`` rounded up to 4 KiB, at distinct random offsets
    (multiples of the read size) of ``path``, which is evicted before each
    repeat.

    Returns
    -------
    dict
        ``row_bytes``, ``read_KiB`` and, per queue depth, ``qd1_reads_s``
        and ``qd1_KiB_read`` (bytes read from disk per read; about
        ``read_KiB`` when the reads really went to the disk), ``qd32_...``.
    """
    size = -(-max(row_bytes, 1) // ALIGN) * ALIGN
    slots = os.path.getsize(path) // size
    out: dict[str, float] = {"row_bytes": row_bytes, "read_KiB": size / 1024}
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, threads, count in (("qd1", 1, reads[0]), ("qd32", 32, reads[1])):
            rates, per_read = [], []
            for repeat in range(repeats):
                rng = np.random.default_rng(SEED + repeat)
                offsets = rng.choice(slots, min(count, slots), replace=False).astype(np.int64)
                offsets *= size
                harness.evict([path])
                before = counter()
                start = time.perf_counter()
                pread_random(fd, offsets, size, threads)
                rates.append(len(offsets) / (time.perf_counter() - start))
                per_read.append((counter() - before) / len(offsets))
            out[f"{key}_reads_s"] = statistics.median(rates)
            out[f"{key}_KiB_read"] = statistics.median(per_read) / 1024
    finally:
        os.close(fd)
    return out


# --- the text probe ----------------------------------------------------------


@dataclass
class _Mapped:
    """One file of (b), mapped: the map, and the array that starts in it."""

    map: mmap.mmap
    array: np.ndarray
    start: int  # byte offset of the array in the file


def _map_file(path: Path, dtype: np.dtype | None = None) -> _Mapped:
    """Map a ``.npy`` file (``dtype=None``, read from its header) or a raw one."""
    with open(path, "rb") as fh:
        start = 0
        if dtype is None:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
            start = fh.tell()
        memory_map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    memory_map.madvise(mmap.MADV_RANDOM)  # a fault reads its page, not a window around it
    array = np.frombuffer(memory_map, dtype=dtype, offset=start)
    return _Mapped(memory_map, array, start)


class FlatProbe:
    """The yardstick of cold text batches: (b)'s files read with two rounds of madvise.

    Every file is memory-mapped with ``MADV_RANDOM``. Per batch, the pages
    holding the rows' offsets (and fixed-size values) are requested with
    ``MADV_WILLNEED``, all at once; then the value ranges those offsets
    point to, all at once; then the rows are decoded in plain Python. It is
    what any reader can do from Python, and h5record's batch should match it.

    Parameters
    ----------
    folder : str
        A directory written by :meth:`FlatMemmapDataset.write`.
    """

    def __init__(self, folder: str) -> None:
        root = Path(folder)
        schema = json.loads((root / "schema.json").read_text())
        self.fields: list[tuple[str, str, _Mapped, _Mapped | None]] = []
        for spec in schema["fields"]:
            name, kind = spec["name"], spec["kind"]
            if kind in VARIABLE:
                values = _map_file(root / f"{name}.bin", np.dtype(spec["dtype"]))
                offsets: _Mapped | None = _map_file(root / f"{name}.idx.npy")
            else:
                values, offsets = _map_file(root / f"{name}.npy"), None
            self.fields.append((name, kind, values, offsets))

    @staticmethod
    def _willneed(mapped: _Mapped, first: np.ndarray, last: np.ndarray) -> None:
        """Request the pages of the byte ranges ``[first, last]`` (inclusive ends)."""
        pages = np.unique(np.stack([first // PAGE, last // PAGE], axis=1), axis=0)
        for a, b in pages.tolist():
            mapped.map.madvise(mmap.MADV_WILLNEED, a * PAGE, (b - a + 1) * PAGE)

    def batch(self, indices: list[int]) -> dict[str, list]:
        """Read rows ``indices``: a dict of one list of values per field."""
        idx = np.asarray(indices, dtype=np.int64)
        # Round 1: the pages of each row's two offsets and of its fixed values.
        for _, _, values, offsets in self.fields:
            mapped = offsets if offsets is not None else values
            item = mapped.array.itemsize
            first = mapped.start + idx * item
            self._willneed(mapped, first, first + (2 if offsets is not None else 1) * item - 1)
        # Round 2: the value ranges; reading the offsets waits for round 1.
        ranges = {}
        for name, _, values, offsets in self.fields:
            if offsets is None:
                continue
            starts, stops = offsets.array[idx], offsets.array[idx + 1]
            ranges[name] = (starts.tolist(), stops.tolist())
            item = values.array.itemsize
            keep = stops > starts
            self._willneed(values, starts[keep] * item, stops[keep] * item - 1)
        # Decode.
        out: dict[str, list] = {}
        for name, kind, values, offsets in self.fields:
            if offsets is None:
                out[name] = values.array[idx].tolist()
            elif kind == STR:
                data = values.map
                out[name] = [data[a:b].decode() for a, b in zip(*ranges[name], strict=True)]
            else:
                array = values.array
                out[name] = [array[a:b].copy() for a, b in zip(*ranges[name], strict=True)]
        return out

    def release(self) -> None:
        """Unmap every page read so far (the maps stay), so eviction can drop them."""
        for _, _, values, offsets in self.fields:
            for mapped in (values, offsets):
                if mapped is not None:
                    mapped.map.madvise(mmap.MADV_DONTNEED)


# --- files ---------------------------------------------------------------------


def write_files(workload: workloads.Workload, folder: str) -> dict[str, str]:
    """Write the workload as h5record (uncompressed and zstd) and as (b); fsync all."""
    name = workload.name
    paths = {
        H5: os.path.join(folder, f"cold_{name}.h5"),
        H5_ZSTD: os.path.join(folder, f"cold_{name}_zstd.h5"),
        FLAT: os.path.join(folder, f"cold_{name}_flat"),
    }
    step = 10_000
    for label, codec in ((H5, None), (H5_ZSTD, "zstd")):
        with H5Writer(
            paths[label],
            workloads.SCHEMAS[name],
            compression=codec,
            overwrite=True,
            progress=False,
        ) as writer:
            for start in range(0, workload.n_rows, step):
                writer.write_batch(
                    {k: v[start : start + step] for k, v in workload.columns.items()}
                )
    FlatMemmapDataset.write(paths[FLAT], workload)
    harness.sync(paths.values())
    return paths


def write_synthetic(path: str, num_rows: int, step: int = 10_000_000) -> None:
    """A file of ``num_rows`` rows of one int32 ``Integer`` field, written cheaply.

    Large ``write_batch`` calls of one numpy array: 10^8 rows take a few
    seconds.
    """
    values = np.arange(step, dtype=np.int32)
    schema = [Integer("label", dtype="int32")]
    with H5Writer(path, schema, overwrite=True, progress=False) as writer:
        for start in range(0, num_rows, step):
            writer.write_batch({"label": values[: min(step, num_rows - start)]})


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


# --- the section ----------------------------------------------------------------


def _h5_batch(ds: H5Dataset, indices: list[int]) -> Any:
    return ds[indices].columns


def _flat_batch(ds: FlatMemmapDataset, indices: list[int]) -> Any:
    return ds.get_batch(indices)


class ColdSection:
    """Runs the section workload by workload and collects its tables.

    Parameters
    ----------
    folder : str
        Where the files are written (and removed after each workload).
    plan : Plan
        Sizes and counts.
    results : dict
        Receives ``("cold", workload, system)`` and
        ``("cold per batch", workload, system)`` -> ``{metric: value}``.
    """

    def __init__(self, folder: str, plan: Plan, results: dict) -> None:
        self.folder = folder
        self.plan = plan
        self.results = results
        self.own = DiskReads()
        self.device = DiskReads(folder)
        self.limits = Table("Cold: the device's limits (random preads of one row, after eviction)")
        self.reads = Table(
            "Cold: rows/s, and KiB read from disk per row (_KiB), evicted before each repeat"
        )
        self.ratios = Table(
            "Cold: rates as a multiple of the device limit (ds[i]: QD1, others: QD32) "
            "and of baseline (b)"
        )
        self.per_batch = Table("Cold text: random batches of 256, evicted before every batch")
        self.opening = Table("Cold open of a file of many rows")
        self.limit_notes: list[str] = []

    def workload(self, workload: workloads.Workload) -> None:
        """Write the workload's files, measure every figure, remove the files."""
        name, n, plan = workload.name, workload.n_rows, self.plan
        print(f"  cold {name}: writing {n:,} rows ...", file=sys.stderr, flush=True)
        paths = write_files(workload, self.folder)
        try:
            limits = device_limits(
                paths[H5], median_row_bytes(workload), plan.probe_reads, plan.repeats, self.own
            )
            self.limits.add(name, DEVICE, **limits)
            self.results[("cold", name, DEVICE)] = limits
            self.limit_notes.append(
                f"{name} {limits['read_KiB']:.0f} KiB reads: QD1 {limits['qd1_reads_s']:,.0f}/s, "
                f"QD32 {limits['qd32_reads_s']:,.0f}/s"
            )
            figures = {}
            for label in (H5, H5_ZSTD):
                print(f"  cold {name}: {label} ...", file=sys.stderr, flush=True)
                figures[label] = self._h5record(paths[label], n)
            print(f"  cold {name}: {FLAT} ...", file=sys.stderr, flush=True)
            figures[FLAT] = self._flat(paths[FLAT], n)
            for label, metrics in figures.items():
                self.reads.add(name, label, **metrics)
                self.results[("cold", name, label)] = metrics
                ratios = self._ratios(metrics, limits, figures[FLAT])
                self.ratios.add(name, label, **ratios)
                metrics.update(ratios)
            if name == "text":
                print(f"  cold {name}: evicting before each batch ...", file=sys.stderr)
                self._per_batch(paths, n, limits)
        finally:
            for path in paths.values():
                _remove(path)

    def _h5record(self, path: str, n: int) -> dict[str, Any]:
        plan, paths = self.plan, [path]

        def open_reader() -> H5Dataset:
            return H5Dataset(path)

        loader_runs: dict[str, tuple[Read, DiskReads]] = {
            "dl_nw0": (loader(0, plan.loader_batches, h5record.DataLoader, None), self.own),
            "dl_nw2": (loader(2, plan.loader_batches, h5record.DataLoader, None), self.device),
            "plain_dl_nw0": (
                loader(0, plan.loader_batches, None, harness.simple_collate),
                self.own,
            ),
        }
        out: dict[str, Any] = {"open_ms": cold_open_ms(paths, open_reader, plan.repeats)}
        row = measure(paths, open_reader, random_rows(n, plan.row_reads), plan.repeats, self.own)
        batch = measure(
            paths, open_reader, random_batches(_h5_batch, n, plan.batches), plan.repeats, self.own
        )
        out.update(row_rows_s=row.rows_per_s, row_KiB=row.kib_per_row)
        out.update(batch_rows_s=batch.rows_per_s, batch_KiB=batch.kib_per_row)
        for key, (read, counter) in loader_runs.items():
            cold = measure(paths, open_reader, read, plan.loader_repeats, counter)
            out[key] = cold.rows_per_s
            out[f"{key}_KiB"] = cold.kib_per_row
        return out

    def _flat(self, path: str, n: int) -> dict[str, Any]:
        plan, paths = self.plan, [path]

        def open_reader() -> FlatMemmapDataset:
            # Opened, as H5Dataset is once constructed: (b) opens lazily.
            ds = FlatMemmapDataset(path)
            len(ds)
            return ds

        out: dict[str, Any] = {"open_ms": cold_open_ms(paths, open_reader, plan.repeats)}
        row = measure(paths, open_reader, random_rows(n, plan.row_reads), plan.repeats, self.own)
        batch = measure(
            paths, open_reader, random_batches(_flat_batch, n, plan.batches), plan.repeats, self.own
        )
        out.update(row_rows_s=row.rows_per_s, row_KiB=row.kib_per_row)
        out.update(batch_rows_s=batch.rows_per_s, batch_KiB=batch.kib_per_row)
        return out

    @staticmethod
    def _ratios(
        metrics: dict[str, Any], limits: dict[str, float], flat: dict[str, Any]
    ) -> dict[str, float]:
        qd1, qd32 = limits["qd1_reads_s"], limits["qd32_reads_s"]
        out = {"row_x_qd1": metrics["row_rows_s"] / qd1}
        for key in ("batch_rows_s", "dl_nw0", "dl_nw2", "plain_dl_nw0"):
            if key in metrics:
                out[f"{key.removesuffix('_rows_s')}_x_qd32"] = metrics[key] / qd32
        out["row_x_b"] = metrics["row_rows_s"] / flat["row_rows_s"]
        out["batch_x_b"] = metrics["batch_rows_s"] / flat["batch_rows_s"]
        return out

    def _per_batch(self, paths: dict[str, str], n: int, limits: dict[str, float]) -> None:
        # Preparing reads a batch of no rows: it maps the files and reads nothing.
        readers = {}
        for label in (H5, H5_ZSTD):
            ds = H5Dataset(paths[label])
            readers[label] = EvictedReader(
                [paths[label]], partial(_h5_batch, ds), ds.close, partial(_h5_batch, ds, [])
            )
        flat = FlatMemmapDataset(paths[FLAT])
        readers[FLAT] = EvictedReader(
            [paths[FLAT]], flat.get_batch, flat.close, partial(flat.get_batch, [])
        )
        probe = FlatProbe(paths[FLAT])
        readers[PROBE] = EvictedReader([paths[FLAT]], probe.batch, probe.release, lambda: None)
        figures = measure_per_batch(readers, n, self.plan.evicted_batches, self.own)
        yardstick = figures[PROBE].rows_per_s
        for label, cold in figures.items():
            metrics = {
                "batch_rows_s": cold.rows_per_s,
                "KiB_per_row": cold.kib_per_row,
                "x_probe": cold.rows_per_s / yardstick,
                "x_qd32": cold.rows_per_s / limits["qd32_reads_s"],
            }
            self.per_batch.add("text", label, **metrics)
            self.results[("cold per batch", "text", label)] = metrics

    def synthetic(self, num_rows: int) -> None:
        """Open a file of ``num_rows`` rows cold: time and resident-set growth."""
        path = os.path.join(self.folder, "cold_synthetic.h5")
        print(f"  cold: writing {num_rows:,} rows of one Integer ...", file=sys.stderr)
        try:
            start = time.perf_counter()
            write_synthetic(path, num_rows)
            write_s = time.perf_counter() - start
            harness.sync([path])
            # The first open of the file: memory it frees stays in the process
            # and later opens would reuse it unseen.
            harness.evict([path])
            rss = harness.rss_bytes()
            start = time.perf_counter()
            ds = H5Dataset(path)
            opened = time.perf_counter()
            rss_open = harness.rss_bytes()
            ds[num_rows - 1]
            first_row_ms = 1e3 * (time.perf_counter() - opened)
            rss_row = harness.rss_bytes()
            metrics = {
                "rows": num_rows,
                "size_MB": os.path.getsize(path) / 1e6,
                "write_s": write_s,
                "first_open_ms": 1e3 * (opened - start),
                "first_row_ms": first_row_ms,
                "open_ms": cold_open_ms([path], lambda: H5Dataset(path), self.plan.repeats),
                "rss_open_MB": (rss_open - rss) / 1e6,
                "rss_first_row_MB": (rss_row - rss) / 1e6,
            }
            ds.close()
            del ds
            self.opening.add(f"{num_rows:.0e} rows", H5, **metrics)
            self.results[("cold", "synthetic", H5)] = metrics
        finally:
            _remove(path)

    def print(self) -> None:
        """Print the section: how data was made cold, the limits, the tables."""
        counted = (
            f"KiB columns are bytes read from disk per row: {self.own.source} of this "
            f"process, except `dl_nw2_KiB` (workers are other processes): "
            f"{self.device.source}, which also counts any other process reading that disk."
        )
        print("## Cold page cache (larger than RAM)\n")
        print(
            "Made cold without root: before each measured repeat (and, in the text table "
            "below, before every batch) the reader is closed and its files are evicted "
            "from the page cache with posix_fadvise(POSIX_FADV_DONTNEED); files were "
            "fsynced once after writing. The device limits, measured in this run on the "
            "same files (random preads of the median row rounded up to 4 KiB, at 4 KiB-"
            "aligned offsets, 1 thread = QD1, 32 threads = QD32): "
            + "; ".join(self.limit_notes)
            + ". "
            + counted
            + "\n"
        )
        for table in (self.limits, self.reads, self.ratios, self.per_batch, self.opening):
            if table.rows:
                table.print()


def run(loaded: dict[str, workloads.Workload], folder: str, quick: bool, results: dict) -> None:
    """Run the cold section, print its tables and add its figures to ``results``.

    Parameters
    ----------
    loaded : dict
        Workloads already built, by name; one with fewer rows than the
        section needs is built again at the size it needs.
    folder : str
        Temporary folder; the section removes its files.
    quick : bool
        Smaller files and fewer repeats (``--quick``).
    results : dict
        Receives the figures (see :class:`ColdSection`).
    """
    plan = QUICK if quick else FULL
    section = ColdSection(folder, plan, results)
    for name in ("text", "images", "tokens"):
        if name not in loaded:
            continue
        workload = loaded[name]
        if workload.n_rows < plan.rows[name]:
            workload = workloads.make(name, plan.rows[name], seed=SEED)
        section.workload(workload)
    section.synthetic(plan.synthetic_rows)
    section.print()
