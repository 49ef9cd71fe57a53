"""Governance in the engine alone: applications, every rule of §5.3, ticks, windows,
refusals with codes, key recovery, withdrawal, and the same outcome whatever the order
events arrive in (PROTOCOL.md §5.6-§5.10).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core.consent import HpkeKey
from pocnode.core.errors import (
    BadSignature,
    DoubleVote,
    IdInUse,
    InvalidRequest,
    KeyInUse,
    WrongFederation,
)
from pocnode.core.events import build_event
from pocnode.core.governance import make_application, parse_application
from pocnode.core.keys import SigningKey
from tests.unit.engine_kit import World

WINDOW = 5_000


def rules(**override: dict) -> dict:
    base = {"admission": {"rule": "consensus", "window_ms": WINDOW},
            "observer": {"rule": "silence", "window_ms": WINDOW},
            "key_recovery": {"rule": "fraction", "num": 2, "den": 3, "window_ms": WINDOW},
            "rules": {"rule": "consensus", "window_ms": WINDOW}}
    base.update(override)
    return base


def application(world: World, member: str = "NEW", role: str = "member",
                key: SigningKey | None = None) -> tuple[bytes, SigningKey]:
    key = key or SigningKey.generate()
    raw = make_application(key, fed=world.genesis.id, role=role, member=member,
                           name=f"State {member}", hpke_suite="x25519",
                           hpke=HpkeKey.generate("x25519").public_bytes,
                           endpoints=[f"https://{member.lower()}.test:7443"], ts=world.now,
                           reference="note verbale 2026/17")
    return raw, key


def propose(world: World, by: str, decision: str, **kw) -> bytes:
    event = world.publish(by, world.engines[by].propose_message(decision, **kw))
    world.settle(rounds=2)
    return event.id


def vote(world: World, by: str, pid: bytes, value: str) -> None:
    world.publish(by, world.engines[by].vote_message(pid, value))
    world.settle(rounds=2)


def run_windows(world: World, steps: int = 3) -> None:
    """Time passes past every window; nodes tick as they owe; gossip spreads it."""
    for _ in range(steps):
        world.due()
        world.settle(rounds=2)
        world.advance(WINDOW + 1_500)
    world.due()
    world.settle(rounds=2)


def outcome(world: World, member: str, pid: bytes) -> tuple[str, bool]:
    p = world.engines[member].gov.proposals[pid]
    return p.outcome, p.final


# -- applications ---------------------------------------------------------------------------


def test_an_application_is_the_applicants_own_signed_act():
    world = World(rules=rules())
    raw, key = application(world)
    app = parse_application(raw, fed=world.genesis.id, sig_alg="ed25519")
    assert app.member == "NEW" and app.key == key.public_key
    assert len(app.fingerprint().split()) == 8  # readable aloud: 8 groups of 5 digits
    other = World(rules=rules())
    with pytest.raises(WrongFederation):
        parse_application(raw, fed=other.genesis.id, sig_alg="ed25519")
    forged = bytearray(raw)
    forged[-5] ^= 1
    with pytest.raises(BadSignature):
        parse_application(bytes(forged), fed=world.genesis.id, sig_alg="ed25519")


def test_a_state_applies_is_admitted_by_consensus_and_joins():
    world = World(rules=rules())
    raw, key = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    world.due()
    world.settle(rounds=2)
    for member in ("ATL", "BOR"):
        vote(world, member, pid, "yes")
    assert outcome(world, "CAL", pid) == ("pending", False)
    vote(world, "CAL", pid, "yes")
    for member in ("ATL", "BOR", "CAL"):
        assert outcome(world, member, pid) == ("adopted", True)
        assert world.engines[member].is_member("NEW")
    # the new member's node: it syncs the whole history and its events are accepted
    new = world.add_node("NEW", key)
    world.settle(rounds=3)
    assert new.is_member("NEW") and new.active
    assert new.heads() == world.engines["ATL"].heads()
    world.due()
    world.settle(rounds=3)
    assert world.engines["BOR"].verifier.head("NEW")[0] >= 1  # its node.keys arrived


def test_one_no_under_consensus_rejects_at_once():
    world = World(rules=rules())
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    vote(world, "BOR", pid, "no")
    for member in ("ATL", "BOR", "CAL"):
        assert outcome(world, member, pid) == ("rejected", True)
        assert not world.engines[member].is_member("NEW")


def test_a_fraction_is_adopted_as_soon_as_it_is_reached():
    world = World(("ATL", "BOR", "CAL", "DUN"),
                  rules=rules(admission={"rule": "fraction", "num": 3, "den": 4,
                                         "window_ms": WINDOW}))
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    vote(world, "ATL", pid, "yes")
    vote(world, "BOR", pid, "yes")
    assert outcome(world, "DUN", pid) == ("pending", False)
    vote(world, "CAL", pid, "yes")
    assert all(outcome(world, m, pid) == ("adopted", True) for m in world.engines)


def test_a_count_that_can_no_longer_be_reached_is_rejected_when_windows_close():
    world = World(rules=rules(admission={"rule": "count", "min": 2, "window_ms": WINDOW}))
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    vote(world, "ATL", pid, "yes")
    assert outcome(world, "BOR", pid) == ("pending", False)
    run_windows(world)  # BOR and CAL tick past their windows without voting
    assert all(outcome(world, m, pid) == ("rejected", True) for m in world.engines)


def test_silence_admits_an_observer_and_one_objection_blocks_another():
    world = World(rules=rules())
    raw, _ = application(world, "OBS", role="observer")
    quiet = propose(world, "BOR", "observer", application=raw)
    raw2, _ = application(world, "NGO", role="observer")
    blocked = propose(world, "CAL", "observer", application=raw2)
    vote(world, "ATL", blocked, "object")
    run_windows(world)
    for member in ("ATL", "BOR", "CAL"):
        engine = world.engines[member]
        assert outcome(world, member, quiet) == ("adopted", True)
        assert outcome(world, member, blocked) == ("rejected", True)
        assert engine.role("OBS") == "observer" and not engine.is_member("NGO")
        assert "OBS" not in engine.members()  # observers are not members


def test_votes_that_do_not_count_are_shown_with_their_code():
    world = World(("ATL", "BOR", "CAL", "DUN"),
                  rules=rules(admission={"rule": "count", "min": 4, "window_ms": WINDOW}))
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    vote(world, "ATL", pid, "yes")
    atl = world.engines["ATL"]
    with pytest.raises(DoubleVote):
        atl.vote_message(pid, "no")  # the node refuses to write a second vote...
    second = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL",
                         seq=atl.verifier.head("ATL")[0] + 1,
                         prev=atl.verifier.head("ATL")[1], kind="gov.vote",
                         ts=world.now, body={"proposal": pid, "vote": "no"})
    world.run("ATL", atl.ingest([second], source=None, now=world.now))  # ...a forged one
    world.settle(rounds=2)
    world.due()
    world.settle(rounds=2)
    world.advance(WINDOW + 2_000)
    world.due()  # BOR's window ends: it ticks
    world.settle(rounds=2)
    late = world.engines["BOR"]
    vote_after = build_event(world.keys["BOR"], fed=world.genesis.id, author="BOR",
                             seq=late.verifier.head("BOR")[0] + 1,
                             prev=late.verifier.head("BOR")[1], kind="gov.vote",
                             ts=world.now, body={"proposal": pid, "vote": "yes"})
    world.run("BOR", late.ingest([vote_after], source=None, now=world.now))
    world.settle(rounds=2)
    p = world.engines["CAL"].gov.proposals[pid]
    codes = {(b.member, b.code) for b in list(p.ballots.values()) + p.extra_ballots}
    assert ("ATL", "double_vote") in codes and ("BOR", "vote_too_late") in codes
    assert p.ballots["ATL"].vote == "yes" and p.ballots["ATL"].counted


def test_an_application_reusing_a_members_key_is_void():
    world = World(rules=rules())
    raw, _ = application(world, "TWIN", key=world.keys["BOR"])
    with pytest.raises(KeyInUse, match="already a member's key"):
        world.engines["ATL"].propose_message("admission", application=raw)


def test_an_honest_node_proposes_one_admission_of_an_id_at_a_time():
    """Two admissions of one id with different keys could both be adopted (PROTOCOL.md
    §11): a node holding one that is open or adopted refuses to propose another; once it
    is rejected, the id may be proposed again."""
    world = World(rules=rules())
    first, _ = application(world, "NEW")
    pid = propose(world, "ATL", "admission", application=first)
    for sponsor in ("ATL", "BOR"):   # the proposer, and a node the proposal reached
        other, _ = application(world, "NEW")
        with pytest.raises(IdInUse, match="already the subject of an admission"):
            world.engines[sponsor].propose_message("admission", application=other)
    as_observer, _ = application(world, "NEW", role="observer")
    with pytest.raises(IdInUse):
        world.engines["CAL"].propose_message("observer", application=as_observer)
    vote(world, "BOR", pid, "no")
    assert outcome(world, "CAL", pid) == ("rejected", True)
    again, _ = application(world, "NEW")
    world.engines["CAL"].propose_message("admission", application=again)


def test_a_member_that_lost_its_key_recovers_by_vote_and_its_old_key_is_refused():
    world = World(rules=rules())
    _ = [world.publish(m, e.node_keys_message()) for m, e in world.engines.items()]
    world.settle(rounds=2)
    old_head = world.engines["ATL"].verifier.head("ATL")[0]
    new_key = SigningKey.generate()
    pid = propose(world, "BOR", "key_recovery", subject="ATL", key=new_key.public_key)
    vote(world, "BOR", pid, "yes")
    vote(world, "CAL", pid, "yes")
    for member in world.engines:
        assert outcome(world, member, pid) == ("adopted", True)
        assert world.engines[member].current_key("ATL") == new_key.public_key
    atl = world.engines["ATL"]
    atl.key = new_key
    world.publish("ATL", atl.node_keys_message() or atl.compile_record({
        "template": 1, "entries": [{"id": "cert", "domain": "technical",
                                    "visibility": "public", "organisation": "ATL CERT",
                                    "email": "cert@atl.example.org"}]}))
    world.settle(rounds=2)
    assert world.engines["CAL"].verifier.head("ATL")[0] > old_head
    stolen = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL",
                         seq=world.engines["CAL"].verifier.head("ATL")[0] + 1,
                         prev=world.engines["CAL"].verifier.head("ATL")[1], kind="node.keys",
                         ts=world.now, body={"tls": b"s" * 32})
    result = world.run("CAL", world.engines["CAL"].ingest([stolen], source=None,
                                                          now=world.now))
    assert [c for c, _ in result.refused] == ["bad_signature"]


def test_a_withdrawn_member_is_no_longer_gossiped_with_and_cannot_vote():
    world = World(rules=rules())
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    bor = world.engines["BOR"]
    world.publish("BOR", bor.withdraw_message("leaving"))
    world.settle(rounds=2)
    for member in ("ATL", "CAL"):
        engine = world.engines[member]
        assert "BOR" not in engine.peers.members()
        assert engine.verifier.chain("BOR").closed_at is not None
    with pytest.raises(InvalidRequest):
        bor.vote_message(pid, "yes")
    head = world.engines["ATL"].verifier.head("BOR")
    late = build_event(world.keys["BOR"], fed=world.genesis.id, author="BOR",
                       seq=head[0] + 1, prev=head[1], kind="gov.vote", ts=world.now,
                       body={"proposal": pid, "vote": "yes"})
    result = world.run("ATL", world.engines["ATL"].ingest([late], source=None, now=world.now))
    assert [c for c, _ in result.refused] == ["withdrawn"]
    # BOR was in the electorate and left without a yes: that consensus cannot be reached
    assert outcome(world, "ATL", pid) == ("rejected", True)
    # a proposal made once the withdrawal is known has an electorate without BOR
    world.due()
    world.settle(rounds=2)
    again = propose(world, "ATL", "admission", application=application(world, "NEW2")[0])
    assert "BOR" not in world.engines["CAL"].gov.proposals[again].electorate
    vote(world, "ATL", again, "yes")
    vote(world, "CAL", again, "yes")
    assert outcome(world, "CAL", again) == ("adopted", True)


def test_no_decision_edits_or_removes_a_members_record():
    world = World(rules=rules())
    engine = world.engines["ATL"]
    for decision in ("expulsion", "edit_record", "hide"):
        with pytest.raises(InvalidRequest):
            engine.propose_message(decision)


# -- the same outcome whatever the order -------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["consensus", "fraction", "count", "silence"]))
def test_every_order_of_delivery_gives_every_node_the_same_final_outcome(seed, rule):
    spec = {"consensus": {"rule": "consensus", "window_ms": WINDOW},
            "fraction": {"rule": "fraction", "num": 2, "den": 3, "window_ms": WINDOW},
            "count": {"rule": "count", "min": 2, "window_ms": WINDOW},
            "silence": {"rule": "silence", "window_ms": WINDOW}}[rule]
    world = World(("ATL", "BOR", "CAL", "DUN"), rules=rules(admission=spec), seed=seed % 97)
    rng = random.Random(seed)
    raw, _ = application(world)
    pid = propose(world, "ATL", "admission", application=raw)
    world.due()
    world.settle(rounds=1)
    for member in world.engines:
        choice = rng.choice(["yes", "no", "abstain", None] if rule != "silence"
                            else ["object", None, None])
        if choice is not None:
            world.publish(member, world.engines[member].vote_message(pid, choice),
                          quietly=True)
    # every node gets every event, each in an order of its own
    events = [raw for store in world.stores.values() for raw in store.events.values()]
    for member, engine in world.engines.items():
        shuffled = events[:]
        rng.shuffle(shuffled)
        for raw in shuffled:
            world.run(member, engine.ingest([raw], source=None, now=world.now))
    run_windows(world)
    finals = {(world.engines[m].gov.proposals[pid].outcome,
               world.engines[m].gov.proposals[pid].final) for m in world.engines}
    assert len(finals) == 1 and next(iter(finals))[1]


def test_an_honest_node_does_not_tick_a_proposal_whose_basis_it_cannot_resolve():
    """A member ticks an id nobody holds, then proposes: the proposal waits for it (§5.8
    step 1) at every node. Honest nodes leave it out of their ticks until they hold its
    basis, so their own later proposals do not wait for it too, and are decided."""
    from pocnode.core.engine import Publish
    from pocnode.core.governance import KIND_TICK

    world = World(rules=rules(admission={"rule": "count", "min": 1, "window_ms": WINDOW}))
    world.publish("ATL", Publish(KIND_TICK, {"seen": [b"\x01" * 32]}))
    raw, _ = application(world, "NEW")
    stuck = propose(world, "ATL", "admission", application=raw)
    world.due()
    world.settle(rounds=2)
    bor = world.engines["BOR"]
    assert stuck in bor.deferred_ticks and stuck not in bor.unticked
    assert outcome(world, "BOR", stuck) == ("pending", False)
    raw2, _ = application(world, "TWO")
    later = propose(world, "BOR", "admission", application=raw2)
    assert stuck not in bor.gov.proposals[later].basis
    vote(world, "CAL", later, "yes")
    for member in ("ATL", "BOR", "CAL"):
        assert outcome(world, member, later) == ("adopted", True)
        assert outcome(world, member, stuck) == ("pending", False)
