"""ResumableSampler: disjoint complete ranks, (seed, epoch) orders, exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, DistributedSampler

from h5record import H5Dataset, H5Writer, Integer
from h5record.sampler import ResumableSampler, _permute, _round_keys, _unpermute


def epoch_of(n, world, epoch=0, **kw) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = ResumableSampler(n, num_replicas=world, rank=rank, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@given(
    n=st.integers(0, 300),
    world=st.integers(1, 5),
    block_rows=st.none() | st.integers(1, 40),
    drop_last=st.booleans(),
)
def test_ranks_cover_every_row_once(n, world, block_rows, drop_last):
    ranks = epoch_of(n, world, epoch=3, seed=7, block_rows=block_rows, drop_last=drop_last)
    assert len({len(r) for r in ranks}) <= 1  # every rank the same count
    flat = [i for r in ranks for i in r]
    if drop_last:
        assert len(flat) == n - n % world and len(set(flat)) == len(flat)
    else:
        assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    assert all(
        len(r) == len(ResumableSampler(n, world, k, drop_last=drop_last))
        for k, r in enumerate(ranks)
    )


def test_padding_and_dropping_as_torch():
    data = list(range(10))
    for drop_last in (False, True):
        ours = epoch_of(10, 3, shuffle=False, drop_last=drop_last)
        theirs = [
            list(DistributedSampler(data, 3, r, shuffle=False, drop_last=drop_last))
            for r in range(3)
        ]
        assert ours == theirs


def test_order_depends_on_seed_and_epoch_only():
    a = epoch_of(1000, 2, epoch=1, seed=3)
    assert a == epoch_of(1000, 2, epoch=1, seed=3)
    assert a != epoch_of(1000, 2, epoch=2, seed=3)
    assert a != epoch_of(1000, 2, epoch=1, seed=4)
    assert a[0] != sorted(a[0])
    s = ResumableSampler(1000, 1, 0, seed=3)
    s.set_epoch(1)
    assert list(s) == list(s)  # iterating again repeats the epoch


def test_blocks_keep_rows_together():
    rows = epoch_of(1000, 1, block_rows=100)[0]
    assert sorted(rows) == list(range(1000)) and rows != sorted(rows)
    blocks = [r // 100 for r in rows]
    assert blocks == [b for b in blocks[::100] for _ in range(100)]  # one block at a time


def test_feistel_is_a_permutation_and_its_inverse():
    keys = _round_keys(1, 2, 0)
    for m in (1, 2, 5, 1000, 4097):
        x = np.arange(m, dtype=np.uint64)
        p = _permute(x, m, keys)
        assert sorted(p.tolist()) == list(range(m))
        assert np.array_equal(_unpermute(p, m, keys), x)


def test_a_billion_rows_need_no_list():
    s = ResumableSampler(10**9, num_replicas=8, rank=5, seed=1)
    it = iter(s)
    first = [next(it) for _ in range(1000)]
    assert len(set(first)) == 1000 and max(first) > 10**8 and len(s) == 125_000_000


@pytest.mark.parametrize("block_rows", [None, 16])
@pytest.mark.parametrize("new_world", [1, 2, 3])
def test_resume_mid_epoch_with_any_world_size(block_rows, new_world):
    n, world, batch, steps = 203, 2, 5, 7
    full = epoch_of(n, world, epoch=4, seed=9, block_rows=block_rows)
    global_order = [full[j % world][j // world] for j in range(world * len(full[0]))]
    states = []
    for rank in range(world):
        s = ResumableSampler(n, world, rank, seed=9, block_rows=block_rows)
        s.set_epoch(4)
        it = iter(s)
        for _ in range(steps * batch + 11):  # a DataLoader's prefetching runs ahead
            next(it)
        states.append(s.state_dict(consumed=steps * batch))
    assert states[0] == states[1]
    done = steps * batch * world
    resumed = []
    for rank in range(new_world):
        s = ResumableSampler(n, new_world, rank, seed=0)
        s.load_state_dict(states[0])
        resumed.append(list(s))
    assert len({len(r) for r in resumed}) == 1
    got = [resumed[j % new_world][j // new_world] for j in range(new_world * len(resumed[0]))]
    # The remaining positions of the same order, dealt to the new ranks.
    s = ResumableSampler(n, 1, 0, seed=9, block_rows=block_rows)
    s.set_epoch(4)
    order = list(s)
    assert got == order[done : done + len(got)]
    assert order[:done] == global_order[:done]
    assert not set(got) & set(global_order[:done])
    # The epoch after a resumed one starts at its beginning.
    s = ResumableSampler(n, new_world, 0, seed=0)
    s.load_state_dict(states[0])
    list(s)
    s.set_epoch(5)
    assert len(list(s)) == n // new_world


def test_state_without_consumed_counts_what_was_given(tmp_path):
    s = ResumableSampler(50, 1, 0, seed=2)
    it = iter(s)
    first = [next(it) for _ in range(20)]
    t = ResumableSampler(50, 1, 0)
    t.load_state_dict(s.state_dict())
    s.set_epoch(0)
    assert first + list(t) == list(s)
    with pytest.raises(ValueError, match="50 rows"):
        ResumableSampler(51, 1, 0).load_state_dict(s.state_dict())


def test_state_saved_before_an_epochs_first_step_starts_it():
    # A run resumed mid-epoch, then moved on to the next epoch: a checkpoint taken
    # before that epoch's first step must resume it from its start.
    s = ResumableSampler(100, 2, 0, seed=1)
    it = iter(s)
    for _ in range(10):
        next(it)
    t = ResumableSampler(100, 2, 0)
    t.load_state_dict(s.state_dict(consumed=10))
    list(t)
    t.set_epoch(1)
    for state in (t.state_dict(), t.state_dict(consumed=0)):
        assert (state["epoch"], state["position"]) == (1, 0)
        u = ResumableSampler(100, 2, 0)
        u.load_state_dict(state)
        assert list(u) == epoch_of(100, 2, epoch=1, seed=1)[0]


def test_with_a_dataloader(tmp_path):
    path = tmp_path / "x.h5"
    with H5Writer(path, [Integer("x")], progress=False) as w:
        w.write_batch({"x": list(range(100))})
    ds = H5Dataset(str(path))
    s = ResumableSampler(ds, 2, 1, seed=1)
    loader = DataLoader(ds, batch_size=8, sampler=s, collate_fn=lambda b: b)
    seen = []
    for step, batch in enumerate(loader):
        seen += [r["x"] for r in batch]
        if step == 2:
            state = s.state_dict(consumed=(step + 1) * 8)
            break
    t = ResumableSampler(ds, 2, 1)
    t.load_state_dict(state)
    rest = [
        r["x"]
        for batch in DataLoader(ds, batch_size=8, sampler=t, collate_fn=lambda b: b)
        for r in batch
    ]
    assert seen + rest == list(s)
