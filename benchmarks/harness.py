"""Timing and reporting helpers for the benchmarks.

Rates are medians over repeats, so one slow repeat (a page-cache miss, a
background process) does not move the result. Most sections measure warm
files (see :func:`drop_caches_not_possible_note`); the cold section makes
files cold with :func:`evict` and counts disk reads with :class:`DiskReads`.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def median_rate(
    fn: Callable[[], object],
    n_items: int,
    repeats: int = 5,
    min_time: float = 0.2,
    number: int | None = None,
) -> float:
    """Median throughput of ``fn`` in items per second.

    Parameters
    ----------
    fn : callable
        Handles ``n_items`` items per call.
    n_items : int
        Items per call of ``fn``.
    repeats : int
        Number of timed repeats; the median is returned.
    min_time : float
        When ``number`` is None, each repeat calls ``fn`` enough times to last
        at least this many seconds (found by a calibration run, which also
        warms caches and is not counted).
    number : int, optional
        Fixed number of calls per repeat.

    Returns
    -------
    float
        Median of ``number * n_items / seconds`` over the repeats.
    """
    if number is None:
        number = 1
        while True:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
            # Aim 20% past min_time so the timed repeats clear it too.
            number = max(number * 2, math.ceil(number * 1.2 * min_time / max(elapsed, 1e-9)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rates.append(number * n_items / (time.perf_counter() - start))
    return statistics.median(rates)


def drop_caches_not_possible_note() -> str:
    """Explain, for a report, why reads are measured with warm caches."""
    return (
        "The core, compression and memory sections read files warm from the OS page "
        "cache: the benchmark does not drop caches (that needs root and slows every "
        "process on the machine), so those numbers measure decoding and lookup cost "
        "rather than disk speed. The cold section evicts its own files from the page "
        "cache before each measurement instead."
    )


def ratio(a: float, b: float) -> str:
    """Format ``a / b`` as a speed-up, e.g. ``'3.2x'`` or ``'15x'``."""
    if b == 0:
        return "n/a"
    r = a / b
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def format_value(value: Any) -> str:
    """Format a table cell: thousands separators, at most 3 significant decimals."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


class Table:
    """Rows of benchmark results, printed as an aligned Markdown table.

    Examples
    --------
    >>> t = Table()
    >>> t.add("text", "baseline", rows_per_s=12345.6)
    >>> print(t.render())
    | workload | system   | rows_per_s |
    | -------- | -------- | ---------: |
    | text     | baseline |     12,346 |
    """

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self.columns: list[str] = ["workload", "system"]
        self.rows: list[dict[str, Any]] = []

    def add(self, workload: str, system: str, **metrics: Any) -> None:
        """Add a row; new metric names become new columns, in order of appearance."""
        for name in metrics:
            if name not in self.columns:
                self.columns.append(name)
        self.rows.append({"workload": workload, "system": system, **metrics})

    def render(self) -> str:
        """Return the table as Markdown with padded columns."""
        cells = [[format_value(row.get(col)) for col in self.columns] for row in self.rows]
        # Columns holding only numbers are right-aligned.
        numeric = [
            all(isinstance(row.get(col), (int, float)) or row.get(col) is None for row in self.rows)
            and col not in ("workload", "system")
            for col in self.columns
        ]
        widths = [
            max([len(col), 3, *(len(line[k]) for line in cells)])
            for k, col in enumerate(self.columns)
        ]

        def line(values: Sequence[str]) -> str:
            padded = (
                v.rjust(w) if right else v.ljust(w)
                for v, w, right in zip(values, widths, numeric, strict=True)
            )
            return "| " + " | ".join(padded) + " |"

        # A colon at the right end of the rule right-aligns the column.
        rule = [
            "-" * (w - 1) + ":" if right else "-" * w
            for w, right in zip(widths, numeric, strict=True)
        ]
        out = [f"### {self.title}", ""] if self.title else []
        out += [line(self.columns), line(rule), *(line(c) for c in cells)]
        return "\n".join(out)

    def print(self) -> None:
        """Print :meth:`render` followed by a blank line."""
        print(self.render(), end="\n\n", flush=True)


# --- memory -----------------------------------------------------------------


def measure_pss(pids: Sequence[int]) -> int:
    """Sum the proportional set size (PSS) of processes, in bytes.

    PSS divides each shared page between the processes mapping it, so the
    sum over a parent and its DataLoader workers counts a shared memory map
    once, unlike the sum of RSS. Processes that have exited are skipped.
    """
    total_kb = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for entry in text.splitlines():
            if entry.startswith("Pss:"):
                total_kb += int(entry.split()[1])
                break
    return total_kb * 1024


def child_pids(pid: int) -> list[int]:
    """Return the direct children of process ``pid`` (e.g. DataLoader workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(children))


# --- cold page cache --------------------------------------------------------


def files_in(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The files among ``paths``, with folders replaced by the files under them."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(str(p) for p in sorted(Path(path).rglob("*")) if p.is_file())
        else:
            out.append(os.fspath(path))
    return out


def sync(paths: Iterable[str | os.PathLike[str]]) -> None:
    """``fsync`` files (and the files in folders): dirty pages cannot be evicted."""
    for path in files_in(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def evict(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop files (and the files in folders) from the OS page cache, without root.

    ``posix_fadvise(POSIX_FADV_DONTNEED)`` drops the clean pages of a file
    that no process has mapped. So :func:`sync` files once after writing
    them, and release memory maps of them (close the datasets) before
    evicting: pages mapped by a live memory map stay in the cache.
    """
    for path in files_in(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class DiskReads:
    """Bytes read from disk so far, by this process or by a whole device.

    Call the instance for the current count; differences between two calls
    are what a measurement read.

    Parameters
    ----------
    folder : str, optional
        None counts this process: ``read_bytes`` of ``/proc/self/io``, the
        reads it caused (its threads and readahead included, its child
        processes not). A folder counts the device holding it: sectors read
        in ``/proc/diskstats``, which includes DataLoader workers and also
        every other process using that disk.

    Attributes
    ----------
    source : str
        Where the counts come from, for the report.
    available : bool
        False when the folder's device is not in ``/proc/diskstats`` (e.g.
        an overlay or network file system); the count is then always 0.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        self.device: str | None = None
        if folder is None:
            self.source = "/proc/self/io read_bytes"
            self.available = Path("/proc/self/io").exists()
            return
        st_dev = os.stat(folder).st_dev
        wanted = (os.major(st_dev), os.minor(st_dev))
        for line in Path("/proc/diskstats").read_text().splitlines():
            major, minor, name = line.split()[:3]
            if (int(major), int(minor)) == wanted:
                self.device = name
        self.available = self.device is not None
        where = self.device or f"device {wanted[0]}:{wanted[1]}, not listed"
        self.source = f"/proc/diskstats sectors read ({where})"

    def __call__(self) -> int:
        if not self.available:
            return 0
        if self.device is None:
            for line in Path("/proc/self/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
            return 0
        for line in Path("/proc/diskstats").read_text().splitlines():
            fields = line.split()
            if fields[2] == self.device:
                return 512 * int(fields[5])  # sectors are 512 bytes in diskstats
        return 0


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS`` of ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- DataLoader throughput --------------------------------------------------


class BlankDataset:
    """``n`` copies of one row: a dataset of a given length without payload."""

    def __init__(self, n: int, row: dict[str, Any]) -> None:
        self.n = n
        self.row = row

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.row


def list_collate(batch: list) -> list:
    """Collate function that keeps a batch as the list of rows."""
    return batch


def simple_collate(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate a batch the plain way: iterate its rows as dicts.

    What a user writes without h5record's collate: strings and bytes stay
    lists, numbers become one tensor per field, 1-D arrays (sequences) are
    padded with zeros to the longest row and come with
    ``<name>_lengths``.

    Parameters
    ----------
    rows : iterable of dict
        A list of row dicts, or an h5record ``Batch`` (iterated row by row).
    """
    import torch

    rows = list(rows)
    out: dict[str, Any] = {}
    for name in rows[0] if rows else ():
        values = [row[name] for row in rows]
        first = values[0]
        if isinstance(first, (str, bytes)):
            out[name] = values
        elif isinstance(first, np.ndarray):
            lengths = [len(v) for v in values]
            padded = np.zeros((len(values), max(lengths)), dtype=first.dtype)
            for k, value in enumerate(values):
                padded[k, : len(value)] = value
            out[name] = torch.from_numpy(padded)
            out[f"{name}_lengths"] = torch.tensor(lengths)
        else:
            out[name] = torch.tensor(values)
    return out


def batch_rows(batch: Any) -> int:
    """Count the rows of a collated batch (list, dict of columns or tensor)."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    return len(batch)


@dataclass
class LoaderRate:
    """Result of :func:`dataloader_rate`; times are medians over repeats.

    Attributes
    ----------
    rows_per_s : float
        Rows over the whole run, from creating the iterator (which starts the
        workers) to the last batch.
    first_batch_s : float
        Seconds from creating the iterator to receiving the first batch.
    steady_rows_per_s : float
        Rows after the first batch over the time after it: the rate once the
        workers are up.
    rows : int
        Rows consumed per repeat (median).
    """

    rows_per_s: float
    first_batch_s: float
    steady_rows_per_s: float
    rows: int

    def __str__(self) -> str:
        return (
            f"{self.rows_per_s:,.0f} rows/s (steady {self.steady_rows_per_s:,.0f}), "
            f"first batch {self.first_batch_s:.2f} s, {self.rows:,} rows"
        )


class _Stoppable:
    """A sampler that hands out no more indices once ``stop`` is set: a loader's
    epoch then ends after the batches already asked of its workers."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.stop = False

    def __iter__(self) -> Iterator[int]:
        for index in self.sampler:
            if self.stop:
                return
            yield index

    def __len__(self) -> int:
        return len(self.sampler)


def dataloader_rate(
    dataset: Any,
    batch_size: int,
    num_workers: int,
    mp_context: str | None,
    collate_fn: Callable[[list], Any] | None,
    shuffle: bool = True,
    max_batches: int | None = None,
    repeats: int = 3,
    time_budget: float = 2.0,
    seed: int = 0,
    loader_cls: Any = None,
    num_samples: int | None = None,
) -> LoaderRate:
    """Rows per second through a ``torch.utils.data.DataLoader``.

    Each repeat builds a fresh loader, so worker start-up is part of the
    measurement (``first_batch_s`` reports it separately). A repeat stops
    after ``max_batches`` batches, at the end of the data, or once
    ``time_budget`` seconds have passed since the first batch, which keeps
    every run to a few seconds whatever the dataset size.

    Parameters
    ----------
    dataset : map-style dataset
        Anything with ``__len__`` and ``__getitem__``.
    batch_size, num_workers : int
        Passed to the DataLoader.
    mp_context : {'fork', 'spawn', 'forkserver', None}
        Start method of the workers; ignored when ``num_workers == 0``.
    collate_fn : callable or None
        Passed to the DataLoader (None: torch's default collate).
    shuffle : bool
        Random order (seeded per repeat) or sequential.
    max_batches : int, optional
        Cap on the batches consumed per repeat.
    repeats : int
        Number of runs; medians are reported.
    time_budget : float
        Seconds after the first batch before a run stops.
    seed : int
        Seed of the shuffling order.
    loader_cls : class, optional
        DataLoader class to use (default ``torch.utils.data.DataLoader``).
    num_samples : int, optional
        With ``shuffle``, draw only this many distinct random rows (a
        ``RandomSampler`` without replacement): a bounded run in which the
        workers prefetch nothing past its last batch.

    Returns
    -------
    LoaderRate
    """
    import torch
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

    runs = []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(seed + repeat)
        if shuffle:
            base: Any = RandomSampler(dataset, num_samples=num_samples, generator=generator)
        else:
            base = SequentialSampler(dataset)
        sampler = _Stoppable(base)
        loader = (loader_cls or DataLoader)(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn,
            multiprocessing_context=mp_context if num_workers > 0 else None,
            sampler=sampler,
            generator=generator,  # seeds the workers as well
        )
        limit = len(loader) if max_batches is None else min(max_batches, len(loader))
        start = time.perf_counter()
        iterator = iter(loader)
        rows = first_rows = 0
        first = end = start
        for k in range(limit):
            rows += batch_rows(next(iterator))
            end = time.perf_counter()
            if k == 0:
                first, first_rows = end, rows
            elif end - first >= time_budget:
                break
        # Not timed: the epoch is ended rather than dropped, so that the workers
        # have sent every batch they were given and sit idle when they are shut
        # down. Dropping a loader mid-epoch shuts workers down while they send,
        # which a loaded machine turned into an abort of a worker
        # ("terminate called without an active exception") once in many runs.
        sampler.stop = True
        for _ in iterator:
            pass
        del iterator
        runs.append((rows, end - start, first - start, rows - first_rows, end - first))

    def median(values: list[float]) -> float:
        return statistics.median(values)

    return LoaderRate(
        rows_per_s=median([r / t if t > 0 else 0.0 for r, t, *_ in runs]),
        first_batch_s=median([f for _, _, f, _, _ in runs]),
        steady_rows_per_s=median([sr / st if st > 0 else 0.0 for *_, sr, st in runs]),
        rows=int(median([r for r, *_ in runs])),
    )
