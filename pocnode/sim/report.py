"""Figures of a simulated run, the theory beside them, and their table, JSON and chart.

Two references for how fast an update should reach every node:

* **Push-pull epidemics** (R. Karp, C. Schindelhauer, S. Shenker, B. Vöcking,
  "Randomized rumor spreading", FOCS 2000): when each node calls one random node per
  round and both exchange what they know, a rumour reaches all n nodes in
  log3(n) + O(ln ln n) rounds; the reference used here is ``log3(n) + ln(ln(n))``.
  Beside it, the same process as a mean-field recursion over the fraction u of nodes
  not yet informed, u' = u * u * exp(-(1 - u)) (an uninformed node stays so if the node
  it calls is uninformed and no informed node calls it), for the curve of the chart.
* **Serf's convergence simulator** (hashicorp/serf,
  website/source/assets/javascripts/_simulator.js, ``convergenceAtRound``): a logistic
  curve, infected(x) = n / (1 + (n + 1) * exp(-c * n * x)) after x gossip intervals,
  with contact rate c = fanout / n * (1 - loss) * (1 - failed) * 0.5. The same formula
  is evaluated here with the run's fanout, loss and failed fraction (Byzantine nodes that
  answer nothing useful, and the churn's down fraction). It reaches 100% only in the
  limit: "100%" below is the round where fewer than half a node is left.

pocnode rounds are not exactly either model's: each node runs one push-pull exchange per
interval (the anti-entropy round) and, on accepting fresh events, announces them at
once to ``fanout`` peers, which pull them; announces travel at network speed, not once
per interval. Rounds here are virtual time since publishing divided by the interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pocnode.sim.experiment import Outcome, UpdateTrack

PERCENTS = (50, 99, 100)
# Floats in the JSON: enough digits for the figures, few enough to read.
DIGITS = 4


# -- theory ---------------------------------------------------------------------------------


def push_pull_rounds(n: int) -> float:
    """Karp et al. 2000: log3(n) + ln(ln(n)) rounds to inform all n nodes."""
    return math.log(n, 3) + math.log(math.log(n)) if n > 2 else 1.0


def push_pull_curve(n: int, rounds: int) -> list[float]:
    """Fraction informed after 0..rounds rounds, mean-field push-pull from one node."""
    u = 1 - 1 / n
    out = [1 - u]
    for _ in range(rounds):
        u = u * u * math.exp(-(1 - u))
        out.append(1 - u)
    return out


def push_pull_mean_field_rounds(n: int) -> int:
    """Rounds of the mean-field recursion until fewer than half a node is uninformed."""
    u, rounds = 1 - 1 / n, 0
    while n * u >= 0.5 and rounds < 10_000:
        u = u * u * math.exp(-(1 - u))
        rounds += 1
    return rounds


def serf_rate(n: int, fanout: int, loss: float, failed: float) -> float:
    """c * n of Serf's model: the logistic growth rate per round."""
    return fanout * (1 - loss) * (1 - failed) * 0.5


def serf_fraction(x: float, n: int, fanout: int, loss: float, failed: float) -> float:
    return 1 / (1 + (n + 1) * math.exp(-serf_rate(n, fanout, loss, failed) * x))


def serf_rounds(percent: int, n: int, fanout: int, loss: float, failed: float) -> float:
    """Rounds until the logistic curve reaches ``percent`` of n (100: n - 1/2 nodes)."""
    p = (n - 0.5) / n if percent >= 100 else percent / 100
    rate = serf_rate(n, fanout, loss, failed)
    return math.log((n + 1) * p / (1 - p)) / rate if rate > 0 else math.inf


# -- figures -----------------------------------------------------------------------------


def _at(track: UpdateTrack, percent: int, honest: int) -> int | None:
    """ms after publishing when ``percent`` of honest nodes held the update."""
    need = max(1, math.ceil(honest * percent / 100))
    return track.delays[need - 1] if len(track.delays) >= need else None


def _r(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, DIGITS)


def failed_fraction(outcome: Outcome) -> float:
    """For Serf's model: nodes that pass nothing on, as a fraction of all."""
    config = outcome.config
    passive = sum(v for k, v in outcome.byzantine.items() if k in ("drop", "lie"))
    churn = config.churn.fraction if config.churn else 0.0
    return passive / config.nodes + churn * outcome.honest / config.nodes


def figures(outcome: Outcome) -> dict[str, Any]:
    """Everything a run measured, as plain data: the JSON of ``pocnode simulate``.
    Deterministic for a seed (virtual time only; nothing from the wall clock)."""
    config = outcome.config
    n, honest = config.nodes, outcome.honest
    interval = config.interval_ms
    updates = []
    worst: dict[int, int | None] = {}
    for track in outcome.updates:
        row: dict[str, Any] = {"number": track.number, "author": track.author,
                               "seq": track.seq, "event_id": track.event_id.hex(),
                               "holders": track.holders,
                               "coverage": _r(track.holders / honest)}
        for p in PERCENTS:
            ms = _at(track, p, honest)
            row[f"rounds_to_{p}"] = _r(ms / interval) if ms is not None else None
            row[f"seconds_to_{p}"] = _r(ms / 1000) if ms is not None else None
            if p not in worst or worst[p] is not None:
                worst[p] = None if ms is None else max(ms, worst.get(p) or 0)
        updates.append(row)
    failed = failed_fraction(outcome)
    reference = push_pull_rounds(n)
    count = max(1, len(outcome.updates))
    phase, idle = outcome.phase, outcome.idle
    idle_rate = idle.bytes_sent / n / (outcome.idle_ms / 1000) if outcome.idle_ms else 0.0
    per_update = phase.bytes_sent / n / count if outcome.updates else None
    net = (phase.bytes_sent - idle_rate * n * outcome.phase_ms / 1000) / n / count \
        if outcome.updates else None
    out: dict[str, Any] = {
        "nodes": n,
        "seed": config.seed,
        "honest_nodes": honest,
        "byzantine_nodes": dict(sorted(outcome.byzantine.items())),
        "config": {
            "fanout": config.fanout, "interval_ms": interval, "loss": config.loss,
            "latency_ms": str(config.latency), "partitions": [str(p) for p in config.partitions],
            "churn": str(config.churn) if config.churn else None,
            "byzantine": str(config.byzantine) if config.byzantine else None,
            "updates": config.updates, "update_every_ms": config.update_every_ms,
            "node_keys": config.node_keys, "timeout_ms": config.timeout_ms,
            "connect_timeout_ms": config.connect_timeout_ms,
            "header_bytes": config.header_bytes, "max_virtual_s": config.max_virtual_s},
        "complete": outcome.complete,
    }
    for p in PERCENTS:
        ms = worst.get(p) if outcome.updates else None
        out[f"rounds_to_{p}"] = _r(ms / interval) if ms is not None else None
        out[f"seconds_to_{p}"] = _r(ms / 1000) if ms is not None else None
    out.update({
        "theory_rounds": {
            "push_pull": _r(reference),
            "push_pull_mean_field": push_pull_mean_field_rounds(n),
            "serf_logistic": {str(p): _r(serf_rounds(p, n, config.fanout, config.loss, failed))
                              for p in PERCENTS},
            "serf_failed_fraction": _r(failed)},
        "ratio_to_push_pull": _r(out["rounds_to_100"] / reference)
        if out["rounds_to_100"] is not None else None,
        "honest_coverage": _r(min((t.holders / honest for t in outcome.updates),
                                  default=1.0 if config.updates == 0 else 0.0)),
        "bytes_per_node": _r(per_update),
        "bytes_per_node_net_of_idle": _r(net),
        "idle_bytes_per_node_per_s": _r(idle_rate),
        "redundancy": _r(phase.events_received / phase.events_accepted)
        if phase.events_accepted else None,
        "messages_per_node_per_update": _r(phase.messages / n / count)
        if outcome.updates else None,
        "calls_failed": phase.calls_failed,
        "bytes_by_route": dict(sorted(phase.by_route.items())),
        "bytes_counted": "msgpack bodies of requests and answers, plus the member token of "
                         "authenticated calls, plus header_bytes per message; HTTP headers, "
                         "TLS and TCP/IP are not counted",
        "virtual_seconds": {"start": _r(outcome.warmup_ms / 1000),
                            "idle": _r(outcome.idle_ms / 1000),
                            "updates": _r(outcome.phase_ms / 1000)},
        "start_complete": outcome.warmup_complete,
        "updates": updates,
        "failed_publishes": outcome.failed_publishes,
        "equivocators": {m: _r(f) for m, f in sorted(outcome.equivocators.items())},
        "refusals": dict(sorted(outcome.refusals.items())),
        "sequences_started": dict(sorted(outcome.started.items())),
        "spawn_dropped": outcome.spawn_dropped,
        "simulator_actions": outcome.actions,
    })
    return out


# -- output -------------------------------------------------------------------------------


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "not reached"
    if isinstance(x, float):
        return f"{x:,.2f}{unit}"
    return f"{x:,}{unit}" if isinstance(x, int) else str(x)


def rows(fig: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, measured, reference) for the table."""
    t = fig["theory_rounds"]
    serf = t["serf_logistic"]
    out = [
        ("nodes (honest)", f"{fig['nodes']:,} ({fig['honest_nodes']:,})",
         ", ".join(f"{k}: {v}" for k, v in fig["byzantine_nodes"].items()) or "no Byzantine"),
    ]
    for p in PERCENTS:
        ref = f"Serf logistic {_fmt(serf[str(p)])}"
        if p == 100:
            ref = (f"push-pull {_fmt(t['push_pull'])} (log3 N + ln ln N), mean field "
                   f"{t['push_pull_mean_field']}; " + ref)
        out.append((f"rounds to {p}% (worst update)",
                    _fmt(fig[f"rounds_to_{p}"]) + (f" ({_fmt(fig[f'seconds_to_{p}'])} s)"
                                                   if fig[f"seconds_to_{p}"] is not None
                                                   else ""), ref))
    ratio = fig["ratio_to_push_pull"]
    out += [
        ("rounds to 100% / push-pull reference", _fmt(ratio), "goal <= 1.5"),
        ("honest coverage (least-covered update)", f"{fig['honest_coverage']:.2%}", "100%"),
        ("bytes per node per update", _fmt(fig["bytes_per_node"], " B"),
         f"net of idle gossip {_fmt(fig['bytes_per_node_net_of_idle'], ' B')}"),
        ("redundancy (copies received / useful)", _fmt(fig["redundancy"]), "1.00 is ideal"),
        ("idle bytes per node per second", _fmt(fig["idle_bytes_per_node_per_s"], " B/s"),
         f"one summary exchange per {fig['config']['interval_ms']} ms"),
        ("messages per node per update", _fmt(fig["messages_per_node_per_update"]), ""),
        ("calls failed during updates", _fmt(fig["calls_failed"]), ""),
    ]
    for member, frac in fig["equivocators"].items():
        out.append((f"equivocator {member} frozen by", f"{frac:.2%} of honest nodes", ""))
    if fig["failed_publishes"]:
        out.append(("publishes that failed", str(len(fig["failed_publishes"])),
                    fig["failed_publishes"][0][:60]))
    if not fig["complete"]:
        out.append(("run ended", "before every honest node held every update",
                    f"limit {fig['config']['max_virtual_s']:g} virtual s"))
    return out


def coverage_curve(track: UpdateTrack, honest: int, interval_ms: int
                   ) -> tuple[list[float], list[float]]:
    """Step curve: rounds since publishing, fraction of honest nodes holding."""
    xs, ys = [0.0], [0.0]
    for k, ms in enumerate(track.delays, 1):
        xs += [ms / interval_ms, ms / interval_ms]
        ys += [ys[-1], k / honest]
    return xs, ys


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def plot(outcome: Outcome, fig: dict[str, Any], path: Path) -> None:
    """A PNG of coverage over rounds, each update beside the two models."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, an optional extra: "
                              "pip install 'pocnode[sim]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = outcome.config
    n = config.nodes
    figure, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    last = 1.0
    for i, track in enumerate(outcome.updates):
        xs, ys = coverage_curve(track, outcome.honest, config.interval_ms)
        last = max(last, xs[-1])
        ax.plot(xs, [100 * y for y in ys], color="tab:blue", linewidth=1.2,
                alpha=0.9 if len(outcome.updates) == 1 else 0.5,
                label="pocnode (simulated)" if i == 0 else None)
    reference = push_pull_rounds(n)
    horizon = max(last, reference, fig["theory_rounds"]["serf_logistic"]["100"] or 0) * 1.1
    steps = max(2, int(horizon) + 1)
    curve = push_pull_curve(n, steps)
    ax.plot(range(len(curve)), [100 * y for y in curve], color="tab:orange",
            linestyle=":", marker=".", label="push-pull, mean field")
    xs = [horizon * k / 200 for k in range(201)]
    failed = fig["theory_rounds"]["serf_failed_fraction"] or 0.0
    ax.plot(xs, [100 * serf_fraction(x, n, config.fanout, config.loss, failed) for x in xs],
            color="tab:green", linestyle="--", label="Serf logistic model")
    ax.axvline(reference, color="tab:red", linewidth=0.8,
               label=f"log3 N + ln ln N = {reference:.1f}")
    ax.set_xlim(0, horizon)
    ax.set_ylim(0, 101)
    ax.set_xlabel(f"rounds since publishing (1 round = {config.interval_ms} ms)")
    ax.set_ylabel("% of honest nodes holding the update")
    title = f"N={n}, fanout {config.fanout}, loss {config.loss:g}"
    if config.byzantine:
        title += f", Byzantine {config.byzantine.fraction:g}"
    ax.set_title(title + f", seed {config.seed}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def summary_line(fig: dict[str, Any]) -> str:
    return (f"{fig['nodes']} nodes: 100% of honest nodes in {_fmt(fig['rounds_to_100'])} rounds "
            f"(push-pull reference {_fmt(fig['theory_rounds']['push_pull'])}), coverage "
            f"{fig['honest_coverage']:.2%}, {_fmt(fig['bytes_per_node'], ' B')} per node per "
            f"update")


__all__ = ["PlotUnavailable", "coverage_curve", "figures", "plot", "push_pull_curve",
           "push_pull_mean_field_rounds", "push_pull_rounds", "rows", "serf_fraction",
           "serf_rounds", "summary_line"]
