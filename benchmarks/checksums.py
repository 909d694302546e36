"""What checksums cost: the same files written with and without them, runs interleaved.

    python -m benchmarks.checksums [--folder /dev/shm] [--rows 200000] [--repeat 11]

The goal: checksums (docs/FORMAT.md section 6) cost at most 3% of the write
time of each workload, and nothing on the default read path. The files are
written with the writer's defaults (a commit every 60 seconds, so these
short writes commit once, at the end); what checksums add to each commit
is given apart, in milliseconds. A cost is the median over ``--repeat``
pairs of runs with and without checksums made side by side (their order
alternating), so both runs of a pair see the same machine; the load
average is printed beside them, as other processes skew every figure.
Then the time of reading every row, by default and with verify=True.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from h5record import H5Dataset, H5Writer, Image, Integer, Sequence, String, codecs

GOAL = 0.03  # of the write time without checksums


def workloads(n: int) -> dict[str, tuple[list, dict]]:
    rng = np.random.default_rng(0)
    words = np.array(["the", "cat", "sat", "on", "a", "mat", "with", "some", "text", "here"])
    text = [" ".join(words[rng.integers(0, 10, 20)]) for _ in range(n)]
    tokens = rng.integers(0, 50_000, (n, 128), dtype=np.int32)
    images = rng.integers(0, 255, (n // 20, 3, 64, 64), dtype=np.uint8)
    return {
        "text+tokens": (
            [String("text"), Sequence("tokens", dtype="int32"), Integer("label")],
            {"text": text, "tokens": list(tokens), "label": np.arange(n)},
        ),
        "zstd text+tokens": (
            [
                String("text", compression=codecs.zstd(level=1)),
                Sequence("tokens", dtype="int32", compression="zstd"),
                Integer("label"),
            ],
            {"text": text, "tokens": list(tokens), "label": np.arange(n)},
        ),
        "images 12 KB": ([Image(64, 64, 3, "image")], {"image": list(images)}),
    }


def batches(columns: dict, step: int = 10_000) -> Iterator[dict]:
    """``columns`` cut into batches of ``step`` rows, as write_batch takes them."""
    n = len(next(iter(columns.values())))
    for a in range(0, n, step):
        yield {k: v[a : a + step] for k, v in columns.items()}


def write(path: str, schema: list, columns: dict, checksums: bool) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds (every thread of the process) of writing ``columns``
    in batches of 10,000 rows with the writer's defaults, and the file's size."""
    start, cpu = time.perf_counter(), time.process_time()
    with H5Writer(path, schema, progress=False, overwrite=True, checksums=checksums) as w:
        for batch in batches(columns):
            w.write_batch(batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = os.path.getsize(path)
    os.unlink(path)
    return seconds, cpu, size


def own_share(path: str, schema: list, columns: dict, repeat: int = 5) -> float:
    """The share of the writing thread's CPU time spent in the checksum code
    (hashing what it hashes itself, and making and keeping the tables), median of ``repeat``
    pairs of writes made side by side (their order alternating): steadier than
    the whole write's time on a shared machine, but without most effects on
    caches and memory bandwidth. The values of variable-length columns are
    hashed as the writer joins them: there the cost is the join's time with
    checksums less the joins' time of the write without them."""
    from h5record import writer
    from h5record.checksums import FieldSums

    spent = [0.0]
    saved = {name: getattr(FieldSums, name) for name in ("__init__", "begin", "commit", "join")}
    end, plain_join = FieldSums.end, writer.join_buffers

    def timed(function):  # type: ignore[no-untyped-def]
        def timed_function(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.thread_time() - start

        return timed_function

    def timed_write(checksums: bool) -> tuple[float, float]:
        """Seconds in the timed code, and of the whole write (writing thread)."""
        spent[0] = 0.0
        start = time.thread_time()
        write(path, schema, columns, checksums)
        return spent[0], time.thread_time() - start

    shares = []
    for name, method in saved.items():
        setattr(FieldSums, name, timed(method))
    FieldSums.end = staticmethod(timed(end))  # type: ignore[method-assign]
    writer.join_buffers = timed(plain_join)  # the joins of a write without checksums
    try:
        for r in range(repeat):
            order = (True, False) if r % 2 == 0 else (False, True)
            runs = {checksums: timed_write(checksums) for checksums in order}
            (own, total), (joins, _) = runs[True], runs[False]
            shares.append((own - joins) / total)
    finally:
        for name, method in saved.items():
            setattr(FieldSums, name, method)
        FieldSums.end = staticmethod(end)  # type: ignore[method-assign]
        writer.join_buffers = plain_join
    return statistics.median(shares)


def commit_ms(path: str, schema: list, columns: dict, checksums: bool) -> float:
    """Median milliseconds of a commit after each batch of 10,000 rows."""
    times = []
    with H5Writer(path, schema, progress=False, overwrite=True, checksums=checksums) as w:
        for batch in batches(columns):
            w.write_batch(batch)
            start = time.perf_counter()
            w.commit()
            times.append(time.perf_counter() - start)
    os.unlink(path)
    return 1e3 * statistics.median(times)


def read_all(path: str, verify: bool = False) -> float:
    start = time.perf_counter()
    with H5Dataset(path, verify=verify) as ds:
        for a in range(0, len(ds), 4096):
            ds[a : a + 4096].columns  # noqa: B018
    return time.perf_counter() - start


def interleaved(repeat: int, run: dict) -> dict:
    """Every result of each callable of ``run``, called in turn ``repeat`` times,
    in alternating order."""
    results: dict = {key: [] for key in run}
    keys = list(run)
    for r in range(repeat):
        for key in keys if r % 2 == 0 else keys[::-1]:
            results[key].append(run[key]())
    return results


def paired_cost(without: list[float], with_: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the ratios of runs made side by side, minus 1.

    A ratio of two neighbouring runs cancels the drift of a shared machine
    (its speed moves 2-3x within minutes here), which the ratio of two
    medians over the whole run does not.
    """
    costs = sorted(b / a - 1 for a, b in zip(without, with_, strict=True))
    q1, median, q3 = statistics.quantiles(costs, n=4) if len(costs) > 1 else costs * 3
    return median, q1, q3


def write_cost(name: str, path: str, schema: list, columns: dict, repeat: int) -> str:
    """The table row of one workload."""
    runs = interleaved(
        repeat,
        {c: lambda c=c: write(path, schema, columns, c) for c in (False, True)},
    )
    wall, q1, q3 = paired_cost([r[0] for r in runs[False]], [r[0] for r in runs[True]])
    cpu = paired_cost([r[1] for r in runs[False]], [r[1] for r in runs[True]])[0]
    seconds = statistics.median(r[0] for r in runs[False])
    size_with, size_without = runs[True][0][2], runs[False][0][2]
    commits = {c: commit_ms(path, schema, columns, c) for c in (False, True)}
    own = own_share(path, schema, columns)
    return (
        f"{name:<18} {size_with / 1e6:>6.1f} {seconds:>7.3f} {wall:>+7.1%} "
        f"{q1:>+6.1%}..{q3:<+6.1%} {cpu:>+7.1%} {own:>6.1%} {size_with / size_without - 1:>+7.2%} "
        f"{commits[False]:>6.1f} {commits[True] - commits[False]:>+6.1f}  {verdict(wall)}"
    )


def verdict(cost: float) -> str:
    return "met" if cost <= GOAL else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=11, help="pairs of runs (at least 5)")
    args = parser.parse_args()
    repeat = max(args.repeat, 5)
    folder = args.folder or tempfile.mkdtemp()
    path = os.path.join(folder, "bench_checksums.h5")
    print(
        f"Checksum cost per workload; goal: at most {GOAL:.0%} of the write time without "
        f"checksums. Medians of {repeat} pairs of runs side by side (with quartiles), "
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs; CPU: the time of "
        "every thread, a helper's hashing included; own: the share of the writing thread's "
        "CPU time spent in the checksum code; commit: the median of a commit after "
        "each 10,000 rows, without checksums and what they add"
    )
    header = (
        "workload",
        "MB",
        "write s",
        "cost",
        "quartiles",
        "CPU",
        "own",
        "file",
        "commit",
        "ms",
    )
    print("{:<18} {:>6} {:>7} {:>7} {:^14} {:>7} {:>6} {:>7} {:>6} {:>6}  goal".format(*header))
    for name, (schema, columns) in workloads(args.rows).items():
        print(write_cost(name, path, schema, columns, repeat))
    schema, columns = workloads(args.rows)["text+tokens"]
    paths = {c: os.path.join(folder, f"bench_checksums_{c}.h5") for c in (False, True)}
    for checksums, p in paths.items():
        with H5Writer(p, schema, progress=False, overwrite=True, checksums=checksums) as w:
            w.write_batch(columns)
    t = interleaved(
        repeat,
        {
            "plain": lambda: read_all(paths[False]),
            "default": lambda: read_all(paths[True]),
            "verify": lambda: read_all(paths[True], verify=True),
        },
    )
    cost, q1, q3 = paired_cost(t["plain"], t["default"])
    print(
        f"reading every row of text+tokens, by default: {statistics.median(t['plain']):.3f} s "
        f"without checksums, {cost:+.1%} with them (quartiles {q1:+.1%}..{q3:+.1%}; "
        "goal: nothing, so within noise)"
    )
    print(
        "with verify=True, a first pass over every block: "
        f"{paired_cost(t['plain'], t['verify'])[0]:+.1%}"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for p in paths.values():
        os.unlink(p)


if __name__ == "__main__":
    main()
