"""A few counters and gauges in the Prometheus text format (version 0.0.4).

Small enough to write rather than depend on prometheus-client: counters and
gauges with labels, rendered on request. Label values are escaped as the format
requires; nothing secret is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable

_HELP = {
    "pocnode_events_accepted_total": "Events accepted into the local store.",
    "pocnode_events_refused_total": "Events refused, by spec error code.",
    "pocnode_events_duplicate_total": "Events received that were already held.",
    "pocnode_events_pending": "Out-of-order events held for their predecessors.",
    "pocnode_equivocations_total": "Equivocation proofs found.",
    "pocnode_gossip_rounds_total": "Anti-entropy rounds started, by outcome.",
    "pocnode_peer_requests_refused_total": "Peer requests refused, by reason.",
    "pocnode_peer_bytes_sent_total": "Peer protocol body bytes sent (both roles).",
    "pocnode_peer_bytes_received_total": "Peer protocol body bytes received (both roles).",
    "pocnode_authors": "Members whose chains this node holds.",
    "pocnode_peer_wire_bytes_in": "HTTP bytes (headers and bodies) received by the peer port.",
    "pocnode_peer_wire_bytes_out": "HTTP bytes (headers and bodies) sent by the peer port.",
    "pocnode_peer_connections_closed_slow": "Peer connections closed for not finishing a "
                                            "request in time.",
    "pocnode_peer_connections_refused": "Peer connections refused over the connection caps.",
    "pocnode_events": "Events held.",
    "pocnode_peers": "Peers known.",
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = (name, _labels(labels))
        self._counters[key] = self._counters.get(key, 0) + value

    def gauge(self, name: str, fn: Callable[[], float]) -> None:
        self._gauges[name] = fn

    def render(self) -> str:
        lines: list[str] = []
        names = sorted({n for n, _ in self._counters} | set(self._gauges))
        for name in names:
            kind = "gauge" if name in self._gauges else "counter"
            lines.append(f"# HELP {name} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "gauge":
                lines.append(f"{name} {float(self._gauges[name]()):g}")
            else:
                for (n, labels), value in sorted(self._counters.items()):
                    if n == name:
                        lines.append(f"{name}{labels} {value:g}")
        return "\n".join(lines) + "\n"
