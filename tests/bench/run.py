"""Run every benchmark and print each figure beside its baseline or goal.

    .venv/bin/python -m tests.bench.run            # full
    .venv/bin/python -m tests.bench.run --quick    # smoke run, smaller samples

Not part of the default test run: pytest collects only test_*.py files.
"""

from __future__ import annotations

import argparse
import platform
import sys

from tests.bench import (
    bench_audit,
    bench_consent,
    bench_core,
    bench_node,
    bench_requests,
    bench_sim,
)


def main() -> int:
    parser = argparse.ArgumentParser(description="pocnode benchmarks")
    parser.add_argument("--quick", action="store_true", help="small samples, for a smoke run")
    parser.add_argument("--only", choices=["core", "consent", "audit", "node", "requests",
                                           "sim"],
                        help="run one group")
    args = parser.parse_args()
    print(f"# pocnode benchmarks on {platform.machine()} {platform.python_implementation()} "
          f"{platform.python_version()}, {'quick' if args.quick else 'full'} run")
    if args.only in (None, "core"):
        print("## protocol core", flush=True)
        for line in bench_core.run(quick=args.quick):
            print(line, flush=True)
    if args.only in (None, "consent"):
        print("## confidentiality (HPKE sealing)", flush=True)
        for line in bench_consent.run(quick=args.quick):
            print(line, flush=True)
    if args.only in (None, "audit"):
        print("## audit (export bundles, issue 12)", flush=True)
        for line in bench_audit.run(quick=args.quick):
            print(line, flush=True)
    if args.only in (None, "node"):
        print("## node (real processes on loopback, 1 s gossip interval)", flush=True)
        for line in bench_node.run(quick=args.quick):
            print(line, flush=True)
    if args.only in (None, "sim"):
        print("## simulator (pocnode simulate: engines over a virtual network)", flush=True)
        for line in bench_sim.run(quick=args.quick):
            print(line, flush=True)
    if args.only in (None, "requests"):
        print("## communication requests (real processes in network namespaces)", flush=True)
        for line in bench_requests.run(quick=args.quick):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
