"""Gossip decisions (PROTOCOL.md §8.3, §8.4): summaries, plans, budgets, buffers, backoff."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.errors import Malformed
from pocnode.core.reconcile import (
    PeerTable,
    PendingBuffer,
    Want,
    answer_wants,
    heads_from_wire,
    heads_to_wire,
    interleave,
    plan,
    summary_hash,
)

AUTHORS = st.from_regex(r"[A-Z][A-Z0-9]{1,5}", fullmatch=True)
HEADS = st.dictionaries(AUTHORS, st.tuples(st.integers(1, 1000), st.binary(min_size=32,
                                                                         max_size=32)),
                        max_size=30)


@given(HEADS)
def test_heads_round_trip_through_the_wire(heads):
    wire = encoding.decode(encoding.encode(heads_to_wire(heads)))
    assert heads_from_wire(wire, path="heads") == heads


@given(HEADS, HEADS)
def test_summaries_are_equal_exactly_when_heads_are(a, b):
    assert (summary_hash(a) == summary_hash(b)) == (a == b)


@given(HEADS)
def test_summaries_differ_when_only_the_proofs_do(heads):
    assert summary_hash(heads) != summary_hash(heads, {"ATL": 2})
    assert summary_hash(heads, {"ATL": 2}) != summary_hash(heads, {"ATL": 3})


# A node's chains as id lists; heads and id_at derived from them, as the engine does.

def _heads(chains):
    return {a: (len(ids), ids[-1]) for a, ids in chains.items() if ids}


def _id_at(chains):
    return lambda a, s: chains[a][s - 1] if a in chains and 1 <= s <= len(chains[a]) else None


def _chain(prev, n, tag):
    out = []
    for i in range(n):
        prev = hashlib.sha256(prev + tag + bytes([i])).digest()
        out.append(prev)
    return out


def _run(ours, theirs):
    """Both sides' view after one exchange planned by us, answered by them."""
    p = plan(_heads(ours), _heads(theirs), id_at=_id_at(ours))
    served = answer_wants(p.want, head_seq=lambda a: len(theirs.get(a, [])),
                          id_at=_id_at(theirs))
    return p, dict(p.send), dict(served)


@settings(max_examples=300)
@given(st.data())
def test_forks_are_found_whatever_the_branch_lengths(data):
    # ids chain like event ids: each hashes its predecessor, so branches never meet again
    common = _chain(b"", data.draw(st.integers(0, 10)), b"c")
    branch_a = _chain(common[-1] if common else b"", data.draw(st.integers(0, 6)), b"a")
    branch_b = _chain(common[-1] if common else b"", data.draw(st.integers(0, 6)), b"b")
    ours, theirs = {"ATL": common + branch_a}, {"ATL": common + branch_b}
    p, sent, served = _run(ours, theirs)
    forked = bool(branch_a) and bool(branch_b) and branch_a[0] != branch_b[0]
    if forked:
        # we are handed an event at a sequence where we hold a different one (we then
        # prove a fork, the proof travels, and a lower fork is found the same way on the
        # shortened chains); when we hold at least as much as the peer, so is the peer
        assert len(common) < served["ATL"] <= len(ours["ATL"])
        if len(branch_a) >= len(branch_b):
            assert len(common) < sent["ATL"] <= len(theirs["ATL"])
    elif len(branch_a) > len(branch_b) or (branch_a and not branch_b):
        assert sent.get("ATL") == len(theirs["ATL"]) + 1
    elif len(branch_b) > len(branch_a):
        assert served.get("ATL") == len(ours["ATL"]) + 1


@given(HEADS)
def test_equal_holdings_plan_nothing(heads):
    chains = {a: [b"x" * 32] * (s - 1) + [i] for a, (s, i) in heads.items()}
    assert plan(_heads(chains), _heads(chains), id_at=_id_at(chains)).empty


def test_frozen_authors_are_not_asked_for_and_proofs_travel():
    ours = {"ATL": [b"a" * 32, b"b" * 32]}
    theirs = {"ATL": [b"a" * 32, b"b" * 32, b"c" * 32]}
    p = plan(_heads(ours), _heads(theirs), id_at=_id_at(ours), our_frozen={"ATL": 3})
    assert p.want == () and p.send_proofs == ("ATL",)
    p = plan(_heads(theirs), _heads(ours), id_at=_id_at(theirs), their_frozen={"ATL": 3})
    assert p.want_proofs == ("ATL",)


def test_a_want_naming_another_prev_gets_one_event_earlier():
    chain = [b"a" * 32, b"b" * 32, b"c" * 32]
    id_at = _id_at({"ATL": chain})
    assert answer_wants([Want("ATL", 3, b"b" * 32)], head_seq=lambda a: 3,
                        id_at=id_at) == [("ATL", 3)]
    assert answer_wants([Want("ATL", 3, b"z" * 32)], head_seq=lambda a: 3,
                        id_at=id_at) == [("ATL", 2)]
    # a want past our head whose prev is not ours: our head is the fork's evidence
    assert answer_wants([Want("ATL", 4, b"z" * 32)], head_seq=lambda a: 3,
                        id_at=id_at) == [("ATL", 3)]
    assert answer_wants([Want("ATL", 4, b"c" * 32)], head_seq=lambda a: 3, id_at=id_at) == []
    assert answer_wants([Want("BOR", 1)], head_seq=lambda a: None, id_at=id_at) == []


@pytest.mark.parametrize("bad", [
    "not a list", [["atl", 1, bytes(32)]], [["ATL", 0, bytes(32)]], [["ATL", 1, bytes(31)]],
    [["BOR", 1, bytes(32)], ["ATL", 1, bytes(32)]], [["ATL", 1, bytes(32)]] * 2,
    [["ATL", 1]], [["ATL", True, bytes(32)]],
])
def test_bad_heads_are_malformed(bad):
    with pytest.raises(Malformed):
        heads_from_wire(bad, path="heads")


def test_interleave_is_oldest_first_fair_and_within_budget():
    batches = {"ATL": [b"a1" * 50, b"a2" * 50, b"a3" * 50], "BOR": [b"b1" * 50]}
    assert interleave(batches, max_bytes=10_000, max_events=10) == [
        b"a1" * 50, b"b1" * 50, b"a2" * 50, b"a3" * 50]
    assert interleave(batches, max_bytes=250, max_events=10) == [b"a1" * 50, b"b1" * 50]
    assert interleave(batches, max_bytes=1, max_events=10) == [b"a1" * 50]  # at least one
    assert interleave(batches, max_bytes=10_000, max_events=3) == [
        b"a1" * 50, b"b1" * 50, b"a2" * 50]


def test_pending_buffer_releases_runs_in_order():
    buf = PendingBuffer()
    assert buf.add("ATL", 3, b"e3", head_seq=1)
    assert buf.add("ATL", 2, b"e2", head_seq=1)
    assert not buf.add("ATL", 1, b"e1", head_seq=1)  # not ahead
    assert buf.take_ready("ATL", head_seq=1) == [b"e2", b"e3"]
    assert len(buf) == 0 and buf.size_bytes == 0


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["ATL", "BOR", "CAL"]), st.integers(2, 400),
                          st.integers(1, 300)), max_size=300))
def test_pending_buffer_never_exceeds_its_bounds(adds):
    buf = PendingBuffer(max_bytes=2_000, max_per_author=7)
    for author, seq, size in adds:
        buf.add(author, seq, b"x" * size, head_seq=1)
        assert buf.size_bytes <= 2_000
        held = {a: [c for cs in buf._by_author.get(a, {}).values() for c in cs]
                for a in ("ATL", "BOR", "CAL")}
        assert all(len(h) <= 7 for h in held.values())
        assert buf.size_bytes == sum(len(c[0]) for h in held.values() for c in h)
        assert len(buf) == sum(map(len, held.values()))


def test_pending_buffer_drops_the_furthest_ahead_first():
    buf = PendingBuffer(max_bytes=100, max_per_author=10)
    assert buf.add("ATL", 50, b"x" * 60, head_seq=0)
    assert buf.add("ATL", 2, b"y" * 60, head_seq=0)   # evicts #50
    assert buf.take_ready("ATL", head_seq=1) == [b"y" * 60]


def test_backoff_grows_and_resets():
    table = PeerTable("ATL", {"BOR": ("https://b.example:1",), "ATL": ("https://a.example:1",)},
                      base_backoff_ms=1000, max_backoff_ms=8000)
    rng = random.Random(1)
    assert [p.member for p in table.choose(0, rng)] == ["BOR"]  # never ourselves
    key = ("BOR", "https://b.example:1")
    delays = [table.failure(key, 0, rng, "refused") for _ in range(6)]
    assert delays[0] >= 1000 and all(d <= 10_000 for d in delays)
    assert delays[3] >= 8000
    assert table.choose(5000, rng) == []
    table.success(key, 6000)
    assert [p.member for p in table.choose(6000, rng)] == ["BOR"]


def test_choose_is_uniform_over_members_and_respects_exclusions():
    base = {f"M{i}": (f"https://n{i}.example:1",) for i in range(10)}
    table = PeerTable("X", base)
    # a member listing many endpoints gets no more rounds than the others
    table.set_record_endpoints("M5", [f"https://m5-{j}.example:1" for j in range(8)])
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(2000):
        (p,) = table.choose(0, rng, exclude={"M0"})
        counts[p.member] = counts.get(p.member, 0) + 1
    assert "M0" not in counts and len(counts) == 9
    assert min(counts.values()) > 150 and counts["M5"] < 320
    assert len({p.member for p in table.choose(0, rng, k=3)}) == 3


def test_endpoints_belong_to_their_member_and_replaced_records_are_forgotten():
    table = PeerTable("X", {"BOR": ("https://bor.example:1",)})
    # CAL lists BOR's endpoint: two peers, each checked against its own member's pin
    table.set_record_endpoints("CAL", ["https://bor.example:1"] + [
        f"https://junk{i}.example:1" for i in range(100)])
    assert {p.member for p in table.all() if p.endpoint == "https://bor.example:1"} == {
        "BOR", "CAL"}
    assert len(table.endpoints("CAL")) == 8  # bounded per member
    table.failure(("CAL", "https://junk1.example:1"), 0, random.Random(1), "x")
    table.set_record_endpoints("CAL", ["https://cal.example:1"])
    assert [p.endpoint for p in table.endpoints("CAL")] == ["https://cal.example:1"]
    assert ("CAL", "https://junk1.example:1") not in table.health
    assert table.endpoints("BOR")[0].source == "genesis"


def test_pending_takes_only_events_that_link_to_the_head():
    """Forgeries parked ahead of a chain are dropped when the honest event before them
    lands, not handed back for a check after every honest event (issue 13, class 8)."""
    buf = PendingBuffer()
    ids = {s: bytes([s]) * 32 for s in range(1, 8)}
    for seq in range(3, 8):   # forged: they claim a prev nobody signed
        assert buf.add("ATL", seq, b"forged%d" % seq, head_seq=1, prev=b"\xee" * 32,
                       event_id=b"f%d" % seq)
    assert buf.add("ATL", 3, b"honest3", head_seq=1, prev=ids[2], event_id=ids[3])
    assert buf.add("ATL", 4, b"honest4", head_seq=1, prev=ids[3], event_id=ids[4])
    # the honest #2 lands: the honest run follows, the forgery at #5 is the end of it
    assert buf.take_ready("ATL", 2, ids[2]) == [b"honest3", b"honest4"]
    assert buf.take_ready("ATL", 4, ids[4]) == []
    assert len(buf) == 2   # #5 dropped (it can never link), #6 and #7 wait their turn


def test_pending_keeps_a_few_candidates_per_sequence_so_squatters_cannot_shut_out():
    buf = PendingBuffer(max_per_seq=2)
    assert buf.add("ATL", 5, b"junk-a", head_seq=1, prev=b"x" * 32, event_id=b"a")
    assert buf.add("ATL", 5, b"honest", head_seq=1, prev=b"p" * 32, event_id=b"h")
    assert not buf.add("ATL", 5, b"junk-b", head_seq=1, prev=b"y" * 32, event_id=b"b")
    assert not buf.add("ATL", 5, b"honest", head_seq=1, prev=b"p" * 32, event_id=b"h")
    assert buf.take_ready("ATL", 4, b"p" * 32) == [b"honest"]
    assert len(buf) == 0 and buf.size_bytes == 0
