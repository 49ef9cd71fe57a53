"""The simulator at scale (issue 8): convergence against theory, wall time, memory, and
what one simulated node-round costs.

Each size runs in a fresh process, so that its peak memory (the child's maximum resident
set, from wait4) is its own. In that same process, after the run, the cost of one raw
``Engine.answer_summary`` call (an idle round's answer, the cheapest thing a round makes
the engine do) is timed on one of the run's engines: the simulator's cost per node-round
is printed as a multiple of it, a ratio that holds when the machine's speed drifts; and
as a multiple of the engine's own share of an idle round (choosing a peer, the summary
call and its answer, driven by hand with a canned answer), which shows how much of a
node-round is the engine and how much the simulator around it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from pocnode.sim.report import push_pull_rounds
from tests.bench.report import Figure

GOAL_WALL_S = 120.0          # issue 8: 5,000 nodes, one update, under 2 minutes
GOAL_PUSH_PULL_RATIO = 1.5   # rounds to 100% within 1.5x log3 N + ln ln N
SUMMARY_CALLS = 20_000
ENGINE_ROUNDS = 2_000

_CHILD = r"""
import json, sys, time
from pocnode.sim.experiment import Experiment
from pocnode.sim.report import figures
from pocnode.sim.runner import SimConfig

n, seed, fanout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
experiment = Experiment(SimConfig(nodes=n, fanout=fanout, loss=0.0, updates=1, seed=seed))
t1 = time.perf_counter()
outcome = experiment.run()
t2 = time.perf_counter()
fig = figures(outcome)
sim = experiment.sim
engine = next(node.engine for node in sim.nodes if node.engine is not None)
msg = {"summary": engine.summary(), "fed": sim.fed}
now = sim.now
start = time.perf_counter()
for _ in range(%(calls)d):
    engine.answer_summary(msg, now)
summary_s = (time.perf_counter() - start) / %(calls)d

# The engine's own share of an idle round, driven by hand with a canned "same" answer:
# choosing a peer, the summary call, reading the answer, noting the peer's health.
from pocnode.core import wire
from pocnode.core.engine import Call, Now
same = wire.encode({"same": True, "now": now})
start = time.perf_counter()
for _ in range(%(rounds)d):
    engine.rounds_running += 1   # as Engine.due does; gossip_rounds takes it back
    steps, value = engine.gossip_rounds(), None
    while True:
        try:
            effect = steps.send(value)
        except StopIteration:
            break
        value = same if type(effect) is Call else now
round_s = (time.perf_counter() - start) / %(rounds)d
virtual_ms = outcome.warmup_ms + outcome.idle_ms + outcome.phase_ms
# Peak memory of this interpreter alone: VmHWM starts again at exec, while the rusage a
# parent reads keeps the high-water mark of the forked copy of the (larger) parent.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"fig": fig, "build_s": t1 - t0, "run_s": t2 - t1, "summary_s": summary_s,
                  "hwm_kib": hwm,
                  "round_s": round_s, "node_rounds": n * virtual_ms / outcome.config.interval_ms,
                  "actions": outcome.actions}))
"""


def _child(n: int, seed: int, fanout: int = 3) -> tuple[dict, float, int]:
    """Run one size in a fresh interpreter: its figures, wall time and peak RSS (KiB)."""
    started = time.perf_counter()
    code = _CHILD % {"calls": SUMMARY_CALLS, "rounds": ENGINE_ROUNDS}
    proc = subprocess.Popen([sys.executable, "-c", code, str(n), str(seed), str(fanout)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"simulation of {n} nodes exited with {proc.returncode}")
    result = json.loads(out)
    return result, wall, result.get("hwm_kib", usage.ru_maxrss)


def run(quick: bool = False) -> list[Figure]:
    sizes = (200, 1000) if quick else (200, 1000, 5000)
    group = "simulator (engines over a virtual network)"
    out = []
    for n in sizes:
        result, wall, rss_kib = _child(n, seed=1)
        fig = result["fig"]
        reference = push_pull_rounds(n)
        rounds = fig["rounds_to_100"]
        ratio = rounds / reference if rounds is not None else float("inf")
        out.append(Figure(
            group, f"{n:,} nodes, fanout 3, no loss, one update: rounds to 100% of nodes",
            rounds if rounds is not None else float("nan"), "rounds",
            against=f"push-pull log3 N + ln ln N = {reference:.2f}", ratio=ratio,
            goal=("<=", GOAL_PUSH_PULL_RATIO, "ratio"),
            note=f"50%: {fig['rounds_to_50']}, 99%: {fig['rounds_to_99']}; Serf logistic "
                 f"{fig['theory_rounds']['serf_logistic']['100']}; honest coverage "
                 f"{fig['honest_coverage']:.0%}"))
        out.append(Figure(
            group, f"{n:,} nodes: bytes per node per update", fig["bytes_per_node"], "B",
            note=f"{fig['bytes_per_node_net_of_idle']:,.0f} B net of idle gossip; redundancy "
                 f"{fig['redundancy']:.2f} copies per useful copy; idle "
                 f"{fig['idle_bytes_per_node_per_s']:.0f} B per node per s (msgpack bodies)"))
        per_round = result["run_s"] / result["node_rounds"]
        out.append(Figure(
            group, f"{n:,} nodes: cost per simulated node-round", per_round * 1e6, "us",
            against=f"one raw Engine.answer_summary call, {result['summary_s'] * 1e6:.2f} us",
            ratio=per_round / result["summary_s"],
            note=f"{per_round / result['round_s']:.1f} x the engine's own idle round driven "
                 f"by hand; wall {wall:.1f} s, peak memory {rss_kib / 1024:,.0f} MiB "
                 f"({rss_kib / n:,.1f} KiB per node)"))
        if n == 5000:
            out.append(Figure(
                group, "5,000 nodes, one update: wall time", wall, "s",
                against=f"the goal, {GOAL_WALL_S:.0f} s", ratio=wall / GOAL_WALL_S,
                goal=("<=", GOAL_WALL_S, "value"),
                note=f"peak memory {rss_kib / 1024:,.0f} MiB"))
    # The engine's anti-entropy rounds alone (no announces): the process the theory models.
    n = 1000
    result, _, _ = _child(n, seed=1, fanout=0)
    fig = result["fig"]
    reference = push_pull_rounds(n)
    out.append(Figure(
        group, f"{n:,} nodes, anti-entropy alone (fanout 0, no announces): rounds to 100%",
        fig["rounds_to_100"], "rounds", against=f"push-pull {reference:.2f}",
        ratio=fig["rounds_to_100"] / reference,
        note=f"mean field {fig['theory_rounds']['push_pull_mean_field']}; redundancy "
             f"{fig['redundancy']:.2f}"))
    return out

if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv):
        print(figure.line(), flush=True)
