"""Per-author chains and the one verifier every part of pocnode runs (PROTOCOL.md §4).

:class:`Verifier` is given data only (a verified genesis and the chains so far)
and never reads a clock, a file or a socket: a node's ingest, the offline
auditor, the simulator and the conformance tests drive this same code, so they
cannot disagree about what is valid.

``check`` decides and leaves state alone; ``apply`` extends a chain with an
event ``check`` accepted. A node commits the event to disk between the two, so
memory never runs ahead of what survives a crash.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

from pocnode.core import encoding
from pocnode.core.consent import check_sealed
from pocnode.core.errors import (
    BadSignature,
    Duplicate,
    Equivocation,
    Malformed,
    NotEquivocation,
    PocError,
    SequenceGap,
    TimestampInFuture,
    TimestampRegression,
    UnknownAuthor,
    UnknownKind,
    WrongAlgorithm,
    WrongFederation,
    WrongPrev,
)
from pocnode.core.events import (
    KIND_KEY_ROTATE,
    KIND_NODE_KEYS,
    KIND_RECORD,
    KIND_SEALED,
    KINDS,
    RESERVED_KINDS,
    Event,
    check_key_rotate,
    check_node_keys,
    parse_event,
)
from pocnode.core.genesis import Genesis
from pocnode.core.keys import PublicKey
from pocnode.core.record import validate_signed_body

# An author's clock may run ahead of ours by this much before we make its event wait;
# minutes, because state networks keep NTP but a laptop at a ministry may not.
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000
# Two envelopes of at most 64 KiB each, plus framing.
MAX_PROOF_BYTES = 2 * encoding.MAX_EVENT_BYTES + 64


@dataclass(slots=True)
class AuthorChain:
    """What a verifier must remember of one author: ids by sequence (32 bytes each, plus
    list overhead), the keys in force by first sequence, and the head's timestamp."""

    author: str
    keys: list[tuple[int, PublicKey]]  # (first sequence the key signs, key), ascending
    ids: list[bytes] = field(default_factory=list)  # ids[seq - 1]
    head_ts: int = 0

    @property
    def seq(self) -> int:
        return len(self.ids)

    @property
    def head_id(self) -> bytes | None:
        return self.ids[-1] if self.ids else None

    def key_at(self, seq: int) -> PublicKey:
        """The identity key that must have signed event ``seq`` (§4.3)."""
        i = bisect.bisect_right(self.keys, seq, key=lambda entry: entry[0]) - 1
        return self.keys[max(i, 0)][1]

    def add_key(self, first_seq: int, key: PublicKey) -> None:
        """A rotation to the key already in force changes nothing, so it costs nothing:
        the key list grows only with real changes, whatever an author does."""
        if key != self.keys[-1][1]:
            self.keys.append((first_seq, key))


class Verifier:
    """Checks events against a federation's genesis and the chains seen so far."""

    def __init__(self, genesis: Genesis, *, max_skew_ms: int = MAX_CLOCK_SKEW_MS) -> None:
        self.genesis = genesis
        self.max_skew_ms = max_skew_ms
        self.chains: dict[str, AuthorChain] = {
            member: AuthorChain(author=member, keys=[(1, key)])
            for member, key in genesis.members.items()
        }

    def check(self, data: bytes, *, now: int | None = None) -> Event:
        """§4.1: verify ``data`` as the next event of its author's chain, or raise.

        ``now`` (ms since the epoch) enables the clock-skew check of step 15; an
        auditor replaying history passes None.
        """
        event = parse_event(data)                                     # steps 1-5
        self._check_context(event)                                    # steps 6-9
        chain = self.chains[event.author]
        if event.seq <= chain.seq:                                    # step 10
            held = chain.ids[event.seq - 1]
            if held == event.id:
                raise Duplicate(f"{event.author} #{event.seq} already held")
            self._check_signature(event, chain)
            raise Equivocation(
                f"{event.author} signed two events at #{event.seq}: "
                f"{held.hex()[:16]} and {event.id.hex()[:16]}",
                author=event.author, seq=event.seq, held_id=held, event=event)
        if event.seq > chain.seq + 1:                                 # step 11
            raise SequenceGap(f"{event.author}: expected #{chain.seq + 1}, got #{event.seq}")
        self._check_signature(event, chain)                           # step 12
        if event.prev != chain.head_id:                               # step 13
            want = chain.head_id.hex()[:16] if chain.head_id else "nil"
            got = event.prev.hex()[:16] if event.prev else "nil"
            raise WrongPrev(f"{event.author} #{event.seq}: prev {got}, head is {want}",
                            path="event.prev")
        if event.ts < chain.head_ts:                                  # step 14
            raise TimestampRegression(f"{event.author} #{event.seq}: ts {event.ts} before the "
                                      f"previous event's {chain.head_ts}", path="event.ts")
        if now is not None and event.ts > now + self.max_skew_ms:     # step 15
            raise TimestampInFuture(f"{event.author} #{event.seq}: ts {event.ts} is "
                                    f"{event.ts - now} ms ahead of ours", path="event.ts")
        self._check_body(event)                                       # step 16
        return event

    def apply(self, event: Event) -> None:
        """Extend the author's chain with an event :meth:`check` accepted."""
        chain = self.chains[event.author]
        if event.seq != chain.seq + 1 or event.prev != chain.head_id:
            # A caller bug (apply without a fresh check), never a verdict on input.
            raise PocError(f"{event.author} #{event.seq} does not extend head #{chain.seq}; "
                           f"check() it again")
        chain.ids.append(event.id)
        chain.head_ts = event.ts
        if event.kind == KIND_KEY_ROTATE:
            chain.add_key(event.seq + 1, check_key_rotate(event.body, self.genesis.sig_alg))

    def ingest(self, data: bytes, *, now: int | None = None) -> Event:
        event = self.check(data, now=now)
        self.apply(event)
        return event

    def ingest_all(self, events: Iterable[bytes]) -> list[Event]:
        """Replay a history in order (an auditor's or a restarting node's path)."""
        return [self.ingest(data) for data in events]

    def check_proof(self, data: bytes) -> tuple[str, int]:
        """§4.5: verify an equivocation proof; returns the (author, seq) it proves.

        A proof is checked with the key valid at its sequence in this verifier's own
        chains, so a proof ahead of what we hold (seq > head + 1) waits: checking it with a
        key the author may already have rotated away would let a thief of an old key
        accuse the member falsely.
        """
        doc = encoding.decode(data, max_size=MAX_PROOF_BYTES)
        if type(doc) is not dict or doc.keys() != {"a", "b"}:
            raise Malformed("proof must be a map with exactly a, b", path="proof")
        if type(doc["a"]) is not bytes or type(doc["b"]) is not bytes:
            raise Malformed("proof.a and proof.b must be bin", path="proof")
        a, b = parse_event(doc["a"]), parse_event(doc["b"])
        for name, event in (("a", a), ("b", b)):
            if event.fed != self.genesis.id:
                raise WrongFederation("proof event of another federation", path=f"proof.{name}")
        if a.author != b.author or a.seq != b.seq:
            raise NotEquivocation("proof events differ in author or sequence", path="proof")
        if a.id >= b.id:
            raise NotEquivocation("proof events must be distinct and ordered by id",
                                  path="proof")
        chain = self.chains.get(a.author)
        if chain is None:
            raise UnknownAuthor(f"{a.author} is not a member", path="proof.a")
        for name, event in (("a", a), ("b", b)):
            if event.sig.alg != self.genesis.sig_alg:
                raise WrongAlgorithm(f"signed with {event.sig.alg}", path=f"proof.{name}")
        if a.seq > chain.seq + 1:
            raise SequenceGap(f"proof at {a.author} #{a.seq}, we hold up to #{chain.seq}",
                              path="proof")
        key = chain.key_at(a.seq)
        for name, event in (("a", a), ("b", b)):
            if not key.verify(event.sig, event.signing_input):
                raise BadSignature(f"proof.{name} does not verify under {a.author}'s key at "
                                   f"#{a.seq}", path=f"proof.{name}")
        return a.author, a.seq

    # -- steps ---------------------------------------------------------------------

    def _check_context(self, event: Event) -> None:
        if event.fed != self.genesis.id:
            raise WrongFederation(f"event is for federation {event.fed.hex()[:16]}, this is "
                                  f"{self.genesis.id.hex()[:16]}", path="event.fed")
        if event.kind not in KINDS:
            reserved = " (reserved for a later protocol version)" \
                if event.kind in RESERVED_KINDS else ""
            raise UnknownKind(f"kind {event.kind!r:.40}{reserved}", path="event.kind")
        if event.author not in self.chains:
            raise UnknownAuthor(f"{event.author} is not a member", path="event.author")
        if event.sig.alg != self.genesis.sig_alg:
            raise WrongAlgorithm(f"signed with {event.sig.alg}, the genesis says "
                                 f"{self.genesis.sig_alg}", path="envelope.sig.alg")

    def _check_signature(self, event: Event, chain: AuthorChain) -> None:
        if not chain.key_at(event.seq).verify(event.sig, event.signing_input):
            raise BadSignature(f"{event.author} #{event.seq}: signature does not verify under "
                               f"the key valid at that sequence", path="envelope.sig")

    def _check_body(self, event: Event) -> None:
        if event.kind == KIND_RECORD:
            validate_signed_body(event.body)
        elif event.kind == KIND_KEY_ROTATE:
            check_key_rotate(event.body, self.genesis.sig_alg)
        elif event.kind == KIND_NODE_KEYS:
            check_node_keys(event.body, self.genesis.hpke_suite)
        elif event.kind == KIND_SEALED:
            check_sealed(event.body, self.genesis.hpke_suite)


# -- equivocation proofs (§4.5) ------------------------------------------------------


def equivocation_proof(first: bytes, second: bytes) -> bytes:
    """Canonical proof from two conflicting envelopes, ordered by event id."""
    a, b = sorted((first, second), key=lambda raw: parse_event(raw).id)
    return encoding.encode({"a": a, "b": b})
