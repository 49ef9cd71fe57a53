"""An in-memory store: what the engine's storage effects need, and nothing else.

It keeps what the SQLite store keeps (pocnode/store/db.py), with the same contract for
each effect: events per author in sequence order, append-only; a conflicting event at a
taken (author, seq) refused with StoreError; forked events moved aside, beside their
proof, when an equivocation freezes an author (§4.6); one proof per (author, seq);
disclosures keyed by (event id, digest), the first kept; erasure by (event id,
visibility). It survives a simulated restart (the node's engine does not): the
simulator restores a new engine from it as the daemon restores from its database.

Raw bytes are kept as the network handed them, so that a 5,000-node run holds one
envelope per node per event and no decoded copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pocnode.core.disclosure import DisclosureRow
from pocnode.core.errors import StoreError
from pocnode.core.events import KIND_RECORD, Event


@dataclass(slots=True)
class _Chain:
    raws: list[bytes] = field(default_factory=list)   # raws[seq - 1]
    ids: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)   # when this node stored each
    record_seq: int = 0                                 # latest record event, 0 if none


@dataclass(slots=True)
class _Disclosure:
    author: str
    entry: str
    field: str
    visibility: str
    raw: bytes


@dataclass(slots=True)
class PeerHealthRow:
    member: str | None
    endpoint: str
    failures: int
    next_try: int
    last_contact: int | None
    last_error: str | None


class MemoryStore:
    """One node's store. Methods mirror the effects of pocnode.core.engine."""

    __slots__ = ("chains", "forked", "proofs", "disclosures", "peer_health")

    def __init__(self) -> None:
        self.chains: dict[str, _Chain] = {}
        self.forked: list[tuple[str, int, bytes, bytes]] = []   # (author, seq, id, raw)
        self.proofs: dict[tuple[str, int], tuple[bytes, int]] = {}
        self.disclosures: dict[tuple[bytes, bytes], _Disclosure] = {}
        self.peer_health: list[PeerHealthRow] = []

    # -- events --------------------------------------------------------------------------

    def append(self, events: Iterable[Event], rows: Iterable[DisclosureRow] = (),
               received_at: int = 0) -> None:
        """Commit: all or nothing, as one transaction would."""
        events = list(events)
        staged: dict[str, int] = {}
        for e in events:
            chain = self.chains.get(e.author)
            held = chain.ids[e.seq - 1] if chain is not None and e.seq <= len(chain.ids) \
                else None
            if held is not None and held != e.id:
                raise StoreError(f"author {e.author} seq {e.seq}: event {held.hex()} is "
                                 f"stored, refusing {e.id.hex()}; nothing of the batch was "
                                 f"stored")
            top = staged.get(e.author, len(chain.ids) if chain is not None else 0)
            if held is None:
                if e.seq != top + 1:
                    raise StoreError(f"author {e.author}: seq {e.seq} after {top}; the "
                                     f"engine commits chains in order")
                staged[e.author] = e.seq
        for e in events:
            chain = self.chains.get(e.author)
            if chain is None:
                chain = self.chains[e.author] = _Chain()
            if e.seq <= len(chain.ids):
                continue  # the same event again: skipped, as INSERT's trigger does
            chain.raws.append(e.raw)
            chain.ids.append(e.id)
            chain.kinds.append(e.kind)
            chain.ts.append(e.ts)
            chain.received.append(received_at)
            if e.kind == KIND_RECORD:
                chain.record_seq = e.seq
        self.add_disclosures(rows)

    def events_from(self, author: str, first: int, limit: int, max_bytes: int) -> list[bytes]:
        chain = self.chains.get(author)
        if chain is None or limit < 1 or first > len(chain.raws):
            return []
        out: list[bytes] = []
        total = 0
        for raw in chain.raws[max(first, 1) - 1:max(first, 1) - 1 + limit]:
            total += len(raw)
            if out and total > max_bytes:
                break
            out.append(raw)
        return out

    def event(self, author: str, seq: int) -> bytes | None:
        chain = self.chains.get(author)
        if chain is None or not 1 <= seq <= len(chain.raws):
            return None
        return chain.raws[seq - 1]

    def chain_raws(self, author: str, upto: int) -> list[bytes]:
        chain = self.chains.get(author)
        return list(chain.raws[:max(upto, 0)]) if chain is not None else []

    def ids(self, author: str) -> list[bytes]:
        chain = self.chains.get(author)
        return list(chain.ids) if chain is not None else []

    def freeze(self, author: str, seq: int, proof: bytes, found_at: int) -> None:
        """§4.6: keep the proof; move the author's events from ``seq`` on aside."""
        self.proofs.setdefault((author, seq), (proof, found_at))
        self.cut(author, seq)

    def add_proof(self, author: str, seq: int, proof: bytes, found_at: int) -> None:
        self.proofs.setdefault((author, seq), (proof, found_at))

    def proof(self, author: str, seq: int) -> bytes | None:
        held = self.proofs.get((author, seq))
        return held[0] if held is not None else None

    # -- disclosures ---------------------------------------------------------------------

    def add_disclosures(self, rows: Iterable[DisclosureRow]) -> None:
        for r in rows:
            self.disclosures.setdefault((r.event_id, r.digest), _Disclosure(
                r.author, r.entry, r.field, r.visibility, r.raw))

    def erase_disclosures(self, groups: Iterable[tuple[bytes, str]]) -> None:
        doomed = set(groups)
        for key in [k for k, d in self.disclosures.items() if (k[0], d.visibility) in doomed]:
            del self.disclosures[key]

    def disclosures_for(self, event_id: bytes, visibilities: tuple[str, ...]) -> list[bytes]:
        """Ordered by digest, as the SQL store returns them."""
        return [d.raw for (eid, _), d in sorted(
            ((k, d) for k, d in self.disclosures.items() if k[0] == event_id),
            key=lambda item: item[0][1]) if d.visibility in visibilities]

    def disclosure_index(self) -> list[tuple[str, bytes, bytes, str]]:
        return [(d.author, eid, digest, d.visibility)
                for (eid, digest), d in self.disclosures.items()]

    # -- what a restart reads (pocnode/node/node.py, Node._restore) -----------------------

    def heads(self) -> dict[str, tuple[int, bytes, int]]:
        return {a: (len(c.ids), c.ids[-1], c.ts[-1]) for a, c in sorted(self.chains.items())
                if c.ids}

    def events_of_kind(self, kind: str) -> list[bytes]:
        """Ordered by (author, seq), as the SQL store's query orders them."""
        return [c.raws[i] for _, c in sorted(self.chains.items())
                for i, k in enumerate(c.kinds) if k == kind]

    def directory(self) -> list[bytes]:
        """Each author's latest record event, by author."""
        return [c.raws[c.record_seq - 1] for _, c in sorted(self.chains.items())
                if c.record_seq]

    def proof_rows(self) -> list[tuple[str, int]]:
        return sorted(self.proofs)

    def read_stored(self, what: str, kinds: tuple[str, ...]) -> Any:
        """The reads of a restart (pocnode.core.engine.ReadStored), as the SQL store
        answers them."""
        if what == "kinds":
            wanted = set(kinds)
            return [c.raws[i] for _, c in sorted(self.chains.items())
                    for i, k in enumerate(c.kinds) if k in wanted]
        if what == "kinds_received":
            wanted = set(kinds)
            return [(c.raws[i], c.received[i]) for _, c in sorted(self.chains.items())
                    for i, k in enumerate(c.kinds) if k in wanted]
        if what == "heads":
            return self.heads()
        if what == "chain_ids":
            return {a: list(c.ids) for a, c in sorted(self.chains.items()) if c.ids}
        if what == "records":
            return self.directory()
        if what == "disclosure_index":
            return self.disclosure_index()
        if what == "proofs":
            return self.proof_rows()
        if what == "peer_health":
            return [(r.member, r.endpoint, r.failures, r.next_try, r.last_contact,
                     r.last_error) for r in self.peer_health]
        raise ValueError(f"unknown store read {what!r}")

    def cut(self, author: str, seq: int) -> None:
        """§5.9 key recovery: the author's events from ``seq`` on move aside (kept)."""
        chain = self.chains.get(author)
        if chain is None or seq > len(chain.raws):
            return
        for i in range(seq - 1, len(chain.raws)):
            self.forked.append((author, i + 1, chain.ids[i], chain.raws[i]))
        del chain.raws[seq - 1:], chain.ids[seq - 1:], chain.kinds[seq - 1:], \
            chain.ts[seq - 1:], chain.received[seq - 1:]
        chain.record_seq = max((i + 1 for i, k in enumerate(chain.kinds) if k == KIND_RECORD),
                               default=0)

    def event_count(self) -> int:
        return sum(len(c.ids) for c in self.chains.values())


__all__ = ["MemoryStore", "PeerHealthRow"]
