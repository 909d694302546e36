"""Write a sharded dataset with several processes on one machine.

:func:`write_shards` turns each input (a path, a row range, a source shard)
into rows with a function of the caller's, in worker processes of a
``concurrent.futures.ProcessPoolExecutor``, and writes input ``k`` to its
own shards with :class:`~h5record.H5Writer`. The output does not depend on
the scheduling; the manifest is written last (docs/FORMAT.md, section 7),
so an interrupted job never looks complete, and running it again resumes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import multiprocessing
import os
import queue as queue_module
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import reader, spec
from .errors import H5RecordError
from .fields import Schema
from .shards import MANIFEST_NAME, shard_entry, write_manifest
from .writer import H5Writer

DONE_SUFFIX = ".done"
# Workers report rows written at most this often.
REPORT_SECONDS = 0.2


class ShardWriteError(H5RecordError, RuntimeError):
    """A worker failed on one input; the message names the input, ``__cause__`` is its error."""


def shard_name(k: int, piece: int | None = None) -> str:
    """File name of input ``k``'s shard (``piece`` numbers them when sizes are limited)."""
    return f"part-{k:05d}.h5" if piece is None else f"part-{k:05d}-{piece:05d}.h5"


def write_shards(
    inputs: Iterable[Any],
    make_rows: Callable[[Any], Iterable[Mapping[str, Any]]],
    out_dir: str | os.PathLike[str],
    schema: Any,
    *,
    workers: int | None = None,
    shard_rows: int | None = None,
    shard_bytes: int | None = None,
    compression: Any = None,
    mp_context: str = "spawn",
    progress: bool | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``make_rows(input)`` for every input as the shards of ``out_dir``.

    Parameters
    ----------
    inputs:
        What each worker turns into rows; must pickle.
    make_rows:
        ``make_rows(input)`` yields the row dicts of one input, always the
        same rows in the same order (resuming skips the rows already
        committed). It must pickle: a function defined at module level.
    out_dir:
        The dataset's folder, created if needed.
    schema:
        The schema of every shard.
    workers:
        Worker processes (default: ``os.cpu_count()``); ``0`` writes in
        this process, one input after the other.
    shard_rows, shard_bytes:
        Start a new shard of the same input after this many rows, or once
        the rows' raw payload (strings counted in characters) reaches this
        many bytes. Without either, input ``k`` is ``part-<k>.h5``; with
        one, it is ``part-<k>-<j>.h5``, ``j = 0, 1, ...``.
    compression:
        Default codec of the fields, as for :class:`~h5record.H5Writer`.
    mp_context:
        ``'spawn'`` (default, safe with threads and CUDA), ``'forkserver'``
        or ``'fork'``.
    progress:
        A progress bar of rows over all workers; ``None`` shows one when
        stderr is a terminal.
    overwrite:
        Remove the folder's shards and manifest first. Otherwise a complete
        dataset is left as it is, and an unfinished one is resumed: inputs
        finished are skipped, and a shard interrupted is continued from its
        last commit.

    Returns
    -------
    The path of ``manifest.json``.

    Raises
    ------
    ShardWriteError
        A worker failed; it names the input, and chains the worker's error.
        Shards of the inputs finished stay, for a resumed run.
    """
    items = list(inputs)
    schema = Schema.coerce(schema)
    folder = os.fspath(out_dir)
    for name, limit in (("shard_rows", shard_rows), ("shard_bytes", shard_bytes)):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{name} must be a positive int or None, got {limit!r}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be 0 (this process) or more, got {workers}")
    os.makedirs(folder, exist_ok=True)
    manifest = os.path.join(folder, MANIFEST_NAME)
    if overwrite:
        _clear(folder)
    elif os.path.exists(manifest):
        return manifest
    limits = (shard_rows, shard_bytes)
    todo = [k for k in range(len(items)) if not os.path.exists(_done_path(folder, k))]
    options = (folder, schema.to_json(), limits, compression)
    bar = _bar(progress)
    try:
        if workers == 0:
            for k in todo:
                _run(k, items[k], make_rows, options, bar)
        else:
            _run_pool(todo, items, make_rows, options, workers, mp_context, bar)
    finally:
        if bar is not None:
            bar.close()
    entries = []
    for k in range(len(items)):
        with open(_done_path(folder, k), encoding="utf-8") as f:
            for piece in json.load(f):
                entries.append(shard_entry(os.path.join(folder, piece["file"]), piece["num_rows"]))
    write_manifest(folder, schema, entries)
    for k in range(len(items)):
        os.unlink(_done_path(folder, k))
    return manifest


def _run(k: int, item: Any, make_rows: Callable, options: tuple, bar: Any) -> None:
    try:
        _write_input(k, item, make_rows, options, bar.update if bar is not None else None)
    except Exception as exc:
        raise ShardWriteError(_failed(k, item, exc)) from exc


def _failed(k: int, item: Any, exc: BaseException) -> str:
    text = repr(item)
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"input {k} ({text}) failed: {type(exc).__name__}: {exc}"


def _run_pool(
    todo: list[int],
    items: list[Any],
    make_rows: Callable,
    options: tuple,
    workers: int,
    mp_context: str,
    bar: Any,
) -> None:
    ctx = multiprocessing.get_context(mp_context)
    counts = ctx.Queue()
    stop = threading.Event()
    reporter = threading.Thread(target=_report, args=(counts, bar, stop), daemon=True)
    reporter.start()
    pool = cf.ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(todo))),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(counts,),
    )
    try:
        futures = {pool.submit(_worker, k, items[k], make_rows, options): k for k in todo}
        for future in cf.as_completed(futures):
            exc = future.exception()
            if exc is not None:
                for other in futures:
                    other.cancel()
                k = futures[future]
                raise ShardWriteError(_failed(k, items[k], exc)) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        stop.set()
        reporter.join()
        counts.close()
        counts.join_thread()


_COUNTS: Any = None


def _init_worker(counts: Any) -> None:
    global _COUNTS
    _COUNTS = counts


def _worker(k: int, item: Any, make_rows: Callable, options: tuple) -> None:
    _write_input(k, item, make_rows, options, _COUNTS.put if _COUNTS is not None else None)


def _report(counts: Any, bar: Any, stop: threading.Event) -> None:
    """Move the rows that workers report to the progress bar."""
    while True:
        try:
            n = counts.get(timeout=0.1)
        except queue_module.Empty:
            if stop.is_set():
                return
            continue
        if bar is not None:
            bar.update(n)


def _write_input(
    k: int, item: Any, make_rows: Callable, options: tuple, report: Callable[[int], Any] | None
) -> None:
    """Write input ``k``, continuing what an earlier run committed, then its done record."""
    folder, schema_json, (shard_rows, shard_bytes), compression = options
    schema = Schema.from_json(schema_json)
    limited = shard_rows is not None or shard_bytes is not None
    pieces: list[dict[str, Any]] = []
    # Shards finished by an earlier run stand; their rows are skipped.
    for j in itertools.count() if limited else [None]:
        path = os.path.join(folder, shard_name(k, j))
        if not os.path.exists(path):
            break
        pieces.append({"file": shard_name(k, j), "num_rows": reader.read_layout(path).num_rows})
    if pieces and not limited:
        _write_done(folder, k, pieces)
        return
    skip = sum(p["num_rows"] for p in pieces)
    rows = iter(make_rows(item))
    writer: H5Writer | None = None
    in_piece = piece_bytes = reported = 0
    last_report = time.monotonic()

    def open_piece() -> H5Writer:
        nonlocal skip
        j = len(pieces) if limited else None
        w = H5Writer(
            os.path.join(folder, shard_name(k, j)),
            schema,
            compression=compression,
            progress=False,
            resume=True,
        )
        if w.num_rows:  # committed by an interrupted run: those rows are skipped
            skip += w.num_rows
        return w

    def close_piece(w: H5Writer) -> None:
        n = w.num_rows
        w.close()
        pieces.append({"file": os.path.basename(w.path), "num_rows": n})

    try:
        writer = open_piece()
        in_piece = writer.num_rows
        # The rows of a resumed piece count towards its size, as in an uninterrupted run.
        first_of_piece = skip - in_piece
        for i, row in enumerate(itertools.islice(rows, skip)):
            if shard_bytes is not None and i >= first_of_piece:
                piece_bytes += _row_bytes(row)
        for row in rows:
            if (
                limited
                and in_piece
                and (
                    (shard_rows is not None and in_piece >= shard_rows)
                    or (shard_bytes is not None and piece_bytes >= shard_bytes)
                )
            ):
                close_piece(writer)
                writer = open_piece()
                in_piece = piece_bytes = 0
            writer.write(row)
            in_piece += 1
            if shard_bytes is not None:
                piece_bytes += _row_bytes(row)
            if report is not None and not in_piece % 1024:
                now = time.monotonic()
                if now - last_report >= REPORT_SECONDS:
                    done = skip + sum(p["num_rows"] for p in pieces) + in_piece
                    report(done - reported)
                    reported, last_report = done, now
        if writer.num_rows == 0 and pieces:
            writer.abort()  # every row was in the earlier pieces: no empty shard
        else:
            close_piece(writer)
        writer = None
    except BaseException:
        if writer is not None:  # commit what was written, for a resumed run
            writer.__exit__(*sys.exc_info())
        raise
    if report is not None:
        report(sum(p["num_rows"] for p in pieces) - reported)
    _write_done(folder, k, pieces)


def _row_bytes(row: Mapping[str, Any]) -> int:
    total = 0
    for value in row.values():
        if isinstance(value, (str, bytes, bytearray)):
            total += len(value)
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        else:
            total += 8
    return total


def _done_path(folder: str, k: int) -> str:
    return os.path.join(folder, shard_name(k)[: -len(".h5")] + DONE_SUFFIX)


def _write_done(folder: str, k: int, pieces: list[dict[str, Any]]) -> None:
    """Record input ``k``'s shards; a rename makes the record appear whole or not at all."""
    path = _done_path(folder, k)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(pieces, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clear(folder: str) -> None:
    for name in os.listdir(folder):
        if name == MANIFEST_NAME or (
            name.startswith("part-")
            and name.endswith((".h5", spec.PARTIAL_SUFFIX, spec.JOURNAL_SUFFIX, DONE_SUFFIX))
        ):
            os.unlink(os.path.join(folder, name))


def _bar(progress: bool | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit=" rows", unit_scale=True, desc="writing shards")
