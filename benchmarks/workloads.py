"""Benchmark workloads: deterministic in-memory column data.

Three workloads cover the usual shapes of training data:

``text``
    Sentence pairs with a similarity score, as in sentence-embedding
    training: ``{'sentence1': str, 'sentence2': str, 'label': float}``.
``images``
    JPEG-encoded photos (about 16 KB) with a class label:
    ``{'image': bytes, 'label': int}``.
``tokens``
    Pre-tokenised documents for language-model training:
    ``{'tokens': np.ndarray[int32]}`` of 32 to 2048 tokens.

Each builder draws rows from a pool of distinct values (real sentences,
encoded crops), so that building a million rows stays cheap while the data
still looks like real data to a compressor. Equal seeds give equal data.

Run ``python -m benchmarks.workloads`` to build all three at their default
sizes and print how long that took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from h5record import Bytes, Float, Integer, Sequence, String

from . import _images, _text

TEXT_ROWS = 1_000_000
IMAGE_ROWS = 20_000
TOKEN_ROWS = 100_000

IMAGE_POOL = 1024
TOKEN_MIN, TOKEN_MAX = 32, 2048
VOCAB_SIZE = 50_000
# Generated sentences: enough that a row's text rarely repeats nearby.
GENERATED_POOL = 50_000

# The h5record schema each workload is written with.
SCHEMAS: dict[str, list] = {
    "text": [String("sentence1"), String("sentence2"), Float("label")],
    "images": [Bytes("image"), Integer("label")],
    "tokens": [Sequence("tokens", dtype="int32")],
}


@dataclass
class Workload:
    """Column data of one benchmark workload.

    Attributes
    ----------
    name : str
        Short name: ``'text'``, ``'images'`` or ``'tokens'``.
    columns : dict
        Field name to values: ``list[str]``, ``list[bytes]``,
        ``list[np.ndarray]`` or a 1-D ``np.ndarray`` of numbers.
    n_rows : int
        Number of rows; every column has this length.
    raw_bytes : int
        Payload size: UTF-8 bytes of strings, 8 bytes per numeric label,
        image bytes and 4 bytes per token.
    source : str
        Where the data came from, for the benchmark report.
    """

    name: str
    columns: dict[str, Any]
    n_rows: int
    raw_bytes: int
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.n_rows


def rows(workload: Workload) -> Iterator[dict[str, Any]]:
    """Yield the rows of ``workload`` as dicts of Python values.

    Numeric labels come out as Python ``float``/``int``, like a reader would
    return them.
    """
    names = list(workload.columns)
    columns = [
        col.tolist() if isinstance(col, np.ndarray) else col for col in workload.columns.values()
    ]
    for values in zip(*columns, strict=True):
        yield dict(zip(names, values, strict=True))


def _sample(pool: tuple | list, indices: np.ndarray) -> list:
    return [pool[i] for i in indices.tolist()]


def text_pairs(n: int = TEXT_ROWS, seed: int = 0, install: bool = True) -> Workload:
    """Sentence pairs with a similarity score in 0..5.

    Parameters
    ----------
    n : int
        Number of rows.
    seed : int
        Seed for sampling sentences and labels.
    install : bool
        Try to install the Debian packages with real text if missing.

    Returns
    -------
    Workload
        Columns ``sentence1``, ``sentence2`` (``list[str]``) and ``label``
        (``float64`` array; multiples of 0.25, exact in ``float32``).
    """
    if install:
        _text.ensure_debian_text()
    pool, origin = _text.real_sentences()
    if pool:
        source = f"real English sentences from {origin} ({len(pool):,} unique)"
    else:
        pool = _text.generated_sentences(GENERATED_POOL, seed=seed)
        source = f"generated sentences, real text unavailable ({len(pool):,} unique)"
    rng = np.random.default_rng(seed)
    first = _sample(pool, rng.integers(0, len(pool), n))
    second = _sample(pool, rng.integers(0, len(pool), n))
    label = rng.integers(0, 21, n) * 0.25
    text_bytes = sum(len(s.encode()) for s in first) + sum(len(s.encode()) for s in second)
    return Workload(
        name="text",
        columns={"sentence1": first, "sentence2": second, "label": label},
        n_rows=n,
        raw_bytes=text_bytes + 8 * n,
        source=source,
    )


def images(
    n: int = IMAGE_ROWS, seed: int = 0, install: bool = True, pool_size: int = IMAGE_POOL
) -> Workload:
    """JPEG crops of real photographs with the photo's index as label.

    Parameters
    ----------
    n : int
        Number of rows.
    seed : int
        Seed for crops and row sampling.
    install : bool
        Try to ``pip install scikit-image`` (for its sample photos) if missing.
    pool_size : int
        Number of distinct images encoded; rows are sampled from them.

    Returns
    -------
    Workload
        Columns ``image`` (``list[bytes]``) and ``label`` (``int64`` array).
    """
    if install:
        _images.ensure_skimage()
    photos = _images.load_photos()
    rng = np.random.default_rng(seed)
    pool: list[bytes] = []
    pool_labels: list[int] = []
    for _ in range(min(pool_size, max(n, 1))):
        if photos:
            label = int(rng.integers(len(photos)))
            image = _images.random_crop(rng, photos[label])
        else:
            label = int(rng.integers(10))
            side = rng.integers(_images.MIN_SIDE, _images.MAX_SIDE + 1, 2)
            image = _images.noise_image(rng, int(side[0]), int(side[1]))
        pool.append(_images.encode_jpeg(image))
        pool_labels.append(label)
    if photos:
        source = f"JPEG crops of {len(photos)} scikit-image sample photos ({len(pool)} distinct)"
    else:
        source = f"JPEG-encoded smooth noise, photos unavailable ({len(pool)} distinct)"
    picks = rng.integers(0, len(pool), n)
    column = _sample(pool, picks)
    labels = np.asarray(pool_labels, dtype=np.int64)[picks]
    return Workload(
        name="images",
        columns={"image": column, "label": labels},
        n_rows=n,
        raw_bytes=sum(len(b) for b in column) + 8 * n,
        source=source,
        meta={"mean_jpeg_bytes": float(np.mean([len(b) for b in pool])) if pool else 0.0},
    )


def tokens(n: int = TOKEN_ROWS, seed: int = 0) -> Workload:
    """Random token sequences of uniform length in 32..2048.

    Parameters
    ----------
    n : int
        Number of rows.
    seed : int
        Seed for lengths and token values.

    Returns
    -------
    Workload
        Column ``tokens``: a list of 1-D ``int32`` arrays, values in
        ``[0, VOCAB_SIZE)``. The arrays are views of one shared buffer.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(TOKEN_MIN, TOKEN_MAX + 1, n)
    flat = rng.integers(0, VOCAB_SIZE, int(lengths.sum()), dtype=np.int32)
    column = np.split(flat, np.cumsum(lengths)[:-1]) if n else []
    return Workload(
        name="tokens",
        columns={"tokens": column},
        n_rows=n,
        raw_bytes=4 * int(lengths.sum()),
        source=f"random int32 tokens, lengths uniform in {TOKEN_MIN}..{TOKEN_MAX}",
    )


BUILDERS = {"text": text_pairs, "images": images, "tokens": tokens}


def make(name: str, n: int | None = None, seed: int = 0) -> Workload:
    """Build the workload called ``name`` with ``n`` rows (default size if None)."""
    builder = BUILDERS[name]
    return builder(seed=seed) if n is None else builder(n, seed=seed)


def main() -> None:
    for name in BUILDERS:
        start = time.perf_counter()
        workload = make(name)
        seconds = time.perf_counter() - start
        print(
            f"{name:7s} {workload.n_rows:>9,} rows  {workload.raw_bytes / 2**20:8.1f} MiB  "
            f"{seconds:6.1f} s  {workload.source}"
        )


if __name__ == "__main__":
    main()
