"""Honest service under attack (issue 13): during the connection, memory and log attacks of
tests/integration/test_attacks.py, how long an honest member's update takes to reach every
honest node, in gossip intervals (goal: within 3), and whether the attacked node's RSS
returns within 10% of its baseline afterwards.

The attacks are the tests' own (real nodes, real TLS, attackers on other loopback
addresses); they run here through pytest, and each prints its measurements as a FIGURE line,
turned into the report's figures below. The baseline of each ratio is the attacked node's
RSS measured just before the attack, in this run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.report import Figure

GROUP = "under attack (real nodes; attackers on other loopback addresses)"
HONEST_INTERVALS = 3.0
RSS_SLACK = 1.10
ATTACKS = {  # test selection -> FIGURE name, what it is
    "connection_exhaustion_keeps": ("class6_connections",
                                    "connection attack (idle TLS, half-open, unread answers, "
                                    "IPv6 /64)"),
    "log_flood_within": ("class7_log_flood", "log attack (refused requests within the rate "
                                             "limit, forged lines)"),
    "memory_attack_keeps": ("class8_memory_attack", "memory attack (a stream of the "
                                                    "costliest garbage bodies)"),
    "unverified_early_events": ("class8_pending_flood", "forged events parked ahead of a "
                                                        "chain"),
}


def _figures(name: str, what: str, values: dict[str, Any]) -> list[Figure]:
    out = []
    intervals = [x for x in values.get("honest_updates_intervals", []) if x is not None]
    if intervals or "honest_updates_intervals" in values:
        worst = max(intervals) if len(intervals) == len(values["honest_updates_intervals"]) \
            else float("inf")
        out.append(Figure(GROUP, f"{what}: slowest honest update to every honest node",
                          worst, "intervals", goal=("<=", HONEST_INTERVALS, "value"),
                          note=f"{len(intervals)} updates: {intervals}"))
    rss = values.get("rss_kb")
    if rss:
        out.append(Figure(GROUP, f"{what}: RSS after the attack", rss["after"] / 1024, "MB",
                          against=f"its baseline before, {rss['baseline'] / 1024:.0f} MB",
                          ratio=rss["after"] / rss["baseline"], goal=("<=", RSS_SLACK, "ratio"),
                          note=f"peak {rss['peak'] / 1024:.0f} MB"))
    if name == "class7_log_flood":
        for node, rate in values["lines_per_s"].items():
            out.append(Figure(GROUP, f"{what}: log lines per second at {node}", rate,
                              "lines/s", note=f"{values['bytes_per_s'][node]:.0f} B/s while "
                                              f"refusing {values['refused'][node]} requests"))
    if name == "class8_pending_flood":
        relay = values["relay_s"]
        out.append(Figure(GROUP, f"{what}: relay of 200 honest events", relay[
            "forged_just_ahead"], "s", against=f"the same forgeries far ahead, "
            f"{relay['forged_far_ahead']:.2f} s", ratio=relay["forged_just_ahead"]
            / max(relay["forged_far_ahead"], 0.01)))
    if name == "class6_connections":
        served, asked = (int(x) for x in values["member_requests_served"].split("/"))
        out.append(Figure(GROUP, f"{what}: members' own requests served", served / asked,
                          "of asked", goal=(">=", 0.9, "value"),
                          note=f"{served}/{asked}"))
    return out


def run(mode: str = "report") -> list[Figure | str]:
    selection = " or ".join(ATTACKS)
    with tempfile.TemporaryDirectory(prefix="pocnode-bench-attack-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
             "tests/integration/test_attacks.py", "-k", selection, f"--basetemp={tmp}"],
            capture_output=True, text=True, timeout=1800,
            cwd=Path(__file__).resolve().parents[2])
    seen: dict[str, dict[str, Any]] = {}
    for line in proc.stdout.splitlines():
        at = line.find("FIGURE ")   # after pytest's progress marks (".", "x") on the line
        if at >= 0:
            name, _, payload = line[at + len("FIGURE "):].partition(": ")
            seen[name] = json.loads(payload)
    out: list[Figure | str] = []
    for name, what in ATTACKS.values():
        if name in seen:
            out += _figures(name, what, seen[name])
        else:
            out.append(f"{what}: not measured (its test did not print a figure)")
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else ["no output"]
    out.append(f"attack tests behind these figures: {tail[0]}")
    return out


if __name__ == "__main__":
    for item in run():
        print(item if isinstance(item, str) else item.line(), flush=True)
