"""The shared-memory cache: one copy for every worker, nothing leaked, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import h5record
from h5record import Bytes, H5Dataset, H5Writer, Image, Integer, Sequence, String, cache, codecs

N = 400


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "data.h5"
    rng = np.random.default_rng(0)
    schema = [
        Integer("id"),
        String("text"),
        Sequence("tokens", dtype="int32", compression=codecs.zstd()),
    ]
    with H5Writer(path, schema, progress=False) as w:
        for i in range(N):
            w.write(
                {
                    "id": i,
                    "text": f"row {i} " + "é" * (i % 5),
                    "tokens": rng.integers(0, 100, i % 37).astype(np.int32),
                }
            )
    return str(path)


def _segments() -> set[str]:
    return {n for n in os.listdir(cache.SHM_DIR) if n.startswith(cache.NAME_PREFIX)}


def _wait_gone(names: set[str], timeout: float = 10.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = names & _segments()
        if not left:
            return set()
        time.sleep(0.1)
    return names & _segments()


def _memfd_identity(dataset: H5Dataset) -> tuple[int, int]:
    st = os.fstat(dataset.cache.fd)
    return st.st_dev, st.st_ino


class _Probe(torch.utils.data.Dataset):
    """Reports, from inside a worker, which memory its dataset maps."""

    def __init__(self, dataset: H5Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        row = self.dataset[i]
        return row["id"], row["text"], _memfd_identity(self.dataset), os.getpid()


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_workers_read_the_same_memory(data_file, context):
    ds = H5Dataset(data_file, in_memory=True)
    try:
        probe = _Probe(ds)
        loader = DataLoader(probe, batch_size=None, num_workers=2, multiprocessing_context=context)
        seen = list(loader)
        assert [(i, t) for i, t, _, _ in seen] == [(i, ds[i]["text"]) for i in range(N)]
        identities = {tuple(ident) for _, _, ident, _ in seen}
        assert identities == {_memfd_identity(ds)}  # attached, not copied
        assert len({pid for *_, pid in seen} - {os.getpid()}) == 2
    finally:
        ds.close()


def test_cache_equals_file(data_file):
    disk = H5Dataset(data_file)
    for mode in (True, "process", "node"):
        mem = H5Dataset(data_file, in_memory=mode)
        idx = np.random.default_rng(1).integers(0, N, 100)
        assert mem[idx] == disk[idx]
        batch = h5record.collate(mem[idx])
        want = h5record.collate(disk[idx])
        assert torch.equal(batch["tokens"], want["tokens"])
        mem.close()


@pytest.mark.parametrize("mode", [True, "process", "node"])
def test_compressed_cache_equals_file(data_file, mode):
    disk = H5Dataset(data_file)
    mem = H5Dataset(data_file, in_memory=mode, cache_compressed=True)
    try:
        idx = np.random.default_rng(2).integers(0, N, 150)
        assert mem[idx] == disk[idx]
        assert all(np.array_equal(mem[i]["tokens"], disk[i]["tokens"]) for i in range(N))
        assert torch.equal(
            h5record.collate(mem[idx])["tokens"], h5record.collate(disk[idx])["tokens"]
        )
        if mode is not True:
            return
        # The zstd field is held as its frames and block index, not decompressed.
        full = H5Dataset(data_file, in_memory=True)
        assert set(mem.cache.arrays()["tokens"]) == {"values", "blocks"}
        assert set(full.cache.arrays()["tokens"]) == {"values", "offsets"}
        full.close()
        # Workers attach to the compressed copy too.
        loader = DataLoader(
            _Probe(mem), batch_size=None, num_workers=2, multiprocessing_context="spawn"
        )
        seen = list(loader)
        assert [t for _, t, _, _ in seen] == [disk[i]["text"] for i in range(N)]
        assert {tuple(ident) for _, _, ident, _ in seen} == {_memfd_identity(mem)}
    finally:
        mem.close()


def test_compressed_and_decompressed_named_caches_differ(data_file):
    assert cache.segment_name(data_file, compressed=True) != cache.segment_name(data_file)


def test_cache_is_read_only(data_file):
    ds = H5Dataset(data_file, in_memory=True)
    arrays = ds.cache.arrays()
    with pytest.raises(ValueError):
        arrays["id"]["values"][0] = 5
    ds.close()


def test_cache_limit_fails_before_loading(data_file):
    with pytest.raises(cache.SharedMemoryError, match=r"needs .* GB .*in_memory=False"):
        H5Dataset(data_file, in_memory=True, cache_limit=1000)
    assert issubclass(cache.SharedMemoryError, MemoryError)


@pytest.mark.parametrize("mode", [True, "node"])
def test_cache_limit_fails_before_decompressing(data_file, monkeypatch, mode):
    """The decompressed size comes from the frame headers: a cache too large for
    its limit is refused before any frame is decompressed."""

    def refuse(*args, **kwargs):
        raise AssertionError("decompressed before the size check")

    monkeypatch.setattr(cache._Decompress, "fill", refuse)
    monkeypatch.setattr(h5record.reader, "_decompress_fields", refuse)
    before = _segments()
    with pytest.raises(cache.SharedMemoryError, match=r"needs .* but its limit is"):
        H5Dataset(data_file, in_memory=mode, cache_limit=1000)
    # The size the check used is the one a load fills.
    monkeypatch.undo()
    with H5Dataset(data_file, in_memory=mode) as ds:
        tokens = ds.cache.arrays()["tokens"]
        assert len(tokens["values"]) == sum(i % 37 for i in range(N))
        assert tokens["offsets"][-1] == len(tokens["values"])
        del tokens  # a view of the segment would keep it mapped
    assert _wait_gone(_segments() - before) == set()


@pytest.fixture(scope="module")
def zstd_file(tmp_path_factory):
    """Every kind of zstd field over many frames, empty rows included."""
    path = tmp_path_factory.mktemp("cache") / "zstd.h5"
    rng = np.random.default_rng(5)
    z = codecs.zstd(block_bytes=512)
    schema = [
        Integer("id", compression=z),
        String("text", compression=codecs.zstd(block_bytes=512, dictionary=True)),
        Sequence("tokens", dtype="int32", compression=z),
        Sequence("points", dtype="float32", compression=z),
        Bytes("blob", compression=z),
        Image(4, 4, 3, "image", compression=z),
    ]
    rows = []
    for i in range(1500):
        rows.append(
            {
                "id": i,
                "text": "" if i % 11 == 0 else f"row {i} " + "é" * (i % 7),
                "tokens": rng.integers(0, 50, i % 23).astype(np.int32),
                "points": np.full(i % 4, i / 3, np.float32),
                "blob": bytes(i % 13) + b"x",
                "image": np.full((3, 4, 4), i % 256, np.uint8),
            }
        )
    with H5Writer(path, schema, progress=False) as w:
        for row in rows:
            w.write(row)
    with h5py.File(path, "r") as f:
        stored = {e["name"]: e["codec"]["id"] for e in json.loads(f.attrs["schema"])["fields"]}
    assert set(stored.values()) == {"zstd"}, stored
    return str(path)


@pytest.mark.parametrize("mode", [True, "node", "process"])
@pytest.mark.parametrize("compressed", [False, True])
def test_zstd_fields_load_in_every_mode(zstd_file, monkeypatch, mode, compressed):
    # A few blocks at a time: every field is decompressed in many pieces.
    monkeypatch.setattr(cache, "DECOMPRESS_BYTES", 1)
    disk = H5Dataset(zstd_file)
    with H5Dataset(zstd_file, in_memory=mode, cache_compressed=compressed) as mem:
        every = np.arange(len(disk))
        assert mem[every] == disk[every]
        for name in ("tokens", "points", "image"):
            assert all(np.array_equal(mem[i][name], disk[i][name]) for i in range(0, len(disk), 7))
        if mode is not True:
            return
        keys = {name: set(arrays) for name, arrays in mem.cache.arrays().items()}
        for name in ("text", "tokens", "points", "blob"):
            assert keys[name] == ({"values", "blocks"} if compressed else {"values", "offsets"})


def test_small_dev_shm_is_a_clear_error(data_file, monkeypatch):
    class Tiny:
        f_bavail = 10
        f_frsize = 4096

    monkeypatch.setattr(cache.os, "statvfs", lambda path: Tiny())
    before = _segments()
    with pytest.raises(cache.SharedMemoryError, match=r"--shm-size=.*in_memory=True"):
        H5Dataset(data_file, in_memory="node")
    assert _wait_gone(_segments() - before) == set()


_CHILD = """
import os, signal, sys, time
from h5record import H5Dataset
ds = H5Dataset({path!r}, in_memory="node")
print(ds.cache.name, flush=True)
assert ds[3]["id"] == 3
how = {how!r}
if how == "raise":
    raise RuntimeError("training loop failed")
if how in ("sigterm", "sigkill", "wait"):
    time.sleep(60)
"""


def _child(path: str, how: str) -> subprocess.Popen:
    code = textwrap.dedent(_CHILD.format(path=path, how=how))
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("how", ["exit", "raise", "sigterm", "sigkill"])
def test_named_segment_never_leaks(data_file, how):
    proc = _child(data_file, how)
    name = proc.stdout.readline().strip()
    assert name.startswith(cache.NAME_PREFIX), proc.stderr.read()
    assert name in _segments()
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "sigkill":
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _wait_gone({name}) == set()
    assert not os.path.exists(os.path.join(cache.SHM_DIR, name + ".lock"))


def test_second_process_attaches(data_file):
    holder = _child(data_file, "wait")
    try:
        name = holder.stdout.readline().strip()
        assert name in _segments()
        ds = H5Dataset(data_file, in_memory="node")
        assert ds.cache.name == name
        # The holder is the loader: it marked the segment ready; we only attached.
        st_before = os.stat(os.path.join(cache.SHM_DIR, name))
        assert ds[5]["text"] == "row 5 "
        ds.close()
        assert name in _segments()  # the holder still uses it
        assert os.stat(os.path.join(cache.SHM_DIR, name)).st_ino == st_before.st_ino
    finally:
        holder.kill()
        holder.communicate()
    assert _wait_gone({name}) == set()


def test_stale_segment_is_replaced(data_file):
    name = cache.segment_name(data_file)
    seg = os.path.join(cache.SHM_DIR, name)
    with open(seg, "wb") as fh:  # a loader that died half-way: no ready mark
        fh.write(b"\0" * 100_000)
    try:
        ds = H5Dataset(data_file, in_memory="node")
        assert ds.cache.name == name
        assert [ds[i]["id"] for i in range(N)] == list(range(N))
        ds.close()
    finally:
        assert _wait_gone({name}) == set()


def test_changed_file_gets_a_new_segment_name(tmp_path):
    path = tmp_path / "x.h5"
    with H5Writer(path, [Integer("a")], progress=False) as w:
        w.write({"a": 1})
    first = cache.segment_name(str(path))
    time.sleep(0.01)
    with H5Writer(path, [Integer("a")], overwrite=True, progress=False) as w:
        w.write({"a": 2})
    assert cache.segment_name(str(path)) != first


def test_a_frame_header_that_lies_is_damage_before_loading(zstd_file, tmp_path):
    path = str(tmp_path / "damaged.h5")
    with open(zstd_file, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    with h5py.File(path, "r+") as f:
        fields = json.loads(f.attrs["schema"])["fields"]
        R = next(e["codec"]["rows_per_block"] for e in fields if e["name"] == "tokens")
        g = f["fields/tokens"]
        start = int(g["blocks"][3])
        head = g["values"][start : start + 6]
        # Frame header: magic (4), descriptor (1), window byte unless single-segment,
        # then the content size (no dictionary id in h5record frames).
        at = start + (5 if head[4] & 0x20 else 6)
        g["values"][at] = (int(g["values"][at]) + 1) % 256  # 1 more byte than the rows hold
    with pytest.raises(h5record.FormatError, match=f"field 'tokens', row {3 * R}:"):
        H5Dataset(path, in_memory=True)
