"""The h5record command line: ``h5record info FILE`` and ``h5record verify FILE``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from . import reader, spec
from .dataset import H5Dataset
from .errors import H5RecordError
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
        print(
            f"  {f.name:<24} {f.type_name:<16} {f.dtype.str:<5} {kind:<8} codec={codec}{shape}"
            f"  mapped={'yes' if fl.values is not None else 'no'}"
        )
    return 0


def _verify(path: str, batch: int = 4096) -> int:
    """Decode every row; report the first damaged one."""
    ds = H5Dataset(path)
    n = len(ds)
    from tqdm.auto import tqdm

    with tqdm(total=n, unit=" rows", unit_scale=True, disable=not sys.stderr.isatty()) as bar:
        for start in range(0, n, batch):
            idx = np.arange(start, min(n, start + batch))
            ds[idx].columns  # noqa: B018 - decoding is the check
            bar.update(len(idx))
    print(f"{path}: all {n:,} rows decode")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="h5record", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the schema and size of a file").add_argument("file")
    sub.add_parser("verify", help="decode every row of a file").add_argument("file")
    merge = sub.add_parser("merge", help="concatenate shards into one file")
    merge.add_argument("out", help="the file to write")
    merge.add_argument("shards", nargs="+", help="shard files, or one folder or glob")
    merge.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            return _info(args.file)
        if args.command == "merge":
            from .merge import main as merge_main

            return merge_main(args.out, args.shards, overwrite=args.overwrite)
        return _verify(args.file)
    except (H5RecordError, OSError) as exc:
        print(f"h5record: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
