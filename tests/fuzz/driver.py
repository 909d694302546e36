"""Run fuzz cases ``first..last-1`` in this process (see cases.py); run_asan.py starts it.

Prints ``start <k>`` before each case and ``done <k> <outcomes>`` after it, so
that the parent can name the case that crashed the interpreter or tripped
AddressSanitizer. A case that runs longer than ``--timeout`` seconds ends the
process with every thread's traceback (a hang, even one inside compiled code).
Python-level failures are printed and counted; the exit status is 1 if any.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import resource
import sys
import tempfile

import cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--last", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument(
        "--more-address-space-mb",
        type=int,
        default=0,
        help="limit the address space to what is mapped after imports plus this (not with ASan)",
    )
    args = parser.parse_args(argv)
    import h5record

    if args.more_address_space_mb:
        # A declared size allocated before it is checked fails with MemoryError.
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = mapped + (args.more_address_space_mb << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    print(f"h5record from {os.path.dirname(h5record.__file__)}", flush=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="h5record-fuzz-") as folder:
        for number in range(args.first, args.last):
            print(f"start {number}", flush=True)
            faulthandler.dump_traceback_later(args.timeout, exit=True)
            case = cases.make_case(number, folder)
            cases.damage(case)
            print(cases.describe(case), flush=True)
            try:
                cases.read_case(case)
            except cases.ReadBug as exc:
                failures += 1
                print(f"FAIL {number}: {exc}", flush=True)
            finally:
                faulthandler.cancel_dump_traceback_later()
                os.remove(case.path)
            outcomes = " ".join(f"{k}={v}" for k, v in case.outcomes.items())
            print(f"done {number} {outcomes}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
