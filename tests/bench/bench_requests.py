"""Request delivery benchmark (PROTOCOL.md §12.5): real `pocnode run` processes, one per
network namespace, 1-second gossip interval.

Figures, in seconds and in gossip intervals (p50 and max over several requests):
* **direct**: the recipient's node is reachable; the sender pushes the request to it first.
  Latency = the request's arrival at the recipient's node (its `seen_at`) minus its signing
  time at the sender (`sent_at`): one clock, since every namespace shares the machine's;
* **through gossip**: the sender's and the recipient's hosts cannot reach each other (a
  kernel route makes each unreachable from the other), every other node reaches both; the
  request travels as ciphertext through the others' announces and rounds;
* the receipt's round trip as the sender measures it (`receipt_s`), both ways.

Goal: direct delivery within one interval (it does not wait for gossip at all); through
gossip within a few intervals (an announce to `fanout` peers, then theirs).

Needs root and network namespaces (as tests/integration/netns.py); says so and measures
nothing otherwise.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pocnode.node.localfed import create_federation
from tests.bench.report import Figure
from tests.integration import netns
from tests.integration.fault_harness import NetnsNode
from tests.integration.harness import wait_until

INTERVAL_MS = 1000
PEER_PORT, OPERATOR_PORT = 7443, 7444
START_TIMEOUT_S = 180
DELIVERY_TIMEOUT_S = 60


def _send(sender: NetnsNode, to: str, n: int) -> dict[str, Any]:
    status, sent = sender.api("POST", "/v1/requests", {
        "to": to, "type": "information-request", "subject": f"bench {n}", "text": "x" * 200})
    assert status == 201, sent
    return sent


def _delivery(sender: NetnsNode, recipient: NetnsNode, sent: dict[str, Any]
              ) -> tuple[float, float]:
    url = f"/v1/requests/{sender.member}/{sent['id']}"
    at_recipient = wait_until(lambda: (r := recipient.api("GET", url))[0] == 200 and r[1],
                              timeout=DELIVERY_TIMEOUT_S, every=0.05,
                              what=f"{recipient.member} holds the request")
    back = wait_until(lambda: (r := sender.get(url))["receipt_s"] is not None and r,
                      timeout=DELIVERY_TIMEOUT_S, every=0.05, what="the receipt")
    arrived = at_recipient["timeline"][0]["seen_at"]
    return (arrived - sent["sent_at"]) / 1000, back["receipt_s"]


GROUP = "communication requests (real nodes in network namespaces)"


def _figures(label: str, values: list[float], goal: float | None) -> list[Figure]:
    """p50 and max, in gossip intervals (the ratio is to one interval)."""
    interval = INTERVAL_MS / 1000
    out = []
    for what, x in (("p50", statistics.median(values)), ("max", max(values))):
        out.append(Figure(GROUP, f"{label}, {what} over {len(values)} requests", x, "s",
                          against="one gossip interval", ratio=x / interval,
                          goal=("<=", goal, "ratio") if goal is not None else None))
    return out


def run(quick: bool = False) -> list[Figure | str]:
    n, samples = (8, 3) if quick else (20, 6)
    reason = netns.cannot_run()
    if reason:
        return [f"request delivery: not measured here ({reason})"]
    netns.remove_leftovers()
    lab = netns.Lab(n)
    nodes: list[NetnsNode] = []
    out: list[Figure | str] = []
    try:
        lab.create()
        with tempfile.TemporaryDirectory() as tmp:
            members = create_federation(
                Path(tmp) / "fed", n, interval_ms=INTERVAL_MS, listen_host="0.0.0.0",
                endpoint_template=f"https://{netns.SUBNET}.1{{index:02d}}:{PEER_PORT}",
                peer_port=PEER_PORT, operator_port=OPERATOR_PORT)
            nodes = [NetnsNode(lab, i + 1, m) for i, m in enumerate(members)]
            sender, far = nodes[0], nodes[1]
            for x, y in ((sender, far), (far, sender)):
                netns._ip("-n", netns.host_name(x.index), "route", "add", "unreachable",
                          f"{netns.address(y.index)}/32")
            for node in nodes:
                node.start()
            for node in nodes:
                wait_until(node.ready, timeout=START_TIMEOUT_S, every=0.2,
                           what=f"{node.member} up")
            wait_until(lambda: all(x.get("/v1/status")["authors"] == n for x in nodes),
                       timeout=START_TIMEOUT_S, every=0.5, what="every node.keys everywhere")
            direct, direct_rt, gossip, gossip_rt = [], [], [], []
            for i in range(samples):
                recipient = nodes[2 + i % (n - 2)]
                sent = _send(sender, recipient.member, i)
                assert sent["push"] == "accepted", sent
                one_way, round_trip = _delivery(sender, recipient, sent)
                direct.append(one_way)
                direct_rt.append(round_trip)
                time.sleep(0.2)  # spacing the samples is the point: not a synchronisation
            for i in range(samples):
                sent = _send(sender, far.member, 100 + i)
                assert sent["push"] == "failed", sent
                one_way, round_trip = _delivery(sender, far, sent)
                gossip.append(one_way)
                gossip_rt.append(round_trip)
            at = f"{n} nodes, fanout 3"
            out += _figures(f"{at}: delivered directly (pushed to the recipient's node)",
                            direct, 1.0)
            out += _figures(f"{at}: delivered through gossip (sender and recipient cut off "
                            f"from each other)", gossip, 3.0)
            out += _figures(f"{at}: receipt back at the sender, direct", direct_rt, None)
            out += _figures(f"{at}: receipt back at the sender, through gossip", gossip_rt,
                            None)
    finally:
        for node in nodes:
            node.stop()
        lab.teardown()
    return out


if __name__ == "__main__":
    for item in run(quick="--quick" in sys.argv):
        print(item if isinstance(item, str) else item.line(), flush=True)
