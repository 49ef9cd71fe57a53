"""Gossip reconciliation as pure decisions (PROTOCOL.md §8.3).

Push-pull anti-entropy in the style of Scuttlebutt reconciliation (van Renesse et
al., 2008): two nodes compare a 32-byte summary of the heads they hold; only if
the summaries differ do they exchange heads (author, seq, id), then each sends
what the other lacks, oldest first, within a byte budget. Fresh events are
*announced* (heads only) to a few peers, who pull what they lack, so an update
crosses each link about once however many announce it.

Nothing here touches a socket or a clock: the node passes ``now`` (ms) and an
``rng``, and carries out what these functions decide. A simulator can drive the
same code with virtual time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pocnode.core import encoding
from pocnode.core.errors import Malformed
from pocnode.core.events import MEMBER_ID

if TYPE_CHECKING:  # the caller passes its rng in; the core never seeds or reads one itself
    import random

SUMMARY_DOMAIN = b"pocnode/v1/summary\x00"
# 193 UN members + observers, with room: a heads list is at most ~50 KB.
MAX_AUTHORS = 1024

Heads = Mapping[str, tuple[int, bytes]]  # author -> (seq, id of the event at seq)


def summary_hash(heads: Heads) -> bytes:
    """Sent first, so an idle gossip round costs 32 bytes, not one entry per member."""
    return hashlib.sha256(SUMMARY_DOMAIN + encoding.encode(heads_to_wire(heads))).digest()


def heads_to_wire(heads: Heads) -> list[list[Any]]:
    """[[author, seq, id], ...] sorted by author as map keys sort (§2.3)."""
    return [[a, heads[a][0], heads[a][1]] for a in sorted(heads, key=encoding.key_order)]


def heads_from_wire(obj: Any, *, path: str) -> dict[str, tuple[int, bytes]]:
    """Validate a peer's heads list; sorted, unique, bounded (§8.3)."""
    if type(obj) is not list or len(obj) > MAX_AUTHORS:
        raise Malformed(f"heads must be a list of at most {MAX_AUTHORS}", path=path)
    out: dict[str, tuple[int, bytes]] = {}
    prev: tuple[int, bytes] | None = None
    for i, item in enumerate(obj):
        if (type(item) is not list or len(item) != 3 or type(item[0]) is not str
                or type(item[1]) is not int or type(item[2]) is not bytes):
            raise Malformed("a head is [author str, seq int, id bin]", path=f"{path}[{i}]")
        author, seq, event_id = item
        if not MEMBER_ID.fullmatch(author) or not 1 <= seq < 2**63 or len(event_id) != 32:
            raise Malformed("head out of range", path=f"{path}[{i}]")
        order = encoding.key_order(author)
        if prev is not None and order <= prev:
            raise Malformed("heads must be sorted by author, each once", path=f"{path}[{i}]")
        prev = order
        out[author] = (seq, event_id)
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """What one side of an exchange should do, from both sides' heads."""

    send: tuple[tuple[str, int], ...]   # (author, first seq the peer lacks)
    want: tuple[tuple[str, int], ...]   # (author, first seq we lack)
    forks: tuple[str, ...]              # same seq, different id: an equivocation to surface


def plan(ours: Heads, theirs: Heads) -> Plan:
    send, want, forks = [], [], []
    for author in sorted(set(ours) | set(theirs), key=encoding.key_order):
        our_seq, our_id = ours.get(author, (0, b""))
        their_seq, their_id = theirs.get(author, (0, b""))
        if our_seq > their_seq:
            send.append((author, their_seq + 1))
        elif their_seq > our_seq:
            want.append((author, our_seq + 1))
        elif our_seq and our_id != their_id:
            forks.append(author)
    return Plan(send=tuple(send), want=tuple(want), forks=tuple(forks))


def interleave(batches: Mapping[str, list[bytes]], *, max_bytes: int,
               max_events: int) -> list[bytes]:
    """Oldest first across authors (round-robin by position), within the budget, so one
    author's long history cannot starve the others. Always at least one event if any."""
    out: list[bytes] = []
    total = 0
    queues = [list(batches[a]) for a in sorted(batches, key=encoding.key_order) if batches[a]]
    depth = 0
    while queues and len(out) < max_events:
        progressed = False
        for q in queues:
            if depth < len(q):
                item = q[depth]
                if out and total + len(item) > max_bytes:
                    return out
                out.append(item)
                total += len(item)
                progressed = True
                if len(out) >= max_events:
                    return out
        if not progressed:
            break
        depth += 1
    return out


# -- events that arrive before their predecessors (§8.4) -------------------------------


@dataclass
class PendingBuffer:
    """Bounded holding area for events whose predecessors have not arrived.

    A hostile peer can send events far ahead of any chain; they cost at most
    ``max_bytes`` in total and ``max_per_author`` per author. When full, the
    event furthest ahead of its chain is the one dropped: it is the least
    likely to become useful soon.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_per_author: int = 256
    _by_author: dict[str, dict[int, bytes]] = field(default_factory=dict)
    _bytes: int = 0

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_author.values())

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def add(self, author: str, seq: int, raw: bytes, head_seq: int) -> bool:
        """Keep an event that is ahead of ``head_seq``; False if it was not kept."""
        if seq <= head_seq or len(raw) > self.max_bytes:
            return False
        slot = self._by_author.setdefault(author, {})
        if seq in slot:
            return False
        if len(slot) >= self.max_per_author:
            furthest = max(slot)
            if furthest <= seq:
                return False
            self._drop(author, furthest)
        while self._bytes + len(raw) > self.max_bytes and self._bytes:
            victim_author, victim_seq = max(
                ((a, max(s)) for a, s in self._by_author.items() if s), key=lambda x: x[1])
            if victim_author == author and victim_seq <= seq:
                return False
            self._drop(victim_author, victim_seq)
        # Eviction may have emptied and removed this author's slot: look it up again.
        self._by_author.setdefault(author, {})[seq] = raw
        self._bytes += len(raw)
        return True

    def take_ready(self, author: str, head_seq: int) -> list[bytes]:
        """Remove and return the run of events that now follow ``head_seq``, in order, and
        forget any at or below it (they arrived some other way)."""
        slot = self._by_author.get(author)
        if not slot:
            return []
        for seq in [s for s in slot if s <= head_seq]:
            self._drop(author, seq)
        out = []
        seq = head_seq + 1
        while seq in slot:
            out.append(slot[seq])
            self._drop(author, seq)
            seq += 1
        return out

    def _drop(self, author: str, seq: int) -> None:
        raw = self._by_author[author].pop(seq)
        self._bytes -= len(raw)
        if not self._by_author[author]:
            del self._by_author[author]


# -- peers, their health and the choice among them (§8.2) ----------------------------------


@dataclass
class Peer:
    endpoint: str
    member: str | None       # None when learned from config without a member id
    source: str              # "genesis" | "record" | "config"
    failures: int = 0
    next_try: int = 0        # ms; a failing peer is not chosen before this
    last_contact: int | None = None
    last_error: str | None = None


@dataclass
class PeerTable:
    """Which peers exist and which may be tried now, with exponential backoff.

    Backoff doubles from ``base_backoff_ms`` per consecutive failure up to
    ``max_backoff_ms``, with up to 25% random jitter so that a federation that lost a
    node does not retry it in lockstep.
    """

    self_member: str
    base_backoff_ms: int = 1_000
    max_backoff_ms: int = 5 * 60_000
    peers: dict[str, Peer] = field(default_factory=dict)

    def learn(self, endpoint: str, *, member: str | None, source: str) -> None:
        if member == self.self_member:
            return
        known = self.peers.get(endpoint)
        if known is None:
            self.peers[endpoint] = Peer(endpoint=endpoint, member=member, source=source)
        elif member is not None and known.member is None:
            known.member = member

    def available(self, now: int, exclude: Iterable[str] = ()) -> list[Peer]:
        excluded = set(exclude)
        return [p for p in self.peers.values()
                if p.next_try <= now and p.endpoint not in excluded
                and (p.member is None or p.member not in excluded)]

    def choose(self, now: int, rng: random.Random, k: int = 1,
               exclude: Iterable[str] = ()) -> list[Peer]:
        """Up to k distinct peers, uniformly at random among those not backing off."""
        candidates = sorted(self.available(now, exclude), key=lambda p: p.endpoint)
        return rng.sample(candidates, min(k, len(candidates)))

    def success(self, endpoint: str, now: int) -> None:
        peer = self.peers.get(endpoint)
        if peer is not None:
            peer.failures = 0
            peer.next_try = 0
            peer.last_contact = now
            peer.last_error = None

    def failure(self, endpoint: str, now: int, rng: random.Random, error: str) -> int:
        """Record a failure; returns the backoff chosen, in ms."""
        peer = self.peers.get(endpoint)
        if peer is None:
            return 0
        peer.failures += 1
        delay = min(self.max_backoff_ms, self.base_backoff_ms * 2 ** min(peer.failures - 1, 20))
        delay += int(delay * 0.25 * rng.random())
        peer.next_try = now + delay
        peer.last_error = error[:200]
        return delay
