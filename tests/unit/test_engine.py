"""The engine alone: every protocol decision of a node, without sockets, SQLite or sleeps.

Engines run in tests/unit/engine_kit.py's World: effects carried out with dicts and direct
calls, time passed in. What is asserted is the engine's behaviour: what it accepts, stores,
announces, pulls, erases and backs off from, and what it never does before a commit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pocnode.core.chain import equivocation_proof
from pocnode.core.engine import (
    ANSWER_SLACK_BYTES,
    CATCH_UP_LANES,
    Call,
    Commit,
    Engine,
    EraseDisclosures,
    Freeze,
    Ingest,
    Now,
    Publish,
    ReadEvent,
    Spawn,
    VerifySignatures,
    catch_up_lane,
)
from pocnode.core.errors import (
    Busy,
    InvalidRequest,
    NoChange,
    StoreError,
    TimestampInFuture,
    UnknownAuthor,
)
from pocnode.core.events import build_event, parse_event
from pocnode.core.keys import SigningKey
from pocnode.core.reconcile import Health
from tests.unit.engine_kit import T0, World, record


def _publish_record(world: World, member: str, marker: str, **kw) -> bytes:
    engine = world.engines[member]
    event = world.publish(member, engine.compile_record(record(member, marker, **kw)))
    return event.raw


def _finish(world: World, node: str, steps, first_result=None):
    """Carry a started sequence to its end; its result and the effects it yielded."""
    effects, value = [], first_result
    while True:
        try:
            effect = steps.send(value)
        except StopIteration as stop:
            return stop.value, effects
        effects.append(effect)
        value = world.carry_out(node, effect)


def _node_keys(world: World) -> None:
    for member, engine in world.engines.items():
        world.publish(member, engine.node_keys_message())


# -- ingest: verify, commit, apply -------------------------------------------------------


def test_a_valid_event_is_committed_before_it_is_applied():
    world = World()
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    raw = world.publish("ATL", atl.node_keys_message(), quietly=True).raw
    steps = bor.ingest([raw], source=("ATL", "x"), now=world.now)
    effect = next(steps)
    assert isinstance(effect, Commit) and effect.events[0].raw == raw
    assert bor.heads() == {} and "ATL" not in bor.pins  # nothing applied before the commit
    result, _ = _finish(world, "BOR", steps, world.carry_out("BOR", effect))
    assert [e.raw for e in result.accepted] == [raw]
    assert bor.heads()["ATL"][0] == 1 and bor.pins["ATL"] == atl.pin


def test_a_failed_commit_leaves_the_state_as_it_was():
    world = World()
    raw = world.publish("ATL", world.engines["ATL"].node_keys_message(), quietly=True).raw
    bor = world.engines["BOR"]
    summary = bor.summary()
    world.stores["BOR"].fail_commits = True
    with pytest.raises(StoreError):
        world.run("BOR", bor.ingest([raw], source=None, now=world.now))
    assert bor.heads() == {} and bor.summary() == summary and "ATL" not in bor.pins
    world.stores["BOR"].fail_commits = False
    result = world.run("BOR", bor.ingest([raw], source=None, now=world.now))
    assert len(result.accepted) == 1  # the same batch, checked again, goes in


def test_events_ahead_of_their_chain_wait_for_their_predecessors():
    world = World()
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    first = world.publish("ATL", atl.node_keys_message(), quietly=True).raw
    second = world.publish("ATL", atl.compile_record(record("ATL", "a")), quietly=True).raw
    result = world.run("BOR", bor.ingest([second], source=None, now=world.now))
    assert result.pending == 1 and not result.accepted and len(bor.pending) == 1
    result = world.run("BOR", bor.ingest([first], source=None, now=world.now))
    assert [e.seq for e in result.accepted] == [1, 2] and len(bor.pending) == 0


def test_events_of_another_federation_are_refused():
    world, other = World(), World()
    raw = other.publish("ATL", other.engines["ATL"].node_keys_message()).raw
    result = world.run("BOR", world.engines["BOR"].ingest([raw], source=None, now=world.now))
    assert result.refused and result.refused[0][0] == "wrong_federation"
    assert world.stores["BOR"].events == {}


def test_own_refusals_keep_their_code():
    world = World()
    atl = world.engines["ATL"]
    world.publish("ATL", atl.node_keys_message())
    world.now -= 3_600_000  # our clock was an hour fast when we signed, now it is right
    with pytest.raises(TimestampInFuture, match="publishing works again from"):
        world.publish("ATL", atl.compile_record(record("ATL", "late")))


# -- equivocation: detected whatever the branch lengths, and the author frozen (§4.6) --------


def _fork(world: World, author: str, common: int, long: int, short: int) -> tuple[list, list]:
    """Two branches of ``author``'s chain after ``common`` shared events."""
    key = world.keys[author]
    fed = world.genesis.id
    prev, ts, shared = None, T0, []
    for seq in range(1, common + 1):
        raw = build_event(key, fed=fed, author=author, seq=seq, prev=prev, kind="node.keys",
                          ts=ts, body={"tls": bytes([seq]) * 32})
        prev = parse_event(raw).id
        shared.append(raw)
    branches = []
    for tag, n in ((1, long), (2, short)):
        p, out = prev, []
        for seq in range(common + 1, common + n + 1):
            raw = build_event(key, fed=fed, author=author, seq=seq, prev=p, kind="node.keys",
                              ts=ts, body={"tls": bytes([tag, seq]) * 16})
            p = parse_event(raw).id
            out.append(raw)
        branches.append(shared + out)
    return branches[0], branches[1]


@pytest.mark.parametrize("common,long,short", [(0, 1, 1), (2, 5, 1), (1, 3, 2), (3, 1, 4)])
def test_a_fork_is_proven_and_every_honest_node_freezes_the_author_alike(common, long, short):
    world = World(("ATL", "BOR", "CAL", "DUN"))
    a, b = _fork(world, "ATL", common, long, short)
    world.down.add("ATL")  # the equivocator shows BOR one branch and CAL another
    world.run("BOR", world.engines["BOR"].ingest(a, source=None, now=world.now))
    world.run("CAL", world.engines["CAL"].ingest(b, source=None, now=world.now))
    world.settle(rounds=6)
    for member in ("BOR", "CAL", "DUN"):
        engine = world.engines[member]
        assert engine.frozen == {"ATL": common + 1}, member
        assert engine.verifier.head("ATL")[0] == common
        assert world.stores[member].proofs  # the proof itself is held
    assert len(world.summaries()) == 1  # honest nodes agree on everything


def test_a_frozen_author_is_refused_with_equivocated_and_keeps_its_record():
    world = World()
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    world.publish("ATL", atl.node_keys_message())
    _publish_record(world, "ATL", "good")
    world.settle(rounds=2)
    before = bor.records["ATL"].id
    a, b = _fork(world, "ATL", 0, 1, 1)  # nothing to do with the chain held: seq 1 again
    result = world.run("BOR", bor.ingest([b[0]], source=None, now=world.now))
    assert result.equivocations == 1 and bor.frozen == {"ATL": 1}
    assert "ATL" not in bor.records  # the record stood after the fork: nothing stands
    later = build_event(world.keys["ATL"], fed=world.genesis.id, author="ATL", seq=1,
                        prev=None, kind="node.keys", ts=T0, body={"tls": b"z" * 32})
    result = world.run("BOR", bor.ingest([later], source=None, now=world.now))
    assert [code for code, _ in result.refused] == ["equivocated"]
    assert world.stores["BOR"].proofs and before not in {
        parse_event(r).id for r in world.stores["BOR"].events.values()}


def test_a_proof_ahead_of_the_chain_waits_until_it_can_be_checked():
    world = World()
    bor = world.engines["BOR"]
    a, b = _fork(world, "ATL", 2, 1, 1)
    proof = equivocation_proof(a[2], b[2])
    world.run("BOR", bor.ingest([], source=None, now=world.now, proofs=[proof]))
    assert bor.frozen == {} and "ATL" in bor._proofs_ahead
    world.run("BOR", bor.ingest(a[:2], source=None, now=world.now))
    assert bor.frozen == {"ATL": 3}


# -- consent, disclosures and erasure ----------------------------------------------------


def test_members_values_are_pulled_at_once_from_the_authors_node():
    world = World()
    _node_keys(world)
    world.settle(rounds=2)
    raw = world.publish("ATL", world.engines["ATL"].compile_record(record("ATL", "m1")),
                        quietly=True).raw
    world.spawned.clear()
    world.run("BOR", world.engines["BOR"].ingest([raw], source=("CAL", "x"), now=world.now))
    assert ("BOR", "pull") in world.spawned  # not left to a random later round
    view = world.run("BOR", world.engines["BOR"].record_view("ATL"))
    mfa = next(e for e in view["record"]["entries"] if e["id"] == "mfa")
    assert mfa["fields"]["person"] == "Member m1" and mfa["awaiting"] == {}
    duty = next(e for e in view["record"]["entries"] if e["id"] == "duty")
    assert duty["withheld"] == {"bilateral": 3} and duty["awaiting"] == {}


def test_values_not_yet_received_are_awaiting_not_withheld():
    world = World()
    _node_keys(world)
    world.settle(rounds=2)
    world.down.add("ATL")
    raw = _publish_record(world, "ATL", "m2")
    world.run("BOR", world.engines["BOR"].ingest([raw], source=None, now=world.now))
    view = world.run("BOR", world.engines["BOR"].record_view("ATL"))
    mfa = next(e for e in view["record"]["entries"] if e["id"] == "mfa")
    assert mfa["awaiting"] == {"members": 3} and mfa["withheld"] == {}


def test_asks_back_off_per_peer_and_record():
    world = World()
    _node_keys(world)
    world.settle(rounds=2)
    world.down.add("ATL")
    raw = _publish_record(world, "ATL", "m3")
    bor = world.engines["BOR"]
    world.run("BOR", bor.ingest([raw], source=None, now=world.now))
    asks = [c for c in world.calls if c[2] == "/v1/peer/disclosures" and c[0] == "BOR"]
    (cal,) = bor.peers.endpoints("CAL")
    for _ in range(5):
        world.run("BOR", bor.pull_members_from(cal))  # CAL lacks them too
    later = [c for c in world.calls if c[2] == "/v1/peer/disclosures" and c[0] == "BOR"]
    assert len(later) - len(asks) == 1  # asked once, then backing off
    world.now += 5_000
    world.run("BOR", bor.pull_members_from(cal))
    assert len([c for c in world.calls if c[2] == "/v1/peer/disclosures"]) > len(later)


def test_consent_folds_to_mutual_then_erases_on_withdrawal():
    world = World()
    _node_keys(world)
    for m in ("ATL", "BOR"):
        _publish_record(world, m, m.lower())
    world.settle(rounds=3)
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    world.publish("ATL", atl.consent_message("BOR", "offer"))
    world.settle(rounds=2)
    assert bor.consent.offered("ATL", "BOR") and not bor.consent.mutual("ATL")
    world.publish("BOR", bor.consent_message("ATL", "offer"))
    world.settle(rounds=2)
    assert atl.consent.mutual("BOR") and bor.consent.mutual("ATL")
    for name, engine in (("BOR", bor),):
        for _, sequence in engine.due(world.now):
            world.run(name, sequence)
    view = world.run("BOR", bor.record_view("ATL"))
    duty = next(e for e in view["record"]["entries"] if e["id"] == "duty")
    assert duty["fields"]["person"] == "Bilateral atl"
    # CAL learns nothing about it
    cal = world.engines["CAL"]
    assert cal.consent.table() == [] and not cal.need_bilateral
    world.publish("ATL", atl.consent_message("BOR", "withdraw"), quietly=True)
    steps = bor.ingest([world.stores["ATL"].events[("ATL", atl.verifier.head("ATL")[0])]],
                       source=None, now=world.now)
    _, effects = _finish(world, "BOR", steps)
    assert any(isinstance(e, EraseDisclosures) for e in effects)
    atl_record = bor.records["ATL"].id
    assert not any(e == atl_record and v == "bilateral"
                   for (e, _), (v, _) in world.stores["BOR"].disclosures.items())
    assert any(v == "bilateral" for v, _ in world.stores["BOR"].disclosures.values())  # own


def test_a_superseded_record_loses_its_values_at_its_authors_node_too():
    world = World()
    _node_keys(world)
    _publish_record(world, "ATL", "old")
    world.settle(rounds=2)
    old_id = world.engines["ATL"].records["ATL"].id
    _publish_record(world, "ATL", "new", person_visibility="bilateral")
    held = {e for e, _ in world.stores["ATL"].disclosures}
    assert old_id not in held  # erased at the author's own node
    answer = world.run("ATL", world.engines["ATL"].answer_disclosures(
        {"events": [old_id]}, "BOR"))
    assert answer == {"disclosures": []}


def test_operator_mistakes_have_their_own_codes():
    world = World()
    _node_keys(world)
    world.settle(rounds=2)
    atl = world.engines["ATL"]
    with pytest.raises(InvalidRequest):
        atl.consent_message("ATL", "offer")
    with pytest.raises(UnknownAuthor):
        atl.consent_message("ZZZ", "offer")
    with pytest.raises(NoChange):
        atl.consent_message("BOR", "withdraw")
    world.publish("ATL", atl.consent_message("BOR", "offer"))
    with pytest.raises(NoChange, match="already offered"):
        atl.consent_message("BOR", "offer")


# -- gossip: rounds, announces, backoff -----------------------------------------------------


def test_a_round_is_summary_then_exchange_and_says_whether_to_go_on():
    world = World()
    world.publish("ATL", world.engines["ATL"].node_keys_message(), quietly=True)
    world.calls.clear()
    world.run_spawns = False  # the announces BOR starts are another test's business
    more = world.round("BOR", "ATL")
    assert [c[2] for c in world.calls] == ["/v1/peer/summary", "/v1/peer/exchange"]
    assert more is True  # it accepted something: go again at once
    world.calls.clear()
    assert world.round("BOR", "ATL") is False
    assert [c[2] for c in world.calls] == ["/v1/peer/summary"]  # same summary: done


def test_fresh_events_are_announced_to_fanout_peers_but_not_their_source():
    world = World(("ATL", "BOR", "CAL", "DUN", "ELB"), fanout=2)
    raw = world.publish("ATL", world.engines["ATL"].node_keys_message(), quietly=True).raw
    world.calls.clear()
    world.run("BOR", world.engines["BOR"].ingest([raw], source=("ATL", "x"), now=world.now))
    announced = {to for frm, to, route in world.calls
                 if frm == "BOR" and route == "/v1/peer/announce"}
    assert len(announced) == 2 and "ATL" not in announced and "BOR" not in announced


def test_a_failing_peer_is_backed_off_and_retried_later():
    world = World(("ATL", "BOR"))
    world.down.add("BOR")
    atl = world.engines["ATL"]
    (bor,) = atl.peers.endpoints("BOR")
    assert world.run("ATL", atl.gossip_round(bor)) is False
    health = atl.peers.health[bor.key]
    assert health.failures == 1 and health.next_try > world.now
    assert atl.peers.choose(world.now, atl.rng) == []
    world.now = health.next_try
    assert atl.peers.choose(world.now, atl.rng)[0].member == "BOR"


def test_due_starts_rounds_on_schedule_and_at_most_two_at_once():
    world = World()
    atl = world.engines["ATL"]
    def rounds(now):
        return [name for name, _ in atl.due(now) if name == "gossip"]

    assert rounds(world.now) == ["gossip"] and not atl.round_running
    assert atl.next_round_at > world.now
    assert rounds(world.now) == []  # not due yet
    # a second may start while the first is stuck on a dead peer; a third waits
    assert rounds(atl.next_round_at) == ["gossip"] and atl.round_running
    assert rounds(atl.next_round_at + 60_000) == []
    atl.rounds_running -= 1  # one ends
    assert rounds(atl.next_round_at + 60_000) == ["gossip"]


def test_one_rotation_at_a_time():
    world = World()
    atl = world.engines["ATL"]
    world.publish("ATL", atl.node_keys_message())
    steps = atl.rotate_key(SigningKey.generate(), "test")
    next(steps)  # staged, rotation under way
    with pytest.raises(Busy):
        next(atl.rotate_key(SigningKey.generate(), "again"))
    steps.close()
    assert not atl.rotating


def test_effects_are_plain_data():
    # The adapters (daemon, simulator) see only these; nothing of the engine's state leaks.
    for cls in (Commit, Ingest, Publish, ReadEvent, Freeze, Spawn, EraseDisclosures):
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


# -- batched signature checks (VerifySignatures) -------------------------------------------


def _signed_chain(world: World, author: str, n: int, *, rotate_at: int | None = None):
    """n node.keys events of ``author`` (a key.rotate at ``rotate_at``), and the keys used."""
    key = world.keys[author]
    new_key = SigningKey.generate()
    prev, out = None, []
    for seq in range(1, n + 1):
        if seq == rotate_at:
            kind, body = "key.rotate", {"key": new_key.public_key.to_wire()}
        else:
            kind, body = "node.keys", {"tls": seq.to_bytes(2, "big") * 16}
        signer = new_key if rotate_at is not None and seq > rotate_at else key
        raw = build_event(signer, fed=world.genesis.id, author=author, seq=seq, prev=prev,
                          kind=kind, ts=T0, body=body)
        prev = parse_event(raw).id
        out.append(raw)
    return out


def _ingest_counting(world: World, node: str, raws: list[bytes]):
    """Ingest, recording each VerifySignatures batch and each signature check made."""
    from pocnode.core import keys as keys_module

    world.run_spawns = False  # announces would make other nodes check the same events
    checks = []
    original = keys_module.PublicKey.verify

    def counting(self, signature, message):
        checks.append(message)
        return original(self, signature, message)

    keys_module.PublicKey.verify = counting
    try:
        result, effects = _finish(world, node, world.engines[node].ingest(
            raws, source=("ATL", "x"), now=world.now))
    finally:
        keys_module.PublicKey.verify = original
    batches = [e for e in effects if isinstance(e, VerifySignatures)]
    return result, batches, checks


def test_a_large_batch_is_verified_once_in_one_effect_rotations_included():
    world = World()
    raws = _signed_chain(world, "ATL", 40, rotate_at=20)
    result, batches, checks = _ingest_counting(world, "BOR", raws)
    assert len(result.accepted) == 40 and not result.refused
    assert len(batches) == 1 and len(batches[0].jobs) == 40
    assert len(checks) == 40  # each signature checked once: the chain check used the verdicts


def test_a_bad_signature_in_a_batch_is_refused_whatever_the_verdict_cache_holds():
    world = World()
    raws = _signed_chain(world, "ATL", 30)
    bad = parse_event(raws[29])
    # The same payload with another signature: the verdict of the good envelope must not
    # be taken for this one (one payload id, two signatures).
    forged = SigningKey.generate().sign(bad.signing_input).to_wire()
    from pocnode.core import encoding

    forged_raw = encoding.encode({"sig": forged, "event": bad.payload})
    result, batches, _ = _ingest_counting(world, "BOR", raws[:29] + [forged_raw])
    assert len(result.accepted) == 29
    assert [code for code, _ in result.refused] == ["bad_signature"]
    result, _, _ = _ingest_counting(world, "CAL", raws[:29] + [forged_raw, raws[29]])
    assert len(result.accepted) == 30 and [c for c, _ in result.refused] == ["bad_signature"]


def test_a_batch_with_a_wrong_key_guess_is_still_judged_right():
    """Events signed by a key rotated in later in the batch than they claim: the guess is
    wrong, the check verifies with the key the chain says, and refuses."""
    world = World()
    raws = _signed_chain(world, "ATL", 20, rotate_at=10)
    # seq 10's rotation replaced by an ordinary event: 11.. are now signed by a stranger key
    honest = _signed_chain(world, "ATL", 10)
    result, _, _ = _ingest_counting(world, "BOR", honest[:10] + raws[10:])
    assert len(result.accepted) == 10
    assert result.refused and {c for c, _ in result.refused} <= {"bad_signature", "wrong_prev"}


class _TickingWorld(World):
    """Each Now() a second later: peers backing off become ready between rounds."""

    def carry_out(self, node: str, effect: Any) -> Any:
        if isinstance(effect, Now):
            self.now += 1_000
        return super().carry_out(node, effect)


def test_a_node_behind_catches_up_with_the_peer_that_has_more_not_a_new_random_one():
    """A fresh node among many unreachable members: after an answer that had more, the next
    round goes to the same peer. A new random draw mostly hit a dead member, which ended
    the catch-up; a fresh node of a 200-member federation stalled at its first answer."""
    dead = tuple(f"D{i:02d}" for i in range(40))
    world = _TickingWorld(("ATL", "BOR", *dead))
    world.down = set(dead)
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    for i in range(30):
        world.publish("ATL", atl.compile_record(record("ATL", f"u{i}")), quietly=True)
    atl.config = dataclasses.replace(atl.config, exchange_budget_bytes=4_096)
    for member in dead:   # backing off now, ready again by the second round
        for peer in bor.peers.endpoints(member):
            bor.peers.health[peer.key] = Health(failures=1, next_try=world.now + 1_500)
    bor.rounds_running += 1   # as Engine.due does before it starts the rounds
    world.run("BOR", bor.gossip_rounds())
    assert bor.verifier.head("ATL") == atl.verifier.head("ATL")
    # Announces of what it took may go anywhere; its pulls all went to ATL.
    assert not any(to in dead for frm, to, route in world.calls
                   if frm == "BOR" and route.endswith(("summary", "exchange")))
    exchanges = [c for c in world.calls if c[:2] == ("BOR", "ATL") and c[2].endswith("exchange")]
    assert len(exchanges) >= 5   # the answers were cut by the budget: several rounds


class _RecordingWorld(_TickingWorld):
    """Also keeps each call's body."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.bodies: list[tuple[str, str, str, Any]] = []

    def carry_out(self, node: str, effect: Any) -> Any:
        if isinstance(effect, Call):
            self.bodies.append((node, effect.peer.member or "?", effect.route, effect.body))
        return super().carry_out(node, effect)


def test_a_catch_up_asks_for_one_summary_then_only_for_the_rest():
    """After a round that brought what it asked for, the catch-up asks for the rest from
    the heads that round's summary gave (a summary per budget's worth cost a round trip and
    every head encoded twice), in lanes that never ask for one author twice; it still ends
    with all the peer held, and a new catch-up starts again from a summary."""
    authors = ("ATL", "BOR", "CAL", "DUN", "ELB", "FRE", "GEN", "HAV")
    world = _RecordingWorld(authors)
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    writers = [a for a in authors if a != "BOR"]
    assert {catch_up_lane(a) for a in writers} == set(range(CATCH_UP_LANES))
    for author in writers:
        raws = [world.publish(author, world.engines[author].compile_record(
            record(author, f"u{i}")), quietly=True).raw for i in range(8)]
        if author != "ATL":   # ATL holds them all; BOR nothing yet
            world.run_spawns = False
            world.run("ATL", atl.ingest(raws, source=None, now=world.now))
            world.run_spawns = True
    atl.config = dataclasses.replace(atl.config, exchange_budget_bytes=4_096)
    world.down = set(authors) - {"ATL", "BOR"}
    for member in world.down:
        for peer in bor.peers.endpoints(member):
            bor.peers.health[peer.key] = Health(failures=1, next_try=world.now + 10**9)
    world.calls.clear()
    world.bodies.clear()
    bor.rounds_running += 1
    world.run("BOR", bor.gossip_rounds())
    for author in writers:
        assert bor.verifier.head(author) == atl.verifier.head(author), author
    pulls = [route for frm, to, route in world.calls
             if (frm, to) == ("BOR", "ATL") and route.endswith(("summary", "exchange"))]
    assert pulls.count("/v1/peer/summary") == 1, pulls
    assert pulls.count("/v1/peer/exchange") >= 5, pulls
    asks = [body["want"] for frm, to, route, body in world.bodies
            if (frm, to, route) == ("BOR", "ATL", "/v1/peer/exchange")]
    assert len({catch_up_lane(w[0]) for w in asks[0]}) == CATCH_UP_LANES  # the round
    for want in asks[1:]:   # the catch-up: each ask of one lane
        assert len({catch_up_lane(w[0]) for w in want}) == 1, want
    assert bor.rounds_running == 0   # each lane gave back its round's slot
    # The next catch-up with ATL (it published more meanwhile) starts from a summary.
    world.publish("ATL", atl.compile_record(record("ATL", "later")), quietly=True)
    world.calls.clear()
    bor.rounds_running += 1
    world.run("BOR", bor.gossip_rounds())
    assert bor.verifier.head("ATL") == atl.verifier.head("ATL")
    assert [r for f, t, r in world.calls if (f, t) == ("BOR", "ATL")][0] == "/v1/peer/summary"


def _behind_world() -> tuple[_TickingWorld, Engine, Engine]:
    """BOR knows nothing yet of ATL's 20 records, which ATL sends 4 KiB at a time."""
    world = _TickingWorld(("ATL", "BOR", "CAL"))
    atl, bor = world.engines["ATL"], world.engines["BOR"]
    for i in range(20):
        world.publish("ATL", atl.compile_record(record("ATL", f"u{i}")), quietly=True)
    atl.config = dataclasses.replace(atl.config, exchange_budget_bytes=4_096)
    world.down = {"CAL"}
    for peer in bor.peers.endpoints("CAL"):
        bor.peers.health[peer.key] = Health(failures=1, next_try=world.now + 10**9)
    return world, atl, bor


def test_a_catch_up_lane_the_adapter_drops_gives_its_round_slot_back():
    """An adapter running as many sequences as it may drops new ones unstarted: a dropped
    gossip sequence or catch-up lane must give back the round slot it was counted in, or
    two drops leave the node never gossiping again."""
    world, atl, bor = _behind_world()
    world.run_spawns = False   # every spawn dropped, as by a node at its limit
    name_steps = bor.due(world.now)
    assert bor.rounds_running == 1
    for name, steps in name_steps:
        if name == "gossip":
            world.carry_out("BOR", Spawn(steps, name))   # dropped before it started
    assert bor.rounds_running == 0
    bor.rounds_running += 1
    world.run("BOR", bor.gossip_rounds())   # lane 0 runs; lane 1 is dropped
    assert ("BOR", "catch-up") in world.spawned
    assert bor.rounds_running == 0


def test_one_catch_up_with_a_peer_at_a_time():
    """While lanes of a catch-up with a peer are at work, a new round with that peer does
    not start a second catch-up asking for the same events."""
    world, atl, bor = _behind_world()
    (peer,) = bor.peers.endpoints("ATL")
    bor._catching_up[peer.key] += 1   # a lane of an earlier catch-up, still running
    world.calls.clear()
    bor.rounds_running += 1
    world.run("BOR", bor.gossip_rounds())
    routes = [r for f, t, r in world.calls if (f, t) == ("BOR", "ATL")]
    assert routes == ["/v1/peer/summary", "/v1/peer/exchange"], routes
    assert bor.rounds_running == 0


def test_a_node_does_not_push_back_to_back_to_a_peer_that_is_pulling_from_it():
    """A node ahead sends a full message in its round and would go again at once; when the
    peer behind has just asked it for a full message itself (it is catching up), the
    pushes would only race its pulls, so the round does not go on. A peer that never pulls
    (it cannot reach us) still gets pushes back to back."""
    for pulling in (False, True):
        world = World(("ATL", "BOR"))
        atl = world.engines["ATL"]
        for i in range(20):
            world.publish("ATL", atl.compile_record(record("ATL", f"u{i}")), quietly=True)
        atl.config = dataclasses.replace(  # a message holds about four records
            atl.config, exchange_budget_bytes=ANSWER_SLACK_BYTES + 4_096)
        world.run_spawns = False
        if pulling:
            answer = world.run("ATL", atl.answer_exchange(
                {"events": [], "want": [["ATL", 1, None]]}, "BOR", "test"))
            assert atl._full(answer["events"])
        world.calls.clear()
        more = world.round("ATL", "BOR")
        assert [r for _, _, r in world.calls] == ["/v1/peer/summary", "/v1/peer/exchange"]
        assert more is (not pulling), pulling
