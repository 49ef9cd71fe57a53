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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pocnode.core import encoding
from pocnode.core.errors import (
    BadSignature,
    Duplicate,
    Equivocated,
    Equivocation,
    KindNotAllowed,
    Malformed,
    NotEquivocation,
    PocError,
    SequenceGap,
    TimestampInFuture,
    TimestampRegression,
    UnknownAuthor,
    UnknownKind,
    Withdrawn,
    WrongAlgorithm,
    WrongFederation,
    WrongPrev,
)
from pocnode.core.events import (
    KIND_KEY_ROTATE,
    RESERVED_KINDS,
    Event,
    check_key_rotate,
    parse_event,
)
from pocnode.core.genesis import Genesis
from pocnode.core.governance import KIND_WITHDRAW
from pocnode.core.keys import PublicKey, Signature
from pocnode.core.kinds import BODY_RULES, CHAIN_RULES

# An author's clock may run ahead of ours by this much before we make its event wait;
# minutes, because state networks keep NTP but a laptop at a ministry may not.
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000
# Two envelopes of at most 64 KiB each, plus framing.
MAX_PROOF_BYTES = 2 * encoding.MAX_EVENT_BYTES + 64


@dataclass(slots=True)
class AuthorChain:
    """What a verifier must remember of one author: ids by sequence (32 bytes each, plus
    list overhead), the keys in force by first sequence, and the head's timestamp.

    ``frozen_at`` is the lowest sequence at which the author is proven to have signed two
    events (§4.6): the chain in force ends just before it, and nothing at or after it is
    accepted until a governance decision says otherwise.
    """

    author: str
    keys: list[tuple[int, PublicKey]]  # (first sequence the key signs, key), ascending
    ids: list[bytes] = field(default_factory=list)  # ids[seq - 1]
    head_ts: int = 0
    frozen_at: int | None = None
    closed_at: int | None = None  # the member withdrew at this sequence (§5.9)

    @property
    def seq(self) -> int:
        return len(self.ids)

    @property
    def head_id(self) -> bytes | None:
        return self.ids[-1] if self.ids else None

    def id_at(self, seq: int) -> bytes | None:
        return self.ids[seq - 1] if 1 <= seq <= len(self.ids) else None

    def key_at(self, seq: int) -> PublicKey:
        """The identity key that must have signed event ``seq`` (§4.3)."""
        i = bisect.bisect_right(self.keys, seq, key=lambda entry: entry[0]) - 1
        return self.keys[max(i, 0)][1]

    def add_key(self, first_seq: int, key: PublicKey) -> None:
        """A rotation to the key already in force changes nothing, so it costs nothing:
        the key list grows only with real changes, whatever an author does."""
        if key != self.keys[-1][1]:
            self.keys.append((first_seq, key))

    def truncate(self, seq: int, head_ts: int) -> None:
        """Cut the chain in force to end at ``seq - 1`` (a proven fork at ``seq``, §4.6).
        Keys introduced after the cut go: a key valid from ``seq`` on was introduced by
        the event at ``seq - 1``, which stays."""
        del self.ids[seq - 1:]
        self.keys = [k for k in self.keys if k[0] <= seq] or self.keys[:1]
        self.head_ts = head_ts


@dataclass(slots=True)
class _Extension:
    """Events of one author checked in a stage but not yet committed."""

    base_seq: int
    ids: list[bytes] = field(default_factory=list)
    head_ts: int = 0
    keys: list[tuple[int, PublicKey]] = field(default_factory=list)
    closed_at: int | None = None   # a withdrawal checked in this stage (§5.9)


class Stage:
    """A batch being checked: an overlay on the verifier's chains, so that the events of
    one batch may follow each other while the committed chains stay untouched.

    The node checks a batch in a stage, writes it to disk, and only then
    :meth:`Verifier.commit` s it; a failed write drops the stage and nothing was changed,
    so no reader ever sees a head that is not on disk.
    """

    __slots__ = ("verifier", "events", "_ext")

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.events: list[Event] = []
        self._ext: dict[str, _Extension] = {}

    # -- the chain as this stage sees it ----------------------------------------------

    def seq(self, author: str) -> int:
        ext = self._ext.get(author)
        return ext.base_seq + len(ext.ids) if ext else self.verifier.chain(author).seq

    def id_at(self, author: str, seq: int) -> bytes | None:
        ext = self._ext.get(author)
        if ext is not None and seq > ext.base_seq:
            i = seq - ext.base_seq - 1
            return ext.ids[i] if i < len(ext.ids) else None
        return self.verifier.chain(author).id_at(seq)

    def head_ts(self, author: str) -> int:
        ext = self._ext.get(author)
        if ext is not None and ext.ids:
            return ext.head_ts
        return self.verifier.chain(author).head_ts

    def key_at(self, author: str, seq: int) -> PublicKey:
        ext = self._ext.get(author)
        if ext is not None:
            for first, key in reversed(ext.keys):
                if first <= seq:
                    return key
        return self.verifier.chain(author).key_at(seq)

    def closed_at(self, author: str) -> int | None:
        ext = self._ext.get(author)
        if ext is not None and ext.closed_at is not None:
            return ext.closed_at
        return self.verifier.chain(author).closed_at

    def authors(self) -> list[str]:
        return [a for a, ext in self._ext.items() if ext.ids]

    # -- checking -------------------------------------------------------------------------

    def check(self, data: bytes | Event, *, now: int | None = None,
              verified: Mapping[Verdict, bool] | None = None) -> Event:
        """§4.1 against this stage's view; on success the event joins the stage.
        ``verified``: signatures already checked (in parallel, by the adapter), by
        (event id, key id); what is not in it is checked here."""
        event = self.verifier.check(data, now=now, stage=self, verified=verified)
        ext = self._ext.get(event.author)
        if ext is None:
            ext = self._ext[event.author] = _Extension(
                base_seq=self.verifier.chain(event.author).seq)
        ext.ids.append(event.id)
        ext.head_ts = event.ts
        if event.kind == KIND_KEY_ROTATE:
            new_key = check_key_rotate(event.body, self.verifier.genesis.sig_alg)
            if new_key != self.key_at(event.author, event.seq + 1):
                ext.keys.append((event.seq + 1, new_key))
        elif event.kind == KIND_WITHDRAW:
            ext.closed_at = event.seq   # what follows in this very batch is refused too
        self.events.append(event)
        return event


class Roster(Mapping[str, PublicKey]):
    """Who may author events, with the key each starts with: the genesis founders (shared,
    not copied: a simulator runs thousands of verifiers over one genesis) plus the members
    and observers governance admitted (§5.6)."""

    def __init__(self, founders: Mapping[str, PublicKey]) -> None:
        self._founders = founders
        self._admitted: dict[str, PublicKey] = {}
        self.observers: set[str] = set()

    def __getitem__(self, member: str) -> PublicKey:
        key = self._admitted.get(member)
        return key if key is not None else self._founders[member]

    def __contains__(self, member: object) -> bool:
        return member in self._admitted or member in self._founders

    def __iter__(self) -> Iterator[str]:
        yield from self._founders
        yield from (m for m in self._admitted if m not in self._founders)

    def __len__(self) -> int:
        return len(self._founders) + sum(1 for m in self._admitted if m not in self._founders)

    def admit(self, member: str, key: PublicKey, *, observer: bool = False) -> None:
        if member not in self._founders:
            self._admitted.setdefault(member, key)
        (self.observers.add if observer else self.observers.discard)(member)

    def role(self, member: str) -> str | None:
        if member not in self:
            return None
        return "observer" if member in self.observers else "member"


# What an observer may write in its chain: its node's keys, consent messages, and leaving.
OBSERVER_KINDS = frozenset({"node.keys", "sealed", "member.withdraw"})


class Verifier:
    """Checks events against a federation's genesis and the chains seen so far."""

    def __init__(self, genesis: Genesis, *, max_skew_ms: int = MAX_CLOCK_SKEW_MS) -> None:
        self.genesis = genesis
        self.max_skew_ms = max_skew_ms
        self.members = Roster(genesis.members)
        # Chains are made when first needed: most of a member's state is its chain, and a
        # member with no event needs none.
        self.chains: dict[str, AuthorChain] = {}

    def chain(self, author: str) -> AuthorChain:
        """The author's chain (KeyError if not a member)."""
        chain = self.chains.get(author)
        if chain is None:
            chain = self.chains[author] = AuthorChain(author=author,
                                                      keys=[(1, self.members[author])])
        return chain

    def head(self, author: str) -> tuple[int, bytes | None]:
        chain = self.chains.get(author)
        return (chain.seq, chain.head_id) if chain is not None else (0, None)

    def stage(self) -> Stage:
        return Stage(self)

    def commit(self, stage: Stage) -> None:
        """Extend the chains with everything ``stage`` accepted. The stage must have been
        made from this verifier's current chains (the node holds one lock from stage to
        commit): anything else is a caller bug, refused before anything changes."""
        for author, ext in stage._ext.items():
            if ext.ids and self.chain(author).seq != ext.base_seq:
                raise PocError(f"stage of {author} starts at #{ext.base_seq}, chain is at "
                               f"#{self.chain(author).seq}; check the batch again")
        for author, ext in stage._ext.items():
            if not ext.ids:
                continue
            chain = self.chain(author)
            chain.ids.extend(ext.ids)
            chain.head_ts = ext.head_ts
            for first, key in ext.keys:
                chain.add_key(first, key)
            if ext.closed_at is not None:
                chain.closed_at = ext.closed_at
        stage._ext.clear()

    def check(self, data: bytes | Event, *, now: int | None = None,
              stage: Stage | None = None,
              verified: Mapping[Verdict, bool] | None = None) -> Event:
        """§4.1: verify ``data`` as the next event of its author's chain, or raise.

        ``now`` (ms since the epoch) enables the clock-skew check of step 15; an
        auditor replaying history passes None. ``data`` may be an event parsed before
        (steps 1 to 5 done), so that no event is decoded twice on the ingest path.
        With ``stage``, the chains are seen as extended by what the stage holds.
        """
        event = data if isinstance(data, Event) else parse_event(data)  # steps 1-5
        self._check_context(event)                                    # steps 6-9
        view = stage if stage is not None else _Committed(self)
        author = event.author
        seq = view.seq(author)
        if event.seq <= seq:                                          # step 10
            held = view.id_at(author, event.seq)
            if held == event.id:
                raise Duplicate(f"{author} #{event.seq} already held")
            self._check_signature(event, view.key_at(author, event.seq), verified)
            raise Equivocation(
                f"{author} signed two events at #{event.seq}: "
                f"{held.hex()[:16] if held else '?'} and {event.id.hex()[:16]}",
                author=author, seq=event.seq, held_id=held or b"", event=event)
        chain = self.chain(author)
        frozen = chain.frozen_at
        if frozen is not None and event.seq >= frozen:                # step 10a, §4.6
            raise Equivocated(f"{author} is proven to have signed two histories at "
                              f"#{frozen}; nothing from #{frozen} on is accepted",
                              path="event.seq")
        closed = view.closed_at(author)
        if closed is not None and event.seq > closed:                 # step 10b, §5.9
            raise Withdrawn(f"{author} withdrew at #{closed}; its chain is closed "
                            f"until it is admitted again", path="event.seq")
        if event.seq > seq + 1:                                       # step 11
            raise SequenceGap(f"{author}: expected #{seq + 1}, got #{event.seq}",
                              event=event)
        self._check_signature(event, view.key_at(author, event.seq), verified)  # step 12
        head_id = view.id_at(author, seq)
        if event.prev != head_id:                                     # step 13
            want = head_id.hex()[:16] if head_id else "nil"
            got = event.prev.hex()[:16] if event.prev else "nil"
            raise WrongPrev(f"{author} #{event.seq}: prev {got}, head is {want}",
                            path="event.prev")
        head_ts = view.head_ts(author)
        if event.ts < head_ts:                                        # step 14
            raise TimestampRegression(f"{author} #{event.seq}: ts {event.ts} before the "
                                      f"previous event's {head_ts}", path="event.ts")
        if now is not None and event.ts > now + self.max_skew_ms:     # step 15
            raise TimestampInFuture(f"{author} #{event.seq}: ts {event.ts} is "
                                    f"{event.ts - now} ms ahead of ours", path="event.ts")
        check_body(event.kind, event.body, self.genesis)              # step 16
        chain_rule = CHAIN_RULES.get(event.kind)
        if chain_rule is not None:                                    # step 16, §13.4
            chain_rule(event, lambda s: view.id_at(author, s), self)
        return event

    def apply(self, event: Event) -> None:
        """Extend the author's chain with an event :meth:`check` accepted."""
        chain = self.chain(event.author)
        if event.seq != chain.seq + 1 or event.prev != chain.head_id:
            # A caller bug (apply without a fresh check), never a verdict on input.
            raise PocError(f"{event.author} #{event.seq} does not extend head #{chain.seq}; "
                           f"check() it again")
        chain.ids.append(event.id)
        chain.head_ts = event.ts
        if event.kind == KIND_KEY_ROTATE:
            chain.add_key(event.seq + 1, check_key_rotate(event.body, self.genesis.sig_alg))
        elif event.kind == KIND_WITHDRAW:
            chain.closed_at = event.seq

    def ingest(self, data: bytes | Event, *, now: int | None = None) -> Event:
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
        a, b = parse_proof(data)
        for name, event in (("a", a), ("b", b)):
            if event.fed != self.genesis.id:
                raise WrongFederation("proof event of another federation", path=f"proof.{name}")
        if a.author != b.author or a.seq != b.seq:
            raise NotEquivocation("proof events differ in author or sequence", path="proof")
        if a.id >= b.id:
            raise NotEquivocation("proof events must be distinct and ordered by id",
                                  path="proof")
        if a.author not in self.members:
            raise UnknownAuthor(f"{a.author} is not a member", path="proof.a")
        chain = self.chain(a.author)
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

    def cut(self, author: str, seq: int, head_ts: int, key: PublicKey) -> None:
        """§5.9 key recovery: the chain in force ends before ``seq``, and ``key`` signs from
        ``seq`` on; a freeze at or after ``seq`` is lifted (the fork was the lost key's)."""
        chain = self.chain(author)
        if chain.seq >= seq:
            chain.truncate(seq, head_ts)
        chain.keys = [k for k in chain.keys if k[0] < seq] or chain.keys[:1]
        chain.keys.append((seq, key))
        if chain.frozen_at is not None and chain.frozen_at >= seq:
            chain.frozen_at = None
        if chain.closed_at is not None and chain.closed_at >= seq:
            chain.closed_at = None

    def freeze(self, author: str, seq: int, head_ts: int) -> bool:
        """§4.6: the author is proven to have forked at ``seq``; the chain in force ends at
        ``seq - 1``. True if this lowered the freeze (the caller refolds the author)."""
        chain = self.chain(author)
        if chain.frozen_at is not None and chain.frozen_at <= seq:
            return False
        chain.frozen_at = seq
        if chain.seq >= seq:
            chain.truncate(seq, head_ts)
        return True

    # -- steps ---------------------------------------------------------------------

    def _check_context(self, event: Event) -> None:
        if event.fed != self.genesis.id:
            raise WrongFederation(f"event is for federation {event.fed.hex()[:16]}, this is "
                                  f"{self.genesis.id.hex()[:16]}", path="event.fed")
        if event.kind not in BODY_RULES:
            reserved = " (an earlier draft's name: requests are kind 'request', §12)" \
                if event.kind in RESERVED_KINDS else ""
            raise UnknownKind(f"kind {event.kind!r:.40}{reserved}", path="event.kind")
        if event.author not in self.members:
            raise UnknownAuthor(f"{event.author} is not a member", path="event.author")
        if event.author in self.members.observers and event.kind not in OBSERVER_KINDS:
            raise KindNotAllowed(f"{event.author} is an observer: it may write only "
                                 f"{sorted(OBSERVER_KINDS)}", path="event.kind")
        if event.sig.alg != self.genesis.sig_alg:
            raise WrongAlgorithm(f"signed with {event.sig.alg}, the genesis says "
                                 f"{self.genesis.sig_alg}", path="envelope.sig.alg")

    @staticmethod
    def _check_signature(event: Event, key: PublicKey,
                         verified: Mapping[Verdict, bool] | None = None) -> None:
        ok = verified.get(verdict_key(event, key)) if verified else None
        if ok is None:
            ok = key.verify(event.sig, event.signing_input)
        if not ok:
            raise BadSignature(f"{event.author} #{event.seq}: signature does not verify under "
                               f"the key valid at that sequence", path="envelope.sig")


class _Committed:
    """The committed chains, seen through the same questions a stage answers."""

    __slots__ = ("_chain",)

    def __init__(self, verifier: Verifier) -> None:
        self._chain = verifier.chain

    def seq(self, author: str) -> int:
        return self._chain(author).seq

    def id_at(self, author: str, seq: int) -> bytes | None:
        return self._chain(author).id_at(seq)

    def head_ts(self, author: str) -> int:
        return self._chain(author).head_ts

    def key_at(self, author: str, seq: int) -> PublicKey:
        return self._chain(author).key_at(seq)

    def closed_at(self, author: str) -> int | None:
        return self._chain(author).closed_at


# A signature verdict is about these three together: the payload (by its id), the
# signature bytes (not in the id: one payload may travel with many signatures), the key.
Verdict = tuple[bytes, Signature, PublicKey]


def verdict_key(event: Event, key: PublicKey) -> Verdict:
    return (event.id, event.sig, key)


def check_body(kind: str, body: dict[str, Any], genesis: Genesis) -> None:
    """§4.1 step 16: the rules of each kind (pocnode/core/kinds.py)."""
    BODY_RULES[kind](body, genesis)


def parse_proof(data: bytes) -> tuple[Event, Event]:
    """§4.5 steps 1 and 2: a proof's shape, and its two envelopes parsed."""
    doc = encoding.decode(data, max_size=MAX_PROOF_BYTES)
    if type(doc) is not dict or doc.keys() != {"a", "b"}:
        raise Malformed("proof must be a map with exactly a, b", path="proof")
    if type(doc["a"]) is not bytes or type(doc["b"]) is not bytes:
        raise Malformed("proof.a and proof.b must be bin", path="proof")
    return parse_event(doc["a"]), parse_event(doc["b"])


# -- equivocation proofs (§4.5) ------------------------------------------------------


def equivocation_proof(first: bytes, second: bytes) -> bytes:
    """Canonical proof from two conflicting envelopes, ordered by event id."""
    a, b = sorted((first, second), key=lambda raw: parse_event(raw).id)
    return encoding.encode({"a": a, "b": b})
