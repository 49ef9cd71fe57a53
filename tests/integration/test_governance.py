"""Governance with real nodes, driven through the CLI (issue: states join after the
genesis, observers by silence, key recovery, withdrawal).

An exercise federation (windows of a few seconds) of real `pocnode run` processes: a state
applies and is admitted, and its node syncs the whole history; an observer is admitted by
silence and another blocked by one objection; a member whose key files are gone recovers its
key by vote, publishes under the new key, and its old key is refused everywhere; a member
withdraws and is no longer gossiped with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pocnode.node.localfed import free_ports
from tests.integration.harness import Federation, Node, record, wait_until
from tests.integration.peer import Author, call

pytestmark = pytest.mark.slow

# Long enough that two CLI votes (each unlocks an Argon2id key file) land inside the window
# on a loaded machine; short enough that silence ends within the test.
WINDOW_S = 15
RULES = ["admission=fraction:2/3", "observer=silence", "key_recovery=fraction:2/3",
         "rules=consensus"]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-P", "-m", "pocnode", *args], capture_output=True,
                         text=True, timeout=timeout)
    return out


def ok(*args: str) -> str:
    out = cli(*args)
    assert out.returncode == 0, f"pocnode {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def proposal(node: Node, kind: str, subject: str) -> dict:
    return wait_until(lambda: next((p for p in node.get("/v1/proposals")["proposals"]
                                    if p["kind"] == kind and p["subject"] == subject), None),
                      timeout=30, what=f"{node.member} knows the {kind} of {subject}")


def outcome(node: Node, pid: str) -> tuple[str, bool]:
    p = node.get(f"/v1/proposals/{pid}")
    return p["outcome"], p["final"]


def make_fed(factory, tmp_path: Path, n: int = 3) -> Federation:
    fed = factory(n, exercise=True, window_ms=WINDOW_S * 1000, rules=RULES)
    fed.start()
    wait_until(lambda: all(node.get("/v1/status")["authors"] == n
                           for node in fed.nodes.values()), timeout=30,
               what="node.keys everywhere")
    return fed


def test_a_state_applies_is_admitted_and_its_node_joins(federation_factory, tmp_path):
    fed = make_fed(federation_factory, tmp_path)
    atl, bor, cal = fed["ATL"], fed["BOR"], fed["CAL"]
    for node in (atl, bor, cal):
        assert node.api("POST", "/v1/record", record(node.member, "g1"))[0] == 201
    out = ok("federation", "join", "--dir", str(fed.root), "--member", "NEW",
             "--name", "Republic of Newland")
    assert "proposed" in out
    new = fed.adopt("NEW")
    p = proposal(bor, "admission", "NEW")
    assert p["rule"]["rule"] == "fraction" and p["members"] == 3 and p["rules_version"] == 1
    assert len(p["fingerprint"].split()) == 8
    for voter in (atl, bor):
        ok("vote", p["id"][:16], "yes", "--data-dir", str(voter.dir))
    for node in (atl, bor, cal):
        wait_until(lambda n=node: outcome(n, p["id"]) == ("adopted", True), timeout=30,
                   what=f"{node.member} sees NEW admitted")
    # the new member's node syncs everything, and its own events are accepted everywhere
    wait_until(lambda: new.get("/v1/status")["role"] == "member", timeout=60,
               what="NEW's node knows it is a member")
    wait_until(lambda: new.get("/v1/status")["summary"] == atl.get("/v1/status")["summary"]
               or new.get("/v1/events/ATL")["head"] == atl.get("/v1/events/ATL")["head"],
               timeout=60, what="NEW holds the full history")
    assert new.api("POST", "/v1/record", record("NEW", "joined"))[0] == 201
    for node in (atl, bor, cal):
        wait_until(lambda n=node: n.api("GET", "/v1/directory/NEW")[0] == 200, timeout=60,
                   what=f"{node.member} holds NEW's record")
        names = {m["member"]: m["name"] for m in node.get("/v1/directory")["members"]}
        assert names["NEW"] == "Republic of Newland"
    # and NEW is in the electorate of proposals made after its admission
    ok("propose", "amend", "--rule", "observer=count:1@4s", "--data-dir", str(atl.dir))
    amendment = proposal(new, "rules", None)
    wait_until(lambda: new.get(f"/v1/proposals/{amendment['id']}")["members"] == 4,
               timeout=30, what="the amendment's electorate holds NEW")
    wait_until(lambda: new.get("/v1/status")["proposals_awaiting_vote"], timeout=30,
               what="NEW's status says a proposal awaits its vote")


def test_observers_by_silence_one_admitted_one_blocked(federation_factory, tmp_path):
    fed = make_fed(federation_factory, tmp_path)
    atl, bor, cal = fed["ATL"], fed["BOR"], fed["CAL"]
    apps = {}
    for obs in ("OBS", "NGO"):
        d = tmp_path / obs
        peer_port, operator_port = free_ports(2)
        ok("init", "--data-dir", str(d), "--member", obs, "--profile", "local",
           "--peer-port", str(peer_port), "--operator-port", str(operator_port))
        ok("genesis", "install", str(atl.dir / "genesis.bin"), "--data-dir", str(d),
           "--applicant")
        ok("apply", "--data-dir", str(d), "--role", "observer", "--name", f"Observer {obs}",
           "--out", str(tmp_path / f"{obs}.bin"))
        apps[obs] = tmp_path / f"{obs}.bin"
    ok("propose", "observer", str(apps["OBS"]), "--data-dir", str(bor.dir))
    ok("propose", "observer", str(apps["NGO"]), "--data-dir", str(cal.dir))
    blocked = proposal(atl, "observer", "NGO")
    ok("vote", blocked["id"][:16], "object", "--data-dir", str(atl.dir))
    quiet = proposal(atl, "observer", "OBS")
    for node in (atl, bor, cal):
        wait_until(lambda n=node: outcome(n, quiet["id"]) == ("adopted", True),
                   timeout=WINDOW_S * 6 + 30, what=f"{node.member}: OBS admitted by silence")
        assert outcome(node, blocked["id"]) == ("rejected", True)
        assert "OBS" in node.get("/v1/status")["observers"]
        assert "NGO" not in node.get("/v1/status")["observers"]
    # an observer is not a member: it is not in the directory and does not vote
    assert "OBS" not in {m["member"] for m in atl.get("/v1/directory")["members"]}


def test_a_member_recovers_a_lost_key_by_vote_and_the_old_key_is_refused(
        federation_factory, tmp_path):
    fed = make_fed(federation_factory, tmp_path)
    atl, bor, cal = fed["ATL"], fed["BOR"], fed["CAL"]
    old = Author(atl.dir)  # the old key, as a thief holding the lost file would
    atl.stop()
    (atl.dir / "identity.key").unlink()  # lost
    new_key = json.loads(ok("key", "new", "--data-dir", str(atl.dir)))
    (tmp_path / "newkey.json").write_text(json.dumps(new_key))
    atl.start()
    atl.wait_ready()
    ok("propose", "recover", "ATL", "--key", str(tmp_path / "newkey.json"),
       "--data-dir", str(bor.dir))
    p = proposal(cal, "key_recovery", "ATL")
    for voter in (bor, cal):
        ok("vote", p["id"][:16], "yes", "--data-dir", str(voter.dir))
    for node in (atl, bor, cal):
        wait_until(lambda n=node: outcome(n, p["id"]) == ("adopted", True), timeout=30,
                   what=f"{node.member} adopts ATL's key recovery")
    # ATL publishes under its new key, and every node accepts it
    wait_until(lambda: atl.api("POST", "/v1/record", record("ATL", "recovered"))[0] == 201,
               timeout=30, what="ATL publishes with its new key")
    head = atl.get("/v1/events/ATL")["head"]
    for node in (bor, cal):
        wait_until(lambda n=node: n.get("/v1/events/ATL")["head"] >= head, timeout=30,
                   what=f"{node.member} accepts ATL's events under the new key")
    # an event signed by the old key, after the recovery, is refused everywhere
    old.seq, old.prev = head, bytes.fromhex(atl.get(f"/v1/events/ATL?from={head}")
                                            ["events"][0]["id"])
    forged = old.next("node.keys", {"tls": b"z" * 32})
    for node in (atl, bor, cal):
        status, answer = call(node.m.peer_port, "/v1/peer/exchange", old.genesis.id,
                              {"events": [forged], "want": []})
        assert status == 200 and answer["refused"] == 1 and answer["accepted"] == 0


def test_a_member_withdraws_and_is_no_longer_gossiped_with(federation_factory, tmp_path):
    fed = make_fed(federation_factory, tmp_path)
    atl, bor, cal = fed["ATL"], fed["BOR"], fed["CAL"]
    refused = cli("member", "withdraw", "--data-dir", str(cal.dir))
    assert refused.returncode == 1 and "--yes" in refused.stderr
    ok("member", "withdraw", "--data-dir", str(cal.dir), "--yes", "--reason", "leaving")
    for node in (atl, bor):
        wait_until(lambda n=node: next(m for m in n.get("/v1/directory")["members"]
                                       if m["member"] == "CAL")["withdrawn"], timeout=30,
                   what=f"{node.member} sees CAL withdrawn")
        assert all(p["member"] != "CAL" for p in node.get("/v1/peers")["peers"])
    # nothing CAL writes after its withdrawal is accepted by anyone
    author = Author(cal.dir)
    head = bor.get("/v1/events/CAL")
    author.seq = head["head"]
    author.prev = bytes.fromhex(bor.get(f"/v1/events/CAL?from={head['head']}")
                                ["events"][0]["id"])
    late = author.next("node.keys", {"tls": b"w" * 32})
    status, answer = call(bor.m.peer_port, "/v1/peer/exchange", author.genesis.id,
                          {"events": [late], "want": []})
    assert status == 200 and answer["refused"] == 1
    assert "withdrawn" in bor.log()
    # the others go on: a record of ATL's still reaches BOR
    assert atl.api("POST", "/v1/record", record("ATL", "after"))[0] == 201
    wait_until(lambda: bor.api("GET", "/v1/directory/ATL")[0] == 200, timeout=30,
               what="BOR still gets ATL's updates")
