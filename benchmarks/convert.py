"""The convert section: tables into h5record files, beside what the source alone costs.

    python -m benchmarks.convert [--rows 1000000] [--repeat 5] [--dir DIR]

Text pairs (the text workload's sentences, tiled to ``--rows``) are written
as a Parquet file of 100,000-row groups, then converted with
:func:`h5record.convert.convert`; the same rows as a pandas DataFrame and as
an Arrow table go through :meth:`H5Writer.write_batch`. Beside each figure,
in the same run: reading the Parquet file alone (``pyarrow.parquet.read_table``)
and writing the output's bytes with plain ``os.write`` (the disk's share).
Runs are interleaved; figures are medians. The peak memory of a conversion
is how much a fresh process's resident set grows while it converts, for
the file and for the same rows three times over, against the decoded size
of one row group.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from h5record import H5Writer, infer_schema
from h5record.convert import convert

from . import workloads
from .harness import Table

ROW_GROUP = 100_000
PARQUET = "parquet file -> convert"
FRAME = "DataFrame -> write_batch"
SOURCE = "read_table alone (source)"
DISK = "os.write of the output (disk)"


def peak_rss_growth(src: str, out: str) -> float:
    """MB the resident set of a fresh process grows by while it converts ``src``."""
    # VmHWM, not ru_maxrss: the latter keeps the parent's size at fork across exec.
    code = (
        "import sys\n"
        "from h5record.convert import convert\n"
        "import pyarrow.parquet\n"
        "def kb(key):\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(x.split()[1]) for x in f if x.startswith(key + ':'))\n"
        "base = kb('VmRSS')\n"
        "convert(sys.argv[1], sys.argv[2], overwrite=True, progress=False)\n"
        "print((kb('VmHWM') - base) * 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, src, out], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1e6


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _copy_bytes(src: str, dst: str) -> None:
    """Write ``src``'s bytes to ``dst`` in 8 MiB writes, then fsync: the disk's share."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        while chunk := f.read(8 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.unlink(dst)


def tables(n: int) -> tuple[Any, str]:
    """An Arrow table of ``n`` text pairs, and where its sentences came from."""
    import pyarrow as pa

    base = workloads.text_pairs(min(n, 200_000), seed=0)
    reps = -(-n // base.n_rows)
    columns = {
        "sentence1": (base.columns["sentence1"] * reps)[:n],
        "sentence2": (base.columns["sentence2"] * reps)[:n],
        "label": np.resize(base.columns["label"], n),
    }
    return pa.table(columns), base.source


def run(folder: str, rows: int, repeat: int, results: dict) -> Table:
    """Measure, print nothing, and return the section's table; figures go to ``results``."""
    import pyarrow.parquet as pq

    table, source = tables(rows)
    frame = table.to_pandas()
    src = os.path.join(folder, "pairs.parquet")
    pq.write_table(table, src, row_group_size=ROW_GROUP, compression="snappy")
    out = os.path.join(folder, "pairs.h5")
    schema = infer_schema(table)
    group_mb = table.slice(0, ROW_GROUP).nbytes / 1e6

    def parquet() -> None:
        convert(src, out, overwrite=True, progress=False)

    def write_batch(data: Any) -> Callable[[], None]:
        def go() -> None:
            with H5Writer(out, schema, overwrite=True, progress=False) as w:
                w.write_batch(data)

        return go

    jobs = {
        PARQUET: parquet,
        FRAME: write_batch(frame),
        "Arrow table -> write_batch": write_batch(table),
        SOURCE: lambda: pq.read_table(src),
        DISK: lambda: _copy_bytes(out, out + ".copy"),
    }
    parquet()  # warm up, and make the file the disk job copies
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeat):
        for name, job in jobs.items():
            times[name].append(_timed(job))
    peak = peak_rss_growth(src, out)
    # Bounded memory: the same rows three times over should not need more.
    triple = os.path.join(folder, "pairs3.parquet")
    with pq.ParquetWriter(triple, table.schema, compression="snappy") as w:
        for _ in range(3):
            w.write_table(table, row_group_size=ROW_GROUP)
    peak3 = peak_rss_growth(triple, out)
    os.unlink(triple)
    rate = {k: rows / statistics.median(v) for k, v in times.items()}
    results["convert"] = dict(
        rate,
        rows=rows,
        peak_rss_mb=peak,
        peak_rss_3x_mb=peak3,
        row_group_mb=group_mb,
        source=source,
    )
    t = Table(
        f"Convert: {rows:,} text pairs ({os.path.getsize(src) / 1e6:,.0f} MB Parquet in "
        f"{ROW_GROUP:,}-row groups; {source}); medians of {repeat} interleaved runs"
    )
    for name in jobs:
        t.add("text pairs", name, rows_per_s=rate[name])
    parquet_rate = rate[PARQUET]
    t.add("text pairs", "parquet convert / disk", ratio=parquet_rate / rate[DISK])
    t.add("text pairs", "parquet convert / read_table", ratio=parquet_rate / rate[SOURCE])
    t.add(
        "text pairs",
        "parquet convert: peak RSS growth",
        MB=peak,
        MB_3x_rows=peak3,
        row_group_MB=group_mb,
    )
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.convert", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="folder for temporary files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="h5record-convert-", dir=args.dir) as folder:
        run(folder, args.rows, args.repeat, {}).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
