"""Gossip decisions (PROTOCOL.md §8.3, §8.4): summaries, plans, budgets, buffers, backoff."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.errors import Malformed
from pocnode.core.reconcile import (
    PeerTable,
    PendingBuffer,
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


@given(HEADS, HEADS)
def test_plan_brings_both_sides_to_the_union(ours, theirs):
    p = plan(ours, theirs)
    after_theirs = dict(theirs)
    for author, first in p.send:
        assert first == theirs.get(author, (0, b""))[0] + 1
        after_theirs[author] = ours[author]
    after_ours = dict(ours)
    for author, first in p.want:
        assert first == ours.get(author, (0, b""))[0] + 1
        after_ours[author] = theirs[author]
    for author in p.forks:
        assert ours[author][0] == theirs[author][0] and ours[author][1] != theirs[author][1]
        after_theirs[author] = after_ours[author]
    assert after_ours == after_theirs


def test_equal_heads_plan_nothing():
    heads = {"ATL": (3, os.urandom(32))}
    assert plan(heads, heads) == plan({}, {})


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
        assert all(len(buf._by_author.get(a, {})) <= 7 for a in ("ATL", "BOR", "CAL"))
        assert buf.size_bytes == sum(len(r) for s in buf._by_author.values() for r in s.values())


def test_pending_buffer_drops_the_furthest_ahead_first():
    buf = PendingBuffer(max_bytes=100, max_per_author=10)
    assert buf.add("ATL", 50, b"x" * 60, head_seq=0)
    assert buf.add("ATL", 2, b"y" * 60, head_seq=0)   # evicts #50
    assert buf.take_ready("ATL", head_seq=1) == [b"y" * 60]


def test_backoff_grows_and_resets():
    table = PeerTable(self_member="ATL", base_backoff_ms=1000, max_backoff_ms=8000)
    table.learn("https://b.example:1", member="BOR", source="genesis")
    table.learn("https://a.example:1", member="ATL", source="genesis")  # ourselves: ignored
    rng = random.Random(1)
    assert [p.member for p in table.choose(0, rng)] == ["BOR"]
    delays = [table.failure("https://b.example:1", 0, rng, "refused") for _ in range(6)]
    assert delays[0] >= 1000 and all(d <= 10_000 for d in delays)
    assert delays[3] >= 8000
    assert table.choose(5000, rng) == []
    table.success("https://b.example:1", 6000)
    assert [p.member for p in table.choose(6000, rng)] == ["BOR"]


def test_choose_is_uniform_enough_and_respects_exclusions():
    table = PeerTable(self_member="X")
    for i in range(10):
        table.learn(f"https://n{i}.example:1", member=f"M{i}", source="genesis")
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(2000):
        (p,) = table.choose(0, rng, exclude={"M0"})
        counts[p.member] = counts.get(p.member, 0) + 1
    assert "M0" not in counts and len(counts) == 9
    assert min(counts.values()) > 150
    assert len(table.choose(0, rng, k=3)) == 3
