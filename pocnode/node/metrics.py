"""Prometheus metrics of one node, through prometheus-client, one registry per node.

Counters are counted by the engine (plain numbers in the core, which does no I/O) and
by the network layer; this module exposes them at scrape time as counters, and the
node's gauges as gauges. Label values come from a small fixed set (error codes,
outcomes); nothing secret or peer-chosen is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

HELP = {
    "pocnode_events_accepted_total": "Events accepted into the local store.",
    "pocnode_events_refused_total": "Events refused, by spec error code.",
    "pocnode_events_duplicate_total": "Events received that were already held.",
    "pocnode_equivocations_total": "Equivocations proven (authors frozen at a fork).",
    "pocnode_proofs_refused_total": "Equivocation proofs refused, by code.",
    "pocnode_gossip_rounds_total": "Anti-entropy rounds, by outcome.",
    "pocnode_catch_up_exchanges_total": "Exchanges of a catch-up with a peer we are behind, "
                                        "by outcome.",
    "pocnode_peer_requests_refused_total": "Peer requests refused, by code.",
    "pocnode_peer_connections_refused_total": "Peer connections refused or closed, by code.",
    "pocnode_peer_bytes_sent_total": "Peer protocol body bytes answered.",
    "pocnode_peer_bytes_received_total": "Peer protocol body bytes received.",
    "pocnode_peer_wire_bytes_in_total": "HTTP bytes (headers, bodies) received by the peer port.",
    "pocnode_peer_wire_bytes_out_total": "HTTP bytes (headers and bodies) sent by the peer port.",
    "pocnode_log_refusals_suppressed_total": "Refusals counted instead of logged one by one.",
    "pocnode_events_pending": "Out-of-order events held for their predecessors.",
    "pocnode_authors": "Members whose chains this node holds.",
    "pocnode_events": "Events held.",
    "pocnode_peers": "Peers known.",
    "pocnode_peer_connections": "Open peer-port connections.",
    "pocnode_health": "0 ok, 1 degraded, 2 failing.",
}

CounterSource = Callable[[], Iterable[tuple[tuple[str, tuple[tuple[str, str], ...]], float]]]


class _Collector:
    def __init__(self, counters: list[CounterSource], gauges: Mapping[str, Callable[[], float]]):
        self._counters = counters
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        label_names: dict[str, tuple[str, ...]] = {}
        samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
        for source in self._counters:
            for (name, labels), value in source():
                samples.append((name, labels, value))
                label_names.setdefault(name, tuple(k for k, _ in labels))
        for name, labels, value in samples:
            base = name[: -len("_total")] if name.endswith("_total") else name
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(
                    base, HELP.get(name, name), labels=list(label_names[name]))
            if tuple(k for k, _ in labels) != label_names[name]:
                continue
            family.add_metric([v for _, v in labels], value)
        yield from families.values()
        for name, fn in self._gauges.items():
            yield GaugeMetricFamily(name, HELP.get(name, name), value=float(fn()))


class NodeMetrics:
    def __init__(self, counters: list[CounterSource],
                 gauges: Mapping[str, Callable[[], float]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(counters, gauges))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def counter_items(counter: Mapping[Any, float]) -> CounterSource:
    return lambda: list(counter.items())
