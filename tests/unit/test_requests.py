"""Communication requests (PROTOCOL.md §12) in the engine: sealed, delivered, answered, and
every refusal with its spec code. Engines talk through tests/unit/engine_kit.py's direct
network; signatures, HPKE and chains are the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.chain import Verifier
from pocnode.core.consent import HpkeKey
from pocnode.core.engine import Publish
from pocnode.core.errors import InvalidBody, InvalidRequest, Oversize, PocError, UnknownAuthor
from pocnode.core.events import build_event
from pocnode.core.requests import (
    ACKNOWLEDGED,
    ANSWERED,
    DECLINED,
    DELIVERED,
    KIND_REQUEST,
    MAX_PLAINTEXT_BYTES,
    PAD_SIZES,
    PUBLISH,
    Alert,
    RequestMessage,
    StatusMessage,
    apply_opened,
    box_overhead,
    campaign_steps,
    check_request_body,
    frame,
    new_request,
    next_scheduled,
    parse_message,
    ping_report,
    sealed_request_body,
    send_steps,
    status_steps,
    view,
)
from tests.unit.engine_kit import T0, World


class Kit(World):
    """The engine kit, plus the one effect requests add: alerts, kept here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alerts: list[tuple[str, Alert]] = []

    def carry_out(self, node: str, effect: Any) -> Any:
        if isinstance(effect, Alert):
            self.alerts.append((node, effect))
            return None
        return super().carry_out(node, effect)

    def keys_known(self) -> None:
        """Every node publishes its node.keys and everyone syncs."""
        for m, e in self.engines.items():
            message = e.node_keys_message()
            assert message is not None
            self.publish(m, message)
        self.settle(3)

    def send(self, node: str, to: str, **fields: Any) -> Any:
        e = self.engines[node]
        msg = new_request(e, {"to": to, "type": "information-request", "subject": "Hello",
                              "text": "secret-body-text", **fields}, self.now)
        return self.run(node, send_steps(e, msg))

    def status(self, node: str, sender: str, rid: bytes, state: str, **kw: Any) -> Any:
        e = self.engines[node]
        return self.run(node, status_steps(e, (sender, rid), state, **kw))


@pytest.fixture
def kit() -> Kit:
    k = Kit(("ATL", "BOR", "CAL"))
    k.keys_known()
    return k


def test_a_request_is_delivered_directly_acknowledged_and_answered(kit: Kit) -> None:
    request = kit.send("ATL", "BOR", reply_by=T0 + 3_600_000)
    atl, bor, cal = (kit.engines[m] for m in ("ATL", "BOR", "CAL"))
    # Pushed to BOR's own node first: BOR holds it, published its receipt, and was alerted.
    got = bor.requests.find("ATL", request.msg.id)
    assert got is not None and got.msg.text == "secret-body-text"
    assert [s.state for s in got.steps] == [DELIVERED]
    assert [(n, a.summary["event"]) for n, a in kit.alerts] == [("BOR", "request")]
    assert "subject" not in kit.alerts[0][1].summary  # content only where opted in
    assert kit.alerts[0][1].content["subject"] == "Hello"
    mine = atl.requests.find("ATL", request.msg.id)
    assert mine is not None and mine.push == "accepted"
    assert mine.state(kit.now) == DELIVERED and mine.via() == "direct"
    # CAL holds the events but cannot open them.
    kit.settle(2)
    assert cal.requests.requests == {}
    assert cal.verifier.head("ATL")[0] == atl.verifier.head("ATL")[0]

    kit.now += 5_000
    kit.status("BOR", "ATL", request.msg.id, ACKNOWLEDGED)
    kit.now += 5_000
    kit.status("BOR", "ATL", request.msg.id, ANSWERED, text="here is our answer")
    v = view(atl.requests.find("ATL", request.msg.id), "ATL", kit.now)
    assert [t["state"] for t in v["timeline"]] == ["sent", DELIVERED, ACKNOWLEDGED, ANSWERED]
    assert v["state"] == ANSWERED and v["answer"] == "here is our answer"
    assert v["timeline"][2]["at"] == T0 + 5_000 and v["ack_s"] == 5.0
    assert ("ATL", "answered") in [(n, a.summary["event"]) for n, a in kit.alerts]
    # Nothing after the final state; a repeat is a replay, the node says so before writing.
    with pytest.raises(PocError) as caught:
        kit.status("BOR", "ATL", request.msg.id, DECLINED)
    assert caught.value.code == "out_of_order"
    with pytest.raises(PocError) as caught:
        kit.status("BOR", "ATL", request.msg.id, ACKNOWLEDGED)
    assert caught.value.code == "no_change"
    with pytest.raises(PocError) as caught:
        kit.status("ATL", "ATL", request.msg.id, ACKNOWLEDGED)
    assert caught.value.code == "not_party"


def test_through_gossip_when_the_recipient_is_unreachable_then_expired(kit: Kit) -> None:
    kit.down.add("BOR")
    request = kit.send("ATL", "BOR", reply_by=T0 + 60_000)
    atl, bor = kit.engines["ATL"], kit.engines["BOR"]
    mine = atl.requests.find("ATL", request.msg.id)
    assert mine.push == "failed" and mine.state(kit.now) == "sent"
    kit.down.discard("BOR")
    kit.down.add("ATL")  # BOR comes back, ATL goes: only CAL carries it
    kit.settle(2)
    assert bor.requests.find("ATL", request.msg.id) is not None
    kit.down.discard("ATL")
    kit.settle(2)
    assert mine.step(DELIVERED) is not None and mine.via() == "gossip"
    kit.now = T0 + 61_000
    assert mine.state(kit.now) == "expired"
    assert view(mine, "ATL", kit.now)["expired"] is True


def test_decline_with_a_reason_and_publication_needs_both_sides(kit: Kit) -> None:
    request = kit.send("ATL", "BOR")
    rid = request.msg.id
    kit.status("BOR", "ATL", rid, DECLINED, text="not our competence")
    atl, bor, cal = (kit.engines[m] for m in ("ATL", "BOR", "CAL"))
    assert atl.requests.find("ATL", rid).state(kit.now) == DECLINED
    kit.status("ATL", "ATL", rid, PUBLISH, scope="content")
    kit.settle(2)
    assert cal.requests.published_exchanges() == []  # one side alone publishes nothing
    kit.status("BOR", "ATL", rid, PUBLISH, scope="metadata")
    kit.settle(3)
    (record,) = cal.requests.published_exchanges()
    assert record["scope"] == "metadata" and "content" not in record
    assert [s[0] for s in record["steps"]] == [DELIVERED, DECLINED]
    assert record["request"] == request.event_id
    assert atl.requests.published_exchanges() == bor.requests.published_exchanges() == [record]


def _forge(kit: Kit, author: str, message: Any, *, to_key: bytes | None = None,
           own_key: bytes | None = None) -> list[tuple[str, str]]:
    """``author`` publishes ``message`` sealed as it likes; what the others refused."""
    e = kit.engines[author]
    to = message.to
    body = sealed_request_body(suite="x25519", fed=kit.genesis.id, author=author,
                               message=message, to_public=to_key or e.hpke_keys[to],
                               own_public=own_key or e.hpke.public_bytes)
    before = {m: len(x.requests.refusals) for m, x in kit.engines.items()}
    kit.publish(author, Publish(KIND_REQUEST, body))
    kit.settle(2)
    return [(m, r.code) for m, x in kit.engines.items()
            for r in list(x.requests.refusals)[before[m]:]]


def test_forged_receipts_acks_by_others_replays_and_unknown_requests_are_refused(
        kit: Kit) -> None:
    request = kit.send("ATL", "BOR")
    rid = request.msg.id
    atl = kit.engines["ATL"]
    # CAL says "delivered" / "acknowledged" for ATL's request to BOR: ATL refuses.
    for state in (DELIVERED, ACKNOWLEDGED):
        refused = _forge(kit, "CAL", StatusMessage(to="ATL", sender="ATL", id=rid, state=state))
        assert ("ATL", "not_party") in refused
    # The sender acknowledging its own request: BOR refuses it.
    refused = _forge(kit, "ATL", StatusMessage(to="BOR", sender="ATL", id=rid,
                                               state=ACKNOWLEDGED))
    assert ("BOR", "not_party") in refused and ("ATL", "not_party") in refused
    # A receipt for a request ATL never sent.
    refused = _forge(kit, "BOR", StatusMessage(to="ATL", sender="ATL", id=b"\x07" * 16,
                                               state=DELIVERED))
    assert ("ATL", "unknown_request") in refused
    # BOR's receipt again: a replay.
    refused = _forge(kit, "BOR", StatusMessage(to="ATL", sender="ATL", id=rid,
                                               state=DELIVERED))
    assert ("ATL", "replay") in refused
    # ATL re-sends the same request id: BOR refuses the replay, wakes nobody, no receipt.
    alerts = len(kit.alerts)
    refused = _forge(kit, "ATL", request.msg)
    assert ("BOR", "replay") in refused and len(kit.alerts) == alerts
    # A box CAL copies from BOR's chain into its own does not open for anyone.
    bor_event = kit.stores["BOR"].events[("BOR", kit.engines["BOR"].verifier.head("BOR")[0])]
    from pocnode.core.events import parse_event
    copied = parse_event(bor_event).body
    before = len(atl.requests.refusals), len(atl.requests.requests)
    kit.publish("CAL", Publish(KIND_REQUEST, copied))
    kit.settle(2)
    assert (len(atl.requests.refusals), len(atl.requests.requests)) == before
    # Only ATL's one request and BOR's one receipt count.
    assert [s.state for s in atl.requests.find("ATL", rid).steps] == [DELIVERED]


def test_requests_from_non_members_and_to_non_members_are_refused(kit: Kit) -> None:
    outsider = HpkeKey.generate("x25519")
    from pocnode.core.keys import SigningKey
    key = SigningKey.generate()
    msg = RequestMessage(id=b"\x01" * 16, to="BOR", type="ping", subject="x", text="",
                         urgency="routine", lang="en")
    body = sealed_request_body(suite="x25519", fed=kit.genesis.id, author="ZZZ", message=msg,
                               to_public=kit.engines["BOR"].hpke.public_bytes,
                               own_public=outsider.public_bytes)
    raw = build_event(key, fed=kit.genesis.id, author="ZZZ", seq=1, prev=None,
                      kind=KIND_REQUEST, ts=T0, body=body)
    result = kit.run("BOR", kit.engines["BOR"].ingest([raw], source=None, now=T0))
    assert [code for code, _ in result.refused] == ["unknown_author"]
    with pytest.raises(UnknownAuthor):
        kit.send("ATL", "ZZZ")
    with pytest.raises(InvalidRequest):
        kit.send("ATL", "ATL")


def test_oversized_bodies_are_refused_with_oversize(kit: Kit) -> None:
    with pytest.raises(Oversize) as caught:
        kit.send("ATL", "BOR", text="x" * 8001)
    assert caught.value.path == "request.text"
    with pytest.raises(Oversize):
        kit.send("ATL", "BOR", subject="s" * 201)
    # 8000 characters of four UTF-8 bytes each do not fit the largest box.
    with pytest.raises(Oversize) as caught:
        kit.send("ATL", "BOR", text="\U0001f600" * 8000)
    assert caught.value.path == "request"
    # A box larger than the largest padded size: every verifier refuses it.
    overhead = box_overhead("x25519")
    big = [b"\x00" * (MAX_PLAINTEXT_BYTES + 512 + overhead), b"\x01" * (
        MAX_PLAINTEXT_BYTES + 512 + overhead)]
    with pytest.raises(Oversize):
        check_request_body({"suite": "x25519", "boxes": big}, "x25519")
    with pytest.raises(InvalidBody):
        check_request_body({"suite": "x25519", "boxes": [b"\x00" * 100, b"\x01" * 100]},
                           "x25519")
    # A sender that seals an oversized text anyway is refused by the recipient on opening.
    rid = b"\x02" * 16
    raw = frame(RequestMessage(id=rid, to="BOR", type="other", subject="x", text="y" * 8000,
                               urgency="routine", lang="en"))
    grown = raw.replace(b"y" * 8000, b"y" * 8000, 1)
    assert len(grown) in PAD_SIZES
    msg = encoding.decode(raw[4:4 + int.from_bytes(raw[:4], "big")])
    msg["text"] = "y" * 9000
    body = encoding.encode(msg)
    padded = len(body).to_bytes(4, "big") + body
    padded += b"\x00" * (next(s for s in PAD_SIZES if s >= len(padded)) - len(padded))
    with pytest.raises(Oversize):
        parse_message(padded)


def test_a_flood_from_one_member_is_rate_limited_without_delaying_others(kit: Kit) -> None:
    bor = kit.engines["BOR"]
    bor.requests.configure(alerts_per_member_hour=5)
    for _ in range(12):
        kit.send("ATL", "BOR", type="other")
    flood = [r for r in bor.requests.inbox() if r.sender == "ATL"]
    assert len(flood) == 12  # all kept
    assert sum(1 for r in flood if r.limited) == 7
    assert sum(1 for r in flood if r.step(DELIVERED)) == 5
    assert sum(1 for n, a in kit.alerts if n == "BOR") == 5
    # CAL's request, right after the flood, is receipted and alerted at once.
    request = kit.send("CAL", "BOR")
    got = bor.requests.find("CAL", request.msg.id)
    assert not got.limited and got.step(DELIVERED) is not None
    assert kit.alerts[-1][1].summary["sender"] == "CAL"
    # An hour later ATL has its budget again.
    kit.now += 3_600_000
    request = kit.send("ATL", "BOR")
    assert bor.requests.find("ATL", request.msg.id).step(DELIVERED) is not None


def test_a_ping_campaign_reports_delivered_and_unreachable() -> None:
    kit = Kit(("ATL", "BOR", "CAL", "DUN", "ELB"))
    kit.keys_known()
    kit.down.update({"DUN", "ELB"})
    atl = kit.engines["ATL"]
    result = kit.run("ATL", campaign_steps(atl, None, "technical", campaign="first"))
    assert sorted(s["member"] for s in result["sent"]) == ["BOR", "CAL", "DUN", "ELB"]
    report = ping_report(atl.requests, atl.members(), kit.now)
    delivered = {r["member"]: r["delivered"] for r in report["members"]}
    assert delivered == {"BOR": True, "CAL": True, "DUN": False, "ELB": False}
    kit.down.clear()
    kit.now += 60_000
    kit.run("ATL", campaign_steps(atl, None, None, campaign="second"))
    report = ping_report(atl.requests, atl.members(), kit.now)
    assert all(r["delivered"] and r["campaign"] == "second" for r in report["members"])
    assert [c["campaign"] for c in report["campaigns"]] == ["first", "second"]
    assert all(len(r["history"]) == 2 for r in report["members"])


def _restored(kit: Kit, member: str, *, reverse_authors: bool = False) -> Any:
    """A fresh engine for ``member`` with the same keys, restored from its store as the
    node restores (chains, then events author by author), as after a restart."""
    from pocnode.core.engine import Engine, EngineConfig
    from pocnode.core.events import parse_event
    from pocnode.core.requests import finish_restore
    old = kit.engines[member]
    fresh = Engine(genesis=kit.genesis, member=member, key=kit.keys[member],
                   config=EngineConfig(), rng=old.rng, random_bytes=old.random_bytes,
                   hpke=old.hpke, pin=old.pin, now=kit.now)
    events = [parse_event(raw) for _, raw in sorted(kit.stores[member].events.items())]
    for author in {e.author for e in events}:
        mine = [e for e in events if e.author == author]
        fresh.restore_chain(author, [e.id for e in mine], mine[-1].ts)
    if reverse_authors:  # so BOR's statuses come before the request they name
        events.sort(key=lambda e: ([-ord(c) for c in e.author], e.seq))
    fresh.requests.restoring_at = kit.now
    for event in events:
        fresh.restore_event(event)
    finish_restore(fresh)
    fresh.finish_restore()
    kit.engines[member] = fresh
    return fresh


def test_restoring_from_the_chains_rebuilds_the_book_and_pays_owed_receipts(kit: Kit) -> None:
    request = kit.send("ATL", "BOR")
    kit.status("BOR", "ATL", request.msg.id, ACKNOWLEDGED)
    kit.settle(2)
    fresh = _restored(kit, "ATL", reverse_authors=True)
    got = fresh.requests.find("ATL", request.msg.id)
    assert [s.state for s in got.steps] == [DELIVERED, ACKNOWLEDGED]
    assert list(fresh.requests.refusals) == []
    # BOR stores ATL's request, then stops before answering: restored, it owes the receipt
    # and the alert, and pays both from its timer.
    kit.down.add("BOR")
    sent = kit.send("ATL", "BOR")
    kit.down.clear()
    bor = kit.engines["BOR"]
    raws = [raw for (a, _), raw in sorted(kit.stores["ATL"].events.items()) if a == "ATL"]
    kit.run_spawns = False
    kit.run("BOR", bor.ingest(raws, source=None, now=kit.now))
    kit.run_spawns = True
    alerts = len(kit.alerts)
    again = _restored(kit, "BOR")
    for name, sequence in again.due(kit.now):
        if name in ("receipt", "alert"):
            kit.run("BOR", sequence)
    kit.settle(2)
    assert kit.engines["ATL"].requests.find("ATL", sent.msg.id).step(DELIVERED) is not None
    assert [a.summary["event"] for n, a in kit.alerts[alerts:]] == ["request"]
    assert again.due(kit.now + 1000) == [] or all(
        n not in ("receipt", "alert") for n, _ in again.due(kit.now + 1000))


def test_schedule_times() -> None:
    monday_0900 = 1_767_603_600_000  # 2026-01-05 09:00 UTC, a Monday
    assert next_scheduled(["mon 09:00"], monday_0900 - 1) == monday_0900
    assert next_scheduled(["mon 09:00"], monday_0900) == monday_0900 + 7 * 86_400_000
    assert next_scheduled(["09:00", "21:30"], monday_0900) == monday_0900 + 45_000_000
    with pytest.raises(InvalidRequest):
        next_scheduled(["25:00"], 0)


_texts = st.text(max_size=300)


@settings(max_examples=60, deadline=None)
@given(subject=st.text(min_size=1, max_size=200), text=_texts,
       reply_by=st.none() | st.integers(0, 2**63 - 1),
       attachments=st.lists(st.binary(min_size=32, max_size=32), max_size=16),
       state=st.sampled_from([DELIVERED, ACKNOWLEDGED, DECLINED]))
def test_plaintexts_round_trip_and_pad_to_a_class(subject: str, text: str,
                                                  reply_by: int | None,
                                                  attachments: list[bytes], state: str) -> None:
    msg = RequestMessage(id=b"\x05" * 16, to="BOR", type="other", subject=subject, text=text,
                         urgency="urgent", lang="fr-CH", reply_by=reply_by,
                         attachments=tuple(attachments), ref=("CAL", b"\x06" * 16))
    raw = frame(msg)
    assert len(raw) in PAD_SIZES
    assert parse_message(raw) == msg
    status = StatusMessage(to="ATL", sender="ATL", id=b"\x05" * 16, state=state,
                           text=text if state == DECLINED else None)
    assert len(frame(status)) == PAD_SIZES[0] or len(text) > 400
    assert parse_message(frame(status)) == status


def test_the_verifier_accepts_request_events_of_the_right_shape(kit: Kit) -> None:
    verifier = Verifier(kit.genesis)
    for (_author, _seq), raw in sorted(kit.stores["CAL"].events.items()):
        verifier.ingest(raw)


# -- the vectors of §12, against the reference (the conformance suite runs them against the
# independent verifier) ---------------------------------------------------------------------

_VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def _vectors(name: str) -> dict[str, Any]:
    return json.loads((_VECTORS / name).read_text())


@pytest.mark.parametrize("vector", _vectors("request-plaintexts.json")["vectors"],
                         ids=lambda v: v["name"])
def test_plaintext_vector(vector: dict[str, Any]) -> None:
    try:
        parse_message(bytes.fromhex(vector["input_hex"]))
        got = "valid"
    except PocError as exc:
        got = exc.code
    assert got == vector["expect"]


class _Carrier:
    def __init__(self, author: str, seq: int) -> None:
        self.author, self.seq, self.ts = author, seq, T0 + seq
        self.id = seq.to_bytes(4, "big") + author.encode() + b"\x00" * (28 - len(author))


@pytest.mark.parametrize("vector", _vectors("request-folds.json")["vectors"],
                         ids=lambda v: v["name"])
def test_fold_vector(vector: dict[str, Any]) -> None:
    kit = Kit(("ATL", "BOR", "CAL"))
    engine = kit.engines[vector["me"]]
    for step in vector["history"]:
        apply_opened(engine, _Carrier(step["author"], step["seq"]),
                     bytes.fromhex(step["input_hex"]), False)
    refusals = len(engine.requests.refusals)
    apply_opened(engine, _Carrier(vector["author"], 10_000),
                 bytes.fromhex(vector["input_hex"]), False)
    got = engine.requests.refusals[-1].code if len(engine.requests.refusals) > refusals \
        else "valid"
    assert got == vector["expect"]


def test_a_scheduled_campaign_starts_from_the_timer(kit: Kit) -> None:
    atl = kit.engines["ATL"]
    atl.requests.configure(alerts_per_member_hour=60, schedule=["00:05"], targets=["BOR"])
    assert [n for n, _ in atl.due(kit.now)] == ["gossip"]  # T0 is midnight: next is 00:05
    assert atl.requests.next_campaign_at == T0 + 5 * 60_000
    kit.now = T0 + 5 * 60_000
    (campaign,) = [seq for n, seq in atl.due(kit.now) if n == "campaign"]
    result = kit.run("ATL", campaign)
    assert [s["member"] for s in result["sent"]] == ["BOR"]
    assert atl.requests.next_campaign_at == T0 + 86_400_000 + 5 * 60_000
    report = ping_report(atl.requests, atl.members(), kit.now)
    assert [(r["member"], r["delivered"]) for r in report["members"]] == [("BOR", True)]
