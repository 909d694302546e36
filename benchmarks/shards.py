"""Sharded datasets: 4 shards read against one file of the same rows, and parallel writes.

For each workload (text pairs, token sequences, images) the same rows are
written twice: as one file, and as 4 shards of equal size (a folder with
``manifest.json``, opened with ``H5Dataset(folder)``). Both are then read
warm by a new process, with repeats interleaved (one file and the shards in
turn, who goes first alternating) so that both see the same moments of a
busy machine; every repeat reads random rows of its own, the same for both:

- ``ds[i]``: random single rows in a Python loop;
- batch of 256: ``ds[idx]`` with a random int64 array of 256 rows, every
  column decoded (``Batch.columns``);
- DataLoader: ``h5record.DataLoader(batch_size=256, num_workers=0)`` over
  random rows, its collate included (padded tensors for tokens).

Every rate is the median of the repeats; the ratio of the shards' rate to
the one file's is the median of the repeats' ratios (each repeat reads the
same rows from both, side by side), shown twice: of wall-clock time, and of
the reading thread's CPU time, which leaves out what other processes take
on a shared machine. Then :func:`h5record.write_shards` writes text pairs as 4 shards
with 1 and with 2 worker processes (spawn, each reading its rows from the
one file), repeats interleaved, beside the same call on empty inputs (the
start-up a large job pays once) and beside a CPU-bound loop run by 1 and by
2 processes at the same moments: what the machine gave two processes.

``python -m benchmarks.run --sections shards`` runs this section alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import h5record
from h5record import H5Dataset, H5Writer, write_shards
from h5record.shards import shard_entry, write_manifest

from . import workloads
from .harness import Table
from .workloads import SCHEMAS

SEED = 0
BATCH = 256
SHARDS = 4
BLOCK_ROWS = 10_000
SPIN = 3_000_000  # about 0.1 s of pure Python

ONE = "one file"
SHARDED = f"{SHARDS} shards"


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run of the section.

    Attributes
    ----------
    repeats : int
        Interleaved repeats of every read measurement (medians).
    rows : int
        Random rows read per repeat of ``ds[i]``.
    batches : int
        Random batches per repeat of the batch and DataLoader measurements.
    write_rows : int
        Text rows written by ``write_shards`` (the one file's rows, cycled).
    write_repeats : int
        Interleaved repeats of each parallel write.
    """

    repeats: int
    rows: int
    batches: int
    write_rows: int
    write_repeats: int


# Many short repeats: on a shared machine a repeat that another process
# interrupts is an outlier the median leaves out.
QUICK = Plan(repeats=41, rows=10_000, batches=40, write_rows=600_000, write_repeats=2)
FULL = Plan(repeats=61, rows=20_000, batches=80, write_rows=3_000_000, write_repeats=3)

# What a timed run returns: items handled, wall-clock seconds, this thread's CPU seconds.
Timing = tuple[int, float, float]


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def since(items: int, started: tuple[float, float]) -> Timing:
    wall, cpu = clocks()
    return items, wall - started[0], cpu - started[1]


def interleaved(
    base: Callable[[int], Timing], other: Callable[[int], Timing], repeats: int
) -> dict[str, float]:
    """Items per second of ``base`` and ``other``, and how fast ``other`` is beside it.

    ``fn(r)`` runs repeat ``r`` (-1: a warm-up, not counted); each repeat runs
    both on the same rows, who goes first alternating. Returns the median
    rates (``base``, ``other``; of wall-clock time) and the medians of the
    repeats' ratios ``other / base`` (``x``; ``x_cpu`` of the reading thread's
    CPU time, which leaves out what other processes of a busy machine take).
    """
    base(-1)
    other(-1)
    rates: dict[str, list[float]] = {"base": [], "other": [], "x": [], "x_cpu": []}
    for r in range(repeats):
        first, second = (base, other) if r % 2 else (other, base)
        timed = {fn: fn(r) for fn in (first, second)}
        (n0, w0, c0), (n1, w1, c1) = timed[base], timed[other]
        rates["base"].append(n0 / w0)
        rates["other"].append(n1 / w1)
        rates["x"].append((n1 / w1) / (n0 / w0))
        rates["x_cpu"].append((n1 / max(c1, 1e-9)) / (n0 / max(c0, 1e-9)))
    return {k: statistics.median(v) for k, v in rates.items()}


def write_both(workload: workloads.Workload, folder: str) -> tuple[str, str]:
    """The workload as one file and as equal shards with a manifest."""
    schema = SCHEMAS[workload.name]
    one = os.path.join(folder, f"{workload.name}.h5")
    sharded = os.path.join(folder, f"{workload.name}_shards")
    os.makedirs(sharded, exist_ok=True)

    def write(path: str, start: int, stop: int) -> None:
        with H5Writer(path, schema, overwrite=True, progress=False) as writer:
            for first in range(start, stop, BLOCK_ROWS):
                last = min(stop, first + BLOCK_ROWS)
                writer.write_batch({k: v[first:last] for k, v in workload.columns.items()})

    write(one, 0, workload.n_rows)
    bounds = np.linspace(0, workload.n_rows, SHARDS + 1).astype(np.int64).tolist()
    entries = []
    for k in range(SHARDS):
        path = os.path.join(sharded, f"part-{k:05d}.h5")
        write(path, bounds[k], bounds[k + 1])
        entries.append(shard_entry(path, bounds[k + 1] - bounds[k]))
    write_manifest(sharded, H5Dataset(one).schema, entries)
    return one, sharded


def read_rates(one: Any, sharded: Any, plan: Plan) -> dict[str, dict[str, float]]:
    """ds[i], batch and DataLoader rates of both datasets.

    Every repeat reads rows of its own, drawn at random (so a repeat does not
    find the rows of the last one in the CPU caches), the same for both.
    Gives, per metric, what :func:`interleaved` returns (the one file as ``base``).
    """
    import torch
    from torch.utils.data import RandomSampler

    n = len(one)

    def rows(r: int) -> list[int]:
        return np.random.default_rng([SEED, r + 1]).integers(0, n, plan.rows).tolist()

    def batches(r: int) -> list[np.ndarray]:
        rng = np.random.default_rng([SEED, r + 1])
        return [rng.integers(0, n, BATCH) for _ in range(plan.batches)]

    def row_loop(ds: Any) -> Callable[[int], Timing]:
        def run(r: int) -> Timing:
            todo = rows(r)
            started = clocks()
            for i in todo:
                ds[i]
            return since(len(todo), started)

        return run

    def batch_loop(ds: Any) -> Callable[[int], Timing]:
        def run(r: int) -> Timing:
            todo = batches(r)
            started = clocks()
            for idx in todo:
                ds[idx].columns  # noqa: B018 - decoding is the work measured
            return since(BATCH * len(todo), started)

        return run

    def loader(ds: Any) -> Callable[[int], Timing]:
        def run(r: int) -> Timing:
            # With replacement: a small workload still gives every batch asked.
            sampler = RandomSampler(
                ds,
                replacement=True,
                num_samples=BATCH * (plan.batches + 1),
                generator=torch.Generator().manual_seed(SEED + r + 1),
            )
            it = iter(h5record.DataLoader(ds, batch_size=BATCH, sampler=sampler))
            next(it)  # the first batch: the loader's start
            started = clocks()
            for _ in range(plan.batches):
                next(it)
            return since(BATCH * plan.batches, started)

        return run

    out: dict[str, dict[str, float]] = {}
    timed = {"row_rows_s": row_loop, "batch_rows_s": batch_loop, "dl_nw0": loader}
    for metric, make in timed.items():
        out[metric] = interleaved(make(one), make(sharded), plan.repeats)
    return out


def read_in_subprocess(one: str, sharded: str, quick: bool) -> dict[str, dict[str, float]]:
    """:func:`read_rates` in a new process, as a training job reads files written
    earlier: not in this one, which holds the workloads (whose objects every
    full garbage collection visits) and what the other sections left."""
    args = [sys.executable, "-m", "benchmarks.shards", "--read", one, sharded]
    out = subprocess.run(
        [*args, *(["--quick"] if quick else [])], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"the reading subprocess failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- parallel writes ------------------------------------------------------------


def text_rows(item: tuple[str, int, int]) -> Iterator[dict[str, Any]]:
    """Rows ``start`` to ``stop`` of the file at ``path``, cycled past its end."""
    path, start, stop = item
    ds = H5Dataset(path)
    n = len(ds)
    for first in range(start, stop, BLOCK_ROWS):
        idx = np.arange(first, min(stop, first + BLOCK_ROWS)) % n
        yield from ds[idx]
    ds.close()


def spin(n: int) -> int:
    """Pure Python work of a fixed size."""
    total = 0
    for i in range(n):
        total += i
    return total


def cpu_parallelism(pool: cf.ProcessPoolExecutor) -> float:
    """How much faster 2 processes do two pieces of CPU-bound work than one does:
    near 2 on an idle 2-core machine, less when other processes hold the cores."""
    start = time.perf_counter()
    for piece in (SPIN, SPIN):
        pool.submit(spin, piece).result()
    one = time.perf_counter() - start
    start = time.perf_counter()
    for future in [pool.submit(spin, SPIN) for _ in range(2)]:
        future.result()
    return one / (time.perf_counter() - start)


def write_rates(source: str, folder: str, plan: Plan) -> dict[str, float]:
    """write_shards with 1 and 2 worker processes, repeats interleaved.

    Each repeat also times the same call on 4 empty inputs: the start-up
    (spawning and importing the workers, the manifest), which a large job
    pays once; and :func:`cpu_parallelism`, what the machine gives two
    processes at that moment.
    """
    total = plan.write_rows
    bounds = np.linspace(0, total, SHARDS + 1).astype(np.int64).tolist()
    inputs = [(source, bounds[k], bounds[k + 1]) for k in range(SHARDS)]
    empty = [(source, 0, 0)] * SHARDS
    schema = H5Dataset(source).schema
    out = os.path.join(folder, "written")
    times: dict[tuple[int, bool], list[float]] = {}
    machine = []
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(spin, 1).result()  # both started before anything is timed
        pool.submit(spin, 1).result()
        for _ in range(plan.write_repeats):
            machine.append(cpu_parallelism(pool))
            for workers in (1, 2):
                for job, rows in ((True, inputs), (False, empty)):
                    shutil.rmtree(out, ignore_errors=True)
                    start = time.perf_counter()
                    write_shards(rows, text_rows, out, schema, workers=workers, progress=False)
                    times.setdefault((workers, job), []).append(time.perf_counter() - start)
            machine.append(cpu_parallelism(pool))
    shutil.rmtree(out, ignore_errors=True)
    t = {key: statistics.median(v) for key, v in times.items()}
    got: dict[str, float] = {}
    for w in (1, 2):
        got[f"rows_s_{w}"] = total / t[(w, True)]
        got[f"start_s_{w}"] = t[(w, False)]
        got[f"rows_s_after_start_{w}"] = total / max(t[(w, True)] - t[(w, False)], 1e-9)
    got["x"] = got["rows_s_2"] / got["rows_s_1"]
    got["x_after_start"] = got["rows_s_after_start_2"] / got["rows_s_after_start_1"]
    got["x_cpu_loop"] = statistics.median(machine)
    return got


# --- the section ----------------------------------------------------------------


def run(loaded: dict[str, workloads.Workload], folder: str, quick: bool, results: dict) -> None:
    """Run the shards section, print its tables and add its figures to ``results``.

    ``results[("shards", name)]`` holds the one file's rates and the ratios
    (``*_x``) of the shards' to them; ``results[("shards write",)]`` the
    parallel write rates and their ratio.
    """
    plan = QUICK if quick else FULL
    table = Table(
        f"Shards: the same rows as one file and as {SHARDS} shards, read warm (rows/s, "
        "medians of interleaved repeats; ratios: medians of the repeats' ratios, of "
        "wall-clock time and of the reading thread's CPU time)"
    )
    source = None
    for name in ("text", "tokens", "images"):
        if name not in loaded:
            continue
        workload = loaded[name]
        print(f"  shards: {name} ...", file=sys.stderr, flush=True)
        one_path, sharded_path = write_both(workload, folder)
        got = read_in_subprocess(one_path, sharded_path, quick)
        table.add(name, ONE, **{k: v["base"] for k, v in got.items()})
        table.add(name, SHARDED, **{k: v["other"] for k, v in got.items()})
        table.add(name, f"{SHARDED} / {ONE}", **{k: f"{v['x']:.2f}x" for k, v in got.items()})
        table.add(name, "the same, CPU time", **{k: f"{v['x_cpu']:.2f}x" for k, v in got.items()})
        results[("shards", name)] = {
            **{k: v["base"] for k, v in got.items()},
            **{f"{k}_x": v["x"] for k, v in got.items()},
            **{f"{k}_x_cpu": v["x_cpu"] for k, v in got.items()},
        }
        if name == "text":
            source = one_path
        else:
            os.unlink(one_path)
        shutil.rmtree(sharded_path, ignore_errors=True)
    table.print()
    if source is None:
        return
    print("  shards: parallel write ...", file=sys.stderr, flush=True)
    got = write_rates(source, folder, plan)
    os.unlink(source)
    table = Table(
        f"Parallel write: write_shards of {plan.write_rows:,} text rows as {SHARDS} shards "
        "(spawn workers, each reading its rows from the one file; medians of interleaved "
        "repeats; start-up: the same call on empty inputs)"
    )
    for w in (1, 2):
        table.add(
            "text",
            f"{w} process{'es' if w > 1 else ''}",
            rows_s=got[f"rows_s_{w}"],
            start_up_s=got[f"start_s_{w}"],
            rows_s_after_start_up=got[f"rows_s_after_start_{w}"],
        )
    table.add(
        "text",
        "2 processes / 1",
        rows_s=f"{got['x']:.2f}x",
        rows_s_after_start_up=f"{got['x_after_start']:.2f}x",
    )
    # What the machine gave two processes meanwhile: below ~1.9x, other
    # processes held the cores, and no writer could scale further.
    table.add("CPU-bound loop", "2 processes / 1", rows_s=f"{got['x_cpu_loop']:.2f}x")
    table.print()
    results[("shards write",)] = got


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__)
    parser.add_argument("--read", nargs=2, metavar=("ONE_FILE", "SHARDS"), required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with H5Dataset(args.read[0]) as one, H5Dataset(args.read[1]) as sharded:
        got = read_rates(one, sharded, QUICK if args.quick else FULL)
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
