"""What checksums cost: the same files written with and without them, runs interleaved.

    python -m benchmarks.checksums [--folder /dev/shm] [--rows 200000] [--repeat 5]

The goal: checksums (docs/FORMAT.md section 6) cost at most 3% of the write
time of each workload, and nothing on the default read path. Each figure
is a median of ``--repeat`` runs, the runs with and without checksums
interleaved (their order alternating), so both see the same machine; the
load average is printed beside them, as other processes skew every figure.
Then the time of reading every row, by default and with verify=True.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

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


def write(path: str, schema: list, columns: dict, checksums: bool) -> tuple[float, int]:
    n = len(next(iter(columns.values())))
    step = 10_000
    start = time.perf_counter()
    with H5Writer(
        path, schema, progress=False, overwrite=True, checksums=checksums, commit_every=50_000
    ) as w:
        for a in range(0, n, step):
            w.write_batch({k: v[a : a + step] for k, v in columns.items()})
    seconds = time.perf_counter() - start
    size = os.path.getsize(path)
    os.unlink(path)
    return seconds, size


def read_all(path: str, verify: bool = False) -> float:
    start = time.perf_counter()
    with H5Dataset(path, verify=verify) as ds:
        for a in range(0, len(ds), 4096):
            ds[a : a + 4096].columns  # noqa: B018
    return time.perf_counter() - start


def interleaved(repeat: int, run: dict) -> dict:
    """Median seconds of each callable of ``run``, called in turn ``repeat`` times,
    in alternating order."""
    times: dict = {key: [] for key in run}
    keys = list(run)
    for r in range(repeat):
        for key in keys if r % 2 == 0 else keys[::-1]:
            times[key].append(run[key]())
    return {key: statistics.median(t) for key, t in times.items()}


def write_cost(name: str, path: str, schema: list, columns: dict, repeat: int) -> str:
    """The table row of one workload."""
    sizes = {}

    def run(checksums: bool) -> float:
        seconds, sizes[checksums] = write(path, schema, columns, checksums)
        return seconds

    run(True)  # warm up
    t = interleaved(repeat, {False: lambda: run(False), True: lambda: run(True)})
    cost = (t[True] - t[False]) / t[False]
    return (
        f"{name:<18} {sizes[True] / 1e6:>7.1f} {t[False]:>10.3f} {t[True]:>8.3f} "
        f"{cost:>+7.1%} {sizes[True] / sizes[False] - 1:>+7.2%}  {verdict(cost)}"
    )


def verdict(cost: float) -> str:
    return "met" if cost <= GOAL else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kind (at least 5)")
    args = parser.parse_args()
    repeat = max(args.repeat, 5)
    folder = args.folder or tempfile.mkdtemp()
    path = os.path.join(folder, "bench_checksums.h5")
    print(
        f"Checksum cost per workload; goal: at most {GOAL:.0%} of the write time without "
        f"checksums (medians of {repeat} interleaved runs each, load average "
        f"{os.getloadavg()[0]:.1f})"
    )
    header = ("workload", "MB", "without s", "with s", "cost", "file")
    print("{:<18} {:>7} {:>10} {:>8} {:>7} {:>7}  goal".format(*header))
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
    cost = (t["default"] - t["plain"]) / t["plain"]
    print(
        f"reading every row of text+tokens, by default: {t['plain']:.3f} s without checksums, "
        f"{t['default']:.3f} s with ({cost:+.1%}; goal: nothing, so within noise)"
    )
    print(
        f"with verify=True, a first pass over every block: {t['verify']:.3f} s "
        f"({(t['verify'] - t['plain']) / t['plain']:+.1%})"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for p in paths.values():
        os.unlink(p)


if __name__ == "__main__":
    main()
