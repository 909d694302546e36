"""What checksums cost: the same files written with and without them, runs interleaved.

    python benchmarks/checksums.py [--folder /dev/shm] [--rows 200000] [--repeat 5]

Prints the median write time of each workload, with and without checksums,
and the difference; then the time of H5Dataset(verify=True) reading every
row, against the default read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from h5record import H5Dataset, H5Writer, Image, Integer, Sequence, String, codecs


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


def read_all(path: str, verify: bool) -> float:
    start = time.perf_counter()
    with H5Dataset(path, verify=verify) as ds:
        for a in range(0, len(ds), 4096):
            ds[a : a + 4096].columns  # noqa: B018
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp()
    path = os.path.join(folder, "bench_checksums.h5")
    print(f"{'workload':<18} {'MB':>7} {'without s':>10} {'with s':>8} {'cost':>7}")
    for name, (schema, columns) in workloads(args.rows).items():
        times: dict[bool, list[float]] = {False: [], True: []}
        sizes = {}
        write(path, schema, columns, True)  # warm up
        for _ in range(args.repeat):
            for checksums in (False, True):
                seconds, sizes[checksums] = write(path, schema, columns, checksums)
                times[checksums].append(seconds)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(
            f"{name:<18} {sizes[True] / 1e6:>7.1f} {off:>10.3f} {on:>8.3f} "
            f"{(on - off) / off:>+7.1%}   (file {sizes[True] / sizes[False] - 1:+.2%})"
        )
    schema, columns = workloads(args.rows)["text+tokens"]
    with H5Writer(path, schema, progress=False, overwrite=True) as w:
        w.write_batch(columns)
    plain = statistics.median(read_all(path, False) for _ in range(args.repeat))
    checked = statistics.median(read_all(path, True) for _ in range(args.repeat))
    print(
        f"reading every row of text+tokens: {plain:.3f} s, with verify=True {checked:.3f} s "
        f"(first pass over every block: {(checked - plain) / plain:+.1%})"
    )
    os.unlink(path)


if __name__ == "__main__":
    main()
