"""collate and DataLoader: exactly the written rows, under fork, spawn and forkserver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import h5record
from h5record import Float, H5Dataset, H5Writer, Integer, Sequence, String

N = 300


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("torch") / "d.h5"
    with H5Writer(
        p,
        [
            Integer("id"),
            String("text"),
            Sequence("tok", dtype="int32"),
            Float("y", dtype="float32"),
        ],
        progress=False,
    ) as w:
        for i in range(N):
            w.write(
                {"id": i, "text": f"é{i}", "tok": np.arange(i % 6, dtype=np.int32) + i, "y": i / 4}
            )
    return str(p)


def _expected(i: int) -> tuple:
    return i, f"é{i}", list(range(i, i + i % 6)), i / 4


def _rows_of(batch: dict) -> list[tuple]:
    out = []
    for j in range(len(batch["id"])):
        n = int(batch["tok_lengths"][j])
        assert torch.all(batch["tok"][j, n:] == 0)  # padding
        out.append(
            (
                int(batch["id"][j]),
                batch["text"][j],
                batch["tok"][j, :n].tolist(),
                float(batch["y"][j]),
            )
        )
    return out


def test_collate_batch(path):
    ds = H5Dataset(path)
    batch = h5record.collate(ds[[5, 0, 11]])
    assert batch["id"].dtype == torch.int64 and batch["y"].dtype == torch.float32
    assert batch["tok"].shape == (3, 5) and batch["tok"].dtype == torch.int32
    assert batch["tok_lengths"].tolist() == [5, 0, 5]
    assert _rows_of(batch) == [_expected(5), _expected(0), _expected(11)]


def test_collate_pad_value_and_rows_after_transform(path):
    ds = H5Dataset(path)
    batch = h5record.Collate(pad_value=-1)(ds[[1, 2]])
    assert batch["tok"].tolist() == [[1, -1], [2, 3]]
    rows = H5Dataset(path, transform=lambda r: {**r, "twice": r["id"] * 2})[[3, 4]]
    out = h5record.collate(rows)
    assert out["twice"].tolist() == [6, 8]
    assert out["tok"].tolist() == [[3, 4, 5, 0], [4, 5, 6, 7]]
    assert out["tok_lengths"].tolist() == [3, 4]
    with pytest.raises(TypeError):
        h5record.collate(42)


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("loader", ["torch", "h5record"])
def test_dataloader_two_workers_yields_every_row(path, context, loader):
    ds = H5Dataset(path)
    if loader == "torch":
        dl = DataLoader(
            ds,
            batch_size=32,
            shuffle=True,
            num_workers=2,
            multiprocessing_context=context,
            collate_fn=h5record.collate,
        )
    else:
        dl = h5record.DataLoader(
            ds, batch_size=32, shuffle=True, num_workers=2, multiprocessing_context=context
        )
    rows = []
    for batch in dl:
        assert isinstance(batch["tok"], torch.Tensor) and isinstance(batch["id"], torch.Tensor)
        rows.extend(_rows_of(batch))
    assert sorted(rows) == [_expected(i) for i in range(N)]


def test_default_collate_still_works(tmp_path):
    p = tmp_path / "s.h5"
    with H5Writer(p, [Integer("a"), Float("b")], progress=False) as w:
        for i in range(10):
            w.write({"a": i, "b": i / 2})
    batches = list(DataLoader(H5Dataset(p), batch_size=4))
    assert torch.cat([b["a"] for b in batches]).tolist() == list(range(10))
    assert torch.cat([b["b"] for b in batches]).tolist() == [i / 2 for i in range(10)]
