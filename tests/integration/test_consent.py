"""Issue acceptance: mutual consent and confidential disclosure, with real nodes A, B, C.

C's node runs with the traffic test hook: every plaintext byte it receives on its peer
port and in answers to its own requests is written to a file, which the test searches,
together with every file of C's data directory, for A's bilateral values.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.harness import wait_until

pytestmark = pytest.mark.slow


def record(member: str, marker: str) -> dict:
    return {"template": 1, "entries": [
        {"id": "cert", "domain": "technical", "visibility": "public",
         "organisation": f"{member} CERT pub{marker}", "email": f"pub{marker}@example.org"},
        {"id": "mfa", "domain": "diplomatic", "visibility": "members",
         "organisation": f"{member} MFA mem{marker}", "email": f"mem{marker}@example.org"},
        {"id": "duty", "domain": "policy", "visibility": "bilateral",
         "organisation": f"{member} Duty bil{marker}", "person": f"Bilateral bil{marker}",
         "phone": "+41225550111"},
    ]}


def fields(node, member: str) -> dict[str, dict]:
    status, view = node.api("GET", f"/v1/directory/{member}")
    assert status == 200, view
    return {e["id"]: e for e in view["record"]["entries"]}


def holds_bilateral(node, member: str) -> bool:
    return "person" in fields(node, member)["duty"]["fields"]


def files_contain(directory, needle: bytes) -> list[str]:
    hits = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                if needle in f.read():
                    hits.append(path)
    return hits


def test_mutual_consent_discloses_bilateral_values_only_between_the_two(federation_factory):
    fed = federation_factory(3)
    a, b, c = fed["ATL"], fed["BOR"], fed["CAL"]
    dump = c.dir / "traffic.dump"
    a.start(), b.start()
    c.start(traffic_dump=dump)
    for n in (a, b, c):
        n.wait_ready()
    for n, m in ((a, "A1"), (b, "B1"), (c, "C1")):
        assert n.api("POST", "/v1/record", record(n.member, m))[0] == 201
    for viewer in (a, b, c):
        for author in ("ATL", "BOR", "CAL"):
            wait_until(lambda v=viewer, m=author: v.api("GET", f"/v1/directory/{m}")[0] == 200
                       and "email" in fields(v, m)["mfa"]["fields"], timeout=30,
                       what=f"{viewer.member} holds {author}'s record and members values")

    # before consent: public and members values, bilateral only as withheld digests
    for viewer, author in ((b, "ATL"), (c, "ATL"), (a, "BOR")):
        duty = fields(viewer, author)["duty"]
        assert "person" not in duty["fields"] and duty["withheld"]["bilateral"] >= 2
        assert fields(viewer, author)["cert"]["fields"]["email"].startswith("pub")

    # A and B both offer: each sees the other's bilateral values; C still does not
    assert a.api("POST", "/v1/consent/BOR", {"action": "offer"})[0] == 201
    status, answer = b.api("POST", "/v1/consent/ATL", {"action": "offer"})
    assert status == 201
    wait_until(lambda: holds_bilateral(b, "ATL"), timeout=30, what="B sees A's bilateral")
    wait_until(lambda: holds_bilateral(a, "BOR"), timeout=30, what="A sees B's bilateral")
    assert fields(b, "ATL")["duty"]["fields"]["person"] == "Bilateral bilA1"
    assert [{k: r[k] for k in ("member", "we_offer", "they_offer", "mutual")}
            for r in b.get("/v1/consent")["consents"]] == [
        {"member": "ATL", "we_offer": True, "they_offer": True, "mutual": True}]
    # C's node learned neither the values nor who consented to whom
    assert not holds_bilateral(c, "ATL") and not holds_bilateral(c, "BOR")
    assert c.get("/v1/consent")["consents"] == []

    # A updates its bilateral entry: it reaches B
    assert a.api("POST", "/v1/record", record("ATL", "A2"))[0] == 201
    wait_until(lambda: fields(b, "ATL")["duty"]["fields"].get("person") == "Bilateral bilA2",
               timeout=30, what="B gets A's updated bilateral values")

    # A withdraws: its next update does not reach B, and B's node erases what it held
    assert a.api("POST", "/v1/consent/BOR", {"action": "withdraw"})[0] == 201
    wait_until(lambda: not holds_bilateral(b, "ATL"), timeout=30,
               what="B no longer shows A's bilateral values")
    assert a.api("POST", "/v1/record", record("ATL", "A3"))[0] == 201
    wait_until(lambda: fields(b, "ATL")["cert"]["fields"]["email"] == "pubA3@example.org",
               timeout=30, what="B has A's third record")
    assert not holds_bilateral(b, "ATL")
    # B's offer still stands, alone: offering again writes nothing and says so
    status, answer = b.api("POST", "/v1/consent/ATL", {"action": "offer"})
    assert status == 409 and answer["code"] == "no_change", answer
    (row,) = b.get("/v1/consent")["consents"]
    assert row["we_offer"] and not row["they_offer"] and not row["mutual"]

    # nothing of A's bilateral values anywhere at C, and (after erasure) nowhere at B
    fed.stop_all()
    for value in (b"bilA1", b"bilA2", b"bilA3"):
        assert files_contain(c.dir, value) == [], value
        assert dump.exists() and value not in dump.read_bytes()
    for value in (b"bilA1", b"bilA2"):
        # every file of B's data directory: database, WAL, logs
        assert files_contain(b.dir, value) == [], value
    assert b"memA1" in dump.read_bytes() or files_contain(c.dir, b"memA1")  # members do flow


def test_strangers_read_public_values_only(federation_factory):
    from tests.integration.peer import tls_context

    fed = federation_factory(1)
    fed.start()
    assert fed["ATL"].api("POST", "/v1/record", record("ATL", "S1"))[0] == 201
    import http.client

    from pocnode.core import encoding

    conn = http.client.HTTPSConnection("127.0.0.1", fed["ATL"].m.peer_port, timeout=10,
                                       context=tls_context())
    conn.request("GET", "/v1/peer/public/ATL")
    resp = conn.getresponse()
    raw = resp.read()
    assert resp.status == 200
    view = encoding.decode(raw, max_size=1 << 20)["record"]
    entries = {e["id"]: e for e in view["entries"]}
    assert entries["cert"]["fields"]["email"] == "pubS1@example.org"
    assert entries["mfa"]["fields"] == {} and entries["duty"]["fields"] == {}
    assert b"memS1" not in raw and b"bilS1" not in raw


def test_consent_cli(federation_factory):
    fed = federation_factory(2)
    fed.start()
    wait_until(lambda: fed["ATL"].get("/v1/status")["authors"] == 2, timeout=20,
               what="node.keys exchanged")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pocnode", *args], capture_output=True,
                              text=True, timeout=60)

    out = cli("consent", "offer", "BOR", "--data-dir", str(fed["ATL"].dir))
    assert out.returncode == 0 and "not mutual yet" in out.stdout, out.stderr
    listed = cli("consent", "list", "--data-dir", str(fed["ATL"].dir), "--json")
    assert '"we_offer": true' in listed.stdout
    bad = cli("consent", "offer", "ZZZ", "--data-dir", str(fed["ATL"].dir))
    assert bad.returncode == 1 and "unknown_author" in bad.stderr


def test_post_quantum_federation_seals_with_the_hybrid_suite(federation_factory):
    """ML-KEM-768 + X25519 for sealing, ML-DSA-65 + Ed25519 for signing: all of pocnode's
    post-quantum options together in one federation."""
    fed = federation_factory(2, hpke_suite="mlkem768-x25519", alg="ed25519+mldsa65")
    fed.start()
    a, b = fed["ATL"], fed["BOR"]
    assert a.api("POST", "/v1/record", record("ATL", "PQ"))[0] == 201
    wait_until(lambda: b.api("GET", "/v1/directory/ATL")[0] == 200 and
               b.get("/v1/status")["authors"] == 2, timeout=30, what="B holds A's record")
    assert a.api("POST", "/v1/consent/BOR", {"action": "offer"})[0] == 201
    assert b.api("POST", "/v1/consent/ATL", {"action": "offer"})[0] == 201
    wait_until(lambda: holds_bilateral(b, "ATL"), timeout=30, what="B sees A's bilateral")
    assert fields(b, "ATL")["duty"]["fields"]["person"] == "Bilateral bilPQ"


def test_erased_values_leave_the_wal_once_a_reader_lets_go(federation_factory):
    """A reader holding B's database (an online backup, say) keeps old pages in the WAL;
    B's node retries the checkpoint until the erased values are gone from every file."""
    import sqlite3

    fed = federation_factory(2)
    fed.start()
    a, b = fed["ATL"], fed["BOR"]
    assert a.api("POST", "/v1/record", record("ATL", "W1"))[0] == 201
    wait_until(lambda: b.api("GET", "/v1/directory/ATL")[0] == 200 and
               b.get("/v1/status")["authors"] == 2, timeout=30, what="B holds A's record")
    assert a.api("POST", "/v1/consent/BOR", {"action": "offer"})[0] == 201
    assert b.api("POST", "/v1/consent/ATL", {"action": "offer"})[0] == 201
    wait_until(lambda: holds_bilateral(b, "ATL"), timeout=30, what="B sees A's bilateral")
    reader = sqlite3.connect(b.dir / "pocnode.db")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM disclosures").fetchone()  # holds a snapshot
    try:
        assert a.api("POST", "/v1/consent/BOR", {"action": "withdraw"})[0] == 201
        wait_until(lambda: not holds_bilateral(b, "ATL"), timeout=30, what="B erases")
    finally:
        reader.rollback()
        reader.close()
    wait_until(lambda: files_contain(b.dir, b"bilW1") == [], timeout=30,
               what="the erased values leave B's WAL once the reader is gone")
