"""h5record: look into, check, profile and convert h5record files.

examples:
  h5record info train.h5               schema, rows, size and codecs
  h5record schema train.h5             the fields and their types
  h5record head train.h5 -n 3          the first rows as JSON lines
  h5record verify train.h5             check every checksum and decode every row
  h5record bench train.h5              read speed of this file, and what to use
  h5record convert data/ train.h5      Parquet, Arrow, JSON lines, CSV, tar shards, ...

"h5record COMMAND --help" tells more about each command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import reader, spec
from .dataset import H5Dataset
from .errors import H5RecordError
from .fields import Schema
from .writer import partial_rows


def _partial_note(path: str) -> None:
    """Name an unfinished write next to a file, with its committed rows."""
    partial = path if path.endswith(spec.PARTIAL_SUFFIX) else path + spec.PARTIAL_SUFFIX
    if not os.path.exists(partial):
        return
    rows = partial_rows(partial)
    held = "no committed rows" if rows is None else f"{rows:,} committed rows"
    size = os.path.getsize(partial) / 1e6
    print(
        f"{partial}: unfinished write ({held}, {size:,.1f} MB); continue it with "
        "H5Writer(..., resume=True) or delete it"
    )


def _info(path: str) -> int:
    _partial_note(path)
    only_partial = not os.path.exists(path) and os.path.exists(path + spec.PARTIAL_SUFFIX)
    if only_partial or path.endswith(spec.PARTIAL_SUFFIX):
        return 0
    return _info_of(path)


def _info_of(path: str) -> int:
    layout = reader.read_layout(path)
    print(
        f"{path}: h5record format {layout.version}, {layout.num_rows:,} rows, "
        f"{layout.file_size / 1e6:,.1f} MB"
    )
    for fl in layout.fields:
        f = fl.field
        codec = (f.codec or {"id": "none"})["id"]
        kind = "variable" if f.variable else "fixed"
        shape = f" element {f.element_shape}" if f.element_shape else ""
        nullable = " nullable" if f.nullable else ""
        print(
            f"  {f.name:<24} {f.type_name:<16} {f.dtype.str:<5} {kind:<8} codec={codec}{shape}"
            f"{nullable}  mapped={'yes' if fl.values is not None else 'no'}"
        )
    return 0


def _verify(path: str, quick: bool = False) -> int:
    """Check every checksum block and every row; report all damage; 1 if there is any."""
    from .verify import verify_file

    report = verify_file(path, quick=quick, say=lambda text: print(f"{path}: DAMAGED {text}"))
    if quick:
        checked = "structure only (--quick)"
    elif report.checksums:
        checked = f"{report.blocks:,} checksum blocks"
    else:
        checked = "no checksums in the file (written without them), structure only"
    verdict = f"{len(report.damage)} damaged" if report.damage else "no damage found"
    print(f"{path}: {report.rows:,} rows checked, {checked}: {verdict}")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="h5record", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "info",
        help="print the schema and size of a file",
        description=_INFO_HELP,
        formatter_class=_RAW,
    ).add_argument("file")
    verify = sub.add_parser(
        "verify",
        help="check every checksum and row of a file; exit 1 if it is damaged",
        description=_VERIFY_HELP,
        formatter_class=_RAW,
    )
    verify.add_argument("file")
    verify.add_argument("--quick", action="store_true", help="check the rows' structure only")
    merge = sub.add_parser(
        "merge",
        help="concatenate shards into one file",
        description=_MERGE_HELP,
        formatter_class=_RAW,
    )
    merge.add_argument("out", help="the file to write")
    merge.add_argument("shards", nargs="+", help="shard files, or one folder or glob")
    merge.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_tools(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            return _info(args.file)
        if args.command in _TOOLS:
            return _TOOLS[args.command](args)
        if args.command == "merge":
            from .merge import main as merge_main

            return merge_main(args.out, args.shards, overwrite=args.overwrite)
        return _verify(args.file, quick=args.quick)
    except (H5RecordError, OSError) as exc:
        print(f"h5record: {exc}", file=sys.stderr)
        return 1


# -- schema, head, bench, convert ------------------------------------------

_RAW = argparse.RawDescriptionHelpFormatter

_INFO_HELP = """Print a file's format version, rows and size, and each field's type,
codec and whether it is read from a memory map.

An unfinished write beside the file (FILE.partial) is named with its
committed rows.

examples:
  h5record info train.h5
  h5record info train.h5.partial
"""

_VERIFY_HELP = """Check a file for damage, and report all of it.

Checks the metadata checksum, every checksum block of every dataset
(docs/FORMAT.md, section 6), that every row decodes (offsets, chunk
addresses, zstd frames, text, validity bits) and that the unused space of
each dataset's last chunk still holds zeros, going on past each damaged
part. Prints one line for each damaged field, block range or row range,
then a summary. Exit status: 0 when no damage is found, 1 otherwise.
A file written without checksums gets the structural checks only, which
cannot see changed bytes that still decode.

examples:
  h5record verify train.h5
  h5record verify train.h5 --quick     structure only: no hashing of the data
"""

_MERGE_HELP = """Concatenate shards with the same schema into one file.

Shards are taken in the order given: files as listed, a folder of shards
in its manifest's order, a glob's files in sorted order. Rows are moved
as whole buffers (no row becomes a Python object); fields compressed with
lzf, gzip or zstd are decompressed and compressed again. OUT appears only
when complete.

examples:
  h5record merge train.h5 shards/
  h5record merge train.h5 'shards/part-*.h5' --overwrite
"""

_SCHEMA_HELP = """Print the fields of a file and their types.

examples:
  h5record schema train.h5
  h5record schema train.h5 --json      the schema as stored in the file
"""

_HEAD_HELP = """Print the first rows of a file as JSON lines.

Bytes show as "<N bytes>"; arrays show as lists of at most --items values,
ending with "...(N more)" when cut; nulls show as null.

examples:
  h5record head train.h5
  h5record head train.h5 -n 20 --fields text,label
  h5record head train.h5 --start 1000 -n 3
"""

_BENCH_HELP = """Measure how fast this file reads, and say what to use.

Reads random rows, random batches of 256 and h5record.DataLoader batches
with 0, 1 and 2 workers, each warm (the file in the OS page cache) and cold
(the file evicted from the page cache first), the in_memory=True cache when
the file fits in RAM, and the device's own random-read rate at 1 and 32
threads. Then it recommends the number of workers, in_memory or not, and
says whether the disk or the decoding limits the speed. Each measurement
stops after a few seconds: the default run takes well under a minute.

examples:
  h5record bench train.h5
  h5record bench train.h5 --full       more samples, up to 15 s a measurement
  h5record bench train.h5 --warm-only  no page-cache eviction
"""

_CONVERT_HELP = """Convert a dataset to an h5record file.

Sources: Parquet (.parquet), Arrow IPC or Feather (.arrow, .feather), JSON
lines (.jsonl, .json, .gz too), CSV (.csv, .tsv), WebDataset tar shards
(.tar, .tar.gz), h5record 1.0.4 files (.h5), a folder of any one of these,
or a Hugging Face save_to_disk folder. The format is told from the names;
--format overrides it. The schema is inferred from the source's types.

The source is read in batches (memory stays bounded), a progress bar shows
on a terminal, and OUT appears only when complete. An interrupted
conversion (Ctrl-C) keeps OUT.partial; --resume continues it.

Parquet, Arrow, JSON lines and CSV need pyarrow: pip install 'h5record[arrow]'.
Hugging Face folders need datasets: pip install 'h5record[hf]'.

examples:
  h5record convert train.parquet train.h5
  h5record convert shards/ train.h5 --compression zstd
  h5record convert 'part-*.jsonl' train.h5
  h5record convert hf_saved/ train.h5 --split train --drop id
  h5record convert old_1_0_4.h5 new.h5
"""


def _add_tools(sub: Any) -> None:
    p = sub.add_parser(
        "schema", help="print the fields of a file", description=_SCHEMA_HELP, formatter_class=_RAW
    )
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the schema JSON stored in the file")
    p = sub.add_parser(
        "head",
        help="print the first rows as JSON lines",
        description=_HEAD_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("file")
    p.add_argument("-n", type=int, default=5, help="rows to print (default 5)")
    p.add_argument("--start", type=int, default=0, help="first row to print (default 0)")
    p.add_argument("--fields", help="comma-separated fields to print (default: all)")
    p.add_argument("--items", type=int, default=8, help="array values shown (default 8)")
    p = sub.add_parser(
        "bench",
        help="measure the read speed of a file",
        description=_BENCH_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("file")
    p.add_argument("--full", action="store_true", help="more samples and time per measurement")
    p.add_argument("--warm-only", action="store_true", help="skip cold reads (no eviction)")
    p = sub.add_parser(
        "convert",
        help="convert Parquet, Arrow, JSON lines, CSV, ... to h5record",
        description=_CONVERT_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="files, folders or glob patterns")
    p.add_argument("out", metavar="OUT.h5", help="the h5record file to write")
    p.add_argument("--format", help="source format (default: from the file names)")
    p.add_argument("--compression", help="codec of every field: zstd, lzf or gzip")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="leave a column out (repeatable)",
    )
    p.add_argument(
        "--nullable",
        action="append",
        default=[],
        metavar="COLUMN",
        help="let a column hold nulls (repeatable; 'all' for every column); by default, "
        "the columns that the source's metadata or first rows show to hold one",
    )
    p.add_argument("--split", help="split of a Hugging Face DatasetDict")
    p.add_argument("--batch-rows", type=int, default=65536, help="rows read at a time")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--resume", action="store_true", help="continue an interrupted conversion")


def _schema(args: argparse.Namespace) -> int:
    layout = reader.read_layout(args.file)
    schema = Schema([fl.field for fl in layout.fields])
    if args.json:
        print(schema.to_json())
        return 0
    print(f"{args.file}: {layout.num_rows:,} rows")
    width = max(len(f.name) for f in schema)
    for f in schema:
        entry = f.to_json()
        detail = [f"shape={tuple(entry['shape'])}"] if "shape" in entry else []
        if "dtype" in entry:
            detail.append(f"dtype={f.dtype.name}")
        codec = entry["codec"]["id"]
        if codec != "none":
            detail.append(f"codec={codec}")
        if f.nullable:
            detail.append("nullable")
        print(f"  {f.name:<{width}}  {f.type_name}" + (f"({', '.join(detail)})" if detail else ""))
    return 0


def _jsonable(value: Any, items: int) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.ndarray):
        shown = [_jsonable(v, items) for v in value[:items]]
        if len(value) > items:
            shown.append(f"...({len(value) - items} more)")
        return shown
    if isinstance(value, np.floating):
        return float(str(value))  # float32 0.1 shows as 0.1, not 0.10000000149011612
    if isinstance(value, np.generic):
        return value.item()
    return value


def _head(args: argparse.Namespace) -> int:
    import json

    with H5Dataset(args.file) as ds:
        names = ds.names if not args.fields else [f.strip() for f in args.fields.split(",")]
        unknown = [n for n in names if n not in ds.names]
        if unknown:
            raise H5RecordError(f"{args.file} has no field(s) {unknown}; it has {ds.names}")
        stop = min(len(ds), args.start + max(0, args.n))
        # Scalars of float32 fields come back as Python floats: shown at their own precision.
        narrow = {f.name: f.dtype.type for f in ds.schema if f.dtype.kind == "f" and not f.variable}
        for i in range(max(0, args.start), stop):
            row = ds[i]
            line = {
                n: _jsonable(
                    narrow[n](row[n]) if n in narrow and row[n] is not None else row[n], args.items
                )
                for n in names
            }
            print(json.dumps(line, ensure_ascii=False))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import profile

    plan = profile.FULL if args.full else profile.QUICK
    log = (
        (lambda text: print(f"  measuring {text} ...", file=sys.stderr))
        if sys.stderr.isatty()
        else None
    )
    report = profile.profile(args.file, plan, cold=not args.warm_only, log=log)
    print(profile.render(report))
    return 0


def _convert(args: argparse.Namespace) -> int:
    import glob

    from .convert import convert

    sources = []
    for src in args.sources:
        matches = sorted(glob.glob(src)) if glob.has_magic(src) else [src]
        if not matches:
            raise FileNotFoundError(f"no file matches {src}")
        sources.extend(matches)
    start = time.perf_counter()
    rows = convert(
        sources if len(sources) > 1 else sources[0],
        args.out,
        format=args.format,
        overrides=dict.fromkeys(args.drop) or None,
        nullable=True if "all" in args.nullable else (args.nullable or None),
        batch_rows=args.batch_rows,
        split=args.split,
        compression=args.compression,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    seconds = time.perf_counter() - start
    rate = rows / max(seconds, 1e-9)
    print(f"{args.out}: {rows:,} rows written in {seconds:.1f} s ({rate:,.0f} rows/s)")
    return 0


def _tool(fn: Any) -> Any:
    """Run a command; errors of the user's input become a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, ImportError, FileExistsError) as exc:
            print(f"h5record: {exc}", file=sys.stderr)
            return 1

    return run


_TOOLS = {
    name: _tool(fn)
    for name, fn in (("schema", _schema), ("head", _head), ("bench", _bench), ("convert", _convert))
}


if __name__ == "__main__":
    sys.exit(main())
