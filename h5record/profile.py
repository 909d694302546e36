"""Read speed of a user's own file: ``h5record bench FILE``.

Measures, with bounded sample counts and time, random single rows, random
batches of 256 and ``h5record.DataLoader`` with 0, 1 and 2 workers, each
warm (file in the OS page cache) and cold (evicted with
``posix_fadvise(POSIX_FADV_DONTNEED)`` after the dataset is closed: no root
needed, but pages another process maps stay), the ``in_memory=True`` cache
when the file fits in RAM, and the device's random-read limit
(``pread`` of one row's size from 1 and 32 native threads). Then it says
what to use.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

BATCH = 256
ALIGN = 4096
SEED = 0
MIN_SECONDS = 0.3


@dataclass
class Plan:
    """Sample counts and the time limit of each measurement."""

    rows: int = 2000  # random single rows
    batches: int = 16  # random batches of BATCH rows
    loader_batches: int = 24  # DataLoader batches per run
    workers: tuple[int, ...] = (0, 1, 2)
    reads: tuple[int, int] = (400, 4000)  # device reads at 1 and 32 threads
    seconds: float = 2.5  # a measurement stops after this long, at the next step


QUICK = Plan()
FULL = Plan(rows=20000, batches=100, loader_batches=60, reads=(2000, 20000), seconds=15.0)


@dataclass
class Report:
    """What :func:`profile` measured; rates in rows per second, None if not measured."""

    path: str
    rows: int
    file_bytes: int
    row_bytes: float
    fits_in_ram: bool
    results: dict[str, dict[str, float | None]] = field(default_factory=dict)
    device: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def rate(self, measure: str, mode: str) -> float | None:
        return self.results.get(measure, {}).get(mode)


def files_of(path: str) -> list[str]:
    """The files of a dataset: the file, or every file of a sharded dataset's folder."""
    if os.path.isdir(path):
        return sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names
        )
    return [path]


def evict(paths: Iterable[str]) -> None:
    """Drop files from the OS page cache (their clean, unmapped pages)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def available_ram() -> int:
    """Bytes of RAM available without swapping (MemAvailable), 0 if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _timed(steps: list[Callable[[], int]], seconds: float, warm: bool) -> float | None:
    """Rows per second over ``steps`` (each returns its rows), stopping after ``seconds``.

    Warm runs take one untimed step first, then go round the steps until
    ``MIN_SECONDS`` have passed, so that short runs are not timer noise.
    """
    if warm:
        steps[0]()
    done = 0
    start = time.perf_counter()
    while True:
        for step in steps:
            done += step()
            if time.perf_counter() - start > seconds:
                break
        elapsed = time.perf_counter() - start
        if not warm or elapsed >= min(MIN_SECONDS, seconds):
            break
    return done / elapsed if done and elapsed > 0 else None


def profile(
    path: str | os.PathLike[str],
    plan: Plan = QUICK,
    cold: bool = True,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Measure the read speed of an h5record file; see the module docstring."""
    from .dataset import H5Dataset

    path = os.fspath(path)
    say = log or (lambda text: None)
    files = files_of(path)
    size = sum(os.path.getsize(f) for f in files)
    ds = H5Dataset(path)
    n = len(ds)
    ds.close()
    if n == 0:
        raise ValueError(f"{path} has no rows to read")
    report = Report(path, n, size, size / n, 0 < 2 * size < available_ram())
    rng = np.random.default_rng(SEED)
    rows = rng.integers(0, n, min(plan.rows, n))
    batches = [rng.integers(0, n, min(BATCH, n)) for _ in range(plan.batches)]
    loader_rows = rng.permutation(n)[: plan.loader_batches * BATCH]
    modes = ("cold", "warm") if cold else ("warm",)

    def run(measure: str, mode: str, fn: Callable[[bool], float | None]) -> None:
        if mode == "cold":
            evict(files)
        say(f"{measure}, {mode}")
        report.results.setdefault(measure, {})[mode] = fn(mode == "warm")

    def singles(warm: bool, **opts: Any) -> float | None:
        with H5Dataset(path, **opts) as d:
            steps: list[Callable[[], int]] = [partial(_row, d, int(i)) for i in rows]
            return _timed(steps, plan.seconds, warm)

    def batched(warm: bool, **opts: Any) -> float | None:
        with H5Dataset(path, **opts) as d:
            steps: list[Callable[[], int]] = [partial(_batch, d, b) for b in batches]
            return _timed(steps, plan.seconds, warm)

    # Cold first: each warm run then reads the rows its cold run brought in.
    for mode in modes:
        run("random ds[i]", mode, singles)
    for mode in modes:
        run(f"random batch of {BATCH}", mode, batched)
    try:
        import torch  # noqa: F401
    except ImportError:
        report.notes.append("DataLoader rows skipped: torch is not installed")
    else:
        for workers in plan.workers:
            for mode in modes:
                run(
                    f"DataLoader, {workers} workers",
                    mode,
                    partial(_loader_rate, path, loader_rows, workers, plan.seconds),
                )
    if report.fits_in_ram:
        say("in_memory=True")
        start = time.perf_counter()
        with H5Dataset(path, in_memory=True):
            report.results["in_memory=True: load"] = {"warm": n / (time.perf_counter() - start)}
        report.results["in_memory=True: random ds[i]"] = {"warm": singles(True, in_memory=True)}
        report.results[f"in_memory=True: random batch of {BATCH}"] = {
            "warm": batched(True, in_memory=True)
        }
    else:
        report.notes.append(
            f"in_memory not measured: the file ({size / 1e9:.1f} GB) is more than half the "
            f"available RAM ({available_ram() / 1e9:.1f} GB)"
        )
    if cold:
        say("device random reads")
        report.device = device_limit(files, report.row_bytes, plan)
    return report


def _row(ds: Any, i: int) -> int:
    ds[i]  # decoding is the work measured
    return 1


def _batch(ds: Any, rows: np.ndarray) -> int:
    """Decode the columns of a batch, as collate does; return its rows."""
    ds[rows].columns  # noqa: B018 - decoding is the work measured
    return len(rows)


def _loader_rate(
    path: str, rows: np.ndarray, workers: int, seconds: float, warm: bool = True
) -> float | None:
    from . import DataLoader
    from .dataset import H5Dataset

    with H5Dataset(path) as d:
        loader = DataLoader(
            d,
            batch_size=BATCH,
            sampler=rows.tolist(),
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        # Timed from the first batch: worker start-up is not reading.
        start, done = 0.0, -1
        for batch in loader:
            if done < 0:
                start, done = time.perf_counter(), 0
                continue
            done += len(next(iter(batch.values())))
            if time.perf_counter() - start > seconds:
                break
        elapsed = time.perf_counter() - start
        del loader  # workers exit before the file is evicted again
    return done / elapsed if done > 0 else None


def device_limit(files: list[str], row_bytes: float, plan: Plan) -> dict[str, float]:
    """Random reads per second of one row's size (rounded up to 4 KiB) at 1 and 32 threads."""
    from ._io import pread_random

    path = max(files, key=os.path.getsize)
    size = -(-max(int(row_bytes), 1) // ALIGN) * ALIGN
    slots = os.path.getsize(path) // size
    out: dict[str, float] = {"read_bytes": float(size)}
    if slots < 2:
        return out
    fd = os.open(path, os.O_RDONLY)
    try:
        for threads, count in ((1, plan.reads[0]), (32, plan.reads[1])):
            rng = np.random.default_rng(SEED + threads)
            offsets = rng.choice(slots, min(count, slots), replace=False).astype(np.int64) * size
            evict([path])
            rates = []
            start = time.perf_counter()
            # In slices, so a slow disk stops at the time limit.
            for part in np.array_split(offsets, max(1, len(offsets) // 100)):
                t0 = time.perf_counter()
                pread_random(fd, np.ascontiguousarray(part), size, threads)
                rates.append(len(part) / max(time.perf_counter() - t0, 1e-9))
                if time.perf_counter() - start > plan.seconds:
                    break
            out[f"qd{threads}"] = statistics.median(rates)
    finally:
        os.close(fd)
    return out


def _fmt(rate: float | None) -> str:
    return "" if rate is None else f"{rate:,.0f}"


def render(report: Report) -> str:
    """The report as a table and a recommendation, for a terminal."""
    lines = [
        f"{report.path}: {report.rows:,} rows, {report.file_bytes / 1e6:,.1f} MB "
        f"({report.row_bytes:,.0f} bytes a row)",
        "",
    ]
    width = max(len(m) for m in report.results) + 2
    lines.append(f"{'rows per second':<{width}}{'warm':>12}{'cold':>12}")
    for measure, rates in report.results.items():
        lines.append(
            f"{measure:<{width}}{_fmt(rates.get('warm')):>12}{_fmt(rates.get('cold')):>12}"
        )
    if report.device.get("qd1"):
        kib = report.device["read_bytes"] / 1024
        lines += [
            "",
            f"device: random reads of {kib:.0f} KiB: {report.device['qd1']:,.0f}/s from 1 "
            f"thread, {report.device.get('qd32', 0):,.0f}/s from 32",
        ]
    lines += ["", "recommendation:"]
    lines += [f"  - {line}" for line in recommend(report)]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def recommend(report: Report) -> list[str]:
    """What to use, from the measured rates."""
    out = []
    loaders = {
        w: report.rate(f"DataLoader, {w} workers", mode)
        for mode in ("warm",)
        for w in (0, 1, 2)
        if report.rate(f"DataLoader, {w} workers", mode)
    }
    warm_batch = report.rate(f"random batch of {BATCH}", "warm")
    cold_batch = report.rate(f"random batch of {BATCH}", "cold")
    if cold_batch and warm_batch:
        if cold_batch < 0.5 * warm_batch:
            out.append(
                f"bottleneck: the disk. Cold batches run at {cold_batch / warm_batch:.0%} of "
                "warm ones; reads from the page cache or RAM are much faster than from the device"
            )
        else:
            out.append(
                f"bottleneck: decoding, not the disk (cold batches at "
                f"{cold_batch / warm_batch:.0%} of warm ones)"
            )
    if report.fits_in_ram:
        mem = report.rate(f"in_memory=True: random batch of {BATCH}", "warm")
        gain = (
            f" (random batches {mem / warm_batch:.1f}x the warm memory map)"
            if (mem and warm_batch)
            else ""
        )
        out.append(
            "in_memory=True: the file fits in RAM; one shared copy serves every worker and "
            f"no read waits for the disk{gain}"
        )
    else:
        out.append("in_memory=False (default): the file does not fit in RAM")
    if loaders:
        best = max(loaders, key=lambda w: loaders[w] or 0)
        why = (
            "moving batches between processes costs more than reading them here"
            if best == 0
            else "reading in parallel pays"
        )
        out.append(f"num_workers={best}: the fastest DataLoader measured ({why})")
        cold_loaders = {
            w: report.rate(f"DataLoader, {w} workers", "cold")
            for w in loaders
            if report.rate(f"DataLoader, {w} workers", "cold")
        }
        if cold_loaders and not report.fits_in_ram:
            cbest = max(cold_loaders, key=lambda w: cold_loaders[w] or 0)
            if cbest != best:
                out.append(f"num_workers={cbest} when the file is not in the page cache")
    qd1, qd32 = report.device.get("qd1"), report.device.get("qd32")
    if qd1 and qd32 and qd32 > 2 * qd1 and not report.fits_in_ram:
        out.append(
            f"the device serves {qd32 / qd1:.0f}x more random reads in parallel: more "
            "workers keep more reads in flight"
        )
    return out
