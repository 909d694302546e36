"""collate and DataLoader: exactly the written rows, under fork, spawn and forkserver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import h5record
from h5record import (
    Array,
    Bytes,
    Float,
    Float16,
    Float16Sequence,
    FloatSequence,
    H5Dataset,
    H5Writer,
    Image,
    ImageSequence,
    Integer,
    Sequence,
    String,
    codecs,
)

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


def add_double(row: dict) -> dict:
    """A transform at module level, so that spawned workers can unpickle it."""
    return {**row, "double": row["id"] * 2}


def test_collate_batch(path):
    ds = H5Dataset(path)
    batch = h5record.collate(ds[[5, 0, 11]])
    assert batch["id"].dtype == torch.int64 and batch["y"].dtype == torch.float32
    assert batch["tok"].shape == (3, 5) and batch["tok"].dtype == torch.int32
    assert batch["tok_lengths"].dtype == torch.int64
    assert batch["tok_lengths"].tolist() == [5, 0, 5]
    assert _rows_of(batch) == [_expected(5), _expected(0), _expected(11)]
    assert list(batch) == ["id", "text", "tok", "tok_lengths", "y"]


def test_collate_pad_value_and_rows_after_transform(path):
    ds = H5Dataset(path)
    batch = h5record.Collate(pad_value=-1)(ds[[1, 2]])
    assert batch["tok"].tolist() == [[1, -1], [2, 3]]
    rows = H5Dataset(path, transform=add_double)[[3, 4]]
    out = h5record.collate(rows)
    assert out["double"].tolist() == [6, 8]
    assert out["tok"].tolist() == [[3, 4, 5, 0], [4, 5, 6, 7]]
    assert out["tok_lengths"].tolist() == [3, 4]
    assert out["text"] == ["é3", "é4"]
    with pytest.raises(TypeError):
        h5record.collate(42)
    with pytest.raises(TypeError):
        h5record.collate([])


def test_collate_rows_equals_collate_batch(path):
    ds = H5Dataset(path)
    idx = [7, 2, 13, 0, 299]  # lengths 1, 2, 1, 0, 5
    from_batch = h5record.Collate(pad_value=-3)(ds[idx])
    from_rows = h5record.Collate(pad_value=-3)([ds[i] for i in idx])
    assert list(from_rows) == list(from_batch)
    for key, value in from_batch.items():
        if isinstance(value, torch.Tensor):
            assert from_rows[key].tolist() == value.tolist(), key
        else:
            assert from_rows[key] == value


@pytest.mark.parametrize("idx", [[7, 2, 13], [1, 7]], ids=["ragged", "equal-lengths"])
def test_identity_transform_does_not_change_collate(path, idx):
    from_batch = h5record.collate(H5Dataset(path)[idx])
    from_rows = h5record.collate(H5Dataset(path, transform=lambda row: row)[idx])
    assert list(from_rows) == list(from_batch)
    for key, value in from_batch.items():
        if isinstance(value, torch.Tensor):
            assert from_rows[key].dtype == value.dtype, key
            assert torch.equal(from_rows[key], value), key


EVERY_TYPE = [
    Integer("id"),
    String("s"),
    Bytes("b"),
    Integer("u8", dtype="uint8"),
    Float16("h"),
    Float("f"),
    Array("m", (2, 3), "float32"),
    Image(3, 4, 2, name="img"),
    Sequence("q", dtype="int16"),
    FloatSequence("fs"),
    Float16Sequence("hs"),
    ImageSequence(2, 2, 1, name="gif"),
]


def _every_type_row(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "id": i,
        "s": "ü" * (i % 3),
        "b": bytes([i % 256]) * (i % 4),
        "u8": i % 256,
        "h": float(np.float16(i / 8)),
        "f": i / 3,
        "m": rng.random((2, 3)).astype(np.float32),
        "img": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
        "q": np.arange(i % 5, dtype=np.int16) - 2,
        "fs": rng.random(i % 3).astype(np.float32),
        "hs": rng.random(i % 4).astype(np.float16),
        "gif": rng.integers(1, 256, (i % 3, 1, 2, 2), dtype=np.uint8),
    }


@pytest.fixture(scope="module", params=[None, "zstd", "gzip"])
def every_type(request, tmp_path_factory):
    p = tmp_path_factory.mktemp("every") / "e.h5"
    rows = [_every_type_row(i) for i in range(64)]
    with H5Writer(p, EVERY_TYPE, compression=request.param, progress=False) as w:
        for row in rows:
            w.write(row)
    return str(p), rows


def test_collate_every_field_type(every_type):
    path, rows = every_type
    ds = H5Dataset(path)
    idx = [5, 0, 17, 4, 63]
    out = h5record.Collate(pad_value=7)(ds[idx])
    want = [rows[i] for i in idx]
    assert out["s"] == [r["s"] for r in want] and out["b"] == [r["b"] for r in want]
    assert out["id"].tolist() == idx and out["id"].dtype == torch.int64
    assert out["u8"].dtype == torch.uint8 and out["u8"].tolist() == [r["u8"] for r in want]
    assert out["h"].dtype == torch.float16 and out["h"].tolist() == [r["h"] for r in want]
    assert out["f"].dtype == torch.float64 and out["f"].tolist() == [r["f"] for r in want]
    assert out["m"].shape == (5, 2, 3)
    np.testing.assert_array_equal(out["m"].numpy(), np.stack([r["m"] for r in want]))
    assert out["img"].shape == (5, 2, 3, 4) and out["img"].dtype == torch.uint8
    np.testing.assert_array_equal(out["img"].numpy(), np.stack([r["img"] for r in want]))
    for name, dtype in [("q", torch.int16), ("fs", torch.float32), ("hs", torch.float16)]:
        lengths = [len(r[name]) for r in want]
        assert out[f"{name}_lengths"].tolist() == lengths
        assert out[name].dtype == dtype and out[name].shape == (5, max(lengths))
        for j, r in enumerate(want):
            np.testing.assert_array_equal(out[name][j, : lengths[j]].numpy(), r[name])
            assert torch.all(out[name][j, lengths[j] :] == 7)
    frames = out["gif"]
    assert frames.shape == (5, 2, 1, 2, 2) and frames.dtype == torch.uint8
    for j, r in enumerate(want):
        t = len(r["gif"])
        assert out["gif_lengths"][j] == t
        np.testing.assert_array_equal(frames[j, :t].numpy(), r["gif"])
        assert torch.all(frames[j, t:] == 7)
    # The general path over the same rows gives the same values.
    again = h5record.Collate(pad_value=7)([ds[i] for i in idx])
    assert sorted(again) == sorted(out)
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            assert again[key].shape == value.shape
            assert torch.equal(again[key].double(), value.double()), key
        else:
            assert again[key] == value


def _clash_file(tmp_path, schema):
    p = tmp_path / "c.h5"
    with H5Writer(p, schema, progress=False) as w:
        w.write({"tok": [1, 2], "tok_lengths": 5})
        w.write({"tok": [3], "tok_lengths": 6})
    return H5Dataset(p)


def test_collate_lengths_suffix_and_clash(tmp_path):
    ds = _clash_file(tmp_path, [Integer("tok_lengths"), Sequence("tok")])
    with pytest.raises(ValueError, match="clashes"):
        h5record.collate(ds[[0, 1]])
    out = h5record.Collate(lengths_suffix="_n")(ds[[0, 1]])
    assert out["tok_n"].tolist() == [2, 1] and out["tok_lengths"].tolist() == [5, 6]
    assert out["tok"].tolist() == [[1, 2], [3, 0]]


def test_collate_lengths_clash_with_a_later_field(tmp_path):
    ds = _clash_file(tmp_path, [Sequence("tok"), Integer("tok_lengths")])
    with pytest.raises(ValueError, match="clashes"):
        h5record.collate(ds[[0, 1]])


def test_collate_keeps_arrays_when_asked(path):
    out = h5record.Collate(tensors=False)(H5Dataset(path)[[1, 2]])
    assert isinstance(out["tok"], np.ndarray) and isinstance(out["id"], np.ndarray)
    assert out["tok"].tolist() == [[1, 0], [2, 3]]


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("loader", ["torch", "h5record"])
def test_dataloader_two_workers_yields_every_row(path, context, loader):
    ds = H5Dataset(path)
    if loader == "torch":
        dl = DataLoader(
            ds,
            batch_size=32,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=2,
            multiprocessing_context=context,
            collate_fn=h5record.collate,
        )
    else:
        dl = h5record.DataLoader(
            ds,
            batch_size=32,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=2,
            multiprocessing_context=context,
        )
    rows = []
    for batch in dl:
        assert isinstance(batch["tok"], torch.Tensor) and isinstance(batch["id"], torch.Tensor)
        assert len(batch["id"]) <= 32
        rows.extend(_rows_of(batch))
    assert len(rows) == N
    assert sorted(rows) == [_expected(i) for i in range(N)]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_with_a_transform_in_workers(path, context):
    ds = H5Dataset(path, transform=add_double)
    dl = DataLoader(
        ds,
        batch_size=50,
        shuffle=False,
        num_workers=2,
        multiprocessing_context=context,
        collate_fn=h5record.collate,
    )
    batches = list(dl)
    ids = torch.cat([b["id"] for b in batches]).tolist()
    assert ids == list(range(N))  # shuffle=False keeps the order across workers
    assert torch.cat([b["double"] for b in batches]).tolist() == [2 * i for i in range(N)]
    rows = [r for b in batches for r in _rows_of(b)]
    assert rows == [_expected(i) for i in range(N)]


def test_default_collate_still_works(tmp_path):
    p = tmp_path / "s.h5"
    schema = [Integer("a"), Float("b"), Array("m", (2,), "int16"), Image(2, 2, 1, name="im")]
    with H5Writer(p, schema, progress=False) as w:
        for i in range(10):
            w.write(
                {
                    "a": i,
                    "b": i / 2,
                    "m": np.array([i, -i], np.int16),
                    "im": np.full((1, 2, 2), i, np.uint8),
                }
            )
    for workers in (0, 2):
        batches = list(DataLoader(H5Dataset(p), batch_size=4, num_workers=workers))
        assert [len(b["a"]) for b in batches] == [4, 4, 2]
        assert torch.cat([b["a"] for b in batches]).tolist() == list(range(10))
        assert torch.cat([b["b"] for b in batches]).tolist() == [i / 2 for i in range(10)]
        m = torch.cat([b["m"] for b in batches])
        assert m.dtype == torch.int16 and m.tolist() == [[i, -i] for i in range(10)]
        im = torch.cat([b["im"] for b in batches])
        assert im.shape == (10, 1, 2, 2) and im[:, 0, 0, 0].tolist() == list(range(10))


def test_h5record_dataloader_in_process_and_zstd_fields(tmp_path):
    p = tmp_path / "z.h5"
    schema = [Integer("id"), Sequence("tok", dtype="int32", compression=codecs.zstd())]
    with H5Writer(p, schema, progress=False) as w:
        for i in range(120):
            w.write({"id": i, "tok": np.full(i % 9, i, np.int32)})
    batches = list(h5record.DataLoader(H5Dataset(p), batch_size=16))
    assert all(isinstance(b["tok"], torch.Tensor) for b in batches)
    for b in batches:
        for j, i in enumerate(b["id"].tolist()):
            n = i % 9
            assert b["tok_lengths"][j] == n
            assert b["tok"][j, :n].tolist() == [i] * n and torch.all(b["tok"][j, n:] == 0)


def image_and_label(row: dict) -> tuple:
    """torchvision's habit: a transform that returns (input, target)."""
    return row["tok"].astype(np.float32)[:1].sum(keepdims=True), row["id"]


def test_collate_of_rows_that_are_not_dicts(path):
    ds = H5Dataset(path, transform=image_and_label)
    x, y = h5record.collate(ds[[3, 4, 5]])
    assert y.tolist() == [3, 4, 5] and x.shape == (3, 1) and x.dtype == torch.float32
    pairs = H5Dataset(path, transform=lambda row: (row["id"], row["y"]))
    ids, ys = h5record.collate([pairs[i] for i in range(4)])
    assert ids.tolist() == [0, 1, 2, 3] and ys.dtype == torch.float64


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_with_a_transform_that_returns_tuples(path, num_workers):
    ds = H5Dataset(path, transform=image_and_label)
    loader = h5record.DataLoader(ds, batch_size=64, num_workers=num_workers)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == list(range(N))


def test_collate_tensors_option():
    assert h5record.Collate(tensors="auto").tensors == "auto"
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        h5record.Collate(tensors="yes")
