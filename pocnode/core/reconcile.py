"""Gossip reconciliation as pure decisions (PROTOCOL.md §8.3, §8.4).

Push-pull anti-entropy in the style of Scuttlebutt reconciliation (van Renesse et
al., 2008): two nodes compare a 32-byte summary of what they hold; only if the
summaries differ do they exchange heads (author, seq, id), then each sends what
the other lacks, oldest first, within a byte budget. Fresh events are *announced*
(heads only) to a few peers, who pull what they lack, so an update crosses each
link about once however many announce it.

Forks are looked for whatever the branch lengths (§4.6): the side that holds more
of an author's chain compares its id at the other side's head sequence, and a
side that asks for events names the id it holds just before them, so the sender
starts one event earlier when that id is not its own. Either way each side
receives an event that conflicts with one it holds, and proves the fork itself.

Nothing here touches a socket or a clock: the node passes ``now`` (ms) and an
``rng``, and carries out what these functions decide. The simulator drives the
same code with virtual time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
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

Heads = Mapping[str, tuple[int, bytes]]      # author -> (seq, id of the event at seq)
Frozen = Mapping[str, int]                   # author -> lowest proven fork sequence (§4.6)
IdAt = Callable[[str, int], "bytes | None"]  # our id of an author's event at a sequence


def summary_hash(heads: Heads, frozen: Frozen | None = None) -> bytes:
    """Sent first, so an idle gossip round costs 32 bytes, not one entry per member.

    It covers the proven forks too: two nodes that hold the same events but not the same
    proofs must not call themselves in sync, or the proof would never travel.
    """
    wire: Any = heads_to_wire(heads)
    if frozen:
        wire = [wire, frozen_to_wire(frozen)]
    return hashlib.sha256(SUMMARY_DOMAIN + encoding.encode(wire)).digest()


def heads_to_wire(heads: Heads) -> list[list[Any]]:
    """[[author, seq, id], ...] sorted by author as map keys sort (§2.3)."""
    return [[a, heads[a][0], heads[a][1]] for a in sorted(heads, key=encoding.key_order)]


def frozen_to_wire(frozen: Frozen) -> list[list[Any]]:
    return [[a, frozen[a]] for a in sorted(frozen, key=encoding.key_order)]


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


def frozen_from_wire(obj: Any, *, path: str) -> dict[str, int]:
    if type(obj) is not list or len(obj) > MAX_AUTHORS:
        raise Malformed(f"frozen must be a list of at most {MAX_AUTHORS}", path=path)
    out: dict[str, int] = {}
    for i, item in enumerate(obj):
        if (type(item) is not list or len(item) != 2 or type(item[0]) is not str
                or type(item[1]) is not int or not MEMBER_ID.fullmatch(item[0])
                or not 1 <= item[1] < 2**63 or item[0] in out):
            raise Malformed("a frozen entry is [author, seq], each author once",
                            path=f"{path}[{i}]")
        out[item[0]] = item[1]
    return out


@dataclass(frozen=True, slots=True)
class Want:
    """Events of ``author`` from ``first`` on; ``prev`` is the id the asker holds at
    ``first - 1`` (None at the chain's start), so the sender can tell a fork (§8.3)."""

    author: str
    first: int
    prev: bytes | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What one side of an exchange should do, from both sides' heads."""

    send: tuple[tuple[str, int], ...]   # (author, first seq to send the peer)
    want: tuple[Want, ...]              # what we ask the peer for
    send_proofs: tuple[str, ...]        # authors whose fork proof the peer lacks
    want_proofs: tuple[str, ...]        # authors whose fork proof we lack

    @property
    def empty(self) -> bool:
        return not (self.send or self.want or self.send_proofs or self.want_proofs)


def plan(ours: Heads, theirs: Heads, *, id_at: IdAt, our_frozen: Frozen | None = None,
         their_frozen: Frozen | None = None) -> Plan:
    """Both sides end with the union of what they hold, forks found either way.

    ``id_at`` gives our id at any sequence we hold, so that when we are ahead we can see
    whether the peer's head is on our branch. Authors frozen on our side (§4.6) are
    neither asked for nor sent beyond the freeze: our heads already end before it.
    """
    our_frozen = our_frozen or {}
    their_frozen = their_frozen or {}
    send, want = [], []
    for author in sorted(set(ours) | set(theirs), key=encoding.key_order):
        our_seq, our_id = ours.get(author, (0, b""))
        their_seq, their_id = theirs.get(author, (0, b""))
        if our_seq > their_seq:
            if their_seq and id_at(author, their_seq) != their_id:
                # The peer's head is not on our branch: our event at its head's sequence
                # shows it the fork, and its own, asked for, shows us.
                send.append((author, their_seq))
                want.append(Want(author, their_seq, id_at(author, their_seq - 1)))
            else:
                send.append((author, their_seq + 1))
        elif their_seq > our_seq:
            if author not in our_frozen:
                want.append(Want(author, our_seq + 1, our_id or None))
        elif our_seq and our_id != their_id:
            send.append((author, our_seq))
            want.append(Want(author, our_seq, id_at(author, our_seq - 1)))
    send_proofs = [a for a, s in our_frozen.items() if their_frozen.get(a, s + 1) > s]
    want_proofs = [a for a, s in their_frozen.items() if our_frozen.get(a, s + 1) > s]
    return Plan(send=tuple(send), want=tuple(want),
                send_proofs=tuple(sorted(send_proofs, key=encoding.key_order)),
                want_proofs=tuple(sorted(want_proofs, key=encoding.key_order)))


def answer_wants(wants: Iterable[Want], *, head_seq: Callable[[str], int | None],
                 id_at: IdAt) -> list[tuple[str, int]]:
    """What to send for a peer's wants: from ``first``, or from ``first - 1`` when the
    id the peer holds there is not ours (a fork; §8.3). Unknown authors and wants past
    our head give nothing."""
    out = []
    for w in wants:
        seq = head_seq(w.author)
        if seq is None or w.first > seq + 1:
            continue
        first = w.first
        if 1 < first <= seq + 1 and id_at(w.author, first - 1) != w.prev:
            first -= 1
        if first <= seq:
            out.append((w.author, first))
    return out


def wants_for(ours: Heads, theirs: Heads, *, known: Callable[[str], bool],
              frozen: Frozen | None = None) -> list[Want]:
    """An announce's answer: what we lack of the heads announced to us, naming our ids."""
    frozen = frozen or {}
    out = []
    for author, (seq, _) in theirs.items():
        if not known(author) or author in frozen:
            continue
        our_seq, our_id = ours.get(author, (0, b""))
        if seq > our_seq:
            out.append(Want(author, our_seq + 1, our_id or None))
    return out


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
    likely to become useful soon. Events are kept as raw bytes, not decoded: a
    decoded body can cost many times its size, and nothing here is verified yet,
    so it is decoded again (once) when its turn comes.

    Each event is kept with the ``prev`` it claims and its id, and is taken only when it
    links to the chain as it now stands: forgeries parked just ahead of an honest chain
    are dropped the moment the honest event before them lands, never re-checked after
    each honest event; a few candidates per sequence keep squatters from shutting out
    the honest event at that sequence.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_per_author: int = 256
    max_per_seq: int = 4
    # author -> seq -> candidates (raw, claimed prev, id), in arrival order
    _by_author: dict[str, dict[int, list[tuple[bytes, bytes | None, bytes]]]] = field(
        default_factory=dict)
    _bytes: int = 0
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _held(self, author: str) -> int:
        return sum(len(c) for c in self._by_author.get(author, {}).values())

    def add(self, author: str, seq: int, raw: bytes, head_seq: int, *,
            prev: bytes | None = None, event_id: bytes = b"") -> bool:
        """Keep an event that is ahead of ``head_seq``; False if it was not kept."""
        if seq <= head_seq or len(raw) > self.max_bytes:
            return False
        slot = self._by_author.setdefault(author, {})
        here = slot.get(seq, [])
        if any(c[0] == raw or (event_id and c[2] == event_id) for c in here) \
                or len(here) >= self.max_per_seq:
            if not slot:
                self._by_author.pop(author, None)
            return False
        if self._held(author) >= self.max_per_author:
            furthest = max(slot)
            if furthest <= seq:
                return False
            self._drop(author, furthest)
        while self._bytes + len(raw) > self.max_bytes and self._bytes:
            victim_author, victim_seq = max(
                ((a, max(s)) for a, s in self._by_author.items() if s), key=lambda x: x[1])
            if victim_author == author and victim_seq <= seq:
                if not self._by_author.get(author):
                    self._by_author.pop(author, None)
                return False
            self._drop(victim_author, victim_seq)
        # Eviction may have emptied and removed this author's slot: look it up again.
        self._by_author.setdefault(author, {}).setdefault(seq, []).append(
            (raw, prev, event_id))
        self._bytes += len(raw)
        self._count += 1
        return True

    def take_ready(self, author: str, head_seq: int, head_id: bytes | None = None
                   ) -> list[bytes]:
        """Remove and return the run of events that now follow the head (``head_seq``,
        ``head_id``), in order, each linking to the one before; forget any at or below
        the head, and any at the next sequence that does not link to it (it never can:
        the chain below is final)."""
        slot = self._by_author.get(author)
        if not slot:
            return []
        for seq in [s for s in slot if s <= head_seq]:
            self._drop(author, seq)
        out = []
        seq, link = head_seq + 1, head_id
        while author in self._by_author and seq in self._by_author[author]:
            candidates = self._by_author[author][seq]
            match = next((c for c in candidates if head_id is None or c[1] == link), None)
            if match is None:
                if seq == head_seq + 1:
                    self._drop(author, seq)   # none links to the head: none ever will
                break
            out.append(match[0])
            self._drop(author, seq)
            seq, link = seq + 1, match[2]
        return out

    def forget(self, author: str) -> None:
        for seq in list(self._by_author.get(author, ())):
            self._drop(author, seq)

    def _drop(self, author: str, seq: int) -> None:
        """Every candidate at ``seq``."""
        for raw, _, _ in self._by_author[author].pop(seq):
            self._bytes -= len(raw)
            self._count -= 1
        if not self._by_author[author]:
            del self._by_author[author]


# -- peers, their health and the choice among them (§8.2) ----------------------------------

# A member lists at most 8 endpoints in the genesis and 8 in its record (§5.2, §6.2):
# the table holds at most that many per member, so no member can swell it.
MAX_ENDPOINTS_PER_SOURCE = 8
# Bootstrap endpoints from config (member unknown): the operator's list, bounded anyway.
MAX_CONFIG_ENDPOINTS = 64

PeerKey = tuple["str | None", str]  # (member or None for a config endpoint, endpoint URL)


@dataclass(slots=True)
class Health:
    failures: int = 0
    next_try: int = 0        # ms; a failing peer is not chosen before this
    last_contact: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """One endpoint of one member (or, from config, of a member not yet known).

    The pair is the identity: two members listing the same URL are two peers, each
    checked against its own member's TLS pin, so a member that lists another's endpoint
    only ever fails its own connections (§8.1)."""

    member: str | None
    endpoint: str
    source: str              # "genesis" | "record" | "config"

    @property
    def key(self) -> PeerKey:
        return (self.member, self.endpoint)


class PeerTable:
    """Which peers exist and which may be tried now, with exponential backoff.

    Endpoints come from three places: the genesis (``base``: shared and read-only, so
    that a simulator's thousands of engines do not each copy it), members' current
    records (replaced whole with each record, bounded per member), and the operator's
    config. Health is kept only for peers that were tried. Rounds choose a *member*
    uniformly among those with an endpoint not backing off, then one of its endpoints:
    a member with many endpoints gets no more of our rounds than one with a single one.
    """

    def __init__(self, self_member: str, base: Mapping[str, tuple[str, ...]] | None = None,
                 *, base_ids: Sequence[str] | None = None, base_backoff_ms: int = 1_000,
                 max_backoff_ms: int = 5 * 60_000) -> None:
        self.self_member = self_member
        self.base: Mapping[str, tuple[str, ...]] = base if base is not None else {}
        # The base's ids in a fixed order, shared (the genesis builds it once).
        self.base_ids: Sequence[str] = base_ids if base_ids is not None else sorted(self.base)
        self.base_backoff_ms = base_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.records: dict[str, tuple[str, ...]] = {}
        self.config: tuple[str, ...] = ()
        self.health: dict[PeerKey, Health] = {}
        self.gone: set[str] = set()        # members no longer gossiped with (withdrawn)
        self._extra: list[str] | None = None  # members with record endpoints, not in base

    # -- what exists ------------------------------------------------------------------

    def set_record_endpoints(self, member: str, endpoints: Iterable[str]) -> None:
        """A member's record endpoints are exactly those of its current record: a replaced
        record's endpoints are forgotten (and their health with them)."""
        wanted = tuple(dict.fromkeys(endpoints))[:MAX_ENDPOINTS_PER_SOURCE]
        for endpoint in self.records.get(member, ()):
            if endpoint not in wanted and endpoint not in self.base.get(member, ()):
                self.health.pop((member, endpoint), None)
        listed = member in self.records
        if wanted:
            self.records[member] = wanted
        else:
            self.records.pop(member, None)
        if listed != (member in self.records) and member not in self.base:
            self._extra = None

    def set_base(self, base: Mapping[str, tuple[str, ...]]) -> None:
        self.base = base
        self.base_ids = sorted(base)
        self._extra = None

    def set_config(self, endpoints: Iterable[str]) -> None:
        self.config = tuple(dict.fromkeys(endpoints))[:MAX_CONFIG_ENDPOINTS]

    def set_gone(self, member: str, gone: bool = True) -> None:
        (self.gone.add if gone else self.gone.discard)(member)

    def endpoints(self, member: str) -> list[Peer]:
        out = [Peer(member, e, "genesis") for e in self.base.get(member, ())]
        seen = {p.endpoint for p in out}
        out += [Peer(member, e, "record") for e in self.records.get(member, ())
                if e not in seen]
        return out

    def all(self) -> list[Peer]:
        """Every peer, for the operator's view: members sorted, then config endpoints."""
        out = [p for m in self.members() for p in self.endpoints(m)]
        return out + [Peer(None, e, "config") for e in self.config]

    def _extras(self) -> list[str]:
        if self._extra is None:
            self._extra = sorted(m for m in self.records if m not in self.base)
        return self._extra

    def members(self) -> list[str]:
        """Members we may gossip with (a view: O(members); choose() does not use it)."""
        return sorted(m for m in (*self.base_ids, *self._extras())
                      if m != self.self_member and m not in self.gone)

    def __len__(self) -> int:
        return len(self.all())

    def health_of(self, key: PeerKey) -> Health:
        return self.health.get(key) or Health()

    # -- choosing -----------------------------------------------------------------------

    def _ready(self, peer: Peer, now: int) -> bool:
        h = self.health.get(peer.key)
        return h is None or h.next_try <= now

    def choose(self, now: int, rng: random.Random, k: int = 1,
               exclude: Iterable[str | None] = ()) -> list[Peer]:
        """Up to k peers of distinct members, members chosen uniformly at random among
        those with an endpoint not backing off; a config endpoint counts as a member of
        its own. Sampling over the shared candidate list, not a scan, so a round costs the
        same at 5 or 5,000 members."""
        excluded = set(exclude)
        base, extra, config = self.base_ids, self._extras(), self.config
        total = len(base) + len(extra) + len(config)
        chosen: list[Peer] = []
        tried: set[int] = set()
        draws = 0
        while len(chosen) < k and len(tried) < total:
            draws += 1
            if draws > 4 * k + 16:
                # Rejection sampling wastes few draws while most members are usable; past a
                # bound, draw among what is left.
                rest = [i for i in range(total) if i not in tried]
                i = rest[rng.randrange(len(rest))]
            else:
                i = rng.randrange(total)
                if i in tried:
                    continue
            tried.add(i)
            if i < len(base) + len(extra):
                member = base[i] if i < len(base) else extra[i - len(base)]
                if member == self.self_member or member in self.gone or member in excluded:
                    continue
                peers = self.endpoints(member)
            else:
                peers = [Peer(None, config[i - len(base) - len(extra)], "config")]
            ready = [p for p in peers if self._ready(p, now) and p.endpoint not in excluded]
            if ready:
                chosen.append(ready[0] if len(ready) == 1 else ready[rng.randrange(len(ready))])
        return chosen

    # -- health ---------------------------------------------------------------------------

    def success(self, key: PeerKey, now: int) -> None:
        h = self.health.setdefault(key, Health())
        h.failures = 0
        h.next_try = 0
        h.last_contact = now
        h.last_error = None

    def failure(self, key: PeerKey, now: int, rng: random.Random, error: str) -> int:
        """Record a failure; returns the backoff chosen, in ms."""
        h = self.health.setdefault(key, Health())
        h.failures += 1
        delay = backoff_ms(h.failures, self.base_backoff_ms, self.max_backoff_ms, rng)
        h.next_try = now + delay
        h.last_error = error[:200]
        return delay

    def reachable(self, now: int, within_ms: int) -> set[str]:
        """Members we had a successful exchange with in the last ``within_ms``."""
        return {m for (m, _), h in self.health.items()
                if m is not None and h.last_contact is not None
                and now - h.last_contact <= within_ms}


def backoff_ms(failures: int, base_ms: int, max_ms: int, rng: random.Random) -> int:
    """The one backoff of pocnode: doubling per consecutive failure from ``base_ms``, capped
    at ``max_ms``, plus up to 25% jitter so that many nodes do not retry in step."""
    delay = min(max_ms, base_ms * 2 ** min(max(failures, 1) - 1, 30))
    return delay + int(delay * 0.25 * rng.random())
