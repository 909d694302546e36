"""Checksums (FORMAT.md section 6): written at every commit, append and resume; checked by
``H5Dataset(path, verify=True)`` and ``h5record verify``; damaged copies never read wrong."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import threading
import time
import warnings

import h5py
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import h5record.writer
from h5record import (
    Bytes,
    FormatError,
    H5Dataset,
    H5Writer,
    Image,
    Integer,
    Sequence,
    String,
    _fast,
    checksums,
    codecs,
    spec,
)
from h5record.checksums import FieldSums, StreamHasher, metadata_hash
from h5record.cli import main as cli
from h5record.verify import verify_file
from tests.strategies import assert_row_equal, expected_row, schema_and_rows

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
import fixture_v1


def spec_check(path) -> int:
    """Check every checksum of a file with h5py and xxhash alone, as FORMAT.md states them."""
    blocks = 0
    with h5py.File(path, "r") as f:
        n = int(f.attrs["num_rows"])
        schema_text = f.attrs["schema"]
        text = json.dumps(
            {"num_rows": n, "schema": schema_text, "version": int(f.attrs["h5record_version"])},
            sort_keys=True,
            separators=(",", ":"),
        )
        assert int(f.attrs["metadata_xxh3"]) == xxhash.xxh3_64_intdigest(text.encode())
        for entry in json.loads(schema_text)["fields"]:
            g = f["fields"][entry["name"]]
            if entry["codec"]["id"] == "zstd":
                assert entry["codec"]["checksum"] is True
                k = -(-n // entry["codec"]["rows_per_block"])
                ends = {"blocks": k + 1, "values": int(g["blocks"][k])}
            elif "offsets" in g:
                ends = {"offsets": n + 1, "values": int(g["offsets"][n])}
            else:
                ends = {"values": n}
            if entry.get("nullable"):  # section 10: the validity bytes too
                ends["validity"] = -(-n // 8)
            for name, end in ends.items():
                data = g[name][:end].tobytes()
                table = g[name + "_xxh3"]
                bb = int(table.attrs["block_bytes"])
                want = [xxhash.xxh3_64_intdigest(data[s : s + bb]) for s in range(0, len(data), bb)]
                assert table[()].tolist() == want, (entry["name"], name)
                blocks += len(want)
    return blocks


def read_all(path, rows_expected, schema) -> None:
    with H5Dataset(path, verify=True) as ds:
        assert len(ds) == len(rows_expected)
        for i, r in enumerate(rows_expected):
            assert_row_equal(ds[i], expected_row(schema, r))
        batch = ds[np.arange(len(ds))[::-1]].to_list()
        for got, r in zip(batch, rows_expected[::-1], strict=True):
            assert_row_equal(got, expected_row(schema, r))


def test_stream_hasher_matches_blocks_of_the_whole_stream():
    rng = np.random.default_rng(0)
    data = rng.bytes(5 * 4096 + 123)
    hasher = StreamHasher(4096)
    cuts = sorted(rng.integers(0, len(data), 7).tolist())
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        hasher.update(data[a:b])
    want = [xxhash.xxh3_64_intdigest(data[s : s + 4096]) for s in range(0, len(data), 4096)]
    assert hasher.entries().tolist() == want
    hasher.written()
    assert hasher.stored == 5 and hasher.entries(b"x").tolist() == [
        xxhash.xxh3_64_intdigest(data[5 * 4096 :] + b"x")
    ]


def _blocks(data: bytes, bb: int) -> list[int]:
    return [xxhash.xxh3_64_intdigest(data[s : s + bb]) for s in range(0, len(data), bb)]


@pytest.mark.parametrize("compiled", [True, False])
def test_hash_blocks_equals_xxhash_block_by_block(monkeypatch, compiled):
    if not compiled:  # where xxhash's C function cannot be reached
        monkeypatch.setattr(checksums, "_XXH3", 0)
    data = np.random.default_rng(3).bytes(300_000)
    for n in (0, 1, 17, 240, 241, 4095, 4096, 4097, 3 * 4096 + 5, 300_000):
        for bb in (4096, 65536):
            got = checksums.hash_blocks(data[:n], bb)
            assert got.dtype == np.uint64 and got.tolist() == _blocks(data[:n], bb), (n, bb)


def test_the_compiled_hash_is_in_use():
    # Linux and macOS wheels of xxhash export its C functions: the writer's
    # checksums are hashed without the GIL, on a thread beside HDF5's writes.
    if sys.platform == "win32":
        pytest.skip("xxhash's extension exports no C functions on Windows")
    assert checksums._XXH3


@pytest.mark.parametrize("helper_first", [0, 5, 14])
def test_a_helper_and_the_owner_share_the_pieces(helper_first):
    """Whatever the helper has done when the owner comes (nothing, part, all),
    the owner's hashes are every block's."""
    data = np.frombuffer(np.random.default_rng(4).bytes(40 * 4096 + 99), np.uint8)
    xxh3 = checksums._XXH3
    state = np.zeros(14, np.uint32)  # 14 pieces of 3 blocks for 41 blocks
    helped = np.zeros(41, np.uint64)
    # The helper's first pieces, as if it had run ahead (stopping at a piece
    # taken by the owner, which is what a helper cut short meets).
    state[helper_first:] = 3
    _fast.hash_pieces_helper(data, 4096, helped, state, 3, xxh3)
    assert (state[:helper_first] == 2).all()
    state[helper_first:] = 0
    if helper_first < 14:
        state[helper_first] = 1  # and the helper is on the next one, never to finish it
    out = np.zeros(41, np.uint64)
    _fast.hash_pieces(data, 4096, out, helped, state, 3, xxh3)
    assert out.tolist() == _blocks(data.tobytes(), 4096)
    assert (state[helper_first:] == 3).all()
    # Both at once, from two threads.
    state, helped, out = np.zeros(14, np.uint32), np.zeros(41, np.uint64), np.zeros(41, np.uint64)
    helper = threading.Thread(
        target=_fast.hash_pieces_helper, args=(data, 4096, helped, state, 3, xxh3)
    )
    helper.start()
    _fast.hash_pieces(data, 4096, out, helped, state, 3, xxh3)
    helper.join()
    assert out.tolist() == _blocks(data.tobytes(), 4096)


def test_a_helper_thread_only_when_a_cpu_is_idle(monkeypatch):
    monkeypatch.setattr(checksums.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, spare in ((0.9, True), (1.0, True), (1.6, False), (7.0, False)):
        monkeypatch.setattr(checksums.os, "getloadavg", lambda load=load: (load, load, load))
        assert checksums._load_leaves_a_cpu() is spare, load
    # The idle time of the CPUs decides once it can be read over a window.
    clock, idle = [100.0], [5000.0]
    monkeypatch.setattr(checksums.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(checksums, "_idle_seconds", lambda: idle[0])
    spare = checksums._SpareCpu()
    monkeypatch.setattr(checksums.os, "getloadavg", lambda: (1.5, 1.5, 1.5))
    assert spare() is False  # a first look: the load average's guess
    clock[0] += 1.0
    idle[0] += 0.9  # most of a CPU idle for the last second
    assert spare() is True
    clock[0] += 0.1
    idle[0] += 0.0
    assert spare() is True  # within the window: the last answer
    clock[0] += 1.0
    idle[0] += 0.1  # busy CPUs
    assert spare() is False
    clock[0] += 1.0
    idle[0] += 0.1
    spare.add_helper_cpu(0.8)  # ... busy with this process's own helper
    assert spare() is True
    monkeypatch.setattr(checksums, "_idle_seconds", lambda: None)
    clock[0] += 1.0
    assert spare() is False  # unreadable: the load average's guess again


def test_a_helper_only_where_hashing_is_a_large_share_of_the_writer(tmp_path, monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(checksums.time, "perf_counter", lambda: clock[0])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        dset = f.create_dataset("values", (0,), maxshape=(None,), chunks=(4096,), dtype="u1")
        stream = checksums.FieldSums([dset])._stream(dset)
        clock[0] += 0.1  # 100 ms of converting rows since the writer began
        assert stream.hashing_share(100 << 20) == pytest.approx((100 << 20) / 1e10 / 0.1)
        clock[0] += 0.5  # a writer slowed by its conversions: 0.2% of its time
        assert stream.hashing_share(10 << 20) < checksums.HELPER_SHARE
        clock[0] += 0.002  # a writer that only copies: 50%
        assert stream.hashing_share(10 << 20) > checksums.HELPER_SHARE


def _counting(method, calls: list):
    def counted(self, *args):
        calls.append(self)
        return method(self, *args)

    return counted


def test_appends_hashed_on_threads_and_a_failed_append(tmp_path, monkeypatch):
    """Appends hashed in many pieces by a thread and the appender give the blocks of
    the stream; an append whose write fails leaves the checksums as they were."""
    monkeypatch.setattr(checksums, "THREAD_BYTES", 4096)
    monkeypatch.setattr(checksums, "PIECE_BYTES", 4096)
    monkeypatch.setattr(checksums, "HELPER_SHARE", 0.0)
    monkeypatch.setattr(checksums._SpareCpu, "__call__", lambda self: True)
    helper_cpu = checksums._spare_cpu.helper_cpu
    helpers = []
    monkeypatch.setattr(checksums._Append, "help", _counting(checksums._Append.help, helpers))
    rng = np.random.default_rng(5)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        dset = f.create_dataset("values", (0,), maxshape=(None,), chunks=(1 << 16,), dtype="<i4")
        sums = checksums.FieldSums([dset])
        for k in range(12):
            data = rng.integers(0, 1 << 30, int(rng.integers(0, 200_000)), dtype=np.int32)
            try:
                append = sums.begin(dset, data, dset.shape[0])
                if k % 5 == 4:
                    raise OSError("disk full")
                dset.resize((dset.shape[0] + len(data),))
                dset[dset.shape[0] - len(data) :] = data
                FieldSums.end(append)  # only once the append succeeded
            except OSError:
                assert sums.streams["values"].hasher.length == dset.shape[0] * 4
            if k % 3 == 2:
                sums.commit([dset])
        sums.commit([dset])
        assert len(helpers) >= 5
        deadline = time.monotonic() + 5  # a helper may still finish its last piece
        while checksums._spare_cpu.helper_cpu == helper_cpu and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checksums._spare_cpu.helper_cpu > helper_cpu  # what they took is counted
        stream = dset[()].tobytes()
        table = f["values" + spec.CHECKSUM_SUFFIX]
        assert int(table.attrs["block_bytes"]) == spec.CHECKSUM_BLOCK_BYTES
        assert table[()].tolist() == _blocks(stream, spec.CHECKSUM_BLOCK_BYTES)


@pytest.mark.parametrize("spare_cpu", [False, True])
def test_columns_joined_by_the_writer_are_hashed_as_they_are_joined(
    tmp_path, monkeypatch, spare_cpu
):
    """write_batch columns checked row by row are joined and hashed in one pass, or, where a CPU is
    idle, joined and left to a helper thread; the appender then hashes only the
    ends of each append, and every table is the spec's."""
    if not checksums._XXH3:
        pytest.skip("xxhash's C function is not exported here")
    monkeypatch.setattr(checksums._SpareCpu, "__call__", lambda self: spare_cpu)
    monkeypatch.setattr(checksums, "THREAD_BYTES", 4096)  # a helper for every append
    monkeypatch.setattr(checksums, "PIECE_BYTES", 4096)
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 1 << 20)  # batches staged together
    hashed_later, helpers = [], []
    hash_blocks = checksums.hash_blocks

    def counted(data, *args):
        hashed_later.append(memoryview(data).nbytes)
        return hash_blocks(data, *args)

    monkeypatch.setattr(checksums, "hash_blocks", counted)
    monkeypatch.setattr(checksums._Append, "help", _counting(checksums._Append.help, helpers))
    rng = np.random.default_rng(9)
    schema = [String("text"), Sequence("tokens", dtype="int32"), Bytes("blob")]
    path = tmp_path / "j.h5"
    total = 0
    with H5Writer(path, schema, progress=False) as w:
        for n in (1, 700, 3000, 0, 4000, 2500):  # batches that end inside blocks
            w.write_batch(
                {
                    "text": ["é" * int(k) for k in rng.integers(0, 40, n)],
                    "tokens": [np.arange(k, dtype=np.int32) for k in rng.integers(0, 90, n)],
                    "blob": [bytes(int(k)) for k in rng.integers(0, 60, n)],
                }
            )
            total += n
            if n == 3000:
                w.commit()
    assert spec_check(path) > 3 * 5
    with h5py.File(path, "r") as f:
        values = sum(f["fields"][name]["values"].nbytes for name in ("text", "tokens", "blob"))
    # Only the offsets (8 bytes a row) and values' partial blocks are hashed after a join.
    assert sum(hashed_later) < total * 8 * 3 + 6 * 3 * spec.CHECKSUM_BLOCK_BYTES < values
    # A helper for each append of values left to one, and of offsets
    assert len(helpers) >= 6 if spare_cpu else not helpers
    assert verify_file(str(path)).ok


@settings(max_examples=60, deadline=None)
@given(
    before=st.integers(0, 20_000),
    sizes=st.lists(st.lists(st.integers(0, 9_000), max_size=4), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_joins_into_one_buffer_hash_every_block_they_fill(tmp_path_factory, before, sizes, seed):
    """Several joins into one buffer, each past the bytes of the earlier ones (as
    write_batch stages its columns), hash every whole block of the stream that
    they fill, blocks across two joins included; the appender takes the hashes."""
    if not checksums._XXH3:
        pytest.skip("xxhash's C function is not exported here")
    rng = np.random.default_rng(seed)
    bb = 4096
    path = tmp_path_factory.mktemp("j") / "j.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("values", (0,), maxshape=(None,), chunks=(bb,), dtype="u1")
        sums = FieldSums([dset])
        sums.streams["values"].hasher = StreamHasher(bb)
        first = np.frombuffer(rng.bytes(before), np.uint8)
        dset.resize((before,))
        dset[:] = first
        sums.streams["values"].hasher.update(first)
        joins = [[rng.bytes(n) for n in group] for group in sizes]
        want = b"".join(b"".join(group) for group in joins)
        out = np.empty(len(want), np.uint8)
        at, joined = 0, None
        for group in joins:
            n = sum(map(len, group))
            joined = sums.join(dset, group, out[: at + n], at, joined)
            at += n
        assert out.tobytes() == want
        head, hashes = FieldSums.hashed(joined)
        whole = (len(want) - head) // bb if len(want) > head else 0
        assert head == -before % bb
        assert hashes.tolist() == _blocks(want[head : head + whole * bb], bb)
        append = sums.begin(dset, out, before, (head, hashes))
        assert append.hashed or len(want) < head  # taken as they are, where they fill
        dset.resize((before + len(want),))
        dset[before:] = out
        FieldSums.end(append)
        sums.commit([dset])
        assert f["values_xxh3"][()].tolist() == _blocks(first.tobytes() + want, bb)


def test_join_buffers_refuses_a_start_past_the_first_block():
    out = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="end past start"):
        _fast.join_buffers([b"ab"], out[:6], 0, 2, np.empty(3, np.uint64), 1, 4)
    with pytest.raises(ValueError, match="start must lie in out"):
        _fast.join_buffers([], out, start=9)
    _fast.join_buffers([b"cd"], out[:6], 3, 2, np.empty(1, np.uint64), checksums._XXH3 or 1, 4)
    assert out[4:6].tobytes() == b"cd"


def test_write_batch_columns_are_written_in_few_large_appends(tmp_path, monkeypatch):
    """Small write_batch calls are joined into one buffer per variable-length field
    and written once it fills FLUSH_BYTES (or at a commit): not one append each."""
    from h5record.writer import _ChunkAppender

    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 100_000)
    appends = []
    append = _ChunkAppender.append

    def counted(self, data, *args):
        appends.append((self.dset.name, len(data)))
        return append(self, data, *args)

    monkeypatch.setattr(_ChunkAppender, "append", counted)
    path = tmp_path / "s.h5"
    schema = [Sequence("tokens", dtype="int32"), Integer("label")]
    with H5Writer(path, schema, progress=False) as w:
        for k in range(100):  # 100 batches of 4 rows of 100 tokens: 1,600 bytes each
            w.write_batch({"tokens": [np.full(100, k, np.int32)] * 4, "label": [k] * 4})
            if k == 49:
                w.commit()
    values = [n for name, n in appends if name == "/fields/tokens/values"]
    assert values == [50 * 400, 50 * 400]  # one append at the commit, one at the close
    assert [n for name, n in appends if name == "/fields/label/values"] == [200, 200]
    with H5Dataset(path, verify=True) as ds:
        assert [int(ds[i]["tokens"][0]) for i in range(0, 400, 4)] == list(range(100))
    assert verify_file(str(path)).ok


def test_write_batch_keeps_no_reference_to_the_callers_arrays(tmp_path, monkeypatch):
    """The caller may refill its arrays once write_batch returns, though the rows are
    written later; large columns of fixed-size rows are written at once instead."""
    from h5record.writer import STAGE_COPY_BYTES, _ChunkAppender

    appends = []
    append = _ChunkAppender.append

    def counted(self, data, *args):
        appends.append(self.dset.name)
        return append(self, data, *args)

    monkeypatch.setattr(_ChunkAppender, "append", counted)
    side = int((STAGE_COPY_BYTES // 3) ** 0.5) + 1  # an image of more than the copy limit
    tokens = np.zeros((4, 50), np.int32)
    labels = np.zeros(4, np.int64)
    images = np.zeros((4, side, side, 3), np.uint8)
    path = tmp_path / "r.h5"
    schema = [Sequence("tokens", dtype="int32"), Integer("label"), Image(side, side, 3, "image")]
    with H5Writer(path, schema, progress=False) as w:
        for k in range(5):
            tokens[:], labels[:], images[:] = k, k, k
            w.write_batch({"tokens": list(tokens), "label": labels, "image": images})
    assert appends.count("/fields/image/values") == 5
    assert appends.count("/fields/label/values") == 1
    with H5Dataset(path) as ds:
        for i in range(20):
            row = ds[i]
            assert row["label"] == i // 4 and set(row["tokens"].tolist()) == {i // 4}
            assert row["image"].min() == row["image"].max() == i // 4


def test_rows_of_empty_values_count_in_the_bound(tmp_path, monkeypatch):
    """A field of empty (or null) values holds no value bytes, but its rows' offsets
    count: they are written too once they fill FLUSH_BYTES."""
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 100_000)
    schema = [String("note", nullable=True), Integer("label")]
    with H5Writer(tmp_path / "e.h5", schema, progress=False, commit_seconds=None) as w:
        for _ in range(50):
            w.write_batch({"note": [None] * 1000, "label": np.arange(1000)})
            rows = [getattr(column, "column", column).staged_rows for column in w._columns]
            assert 8 * sum(rows) < 100_000 + 16 * 1000  # their offsets and labels
    with H5Dataset(tmp_path / "e.h5") as ds:
        assert len(ds) == 50_000 and ds[49_999]["note"] is None


def test_buffers_of_fields_that_held_rows_once_are_freed(tmp_path, monkeypatch):
    """The buffers kept for reuse take at most twice FLUSH_BYTES beside the rows held,
    however many fields once held a large batch."""
    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 1 << 20)
    schema = [Bytes(f"b{k}") for k in range(16)]
    with H5Writer(tmp_path / "c.h5", schema, progress=False) as w:
        for k in range(16):  # field k gets 1.9 MiB once, the others nothing
            w.write_batch({f"b{j}": [bytes(1_900_000 if j == k else 0)] for j in range(16)})
            buffers = sum(column.stage_bytes for column in w._columns)
            held = sum(column.held for column in w._columns)
            assert buffers <= 2 * (1 << 20) + 2 * held + 2_000_000
    with H5Dataset(tmp_path / "c.h5") as ds:
        assert [len(ds[k][f"b{k}"]) for k in range(16)] == [1_900_000] * 16


def test_rows_held_by_write_batch_stay_bounded_across_fields(tmp_path, monkeypatch):
    """However many fields, the rows write_batch holds back stay under FLUSH_BYTES
    plus one batch: the fields holding the most are written first."""
    from h5record import Float

    monkeypatch.setattr(h5record.writer, "FLUSH_BYTES", 200_000)
    schema = [Float(f"f{k}") for k in range(40)] + [Sequence("tokens", dtype="int32")]
    rng = np.random.default_rng(2)
    path = tmp_path / "b.h5"
    batch_bytes, written = 1000 * (40 * 4 + 64 * 4), []
    with H5Writer(path, schema, progress=False) as w:
        for k in range(60):
            columns = {f"f{j}": rng.random(1000) for j in range(40)}
            columns["tokens"] = list(rng.integers(0, 9, (1000, 64), dtype=np.int32))
            w.write_batch(columns)
            written.append(columns["f7"][-1])
            held = sum(column.held for column in w._columns)
            assert held < 200_000 + batch_bytes
            if k == 10:
                assert held  # rows are held back at all
    with H5Dataset(path, verify=True) as ds:
        assert len(ds) == 60_000
        assert [ds[1000 * k + 999]["f7"] for k in range(60)] == pytest.approx(written)


@pytest.mark.parametrize("dtype", ["<i4", ">i4", "<f4"])
def test_joined_rows_hashed_for_a_dataset_of_another_dtype(tmp_path, dtype):
    """Rows joined in the field's dtype and converted to the dataset's (a file not
    written by h5record) are hashed as the dataset holds them."""
    from h5record.writer import _ChunkAppender, _join_hashed

    with h5py.File(tmp_path / "d.h5", "w") as f:
        dset = f.create_dataset("values", (0,), maxshape=(None,), chunks=(4096,), dtype=dtype)
        sums = checksums.FieldSums([dset])
        parts = [np.arange(k * 50_000, (k + 1) * 50_000, dtype="<i4") for k in range(2)]
        flat, hashed = _join_hashed(parts, Sequence("s", dtype="int32"), sums, dset)
        assert (hashed is not None) == (dtype == "<i4")
        _ChunkAppender(dset).append(flat, sums, hashed)
        sums.commit([dset])
        stored = np.ascontiguousarray(dset[()]).tobytes()
        assert f["values_xxh3"][()].tolist() == _blocks(stored, spec.CHECKSUM_BLOCK_BYTES)


def test_a_join_that_fails_writes_nothing_of_its_rows(tmp_path, monkeypatch):
    """Out of memory while a flush joins the rows given one by one: the commit on
    the way out of the ``with`` block writes every row given, once, with its checksums."""
    import h5record.writer as writer

    join, calls = writer._join_hashed, []

    def failing(parts, field, sums=None, dset=None):
        calls.append(field.name)
        if calls.count("text") == 2:
            raise MemoryError("the joined column")
        return join(parts, field, sums, dset)

    monkeypatch.setattr(writer, "_join_hashed", failing)
    path = tmp_path / "f.h5"
    schema = [String("text"), Sequence("tokens", dtype="int32")]
    with pytest.raises(MemoryError), H5Writer(path, schema, progress=False) as w:
        for letter in "ab":
            for _ in range(5):
                w.write({"text": letter * 10, "tokens": np.arange(3, dtype=np.int32)})
            w.flush()
    partial = f"{path}.partial"
    spec_check(partial)
    with H5Dataset(partial, partial=True, verify=True) as ds:
        assert [ds[i]["text"] for i in range(len(ds))] == ["a" * 10] * 5 + ["b" * 10] * 5


@pytest.mark.parametrize("spare_cpu", [False, True])
@pytest.mark.parametrize("failing", ["tokens", "zstd lengths"])
def test_a_batch_whose_join_fails_leaves_every_column_as_it_was(
    tmp_path, monkeypatch, spare_cpu, failing
):
    """write_batch joins its columns into the writer's buffers before it takes any of
    them in: out of memory in a later column's join (or a zstd field's copy of
    its row lengths) leaves the earlier columns' rows out too, and the writer
    goes on with the next batch. The same whether the join hashes the values
    or leaves them to a helper thread."""
    monkeypatch.setattr(checksums._SpareCpu, "__call__", lambda self: spare_cpu)
    token_joins = 0

    def out_of_memory_at_the_second_batchs_tokens(parts: list) -> None:
        nonlocal token_joins
        if failing == "tokens" and parts and getattr(parts[0], "dtype", None) == np.int32:
            token_joins += 1
            if token_joins == 2:  # after the same batch's text was joined
                raise MemoryError("the joined column")

    class LengthsThatCannotBeCopied(np.ndarray):
        def copy(self, *args, **kwargs):
            raise MemoryError("the zstd field's row lengths")

    z_batches = 0
    convert_column = String.convert_column

    def failing_lengths(self, values, first_row):  # a zstd field keeps a copy of them
        nonlocal z_batches
        flat, lengths = convert_column(self, values, first_row)
        if self.name == "z":
            z_batches += 1
            if failing == "zstd lengths" and z_batches == 2:
                lengths = lengths.view(LengthsThatCannotBeCopied)
        return flat, lengths

    monkeypatch.setattr(String, "convert_column", failing_lengths)

    join, join_buffers = FieldSums.join, h5record.writer.join_buffers

    def failing_join(self, dset, parts, *args, **kwargs):  # hashing as it joins
        out_of_memory_at_the_second_batchs_tokens(parts)
        return join(self, dset, parts, *args, **kwargs)

    def failing_join_buffers(parts, *args, **kwargs):  # leaving it to a helper
        out_of_memory_at_the_second_batchs_tokens(parts)
        return join_buffers(parts, *args, **kwargs)

    monkeypatch.setattr(FieldSums, "join", failing_join)
    monkeypatch.setattr(h5record.writer, "join_buffers", failing_join_buffers)

    def batch(letter, n):
        tokens = [np.full(n, ord(letter), np.int32)] * 3
        return {"text": [letter * n] * 3, "tokens": tokens, "label": [n] * 3, "z": [letter] * 3}

    path = tmp_path / "f.h5"
    schema = [
        String("text"),
        Sequence("tokens", dtype="int32"),
        Integer("label"),
        String("z", compression="zstd"),
    ]
    with H5Writer(path, schema, progress=False) as w:
        w.write_batch(batch("a", 40_000))  # rows that fill checksum blocks
        with pytest.raises(MemoryError):
            w.write_batch(batch("b", 30_000))
        w.write_batch(batch("c", 20_000))
    spec_check(path)
    assert verify_file(str(path)).ok
    with H5Dataset(path, verify=True) as ds:
        rows = [ds[i] for i in range(len(ds))]
    assert [r["text"] for r in rows] == ["a" * 40_000] * 3 + ["c" * 20_000] * 3
    assert [r["label"] for r in rows] == [40_000] * 3 + [20_000] * 3
    assert [r["tokens"].tolist() for r in rows] == [[97] * 40_000] * 3 + [[99] * 20_000] * 3
    assert [r["z"] for r in rows] == ["a"] * 3 + ["c"] * 3


# -- round trips ----------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    data=schema_and_rows(with_codecs=True, max_rows=30),
    commit_every=st.sampled_from([None, 1, 3, 7]),
    cut=st.integers(0, 30),
)
def test_round_trip_every_field_and_codec_commits_and_appends(
    tmp_path_factory, data, commit_every, cut
):
    schema, rows = data
    cut = min(cut, len(rows))
    path = tmp_path_factory.mktemp("c") / "c.h5"
    with H5Writer(path, schema, progress=False, commit_every=commit_every) as w:
        for r in rows[:cut]:
            w.write(r)
    spec_check(path)
    with H5Writer(path, mode="a", progress=False, commit_every=commit_every) as w:
        for r in rows[cut:]:
            w.write(r)
    spec_check(path)
    read_all(path, rows, schema)
    assert verify_file(str(path)).ok


SCHEMA = [
    String("text"),
    Integer("label"),
    Sequence("tokens", dtype="int32"),
    Bytes("gz", compression="gzip"),
    String("lz", compression="lzf"),
    String("z", compression=codecs.zstd(level=1, block_bytes=2048)),
    Sequence("zt", dtype="uint16", compression="zstd"),
    Image(3, 8, 8, "img"),
]


def row(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "text": f"row {i} " * (i % 40),
        "label": i,
        "tokens": rng.integers(-5, 5, i % 60, dtype=np.int32),
        "gz": rng.bytes(i % 50),
        "lz": "lzf " * (i % 30),
        "z": f"zstd text {i % 17} " * (i % 30),
        "zt": np.arange(i % 40, dtype=np.uint16),
        "img": rng.integers(0, 255, (3, 8, 8), dtype=np.uint8),
    }


def write_rows(path, start, stop, **kwargs) -> None:
    with H5Writer(path, SCHEMA, progress=False, **kwargs) as w:
        assert w.num_rows == start
        for i in range(start, stop):
            w.write(row(i))


def check_file(path, n) -> None:
    assert spec_check(path) > 0
    with H5Dataset(path, verify=True) as ds:
        assert len(ds) == n
        for i in (0, n // 2, n - 1):
            assert_row_equal(ds[i], expected_row(SCHEMA, row(i)))
        got = ds[np.arange(n)].to_list()
    for i in range(n):
        assert_row_equal(got[i], expected_row(SCHEMA, row(i)))


def test_commits_resume_and_append_continue_the_checksums(tmp_path):
    # Rows of several checksum blocks, so that resume and append continue a
    # table whose last block is partly filled.
    path = tmp_path / "r.h5"
    write_rows(path, 0, 1500, commit_every=100)
    check_file(path, 1500)
    with pytest.raises(RuntimeError), H5Writer(path.with_name("p.h5"), SCHEMA, progress=False) as w:
        for i in range(900):
            w.write(row(i))
            if i == 700:
                w.commit()
        raise RuntimeError("stop")  # leaves p.h5.partial with its commit
    partial = path.with_name("p.h5.partial")
    spec_check(partial)
    with H5Writer(path.with_name("p.h5"), SCHEMA, progress=False, resume=True) as w:
        assert w.num_rows == 900
        for i in range(900, 2100):
            w.write(row(i))
            if i % 333 == 0:
                w.commit()
    check_file(path.with_name("p.h5"), 2100)
    write_rows(path, 1500, 1501, mode="a")
    write_rows(path, 1501, 2600, mode="a", commit_every=250)
    check_file(path, 2600)
    assert cli(["verify", str(path)]) == 0


def test_files_without_checksums_stay_without(tmp_path):
    path = tmp_path / "n.h5"
    write_rows(path, 0, 50, checksums=False)
    write_rows(path, 50, 80, mode="a")
    with h5py.File(path) as f:
        assert "metadata_xxh3" not in f.attrs
        names = []
        f.visit(names.append)
        assert not [n for n in names if n.endswith("_xxh3")]
        assert "checksum" not in f.attrs["schema"]
    with pytest.warns(UserWarning, match="no checksums"):
        ds = H5Dataset(path, verify=True)
    assert_row_equal(ds[79], expected_row(SCHEMA, row(79)))
    ds.close()


def test_v1_fixture_reads_and_verifies_its_structure(capsys):
    with pytest.warns(UserWarning, match="no checksums"):
        ds = H5Dataset(fixture_v1.PATH, verify=True)
    assert len(ds[np.arange(len(ds))]) == fixture_v1.ROWS
    for i in range(len(ds)):
        ds[i]
    assert cli(["verify", fixture_v1.PATH]) == 0
    assert "no checksums" in capsys.readouterr().out


def test_default_reads_take_no_verify_path(tmp_path):
    path = tmp_path / "d.h5"
    write_rows(path, 0, 10)
    assert type(H5Dataset(path)) is H5Dataset
    assert type(H5Dataset(path, verify=False)) is H5Dataset
    ds = H5Dataset(path, verify=True)
    assert isinstance(ds, H5Dataset) and ds.verify
    ds[3]
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers under spawn
    assert_row_equal(clone[4], expected_row(SCHEMA, row(4)))


# -- damage -------------------------------------------------------------------


def flip(path, dataset: str, at: int = 96, chunk: int = 0) -> None:
    """Flip one bit ``at`` bytes into a chunk of a dataset, as stored."""
    with h5py.File(path, "r") as f:
        d = f[dataset]
        info = d.id.get_chunk_info(chunk)
        address, size = info.byte_offset, info.size
    with open(path, "r+b") as fh:
        fh.seek(address + min(at, size - 1))
        b = fh.read(1)
        fh.seek(address + min(at, size - 1))
        fh.write(bytes([b[0] ^ 0x08]))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "clean.h5"
    write_rows(path, 0, 1200, commit_every=400)
    return path


@pytest.mark.parametrize(
    ("dataset", "field"),
    [
        ("fields/text/values", "text"),
        ("fields/text/offsets", "text"),
        ("fields/label/values", "label"),
        ("fields/tokens/values", "tokens"),
        ("fields/img/values", "img"),
        ("fields/gz/values", "gz"),
        ("fields/lz/offsets", "lz"),
        ("fields/z/values", "z"),
        ("fields/z/blocks", "z"),
        ("fields/zt/values", "zt"),
    ],
)
def test_a_flipped_bit_is_found_by_verify_and_the_command(tmp_path, clean, dataset, field):
    path = tmp_path / "bad.h5"
    shutil.copy(clean, path)
    flip(path, dataset)
    with H5Dataset(path, verify=True) as ds, pytest.raises(FormatError) as err:
        ds[np.arange(len(ds))].columns
    assert str(path) in str(err.value) and f"field {field!r}" in str(err.value)
    assert "checksum" in str(err.value) or "damaged" in str(err.value)
    report = verify_file(str(path))
    assert not report.ok and any(f"field {field!r}" in d for d in report.damage)


def test_a_changed_byte_in_unused_chunk_space_is_reported(tmp_path, clean):
    """The space of a last chunk past its data holds no row, yet a change there is
    a sign of a failing disk: verify names the dataset; reads are unaffected."""
    path = tmp_path / "pad.h5"
    shutil.copy(clean, path)
    assert verify_file(str(path)).ok
    with h5py.File(path, "r") as f:
        d = f["fields/text/values"]
        last = (d.shape[0] - 1) // d.chunks[0] * d.chunks[0]
        info = d.id.get_chunk_info_by_coord((last,))
        end = info.byte_offset + (d.shape[0] - last)
        assert end + 10 < info.byte_offset + info.size  # there is unused space
    with open(path, "r+b") as fh:
        fh.seek(end + 10)
        fh.write(b"\x01")
    report = verify_file(str(path))
    assert [d for d in report.damage if "field 'text', dataset 'values'" in d], report.damage
    assert "past the end of its data are not zero" in report.damage[0]
    assert verify_file(str(path), quick=True).ok
    with H5Dataset(path, verify=True) as ds:
        assert_row_equal(ds[len(ds) - 1], expected_row(SCHEMA, row(len(ds) - 1)))


def test_datasets_added_by_others_are_left_to_them(tmp_path, clean):
    """verify judges the unused chunk space of h5record's own datasets only."""
    path = tmp_path / "extra.h5"
    shutil.copy(clean, path)
    with h5py.File(path, "r+") as f:
        text = h5py.string_dtype()
        f.create_dataset("notes", data=["a", "bc"], dtype=text, chunks=(64,), maxshape=(None,))
        pairs = np.zeros(3, [("a", "<i4"), ("b", "<f8")])
        f["fields/text"].create_dataset("pairs", data=pairs, chunks=(16,), maxshape=(None,))
    assert verify_file(str(path)).ok


def test_zstd_frames_check_themselves_without_verify(tmp_path, clean):
    path = tmp_path / "z.h5"
    shutil.copy(clean, path)
    flip(path, "fields/z/values", at=3000)
    with H5Dataset(path) as ds, pytest.raises(FormatError, match="'z'.*zstd frame .* not decode"):
        ds[np.arange(len(ds))].column("z")


def test_the_command_reports_every_damaged_range_and_goes_on(tmp_path, clean, capsys):
    path = tmp_path / "many.h5"
    shutil.copy(clean, path)
    flip(path, "fields/text/values", at=10)
    flip(path, "fields/text/values", at=150_000)
    flip(path, "fields/label/values", at=5000)
    flip(path, "fields/z/values", at=100)
    assert cli(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    damaged = [line for line in out.splitlines() if "DAMAGED" in line]
    assert sum("'text', dataset 'values': checksum block 0 " in x for x in damaged) == 1
    assert sum("'text', dataset 'values': checksum block 2 " in x for x in damaged) == 1
    assert sum("'label', dataset 'values'" in x for x in damaged) == 1
    assert sum("'z', dataset 'values'" in x for x in damaged) == 1
    assert any("field 'z': row" in x and "do not decode" in x for x in damaged)
    assert "1,200 rows checked" in out
    assert cli(["verify", "--quick", str(path)]) == 1  # the zstd frame is structure too
    assert "checksum block" not in capsys.readouterr().out


def test_damaged_metadata_is_refused_at_open(tmp_path, clean):
    path = tmp_path / "m.h5"
    shutil.copy(clean, path)
    with h5py.File(path, "r+") as f:
        f.attrs["num_rows"] = np.int64(1199)
    with pytest.raises(FormatError, match=r"m\.h5.*metadata.*checksum"):
        H5Dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["num_rows"] = np.int64(1200)
        assert f.attrs["metadata_xxh3"] == metadata_hash(1200, f.attrs["schema"], 1)
    H5Dataset(path).close()


@pytest.mark.parametrize("in_memory", [True, "process"])
def test_in_memory_datasets_check_everything_once(tmp_path, clean, in_memory):
    path = tmp_path / "mem.h5"
    shutil.copy(clean, path)
    with H5Dataset(path, verify=True, in_memory=in_memory) as ds:
        assert_row_equal(ds[5], expected_row(SCHEMA, row(5)))
    flip(path, "fields/tokens/values", at=20)
    with pytest.raises(FormatError, match="'tokens'"):
        H5Dataset(path, verify=True, in_memory=in_memory)


def _damage(rng: np.random.Generator, data: bytearray) -> bytearray:
    kind = rng.integers(0, 3)
    if kind == 0:  # bit flips
        for at in rng.integers(0, len(data), rng.integers(1, 8)):
            data[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # a zeroed run, as a lost page
        at = int(rng.integers(0, len(data)))
        data[at : at + int(rng.integers(1, 8192))] = bytes(len(data[at : at + 8192]))
    else:  # truncation
        del data[int(rng.integers(0, len(data))) :]
    return data


@pytest.mark.parametrize(
    "trials", [25, pytest.param(1000, marks=pytest.mark.slow)], ids=["25", "1000"]
)
def test_damaged_copies_never_read_wrong_rows(tmp_path, trials):
    """Damaged copies: every row read with verify=True is right, or an error says why,
    and the command reports every copy that changed."""
    path = tmp_path / "small.h5"
    n = 300
    write_rows(path, 0, n, commit_every=100)
    truth = [expected_row(SCHEMA, row(i)) for i in range(n)]
    original = path.read_bytes()
    chunks = _chunk_spans(path)
    rng = np.random.default_rng(20240611)
    results = {"wrong": 0, "refused": 0, "clean": 0, "caught_by_command": 0}
    for trial in range(trials):
        bad = tmp_path / f"t{trial}.h5"
        damaged = bytes(_damage(rng, bytearray(original)))
        bad.write_bytes(damaged)
        wrong = refused = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = H5Dataset(bad, verify=True)
            with ds:
                for i in rng.permutation(n)[:40].tolist():
                    try:
                        got = ds[i]
                    except FormatError:
                        refused = True
                        continue
                    wrong |= any(not _same(got[k], v) for k, v in truth[i].items())
                try:
                    batch = ds[np.arange(n)].to_list()
                    wrong |= any(
                        not _same(got[k], v)
                        for got, want in zip(batch, truth, strict=True)
                        for k, v in want.items()
                    )
                except FormatError:
                    refused = True
        except (FormatError, OSError):
            refused = True
        report = verify_file(str(bad))
        results["wrong"] += wrong
        results["refused"] += refused
        results["clean"] += not refused
        results["caught_by_command"] += not report.ok
        # A copy changed in its chunks (unused chunk space too) or cut short is
        # reported; what the command passes reads back right.
        if len(damaged) != len(original) or _touches(damaged, original, chunks):
            assert not report.ok, trial
        assert report.ok or refused or not wrong
        if report.ok:
            assert not refused, (trial, report)
        os.unlink(bad)
    assert results["wrong"] == 0, results


def _chunk_spans(path) -> np.ndarray:
    """(start, stop) of every chunk of every chunked dataset of a file, as stored."""
    spans = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.chunks is not None:
            for k in range(obj.id.get_num_chunks()):
                info = obj.id.get_chunk_info(k)
                spans.append((info.byte_offset, info.byte_offset + info.size))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return np.array(spans, np.int64)


def _touches(damaged: bytes, original: bytes, spans: np.ndarray) -> bool:
    """Whether a byte of ``damaged`` differs from ``original`` inside a chunk."""
    changed = np.flatnonzero(np.frombuffer(damaged, np.uint8) != np.frombuffer(original, np.uint8))
    return bool(((changed[:, None] >= spans[:, 0]) & (changed[:, None] < spans[:, 1])).any())


def _same(a, b) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b
