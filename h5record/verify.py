"""Check a whole file: every checksum block and every row (``h5record verify``).

Checksums are read a few MiB at a time, rows are decoded in batches of a
bounded size; a batch that fails is halved until the damaged rows are
found, and the check goes on past them, so that one run names every
damaged field, dataset, block and row range.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from . import reader, spec
from .checksums import Verifier, row_range
from .errors import FormatError

# Bytes of rows decoded at a time, and the most rows of a batch.
BATCH_BYTES = 32 << 20
BATCH_ROWS = 4096


@dataclass
class Report:
    path: str
    rows: int = 0  # rows whose structure was checked
    blocks: int = 0  # checksum blocks checked
    checksums: bool = False
    damage: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage


def verify_file(path: str, quick: bool = False, say: Callable[[str], None] | None = None) -> Report:
    """Check every checksum block (unless ``quick``) and every row of ``path``.

    Every damage found is given to ``say`` as it is found, and kept in the
    report.
    """
    report = Report(path)

    def found(text: str) -> None:
        report.damage.append(text)
        if say is not None:
            say(text)

    try:
        layout = reader.read_layout(path)
    except FormatError as exc:
        found(f"cannot be opened: {exc}")
        return report
    report.checksums = layout.checksums
    if layout.checksums and not quick:
        verifier = Verifier(layout, sequential=True)
        try:
            for item in verifier.scan():
                found(str(item))
            report.blocks = verifier.blocks()
        finally:
            verifier.close()
    if not quick:
        for text in _unused_chunk_bytes(path):
            found(text)
    for text in _structure(path, layout, report):
        found(text)
    return report


# The datasets of a field that h5record writes chunked and unfiltered (and their
# checksum tables); other datasets in a file are not its to judge.
_CHUNKED = (spec.VALUES, spec.OFFSETS, spec.BLOCKS, spec.VALIDITY)
# Bytes of unused chunk space read at a time.
_PIECE_BYTES = 1 << 20


def _unused_chunk_bytes(path: str) -> Iterator[str]:
    """Changed bytes where no row is read: the space of a dataset's last chunk past
    the end of its data (docs/FORMAT.md, section 6).

    HDF5 fills that space with the fill value (zero) when it makes a chunk,
    and again when a dataset shrinks, so a byte there that is not zero
    changed on the disk. It is most of a small file (a last chunk is up to
    1 MiB however few rows it holds), and no checksum covers it.
    """
    names = {n + suffix for n in _CHUNKED for suffix in ("", spec.CHECKSUM_SUFFIX)}
    try:
        with h5py.File(path, "r") as f, open(path, "rb") as fh:
            fields = f.get(spec.FIELDS_GROUP)
            if not isinstance(fields, h5py.Group):
                return
            for field in fields:
                group = fields[field]
                if not isinstance(group, h5py.Group):
                    continue
                for name in sorted(names & set(group)):
                    try:
                        text = _unused_space_of(group[name], fh)
                    except reader._HDF5_ERRORS as exc:
                        text = f"the unused space of its last chunk cannot be read: {exc}"
                    if text:
                        yield f"{_dataset_name(group.name, name)}: {text}"
    except reader._HDF5_ERRORS as exc:
        yield f"the unused space of its chunks cannot be checked: {exc}"


def _unused_space_of(dset: object, fh: Any) -> str | None:
    """What is wrong with the unused space of a dataset's last chunk, or None."""
    if not isinstance(dset, h5py.Dataset) or dset.chunks is None or not dset.shape:
        return None
    if dset.dtype.kind not in "biuf" or dset.chunks[1:] != dset.shape[1:]:
        return None
    if dset.id.get_create_plist().get_nfilters():
        return None
    item = dset.id.get_type().get_size()  # as stored in the file
    row_bytes = item * int(np.prod(dset.shape[1:], dtype=np.int64))
    n, chunk = dset.shape[0], dset.chunks[0]
    first = max(n - 1, 0) // chunk * chunk  # the last chunk holding data
    info = dset.id.get_chunk_info_by_coord((first,) + (0,) * (len(dset.shape) - 1))
    if info.byte_offset is None:
        return None
    if info.size != chunk * row_bytes:  # before reading what a damaged index claims
        return f"its last chunk claims {info.size:,} bytes, not {chunk * row_bytes:,}"
    at = info.byte_offset + (n - first) * row_bytes
    end = info.byte_offset + info.size
    changed, first_at = 0, None
    while at < end:
        fh.seek(at)
        piece = np.frombuffer(fh.read(min(_PIECE_BYTES, end - at)), np.uint8)
        if not len(piece):
            break  # a truncated file: the checks of the data report it
        count = int(np.count_nonzero(piece))
        if count and first_at is None:
            first_at = at + int(np.argmax(piece != 0))
        changed += count
        at += len(piece)
    if not changed:
        return None
    return (
        f"{changed:,} bytes of its last chunk past the end of its data are not zero (the "
        f"first at byte {first_at:,} of the file); HDF5 writes zeros there, so bytes of "
        "the file changed"
    )


def _dataset_name(group: str, name: str) -> str:
    """``field 'x', dataset 'values'`` for ``/fields/x`` and ``values``, as other reports say."""
    return f"field {group.rsplit('/', 1)[-1]!r}, dataset {name!r}"


def _structure(path: str, layout: reader.FileLayout, report: Report) -> Iterator[str]:
    from tqdm.auto import tqdm

    from .dataset import H5Dataset

    n = layout.num_rows
    try:
        ds = H5Dataset(path)
    except FormatError as exc:
        yield f"cannot be opened: {exc}"
        return
    total = n * len(layout.fields)
    with ds, tqdm(total=total, unit=" values", unit_scale=True, disable=not _tty()) as bar:
        for fl in layout.fields:
            name = fl.field.name
            step = _batch_rows(fl, n)
            bad: list[tuple[int, str]] = []
            for start in range(0, n, step):
                stop = min(n, start + step)
                bad.extend(_bad_rows(ds, name, start, stop))
                bar.update(stop - start)
            for first, stop, message in _runs(bad):
                yield f"field {name!r}: {row_range(first, stop)} do not decode ({message})"
    report.rows = n


def _batch_rows(fl: reader.FieldLayout, n: int) -> int:
    """Rows per batch, so that a batch decodes to about ``BATCH_BYTES``."""
    per_row = fl.field.element_bytes
    if fl.field.variable and n:
        per_row = max(1, fl.values_len * fl.field.element_bytes // n)
    return int(max(1, min(BATCH_ROWS, BATCH_BYTES // max(per_row, 1))))


def _bad_rows(ds: object, name: str, start: int, stop: int) -> Iterator[tuple[int, str]]:
    """Rows of ``start:stop`` whose field ``name`` (or validity bit) does not decode,
    found by halving."""
    try:
        idx = np.arange(start, stop, dtype=np.int64)
        ds.column(name, idx)  # type: ignore[attr-defined]
        ds.valid(name, idx)  # type: ignore[attr-defined]
        return
    except Exception as exc:  # any failure of a damaged row is reported, none stops the check
        if stop - start == 1:
            yield start, f"{type(exc).__name__}: {exc}"
            return
    mid = (start + stop) // 2
    yield from _bad_rows(ds, name, start, mid)
    yield from _bad_rows(ds, name, mid, stop)


def _runs(bad: list[tuple[int, str]]) -> Iterator[tuple[int, int, str]]:
    """Consecutive rows as (first, stop, the first row's message)."""
    for _, group in itertools.groupby(enumerate(bad), key=lambda p: p[1][0] - p[0]):
        rows = [row for _, row in group]
        yield rows[0][0], rows[-1][0] + 1, rows[0][1]


def _tty() -> bool:
    return sys.stderr.isatty()
