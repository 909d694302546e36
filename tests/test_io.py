"""I/O kernels and the cold read path: prefetching, residency, the device probe, threads."""

from __future__ import annotations

import mmap
import os
import threading

import h5py
import numpy as np
import pytest

from h5record import (
    Array,
    Bytes,
    FormatError,
    H5Dataset,
    H5Writer,
    Integer,
    SchemaError,
    String,
    _io,
)
from h5record._fast import Decoder, ForeignThreadError

PAGE = mmap.PAGESIZE


@pytest.fixture
def mapped(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(64 * PAGE))
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    yield path, m
    m.close()


def _ranges(*pairs):
    return np.array(pairs, np.int64).reshape(-1, 2)


def test_willneed_merges_touching_ranges_and_sorts(mapped):
    _, m = mapped
    # Three ranges on pages 0-1 (unsorted, overlapping) make one request; page 10 another.
    ranges = _ranges((PAGE + 5, 10), (10 * PAGE, 3), (0, PAGE + 1), (100, 5))
    assert _io.willneed(m, ranges) == 2
    assert _io.willneed(m, ranges, gap=16 * PAGE) == 1


def test_willneed_splits_large_requests(mapped):
    # Linux drops what exceeds its read-ahead limit in one call: long spans are cut up.
    _, m = mapped
    assert _io.willneed(m, _ranges((0, 64 * PAGE))) == -(-64 * PAGE // (128 * 1024))


def test_willneed_ignores_ranges_outside_the_map(mapped):
    _, m = mapped
    assert _io.willneed(m, _ranges((-5, 3), (64 * PAGE, 10), (10, 0))) == 0
    assert _io.willneed(m, np.empty((0, 2), np.int64)) == 0


def test_willneed_refuses_a_buffer_that_is_not_a_map():
    with pytest.raises(ValueError, match="page-aligned"):
        _io.willneed(np.zeros(10, np.uint8)[1:], _ranges((0, 1)))
    with pytest.raises(ValueError, match="shape"):
        _io.willneed(mmap.mmap(-1, PAGE), np.zeros((1, 3), np.int64))


def test_resident_after_eviction_and_after_reading(mapped):
    path, m = mapped
    ranges = _ranges((0, 10), (20 * PAGE, PAGE), (63 * PAGE, 7))
    path.read_bytes()  # cached, but not mapped: pages mapped by a process are not evicted
    assert _io.resident(m, ranges, sample=3)
    _evict(path)
    if _io.resident(m, ranges, sample=3):
        pytest.skip("this filesystem keeps the pages cached (e.g. tmpfs)")
    # Memory that is not a file map is always resident.
    assert _io.resident(np.zeros(100, np.uint8)[1:], ranges)


def test_pread_random_reads_every_offset(mapped):
    path, _ = mapped
    fd = os.open(path, os.O_RDONLY)
    try:
        offsets = np.arange(0, 60 * PAGE, PAGE, dtype=np.int64)
        for threads in (1, 4, 32):
            assert _io.pread_random(fd, offsets, PAGE, threads) == len(offsets) * PAGE
        assert _io.pread_random(fd, offsets[:0], PAGE) == 0
        with pytest.raises(ValueError):
            _io.pread_random(fd, offsets, PAGE, 0)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        _io.pread_random(fd, offsets, PAGE, 2)  # closed descriptor


def _evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(params=[None, "zstd", "lzf"])
def cold_file(tmp_path, request):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "cold.h5")
    rows = [
        {
            "text": f"row {i} " + "x" * int(rng.integers(0, 300)),
            "blob": rng.bytes(int(rng.integers(0, 9000))),
            "label": i,
        }
        for i in range(3000)
    ]
    schema = [String("text"), Bytes("blob"), Integer("label")]
    with H5Writer(path, schema, compression=request.param, progress=False) as w:
        w.write_batch({k: [r[k] for r in rows] for k in rows[0]})
    return path, rows


def test_cold_batches_and_rows_read_back_exactly(cold_file):
    path, rows = cold_file
    rng = np.random.default_rng(2)
    _evict(path)
    ds = H5Dataset(path)
    for _ in range(3):
        idx = rng.integers(0, len(rows), 64).tolist()
        assert ds[idx].to_list() == [rows[i] for i in idx]
    for i in rng.integers(0, len(rows), 200).tolist():  # past several residency checks
        assert ds[i] == rows[i]
    assert ds[100:900].to_list() == rows[100:900]
    _evict(path)
    ds = H5Dataset(path)
    assert [ds[i] for i in range(len(rows))] == rows  # in order: read-ahead windows


def test_prefetch_fetches_only_when_the_sample_misses(cold_file):
    path, rows = cold_file
    idx = np.arange(0, len(rows), 7, dtype=np.int64)
    with open(path, "rb") as fh:
        fh.read()  # warm, and not mapped by any process (mapped pages are not evicted)
    ds = H5Dataset(path)
    decoder = ds._open()
    if not decoder.names:  # every field filtered: HDF5 chunks take the same policy
        column = ds._slow[0]
        ds[idx].to_list()
        assert column._cold_batches == 0
        _evict(path)
        ds.close()
        ds = H5Dataset(path)
        assert ds[idx].to_list() == [rows[i] for i in idx.tolist()]
        if ds._slow[0]._cold_batches == 0:
            pytest.skip("this filesystem keeps the pages cached (e.g. tmpfs)")
        return
    assert decoder.prefetch(idx) is False
    _evict(path)
    if decoder.prefetch(idx) is False:
        pytest.skip("this filesystem keeps the pages cached (e.g. tmpfs)")
    assert decoder.prefetch(idx) is True  # cold mode lasts a few batches
    assert ds[idx].to_list() == [rows[i] for i in idx.tolist()]
    # In-memory datasets never prefetch.
    mem = H5Dataset(path, in_memory="process")
    assert mem._open().prefetch(idx) is False


def test_threads_reading_one_dataset(cold_file):
    path, rows = cold_file
    ds = H5Dataset(path)
    ds[0]  # the main thread's decoder exists before the others start
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(30):
                idx = rng.integers(0, len(rows), 32).tolist()
                assert ds[idx].to_list() == [rows[i] for i in idx]
                i = int(rng.integers(0, len(rows)))
                assert ds[i] == rows[i]
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_decoder_refuses_other_threads(cold_file):
    path, _ = cold_file
    decoder = H5Dataset(path)._open()
    assert decoder.owned()
    caught = []

    def work():
        assert not decoder.owned()
        for call in (lambda: decoder.row(0), lambda: decoder.value(0, 0)):
            try:
                call()
            except ForeignThreadError as exc:
                caught.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(caught) == 2
    assert isinstance(Decoder, type)


def test_array_of_many_dimensions_round_trips(tmp_path):
    path = str(tmp_path / "dims.h5")
    shape = (2,) * 10
    values = [np.arange(2**10, dtype=np.int16).reshape(shape) * i for i in range(5)]
    with H5Writer(path, [Array("a", shape, "int16")], progress=False) as w:
        for v in values:
            w.write({"a": v})
    ds = H5Dataset(path)
    np.testing.assert_array_equal(ds[3]["a"], values[3])
    np.testing.assert_array_equal(ds[[4, 1]].column("a"), np.stack([values[4], values[1]]))
    with pytest.raises(SchemaError, match="at most 30"):
        Array("b", (1,) * 31, "int8")


def test_lzf_prefetch_ignores_damaged_offsets(tmp_path):
    path = str(tmp_path / "lzf.h5")
    with H5Writer(path, [String("t")], compression="lzf", progress=False) as w:
        w.write_batch({"t": [f"row {i}" for i in range(5000)]})
    with h5py.File(path, "r+") as f:
        f["fields/t/offsets"][2000] = 1 << 50  # far past the data: no array may be sized by it
    _evict(path)
    ds = H5Dataset(path)
    with pytest.raises(FormatError):
        ds[[10, 1999, 4000]].to_list()
    assert ds[[10, 4000]].to_list() == [{"t": "row 10"}, {"t": "row 4000"}]


def test_kernel_arguments_are_checked_before_use(mapped):
    from h5record._fast import batch_rows, split_by_shard

    path, _ = mapped
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="size"):
            _io.pread_random(fd, np.zeros(2, np.int64), -1, 1)
        with pytest.raises(ValueError, match="threads"):
            _io.pread_random(fd, np.zeros(2, np.int64), PAGE, 2000)
    finally:
        os.close(fd)
    with pytest.raises(IndexError):
        batch_rows(("a",), [np.arange(4)], -3, 2)
    with pytest.raises(ValueError, match="starts"):
        split_by_shard(np.zeros(3, np.int64), np.zeros(1, np.int64))
