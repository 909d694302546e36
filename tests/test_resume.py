"""Commits that survive a kill: periodic commits, resume, signals, full disks, file modes."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from h5record import (
    H5Dataset,
    H5Writer,
    Integer,
    Sequence,
    String,
    codecs,
)
from h5record.commit import CommitFile, commit_pending, journal_path, recover
from h5record.errors import FormatError, H5RecordError, WriteError
from h5record.verify import verify_file
from h5record.writer import partial_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every kind of storage: raw variable and fixed, HDF5 filters, zstd blocks
# (whose last, short block a commit writes and the next flush replaces).
SCHEMA = [
    String("text"),
    Integer("label"),
    Sequence("tokens", dtype="int32", compression="lzf"),
    String("gz", compression="gzip"),
    String("z", compression=codecs.zstd(level=1, block_bytes=64)),
    Sequence("zt", dtype="uint16", compression="zstd"),
]
ROWS = 400

CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.test_resume import SCHEMA, ROWS, row
    from h5record import H5Writer
    path, resume = sys.argv[1], sys.argv[2] == "resume"
    with H5Writer(path, SCHEMA, progress=False, resume=resume, commit_every=7) as w:
        start = w.num_rows
        print(start, flush=True)
        for i in range(start, ROWS):
            w.write(row(i))
            if i % 20 == 0:
                time.sleep(0.002)
    """
)


def row(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "text": f"row {i} " * (i % 4),
        "label": i,
        "tokens": rng.integers(-5, 5, i % 9, dtype=np.int32),
        "gz": "g" * (i % 13),
        "z": f"zstd text {i % 17} " * (i % 3),
        "zt": np.arange(i % 6, dtype=np.uint16),
    }


def check_rows(ds: H5Dataset, n: int) -> None:
    assert len(ds) == n
    for i in range(n):
        got, want = ds[i], row(i)
        for name, value in want.items():
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


def _start(path: str, resume: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=ROOT), path, "resume" if resume else "new"],
        stdout=subprocess.PIPE,
        text=True,
    )


def _interrupt_and_resume(tmp_path, trial: int, signum: int) -> int:
    path = str(tmp_path / f"t{trial}.h5")
    child = _start(path)
    child.stdout.readline()  # the writer is open
    time.sleep(random.Random(trial).uniform(0.0, 0.4))
    child.send_signal(signum)
    child.wait(timeout=60)
    child.stdout.close()
    done = child.returncode == 0
    committed = None
    if not done:
        # Killed between a commit point and the end of its commit: the next
        # writer finishes it, and readers wait for that.
        pending = commit_pending(path + ".partial")
        committed = partial_rows(path + ".partial") or 0  # None: killed before a commit
        if committed:
            ds = H5Dataset(path + ".partial", partial=True)
            check_rows(ds, committed)  # the rows of the last commit, exactly
            ds.close()
        again = _start(path, resume=True)
        resumed = int(again.stdout.readline())
        assert resumed == committed or (pending and resumed > committed)
        committed = resumed
        assert again.wait(timeout=60) == 0
        again.stdout.close()
    assert os.listdir(tmp_path).count(f"t{trial}.h5.partial") == 0
    ds = H5Dataset(path)
    check_rows(ds, ROWS)
    ds.close()
    report = verify_file(path)  # checksums continued, no stale bytes left in chunks
    assert report.ok, report.damage
    return -1 if committed is None else committed


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory when there is one: a commit's fsync calls cost nothing there."""
    if not os.path.isdir("/dev/shm"):
        return tmp_path
    folder = tempfile.mkdtemp(dir="/dev/shm")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_writes_keep_their_commits_and_resume(fast_dir, signum):
    tmp_path = fast_dir
    seen = [_interrupt_and_resume(tmp_path, trial, signum) for trial in range(4)]
    assert any(n >= 0 for n in seen)  # at least one write was really interrupted


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_writes_many_trials(fast_dir, signum):
    tmp_path = fast_dir
    seen = [_interrupt_and_resume(tmp_path, trial, signum) for trial in range(4, 26)]
    assert sum(n >= 0 for n in seen) > 10


def test_sigterm_commits_rows_written_since_the_last_commit(tmp_path):
    path = tmp_path / "term.h5"
    before = signal.getsignal(signal.SIGTERM)
    w = H5Writer(path, SCHEMA, progress=False, commit_seconds=None)
    for i in range(25):
        w.write(row(i))
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        for i in range(25, 1000):  # the handler raises at the next Python step
            w.write(row(i))
    assert info.value.code == 128 + signal.SIGTERM
    w._interrupted()  # what leaving a with block does
    assert signal.getsignal(signal.SIGTERM) is before
    ds = H5Dataset(str(path) + ".partial", partial=True)
    assert len(ds) >= 25
    check_rows(ds, len(ds))


def test_sigint_raises_keyboard_interrupt_after_committing(tmp_path):
    path = tmp_path / "int.h5"
    with pytest.raises(KeyboardInterrupt), H5Writer(path, SCHEMA, progress=False) as w:
        for i in range(10):
            w.write(row(i))
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    check_rows(H5Dataset(str(path) + ".partial", partial=True), 10)


def test_commit_every_and_committed_rows(tmp_path):
    path = tmp_path / "c.h5"
    with H5Writer(path, SCHEMA, progress=False, commit_every=10) as w:
        for i in range(25):
            w.write(row(i))
        assert w.committed_rows == 20 and w.num_rows == 25
        check_rows(H5Dataset(str(path) + ".partial", partial=True), 20)
        w.commit()
        assert w.committed_rows == 25
        check_rows(H5Dataset(str(path) + ".partial", partial=True), 25)
    check_rows(H5Dataset(path), 25)


def test_partial_file_is_refused_unless_asked(tmp_path):
    path = tmp_path / "p.h5"
    w = H5Writer(path, SCHEMA, progress=False)
    w.write(row(0))
    w.commit()
    with pytest.raises(FormatError, match=r"unfinished.*resume=True.*partial=True"):
        H5Dataset(str(path) + ".partial")
    w.close()


def test_a_stale_partial_file_needs_resume_or_overwrite(tmp_path):
    path = tmp_path / "s.h5"
    w = H5Writer(path, SCHEMA, progress=False)
    w.write(row(0))
    w.commit()
    w._release(remove=False)  # as a kill would leave it
    with pytest.raises(FileExistsError, match="1 committed rows.*resume=True"):
        H5Writer(path, SCHEMA, progress=False)
    with H5Writer(path, SCHEMA, progress=False, overwrite=True) as w:
        w.write(row(0))
        w.write(row(1))
    check_rows(H5Dataset(path), 2)


def test_resume_with_another_schema_names_the_difference(tmp_path):
    path = tmp_path / "r.h5"
    w = H5Writer(path, SCHEMA, progress=False)
    w.write(row(0))
    w.commit()
    w._release(remove=False)
    other = [*SCHEMA[:1], Integer("label", dtype="int32"), *SCHEMA[2:]]
    with pytest.raises(H5RecordError, match="field 'label'.*int32|field 'label'.*<i4"):
        H5Writer(path, other, progress=False, resume=True)
    with H5Writer(path, progress=False, resume=True) as w:  # the file's schema
        assert w.num_rows == 1
        w.write(row(1))
    check_rows(H5Dataset(path), 2)


def test_resume_without_a_partial_file_starts_a_new_one(tmp_path):
    with H5Writer(tmp_path / "n.h5", SCHEMA, progress=False, resume=True) as w:
        assert w.num_rows == 0
        w.write(row(0))
    check_rows(H5Dataset(tmp_path / "n.h5"), 1)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with H5Writer(tmp_path / "m.h5", SCHEMA, progress=False) as w:
            w.write(row(0))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.h5").st_mode & 0o777 == 0o644


def test_missing_folder_is_named(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"folder {folder} does not exist"):
        H5Writer(folder / "x.h5", SCHEMA, progress=False)


def test_interrupted_commit_is_finished(tmp_path):
    """A commit killed past its commit point (the journal) is finished on the next open."""
    path = str(tmp_path / "j.h5")
    with open(path, "wb") as fh:
        fh.write(b"A" * 10000)
    io = CommitFile(path, create=False)
    io.seek(100)
    io.write(b"B" * 5000)  # committed pages: held back
    io.seek(12000)
    io.write(b"C" * 10)  # past the committed end: written at once
    with open(path, "rb") as fh:
        assert fh.read(10000) == b"A" * 10000
    io._write_journal()  # the commit point, then a kill
    os.pwrite(io.fd, b"B" * 100, 100)  # part of the next step
    io.close()
    before = pathlib.Path(path).read_bytes()
    with pytest.raises(FormatError, match="commit is being finished"):
        H5Dataset(path, partial=True)  # a reader never writes: it could undo a newer commit
    assert pathlib.Path(path).read_bytes() == before
    assert recover(path)
    assert not os.path.exists(journal_path(path))
    with open(path, "rb") as fh:
        assert fh.read() == b"A" * 100 + b"B" * 5000 + b"A" * 4900 + b"\0" * 2000 + b"C" * 10


def test_incomplete_journal_is_dropped(tmp_path):
    path = str(tmp_path / "k.h5")
    with open(path, "wb") as fh:
        fh.write(b"A" * 100)
    with open(journal_path(path), "wb") as fh:
        fh.write(b"H5RJRNL1 truncated")
    assert not recover(path)
    assert not os.path.exists(journal_path(path))
    with open(path, "rb") as fh:
        assert fh.read() == b"A" * 100


def test_write_error_keeps_committed_rows(tmp_path, monkeypatch):
    path = tmp_path / "e.h5"
    w = H5Writer(path, SCHEMA, progress=False, commit_seconds=None)
    for i in range(20):
        w.write(row(i))
    w.commit()
    real = os.pwrite

    def full(fd, data, offset):
        if fd == w._io.fd:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(WriteError) as info:
        for i in range(20, 100_000):
            w.write(row(i))
        w.close()
    assert isinstance(info.value, OSError) and info.value.errno == 28
    assert str(path) in str(info.value) and "MB free" in str(info.value)
    assert "resume=True" in str(info.value)
    monkeypatch.setattr(os, "pwrite", real)
    with pytest.raises(H5RecordError):
        w.write(row(0))  # the writer stays failed, or closed
    w.abort()
    check_rows(H5Dataset(str(path) + ".partial", partial=True), 20)


FULL_DISK = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import numpy as np
    from h5record import H5Writer, Bytes, Integer
    from h5record.errors import WriteError
    rng = np.random.default_rng(0)
    try:
        with H5Writer(sys.argv[1], [Integer("i"), Bytes("b")], progress=False,
                      commit_every=50, chunk_bytes=1 << 16) as w:
            for i in range(100_000):
                w.write({{"i": i, "b": rng.bytes(4000)}})
    except WriteError as exc:
        print("ERROR", exc)
    """
)


def test_full_filesystem(tmp_path):
    """A real full disk (a 2 MB tmpfs): a clear error, the committed rows, a clean exit."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = str(mount / "full.h5")
        out = subprocess.run(
            [sys.executable, "-c", FULL_DISK.format(root=ROOT), path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "ERROR" in out.stdout and "No space left on device" in out.stdout
        assert "MB free" in out.stdout and path in out.stdout
        assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr
        ds = H5Dataset(path + ".partial", partial=True)
        assert len(ds) > 0 and len(ds) % 50 == 0
        assert [ds[i]["i"] for i in range(len(ds))] == list(range(len(ds)))
        ds.close()
    finally:
        subprocess.run(["umount", str(mount)])


def test_resume_before_the_first_commit_keeps_the_compression(tmp_path):
    path = tmp_path / "z.h5"
    w = H5Writer(path, SCHEMA, progress=False, commit_seconds=None)
    w._release(remove=False)  # what a kill before the first commit leaves
    assert os.path.exists(str(path) + ".partial")
    with H5Writer(path, SCHEMA, resume=True, compression="zstd", progress=False) as w:
        assert w.num_rows == 0
        for i in range(50):
            w.write(row(i))
    ds = H5Dataset(path)
    text = next(f for f in ds.schema if f.name == "text")  # no codec of its own
    assert text.codec is not None and text.codec["id"] == "zstd"
    check_rows(ds, 50)


@pytest.mark.parametrize("content", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 100])
def test_resume_of_a_file_killed_while_being_created_starts_again(tmp_path, content):
    path = tmp_path / "c.h5"
    pathlib.Path(str(path) + ".partial").write_bytes(content)  # no HDF5 tree, no attributes
    with H5Writer(path, SCHEMA, resume=True, progress=False) as w:
        assert w.num_rows == 0
        for i in range(30):
            w.write(row(i))
    check_rows(H5Dataset(path), 30)
