"""Run every benchmark; print each figure beside its goal and its ratio to a limit or peer
measured in the same run; write the report as JSON and a Markdown table.

    .venv/bin/python -m tests.bench.run              # the report run (under 10 minutes)
    .venv/bin/python -m tests.bench.run --full       # larger samples (50-node convergence,
                                                     # 5,000 simulated nodes): longer
    .venv/bin/python -m tests.bench.run --only core  # one group, report not rewritten

The node group also runs the node benchmark of BASELINE (the last commit before the
sans-I/O engine), from a `git archive` of it, in this same run, so that "no worse than
before" is a ratio measured on the machine as it is now. Not part of the default test
run: pytest collects only test_*.py files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from tests.bench import (
    bench_attack,
    bench_audit,
    bench_consent,
    bench_core,
    bench_node,
    bench_requests,
    bench_sim,
)
from tests.bench.report import Figure, write

BASELINE = "6a0cd56"   # the daemon before the engine issue: the node benchmark's "before"
REPORT = Path(__file__).with_name("results") / "latest"

# Each group by mode: "quick" (a smoke run), "report" (every figure the issues ask for, in
# under ten minutes on a 2-core machine) or "full" (larger samples).
GROUPS: dict[str, Callable[[str, argparse.Namespace], Iterable[Figure | str]]] = {
    "core": lambda mode, a: bench_core.run(quick=mode == "quick"),
    "consent": lambda mode, a: bench_consent.run(quick=mode == "quick"),
    "audit": lambda mode, a: bench_audit.run(quick=mode == "quick"),
    "sim": lambda mode, a: bench_sim.run(quick=mode == "quick"),
    "requests": lambda mode, a: bench_requests.run(quick=mode != "full"),
    "attack": lambda mode, a: bench_attack.run(mode),
    "node": lambda mode, a: bench_node.run(mode, baseline_rev=a.baseline or None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description="pocnode benchmarks")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small samples: a smoke run")
    size.add_argument("--full", action="store_true",
                      help="large samples (50-node convergence, 5,000 simulated nodes)")
    parser.add_argument("--only", choices=list(GROUPS), action="append",
                        help="run these groups only (repeatable); the report is then "
                             "written only with --out")
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"the commit the node group compares with (default {BASELINE}; "
                             f"empty: none)")
    parser.add_argument("--out", type=Path, help="report path without suffix (default "
                        "tests/bench/results/latest for a whole run)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "report"
    started = time.monotonic()
    print(f"# pocnode benchmarks, {mode} run", flush=True)
    figures: list[Figure] = []
    notes: list[str] = []
    for name, group in GROUPS.items():
        if args.only and name not in args.only:
            continue
        print(f"## {name}", flush=True)
        t0 = time.monotonic()
        for item in group(mode, args):
            if isinstance(item, str):
                notes.append(item)
                print(item, flush=True)
            else:
                figures.append(item)
                print(item.line(), flush=True)
        print(f"   ({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    duration = time.monotonic() - started
    print(f"# {duration:.0f} s in all", flush=True)
    out = args.out or (REPORT if not args.only else None)
    if out is not None:
        write(figures, notes, {
            "command": "python -m tests.bench.run " + " ".join(sys.argv[1:]),
            "mode": mode, "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "duration_s": duration, "cpus": os.cpu_count(), "baseline": args.baseline},
            out)
        print(f"report: {out.with_suffix('.md')} and .json", flush=True)
    below = [f for f in figures if f.meets is False]
    for f in below:
        print(f"BELOW GOAL: {f.line()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
