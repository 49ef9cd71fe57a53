"""Issue acceptance: a federation of real nodes converges, restarts, catches up."""

from __future__ import annotations

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow


def _record_seq(node, member):
    status, body = node.api("GET", f"/v1/directory/{member}")
    return body["seq"] if status == 200 else 0


def test_five_nodes_converge_and_survive_restarts(federation_factory):
    fed = federation_factory(5)
    fed.start()
    status, published = fed["ATL"].api("POST", "/v1/record", record("ATL", "m4rk3r"))
    assert status == 201, published
    seq = published["seq"]
    for node in fed.nodes.values():
        wait_until(lambda n=node: _record_seq(n, "ATL") == seq, timeout=30,
                   what=f"{node.member} holds ATL's record")
    view = fed["BOR"].get("/v1/directory/ATL")["record"]["entries"]
    cert = next(e for e in view if e["id"] == "cert")
    assert cert["fields"]["organisation"] == "ATL CERT m4rk3r"
    # members data reaches members (after the authenticated pull), bilateral never does
    wait_until(lambda: "person" in next(e for e in fed["CAL"].get("/v1/directory/ATL")
                                        ["record"]["entries"] if e["id"] == "mfa")["fields"],
               timeout=30, what="members values reach CAL")
    duty = next(e for e in fed["CAL"].get("/v1/directory/ATL")["record"]["entries"]
                if e["id"] == "duty")
    assert "person" not in duty["fields"] and duty["withheld"]["bilateral"] >= 2
    for node in fed.nodes.values():   # 5 node.keys + 1 record, wherever gossip has got to
        wait_until(lambda n=node: n.get("/v1/status")["events"] >= 6, timeout=30,
                   what=f"{node.member} holds every node.keys and ATL's record")
    held = {name: node.get("/v1/status")["events"] for name, node in fed.nodes.items()}
    fed.stop_all()
    fed.start()
    for name, node in fed.nodes.items():
        assert _record_seq(node, "ATL") == seq
        assert node.get("/v1/status")["events"] >= held[name], name  # nothing held is lost


def test_a_node_down_during_100_updates_catches_up_and_a_late_joiner_syncs(federation_factory):
    fed = federation_factory(5)
    fed.start(["ATL", "BOR", "CAL", "DUN"])
    fed["DUN"].stop()
    last = None
    for i in range(100):
        status, last = fed["ATL"].api("POST", "/v1/record", record("ATL", f"u{i}"))
        assert status == 201, last
    fed["DUN"].start()
    fed["ELB"].start()   # never ran before: joins late
    for name in ("DUN", "ELB"):
        fed[name].wait_ready()
        wait_until(lambda n=fed[name]: _record_seq(n, "ATL") == last["seq"], timeout=60,
                   what=f"{name} caught up with ATL's 100 updates")
    events = fed["ELB"].get("/v1/events/ATL?from=1&limit=500")
    assert events["head"] == last["seq"]
