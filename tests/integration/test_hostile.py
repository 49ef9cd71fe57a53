"""Issue acceptance: a hostile peer is refused with logged reasons, honest peers are served,
memory stays bounded, and strangers get no members data from the peer port."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pocnode.core import encoding
from pocnode.core.events import build_event
from pocnode.core.keys import SigningKey
from pocnode.core.peer_auth import make_header
from tests.integration.harness import record, wait_until
from tests.integration.peer import Author, call, post, slow_client

pytestmark = pytest.mark.slow


def test_hostile_peer_is_refused_and_honest_peers_keep_converging(federation_factory):
    fed = federation_factory(3)
    bor = fed["BOR"]
    bor.configure("request_timeout_s", "2.0")
    # the production limits per address (the local profile relaxes them for loopback)
    bor.configure("peer_rate", "50.0")
    bor.configure("peer_burst", "200.0")
    bor.configure("max_connections_per_ip", "32")
    fed.start()
    port, fed_id = bor.m.peer_port, Author(fed["ATL"].dir).genesis.id
    wait_until(lambda: bor.get("/v1/events/ATL")["head"] >= 1, timeout=20,
               what="BOR holds ATL's node.keys")
    rss_before = bor.rss_kb()

    # garbage bytes, and a body that is not even msgpack
    status, answer = post(port, "/v1/peer/exchange", os.urandom(5000))
    assert status == 400 and answer["code"] in {"non_minimal", "malformed", "wrong_federation"}
    # forged signatures: ATL's events signed by a stranger's key
    forged = build_event(SigningKey.generate(), fed=fed_id, author="ATL", seq=1, prev=None,
                         kind="node.keys", ts=int(time.time() * 1000), body={"tls": bytes(32)})
    status, answer = call(port, "/v1/peer/exchange", fed_id, {"events": [forged], "want": []})
    assert status == 200 and answer["refused"] == 1 and answer["accepted"] == 0
    # replays: ATL's own node.keys event, already held, sent again and again
    _, summary = call(port, "/v1/peer/exchange", fed_id, {"events": [], "want": [["ATL", 1]]})
    held = summary["events"]
    assert held
    for _ in range(3):
        status, answer = call(port, "/v1/peer/exchange", fed_id, {"events": held, "want": []})
        assert status == 200 and answer["accepted"] == 0 and answer["refused"] == 0
    # oversize body
    status, answer = post(port, "/v1/peer/exchange", b"\x00" * (3 * 1024 * 1024))
    assert status == 413
    # a flood: far more requests than the per-address rate allows
    statuses = [post(port, "/v1/peer/summary", b"\x80")[0] for _ in range(400)]
    assert 429 in statuses
    # a connection that sends one byte a second is closed (deadline: 2 x request timeout)
    lifetimes: list[float] = []
    slow = threading.Thread(target=lambda: lifetimes.append(slow_client(port, seconds=30)))
    slow.start()

    # meanwhile honest peers keep converging through BOR
    wait_until(lambda: bor.api("GET", "/v1/health")[0] == 200, timeout=10, what="rate reset")
    status, published = fed["ATL"].api("POST", "/v1/record", record("ATL", "honest"))
    assert status == 201
    for node in fed.nodes.values():
        wait_until(lambda n=node: n.api("GET", "/v1/directory/ATL")[0] == 200,
                   timeout=30, what=f"{node.member} has ATL's record")
    slow.join(timeout=40)
    assert lifetimes and lifetimes[0] < 12, f"slow connection lived {lifetimes}"

    log = bor.log()
    for reason in ("bad_signature", "oversize", "rate limit", "slow client"):
        assert reason in log, f"no logged reason {reason!r}"
    assert bor.rss_kb() < rss_before + 64 * 1024


def test_strangers_get_no_members_data_from_the_peer_port(federation_factory):
    fed = federation_factory(2)
    fed.start()
    marker = "zq7members"
    assert fed["ATL"].api("POST", "/v1/record", record("ATL", marker))[0] == 201
    port = fed["ATL"].m.peer_port
    fed_id = Author(fed["ATL"].dir).genesis.id
    # everything a stranger can pull without a token carries no members value
    status, answer = call(port, "/v1/peer/exchange", fed_id,
                          {"events": [], "want": [["ATL", 1], ["BOR", 1]]})
    assert status == 200 and answer["events"]
    members_only = [f"Member-{marker}".encode(), f"mfa-{marker}".encode()]
    assert all(v not in raw for raw in answer["events"] for v in members_only)
    assert any(b"ATL CERT" in raw for raw in answer["events"])  # public values do travel
    record_id = None
    for raw in answer["events"]:
        env = encoding.decode(raw)
        payload = encoding.decode(env["event"])
        if payload["kind"] == "record":
            from pocnode.core.events import event_id
            record_id = event_id(env["event"])
    assert record_id is not None
    body = encoding.encode({"fed": fed_id, "events": [record_id]})
    # no token
    status, answer = post(port, "/v1/peer/disclosures", body)
    assert status == 401 and answer["code"] == "unauthenticated"
    # a token signed by a key that is no member's
    pin = bytes.fromhex(fed["ATL"].get("/v1/status")["tls_pin"])
    header = make_header(SigningKey.generate(), fed=fed_id, member="BOR", server_pin=pin,
                         now=int(time.time() * 1000), method="POST",
                         path="/v1/peer/disclosures", body=body)
    status, answer = post(port, "/v1/peer/disclosures", body, headers={"Authorization": header})
    assert status == 401
    assert all(v not in encoding.encode(answer) for v in members_only)
    # while the member BOR does get them
    bor = Author(fed["BOR"].dir)
    header = make_header(bor.key, fed=fed_id, member="BOR", server_pin=pin,
                         now=int(time.time() * 1000), method="POST",
                         path="/v1/peer/disclosures", body=body)
    status, answer = post(port, "/v1/peer/disclosures", body, headers={"Authorization": header})
    assert status == 200
    assert any(members_only[0] in raw for raw in answer["disclosures"])
    assert all(b"Bilateral-" not in raw for raw in answer["disclosures"])
