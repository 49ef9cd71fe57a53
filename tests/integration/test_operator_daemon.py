"""What an operator sees from the daemon itself (issue: the operator's guide followed
literally): real nodes, the CLI in subprocesses.

- members' values not yet received are shown as awaiting, never as withheld, and arrive
  within seconds of the record;
- health is computed (a node whose peers are all gone is not "ok"), and `pocnode health`
  exits with a status monitoring can use;
- a port in use, consent to oneself, an offer made twice, an incoming offer, a token
  rotated: each says what happened and what to do, in one line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "pocnode", *args], capture_output=True,
                          text=True, timeout=timeout)


def _entry(view: dict, entry_id: str) -> dict:
    return next(e for e in view["record"]["entries"] if e["id"] == entry_id)


def test_members_values_are_awaited_not_withheld_and_arrive_within_seconds(federation_factory):
    fed = federation_factory(3)
    fed.start()
    atl, bor = fed["ATL"], fed["BOR"]
    wait_until(lambda: bor.get("/v1/status")["authors"] == 3, timeout=30,
               what="node.keys everywhere")
    published = time.monotonic()
    assert atl.api("POST", "/v1/record", record("ATL", "await1"))[0] == 201
    seen_withheld = []
    arrived = None
    deadline = published + 30
    while time.monotonic() < deadline:
        status, view = bor.api("GET", "/v1/directory/ATL")
        if status == 200:
            mfa = _entry(view, "mfa")
            if "members" in mfa["withheld"]:
                seen_withheld.append(mfa["withheld"])
            if "person" in mfa["fields"]:
                arrived = time.monotonic() - published
                break
            assert mfa["awaiting"].get("members"), mfa  # on its way, said so
        time.sleep(0.05)  # a poll, not a synchronisation: the loop ends on the condition
    assert not seen_withheld, f"members values shown as withheld to a member: {seen_withheld}"
    assert arrived is not None and arrived < 10, f"members values took {arrived} s"
    print(f"\nmembers values reached BOR {arrived:.2f} s after the record was published")
    # the bilateral entry is withheld (BOR may not read it), never "awaiting"
    duty = _entry(bor.get("/v1/directory/ATL"), "duty")
    assert duty["withheld"] == {"bilateral": 3} and duty["awaiting"] == {}


def test_health_is_computed_and_pocnode_health_exits_accordingly(federation_factory):
    fed = federation_factory(2)
    fed.start()
    atl, bor = fed["ATL"], fed["BOR"]
    wait_until(lambda: atl.get("/v1/status")["health"]["status"] == "ok", timeout=30,
               what="ATL healthy")
    out = cli("health", "--data-dir", str(atl.dir))
    assert out.returncode == 0 and "ok" in out.stdout, out
    bor.stop()
    # ATL's only peer is gone: after the stale window (30 intervals of 300 ms) it says so
    wait_until(lambda: atl.get("/v1/status")["health"]["status"] != "ok", timeout=60,
               what="ATL notices it reaches no peer")
    health = atl.get("/v1/status")["health"]
    assert health["status"] == "failing" and any("no peer reached" in r
                                                 for r in health["reasons"]), health
    out = cli("health", "--data-dir", str(atl.dir))
    assert out.returncode == 2 and "no peer reached" in out.stdout, out
    out = cli("health", "--data-dir", str(bor.dir))
    assert out.returncode == 3 and "unreachable" in out.stdout, out
    bor.start()
    bor.wait_ready()
    wait_until(lambda: atl.get("/v1/status")["health"]["status"] == "ok", timeout=60,
               what="ATL healthy again once BOR is back")


def test_a_port_in_use_names_the_setting_and_says_the_node_did_not_start(federation_factory):
    fed = federation_factory(1)
    node = fed["ATL"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.m.peer_port))
        taken.listen(1)
        out = cli("run", "--data-dir", str(node.dir), timeout=60)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    assert f"port {node.m.peer_port} is in use" in lines[0]
    assert "[peer] listen_port" in lines[0] and "did not start" in lines[0]
    assert "Traceback" not in out.stderr


def test_consent_mistakes_offers_and_tokens_say_what_happened(federation_factory):
    fed = federation_factory(2)
    fed.start()
    atl, bor = fed["ATL"], fed["BOR"]
    wait_until(lambda: atl.get("/v1/status")["authors"] == 2, timeout=30,
               what="node.keys exchanged")
    own = cli("consent", "offer", "ATL", "--data-dir", str(atl.dir))
    assert own.returncode == 1 and own.stderr.count("\n") == 1, own
    assert "invalid_request" in own.stderr and "yourself" in own.stderr
    assert cli("consent", "offer", "BOR", "--data-dir", str(atl.dir)).returncode == 0
    again = cli("consent", "offer", "BOR", "--data-dir", str(atl.dir))
    assert again.returncode == 0 and "already offered" in again.stdout, again
    assert atl.get("/v1/events/ATL")["head"] == 2  # node.keys and one offer, not two
    # BOR sees an offer awaiting its answer, in the list and in its log
    wait_until(lambda: any(r["awaiting_our_answer"] for r in bor.get("/v1/consent")["consents"]),
               timeout=30, what="BOR sees ATL's offer awaiting an answer")
    (row,) = bor.get("/v1/consent")["consents"]
    assert row["member"] == "ATL" and row["they_offered_at"] and row["we_offered_at"] is None
    assert "awaiting our answer" in bor.log()
    listed = json.loads(cli("consent", "list", "--json", "--data-dir", str(bor.dir)).stdout)
    assert listed[0]["awaiting_our_answer"] is True
    # the operator token: rotated, the old one refused, the CLI reads the new file
    old = atl.token
    out = cli("token", "rotate", "--data-dir", str(atl.dir))
    assert out.returncode == 0 and "replaced" in out.stdout, out
    assert atl.api("GET", "/v1/status", token=old)[0] == 401
    assert cli("status", "--data-dir", str(atl.dir)).returncode == 0
    # nothing in logs or the peer table is a Python object's repr
    for node in (atl, bor):
        assert " object at 0x" not in node.log()
        assert " object at 0x" not in json.dumps(node.api("GET", "/v1/peers", token=(
            node.dir / "token").read_text().strip())[1])
