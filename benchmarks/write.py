"""Write speed: h5record beside the machine's own limit and two other writers.

For each workload (~16 KB JPEG rows, token sequences, text pairs) and in
the same run, with repeats interleaved so that every writer sees the same
moments of a noisy disk:

- **sequential write**: the workload's payload bytes written from Python in
  1 MiB ``os.write`` calls, then ``fsync``: what this disk and page cache
  allow a single Python writer;
- **h5record** ``write`` (row by row) and ``write_batch`` (10,000 rows at
  a time), timed until ``close`` returns (its last commit ``fsync``\\s);
- **(b) numpy memmap**: the baseline writer of :mod:`benchmarks.baselines`,
  then an ``fsync`` of its files (shown apart, so that its page-cache speed
  is visible too);
- **LMDB**: one ``put`` per row (key: the row number), a commit every
  100,000 rows, each commit synced (LMDB's default); skipped with a note
  when the ``lmdb`` package is missing.

Every rate is the median of the repeats, counted in the workload's payload
bytes. Then: the peak resident memory of each writer (one subprocess per
workload; ``VmHWM`` reset before each writer), the cost of one commit and
of the final close, and the time to append 100,000 rows to text files of
1M rows (and 10M in the full run), against writing them into a new file.

``python -m benchmarks.run --sections write`` runs this section alone;
``python -m benchmarks.write --scale-gb 30`` is the larger-than-page-cache
run of ``make bench-scale`` (:func:`scale`).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from h5record import H5Writer

from . import harness, workloads
from .baselines import FlatMemmapDataset
from .harness import Table
from .workloads import SCHEMAS

SEED = 0
BATCH_ROWS = 10_000
LMDB_COMMIT_ROWS = 100_000
MIB = 1 << 20

SEQ = "sequential write (1 MiB + fsync)"
H5_ROW = "h5record write"
H5_BATCH = "h5record write_batch"
MEMMAP = "(b) numpy memmap + fsync"
LMDB = "LMDB"
SYSTEMS = (SEQ, H5_ROW, H5_BATCH, MEMMAP, LMDB)


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run of the section.

    Attributes
    ----------
    rows : dict
        Rows written per workload: a smaller workload is repeated up to
        this size, so that the fixed costs of opening and closing a file
        (a few fsyncs) do not stand for the speed of writing.
    repeats : int
        Interleaved repeats of every write (medians).
    commits : int
        Commits timed per workload.
    append_bases : tuple of int
        Rows of the text files that rows are appended to.
    append_rows : int
        Rows appended.
    pool_bytes : int
        Largest pool of distinct rows handed to a memory subprocess, which
        writes the workload's row count by cycling through it.
    """

    rows: dict[str, int]
    repeats: int
    commits: int
    append_bases: tuple[int, ...]
    append_rows: int
    pool_bytes: int


QUICK = Plan(
    rows={"images": 10_000, "tokens": 40_000, "text": 400_000},
    repeats=3,
    commits=5,
    append_bases=(1_000_000,),
    append_rows=100_000,
    pool_bytes=32 * MIB,
)
FULL = Plan(
    rows={
        "images": workloads.IMAGE_ROWS,
        "tokens": workloads.TOKEN_ROWS,
        "text": workloads.TEXT_ROWS,
    },
    repeats=3,
    commits=9,
    append_bases=(1_000_000, 10_000_000),
    append_rows=100_000,
    pool_bytes=64 * MIB,
)


def lmdb_module() -> Any:
    try:
        import lmdb
    except ImportError:
        return None
    return lmdb


# --- the writers ------------------------------------------------------------------
# Each returns (seconds until its data is durable, seconds of the durable tail:
# close, fsync or last commit).


def write_sequential(path: str, nbytes: int) -> tuple[float, float]:
    """``nbytes`` in 1 MiB ``os.write`` calls, then ``fsync``."""
    block = memoryview(np.random.default_rng(SEED).bytes(MIB))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[: min(left, MIB)])
        written = time.perf_counter()
        os.fsync(fd)
        end = time.perf_counter()
    finally:
        os.close(fd)
    return end - start, end - written


def write_rows(path: str, name: str, rows: Iterator[dict[str, Any]]) -> tuple[float, float]:
    """Row by row, as a user streams rows: ``writer.write(row)``."""
    start = time.perf_counter()
    writer = H5Writer(path, SCHEMAS[name], overwrite=True, progress=False)
    write = writer.write
    for row in rows:
        write(row)
    written = time.perf_counter()
    writer.close()
    end = time.perf_counter()
    return end - start, end - written


def write_batches(path: str, name: str, batches: Iterator[dict[str, Any]]) -> tuple[float, float]:
    """Column-wise: ``writer.write_batch(columns)`` of 10,000 rows at a time."""
    start = time.perf_counter()
    writer = H5Writer(path, SCHEMAS[name], overwrite=True, progress=False)
    for columns in batches:
        writer.write_batch(columns)
    written = time.perf_counter()
    writer.close()
    end = time.perf_counter()
    return end - start, end - written


def write_memmap(path: str, columns: dict[str, Any]) -> tuple[float, float]:
    """Baseline (b), then an ``fsync`` of its files."""
    start = time.perf_counter()
    FlatMemmapDataset.write(path, columns)
    written = time.perf_counter()
    harness.sync([path])
    end = time.perf_counter()
    return end - start, end - written


_LABEL = struct.Struct("<q")
_PAIR = struct.Struct("<IId")


def lmdb_values(name: str, columns: dict[str, Any]) -> Iterator[Any]:
    """One value per row holding all of its fields, built as the rows are put."""
    if name == "images":
        pack = _LABEL.pack
        for image, label in zip(columns["image"], columns["label"].tolist(), strict=True):
            yield pack(label) + image
    elif name == "tokens":
        for tokens in columns["tokens"]:
            yield memoryview(tokens).cast("B")
    else:
        pack = _PAIR.pack
        for a, b, label in zip(
            columns["sentence1"], columns["sentence2"], columns["label"].tolist(), strict=True
        ):
            a, b = a.encode(), b.encode()
            yield pack(len(a), len(b), label) + a + b


def write_lmdb(
    path: str, name: str, columns: dict[str, Any], raw_bytes: int
) -> tuple[float, float]:
    """One ``put`` per row in key order, a synced commit every 100,000 rows."""
    lmdb = lmdb_module()
    # B-tree pages cost about 2x a row's bytes at worst; the map is only reserved.
    map_size = 3 * raw_bytes + (1 << 30)
    start = time.perf_counter()
    env = lmdb.open(path, map_size=map_size, meminit=False, readahead=False)
    txn = env.begin(write=True)
    rows = 0
    for value in lmdb_values(name, columns):
        txn.put(rows.to_bytes(8, "big"), value, append=True)
        rows += 1
        if rows % LMDB_COMMIT_ROWS == 0:
            txn.commit()
            txn = env.begin(write=True)
    written = time.perf_counter()
    txn.commit()
    env.close()
    end = time.perf_counter()
    return end - start, end - written


def row_bytes(workload: workloads.Workload) -> np.ndarray:
    """Payload bytes of every row, counted as ``Workload.raw_bytes`` counts them."""
    total = np.zeros(workload.n_rows, np.int64)
    for values in workload.columns.values():
        if isinstance(values, np.ndarray):
            total += 8
        elif values and isinstance(values[0], str):
            total += np.fromiter((len(v.encode()) for v in values), np.int64, len(values))
        else:
            total += np.fromiter(
                (v.nbytes if isinstance(v, np.ndarray) else len(v) for v in values),
                np.int64,
                len(values),
            )
    return total


def repeated(workload: workloads.Workload, n: int) -> workloads.Workload:
    """The workload's rows repeated (as references) up to ``n`` rows."""
    if n <= workload.n_rows:
        return workload
    sizes = row_bytes(workload)
    whole, rest = divmod(n, workload.n_rows)
    columns = {
        k: np.resize(v, n) if isinstance(v, np.ndarray) else list(v) * whole + list(v[:rest])
        for k, v in workload.columns.items()
    }
    raw = whole * int(sizes.sum()) + int(sizes[:rest].sum())
    source = f"{workload.source}, {workload.n_rows:,} rows repeated"
    return workloads.Workload(workload.name, columns, n, raw, source)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def _batches(columns: dict[str, Any], n: int) -> Iterator[dict[str, Any]]:
    for start in range(0, n, BATCH_ROWS):
        yield {k: v[start : start + BATCH_ROWS] for k, v in columns.items()}


# --- the section ------------------------------------------------------------------


class WriteSection:
    """Runs the measurements and keeps the tables; figures go to ``results``.

    Keys of ``results``: ``("write", workload, system)`` with ``rows_s``,
    ``MB_s``, ``x_seq`` and for h5record ``x_memmap``, ``x_lmdb``;
    ``("write rss", workload, system)`` with ``peak_MB``;
    ``("write commit", workload)`` with ``commit_ms`` and ``close_ms``;
    ``("write append", base_rows)`` with ``append_s`` and ``new_file_s``.
    """

    def __init__(self, folder: str, plan: Plan, results: dict) -> None:
        self.folder = folder
        self.plan = plan
        self.results = results
        self.lmdb = lmdb_module() is not None
        self.speed = Table(
            "Write: rows/s and payload MB/s, durable (fsync) at the end, beside a sequential "
            "write of the same bytes (x_seq)"
        )
        self.memory = Table("Write: peak resident memory of each writer (MB)")
        self.commits = Table("Write: one commit and the final close (h5record, row by row)")
        self.append = Table(
            "Write: appending rows to a text file (mode='a', row by row), against writing "
            "them to a new file"
        )

    def workload(self, workload: workloads.Workload) -> None:
        name, n = workload.name, workload.n_rows
        print(f"  write {name}: {n:,} rows ...", file=sys.stderr, flush=True)
        rows = list(workloads.rows(workload))
        path = os.path.join(self.folder, f"write_{name}")
        writers: dict[str, Callable[[], tuple[float, float]]] = {
            SEQ: lambda: write_sequential(path, workload.raw_bytes),
            H5_ROW: lambda: write_rows(path, name, iter(rows)),
            H5_BATCH: lambda: write_batches(path, name, _batches(workload.columns, n)),
            MEMMAP: lambda: write_memmap(path, workload.columns),
        }
        if self.lmdb:
            writers[LMDB] = lambda: write_lmdb(path, name, workload.columns, workload.raw_bytes)
        times: dict[str, list[tuple[float, float]]] = {s: [] for s in writers}
        for _ in range(self.plan.repeats):
            for system, write in writers.items():
                _remove(path)
                times[system].append(write())
                _remove(path)
        figures: dict[str, dict[str, float]] = {}
        for system, runs in times.items():
            seconds = statistics.median(t for t, _ in runs)
            tail = statistics.median(t for _, t in runs)
            figures[system] = {
                "rows_s": n / seconds,
                "MB_s": workload.raw_bytes / seconds / 1e6,
                "tail_ms": 1e3 * tail,
            }
        figures[SEQ] = {"payload_MB": workload.raw_bytes / 1e6, **figures[SEQ]}
        seq = figures[SEQ]["MB_s"]
        for system, metrics in figures.items():
            metrics["x_seq"] = metrics["MB_s"] / seq
            if system in (H5_ROW, H5_BATCH):
                metrics["x_memmap"] = metrics["MB_s"] / figures[MEMMAP]["MB_s"]
                if LMDB in figures:
                    metrics["x_lmdb"] = metrics["MB_s"] / figures[LMDB]["MB_s"]
            self.results[("write", name, system)] = metrics
            self.speed.add(name, system, **metrics)
        self._rss(workload)
        self._commits(workload)

    def _rss(self, workload: workloads.Workload) -> None:
        """Peak RSS of each writer, in a subprocess that holds a pool of rows only."""
        pool = pool_of(workload, self.plan.pool_bytes)
        pool_path = os.path.join(self.folder, f"pool_{workload.name}.pkl")
        with open(pool_path, "wb") as fh:
            pickle.dump(pool, fh, protocol=pickle.HIGHEST_PROTOCOL)
        systems = [H5_ROW, H5_BATCH, MEMMAP] + ([LMDB] if self.lmdb else [])
        try:
            peaks = rss_subprocess(pool_path, workload.n_rows, systems, self.folder)
        finally:
            os.unlink(pool_path)
        for system, figures in peaks.items():
            self.results[("write rss", workload.name, system)] = figures
            self.memory.add(workload.name, system, rows=workload.n_rows, **figures)

    def _commits(self, workload: workloads.Workload) -> None:
        """Median milliseconds of one commit, and of the final close."""
        name, n = workload.name, workload.n_rows
        path = os.path.join(self.folder, f"commit_{name}.h5")
        parts = self.plan.commits + 1
        bounds = np.linspace(0, n, parts + 1).astype(int)
        commit_ms = []
        writer = H5Writer(path, SCHEMAS[name], overwrite=True, progress=False, commit_seconds=None)
        rows = workloads.rows(workload)
        for k in range(parts):
            for _ in range(bounds[k], bounds[k + 1]):
                writer.write(next(rows))
            writer.flush()  # the rows reach the file; the commit makes them durable
            if k < parts - 1:
                start = time.perf_counter()
                writer.commit()
                commit_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        writer.close()
        close_ms = 1e3 * (time.perf_counter() - start)
        _remove(path)
        figures = {
            "commits": len(commit_ms),
            "MB_per_commit": workload.raw_bytes / parts / 1e6,
            "commit_ms": statistics.median(commit_ms),
            "slowest_commit_ms": max(commit_ms),
            "close_ms": close_ms,
            "commit_per_60s_pct": 100 * statistics.median(commit_ms) / 60e3,
        }
        self.results[("write commit", name)] = figures
        self.commits.add(name, "h5record", **figures)

    def appends(self, text: workloads.Workload) -> None:
        """Append ``append_rows`` rows to text files of each base size (medians of 3)."""
        added = self.plan.append_rows
        new_rows = [row for _, row in zip(range(added), workloads.rows(text), strict=False)]
        fresh = os.path.join(self.folder, "append_new.h5")
        new_file = []
        for _ in range(3):
            _remove(fresh)
            new_file.append(write_rows(fresh, "text", iter(new_rows))[0])
        _remove(fresh)
        new_file_s = statistics.median(new_file)
        for base in self.plan.append_bases:
            print(f"  write: append to {base:,} rows ...", file=sys.stderr, flush=True)
            path = os.path.join(self.folder, f"append_{base}.h5")
            build_text_file(path, text, base)
            runs = []
            for _ in range(3):  # each appends to the file as the last one left it
                start = time.perf_counter()
                writer = H5Writer(path, mode="a", progress=False)
                opened = time.perf_counter()
                write = writer.write
                for row in new_rows:
                    write(row)
                written = time.perf_counter()
                writer.close()
                end = time.perf_counter()
                runs.append((end - start, opened - start, end - written))
            size_gb = os.path.getsize(path) / 1e9
            _remove(path)
            append_s = statistics.median(r[0] for r in runs)
            figures = {
                "file_GB": size_gb,
                "open_ms": 1e3 * statistics.median(r[1] for r in runs),
                "close_ms": 1e3 * statistics.median(r[2] for r in runs),
                "append_s": append_s,
                "us_per_new_row": 1e6 * append_s / added,
                "new_file_s": new_file_s,
                "x_new_file": append_s / new_file_s,
            }
            self.results[("write append", base)] = figures
            self.append.add("text", f"{added:,} rows onto {base:,}", **figures)

    def print(self) -> None:
        if not self.lmdb:
            print("LMDB is not installed (pip install lmdb): its rows are left out.\n")
        for table in (self.speed, self.memory, self.commits, self.append):
            if table.rows:
                table.print()


def build_text_file(path: str, text: workloads.Workload, rows: int) -> None:
    """A text file of ``rows`` rows: the workload's rows repeated, by ``write_batch``."""
    with H5Writer(path, SCHEMAS["text"], overwrite=True, progress=False) as writer:
        done = 0
        while done < rows:
            take = min(text.n_rows, rows - done)
            for start in range(0, take, 100_000):
                stop = min(take, start + 100_000)
                writer.write_batch({k: v[start:stop] for k, v in text.columns.items()})
            done += take


# --- memory, in a subprocess ------------------------------------------------------


def pool_of(workload: workloads.Workload, max_bytes: int) -> dict[str, Any]:
    """The first rows of a workload, at most ``max_bytes`` of payload, as columns."""
    per_row = workload.raw_bytes / max(workload.n_rows, 1)
    take = max(1, min(workload.n_rows, int(max_bytes / max(per_row, 1))))
    columns = {k: v[:take] for k, v in workload.columns.items()}
    return {"name": workload.name, "columns": columns, "bytes": int(per_row * take)}


def _cycled(pool: dict[str, Any], n: int) -> dict[str, Any]:
    """Columns of ``n`` rows that repeat the pool's rows (references, not copies)."""
    out: dict[str, Any] = {}
    for key, values in pool["columns"].items():
        if isinstance(values, np.ndarray):
            out[key] = np.resize(values, n)
        else:
            size = len(values)
            out[key] = [values[i % size] for i in range(n)]
    return out


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_subprocess(pool_path: str, n: int, systems: list[str], folder: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.write", "--rss", pool_path, str(n), folder, *systems],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_child(pool_path: str, n: int, folder: str, systems: list[str]) -> None:
    with open(pool_path, "rb") as fh:
        pool = pickle.load(fh)
    name = pool["name"]
    columns = _cycled(pool, n)
    pool_rows = list(workloads.rows(workloads.Workload(name, pool["columns"], 0, 0, "")))
    size = len(pool_rows)
    raw_bytes = int(pool["bytes"] / size * n)
    path = os.path.join(folder, f"rss_{name}")
    out = {}
    for system in systems:
        _remove(path)
        exact = _reset_peak()
        before = _status_kb("VmRSS")
        if system == H5_ROW:
            write_rows(path, name, (pool_rows[i % size] for i in range(n)))
        elif system == H5_BATCH:
            write_batches(path, name, _batches(columns, n))
        elif system == MEMMAP:
            write_memmap(path, columns)
        elif system == LMDB:
            write_lmdb(path, name, columns, raw_bytes)
        peak = _status_kb("VmHWM")
        _remove(path)
        out[system] = {
            "peak_MB": peak * 1024 / 1e6,
            "growth_MB": (peak - before) * 1024 / 1e6,
            "peak_is_this_writer": exact,
        }
    print(json.dumps(out))


# --- bench-scale -------------------------------------------------------------------


def scale(gigabytes: float, folder: str | None, results: dict) -> None:
    """16 KB rows written to a file of ``gigabytes`` GB, beside a sequential write.

    The sequential write runs before and after the h5record write and the
    limit is their mean: this disk's speed drifts over minutes. h5record
    writes row by row in a subprocess that reports its peak RSS. Then 100,000
    rows are appended to text files of 1M and 10M rows.
    """
    nbytes = int(gigabytes * 1e9)
    where = tempfile.mkdtemp(prefix="h5record-scale-", dir=folder)
    free = shutil.disk_usage(where).free
    if free < 1.2 * nbytes + 4e9:
        shutil.rmtree(where, ignore_errors=True)
        print(f"bench-scale: {free / 1e9:.0f} GB free under {where}, {nbytes / 1e9:.0f} GB needed")
        return
    try:
        images = workloads.make("images", workloads.IMAGE_ROWS, seed=SEED)
        per_row = images.raw_bytes / images.n_rows
        n = int(nbytes / per_row)
        payload = int(per_row * n)
        table = Table(
            f"Write at scale: {payload / 1e9:.1f} GB of ~16 KB rows ({n:,} rows), "
            f"RAM {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
        )
        seq_path = os.path.join(where, "sequential.bin")
        seq = []
        for attempt in ("before", "after"):
            if attempt == "after":
                print("  scale: h5record ...", file=sys.stderr, flush=True)
                pool = pool_of(images, 64 * MIB)
                pool_path = os.path.join(where, "pool.pkl")
                with open(pool_path, "wb") as fh:
                    pickle.dump(pool, fh, protocol=pickle.HIGHEST_PROTOCOL)
                timed = _timed_subprocess(pool_path, n, where)
                os.unlink(pool_path)
            print(f"  scale: sequential write ({attempt}) ...", file=sys.stderr, flush=True)
            seconds, tail = write_sequential(seq_path, payload)
            os.unlink(seq_path)
            seq.append(payload / seconds / 1e6)
            table.add("images", f"{SEQ}, {attempt}", MB_s=seq[-1], fsync_s=tail, seconds=seconds)
        limit = statistics.mean(seq)
        h5 = {
            "rows_s": n / timed["seconds"],
            "MB_s": payload / timed["seconds"] / 1e6,
            "x_seq": payload / timed["seconds"] / 1e6 / limit,
            "close_s": timed["close_s"],
            "seconds": timed["seconds"],
            "peak_MB": timed["peak_MB"],
        }
        table.add("images", H5_ROW, **h5)
        results[("write scale", "images", H5_ROW)] = h5
        table.print()
        text = workloads.make("text", workloads.TEXT_ROWS, seed=SEED)
        section = WriteSection(where, FULL, results)
        section.appends(text)
        section.append.print()
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _timed_subprocess(pool_path: str, n: int, folder: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.write", "--timed", pool_path, str(n), folder],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed_child(pool_path: str, n: int, folder: str) -> None:
    with open(pool_path, "rb") as fh:
        pool = pickle.load(fh)
    name = pool["name"]
    rows = list(workloads.rows(workloads.Workload(name, pool["columns"], 0, 0, "")))
    size = len(rows)
    path = os.path.join(folder, f"scale_{name}.h5")
    seconds, close_s = write_rows(path, name, (rows[i % size] for i in range(n)))
    _remove(path)
    print(json.dumps({"seconds": seconds, "close_s": close_s, "peak_MB": _peak_mb()}))


def _peak_mb() -> float:
    return _status_kb("VmHWM") * 1024 / 1e6


# --- entry points ------------------------------------------------------------------


def run(loaded: dict[str, workloads.Workload], folder: str, quick: bool, results: dict) -> None:
    """Run the write section, print its tables and add its figures to ``results``.

    Parameters
    ----------
    loaded : dict
        Workloads already built, by name.
    folder : str
        Temporary folder; the section removes its files.
    quick : bool
        Fewer commits, and appends to the 1M-row file only (``--quick``).
    results : dict
        Receives the figures (see :class:`WriteSection`).
    """
    plan = QUICK if quick else FULL
    section = WriteSection(folder, plan, results)
    for name in ("images", "tokens", "text"):
        if name in loaded:
            section.workload(repeated(loaded[name], plan.rows[name]))
    if "text" in loaded:
        section.appends(loaded["text"])
    section.print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.write", description=__doc__)
    parser.add_argument("--scale-gb", type=float, default=None, help="the bench-scale run")
    parser.add_argument("--dir", default=None, help="folder for temporary files")
    parser.add_argument("--rss", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--timed", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss:
        pool_path, n, folder, *systems = args.rss
        _rss_child(pool_path, int(n), folder, systems)
    elif args.timed:
        pool_path, n, folder = args.timed
        _timed_child(pool_path, int(n), folder)
    elif args.scale_gb:
        results: dict = {}
        scale(args.scale_gb, args.dir, results)
        from .run import check_goals

        check_goals(results).print()
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
