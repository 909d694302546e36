"""The h5record benchmark: write, size, open and read speed against two baselines.

Runs three workloads (text pairs, encoded images, token sequences) through
h5record and two baselines built in this folder, in one run, on this
machine, with warm page caches except in the cold section, and prints
Markdown tables:

1. core: write speed, file size, open time, random ``ds[i]``, random
   batches of 256, and DataLoader throughput (0 and 2 workers, fork and
   spawn), with ratios against the baselines; also batches iterated as row
   dicts and a plain DataLoader with a row-dict collate, as users write;
2. compression: file size and read speed per codec, next to the 1.0.4
   layout with lzf and gzip;
3. memory: the in-memory cache shared by DataLoader workers (PSS), and its
   read speed against the memory map;
4. cold: the same reads with the files evicted from the page cache, set
   beside the device's random-read limits measured in the same run
   (:mod:`benchmarks.cold`);
5. write: write speed beside a sequential write of the same bytes, the
   memmap baseline and LMDB, writer memory, commit and close costs, and
   appends (:mod:`benchmarks.write`);
6. convert: a Parquet file and a DataFrame of 1M text pairs into h5record,
   beside reading the Parquet file alone and writing the output's bytes
   (:mod:`benchmarks.convert`);
7. shards: the same rows as one file and as 4 shards, read warm with
   repeats interleaved, and ``write_shards`` with 1 and 2 processes
   (:mod:`benchmarks.shards`).

``python -m benchmarks.run --quick`` is the small version that ``make demo``
runs; ``python -m benchmarks.run`` the full one. Every figure is a median of
repeats within this run; compare ratios, not absolute numbers, across
machines.

The core table is also drawn as a PNG chart (``--chart PATH``, with the
figures as JSON beside it, :mod:`benchmarks.chart`) when matplotlib is
installed (the ``charts`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import h5record
from h5record import H5Dataset, H5Writer, codecs

from . import chart, cold, convert, harness, shards, workloads, write
from .baselines import FlatMemmapDataset, LegacyH5Dataset
from .harness import Table
from .workloads import SCHEMAS

BATCH = 256
SEED = 0

H5R = "h5record"
MEMMAP = "(b) numpy memmap"
LEGACY = "(a) 1.0.4 layout"

ZSTD_RA = "h5record zstd (random access)"
ZSTD_SF = "h5record zstd (size first, 2 KiB)"
NONE = "h5record none"


def _goals() -> list[tuple[str, Callable[[dict], float | None], float]]:
    """(goal, measured value from the results, lower bound) from the project's issues.

    Upper bounds are written as lower bounds of the negated value.
    """

    def get(key: tuple, metric: str) -> Callable[[dict], float]:
        return lambda r: r[key][metric]

    def ratio(a: tuple, b: tuple, metric: str, metric_b: str | None = None):
        return lambda r: r[a][metric] / r[b][metric_b or metric]

    def at_most(key: tuple, metric: str) -> Callable[[dict], float | None]:
        def measure(r: dict) -> float | None:
            value = r[key][metric]
            return None if value is None else -value

        return measure

    def slowest_cold_open(r: dict) -> float:
        opens = [
            v["open_ms"]
            for k, v in r.items()
            if k[0] == "cold" and k[2] in (cold.H5, cold.H5_ZSTD) and "open_ms" in v
        ]
        if not opens:
            raise KeyError("cold open")
        return max(opens)

    text, tokens, images = "text", "tokens", "images"
    cold_images = ("cold", images, cold.H5)
    cold_text = ("cold per batch", text, cold.H5)
    return [
        ("text ds[i] rows/s >= 1,000,000", get((text, H5R), "row_rows_s"), 1e6),
        ("text ds[i] >= 2x baseline (b)", ratio((text, H5R), (text, MEMMAP), "row_rows_s"), 2),
        ("text batch of 256 rows/s >= 5,000,000", get((text, H5R), "batch_rows_s"), 5e6),
        ("text DataLoader nw=0 rows/s >= 2,000,000", get((text, H5R), "dl_nw0"), 2e6),
        ("text DataLoader nw=2 fork rows/s >= 500,000", get((text, H5R), "dl_nw2_fork"), 5e5),
        ("tokens ds[i] rows/s >= 1,000,000", get((tokens, H5R), "row_rows_s"), 1e6),
        ("tokens padded DataLoader nw=0 rows/s >= 500,000", get((tokens, H5R), "dl_nw0"), 5e5),
        ("text write rows/s >= 700,000", get((text, H5R), "write_rows_s"), 7e5),
        ("text write >= baseline (b)", ratio((text, H5R), (text, MEMMAP), "write_rows_s"), 1),
        ("text uncompressed size <= 1.05x raw", lambda r: -r[(text, H5R)]["size_x_raw"], -1.05),
        ("open <= 5 ms", lambda r: -r[(text, H5R)]["open_ms"], -5),
        (
            "zstd random access: text size <= 0.55x raw",
            lambda r: -r[(text, ZSTD_RA)]["size_x_raw"],
            -0.55,
        ),
        (
            "zstd random access: text ds[i] >= 50% of none",
            ratio((text, ZSTD_RA), (text, NONE), "row_rows_s"),
            0.5,
        ),
        (
            "zstd random access: text DataLoader nw=0 >= 50% of none",
            ratio((text, ZSTD_RA), (text, NONE), "dl_nw0"),
            0.5,
        ),
        (
            "zstd random access: text DataLoader nw=2 fork >= 50% of none",
            ratio((text, ZSTD_RA), (text, NONE), "dl_nw2_fork"),
            0.5,
        ),
        (
            "zstd random access: text batch of 256 >= 50% of none",
            ratio((text, ZSTD_RA), (text, NONE), "batch_rows_s"),
            0.5,
        ),
        (
            "zstd size first: text size <= 0.35x raw",
            lambda r: -r[(text, ZSTD_SF)]["size_x_raw"],
            -0.35,
        ),
        ("zstd size first: text ds[i] rows/s >= 100,000", get((text, ZSTD_SF), "row_rows_s"), 1e5),
        (
            "zstd size first: text ds[i] >= 20x 1.0.4-layout gzip",
            ratio((text, ZSTD_SF), (text, "(a) 1.0.4 layout gzip"), "row_rows_s"),
            20,
        ),
        (
            "zstd size first: text scan >= 50% of none",
            ratio((text, ZSTD_SF), (text, NONE), "scan_rows_s"),
            0.5,
        ),
        (
            "zstd random access: text write >= 50% of none",
            ratio((text, ZSTD_RA), (text, NONE), "write_rows_s"),
            0.5,
        ),
        (
            "zstd size first: text write >= 50% of none",
            ratio((text, ZSTD_SF), (text, NONE), "write_rows_s"),
            0.5,
        ),
        (
            "in_memory=True, spawn: PSS growth <= 1.15x cached (vs blank rows)",
            lambda r: -r[(text, "pss True spawn")],  # against blank rows
            -1.15,
        ),
        (
            "in_memory=True, fork: PSS growth <= 1.15x cached (vs blank rows)",
            lambda r: -r[(text, "pss True fork")],
            -1.15,
        ),
        (
            "cache ds[i] >= memory map",
            lambda r: (
                r[(text, "read in_memory=True")]["row_rows_s"]
                / r[(text, "read memory map")]["row_rows_s"]
            ),
            1,
        ),
        (
            "cache batches >= memory map",
            lambda r: (
                r[(text, "read in_memory=True")]["batch_rows_s"]
                / r[(text, "read memory map")]["batch_rows_s"]
            ),
            1,
        ),
        (
            "text: iterating a Batch as row dicts >= 1.5x ds[i]",
            ratio((text, H5R), (text, H5R), "iter_rows_s", "row_rows_s"),
            1.5,
        ),
        (
            "text: plain DataLoader, simple collate, nw=0 >= 1.5x baseline (b)",
            ratio((text, H5R), (text, MEMMAP), "plain_dl_nw0"),
            1.5,
        ),
        (
            "images: plain DataLoader, simple collate, nw=0 >= 1.5x baseline (b)",
            ratio((images, H5R), (images, MEMMAP), "plain_dl_nw0"),
            1.5,
        ),
        (
            "cold images: batch of 256 rows/s >= 30,000",
            get(cold_images, "batch_rows_s"),
            3e4,
        ),
        (
            "cold images: batch of 256 >= 0.5x QD32 limit",
            get(cold_images, "batch_x_qd32"),
            0.5,
        ),
        (
            "cold images: DataLoader nw=2 rows/s >= 30,000",
            get(cold_images, "dl_nw2"),
            3e4,
        ),
        ("cold images: ds[i] >= 0.7x QD1 limit", get(cold_images, "row_x_qd1"), 0.7),
        (
            "cold text: batch of 256, evicted before each, rows/s >= 30,000",
            get(cold_text, "batch_rows_s"),
            3e4,
        ),
        (
            "cold text: batch of 256, evicted before each, >= 0.9x probe",
            get(cold_text, "x_probe"),
            0.9,
        ),
        ("cold text: KiB read from disk per row <= 20", at_most(cold_text, "KiB_per_row"), -20),
        ("cold open <= 20 ms (slowest h5record file)", lambda r: -slowest_cold_open(r), -20),
        (
            "RSS growth at open <= 10 MB at 1e8 rows",
            at_most(("cold", "synthetic", cold.H5), "rss_open_MB"),
            -10,
        ),
        *_write_goals(),
        *_convert_goals(),
        *_shard_goals(),
    ]


def _convert_goals() -> list[tuple[str, Callable[[dict], float | None], float]]:
    """The conversion goals of issue 12, on the figures of :mod:`benchmarks.convert`."""

    def c(metric: str) -> Callable[[dict], float]:
        return lambda r: r["convert"][metric]

    return [
        ("convert 1M-row Parquet text pairs rows/s >= 1,000,000", c(convert.PARQUET), 1e6),
        ("1M-row DataFrame via write_batch rows/s >= 2,000,000", c(convert.FRAME), 2e6),
        (
            "convert Parquet: peak RSS growth with 3x the rows <= 1.25x",
            lambda r: -r["convert"]["peak_rss_3x_mb"] / r["convert"]["peak_rss_mb"],
            -1.25,
        ),
    ]


def _shard_goals() -> list[tuple[str, Callable[[dict], float | None], float]]:
    """The goals of issue 10, on the figures of :mod:`benchmarks.shards`."""

    def x(name: str, metric: str) -> Callable[[dict], float]:
        return lambda r: r[("shards", name)][f"{metric}_x_cpu"]

    # Ratios of CPU time: the wall-clock ones are in the section's table, and
    # on a busy machine they also measure what other processes took.
    goals: list[tuple[str, Callable[[dict], float | None], float]] = []
    for name in ("text", "tokens", "images"):
        goals += [
            (f"4 shards: {name} ds[i] >= 0.9x one file (CPU)", x(name, "row_rows_s"), 0.9),
            (
                f"4 shards: {name} batch of 256 >= 0.9x one file (CPU)",
                x(name, "batch_rows_s"),
                0.9,
            ),
            (
                f"4 shards: {name} DataLoader nw=0 >= 0.9x one file (CPU)",
                x(name, "dl_nw0"),
                0.9,
            ),
        ]
    goals += [
        (
            "write_shards of text pairs: 2 processes >= 1.7x one (whole call)",
            lambda r: r[("shards write",)]["x"],
            1.7,
        ),
        (
            "write_shards of text pairs: 2 processes >= 1.7x one (after start-up)",
            lambda r: r[("shards write",)]["x_after_start"],
            1.7,
        ),
    ]
    return goals


def _write_goals() -> list[tuple[str, Callable[[dict], float | None], float]]:
    """The write goals of issue 9, on the figures of :mod:`benchmarks.write`."""

    def w(name: str, system: str, metric: str) -> Callable[[dict], float]:
        return lambda r: r[("write", name, system)][metric]

    def peak_rss(r: dict) -> float:
        peaks = [
            v["peak_MB"]
            for k, v in r.items()
            if k[0] in ("write rss", "write scale") and k[2] in (write.H5_ROW, write.H5_BATCH)
        ]
        if not peaks:
            raise KeyError("write rss")
        return -max(peaks)

    def append_growth(r: dict) -> float:
        small, large = r[("write append", 1_000_000)], r[("write append", 10_000_000)]
        return -large["append_s"] / small["append_s"]

    row, batch = write.H5_ROW, write.H5_BATCH
    return [
        ("images (16 KB rows) write >= 0.8x sequential write", w("images", row, "x_seq"), 0.8),
        (
            "images (16 KB rows) write_batch >= 0.8x sequential write",
            w("images", batch, "x_seq"),
            0.8,
        ),
        (
            "16 KB rows larger than the page cache: write >= 0.8x sequential write",
            lambda r: r[("write scale", "images", row)]["x_seq"],
            0.8,
        ),
        ("images write >= 1.0x baseline (b) + fsync", w("images", row, "x_memmap"), 1.0),
        ("tokens write >= 1.0x baseline (b) + fsync", w("tokens", row, "x_memmap"), 1.0),
        ("images write faster than LMDB", w("images", row, "x_lmdb"), 1.0),
        ("tokens write faster than LMDB", w("tokens", row, "x_lmdb"), 1.0),
        ("text write rows/s >= 1,000,000 (row by row)", w("text", row, "rows_s"), 1e6),
        ("text write_batch rows/s >= 3,000,000", w("text", batch, "rows_s"), 3e6),
        ("writer peak RSS <= 1,000 MB", peak_rss, -1000),
        (
            "append 100k rows to 10M rows <= 1.25x the time for 1M rows",
            append_growth,
            -1.25,
        ),
        (
            "append 100k rows to 1M rows <= 1.5x writing them to a new file",
            lambda r: -r[("write append", 1_000_000)]["x_new_file"],
            -1.5,
        ),
    ]


def check_goals(results: dict) -> Table:
    table = Table("Goals (from the issues), checked on this run")
    for goal, measure, bound in _goals():
        try:
            value = measure(results)
        except (KeyError, ZeroDivisionError):
            continue  # that section did not run
        if value is None:
            continue  # not measurable here (e.g. no disk counters)
        shown = -value if bound < 0 else value
        table.add("goal", goal, measured=round(shown, 3), met="yes" if value >= bound else "NO")
    return table


def _rand_indices(n: int, count: int, seed: int = SEED) -> list[int]:
    return np.random.default_rng(seed).integers(0, n, count).tolist()


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_ROWS: dict[int, list[dict]] = {}


def _rows(workload: workloads.Workload) -> list[dict]:
    """The workload as row dicts, built once and outside any timing."""
    key = id(workload)
    if key not in _ROWS:
        _ROWS.clear()
        _ROWS[key] = list(workloads.rows(workload))
    return _ROWS[key]


def write_h5record(path: str, workload: workloads.Workload, compression: Any = None) -> None:
    """Row by row, as a user streams rows: ``writer.write(row)``."""
    rows = _rows(workload)
    with H5Writer(
        path, SCHEMAS[workload.name], compression=compression, overwrite=True, progress=False
    ) as writer:
        write = writer.write
        for row in rows:
            write(row)


def write_h5record_batches(path: str, workload: workloads.Workload, size: int = 10_000) -> None:
    """Column-wise: ``writer.write_batch(columns)`` of 10,000 rows at a time."""
    columns = workload.columns
    with H5Writer(path, SCHEMAS[workload.name], overwrite=True, progress=False) as writer:
        for start in range(0, workload.n_rows, size):
            writer.write_batch({k: v[start : start + size] for k, v in columns.items()})


def write_rate(
    write: Callable[[str], None], path: str, workload: workloads.Workload, repeats: int
) -> float:
    """Median rows/s of writing the whole workload (the last file is kept)."""
    times = []
    for _ in range(repeats):
        _remove(path)  # removing the old file is not part of writing
        start = time.perf_counter()
        write(path)
        times.append(time.perf_counter() - start)
    return workload.n_rows / statistics.median(times)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def row_rate(ds: Any, n: int, count: int) -> float:
    """Random single-row reads per second (``ds[i]`` in a Python loop)."""
    idx = _rand_indices(n, count)

    def loop() -> None:
        for i in idx:
            ds[i]

    return harness.median_rate(loop, len(idx), repeats=5, min_time=0.3)


def batch_rate(fetch: Callable[[list[int]], Any], n: int, batches: int = 200) -> float:
    """Random batches of 256 rows per second, decoded completely."""
    rng = np.random.default_rng(SEED)
    idx = [rng.integers(0, n, BATCH).tolist() for _ in range(batches)]

    def loop() -> None:
        for b in idx:
            fetch(b)

    return harness.median_rate(loop, BATCH * batches, repeats=5, min_time=0.3)


def h5_batch(ds: H5Dataset) -> Callable[[list[int]], Any]:
    return lambda b: ds.__getitems__(b).columns


def open_ms(path: str) -> float:
    """Median milliseconds to open a file and read its first row."""

    def once() -> None:
        H5Dataset(path)[0]

    once()
    return 1e3 * _median_time(once, 21)


def loader_rates(ds: Any, collate: Any, loader_cls: Any, quick: bool) -> dict[str, float]:
    out = {}
    for label, workers, ctx in (
        ("dl_nw0", 0, None),
        ("dl_nw2_fork", 2, "fork"),
        ("dl_nw2_spawn", 2, "spawn"),
    ):
        rate = harness.dataloader_rate(
            ds,
            BATCH,
            workers,
            ctx,
            collate,
            repeats=3,
            time_budget=1.0 if quick else 2.0,
            loader_cls=loader_cls,
        )
        out[label] = rate.steady_rows_per_s
        out[label + "_first_s"] = rate.first_batch_s
    return out


def plain_rates(
    ds: Any, system: str, n: int, metrics: dict[str, Any], quick: bool
) -> dict[str, float]:
    """Reading without h5record's collate, as users often do: rows as dicts.

    ``iter_rows_s``: a random batch of 256 iterated as row dicts (for (b),
    whose batch API already returns row dicts, its batch rate).
    ``plain_dl_nw0``: a plain ``torch.utils.data.DataLoader`` with
    :func:`harness.simple_collate` and no workers.
    """
    if system == H5R:
        iter_rows_s = batch_rate(lambda b: list(ds[b]), n)
    else:
        iter_rows_s = metrics["batch_rows_s"]
    plain = harness.dataloader_rate(
        ds, BATCH, 0, None, harness.simple_collate, repeats=3, time_budget=1.0 if quick else 2.0
    )
    return {"iter_rows_s": iter_rows_s, "plain_dl_nw0": plain.steady_rows_per_s}


def core(
    workload: workloads.Workload, folder: str, quick: bool, table: Table, results: dict
) -> None:
    name = workload.name
    n = workload.n_rows
    # Three writes even in a quick run: the first write of a process runs up to
    # 2x slower (measured 0.19-0.26 s against 0.11 s for 100,000 text rows), and
    # h5record writes first.
    repeats = 3
    paths = {
        H5R: os.path.join(folder, f"{name}.h5"),
        MEMMAP: os.path.join(folder, f"{name}_memmap"),
        LEGACY: os.path.join(folder, f"{name}_legacy.h5"),
    }
    writers = {
        H5R: lambda p: write_h5record(p, workload),
        MEMMAP: lambda p: FlatMemmapDataset.write(p, workload),
        LEGACY: lambda p: LegacyH5Dataset.write(p, workload),
    }
    for system in (H5R, MEMMAP, LEGACY):
        print(f"  {name}: {system} ...", file=sys.stderr, flush=True)
        metrics: dict[str, Any] = {}
        # The 1.0.4 layout is slow; one write is enough to show it.
        metrics["write_rows_s"] = write_rate(
            writers[system], paths[system], workload, 1 if system == LEGACY else repeats
        )
        metrics["write_MB_s"] = metrics["write_rows_s"] * workload.raw_bytes / n / 1e6
        if system == H5R:
            metrics["write_batch_rows_s"] = write_rate(
                lambda p: write_h5record_batches(p, workload), paths[system], workload, repeats
            )
        metrics["size_x_raw"] = _size(paths[system]) / workload.raw_bytes
        if system == H5R:
            ds: Any = H5Dataset(paths[system])
            metrics["open_ms"] = open_ms(paths[system])
            fetch = h5_batch(ds)
            collate, loader_cls = None, h5record.DataLoader
        else:
            ds = (FlatMemmapDataset if system == MEMMAP else LegacyH5Dataset)(paths[system])
            fetch = ds.get_batch
            # torch's default collate cannot stack ragged token rows: keep them a list.
            collate = harness.list_collate if name == "tokens" else None
            loader_cls = None
        count = 2_000 if system == LEGACY else 100_000
        metrics["row_rows_s"] = row_rate(ds, n, min(count, 20 * n))
        metrics["batch_rows_s"] = batch_rate(fetch, n, 10 if system == LEGACY else 200)
        metrics.update(loader_rates(ds, collate, loader_cls, quick))
        if system != LEGACY:
            metrics.update(plain_rates(ds, system, n, metrics, quick))
        table.add(name, system, **metrics)
        results[(name, system)] = metrics
    for base in (MEMMAP, LEGACY):
        ours, theirs = results[(name, H5R)], results[(name, base)]
        table.add(
            name,
            f"h5record / {base[:3]}",
            **{
                k: f"{ours[k] / theirs[k]:.1f}x"
                for k in ours
                if k in theirs and not k.endswith("_first_s") and theirs[k]
            },
        )


def compression(
    workload: workloads.Workload, folder: str, quick: bool, table: Table, results: dict
) -> None:
    name = workload.name
    n = workload.n_rows
    variants: list[tuple[str, Any, Any]] = [
        ("h5record none", None, None),
        ("h5record zstd (random access)", "zstd", None),
        (ZSTD_SF, codecs.zstd(level=3, block_bytes=2 << 10), None),
        ("h5record lzf", "lzf", None),
        ("h5record gzip", "gzip", None),
        ("(a) 1.0.4 layout lzf", None, "lzf"),
        ("(a) 1.0.4 layout gzip", None, "gzip"),
    ]
    for label, codec, legacy in variants:
        print(f"  {name}: {label} ...", file=sys.stderr, flush=True)
        path = os.path.join(folder, f"{name}_c.h5")
        if legacy is None:
            write = lambda p, c=codec: write_h5record(p, workload, c)  # noqa: E731
        else:
            write = lambda p, c=legacy: LegacyH5Dataset.write(p, workload, compression=c)  # noqa: E731
        metrics: dict[str, Any] = {"write_rows_s": write_rate(write, path, workload, 1)}
        metrics["size_MB"] = _size(path) / 1e6
        metrics["size_x_raw"] = _size(path) / workload.raw_bytes
        slow = legacy is not None or codec in ("lzf", "gzip")
        if legacy is None:
            ds: Any = H5Dataset(path)
            fetch = h5_batch(ds)
        else:
            ds = LegacyH5Dataset(path)
            fetch = ds.get_batch
        metrics["row_rows_s"] = row_rate(ds, n, 1_000 if slow else 50_000)
        metrics["batch_rows_s"] = batch_rate(fetch, n, 4 if slow else 100)
        metrics["scan_rows_s"] = scan_rate(ds, n, legacy is not None, quick)
        # Shuffled batches of 256 through the recommended loader, as in training.
        for key, workers in (("dl_nw0", 0), ("dl_nw2_fork", 2)):
            metrics[key] = harness.dataloader_rate(
                ds,
                BATCH,
                workers,
                "fork",
                harness.list_collate if legacy is not None and name == "tokens" else None,
                repeats=1 if quick else 3,
                time_budget=1.0 if quick else 2.0,
                loader_cls=h5record.DataLoader if legacy is None else None,
            ).steady_rows_per_s
        table.add(name, label, **metrics)
        results[(name, label)] = metrics
        del ds
        _remove(path)


def scan_rate(ds: Any, n: int, legacy: bool, quick: bool) -> float:
    """Sequential batches of 256 rows, from the start, for up to ~1 s."""
    budget = 0.5 if quick else 1.0
    start = time.perf_counter()
    rows = 0
    for first in range(0, n, BATCH):
        idx = list(range(first, min(n, first + BATCH)))
        if legacy:
            ds.get_batch(idx)
        else:
            ds.__getitems__(idx).columns  # noqa: B018 - decoding is the work measured
        rows += len(idx)
        if time.perf_counter() - start > budget:
            break
    return rows / (time.perf_counter() - start)


def memory(
    workload: workloads.Workload,
    folder: str,
    quick: bool,
    table: Table,
    speed: Table,
    results: dict,
) -> None:
    """PSS of a DataLoader with 4 workers, per in-memory mode, and cache read speed."""
    name = workload.name
    path = os.path.join(folder, f"{name}.h5")
    if not os.path.exists(path):
        write_h5record(path, workload)
    # A one-row file, one of the two references.
    empty = os.path.join(folder, f"{name}_empty.h5")
    with H5Writer(empty, SCHEMAS[name], overwrite=True, progress=False) as writer:
        writer.write(next(workloads.rows(workload)))
    layout_bytes = sum(
        a.nbytes
        for f in h5record.reader.load_arrays(h5record.reader.read_layout(path)).values()
        for a in f.values()
    )
    blank = harness.BlankDataset(workload.n_rows, _blank_row(workload))
    for ctx in ("fork", "spawn"):
        # Two references: a one-row file, and rows without payload in the same
        # number, whose loader holds the same per-row state (the sampler's
        # list of a million indices alone takes ~40 MB in the main process).
        base_one = _loader_pss(H5Dataset(empty), ctx)
        base_blank = _loader_pss(blank, ctx)
        for mode in (True, "process", False):
            print(f"  {name}: memory {mode!r} {ctx} ...", file=sys.stderr, flush=True)
            pss = _loader_pss(H5Dataset(path, in_memory=mode), ctx)
            table.add(
                name,
                f"in_memory={mode!r} ({ctx}, 4 workers)",
                cached_MB=layout_bytes / 1e6,
                growth_x_cached_vs_1_row=(pss - base_one) / layout_bytes,
                growth_x_cached_vs_blank_rows=(pss - base_blank) / layout_bytes,
            )
            results[(name, f"pss {mode!r} {ctx}")] = (pss - base_blank) / layout_bytes
    for mode in (False, True):
        ds = H5Dataset(path, in_memory=mode)
        label = "memory map" if mode is False else "in_memory=True"
        metrics = {
            "row_rows_s": row_rate(ds, workload.n_rows, 100_000),
            "batch_rows_s": batch_rate(h5_batch(ds), workload.n_rows),
        }
        metrics.update(loader_rates(ds, None, h5record.DataLoader, quick))
        speed.add(name, f"read from {label}", **metrics)
        results[(name, f"read {label}")] = metrics
        ds.close()


def _blank_row(workload: workloads.Workload) -> dict[str, Any]:
    """A row of the workload's fields with empty values."""
    row = next(workloads.rows(workload))
    return {
        k: type(v)()
        if isinstance(v, (str, bytes))
        else np.zeros_like(v)[:0]
        if isinstance(v, np.ndarray)
        else type(v)(0)
        for k, v in row.items()
    }


def _loader_pss(ds: Any, ctx: str) -> int:
    """Sum of PSS of this process and 4 DataLoader workers that read every row once."""
    loader = h5record.DataLoader(
        ds,
        batch_size=BATCH,
        num_workers=4,
        multiprocessing_context=ctx,
        shuffle=True,
        persistent_workers=True,
    )
    iterator = iter(loader)
    for _ in iterator:  # every worker reads its share of the data
        pass
    iterator = iter(loader)  # persistent workers stay up: measure them
    next(iterator)
    pids = [os.getpid(), *harness.child_pids(os.getpid())]
    pss = harness.measure_pss(pids)
    del iterator, loader
    if hasattr(ds, "close"):
        ds.close()
    return pss


def save_chart(png: str, loaded: dict[str, workloads.Workload], results: dict, quick: bool) -> None:
    """Save the core table's figures as JSON and draw them to ``png``."""
    rows = [
        {"workload": name, "system": system, **results[(name, system)]}
        for name in loaded
        for system in (H5R, MEMMAP, LEGACY)
    ]
    sources = {
        name: {"rows": w.n_rows, "raw_MB": w.raw_bytes / 1e6, "source": w.source}
        for name, w in loaded.items()
    }
    data = chart.core_results(
        rows,
        sources,
        mode="quick" if quick else "full",
        cores=os.cpu_count(),
        version=h5record.__version__,
    )
    saved = chart.results_path(png)
    chart.save_results(data, saved)
    drawn = chart.try_draw(data, png)
    print(f"Core table saved to {saved}" + (f", drawn to {drawn}" if drawn else "") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, about 20 minutes on 2 cores"
    )
    parser.add_argument("--only", default="text,images,tokens", help="workloads to run")
    parser.add_argument("--sections", default="core,compression,memory,cold,write,convert,shards")
    parser.add_argument("--dir", default=None, help="folder for temporary files")
    parser.add_argument(
        "--chart",
        default=None,
        metavar="PATH",
        help="PNG chart of the core table, its figures saved as JSON beside it "
        "(default: h5record-benchmark.png in the --dir folder or the temporary folder; "
        "'' for none)",
    )
    parser.add_argument(
        "--compression-scale",
        type=float,
        default=None,
        help="rows of the compression workloads, as a multiple of the default",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = {"text": 100_000, "images": 2_000, "tokens": 10_000} if quick else {}
    # Full size: about 1 GB of raw text pairs and of tokens.
    scales = {"text": 1.0, "tokens": 1.0} if quick else {"text": 6.0, "tokens": 2.5}
    if args.compression_scale:
        scales = dict.fromkeys(scales, args.compression_scale)
    sections = set(args.sections.split(","))
    folder = tempfile.mkdtemp(prefix="h5record-bench-", dir=args.dir)
    png = args.chart
    if png is None:
        png = os.path.join(args.dir or tempfile.gettempdir(), "h5record-benchmark.png")
    results: dict = {}
    try:
        print(
            f"# h5record benchmark ({'quick' if quick else 'full'}): "
            f"{os.cpu_count()} cores, h5record {h5record.__version__}\n"
        )
        print(harness.drop_caches_not_possible_note(), "\n")
        loaded = {}
        for name in args.only.split(","):
            workload = workloads.make(name, sizes.get(name), seed=SEED)
            loaded[name] = workload
            print(
                f"- {name}: {workload.n_rows:,} rows, {workload.raw_bytes / 1e6:,.1f} MB raw; "
                f"{workload.source}"
            )
        print()
        if "core" in sections:
            table = Table("Core: h5record against the two baselines (rows/s unless named)")
            for workload in loaded.values():
                core(workload, folder, quick, table, results)
            table.print()
            if png:
                save_chart(png, loaded, results, quick)
        if "compression" in sections:
            table = Table("Compression: size and read speed per codec")
            for name in ("text", "tokens"):
                if name not in loaded:
                    continue
                n = int(loaded[name].n_rows * scales[name])
                big = loaded[name] if n == loaded[name].n_rows else workloads.make(name, n, SEED)
                print(
                    f"- compression {name}: {big.n_rows:,} rows, {big.raw_bytes / 1e6:,.0f} MB raw",
                    file=sys.stderr,
                )
                compression(big, folder, quick, table, results)
            table.print()
        if "memory" in sections:
            table = Table(
                "Memory: growth of the PSS of main + 4 DataLoader workers after one epoch, "
                "as a multiple of the cached data, against a one-row file and against as many "
                "blank rows"
            )
            speed = Table("Reading from the in-memory cache against the memory map (rows/s)")
            for name in ("text", "tokens"):
                if name in loaded:
                    memory(loaded[name], folder, quick, table, speed, results)
            table.print()
            speed.print()
        if "cold" in sections:
            cold.run(loaded, folder, quick, results)
        if "write" in sections:
            write.run(loaded, folder, quick, results)
        if "convert" in sections:
            convert.run(folder, 1_000_000, 3 if quick else 5, results).print()
        if "shards" in sections:
            shards.run(loaded, folder, quick, results)
        check_goals(results).print()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
