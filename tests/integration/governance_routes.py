"""The governance routes of the operator API (PROTOCOL.md §5.6-§5.10), exercised against
openapi.yaml.

Called by tests/integration/test_openapi.py with its checking client and an exercise
federation of three founders of which only ATL and BOR run: CAL never ticks, so a proposal
that needs CAL stays open for as long as the test needs it, and a window can end for BOR
while the tally is still pending (the only way a node answers `vote_too_late`). Every answer
is validated against the document, down to the errors; statuses, directories and event pages
are validated as governance changes them (awaiting votes, observers, a new member, a
withdrawn one, the governance kinds).
"""

from __future__ import annotations

from typing import Any

from pocnode.core import encoding
from pocnode.core.consent import HpkeKey
from pocnode.core.governance import make_application
from pocnode.core.keys import SigningKey
from pocnode.net.operator_api import MAX_REQUEST_BYTES
from tests.integration.harness import Federation, Node, wait_until
from tests.integration.peer import call

# Long windows where two nodes must vote in time on a loaded machine; a short one where the
# test waits for BOR's window to end.
LONG_WINDOW_S = 120
SHORT_WINDOW_S = 3
RULES = [f"admission=count:2@{LONG_WINDOW_S}s", f"observer=count:1@{LONG_WINDOW_S}s",
         f"key_recovery=consensus@{LONG_WINDOW_S}s", f"rules=silence@{SHORT_WINDOW_S}s"]
# How long gossip may take to carry an event between the two running nodes.
SPREAD_S = 30
# PROTOCOL.md §2.1: the largest int the canonical encoding carries.
MAX_UINT = 2**64 - 1

PROPOSALS, ONE, VOTE = "/v1/proposals", "/v1/proposals/{id}", "/v1/proposals/{id}/vote"
WITHDRAW, APPLICATIONS = "/v1/withdraw", "/v1/applications"


def governance_federation(factory: Any) -> Federation:
    fed = factory(3, exercise=True, window_ms=LONG_WINDOW_S * 1000, rules=RULES)
    fed.start(["ATL", "BOR"])
    for node in (fed["ATL"], fed["BOR"]):
        wait_until(lambda n=node: n.get("/v1/status")["authors"] == 2, timeout=SPREAD_S,
                   what=f"{node.member} holds both running nodes' node.keys")
    return fed


def _application(fed_id: bytes, member: str, *, role: str = "member",
                 key: SigningKey | None = None, reference: str | None = None) -> bytes:
    key = key or SigningKey.generate("ed25519")
    return make_application(key, fed=fed_id, role=role, member=member,
                            name=f"Applicant {member}", hpke_suite="x25519",
                            hpke=HpkeKey.generate("x25519").public_bytes, endpoints=[],
                            ts=1_700_000_000_000, reference=reference)


def _resigned(raw: bytes) -> bytes:
    """The application with a signature by another key over the same payload."""
    doc = encoding.decode(raw)
    other = SigningKey.generate("ed25519")
    sig = other.sign(b"pocnode/v1/apply\x00" + doc["application"]).to_wire()
    return encoding.encode({"application": doc["application"], "sig": sig})


def _rules(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rule = {"rule": "consensus", "window_ms": LONG_WINDOW_S * 1000}
    return {d: changes.get(d, rule) for d in ("admission", "observer", "key_recovery",
                                              "rules")}


def _view(node: Node, pid: str) -> dict[str, Any] | None:
    status, body = node.api("GET", f"{PROPOSALS}/{pid}")
    return body if status == 200 else None


def _member_row(node: Node, member: str) -> dict[str, Any] | None:
    return next((m for m in node.get("/v1/directory")["members"] if m["member"] == member),
                None)


def _refused(api: Any, node: Node, route: str, status: int, code: str, *,
             url: str | None = None, body: Any = None, raw: bytes | None = None,
             path: str | None = None) -> None:
    answer = api(node, "POST", route, status, url=url, body=body, raw=raw)
    assert answer["code"] == code, (body if raw is None else raw[:40], answer)
    if path is not None:
        assert answer.get("path") == path, answer


def exercise_governance_routes(api: Any, fed: Federation) -> None:
    atl, bor = fed["ATL"], fed["BOR"]
    fed_id = bytes.fromhex(api(atl, "GET", "/v1/status", 200)["federation_id"])
    for node in (atl, bor):
        status = api(node, "GET", "/v1/status", 200)
        assert (status["role"], status["exercise"]) == ("member", True)
        assert status["observers"] == [] and status["proposals_awaiting_vote"] == []
        assert api(node, "GET", PROPOSALS, 200) == {"proposals": []}
        assert api(node, "GET", APPLICATIONS, 200) == {"applications": []}

    # Applications handed to ATL's peer port by strangers (§5.6), listed for a sponsor.
    new_key = SigningKey.generate("ed25519")
    new_app = _application(fed_id, "NEW", key=new_key, reference="NV-2024/17")
    obs_app = _application(fed_id, "OBS", role="observer")
    for raw in (new_app, obs_app):
        status, answer = call(atl.m.peer_port, "/v1/peer/apply", fed_id, {"application": raw})
        assert status == 200 and answer["received"] is True, answer
    listed = api(atl, "GET", APPLICATIONS, 200)["applications"]
    assert [(a["member"], a["role"]) for a in listed] == [("NEW", "member"),
                                                          ("OBS", "observer")]
    assert listed[0]["application"] == new_app.hex()
    assert (listed[0]["reference"], listed[1]["reference"]) == ("NV-2024/17", None)

    # Proposals refused, each with its code; none of them is published.
    head = atl.get("/v1/events/ATL")["head"]
    for body, status, code, path in (
            ({}, 400, "malformed", "body"),
            ({"decision": "expel", "subject": "BOR"}, 400, "malformed", "decision"),
            ({"decision": ["rules"]}, 400, "malformed", "decision"),
            ({"decision": "rules", "governance": _rules(), "subject": "BOR"}, 400,
             "malformed", "subject"),
            ({"decision": "rules", "governance": "consensus"}, 400, "malformed", "governance"),
            ({"decision": "rules", "governance": _rules(
                rules={"rule": "fraction", "num": 1, "den": MAX_UINT + 1,
                       "window_ms": 5000})}, 400, "malformed", "governance.rules.den"),
            ({"decision": "rules", "governance": _rules(
                rules={"rule": "consensus", "window_ms": 999})}, 400, "invalid_request",
             "body.governance.rules.window_ms"),
            ({"decision": "key_recovery", "subject": ["CAL"],
              "key": {"ed25519": "00" * 32}}, 400, "malformed", "subject"),
            ({"decision": "key_recovery", "subject": "ZZZ",
              "key": {"ed25519": new_key.public_key.to_wire()["ed25519"].hex()}}, 400,
             "invalid_request", "subject"),
            ({"decision": "key_recovery", "subject": "CAL", "key": {"ed25519": "ab"}}, 400,
             "malformed", None),
            ({"decision": "admission"}, 400, "invalid_request", "application"),
            ({"decision": "admission", "application": "XY"}, 400, "malformed",
             "application"),
            ({"decision": "admission", "application": "c1"}, 400, "forbidden_type", None),
            ({"decision": "admission", "application": obs_app.hex()}, 400,
             "invalid_request", "application"),
            ({"decision": "admission", "application": _application(
                b"\x01" * 32, "NEW").hex()}, 400, "wrong_federation", "application.fed"),
            ({"decision": "admission", "application": _resigned(new_app).hex()}, 400,
             "bad_signature", "application.sig"),
            ({"decision": "admission", "application": new_app.hex(), "note": ""}, 400,
             "malformed", "note")):
        _refused(api, atl, PROPOSALS, status, code, body=body, path=path)
    for raw in (b"{", b"[]", b"\xff"):
        _refused(api, atl, PROPOSALS, 400, "malformed", raw=raw)
    _refused(api, atl, PROPOSALS, 413, "oversize", raw=b" " * (MAX_REQUEST_BYTES + 1))
    assert atl.get("/v1/events/ATL")["head"] == head

    # Unknown and malformed proposal ids.
    unknown = f"{PROPOSALS}/{'00' * 32}"
    assert api(atl, "GET", ONE, 404, url=unknown)["code"] == "not_found"
    _refused(api, atl, VOTE, 404, "not_found", url=f"{unknown}/vote", body={"vote": "yes"})
    for bad in ("xyz", "AB" * 32, "00" * 31):
        answer = api(atl, "GET", ONE, 400, url=f"{PROPOSALS}/{bad}")
        assert (answer["code"], answer["path"]) == ("malformed", "id")
        _refused(api, atl, VOTE, 400, "malformed", url=f"{PROPOSALS}/{bad}/vote",
                 body={"vote": "yes"}, path="id")

    # An admission (count:2): ATL proposes and votes, BOR votes and it is adopted.
    admission = api(atl, "POST", PROPOSALS, 201, body={
        "decision": "admission", "application": new_app.hex(), "note": "openapi"})
    assert admission["decision"] == "admission"
    pid = admission["id"]
    url = f"{PROPOSALS}/{pid}"
    wait_until(lambda: atl.get(url)["rule"] is not None, timeout=SPREAD_S,
               what="ATL fixes the admission's rule")
    view = api(atl, "GET", ONE, 200, url=url)
    assert (view["kind"], view["subject"], view["proposer"]) == ("admission", "NEW", "ATL")
    assert (view["rule"]["rule"], view["needed"], view["members"]) == ("count", 2, 3)
    assert view["reference"] == "NV-2024/17" and view["awaiting_our_vote"] is True
    wait_until(lambda: pid in bor.get("/v1/status")["proposals_awaiting_vote"],
               timeout=SPREAD_S, what="BOR's status says the admission awaits its vote")
    assert pid in api(bor, "GET", "/v1/status", 200)["proposals_awaiting_vote"]
    # vote fields are checked before any state: a bad body never reaches the tally.
    for body in ({"vote": "maybe"}, {"vote": "yes", "also": 1}, {}, ["yes"]):
        _refused(api, atl, VOTE, 400, "malformed", url=f"{url}/vote", body=body)
    _refused(api, atl, VOTE, 413, "oversize", url=f"{url}/vote",
             raw=b" " * (MAX_REQUEST_BYTES + 1))
    _refused(api, atl, VOTE, 400, "invalid_request", url=f"{url}/vote",
             body={"vote": "object"}, path="vote")
    voted = api(atl, "POST", VOTE, 201, url=f"{url}/vote", body={"vote": "yes"})
    assert (voted["id"], voted["vote"], voted["outcome"]) == (pid, "yes", "pending")
    _refused(api, atl, VOTE, 409, "double_vote", url=f"{url}/vote", body={"vote": "no"})
    wait_until(lambda: [b["member"] for b in bor.get(url)["ballots"]] == ["ATL"],
               timeout=SPREAD_S, what="ATL's ballot at BOR")
    voted = api(bor, "POST", VOTE, 201, url=f"{url}/vote", body={"vote": "yes"})
    assert voted["outcome"] == "adopted"
    _refused(api, bor, VOTE, 409, "no_change", url=f"{url}/vote", body={"vote": "no"})
    wait_until(lambda: atl.get(url)["final"], timeout=SPREAD_S, what="ATL adopts NEW")
    view = api(atl, "GET", ONE, 200, url=url)
    assert (view["outcome"], view["tally"]["yes"]) == ("adopted", 2)
    assert all(b["counted"] and b["code"] is None for b in view["ballots"])
    # NEW is in force now: its id, and its key under another id, cannot be admitted again.
    _refused(api, atl, PROPOSALS, 400, "id_in_use", path="application.id",
             body={"decision": "admission", "application": new_app.hex()})
    _refused(api, atl, PROPOSALS, 400, "key_in_use", path="application.key", body={
        "decision": "admission", "application": _application(fed_id, "NEW-TWO",
                                                              key=new_key).hex()})
    directory = api(atl, "GET", "/v1/directory", 200)["members"]
    row = next(m for m in directory if m["member"] == "NEW")
    assert (row["name"], row["record_seq"], row["withdrawn"]) == ("Applicant NEW", None, False)
    assert api(atl, "GET", "/v1/status", 200)["members"] == 4

    # An observer (count:1): adopted by ATL's yes alone; not a member, so not listed.
    observer = api(atl, "POST", PROPOSALS, 201, body={"decision": "observer",
                                                       "application": obs_app.hex()})
    ourl = f"{PROPOSALS}/{observer['id']}"
    wait_until(lambda: atl.get(ourl)["rule"] is not None, timeout=SPREAD_S,
               what="ATL fixes the observer proposal's rule")
    voted = api(atl, "POST", VOTE, 201, url=f"{ourl}/vote", body={"vote": "yes"})
    assert voted["outcome"] == "adopted"
    for node in (atl, bor):
        wait_until(lambda n=node: n.get("/v1/status")["observers"] == ["OBS"],
                   timeout=SPREAD_S, what=f"{node.member} holds OBS as an observer")
        assert api(node, "GET", "/v1/status", 200)["observers"] == ["OBS"]
        assert "OBS" not in {m["member"] for m in api(node, "GET", "/v1/directory", 200)
                             ["members"]}

    # A key recovery (consensus): rejected for good by ATL's no.
    recovery = api(atl, "POST", PROPOSALS, 201, body={
        "decision": "key_recovery", "subject": "CAL", "from_seq": 1,
        "key": {k: v.hex() for k, v in SigningKey.generate("ed25519").public_key
                .to_wire().items()}})
    rurl = f"{PROPOSALS}/{recovery['id']}"
    wait_until(lambda: atl.get(rurl)["rule"] is not None, timeout=SPREAD_S,
               what="ATL fixes the recovery's rule")
    voted = api(atl, "POST", VOTE, 201, url=f"{rurl}/vote", body={"vote": "no"})
    assert voted["outcome"] == "rejected"
    view = api(atl, "GET", ONE, 200, url=rurl)
    assert (view["subject"], view["fingerprint"], view["final"]) == ("CAL", None, True)

    # An amendment by silence with a short window: once BOR's window has ended (its node
    # ticked after it) and CAL's keeps the tally open, BOR's objection is too late.
    amendment = api(atl, "POST", PROPOSALS, 201, body={
        "decision": "rules", "note": "shorter windows",
        "governance": _rules(admission={"rule": "fraction", "num": 2, "den": 3,
                                        "window_ms": 60_000})})
    aurl = f"{PROPOSALS}/{amendment['id']}"
    wait_until(lambda: (v := _view(bor, amendment["id"])) is not None
               and v["our_window_ends"] is not None and v["rule"] is not None
               and not v["awaiting_our_vote"], timeout=SHORT_WINDOW_S + SPREAD_S,
               what="BOR's window for the amendment ends")
    view = api(bor, "GET", ONE, 200, url=aurl)
    assert (view["kind"], view["subject"], view["outcome"]) == ("rules", None, "pending")
    assert (view["rule"]["rule"], view["needed"], view["rules_version"]) == ("silence", 0, 1)
    _refused(api, bor, VOTE, 409, "vote_too_late", url=f"{aurl}/vote",
             body={"vote": "object"})
    listed = api(bor, "GET", PROPOSALS, 200)["proposals"]
    assert [p["kind"] for p in listed] == ["rules", "key_recovery", "observer", "admission"]
    api(atl, "GET", PROPOSALS, 200)
    # The governance kinds in the chains' summaries: ATL proposed and voted, BOR ticked.
    for member, written in (("ATL", {"gov.propose", "gov.vote"}), ("BOR", {"gov.tick"})):
        kinds = {e["kind"] for e in api(bor, "GET", "/v1/events/{member}", 200,
                                        url=f"/v1/events/{member}?limit=500")["events"]}
        assert written <= kinds, (member, kinds)

    # BOR withdraws: final, so only a body that says so is taken.
    for body, path in (({}, "body"), ({"confirm": False}, "confirm"),
                       ({"confirm": "true"}, "confirm"), ({"confirm": True, "reason": None},
                                                          "reason"),
                       ({"confirm": True, "reason": ""}, "reason"),
                       ({"confirm": True, "why": "x"}, "body"), ([True], "body")):
        _refused(api, bor, WITHDRAW, 400, "malformed", body=body, path=path)
    _refused(api, bor, WITHDRAW, 400, "malformed", raw=b"")
    _refused(api, bor, WITHDRAW, 413, "oversize", raw=b" " * (MAX_REQUEST_BYTES + 1))
    assert _member_row(bor, "BOR")["withdrawn"] is False  # type: ignore[index]
    gone = api(bor, "POST", WITHDRAW, 201, body={"confirm": True, "reason": "openapi test"})
    assert gone["member"] == "BOR"
    _refused(api, bor, WITHDRAW, 400, "invalid_request", body={"confirm": True})
    _refused(api, bor, VOTE, 400, "invalid_request", url=f"{aurl}/vote",
             body={"vote": "object"})
    _refused(api, bor, PROPOSALS, 400, "invalid_request", body={
        "decision": "admission", "application": obs_app.hex()})
    wait_until(lambda: (_member_row(atl, "BOR") or {}).get("withdrawn"), timeout=SPREAD_S,
               what="ATL sees BOR withdrawn")
    assert next(m for m in api(atl, "GET", "/v1/directory", 200)["members"]
                if m["member"] == "BOR")["withdrawn"] is True
    assert api(bor, "GET", "/v1/status", 200)["role"] == "member"
    assert "member.withdraw" in {e["kind"] for e in api(
        atl, "GET", "/v1/events/{member}", 200, url="/v1/events/BOR?limit=500")["events"]}
