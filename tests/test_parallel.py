"""write_shards: deterministic shards from worker processes, size limits, errors, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from h5record import H5Dataset, H5Writer, Integer, String
from h5record.parallel import ShardWriteError, write_shards
from h5record.shards import MANIFEST_NAME

SCHEMA = [Integer("id"), String("text")]
INPUTS = [(0, 50), (50, 51), (51, 51), (51, 300), (300, 420)]  # an empty input, a single row


def rows_of(span):
    """Rows of one input: module level, so that spawned workers can unpickle it."""
    for i in range(*span):
        yield {"id": i, "text": f"text {i} " * (i % 5)}


def failing_rows(span):
    flag = os.environ.get("H5RECORD_TEST_FAIL")
    for i in range(*span):
        if i == 100 and flag and os.path.exists(flag):
            raise ValueError("a bad source row")
        yield {"id": i, "text": f"text {i} " * (i % 5)}


def slow_rows(span):
    for i in range(*span):
        if i % 20 == 0:
            time.sleep(0.01)
        yield {"id": i, "text": f"text {i} " * (i % 5)}


def _ids(folder) -> list[int]:
    return [r["id"] for r in H5Dataset(str(folder))]


def _files(folder) -> list[str]:
    with open(os.path.join(folder, MANIFEST_NAME)) as f:
        return [s["file"] for s in json.load(f)["shards"]]


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_shard_k_holds_input_k(tmp_path, context):
    out = tmp_path / "ds"
    manifest = write_shards(INPUTS, rows_of, out, SCHEMA, workers=2, mp_context=context)
    assert manifest == str(out / MANIFEST_NAME)
    assert _files(out) == [f"part-{k:05d}.h5" for k in range(5)]
    assert sorted(os.listdir(out)) == sorted([MANIFEST_NAME, *_files(out)])
    ds = H5Dataset(str(out))
    assert [r["id"] for r in ds] == list(range(420))
    assert [len(s) for s in ds.shards] == [50, 1, 0, 249, 120]
    assert ds[77]["text"] == "text 77 " * 2


def test_this_process_and_size_limits(tmp_path):
    write_shards(INPUTS, rows_of, tmp_path / "a", SCHEMA, workers=0, shard_rows=100)
    assert _files(tmp_path / "a") == [
        "part-00000-00000.h5",
        "part-00001-00000.h5",
        "part-00002-00000.h5",
        "part-00003-00000.h5",
        "part-00003-00001.h5",
        "part-00003-00002.h5",
        "part-00004-00000.h5",
        "part-00004-00001.h5",
    ]
    assert [len(s) for s in H5Dataset(str(tmp_path / "a")).shards] == [
        50,
        1,
        0,
        100,
        100,
        49,
        100,
        20,
    ]
    assert _ids(tmp_path / "a") == list(range(420))
    write_shards(INPUTS, rows_of, tmp_path / "b", SCHEMA, workers=2, shard_bytes=2000)
    ds = H5Dataset(str(tmp_path / "b"))
    assert [r["id"] for r in ds] == list(range(420)) and len(ds.shards) > 5


def test_worker_error_names_the_input_and_resume_skips_finished_shards(tmp_path, monkeypatch):
    flag = tmp_path / "fail"
    flag.touch()
    monkeypatch.setenv("H5RECORD_TEST_FAIL", str(flag))
    out = tmp_path / "ds"
    with pytest.raises(
        ShardWriteError, match=r"input 3 \(\(51, 300\)\).*ValueError: a bad source row"
    ):
        write_shards(INPUTS, failing_rows, out, SCHEMA, workers=2, compression="zstd")
    assert not (out / MANIFEST_NAME).exists()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        H5Dataset(str(out))
    finished = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.endswith(".h5")}
    assert "part-00000.h5" in finished and "part-00003.h5" not in finished
    assert (out / "part-00003.h5.partial").exists()  # rows 51..99, committed on the error
    flag.unlink()
    write_shards(INPUTS, failing_rows, out, SCHEMA, workers=2, compression="zstd")
    assert _ids(out) == list(range(420))
    for name, mtime in finished.items():
        assert os.stat(out / name).st_mtime_ns == mtime  # not written again
    assert sorted(os.listdir(out)) == sorted([MANIFEST_NAME, *_files(out)])
    # A complete dataset is left as it is; overwrite=True writes it again.
    before = os.stat(out / MANIFEST_NAME).st_mtime_ns
    write_shards(INPUTS, rows_of, out, SCHEMA, workers=0)
    assert os.stat(out / MANIFEST_NAME).st_mtime_ns == before
    write_shards(INPUTS[:2], rows_of, out, SCHEMA, workers=0, overwrite=True)
    assert _ids(out) == list(range(51))


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="shard_rows"):
        write_shards(INPUTS, rows_of, tmp_path, SCHEMA, shard_rows=0)
    with pytest.raises(ValueError, match="workers"):
        write_shards(INPUTS, rows_of, tmp_path, SCHEMA, workers=-1)


_KILLED_JOB = """
import sys
from h5record.parallel import write_shards
from tests.test_parallel import INPUTS, SCHEMA, slow_rows
# fork: its semaphores have no names, so the kill of the whole job leaves none
# behind in /dev/shm (spawn's are named, and unlinked by a resource tracker that
# the kill takes down too).
write_shards(INPUTS * 2, slow_rows, sys.argv[1], SCHEMA, workers=2, shard_rows=40,
             mp_context="fork")
"""


def test_a_killed_write_leaves_no_manifest_and_resumes(tmp_path):
    out = tmp_path / "ds"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    job = subprocess.Popen(
        [sys.executable, "-c", _KILLED_JOB, str(out)], cwd=root, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        n.endswith(".h5") for n in (os.listdir(out) if out.exists() else [])
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert out.exists() and not (out / MANIFEST_NAME).exists()
    write_shards(INPUTS * 2, slow_rows, out, SCHEMA, workers=2, shard_rows=40)
    assert _ids(out) == list(range(420)) * 2


def test_writes_equal_a_single_process_write(tmp_path):
    write_shards(INPUTS, rows_of, tmp_path / "ds", SCHEMA, workers=2)
    with H5Writer(tmp_path / "one.h5", SCHEMA, progress=False) as w:
        for span in INPUTS:
            for row in rows_of(span):
                w.write(row)
    assert H5Dataset(str(tmp_path / "ds"))[0:420] == H5Dataset(str(tmp_path / "one.h5"))[0:420]


def test_a_rerun_after_the_last_shard_adds_no_empty_shard(tmp_path):
    out = tmp_path / "r"
    write_shards(INPUTS, rows_of, out, SCHEMA, workers=0, shard_rows=100)
    files = _files(out)
    # A kill after an input's last shard was finished, before its done record.
    for name in os.listdir(out):
        if name.endswith(".done") or name == MANIFEST_NAME:
            os.unlink(out / name)
    write_shards(INPUTS, rows_of, out, SCHEMA, workers=0, shard_rows=100)
    assert _files(out) == files
    assert _ids(out) == list(range(420))
