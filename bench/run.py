"""The single entry point of the benchmark harness.

``.venv/bin/python bench/run.py [--quick] [--heavy] [--only NAME ...]`` runs the measurements
and prints one table: each figure beside its baseline measured in the same run, the ratio,
the target (issue 6) and whether it is met. Exit status 0 when every measurement ran (short
figures are reported, not failed), 1 when a measurement could not run.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
import traceback
from typing import List, Optional

if __package__ in (None, ""):
    # Run as a script: import the project from the repository root, not from bench/.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.context import BenchContext  # noqa: E402
from bench.measurements import MEASUREMENTS  # noqa: E402
from bench.report import Row, format_table  # noqa: E402

log = logging.getLogger("bench")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line; an unknown ``--only`` name is an error listing the known ones."""
    names = [measurement.name for measurement in MEASUREMENTS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples and shorter windows (the whole run in minutes)")
    parser.add_argument("--heavy", action="store_true",
                        help="also the heavy load runs (1,000-job drain, 200 agents, soak)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=names,
                        help="run only these measurements: " + ", ".join(names))
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 3 quick, 5 full)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    return parser.parse_args(argv)


def machine() -> str:
    """One line naming the machine the figures come from."""
    return (f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the chosen measurements and print the table; see the module docstring."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.only:
        chosen = [m for m in MEASUREMENTS if m.name in args.only]
    else:
        chosen = [m for m in MEASUREMENTS if args.heavy or not m.heavy]
    ctx = BenchContext(quick=args.quick, runs=args.runs, keep=args.keep)
    rows: List[Row] = []
    failed: List[str] = []
    started = time.monotonic()
    try:
        for measurement in chosen:
            print(f"... {measurement.name}: {measurement.description}", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                new_rows = measurement.run(ctx)
            except Exception:  # one broken measurement must not hide the others' figures
                traceback.print_exc()
                failed.append(measurement.name)
                continue
            rows.extend(new_rows)
            print(f"    {measurement.name} took {time.monotonic() - began:.0f} s "
                  f"(harness now holds {len(os.listdir('/proc/self/fd'))} fds, "
                  f"{threading.active_count()} threads)", file=sys.stderr)
    finally:
        ctx.close()
    print()
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}  {machine()}")
    print(f"bench/run.py {' '.join(sys.argv[1:] if argv is None else argv)}  "
          f"(median of {ctx.runs} runs, {time.monotonic() - started:.0f} s)")
    print()
    print(format_table(rows))
    if failed:
        print(f"\nmeasurements that could not run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
