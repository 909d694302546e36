"""Fuzz the reader in an AddressSanitizer build: ``python tests/fuzz/run_asan.py``.

Builds a copy of h5record with ``-fsanitize=address`` and bounds checks
(``H5RECORD_SAFE=1``) in a separate folder (the in-place build is left alone),
then runs the cases of cases.py in child processes over that copy. Every case
must end in an H5RecordError or well-formed data; the run fails on any other
exception, an AddressSanitizer report, a crash, a case that hangs, or an
allocation larger than ``--max-alloc-mb`` (AddressSanitizer refuses it, so a
declared size allocated before it is checked is caught too).

A child that dies is reported with its case and restarted at the next case,
so one run lists every failing case. Without a C compiler that supports
``-fsanitize=address`` the run is skipped with a message, not failed;
``--plain`` runs the same cases over the installed build instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ASAN_FLAGS = "-fsanitize=address -fno-omit-frame-pointer"


def _compiler() -> str:
    return os.environ.get("CC", "gcc")


def asan_runtime() -> str | None:
    """Path of the compiler's AddressSanitizer runtime, or None if it has none."""
    try:
        out = subprocess.run(
            [_compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out if os.path.isabs(out) and os.path.exists(out) else None


def _sources() -> list[str]:
    package = os.path.join(ROOT, "h5record")
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(package)
        for name in names
        if name.endswith((".py", ".pyx", ".pxd")) and "__pycache__" not in folder
    )


def build(folder: str) -> str:
    """Build the ASan copy of h5record under ``folder``; return what goes on PYTHONPATH.

    A build of the same sources is reused.
    """
    digest = hashlib.sha256(ASAN_FLAGS.encode())
    for path in _sources():
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as fh:
            digest.update(fh.read())
    src = os.path.join(folder, "src")
    stamp = os.path.join(folder, "sources.sha256")
    if os.path.exists(stamp) and open(stamp).read() == digest.hexdigest():
        return src
    shutil.rmtree(src, ignore_errors=True)
    for path in _sources():
        dest = os.path.join(src, os.path.relpath(path, ROOT))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(path, dest)
    shutil.copy2(os.path.join(ROOT, "setup.py"), src)
    env = dict(
        os.environ,
        CFLAGS=ASAN_FLAGS,
        LDFLAGS="-fsanitize=address",
        H5RECORD_SAFE="1",
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit("fuzz: the AddressSanitizer build of h5record failed")
    print(f"fuzz: built h5record with AddressSanitizer in {time.monotonic() - started:.0f} s")
    with open(stamp, "w") as fh:
        fh.write(digest.hexdigest())
    return src


def in_hdf5(stderr: str) -> bool:
    """Whether a crash or hang happened inside the HDF5 library, not in h5record.

    AddressSanitizer's report then starts in libhdf5 (past its own interceptors);
    a hang's traceback (innermost call first) is inside h5py.
    """
    lines = stderr.splitlines()
    if "ERROR: AddressSanitizer" in stderr:
        frames = [x for x in lines if x.strip().startswith("#")]
        ours = [x for x in frames if "sanitizer" not in x and "libasan" not in x]
        return bool(ours) and "libhdf5" in ours[0]
    if "Timeout (" in stderr:
        calls = [x for x in lines if x.strip().startswith("File ")]
        return bool(calls) and "/h5py/" in calls[0]
    return False


def _excerpt(stderr: str) -> str:
    """The start of a sanitizer report (where it happened), or the end of other output."""
    at = stderr.find("ERROR: AddressSanitizer")
    return stderr[at : at + 4000] if at >= 0 else stderr[-4000:]


def run_cases(
    first: int, last: int, env: dict[str, str], timeout: float, extra: list[str]
) -> list[str]:
    """Run cases ``first..last-1``, restarting after each crash; return the failures."""
    failures: list[str] = []
    start = first
    while start < last:
        proc = subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "driver.py"),
                f"--first={start}",
                f"--last={last}",
                f"--timeout={timeout}",
                *extra,
            ],
            cwd=tempfile.gettempdir(),  # never the source tree: it would shadow the build
            env=env,
            capture_output=True,
            text=True,
        )
        lines = proc.stdout.splitlines()
        started = [int(x.split()[1]) for x in lines if x.startswith("start ")]
        finished = {int(x.split()[1]) for x in lines if x.startswith("done ")}
        failures += [x for x in lines if x.startswith("FAIL ")]
        for line in lines:
            if line.startswith("FAIL "):
                print(line.split("\n")[0])
        crashed = [k for k in started if k not in finished]
        if proc.returncode and (crashed or not started):
            case = crashed[-1] if crashed else start
            described = [x for x in lines if x.startswith(f"case {case}:")]
            report = (described[-1] if described else f"case {case}") + "\n" + _excerpt(proc.stderr)
            if in_hdf5(proc.stderr):
                # Outside what h5record promises (FORMAT.md section 11): listed, not failed.
                print(f"HDF5 {case} (exit status {proc.returncode}), in the HDF5 library: {report}")
            else:
                failures.append(f"CRASH {case} (exit status {proc.returncode}): {report}")
                print(failures[-1])
            start = case + 1
        else:
            if proc.returncode and not failures:
                failures.append(f"driver exit status {proc.returncode}: {proc.stderr[-3000:]}")
            break
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300, help="number of cases")
    parser.add_argument("--first", type=int, default=0, help="first case number")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take")
    parser.add_argument("--max-alloc-mb", type=int, default=512)
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "asan"))
    parser.add_argument("--plain", action="store_true", help="use the installed build, no ASan")
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    extra: list[str] = []
    if args.plain:
        env["PYTHONPATH"] = ROOT
        extra.append(f"--more-address-space-mb={args.max_alloc_mb}")
    else:
        runtime = asan_runtime()
        if runtime is None:
            print(
                f"fuzz: SKIPPED, the C compiler ({_compiler()}) has no AddressSanitizer runtime "
                "(libasan); install it (e.g. the gcc package's libasan) to run this target"
            )
            return 0
        env.update(
            PYTHONPATH=build(args.build_dir),
            LD_PRELOAD=runtime,
            # Python leaves its own allocations at exit: leaks are not what is tested.
            # An allocation past the limit fails as if memory ran out: HDF5 then
            # reports a damaged file, h5record code a MemoryError, a failure here.
            ASAN_OPTIONS=(
                f"detect_leaks=0:max_allocation_size_mb={args.max_alloc_mb}"
                ":allocator_may_return_null=1"
            ),
            PYTHONMALLOC="malloc",
        )
    started = time.monotonic()
    failures = run_cases(args.first, args.first + args.cases, env, args.timeout, extra)
    took = time.monotonic() - started
    mode = "installed build" if args.plain else "AddressSanitizer build"
    print(
        f"fuzz: {args.cases} cases ({args.first}..{args.first + args.cases - 1}) over the "
        f"{mode} in {took:.0f} s: {len(failures)} failing"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
