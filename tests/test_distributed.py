"""ResumableSampler under torch.distributed: gloo processes reading through real DataLoaders.

One 2-rank run reads whole epochs and stops a third after a few steps with
its state saved; new runs of 2 ranks and of 1 rank resume from that state.
The rows every run reads are compared, global step by global step, with
the uninterrupted epochs and with the order the sampler promises.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import h5record
from h5record import H5Dataset, H5Writer, Integer, String
from h5record.sampler import ResumableSampler

ROWS = 301  # odd: drop_last leaves out a row with 2 ranks, none with 1
BATCH = 8  # per rank in the 2-rank runs: a global batch of 16
GLOBAL_BATCH = 2 * BATCH
STEPS = 5  # global steps read before the state is saved
SEED = 11
TIMEOUT = 120  # seconds a spawn may take before the test fails


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, url, *args)`` in ``world`` processes; fail after TIMEOUT."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.spawn(fn, args=(world, url, *args), nprocs=world, join=False)
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.terminate()
            pytest.fail(f"{world} ranks of {fn.__name__} still running after {TIMEOUT} s")


# -- what each rank runs (module level: spawn imports it by name) ------------------------
def _init(rank: int, world: int, url: str) -> None:
    dist.init_process_group(
        "gloo", init_method=url, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )


def _read(loader, steps: int | None = None) -> list[list[int]]:
    """The ids of each batch, after checking that every row's fields belong together."""
    batches = []
    for batch in loader:
        ids = batch["id"].tolist()
        assert batch["text"] == [f"row {i}" for i in ids]
        batches.append(ids)
        if len(batches) == steps:
            break
    return batches


def _gather(rank: int, result: dict, out: str) -> None:
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, result)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(everyone, f)


def _epochs_then_stop(rank: int, world: int, url: str, path: str, out: str) -> None:
    _init(rank, world, url)
    try:
        ds = H5Dataset(path)
        sampler = ResumableSampler(ds, seed=SEED)  # world size and rank from torch.distributed
        loader = h5record.DataLoader(ds, batch_size=BATCH, sampler=sampler)
        result: dict = {"world": sampler.num_replicas, "rank": sampler.rank}
        for key, epoch in (("epoch0", 0), ("epoch1", 1), ("epoch0_again", 0)):
            sampler.set_epoch(epoch)
            result[key] = _read(loader)
        # A new run of epoch 0, stopped after STEPS steps. Its worker takes indices
        # from the sampler ahead of the batches it yields. (Forked: the default start
        # method in a spawned rank is spawn, which costs seconds and is tested elsewhere.)
        sampler = ResumableSampler(ds, seed=SEED)
        loader = h5record.DataLoader(
            ds, batch_size=BATCH, sampler=sampler, num_workers=1, multiprocessing_context="fork"
        )
        result["before"] = _read(loader, STEPS)
        result["state"] = sampler.state_dict(consumed=STEPS * BATCH)
        result["given"] = sampler.state_dict()["position"]
        _gather(rank, result, out)
    finally:
        dist.destroy_process_group()


def _resume(rank: int, world: int, url: str, path: str, state: str, out: str) -> None:
    _init(rank, world, url)
    try:
        ds = H5Dataset(path)
        sampler = ResumableSampler(ds)  # seed and epoch come with the state
        with open(state) as f:
            sampler.load_state_dict(json.load(f))
        loader = h5record.DataLoader(ds, batch_size=GLOBAL_BATCH // world, sampler=sampler)
        result = {}
        for key, epoch in (("rest", sampler.epoch), ("next", sampler.epoch + 1)):
            sampler.set_epoch(epoch)  # as a training loop does; the same epoch keeps the state
            result[key] = _read(loader)
        _gather(rank, result, out)
    finally:
        dist.destroy_process_group()


# -- the checks ----------------------------------------------------------------------------
def order(epoch: int) -> list[int]:
    """The rows of an epoch in the sampler's global order."""
    sampler = ResumableSampler(ROWS, 1, 0, seed=SEED)
    sampler.set_epoch(epoch)
    return list(sampler)


def global_steps(ranks: list[list[list[int]]]) -> list[list[int]]:
    """Per global step, the rows of all ranks in position order (rank r has every r-th)."""
    assert len({len(batches) for batches in ranks}) == 1, "ranks ran different step counts"
    return [
        [row for column in zip(*step, strict=True) for row in column]
        for step in zip(*ranks, strict=True)
    ]


def flat(steps: list[list[int]]) -> list[int]:
    return [row for step in steps for row in step]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    path = str(tmp / "rows.h5")
    with H5Writer(path, [Integer("id"), String("text")], progress=False) as w:
        w.write_batch({"id": list(range(ROWS)), "text": [f"row {i}" for i in range(ROWS)]})
    out = str(tmp / "ranks.json")
    _spawn(_epochs_then_stop, 2, path, out)
    with open(out) as f:
        ranks = json.load(f)
    state = tmp / "state.json"
    state.write_text(json.dumps(ranks[0]["state"]))
    return path, str(state), ranks


def test_ranks_are_disjoint_and_complete_over_an_epoch(stopped_run):
    _, _, ranks = stopped_run
    assert [(r["world"], r["rank"]) for r in ranks] == [(2, 0), (2, 1)]
    for key, epoch in (("epoch0", 0), ("epoch1", 1)):
        mine = [flat(r[key]) for r in ranks]
        assert [len(m) for m in mine] == [ROWS // 2] * 2
        assert not set(mine[0]) & set(mine[1])
        # drop_last: the share is the first ROWS - 1 rows of the epoch's order, in order.
        assert flat(global_steps([r[key] for r in ranks])) == order(epoch)[: ROWS - 1]
        assert all(len(b) == BATCH for r in ranks for b in r[key][:-1])


def test_order_depends_on_seed_and_epoch_only(stopped_run):
    _, _, ranks = stopped_run
    for r in ranks:
        assert r["epoch0_again"] == r["epoch0"]
        assert r["epoch1"] != r["epoch0"]
    assert flat(ranks[0]["epoch0"]) != sorted(flat(ranks[0]["epoch0"]))


# The 2-rank resume starts two more processes (about as long as the rest of the file).
@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_reads_the_rest_of_the_uninterrupted_run(stopped_run, tmp_path, world):
    path, state, ranks = stopped_run
    assert ranks[0]["state"] == ranks[1]["state"]  # the state is global: any rank's will do
    assert ranks[0]["state"]["position"] == STEPS * GLOBAL_BATCH
    # The worker had taken more indices than the loop consumed: counting them would skip rows.
    assert all(r["given"] > r["state"]["position"] for r in ranks)
    uninterrupted = global_steps([r["epoch0"] for r in ranks])
    before = global_steps([r["before"] for r in ranks])
    assert before == uninterrupted[:STEPS]

    out = str(tmp_path / "resumed.json")
    _spawn(_resume, world, path, state, out)
    with open(out) as f:
        resumed = json.load(f)
    after = global_steps([r["rest"] for r in resumed])
    # The same global batch: every step after the resume reads the rows, in the same
    # order, of the same step of the uninterrupted run; a world of 1 drops no row, so
    # its last step also reads the row the 2 ranks dropped.
    dropped_by_two = order(0)[ROWS - ROWS % 2 : ROWS - ROWS % world]
    assert len(after) == len(uninterrupted) - STEPS
    assert after[:-1] == uninterrupted[STEPS:-1]
    assert after[-1] == uninterrupted[-1] + dropped_by_two
    assert flat(before) + flat(after) == order(0)[: ROWS - ROWS % world]
    # The next epoch starts at its beginning.
    assert flat(global_steps([r["next"] for r in resumed])) == order(1)[: ROWS - ROWS % world]
