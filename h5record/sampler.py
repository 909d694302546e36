"""A distributed sampler that resumes in the middle of an epoch.

Every epoch is one order of all rows, a function of ``(seed, epoch)``
alone, computed on the fly: position ``j`` of the order maps to a row
through a keyed Feistel permutation, so no list of a billion indices is
ever built. Rank ``r`` of ``W`` reads positions ``start + r, start + r + W,
...`` as torch's ``DistributedSampler`` does, so the samples consumed by
all ranks together are always the first positions of the order: a run
saved after ``c`` samples resumes at position ``c``, with any world size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np

STATE_VERSION = 1
_CHUNK = 1 << 16
_ROUNDS = 4
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class ResumableSampler:
    """Shard rows over distributed ranks, shuffled per epoch, resumable mid-epoch.

    A sampler for ``torch.utils.data.DataLoader(sampler=...)``.

    Parameters
    ----------
    data:
        The dataset (anything with ``len``) or its row count.
    num_replicas, rank:
        World size and this process's rank; by default those of
        ``torch.distributed`` when it is initialised, else 1 and 0.
    shuffle:
        Shuffle each epoch (default); otherwise rows are read in order.
    seed:
        The order of epoch ``e`` depends only on ``(seed, e)``.
    drop_last:
        ``True`` (default) drops the last ``len % num_replicas`` positions
        of the order, so that every rank gets the same count and none waits
        for the others at the end of an epoch; ``False`` pads by repeating
        the first positions, as ``torch.utils.data.DistributedSampler``.
    block_rows:
        Shuffle blocks of this many consecutive rows, and rows inside each
        block, instead of all rows: the rows read close in time are close
        in the file (or in one shard), which matters for cold data.

    Resuming
    --------
    ``state_dict(consumed=k)`` records that this rank has consumed ``k``
    samples since the current iteration began (after a resume, since the
    resume: not counting the samples of the epoch read before the state was
    saved); ``load_state_dict`` in a new run (with the same or another
    world size) makes the next iteration continue with the first position
    not consumed. Global step ``t`` of any run reads the positions
    ``[t * B, (t + 1) * B)`` after its start, ``B`` being the global batch
    (``num_replicas * batch_size``): keep ``B`` when the world size changes
    and every step after the resume reads the rows the same step of an
    uninterrupted run would have. Only the end of the epoch depends on the
    world size: ``drop_last`` drops what does not fill every rank of the
    world that reads it, so a smaller world may also read the last rows a
    larger one dropped. A DataLoader with workers takes
    indices from the sampler ahead of the batches it yields
    (``prefetch_factor * num_workers`` batches), so pass the count of
    samples your loop has actually consumed, e.g. ``steps * batch_size``;
    without ``consumed`` the count of indices the sampler has given out is
    used, which is exact only with ``num_workers=0``.

    Examples
    --------
    >>> s = ResumableSampler(10, num_replicas=2, rank=0, seed=1)
    >>> s.set_epoch(3)
    >>> first = list(s)
    >>> state = s.state_dict(consumed=2)
    >>> t = ResumableSampler(10, num_replicas=2, rank=0, seed=1)
    >>> t.load_state_dict(state)
    >>> list(t) == first[2:]
    True
    """

    def __init__(
        self,
        data: Sized | int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        block_rows: int | None = None,
    ) -> None:
        self.num_rows = int(data) if isinstance(data, (int, np.integer)) else len(data)
        if num_replicas is None or rank is None:
            world, me = _distributed()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        if block_rows is not None and block_rows < 1:
            raise ValueError(f"block_rows must be a positive int or None, got {block_rows!r}")
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.block_rows = block_rows
        self.epoch = 0
        self._start = 0  # the first position of the next iteration
        self._iter_start = 0  # the first position of the current one
        self._yielded = 0

    # -- the order of one epoch --------------------------------------------
    def rows(self, positions: np.ndarray, epoch: int | None = None) -> np.ndarray:
        """Rows at ``positions`` (0 <= p < len) of an epoch's order."""
        positions = np.asarray(positions, np.uint64)
        if not self.shuffle:
            return positions.astype(np.int64)
        epoch = self.epoch if epoch is None else epoch
        n = self.num_rows
        keys = _round_keys(self.seed, epoch, 0)
        if self.block_rows is None or self.block_rows >= n:
            return _permute(positions, n, keys).astype(np.int64)
        return _permute_blocks(
            positions, n, self.block_rows, keys, _round_keys(self.seed, epoch, 1)
        )

    def _span(self, start: int) -> int:
        """Samples this rank reads in an iteration that starts at position ``start``."""
        left = max(0, self.num_rows - start)
        if self.drop_last:
            return left // self.num_replicas
        return -(-left // self.num_replicas)

    def __len__(self) -> int:
        return self._span(self._start)

    def __iter__(self) -> Iterator[int]:
        start = self._iter_start = self._start
        self._start = 0  # the resume point serves once; later iterations start the epoch anew
        self._yielded = 0
        return self._generate(start, self._span(start), self.epoch)

    def _generate(self, start: int, count: int, epoch: int) -> Iterator[int]:
        n, world = self.num_rows, self.num_replicas
        for k0 in range(0, count, _CHUNK):
            k = np.arange(k0, min(count, k0 + _CHUNK), dtype=np.int64)
            positions = (start + self.rank + k * world) % n  # past the end: padding wraps
            for row in self.rows(positions, epoch).tolist():
                self._yielded += 1
                yield row

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on (call before each epoch)."""
        if epoch != self.epoch:
            # A state saved before the new epoch's first step must point at its start,
            # not at where the previous (possibly resumed) iteration stood.
            self._start = self._iter_start = self._yielded = 0
        self.epoch = int(epoch)

    # -- resuming --------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where the current epoch stands.

        ``consumed`` is the number of samples this rank has consumed in the
        current iteration (default: the number the sampler has given out).
        The state records the position in the epoch's order reached by all
        ranks together, so it can be loaded with another world size.
        """
        local = self._yielded if consumed is None else int(consumed)
        if local < 0:
            raise ValueError(f"consumed must be >= 0, got {consumed}")
        return {
            "version": STATE_VERSION,
            "num_rows": self.num_rows,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "block_rows": self.block_rows,
            "epoch": self.epoch,
            "position": self._iter_start + local * self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch of ``state`` at the first position not consumed."""
        if state.get("version", 0) > STATE_VERSION:
            raise ValueError(
                f"sampler state version {state.get('version')} is newer than this h5record's"
            )
        if state["num_rows"] != self.num_rows:
            raise ValueError(
                f"the sampler state is of a dataset of {state['num_rows']} rows, "
                f"this one has {self.num_rows}"
            )
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        self.block_rows = state["block_rows"]
        self.epoch = int(state["epoch"])
        self._start = self._iter_start = int(state["position"])
        self._yielded = 0


def _distributed() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - depends on the installation
        return 1, 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _round_keys(seed: int, epoch: int, purpose: int) -> np.ndarray:
    """Per-round keys from (seed, epoch): numpy's SeedSequence hashes them the same everywhere."""
    entropy = [seed & (2**64 - 1), epoch & (2**64 - 1), purpose]
    return np.random.SeedSequence(entropy).generate_state(_ROUNDS, np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64's): every input bit affects every output bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _feistel(x: np.ndarray, half: int, keys: np.ndarray, tweak: np.ndarray | None) -> np.ndarray:
    """One pass of a balanced Feistel network on ``2 * half``-bit values."""
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    left, right = x >> shift, x & mask
    for key in keys:
        k = key if tweak is None else key ^ tweak
        left, right = right, left ^ (_mix(right ^ k) & mask)
    return (left << shift) | right


def _permute(
    x: np.ndarray, m: int, keys: np.ndarray, tweak: np.ndarray | None = None
) -> np.ndarray:
    """A bijection of [0, m): the Feistel network, walked again for values >= m."""
    if m <= 1:
        return np.zeros_like(x)
    half = max(1, ((m - 1).bit_length() + 1) // 2)
    x = _feistel(x.astype(np.uint64), half, keys, tweak)
    out = x >= np.uint64(m)
    while out.any():  # values per walk at least halve on average: few passes
        where = np.flatnonzero(out)
        x[where] = _feistel(x[where], half, keys, None if tweak is None else tweak[where])
        out[where] = x[where] >= np.uint64(m)
    return x


def _unpermute(x: np.ndarray, m: int, keys: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_permute` (without tweak)."""
    if m <= 1:
        return np.zeros_like(x)
    half = max(1, ((m - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)

    def back(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for key in keys[::-1]:
            left, right = right ^ (_mix(left ^ key) & mask), left
        return (left << shift) | right

    x = back(x.astype(np.uint64))
    out = x >= np.uint64(m)
    while out.any():
        where = np.flatnonzero(out)
        x[where] = back(x[where])
        out[where] = x[where] >= np.uint64(m)
    return x


def _permute_blocks(
    positions: np.ndarray, n: int, size: int, block_keys: np.ndarray, row_keys: np.ndarray
) -> np.ndarray:
    """Shuffled blocks of ``size`` rows, rows shuffled in each block; the last may be short."""
    n_blocks = -(-n // size)
    short = n - (n_blocks - 1) * size  # rows of the last block
    # The short block sits at place p of the block order; places after it start
    # ``size - short`` positions earlier.
    p = int(_unpermute(np.array([n_blocks - 1], np.uint64), n_blocks, block_keys)[0])
    pos = positions.astype(np.int64)
    after = pos >= p * size + short
    shifted = pos + np.where(after, size - short, 0)
    place = shifted // size
    offset = shifted - place * size
    block = _permute(place.astype(np.uint64), n_blocks, block_keys).astype(np.int64)
    tweak = _mix(block.astype(np.uint64) + _GOLDEN)
    rows = np.empty(len(pos), np.int64)
    last = block == n_blocks - 1
    for sel, m in ((~last, size), (last, short)):
        if sel.any():
            inner = _permute(offset[sel].astype(np.uint64), m, row_keys, tweak[sel])
            rows[sel] = block[sel] * size + inner.astype(np.int64)
    return rows
