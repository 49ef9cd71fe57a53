"""The node as a state machine: every protocol decision, no I/O (ARCHITECTURE.md).

:class:`Engine` holds a node's state (its verifier, the records, keys and consent it
has folded from the chains, the disclosures it holds, its peers and their health) and
decides everything the node does: what to accept, whom to ask what and when, what to
answer, when to back off, what to erase. It never awaits, reads a clock, opens a file
or a socket: time and randomness are handed in, and I/O is asked for.

A protocol *sequence* (a gossip round, an announce, a disclosure pull, answering an
exchange, publishing) is a generator that yields **effects** (:class:`Call` a peer,
:class:`Commit` events, :class:`ReadEvents` ...) and is sent back each effect's result,
or has the effect's failure thrown into it. The daemon (``pocnode/node``) carries the
effects out with aiohttp and aiosqlite; the simulator (``pocnode/sim``) carries them
out with an in-memory network, store and virtual clock. Both run this same code, so the
simulator tests the protocol the daemon runs, not a copy of it.

Order of work on input (§8): verify in a stage, commit to disk (:class:`Commit`), then
apply to the state here. A failed commit throws into :meth:`Engine.ingest` before
anything is applied, so no reader ever sees a head that is not on disk.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pocnode.core import requests, wire
from pocnode.core.chain import Verdict, Verifier, equivocation_proof, verdict_key
from pocnode.core.consent import (
    OFFER,
    WITHDRAW,
    ConsentState,
    HpkeKey,
    NoConsent,
    Viewer,
    bilateral_info,
    may_see,
    open_consent,
    seal,
    sealed_body,
)
from pocnode.core.disclosure import (
    DisclosureRow,
    check_disclosure,
    compile_record,
    reveal,
    viewer_record,
    withheld_digests,
)
from pocnode.core.errors import (
    Busy,
    DoubleVote,
    Duplicate,
    Equivocation,
    IdInUse,
    InvalidRequest,
    KeyInUse,
    NoChange,
    NotFound,
    NotInElectorate,
    PocError,
    SequenceGap,
    StoreError,
    TimestampInFuture,
    UnknownAuthor,
    VoteTooLate,
)
from pocnode.core.events import (
    KIND_KEY_ROTATE,
    KIND_NODE_KEYS,
    KIND_RECORD,
    KIND_SEALED,
    Event,
    build_event,
    check_key_rotate,
    parse_event,
)
from pocnode.core.genesis import Genesis
from pocnode.core.governance import (
    KIND_OBJECT,
    KIND_PROPOSE,
    KIND_TICK,
    KIND_VOTE,
    KIND_WITHDRAW,
    MAX_TICK_IDS,
    Application,
    Governance,
    Proposal,
    parse_application,
)
from pocnode.core.governance import Effect as Decision
from pocnode.core.keys import PublicKey, SigningKey
from pocnode.core.reconcile import (
    MAX_AUTHORS,
    Peer,
    PeerKey,
    PeerTable,
    PendingBuffer,
    Want,
    answer_wants,
    backoff_ms,
    frozen_to_wire,
    heads_to_wire,
    interleave,
    plan,
    summary_hash,
    wants_for,
)
from pocnode.core.reconcile import Health as PeerHealth
from pocnode.core.tlog import (
    COSIGN_BODY_BUDGET,
    KIND_CHECKPOINT,
    KIND_COSIGN,
    MAX_COSIGS,
    NoteSigner,
    TlogState,
    chain_root,
    checkpoint_body,
    cosign_entry,
    entry_bytes,
)

if TYPE_CHECKING:
    import random

# -- tunables (the node's Config sets them; see node/config.py) ---------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """What the protocol decisions depend on; every value has its reason in config.py."""

    gossip_interval_ms: int = 1000
    fanout: int = 3
    max_events_per_message: int = 1000
    exchange_budget_bytes: int = 768 * 1024
    max_body_bytes: int = 2 * 1024 * 1024
    pending_max_bytes: int = 16 * 1024 * 1024
    # Rounds run back to back while either side had more than one message could hold.
    catch_up_rounds: int = 64
    # Asking a peer for disclosures it did not have: again after 1 s, 2 s, 4 s ... at most
    # hourly; the author's node may be the only holder and may be down for long.
    ask_base_ms: int = 1_000
    ask_max_ms: int = 3_600_000
    peer_backoff_base_ms: int = 1_000
    peer_backoff_max_ms: int = 5 * 60_000
    # Sequences (announces, pulls) an adapter runs at once; past it, new ones are dropped
    # (gossip brings the same later): a burst of updates queues, it does not explode.
    max_spawned: int = 256
    # Transparency log (§13): at most one checkpoint of our chain, and one batch of
    # cosignatures of others' checkpoints, per interval.
    checkpoint_interval_ms: int = 600_000
    cosign_interval_ms: int = 600_000


# Room an answer keeps for its framing beside the events or disclosures it carries.
ANSWER_SLACK_BYTES = 64 * 1024
# Disclosure ids asked of one peer in one request.
DISCLOSURE_BATCH = 64
# A peer's answer of disclosures is checked up to this many items (a record has at most
# 32 entries x 14 fields; relays answer for up to DISCLOSURE_BATCH records).
MAX_DISCLOSURES_CHECKED = DISCLOSURE_BATCH * 32 * 14
# Catch-up rounds with a peer we are behind run in this many lanes at once (catch_up).
CATCH_UP_LANES = 2


def catch_up_lane(author: str) -> int:
    """The catch-up lane an author's events come in: fixed, so no two lanes ask for one
    author's events."""
    return int.from_bytes(hashlib.sha256(author.encode()).digest()[:4], "big") % CATCH_UP_LANES


# A member that asked us for a full message this recently is catching up from us: our
# rounds with it do not push back to back (gossip_round).
PULLING_MS = 3_000


# How long we count on an announcer we asked for events before asking another for the
# same: about one exchange's time on a LAN, short enough that a failed push costs little.
WANT_HOLD_MS = 2_000
# From this many events, a batch's signatures are checked in one VerifySignatures effect
# (which an adapter may spread over cores) before the chain checks.
PARALLEL_VERIFY_MIN = 16
# Gossip rounds running at once (each a sequence of calls to one peer).
MAX_CONCURRENT_ROUNDS = 2
# An adapter looks at due() again at next_wakeup, but after at least 10 ms (a busy loop
# would starve the rest) and at most 1 s (the clock may have jumped).
TIMER_MIN_MS = 10
TIMER_MAX_MS = 1000
# A peer's saved backoff is honoured after a restart, but for at most a minute: the restart
# may well have been to fix what made it fail.
RESTORED_BACKOFF_MAX_MS = 60_000
# Our node ticks at most this often (§5.8); exercise windows are a second or more.
TICK_MIN_INTERVAL_MS = 1_000
# Applications strangers may leave with a node, awaiting a sponsor (§5.6).
MAX_APPLICATIONS = 64
# Health (pocnode health): how long without a successful exchange before it says so.
HEALTH_ROUND_STALE_INTERVALS = 30
# Clock skew against peers above which health warns: peer tokens allow 5 minutes.
HEALTH_SKEW_WARN_MS = 2 * 60 * 1000
HEALTH_SKEW_FAIL_MS = 5 * 60 * 1000
# Below this much free disk the node is degraded; below the second, failing.
HEALTH_DISK_WARN_BYTES = 512 * 1024 * 1024
HEALTH_DISK_FAIL_BYTES = 64 * 1024 * 1024


# -- effects: what the engine asks its adapter to do -----------------------------------


@dataclass(frozen=True, slots=True)
class Now:
    """Result: the adapter's clock, ms since the epoch."""


@dataclass(frozen=True, slots=True)
class Call:
    """POST ``body`` (the adapter adds ``fed``) to ``peer``'s ``route``, pinned to the
    member's TLS pin when one is known. Result: the answer's bytes (a 200). Failure: a
    PocError (``peer``) thrown in."""

    peer: Peer
    route: str
    body: dict[str, Any]
    pin: bytes | None = None
    authenticate: bool = False
    # The peer's clock minus ours, as last seen (§8.3 ``now``): a token is stamped with
    # the peer's time, so members' values travel between nodes whose clocks disagree.
    skew_ms: int = 0


@dataclass(frozen=True, slots=True)
class VerifySignatures:
    """Check these signatures (key, signature, signed bytes); result: a bool each, in
    order. Signature checks are most of ingest's work and independent of each other, so an
    adapter may spread them over its cores; the engine's verdicts do not depend on how."""

    jobs: tuple[tuple[PublicKey, Any, bytes], ...]


def verify_jobs(jobs: Sequence[tuple[PublicKey, Any, bytes]]) -> list[bool]:
    """Carry out :class:`VerifySignatures` in this thread (the simulator, the tests; the
    daemon spreads the jobs over threads: the signature checks release the GIL)."""
    return [key.verify(sig, message) for key, sig, message in jobs]


@dataclass(frozen=True, slots=True)
class Ingest:
    """Run :meth:`Engine.ingest` under the node's one ingest lock. Result: IngestResult."""

    raws: tuple[bytes, ...]
    proofs: tuple[bytes, ...] = ()
    source: PeerKey | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    """Run :meth:`Engine.publish` under the ingest lock. Result: the Event."""

    kind: str
    body: dict[str, Any]
    disclosures: tuple[DisclosureRow, ...] = ()


@dataclass(frozen=True, slots=True)
class Commit:
    """Write events and our own disclosures in one durable transaction. Result: None."""

    events: tuple[Event, ...]
    received_at: int
    disclosures: tuple[DisclosureRow, ...] = ()


@dataclass(frozen=True, slots=True)
class ReadEvents:
    """Per (author, first seq, max events, max bytes): raw envelopes from the store, in
    order (at least one if any). Result: dict author -> list of bytes."""

    parts: tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """Result: the raw envelope stored at (author, seq), or None."""

    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class ReadChain:
    """Result: the author's raw envelopes from seq 1 to ``upto``, in order."""

    author: str
    upto: int


@dataclass(frozen=True, slots=True)
class Freeze:
    """Keep ``proof`` and move the author's events from ``seq`` on out of the chains into
    the evidence kept beside them (§4.6), in one transaction. Result: None."""

    author: str
    seq: int
    proof: bytes
    found_at: int


@dataclass(frozen=True, slots=True)
class Cut:
    """Move the author's events from ``seq`` on out of the chains into the evidence kept
    beside them (a key recovery, §5.9), in one transaction. Result: None."""

    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class StoreProof:
    """Keep an equivocation proof (one per author and seq). Result: None."""

    author: str
    seq: int
    proof: bytes
    found_at: int


@dataclass(frozen=True, slots=True)
class ReadProof:
    """Result: the stored proof of the author's fork at ``seq``, or None."""

    author: str
    seq: int


@dataclass(frozen=True, slots=True)
class StoreDisclosures:
    rows: tuple[DisclosureRow, ...]


@dataclass(frozen=True, slots=True)
class EraseDisclosures:
    """Delete every disclosure of these (event id, visibility) groups, and make sure the
    deleted values leave the write-ahead log too (§7.1). Result: None."""

    groups: tuple[tuple[bytes, str], ...]


@dataclass(frozen=True, slots=True)
class ReadDisclosures:
    """Result: raw disclosures held for the event, of these visibilities."""

    event_id: bytes
    visibilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadStored:
    """What a restart reads from the store (:meth:`Engine.restore`). ``what`` and result:

    * ``kinds``: the raw events of ``kinds``, in (author, seq) order across kinds;
    * ``kinds_received``: the same, each as (raw, when this node stored it);
    * ``heads``: author -> (seq, id, ts) of its highest stored event;
    * ``chain_ids``: author -> its event ids by seq;
    * ``records``: each author's record in force (its latest ``record`` event), raw;
    * ``disclosure_index``: (author, event id, digest, visibility) of every disclosure;
    * ``proofs``: (author, seq) of every equivocation proof;
    * ``peer_health``: (member or None, endpoint, failures, next_try, last_contact,
      last_error) as last saved.
    """

    what: str
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Spawn:
    """Run another sequence concurrently (an announce, a pull). Result: None."""

    sequence: Generator[Any, Any, Any]
    name: str


@dataclass(frozen=True, slots=True)
class StageIdentity:
    """Write ``key`` as the staged identity key (rotation step 1). Result: None."""

    key: SigningKey


@dataclass(frozen=True, slots=True)
class SwapIdentity:
    """Make the staged key the identity key, retiring the old one (steps 3, 4)."""

    seq: int


@dataclass(frozen=True, slots=True)
class UnderLock:
    """Run ``sequence`` under the node's ingest lock, as :class:`Publish` runs: for a
    sequence that must read the chain and publish with nothing in between (a checkpoint
    of our chain as it stands). Result: the sequence's return value."""

    sequence: Generator[Any, Any, Any]


Steps = Generator[Any, Any, Any]


# -- results -----------------------------------------------------------------------


@dataclass
class IngestResult:
    accepted: list[Event] = field(default_factory=list)
    duplicates: int = 0
    pending: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    errors: list[PocError] = field(default_factory=list)         # the refusals themselves
    equivocations: int = 0


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the log: what happened, with facts as fields (values from outside are
    quoted by the log formatter, never trusted as text)."""

    level: str            # "debug" | "info" | "warning" | "error"
    message: str
    fields: tuple[tuple[str, Any], ...] = ()
    refusal: str | None = None  # a refusal's code: logged as a rate-limited summary


@dataclass
class Health:
    status: str           # "ok" | "degraded" | "failing"
    reasons: list[str]
    checks: dict[str, Any]


# -- the engine -------------------------------------------------------------------------


class Engine:
    """One node's protocol state and decisions. See the module docstring."""

    def __init__(self, *, genesis: Genesis, member: str, key: SigningKey,
                 config: EngineConfig, rng: random.Random,
                 random_bytes: Callable[[int], bytes], hpke: HpkeKey | None = None,
                 pin: bytes | None = None, now: int = 0) -> None:
        self.genesis = genesis
        self.member = member
        self.key = key
        self.config = config
        self.rng = rng
        self.random_bytes = random_bytes
        self.hpke = hpke
        self.pin = pin
        self.verifier = Verifier(genesis)
        self.pending = PendingBuffer(max_bytes=config.pending_max_bytes)
        self.peers = PeerTable(member, genesis.endpoints, base_ids=genesis.endpoint_ids,
                               base_backoff_ms=config.peer_backoff_base_ms,
                               max_backoff_ms=config.peer_backoff_max_ms)
        self.pins: dict[str, bytes] = {}               # member -> TLS pin (node.keys)
        self.hpke_keys: dict[str, bytes] = {}          # member -> HPKE public key
        self.records: dict[str, Event] = {}            # member -> record in force
        self.consent = ConsentState(me=member)
        self.consent_at: dict[tuple[str, str], int] = {}   # (from, to) -> author's ts
        # Disclosures held: event id -> digest -> visibility, and whose record it is.
        self.held: dict[bytes, dict[bytes, str]] = {}
        self.held_author: dict[bytes, str] = {}
        self.need_members: dict[bytes, str] = {}       # record id -> author
        self.need_bilateral: dict[str, bytes] = {}     # counterpart -> its record id
        # (what, event id, peer) -> (next ask, failures): one backoff for every ask.
        self._asks: dict[tuple[str, bytes, PeerKey], tuple[int, int]] = {}
        self.frozen: dict[str, int] = {}               # author -> lowest proven fork
        self._proofs_ahead: dict[str, bytes] = {}      # author -> proof not checkable yet
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.notes: deque[Note] = deque(maxlen=10_000)
        self.started_at = now
        self.next_round_at = now
        self.rounds_running = 0
        # Members that lately asked us for more than one message holds: they are catching
        # up from us (answer_exchange), member -> when.
        self._pulling: dict[str, int] = {}
        # Lanes of a catch-up (catch_up) at work, per peer.
        self._catching_up: Counter[PeerKey] = Counter()
        # Peers we are catching up with: their heads and frozen authors as their summary
        # gave them, for the next round of the catch-up (gossip_round).
        self._behind: dict[PeerKey, tuple[dict[str, tuple[int, bytes]], dict[str, int]]] = {}
        # (author, first seq, announced seq) -> until when we count on the announcer who
        # was asked for it (answer_announce).
        self._wanted: dict[tuple[str, int, int], int] = {}
        self.last_round_ok: int | None = None
        self.last_round_error: str | None = None
        self.skew_ms: dict[str, int] = {}              # member -> its clock minus ours
        self.disk_free: int | None = None
        self.disk_error: str | None = None
        # Governance (§5.6-§5.10): the tallies, the ids our node has yet to tick, the
        # applications strangers handed us, and when we may tick next.
        self.gov = Governance(founders=genesis.members, rules=genesis.governance,
                              exercise=genesis.exercise)
        self.unticked: list[bytes] = []
        self.deferred_ticks: list[bytes] = []   # proposals whose bases we do not hold yet
        self.applications: dict[bytes, tuple[Application, int]] = {}
        self.next_tick_at = now
        self.ticking = False
        self.publishing_keys = False
        self.rotating = False
        self._erasure_due = False
        self._summary: bytes | None = None
        self.tlog = TlogState(genesis.id, genesis.sig_alg)  # §13, folded from the chains
        self._note_signer: tuple[PublicKey, NoteSigner] | None = None
        self._tlog_running: set[str] = set()
        # Communication requests this node is a party to (§12; pocnode/core/requests.py).
        self.requests = requests.RequestBook(member)

    # -- communication requests (PROTOCOL.md §12; pocnode/core/requests.py) ----------------
    # Request sequences yield these effects, reached through the engine they are given:
    # requests.py cannot import this module, which imports it.
    CallEffect = Call
    NowEffect = Now
    PublishEffect = Publish
    SpawnEffect = Spawn

    # -- small helpers ---------------------------------------------------------------

    def note(self, level: str, message: str, *, refusal: str | None = None,
             **fields: Any) -> None:
        self.notes.append(Note(level, message, tuple(fields.items()), refusal))

    def count(self, name: str, value: int = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += value

    def is_member(self, member: str) -> bool:
        """A member or an observer: someone whose chain this federation keeps."""
        return member in self.verifier.members

    def role(self, member: str) -> str | None:
        return self.verifier.members.role(member)

    def members(self) -> list[str]:
        return sorted(m for m in self.verifier.members if m not in self.verifier.members.observers)

    def observers(self) -> list[str]:
        return sorted(self.verifier.members.observers)

    @property
    def active(self) -> bool:
        """We are a member (not an applicant, observer or a member that withdrew)."""
        return (self.role(self.member) == "member"
                and self.member not in self.gov.withdrawals)

    def heads(self) -> dict[str, tuple[int, bytes]]:
        return {a: (c.seq, c.ids[-1]) for a, c in self.verifier.chains.items() if c.ids}

    def head_seq(self, author: str) -> int | None:
        """Our head for a member (0 if nothing), None for a non-member."""
        if author not in self.verifier.members:
            return None
        return self.verifier.head(author)[0]

    def id_at(self, author: str, seq: int) -> bytes | None:
        chain = self.verifier.chains.get(author)
        return chain.id_at(seq) if chain is not None else None

    def summary(self) -> bytes:
        if self._summary is None:
            self._summary = summary_hash(self.heads(), self.frozen)
        return self._summary

    def current_key(self, member: str) -> PublicKey | None:
        """The member's key for its next event: what peer tokens are checked with."""
        if member not in self.verifier.members:
            return None
        chain = self.verifier.chain(member)
        return chain.key_at(chain.seq + 1)

    def pin_for(self, member: str | None) -> bytes | None:
        return self.pins.get(member) if member else None

    def events_held(self) -> int:
        return sum(c.seq for c in self.verifier.chains.values())

    def authors_held(self) -> int:
        return sum(1 for c in self.verifier.chains.values() if c.ids)

    # -- restoring from the store at start (trusted: it holds only what was verified) -----

    def restore_chain(self, author: str, ids: list[bytes], head_ts: int) -> None:
        chain = self.verifier.chain(author)
        chain.ids = ids
        chain.head_ts = head_ts
        self._summary = None

    def restore_event(self, event: Event) -> None:
        """Fold an event of the chain in force (key.rotate, node.keys, sealed, record), in
        each author's order; nothing is announced or pulled."""
        if event.kind == KIND_KEY_ROTATE:  # the verifier's own state (§4.3)
            self.verifier.chain(event.author).add_key(
                event.seq + 1, check_key_rotate(event.body, self.genesis.sig_alg))
            return
        try:
            self._fold(event, restoring=True)
        except PocError as exc:  # one event's effects must not keep the node down
            self.note("warning", "ignored an event's effects at restore", author=event.author,
                      seq=event.seq, kind=event.kind, reason=exc.message[:200])

    def restore_disclosure(self, author: str, event_id: bytes, digest: bytes,
                           visibility: str) -> None:
        self.held.setdefault(event_id, {})[digest] = visibility
        self.held_author[event_id] = author

    def restore_proof(self, author: str, seq: int) -> bool:
        """A stored proof; True if it freezes the author lower than the chain ends (an old
        store, kept from before §4.6): the caller then runs :meth:`refreeze`."""
        if author not in self.verifier.members:
            return False
        chain = self.verifier.chain(author)
        if author not in self.frozen or seq < self.frozen[author]:
            self.frozen[author] = seq
            chain.frozen_at = seq
        self._summary = None
        return chain.seq >= seq

    def restore(self, now: int, *, config_peers: Iterable[str] = ()) -> Steps:
        """A node's state from its own verified store, at start (no signature re-checks:
        the store only ever held what the verifier accepted; `pocnode db check` re-verifies).
        One order for the daemon and the simulator: governance first (who is a member
        decides which chains exist), then the chains, what they mean, the proofs and peers;
        then what the rules demand after a crash (refreezing, erasure)."""
        for raw in (yield ReadStored("kinds", GOVERNANCE_FOLDS)):
            self.restore_event(parse_event(raw))
        adopted = self.govern_at_restore()
        heads = yield ReadStored("heads")
        for author, ids in (yield ReadStored("chain_ids")).items():
            if self.is_member(author):
                self.restore_chain(author, ids, heads[author][2])
        for author, event_id, digest, visibility in (yield ReadStored("disclosure_index")):
            self.restore_disclosure(author, event_id, digest, visibility)
        for raw in (yield ReadStored("kinds", (KIND_KEY_ROTATE, KIND_NODE_KEYS, KIND_SEALED,
                                                KIND_CHECKPOINT, KIND_COSIGN))):
            self.restore_event(parse_event(raw))
        for raw in (yield ReadStored("records")):
            self.restore_event(parse_event(raw))
        # Communication requests (§12): opened again from the chains, times of arrival kept.
        for raw, received_at in (yield ReadStored("kinds_received", (
                requests.KIND_REQUEST, requests.KIND_REQUEST_PUBLISH))):
            self.requests.restoring_at = received_at
            self.restore_event(parse_event(raw))
        requests.finish_restore(self)
        self.finish_governance(adopted)
        refreeze = [(a, s) for a, s in (yield ReadStored("proofs")) if self.restore_proof(a, s)]
        for member, endpoint, failures, next_try, contact, error in (
                yield ReadStored("peer_health")):
            self.peers.health[(member, endpoint)] = PeerHealth(
                failures=failures, next_try=min(next_try, now + RESTORED_BACKOFF_MAX_MS),
                last_contact=contact, last_error=error)
        self.finish_restore(config_peers=config_peers)
        for author, seq in refreeze:
            yield from self.refreeze(author, seq)
        yield from self.enforce_erasure()

    def finish_restore(self, *, config_peers: Iterable[str] = ()) -> None:
        self.peers.set_config(config_peers)
        for event_id, author in list(self.need_members.items()):
            record = self.records.get(author)
            if record is None or record.id != event_id or self._has_all_members(record):
                self.need_members.pop(event_id, None)
        self._erasure_due = True

    # -- ingest: verify, commit, apply ------------------------------------------------------

    def ingest(self, raws: Sequence[bytes], *, source: PeerKey | None, now: int,
               proofs: Sequence[bytes] = (),
               own_disclosures: Sequence[DisclosureRow] = ()) -> Steps:
        """The one way events enter a node. Run under the adapter's ingest lock."""
        result = IngestResult()
        stage = self.verifier.stage()
        conflicts: list[tuple[str, int, bytes]] = []
        verified: dict[Verdict, bool] = {}
        queue: deque[bytes | Event | tuple[bytes, PocError]] = deque(raws)
        if len(raws) >= PARALLEL_VERIFY_MIN:
            parsed: list[bytes | Event | tuple[bytes, PocError]] = []
            for raw in raws:
                try:
                    parsed.append(parse_event(raw))
                except PocError as exc:
                    parsed.append((raw, exc))  # refused below, in its place, not parsed again
            jobs = self._signature_jobs([e for e in parsed if isinstance(e, Event)])
            if jobs:
                results = yield VerifySignatures(tuple((k, e.sig, e.signing_input)
                                                       for e, k in jobs))
                verified = {verdict_key(e, k): ok for (e, k), ok in zip(jobs, results,
                                                                        strict=True)}
            queue = deque(parsed)
        while queue:
            item = queue.popleft()
            raw = item.raw if isinstance(item, Event) else item[0] if isinstance(
                item, tuple) else item
            try:
                if isinstance(item, tuple):
                    raise item[1]
                event = stage.check(item, now=now, verified=verified)
            except Duplicate:
                result.duplicates += 1
                continue
            except SequenceGap as exc:
                ev = exc.event
                if ev is not None and self.pending.add(ev.author, ev.seq, raw,
                                                        stage.seq(ev.author), prev=ev.prev,
                                                        event_id=ev.id):
                    result.pending += 1
                continue
            except Equivocation as exc:
                conflicts.append((exc.author, exc.seq, raw))
                result.equivocations += 1
                continue
            except PocError as exc:
                result.refused.append((exc.code, exc.message))
                result.errors.append(exc)
                self.count("pocnode_events_refused_total", code=exc.code)
                self.note("warning", "refused event", refusal=exc.code,
                          reason=exc.message[:200], source=_source_text(source))
                continue
            queue.extendleft(reversed(self.pending.take_ready(
                event.author, stage.seq(event.author), event.id)))
        if stage.events or own_disclosures:
            yield Commit(tuple(stage.events), now, tuple(own_disclosures))  # may raise
        self.verifier.commit(stage)
        result.accepted = stage.events
        self.count("pocnode_events_duplicate_total", result.duplicates)
        if own_disclosures:
            for row in own_disclosures:
                self.restore_disclosure(row.author, row.event_id, row.digest, row.visibility)
        if result.accepted:
            self._summary = None
            self.count("pocnode_events_accepted_total", len(result.accepted))
            newest: dict[str, int] = {}
            for event in result.accepted:
                newest[event.author] = max(newest.get(event.author, 0), event.seq)
                try:
                    self._fold(event, restoring=False, source=source)
                except PocError as exc:
                    self.note("warning", "could not apply an accepted event's effects",
                              author=event.author, seq=event.seq, kind=event.kind,
                              reason=exc.message[:200])
            self.note("info", "accepted events", count=len(result.accepted),
                      source=_source_text(source),
                      heads=",".join(f"{a}:{s}" for a, s in sorted(newest.items())[:50]))
            yield from self._govern(now)
            # A key recovery adopted just now may have cut a chain below what this batch
            # brought (§5.9): announce what stands.
            heads = {}
            for a, s in newest.items():
                chain = self.verifier.chain(a)
                if min(s, chain.seq):
                    heads[a] = (min(s, chain.seq), chain.ids[min(s, chain.seq) - 1])
            exclude = [source[0]] if source and source[0] else []
            for peer in self.peers.choose(now, self.rng, k=self.config.fanout,
                                          exclude=exclude):
                yield Spawn(self.announce(peer, heads), "announce")
            for author in newest:
                record = self.records.get(author)
                if record is not None and record.id in self.need_members:
                    yield Spawn(self.pull_members(record), "pull")
            for name, sequence in requests.after_ingest(self, now):  # §12: receipts, alerts
                yield Spawn(sequence, name)
        for author, seq, raw in conflicts:
            held = yield ReadEvent(author, seq)
            if held is None:
                continue
            yield from self._take_proof(equivocation_proof(held, raw), now)
        for proof in proofs:
            yield from self._take_proof(proof, now)
        for author in [a for a in self._proofs_ahead
                       if self.verifier.head(a)[0] + 1 >= _proof_seq(self._proofs_ahead[a])]:
            yield from self._take_proof(self._proofs_ahead.pop(author), now)
        yield from self._erase_if_due()
        return result

    def _signature_jobs(self, events: list[Event]) -> list[tuple[Event, PublicKey]]:
        """The key each event's signature will be checked with, as far as it can be told
        before the batch is checked: from the chains, and the rotations earlier in the
        batch. A guess that turns out wrong is only work lost: the check then verifies
        with the right key itself."""
        jobs = []
        rotated: dict[str, list[tuple[int, PublicKey]]] = {}
        for e in events:
            if e.author not in self.verifier.members or e.fed != self.genesis.id:
                continue
            chain = self.verifier.chain(e.author)
            if e.seq <= chain.seq and chain.id_at(e.seq) == e.id:
                continue  # a duplicate: never verified
            key = chain.key_at(e.seq)
            for first, new in rotated.get(e.author, ()):
                if first <= e.seq:
                    key = new
            jobs.append((e, key))
            if e.kind == KIND_KEY_ROTATE:
                try:
                    new_key = check_key_rotate(e.body, self.genesis.sig_alg)
                except PocError:
                    continue
                rotated.setdefault(e.author, []).append((e.seq + 1, new_key))
        return jobs

    def _fold(self, event: Event, *, restoring: bool, source: PeerKey | None = None) -> None:
        """Apply an accepted event's meaning to the node's state (§3.4), by kind."""
        self.gov.saw(event.author, event.ts)  # any event may close governance windows
        fold = FOLDS.get(event.kind)
        if fold is not None:
            fold(self, event, restoring)

    def _fold_node_keys(self, event: Event, restoring: bool) -> None:
        self.pins[event.author] = event.body["tls"]
        if "hpke" in event.body:
            self.hpke_keys[event.author] = event.body["hpke"]["pk"]

    def _fold_record(self, event: Event, restoring: bool = False) -> None:
        previous = self.records.get(event.author)
        if previous is not None:
            self._forget_needs(previous.id)
        self.records[event.author] = event
        self.peers.set_record_endpoints(event.author,
                                        event.body.get("node", {}).get("endpoints", ()))
        if event.author == self.member:
            self._erasure_due = True  # our superseded values go too (§7.3)
            return
        if withheld_digests(event.body, "members") and not self._has_all_members(event):
            self.need_members[event.id] = event.author
        self._erasure_due = True
        if self.consent.mutual(event.author):
            self._want_bilateral(event.author)

    def _fold_sealed(self, event: Event, restoring: bool) -> None:
        """A consent message, if one of its boxes opens under our key (§7.2)."""
        if self.hpke is None:
            return
        opened = open_consent(event.body, self.hpke, fed=self.genesis.id, author=event.author)
        if opened is None:
            return
        to, action = opened
        if event.author != self.member and to != self.member:
            return  # a box that opens for us must be about us
        other = to if event.author == self.member else event.author
        if not self.is_member(other) or other == self.member:
            return
        changed = self.consent.apply(event.author, event.seq, to, action)
        self.consent_at[(event.author, to)] = event.ts
        if restoring:
            if self.consent.mutual(other):
                self._want_bilateral(other)
            return
        if event.author == other and action == OFFER and not self.consent.offered(
                self.member, other):
            self.note("info", "consent offered to us; awaiting our answer "
                              "(pocnode consent offer to accept)", member=other)
        if not changed:
            return
        if self.consent.mutual(other):
            self.note("info", "consent is mutual", member=other)
            self._want_bilateral(other)
        else:
            self.note("info", "consent ended: erasing bilateral values", member=other)
            self.need_bilateral.pop(other, None)
            self._erasure_due = True

    def _want_bilateral(self, other: str) -> None:
        record = self.records.get(other)
        if record is not None and withheld_digests(record.body, "bilateral") - set(
                self.held.get(record.id, {})):
            self.need_bilateral[other] = record.id

    def _has_all_members(self, record: Event) -> bool:
        return withheld_digests(record.body, "members") <= set(self.held.get(record.id, {}))

    def _forget_needs(self, event_id: bytes) -> None:
        self.need_members.pop(event_id, None)
        for key in [k for k in self._asks if k[1] == event_id]:
            del self._asks[key]

    # -- equivocation: proofs, freezing (§4.5, §4.6) -------------------------------------

    def _take_proof(self, proof: bytes, now: int) -> Steps:
        try:
            author, seq = self.verifier.check_proof(proof)
        except SequenceGap:
            ahead = _proof_author(proof)
            held = self._proofs_ahead.get(ahead) if ahead else None
            if ahead and self.is_member(ahead) and (
                    held is None or _proof_seq(proof) < _proof_seq(held)):
                self._proofs_ahead[ahead] = proof  # one per author: bounded
            return
        except PocError as exc:
            self.count("pocnode_proofs_refused_total", code=exc.code)
            self.note("warning", "refused proof", refusal=exc.code, reason=exc.message[:200])
            return
        if author in self.frozen and self.frozen[author] <= seq:
            yield StoreProof(author, seq, proof, now)  # more evidence; the freeze stands
            return
        self.count("pocnode_equivocations_total")
        self.note("warning", "equivocation proven: the author signed two histories",
                  author=author, seq=seq)
        yield Freeze(author, seq, proof, now)
        prefix = yield ReadChain(author, seq - 1)
        self._refreeze(author, seq, [parse_event(raw) for raw in prefix])

    def refreeze(self, author: str, seq: int) -> Steps:
        """At start, for a store from before §4.6 that holds events past a proven fork."""
        proof = yield ReadProof(author, seq)
        if proof is None:
            return
        now = yield Now()
        yield Freeze(author, seq, proof, now)
        prefix = yield ReadChain(author, seq - 1)
        self._refreeze(author, seq, [parse_event(raw) for raw in prefix])

    def _refreeze(self, author: str, seq: int, prefix: list[Event]) -> None:
        """The chain in force now ends before ``seq``: recompute what it means."""
        self.frozen[author] = seq
        chain = self.verifier.chain(author)
        chain.frozen_at = None  # freeze() below lowers it
        self.verifier.freeze(author, seq, prefix[-1].ts if prefix else 0)
        self.tlog.forget(author)
        # Governance is not folded again: it was not reset, and folding a proposal twice
        # would replace it with a fresh one, taking back an outcome already final and
        # every ballot on it (§5.8: a final outcome never changes).
        self._refold(author, prefix, [k for k in FOLDS if k not in GOVERNANCE_FOLDS])

    def proof_keys(self) -> dict[str, int]:
        return dict(self.frozen)

    # -- governance (§5.6-§5.10) -----------------------------------------------------------

    def _fold_propose(self, event: Event, restoring: bool) -> None:
        application = None
        if "application" in event.body:
            application = parse_application(event.body["application"], fed=self.genesis.id,
                                            sig_alg=self.genesis.sig_alg,
                                            hpke_suite=self.genesis.hpke_suite)
        self.gov.fold_propose(event.id, event.author, event.seq, event.ts, event.body,
                              application)
        self._to_tick(event.id, event.author)
        self._tick_resolved()
        if not restoring:
            self.note("info", "proposal received", decision=event.body["decision"],
                      proposer=event.author, id=event.id.hex()[:16])

    def _fold_vote(self, event: Event, restoring: bool) -> None:
        vote = "object" if event.kind == KIND_OBJECT else event.body["vote"]
        self.gov.fold_vote(event.author, event.seq, event.ts, event.body["proposal"], vote)

    def _fold_tick(self, event: Event, restoring: bool) -> None:
        self.gov.fold_tick(event.author, event.seq, event.ts, event.body["seen"])
        if event.author == self.member:
            seen = set(event.body["seen"])
            self.unticked = [g for g in self.unticked if g not in seen]

    def _fold_withdraw(self, event: Event, restoring: bool) -> None:
        self.gov.fold_withdraw(event.id, event.author, event.seq, event.ts)
        if not restoring:  # at restore, finish_governance closes chains once they exist
            self.verifier.chain(event.author).closed_at = event.seq
        self.peers.set_gone(event.author)
        self._to_tick(event.id, event.author)
        self._tick_resolved()
        if not restoring:
            self.note("info", "member withdrew: no longer gossiped with", member=event.author)

    def _to_tick(self, gid: bytes, author: str) -> None:
        """Name ``gid`` in our next tick, once we hold everything it builds on: a proposal
        whose basis names events we lack (or that do not exist) stays out of our ticks,
        so it keeps none of our own later proposals waiting (§5.8 step 1)."""
        if author == self.member or gid in self.unticked or gid in self.deferred_ticks:
            return
        p = self.gov.proposals.get(gid)
        if p is not None and not self.gov.resolvable(p):
            self.deferred_ticks.append(gid)
        else:
            self.unticked.append(gid)

    def _tick_resolved(self) -> None:
        """Deferred proposals whose bases this node now holds join the next tick."""
        if not self.deferred_ticks:
            return
        ready = [g for g in self.deferred_ticks if self.gov.resolvable(self.gov.proposals[g])]
        if ready:
            self.deferred_ticks = [g for g in self.deferred_ticks if g not in ready]
            self.unticked.extend(ready)

    def _govern(self, now: int) -> Steps:
        """Tallies moved by what just committed: apply what was adopted (§5.10)."""
        for decision in self.gov.evaluate():
            yield from self._apply_decision(decision, restoring=False)
        return None

    def govern_at_restore(self) -> list[Decision]:
        """At start, after the governance events are folded and before the chains are
        restored: membership first (a chain needs its author admitted). Returns the
        decisions adopted, for :meth:`finish_governance` once the chains are back."""
        adopted = self.gov.evaluate()
        for decision in adopted:
            self._admit(decision.proposal)
        return adopted

    def finish_governance(self, adopted: list[Decision]) -> None:
        for decision in adopted:
            if decision.decision == "key_recovery":
                p = decision.proposal
                chain = self.verifier.chain(p.body["subject"])
                self.verifier.cut(p.body["subject"], p.body["from_seq"], chain.head_ts,
                                  _public_key(p.body["key"], self.genesis.sig_alg))
        for author, chain in self.verifier.chains.items():
            self.gov.saw(author, chain.head_ts)
            if author in self.gov.withdrawals:
                chain.closed_at = self.gov.withdrawals[author][1]
                self.peers.set_gone(author)

    def _admit(self, p: Proposal) -> None:
        app = p.application
        if app is None:
            return
        observer = p.decision == "observer"
        self.verifier.members.admit(app.member, app.key, observer=observer)
        self.hpke_keys.setdefault(app.member, app.hpke)
        chain = self.verifier.chain(app.member)
        if chain.closed_at is not None:  # a member that withdrew, admitted again (§5.9)
            chain.keys.append((chain.closed_at + 1, app.key))
            chain.closed_at = None
            self.gov.withdrawals.pop(app.member, None)
        if not observer and app.endpoints:
            self.peers.set_base({**self.peers.base, app.member: app.endpoints})
        self.peers.set_gone(app.member, False)
        self._summary = None

    def _apply_decision(self, decision: Decision, *, restoring: bool) -> Steps:
        p = decision.proposal
        self.note("info", "decision adopted", decision=p.decision, id=p.id.hex()[:16],
                  reason=p.reason)
        if p.decision in ("admission", "observer"):
            self._admit(p)
        elif p.decision == "key_recovery":
            subject, seq = p.body["subject"], p.body["from_seq"]
            key = _public_key(p.body["key"], self.genesis.sig_alg)
            yield Cut(subject, seq)
            prefix = yield ReadChain(subject, seq - 1)
            events = [parse_event(raw) for raw in prefix]
            self._refold(subject, events, (KIND_NODE_KEYS, KIND_RECORD, KIND_SEALED))
            self.verifier.cut(subject, seq, events[-1].ts if events else 0, key)
            if self.frozen.get(subject, 0) >= seq:
                del self.frozen[subject]
            self._summary = None

    def _refold(self, author: str, prefix: list[Event], kinds: Iterable[str]) -> None:
        """Everything folded from ``author``'s chain of these kinds, folded again from what
        stands (``prefix``, its events in force) after a freeze or a key recovery's cut."""
        chain = self.verifier.chain(author)
        chain.ids = [e.id for e in prefix]
        chain.head_ts = prefix[-1].ts if prefix else 0
        self.pending.forget(author)
        self._summary = None
        self.pins.pop(author, None)
        self.hpke_keys.pop(author, None)
        old = self.records.pop(author, None)
        if old is not None:
            self._forget_needs(old.id)
        self.consent.offers = {k: v for k, v in self.consent.offers.items() if k[0] != author}
        refold = set(kinds)
        for event in prefix:
            if event.kind in refold:
                self.restore_event(event)
        if author != self.member and not self.consent.mutual(author):
            self.need_bilateral.pop(author, None)
        self._erasure_due = True

    def governance_due(self, now: int) -> list[tuple[str, Steps]]:
        """Ticks our node owes (§5.8): one naming what it has seen, and one after each of
        its windows ends, so every tally can close without waiting for our operator."""
        if not self.active or self.ticking or now < self.next_tick_at:
            return []
        seen = self.unticked[:MAX_TICK_IDS]
        closing = any(
            (end := self.gov.window_end(self.member, p)) is not None and end < now
            and self.gov.head_ts.get(self.member, -1) <= end
            for p in self.gov.proposals.values() if not p.final)
        if not seen and not closing:
            return []
        self.ticking = True
        self.next_tick_at = now + TICK_MIN_INTERVAL_MS
        return [("tick", self._tick(seen))]

    def _tick(self, seen: list[bytes]) -> Steps:
        try:
            yield Publish(KIND_TICK, {"seen": list(seen)})
        finally:
            self.ticking = False

    def propose_message(self, decision: str, *, application: bytes | None = None,
                        subject: str | None = None, key: PublicKey | None = None,
                        from_seq: int | None = None,
                        governance: Mapping[str, Any] | None = None,
                        note: str | None = None) -> Publish:
        """A proposal of ours; refuses what could never be adopted, with its own code."""
        if not self.active:
            raise InvalidRequest("only a member may propose", path="member")
        body: dict[str, Any] = {"decision": decision}
        if decision in ("admission", "observer"):
            if application is None:
                raise InvalidRequest("an admission needs the applicant's signed application",
                                     path="application")
            app = parse_application(application, fed=self.genesis.id,
                                    sig_alg=self.genesis.sig_alg,
                                    hpke_suite=self.genesis.hpke_suite)
            role = "member" if decision == "admission" else "observer"
            if app.role != role:
                raise InvalidRequest(f"this is a {app.role}'s application, not a {role}'s",
                                     path="application")
            if app.member in self.verifier.members and app.member not in self.gov.withdrawals:
                raise IdInUse(f"{app.member} is already in the federation",
                              path="application.id")
            if any(self.verifier.members[m] == app.key for m in self.verifier.members):
                raise KeyInUse("the application's key is already a member's key",
                               path="application.key")
            # Two admissions of one id could both be adopted (PROTOCOL.md §11): one at a time.
            rival = next((q for q in self.gov.proposals.values()
                          if q.application is not None and q.application.member == app.member
                          and (not q.final or q.outcome == "adopted")), None)
            if rival is not None:
                raise IdInUse(f"{app.member} is already the subject of an admission proposal "
                              f"({rival.id.hex()[:16]}, {rival.outcome}); vote on "
                              "that one", path="application.id")
            body["application"] = application
        elif decision == "key_recovery":
            if subject is None or key is None or subject not in self.verifier.members:
                raise InvalidRequest("a key recovery names a member and its new key",
                                     path="subject")
            body.update(subject=subject, key=key.to_wire(),
                        from_seq=from_seq or self.verifier.head(subject)[0] + 1)
        elif decision == "rules":
            if governance is None:
                raise InvalidRequest("an amendment carries the new rules", path="governance")
            body["governance"] = dict(governance)
        else:
            raise InvalidRequest(f"decision must be one of admission, observer, key_recovery, "
                                 f"rules; got {decision!r:.40}", path="decision")
        if note:
            body["note"] = note
        from pocnode.core.kinds import BODY_RULES
        try:
            BODY_RULES[KIND_PROPOSE](body, self.genesis)
        except PocError as exc:
            raise InvalidRequest(exc.message, path=exc.path) from None
        return Publish(KIND_PROPOSE, body)

    def vote_message(self, proposal_id: bytes, vote: str) -> Publish:
        p = self.gov.proposals.get(proposal_id)
        if p is None:
            raise NotFound("no such proposal has reached this node", path="proposal")
        if not self.active:
            raise InvalidRequest("only a member votes", path="member")
        if p.final:
            raise NoChange(f"the proposal is already {p.outcome} (final)", path="proposal")
        if self.member in p.ballots or any(b.member == self.member for b in p.extra_ballots):
            raise DoubleVote("this member has already voted on it; the first vote counts",
                             path="proposal")
        if p.electorate is not None and self.member not in p.electorate:
            raise NotInElectorate("this member is not in the proposal's electorate (it "
                                  "joined after the proposal)", path="proposal")
        end = self.gov.window_end(self.member, p)
        if end is not None and self.gov.head_ts.get(self.member, -1) > end:
            raise VoteTooLate("this member's window for the proposal has ended",
                              path="proposal")
        silence = p.rule is not None and p.rule["rule"] == "silence"
        if vote == "object":
            if p.rule is not None and not silence:
                raise InvalidRequest("objections are for silence procedures; vote no",
                                     path="vote")
            return Publish(KIND_OBJECT, {"proposal": proposal_id})
        if silence:
            raise InvalidRequest("under the silence procedure, the only vote is an objection",
                                 path="vote")
        if vote not in ("yes", "no", "abstain"):
            raise InvalidRequest("vote must be yes, no, abstain or object", path="vote")
        return Publish(KIND_VOTE, {"proposal": proposal_id, "vote": vote})

    def withdraw_message(self, reason: str | None) -> Publish:
        if not self.active:
            raise InvalidRequest("only a member that has not withdrawn can withdraw",
                                 path="member")
        return Publish(KIND_WITHDRAW, {"reason": reason} if reason else {})

    def receive_application(self, raw: bytes, now: int) -> Application:
        """A stranger hands us its application (§5.6): kept, bounded, for our operator to
        sponsor; nothing is published by receiving it."""
        app = parse_application(raw, fed=self.genesis.id, sig_alg=self.genesis.sig_alg,
                                hpke_suite=self.genesis.hpke_suite)
        if app.id not in self.applications:
            if len(self.applications) >= MAX_APPLICATIONS:
                oldest = min(self.applications, key=lambda i: self.applications[i][1])
                del self.applications[oldest]
            self.applications[app.id] = (app, now)
            self.note("info", "application received; awaiting a sponsor", applicant=app.member,
                      role=app.role)
        return app

    def member_name(self, member: str) -> str:
        founder = next((f for f in self.genesis.founders if f.id == member), None)
        if founder is not None:
            return founder.name
        for p in self.gov.proposals.values():
            if p.outcome == "adopted" and p.application is not None \
                    and p.application.member == member:
                return p.application.name
        return member

    def proposal_view(self, p: Proposal, now: int) -> dict[str, Any]:
        subject = (p.application.member if p.application is not None
                   else p.body.get("subject"))
        window = p.rule["window_ms"] if p.rule else self.genesis.governance[p.decision][
            "window_ms"]
        own_end = self.gov.window_end(self.member, p)
        counts = self.gov.counts(p)
        return {
            "id": p.id, "kind": p.decision, "subject": subject, "proposer": p.author,
            "proposed_at": p.ts, "rule": dict(p.rule) if p.rule else None,
            "rules_version": p.rules_version, "window_ms": window,
            "deadline": p.ts + window, "our_window_ends": own_end,
            "electorate": list(p.electorate) if p.electorate else None,
            "members": len(p.electorate) if p.electorate else None,
            "tally": counts, "needed": self.gov.needed(p),
            "outcome": p.outcome, "final": p.final, "reason": p.reason, "code": p.code,
            "fingerprint": p.application.fingerprint() if p.application else None,
            "reference": p.application.reference if p.application else None,
            "awaiting_our_vote": p in self.gov.awaiting(self.member),
            "ballots": [{"member": b.member, "vote": b.vote, "ts": b.ts, "counted": b.counted,
                         "code": b.code}
                        for b in list(p.ballots.values()) + p.extra_ballots],
        }

    # -- erasure (§7.1, §7.3): a rule enforced, not a change reacted to --------------------

    def doomed_disclosures(self) -> list[tuple[bytes, str]]:
        """Held disclosures the rules no longer allow: anything of a record that is not
        its author's record in force (ours included: a value moved from members to
        bilateral must stop being served), and bilateral values without mutual consent."""
        doomed = []
        for event_id, digests in self.held.items():
            author = self.held_author[event_id]
            current = self.records.get(author)
            for visibility in sorted(set(digests.values())):
                keep = current is not None and current.id == event_id and (
                    visibility == "members" or author == self.member
                    or self.consent.mutual(author))
                if not keep:
                    doomed.append((event_id, visibility))
        return doomed

    def _erase_if_due(self) -> Steps:
        if not self._erasure_due:
            return
        self._erasure_due = False
        doomed = self.doomed_disclosures()
        if not doomed:
            return
        yield EraseDisclosures(tuple(doomed))
        for event_id, visibility in doomed:
            digests = self.held.get(event_id, {})
            for digest in [d for d, v in digests.items() if v == visibility]:
                del digests[digest]
            if not digests:
                self.held.pop(event_id, None)
                self.held_author.pop(event_id, None)
        self.note("info", "erased disclosures the rules no longer allow", groups=len(doomed))

    def enforce_erasure(self) -> Steps:
        """At start: the rule holds after a crash or a missed withdrawal too."""
        self._erasure_due = True
        yield from self._erase_if_due()

    # -- gossip, the client side (§8.3) ---------------------------------------------------

    def due(self, now: int) -> list[tuple[str, Steps]]:
        """What should start now (the adapter's timer calls this); the next wake-up time
        is :attr:`next_wakeup`."""
        out: list[tuple[str, Steps]] = []
        if now >= self.next_round_at and not self.round_running:
            # Rounds overlap, a few at most: one waiting on a dead peer (up to the request
            # timeout) must not stop the node gossiping with the live ones.
            interval = self.config.gossip_interval_ms
            # Jitter keeps nodes that started together from gossiping in lockstep.
            self.next_round_at = now + int(interval * (0.75 + 0.5 * self.rng.random()))
            self.rounds_running += 1
            out.append(("gossip", self.gossip_rounds()))
        out.extend(self.governance_due(now))
        out.extend(self.tlog_due(now))
        keys = self.node_keys_message() if self.active and not self.publishing_keys else None
        if keys is not None and self.key is not None and self.key.public_key == \
                self.current_key(self.member):
            self.publishing_keys = True
            out.append(("node.keys", self._publish_keys(keys)))
        for other, event_id in list(self.need_bilateral.items()):
            if not self.consent.mutual(other) or self.records.get(other) is None \
                    or self.records[other].id != event_id:
                self.need_bilateral.pop(other, None)
                continue
            for peer in self.peers.endpoints(other):
                if self._ask_due("bilateral", event_id, peer.key, now) and self.pins.get(other):
                    self._asked("bilateral", event_id, peer.key, now)
                    out.append(("bilateral", self.pull_bilateral(other, event_id, peer)))
        out.extend(requests.due(self, now))  # §12: receipts owed, scheduled ping campaigns
        return out

    def _publish_keys(self, message: Publish) -> Steps:
        try:
            yield message
        finally:
            self.publishing_keys = False

    def dropped(self, name: str) -> None:
        """The adapter dropped a spawned sequence before it started (it runs as many as it
        may): one that held a round's slot gives it back, or the node would stop gossiping
        once two were dropped."""
        self.count("pocnode_spawn_dropped_total", what=name)
        if name in ("gossip", "catch-up"):
            self.rounds_running = max(0, self.rounds_running - 1)

    @property
    def round_running(self) -> bool:
        """As many rounds are running as may: the next waits for one to end."""
        return self.rounds_running >= MAX_CONCURRENT_ROUNDS

    @property
    def next_wakeup(self) -> int:
        soonest = self.next_round_at
        for (what, _, _), (at, _) in self._asks.items():
            if what == "bilateral":
                soonest = min(soonest, at)
        return soonest

    def gossip_rounds(self) -> Steps:
        """A round with a random peer, then, while that same peer has more for us, a
        catch-up with it (a node that is behind syncs at the speed of verification, not of
        the interval). The same peer, not another random one: among many unreachable
        members, a new draw would mostly end the catch-up at a dead peer, and a fresh node
        stalled after its first answer. Bounded by ``catch_up_rounds``."""
        try:
            peer: Peer | None = None
            for _ in range(self.config.catch_up_rounds):
                if peer is None:
                    now = yield Now()
                    chosen = self.peers.choose(now, self.rng)
                    if not chosen:
                        return
                    peer = chosen[0]
                more = yield from self.gossip_round(peer)
                if not more:
                    return
                behind = self._behind.pop(peer.key, None)
                if behind is not None:
                    if self._catching_up[peer.key]:
                        return  # an earlier catch-up with this peer is still at work
                    for lane in range(1, CATCH_UP_LANES):
                        self.rounds_running += 1  # a lane holds a round's slot until it ends
                        yield Spawn(self.catch_up(peer, *behind, lane=lane), "catch-up")
                    yield from self.catch_up(peer, *behind, lane=0)
                    return
        finally:
            self.rounds_running -= 1

    def catch_up(self, peer: Peer, theirs: dict[str, tuple[int, bytes]],
                 their_frozen: dict[str, int], *, lane: int) -> Steps:
        """Ask ``peer`` for what we lack of the heads its summary gave a moment ago, for
        the authors of one lane, until we hold them. Not a summary before each budget's
        worth: that cost a round trip and every head encoded on both sides. Lanes, each
        with its own authors, overlap: while one lane's answer is taken in (verified,
        stored), the peer already reads and sends the next lane's, so a node that is behind
        is not idle while its peer works. Heads the peer gained since come in the next
        interval's round; what we would push went in the round before.

        Lane 0 runs inside the round that found us behind; the others are spawned, each
        holding a round's slot (``rounds_running``) until it ends. Only lane 0 reports the
        peer's health, so one outage counts once."""
        pin = self.pins.get(peer.member) if peer.member else None
        self._catching_up[peer.key] += 1
        try:
            for _ in range(self.config.catch_up_rounds):
                decided = plan(self.heads(), theirs, id_at=self.id_at,
                               our_frozen=self.frozen, their_frozen=their_frozen)
                want = [w for w in decided.want if catch_up_lane(w.author) == lane]
                if not want:
                    break
                raw = yield Call(peer, "/v1/peer/exchange", {
                    "events": [], "want": wire.wants_to_wire(want), "proofs": [],
                    "want_proofs": []}, pin=pin, authenticate=pin is not None,
                    skew_ms=self.skew_ms.get(peer.member or "", 0))
                answer = wire.read(wire.EXCHANGE_ANSWER, raw, path="answer")
                incoming = answer.get("events", [])
                result = yield Ingest(tuple(incoming), tuple(answer.get("proofs", [])),
                                      peer.key)
                self.count("pocnode_catch_up_exchanges_total", outcome="exchanged")
                if lane == 0:
                    now = yield Now()
                    self._round_ok(peer, now)
                if not result.accepted and not self._full(incoming):
                    break
            if lane == 0:
                yield from self.pull_members_from(peer)
        except StoreError:
            self.count("pocnode_catch_up_exchanges_total", outcome="failed_locally")
            raise
        except PocError as exc:
            self.count("pocnode_catch_up_exchanges_total", outcome="failed")
            self.note("info", "catch-up exchange failed", peer=peer.endpoint,
                      member=peer.member or "?", lane=lane, reason=exc.message[:200])
            if lane == 0:
                now = yield Now()
                self.peers.failure(peer.key, now, self.rng, exc.message)
                self.last_round_error = f"{peer.endpoint}: {exc.message[:200]}"
        finally:
            self._catching_up[peer.key] -= 1
            if not self._catching_up[peer.key]:
                del self._catching_up[peer.key]
            if lane:
                self.rounds_running -= 1

    def gossip_round(self, peer: Peer) -> Steps:
        """One push-pull exchange with a peer; True if there is more to exchange. When
        what we asked for came and we sent all we had, the peer's heads are kept for a
        catch-up with it (gossip_rounds)."""
        pin = self.pins.get(peer.member) if peer.member else None
        self._behind.pop(peer.key, None)
        try:
            sent_at = yield Now()
            raw = yield Call(peer, "/v1/peer/summary", {"summary": self.summary()}, pin=pin)
            now = yield Now()
            answer = wire.read(wire.SUMMARY_ANSWER, raw, path="answer")
            if peer.member and "now" in answer:
                self.skew_ms[peer.member] = answer["now"] - (sent_at + now) // 2
            if answer.get("same") is True:
                self.count("pocnode_gossip_rounds_total", outcome="same")
                self._round_ok(peer, now)
                yield from self.pull_members_from(peer)
                return False
            theirs = {a: (s, i) for a, s, i in answer.get("heads", [])}
            their_frozen = {a: s for a, s in answer.get("frozen", [])}
            decided = plan(self.heads(), theirs, id_at=self.id_at, our_frozen=self.frozen,
                           their_frozen=their_frozen)
            sending = yield from self._collect(decided.send)
            proofs = yield from self._read_proofs(decided.send_proofs)
            raw = yield Call(peer, "/v1/peer/exchange", {
                "events": sending, "want": wire.wants_to_wire(decided.want),
                "proofs": proofs, "want_proofs": list(decided.want_proofs)}, pin=pin,
                authenticate=pin is not None, skew_ms=self.skew_ms.get(peer.member or "", 0))
            answer = wire.read(wire.EXCHANGE_ANSWER, raw, path="answer")
            incoming = answer.get("events", [])
            result = yield Ingest(tuple(incoming), tuple(answer.get("proofs", [])), peer.key)
            now = yield Now()
            self.count("pocnode_gossip_rounds_total", outcome="exchanged")
            self._round_ok(peer, now)
            yield from self.pull_members_from(peer)
            # Go again at once while either side had more than one message could hold.
            # "Nothing accepted" is not "nothing left": the peer may have pushed the same
            # events to us while we asked for them.
            if decided.want and (result.accepted or self._full(incoming)) \
                    and not self._full(sending) and len(self._behind) < 64:
                self._behind[peer.key] = (theirs, their_frozen)
            # Pushing a full message again at once helps a peer that cannot reach us (behind
            # NAT, say); one that is pulling from us already gets the rest at its own pace,
            # and our pushes would only race its pulls, in duplicates it must decode.
            pulling = peer.member is not None and \
                now - self._pulling.get(peer.member, -PULLING_MS) < PULLING_MS
            return bool(result.accepted) or self._full(incoming) or (
                self._full(sending) and not pulling)
        except StoreError:
            # Our disk, not the peer: no backoff for it, and the round ends here.
            self.count("pocnode_gossip_rounds_total", outcome="failed_locally")
            raise
        except PocError as exc:
            now = yield Now()
            self.peers.failure(peer.key, now, self.rng, exc.message)
            self.last_round_error = f"{peer.endpoint}: {exc.message[:200]}"
            self.count("pocnode_gossip_rounds_total", outcome="failed")
            self.note("info", "gossip round failed", peer=peer.endpoint,
                      member=peer.member or "?", reason=exc.message[:200])
            return False

    def _round_ok(self, peer: Peer, now: int) -> None:
        self.peers.success(peer.key, now)
        self.last_round_ok = now
        self.last_round_error = None

    def _full(self, events: Sequence[bytes]) -> bool:
        return (len(events) >= self.config.max_events_per_message
                or sum(map(len, events)) >= self.config.exchange_budget_bytes - ANSWER_SLACK_BYTES)

    def _collect(self, ranges: Iterable[tuple[str, int]], budget: int | None = None) -> Steps:
        """Events for the ranges, oldest first round-robin, within one message's budget.

        Round-robin takes the same depth from every author, so each author's read asks
        only for its share: reading every author's whole backlog to send one message
        would cost memory and time in proportion to the federation's history.
        """
        budget = self.config.exchange_budget_bytes if budget is None else budget
        limit = self.config.max_events_per_message
        due = [(a, f) for a, f in ranges if 1 <= f <= (self.head_seq(a) or 0)]
        if not due:
            return []
        share = -(-limit // len(due))
        share_bytes = budget // len(due) + 64 * 1024
        batches = yield ReadEvents(tuple((a, f, share, share_bytes) for a, f in due))
        return interleave(batches, max_bytes=budget, max_events=limit)

    def _read_proofs(self, authors: Iterable[str]) -> Steps:
        out: list[bytes] = []
        for author in list(authors)[: wire.MAX_PROOFS_PER_MESSAGE]:
            if author in self.frozen:
                proof = yield ReadProof(author, self.frozen[author])
                if proof is not None:
                    out.append(proof)
        return out

    def announce(self, peer: Peer, heads: Mapping[str, tuple[int, bytes]]) -> Steps:
        """Tell a peer our new heads (not the events: it pulls what it lacks). The announce
        carries only public heads, so like a summary it goes without a token (§8.2): a
        token would add about 330 bytes to each of the fanout announces of every update.
        The exchange that brings the events is authenticated."""
        pin = self.pins.get(peer.member) if peer.member else None
        try:
            skew = self.skew_ms.get(peer.member or "", 0)
            raw = yield Call(peer, "/v1/peer/announce", {"heads": heads_to_wire(heads),
                                                          "frozen": frozen_to_wire(self.frozen)},
                             pin=pin)
            answer = wire.read(wire.ANNOUNCE_ANSWER, raw, path="answer")
            ranges = answer_wants(wire.wants(answer.get("want", [])), head_seq=self.head_seq,
                                  id_at=self.id_at)
            events = yield from self._collect(ranges)
            if events:
                yield Call(peer, "/v1/peer/exchange", {"events": events, "want": []}, pin=pin,
                           authenticate=pin is not None, skew_ms=skew)
            now = yield Now()
            self.peers.success(peer.key, now)
        except PocError as exc:
            now = yield Now()
            self.peers.failure(peer.key, now, self.rng, exc.message)

    # -- disclosures: members values from any member, bilateral from the author (§6, §7) -----

    def _ask_due(self, what: str, event_id: bytes, peer: PeerKey, now: int) -> bool:
        return self._asks.get((what, event_id, peer), (0, 0))[0] <= now

    def _asked(self, what: str, event_id: bytes, peer: PeerKey, now: int) -> None:
        """Ask this peer again only after 1 s, 2 s, 4 s ... (at most hourly)."""
        failures = self._asks.get((what, event_id, peer), (0, 0))[1] + 1
        self._asks[(what, event_id, peer)] = (
            now + backoff_ms(failures, self.config.ask_base_ms, self.config.ask_max_ms,
                             self.rng), failures)

    def pull_members(self, record: Event) -> Steps:
        """A record with members values arrived: ask its author's node first (it surely
        has them), then whoever else may."""
        for peer in self.peers.endpoints(record.author):
            if record.id not in self.need_members:
                return
            yield from self.pull_members_from(peer)

    def pull_members_from(self, peer: Peer) -> Steps:
        pin = self.pins.get(peer.member) if peer.member else None
        if pin is None or not self.need_members:
            return
        now = yield Now()
        ids = [i for i in self.need_members if self._ask_due("members", i, peer.key, now)]
        ids = ids[:DISCLOSURE_BATCH]
        if not ids:
            return
        for event_id in ids:
            self._asked("members", event_id, peer.key, now)
        try:
            raw = yield Call(peer, "/v1/peer/disclosures", {"events": ids}, pin=pin,
                             authenticate=True, skew_ms=self.skew_ms.get(peer.member or "", 0))
            answer = wire.read(wire.DISCLOSURES_ANSWER, raw, path="answer")
        except PocError as exc:
            self.note("info", "disclosure pull failed", peer=peer.endpoint,
                      reason=exc.message[:200])
            return
        rows = self.check_members_disclosures(ids, answer["disclosures"])
        if rows:
            yield StoreDisclosures(tuple(rows))
            self.took_disclosures(rows)
            yield from self._erase_if_due()

    def check_members_disclosures(self, ids: Sequence[bytes],
                                  raws: Sequence[bytes]) -> list[DisclosureRow]:
        """Keep what opens a digest we lack of a record in force; the first value for a
        field is the one kept (§6.4). A hostile answer costs a hash per item."""
        by_id = {e.id: e for e in self.records.values()}
        wanted: dict[bytes, Event] = {}
        for event_id in ids:
            event = by_id.get(event_id)
            if event is None:
                continue
            held = self.held.get(event_id, {})
            for digest in withheld_digests(event.body, "members"):
                if digest not in held:
                    wanted[digest] = event
        rows = []
        seen: set[tuple[bytes, str, str]] = set()
        for raw in raws[:MAX_DISCLOSURES_CHECKED]:
            event = wanted.get(hashlib.sha256(raw).digest())
            if event is None:
                continue
            try:
                d = check_disclosure(event.body, raw)
            except PocError as exc:
                self.note("warning", "refused disclosure", refusal=exc.code,
                          author=event.author)
                continue
            key = (event.id, d.entry, d.name)
            if d.visibility != "members" or key in seen:
                continue
            seen.add(key)
            rows.append(DisclosureRow.of(event.author, event.id, d))
        return rows

    def took_disclosures(self, rows: Iterable[DisclosureRow]) -> None:
        """After the store kept them. The rules are checked again: a newer record or a
        withdrawal folded while the store was writing has already run its erasure, so rows
        it no longer allows must make the erasure due again (the caller runs it)."""
        touched = set()
        for row in rows:
            self.restore_disclosure(row.author, row.event_id, row.digest, row.visibility)
            touched.add(row.event_id)
            current = self.records.get(row.author)
            if current is None or current.id != row.event_id or (
                    row.visibility == "bilateral" and not self.consent.mutual(row.author)):
                self._erasure_due = True
        for event_id in touched:
            author = self.held_author.get(event_id)
            record = self.records.get(author) if author else None
            if record is not None and record.id == event_id:
                if self._has_all_members(record):
                    self._forget_needs(event_id)
                if author in self.need_bilateral and not withheld_digests(
                        record.body, "bilateral") - set(self.held.get(event_id, {})):
                    self.need_bilateral.pop(author, None)

    def pull_bilateral(self, other: str, event_id: bytes, peer: Peer) -> Steps:
        """Fetch a counterpart's bilateral disclosures from its own node (§7.3)."""
        try:
            raw = yield Call(peer, "/v1/peer/bilateral", {"events": [event_id]},
                             pin=self.pins.get(other), authenticate=True,
                             skew_ms=self.skew_ms.get(other, 0))
            answer = wire.read(wire.BILATERAL_ANSWER, raw, path="answer")
        except PocError as exc:
            self.note("info", "bilateral pull failed", member=other, reason=exc.message[:200])
            return
        record = self.records.get(other)
        if record is None or record.id != event_id or self.hpke is None:
            return
        info = bilateral_info(self.genesis.id, other, self.member, event_id)
        rows = []
        for box in answer["sealed"][:256]:
            try:
                d = check_disclosure(record.body, self.hpke.open(box, info))
            except PocError as exc:
                self.note("warning", "refused bilateral disclosure", refusal=exc.code,
                          member=other)
                continue
            if d.visibility == "bilateral":
                rows.append(DisclosureRow.of(other, event_id, d))
        # Consent or the record may have changed while we waited: decide again.
        if rows and self.consent.mutual(other) and self.records.get(other) is record:
            yield StoreDisclosures(tuple(rows))
            self.took_disclosures(rows)
            yield from self._erase_if_due()

    # -- answering peers (§8) ------------------------------------------------------------

    def answer_summary(self, msg: dict[str, Any], now: int) -> dict[str, Any]:
        if msg["summary"] == self.summary():
            return {"same": True, "now": now}
        return {"heads": heads_to_wire(self.heads()), "frozen": frozen_to_wire(self.frozen),
                "now": now}

    def answer_announce(self, msg: dict[str, Any], now: int) -> dict[str, Any]:
        """Ask for what we lack of the heads announced, unless we asked another announcer
        for the same a moment ago: with several peers announcing one update, it then
        crosses our link about once (if that announcer fails to send, our next gossip
        round brings it)."""
        theirs = {a: (s, i) for a, s, i in msg["heads"]}
        want = wants_for(self.heads(), theirs, known=self.is_member, frozen=self.frozen)
        if len(self._wanted) > 4 * MAX_AUTHORS:
            self._wanted = {k: t for k, t in self._wanted.items() if t > now}
        fresh = [w for w in want
                 if self._wanted.get((w.author, w.first, theirs[w.author][0]), 0) <= now]
        for w in fresh:
            self._wanted[(w.author, w.first, theirs[w.author][0])] = now + WANT_HOLD_MS
        return {"want": wire.wants_to_wire(fresh)}

    def answer_exchange(self, msg: dict[str, Any], member: str | None,
                        remote: str = "") -> Steps:
        """``member`` when the request was authenticated (§8.2); ``remote`` the address,
        for the log."""
        result = yield Ingest(tuple(msg.get("events", [])), tuple(msg.get("proofs", [])),
                              (member, remote))
        ranges = answer_wants(wire.wants(msg.get("want", [])), head_seq=self.head_seq,
                              id_at=self.id_at)
        proofs = yield from self._read_proofs(
            a for a in msg.get("want_proofs", []) if a in self.frozen)
        budget = self.config.exchange_budget_bytes - sum(map(len, proofs))
        events = yield from self._collect(ranges, max(budget, 0))
        if member is not None and self._full(events):
            # This member is catching up from us: our own rounds with it push one message,
            # not a stream racing its pulls (gossip_round).
            now = yield Now()
            if member in self._pulling or len(self._pulling) < 4 * MAX_AUTHORS:
                self._pulling[member] = now
        return {"events": events, "proofs": proofs, "accepted": len(result.accepted),
                "refused": len(result.refused)}

    def answer_disclosures(self, msg: dict[str, Any], member: str) -> Steps:
        """Members disclosures of records in force, within one answer's budget (§8.3)."""
        viewer = Viewer.MEMBER if self.is_member(member) else Viewer.ANYONE
        if not may_see("members", viewer, self.consent.mutual(member)):
            return {"disclosures": []}
        current = {e.id for e in self.records.values()}
        budget = self.config.max_body_bytes - ANSWER_SLACK_BYTES
        out: list[bytes] = []
        for event_id in msg["events"]:
            if event_id not in current:
                continue  # superseded values are neither kept nor served (§7.3)
            raws = yield ReadDisclosures(event_id, ("members",))
            for raw in raws:
                budget -= len(raw) + 8
                if budget < 0:
                    return {"disclosures": out}
                out.append(raw)
        return {"disclosures": out}

    def answer_bilateral(self, msg: dict[str, Any], member: str) -> Steps:
        """Our bilateral disclosures of our record in force, sealed to ``member``."""
        viewer = Viewer.MEMBER if self.is_member(member) else Viewer.ANYONE
        if not may_see("bilateral", viewer, self.consent.mutual(member)):
            raise NoConsent(f"no mutual consent with {member}")
        public = self.hpke_keys.get(member)
        if public is None:
            raise NoConsent(f"no encryption key of {member} known")
        own = self.records.get(self.member)
        out = []
        if own is not None and own.id in msg["events"]:
            raws = yield ReadDisclosures(own.id, ("bilateral",))
            info = bilateral_info(self.genesis.id, self.member, member, own.id)
            for raw in raws:
                try:
                    out.append(seal(self.genesis.hpke_suite, public, raw, info))
                except (ValueError, PocError):
                    raise NoConsent(f"{member}'s encryption key is unusable") from None
        # Consent or the record may have changed while we read: decide again at the end.
        if not self.consent.mutual(member) or self.records.get(self.member) is not own:
            raise NoConsent(f"consent with {member} changed while answering")
        return {"sealed": out}

    def public_record(self, member: str) -> dict[str, Any] | None:
        """What anyone may read (§6.5): a member's record with its public values only."""
        event = self.records.get(member)
        if event is None:
            return None
        return {"member": member, "seq": event.seq, "event": event.raw,
                "record": reveal(event.body, [])}

    # -- operator commands -----------------------------------------------------------------

    def publish(self, kind: str, body: dict[str, Any], now: int,
                disclosures: Sequence[DisclosureRow] = ()) -> Steps:
        """Sign our next event and ingest it like any other. Run under the ingest lock:
        numbering and storing must not interleave with another publish, or this node would
        sign two events at one sequence."""
        chain = self.verifier.chain(self.member)
        if self.key.public_key != chain.key_at(chain.seq + 1):
            raise Busy("this node's key is not the member's current key (a rotation is "
                       "being completed); try again")
        if chain.head_ts > now + self.verifier.max_skew_ms:
            # Our chain's last event carries a time from the future (a clock that ran
            # ahead, since corrected): timestamps never go back (§4.1 step 14), so no event
            # of ours can be accepted before our clock catches up with it (step 15).
            raise TimestampInFuture(
                f"this member's last event is stamped {_utc(chain.head_ts)}, "
                f"{(chain.head_ts - now) // 60_000} min ahead of this node's clock; the next "
                f"cannot be earlier, and peers refuse events more than "
                f"{self.verifier.max_skew_ms // 60_000} min ahead: publishing works again "
                f"from {_utc(chain.head_ts - self.verifier.max_skew_ms)}", path="event.ts")
        raw = build_event(self.key, fed=self.genesis.id, author=self.member,
                          seq=chain.seq + 1, prev=chain.head_id, kind=kind,
                          ts=max(now, chain.head_ts), body=body)
        event_id = parse_event(raw).id
        rows = [DisclosureRow(author=self.member, event_id=event_id, digest=d.digest,
                              entry=d.entry, field=d.field, visibility=d.visibility, raw=d.raw)
                for d in disclosures]
        result = yield from self.ingest([raw], source=None, now=now, own_disclosures=rows)
        if not result.accepted:
            if result.errors:
                raise result.errors[0]  # its own code: a refusal is a 4xx, not a fault
            raise PocError("own event not accepted (neither refused nor stored)")
        return result.accepted[0]

    def compile_record(self, plain: dict[str, Any]) -> Publish:
        compiled = compile_record(plain, self.random_bytes)
        rows = tuple(DisclosureRow(author=self.member, event_id=b"", digest=d.digest,
                                   entry=d.entry, field=d.name, visibility=d.visibility,
                                   raw=d.raw) for d in compiled.disclosures)
        return Publish(KIND_RECORD, compiled.body, rows)

    def consent_message(self, member: str, action: str) -> Publish:
        """The sealed event that says ``action`` to ``member``; refuses what would change
        nothing or cannot be done, each with its own code."""
        if member == self.member:
            raise InvalidRequest("consent is between two members; you cannot offer it to "
                                 "yourself", path="member")
        if not self.is_member(member):
            raise UnknownAuthor(f"{member} is not a member of this federation", path="member")
        if action not in (OFFER, WITHDRAW):
            raise InvalidRequest("action must be offer or withdraw", path="action")
        if action == OFFER and self.consent.offered(self.member, member):
            raise NoChange(f"consent is already offered to {member}"
                           + (" and mutual" if self.consent.mutual(member) else
                              "; waiting for theirs"), path="member")
        if action == WITHDRAW and not self.consent.offered(self.member, member):
            raise NoChange(f"no consent offered to {member} stands; nothing to withdraw",
                           path="member")
        to_public = self.hpke_keys.get(member)
        if self.hpke is None:
            raise Busy("this node has no encryption key yet")
        if to_public is None:
            raise Busy(f"no encryption key of {member} has reached this node yet (its "
                       f"node.keys event); try again once it has", path="member")
        try:
            body = sealed_body(suite=self.genesis.hpke_suite, fed=self.genesis.id,
                               author=self.member, to=member, action=action,
                               to_public=to_public, own_public=self.hpke.public_bytes)
        except (ValueError, PocError):
            if action != WITHDRAW:
                raise InvalidRequest(f"{member}'s encryption key is unusable; cannot seal "
                                     f"an offer to it", path="member") from None
            # A counterpart must not be able to stop us withdrawing by publishing a broken
            # key: its box goes to a throwaway key; our own box records the withdrawal.
            body = sealed_body(suite=self.genesis.hpke_suite, fed=self.genesis.id,
                               author=self.member, to=member, action=action,
                               to_public=HpkeKey.generate(self.genesis.hpke_suite).public_bytes,
                               own_public=self.hpke.public_bytes)
        return Publish(KIND_SEALED, body)

    def node_keys_message(self) -> Publish | None:
        """Our node.keys event, if what the chain says differs from what we hold."""
        if self.hpke is None or self.pin is None or self.role(self.member) is None:
            return None  # an applicant writes nothing until it is admitted
        if (self.pins.get(self.member) == self.pin
                and self.hpke_keys.get(self.member) == self.hpke.public_bytes):
            return None
        return Publish(KIND_NODE_KEYS, {"tls": self.pin, "hpke": {
            "suite": self.hpke.suite, "pk": self.hpke.public_bytes}})

    def rotate_key(self, new_key: SigningKey, reason: str | None) -> Steps:
        """Replace the identity key (§3.4.2): staged first, then the event signed by the old
        key, then the files swapped; one rotation at a time, and the node signs with the
        new key from the moment the event commits."""
        if self.rotating:
            raise Busy("a key rotation is already under way; wait for it to finish")
        self.rotating = True
        try:
            body: dict[str, Any] = {"key": new_key.public_key.to_wire()}
            if reason:
                body["reason"] = reason
            yield StageIdentity(new_key)
            event = yield Publish(KIND_KEY_ROTATE, body)
            self.key = new_key
            yield SwapIdentity(event.seq)
            self.note("info", "identity key rotated", seq=event.seq,
                      new_key=new_key.public_key.ed25519.hex()[:16])
            return event
        finally:
            self.rotating = False

    # -- views -------------------------------------------------------------------------------

    def record_view(self, member: str) -> Steps:
        """A record as this node may show it: values it holds and may show, and per entry
        how many are withheld from it and how many it may see but has not received yet."""
        event = self.records.get(member)
        if event is None:
            return None
        mutual = member == self.member or self.consent.mutual(member)
        visibilities = ("members", "bilateral") if mutual else ("members",)
        raws = yield ReadDisclosures(event.id, visibilities)
        opened = []
        for raw in raws:
            try:
                opened.append(check_disclosure(event.body, raw))
            except PocError:
                continue
        view = viewer_record(event.body, opened, visibilities)
        return {"member": member, "seq": event.seq, "event_id": event.id, "ts": event.ts,
                "record": view}

    def health(self, now: int) -> Health:
        """Computed from real signals: peers reached, last good round, backlog, disk,
        clock skew against peers (§ operator's guide)."""
        reasons: list[str] = []
        status = "ok"

        def worse(level: str, reason: str) -> None:
            nonlocal status
            reasons.append(reason)
            if level == "failing" or status == "ok":
                status = level

        interval = self.config.gossip_interval_ms
        others = [m for m in self.peers.members()]
        reachable = self.peers.reachable(now, HEALTH_ROUND_STALE_INTERVALS * interval)
        if others and not reachable and now - self.started_at > 5 * interval:
            worse("failing", f"no peer reached in the last "
                             f"{HEALTH_ROUND_STALE_INTERVALS * interval // 1000} s"
                  + (f" (last error: {self.last_round_error})" if self.last_round_error
                     else ""))
        elif others and len(reachable) < len(others) / 2 and now - self.started_at > 30 * interval:
            worse("degraded", f"only {len(reachable)} of {len(others)} members' nodes "
                              f"reached recently")
        if self.pending.size_bytes > self.pending.max_bytes // 2:
            worse("degraded", f"{len(self.pending)} out-of-order events held "
                              f"({self.pending.size_bytes} bytes)")
        if self.disk_error:
            worse("failing", f"storage: {self.disk_error}")
        if self.disk_free is not None:
            if self.disk_free < HEALTH_DISK_FAIL_BYTES:
                worse("failing", f"only {self.disk_free // (1024 * 1024)} MiB of disk free")
            elif self.disk_free < HEALTH_DISK_WARN_BYTES:
                worse("degraded", f"only {self.disk_free // (1024 * 1024)} MiB of disk free")
        skews = sorted(self.skew_ms.values())
        median_skew = skews[len(skews) // 2] if skews else 0
        if abs(median_skew) > HEALTH_SKEW_FAIL_MS:
            worse("failing", f"this node's clock is {-median_skew / 1000:+.0f} s off its peers'")
        elif abs(median_skew) > HEALTH_SKEW_WARN_MS:
            worse("degraded", f"this node's clock is {-median_skew / 1000:+.0f} s off its "
                              f"peers'")
        if self.frozen:
            worse("degraded", "equivocation proven for " + ", ".join(sorted(self.frozen)))
        return Health(status=status, reasons=reasons, checks={
            "peers_reachable": len(reachable), "peers_known": len(others),
            "last_round_ok_ms": self.last_round_ok, "last_round_error": self.last_round_error,
            "pending_events": len(self.pending), "disk_free_bytes": self.disk_free,
            "clock_skew_ms": -median_skew, "equivocators": sorted(self.frozen)})

    # -- transparency log: checkpoints and cosignatures (PROTOCOL.md §13) ----------------------
    # Added for issue 12 (auditors). Checkpoint and cosign events are folded into self.tlog
    # (FOLDS below); these sequences publish our own, each under the ingest lock.

    def note_signer(self) -> NoteSigner | None:
        """Our note keys, derived from the identity key in force (None without one)."""
        key = getattr(self, "key", None)
        if key is None:
            return None
        if self._note_signer is None or self._note_signer[0] != key.public_key:
            self._note_signer = (key.public_key, NoteSigner(key))
        return self._note_signer[1]

    def tlog_due(self, now: int) -> list[tuple[str, Steps]]:
        """Checkpoint and cosign sequences due now (the adapter's timer asks, as for
        :meth:`due`); each runs under the ingest lock and checks again there."""
        out: list[tuple[str, Steps]] = []
        for name, due, steps in (
                ("checkpoint", self._checkpoint_due, self.publish_checkpoint),
                ("cosign", self._cosign_due, self.publish_cosign)):
            if name not in self._tlog_running and due(now):
                self._tlog_running.add(name)
                out.append((name, self._tlog_sequence(name, steps)))
        return out

    def _tlog_sequence(self, name: str, steps: Callable[[], Steps]) -> Steps:
        try:
            return (yield UnderLock(steps()))
        finally:
            self._tlog_running.discard(name)

    def _checkpoint_due(self, now: int) -> bool:
        """Something not yet checkpointed (cosign events aside), one interval after the
        last checkpoint (or after start)."""
        if self.note_signer() is None or self.member in self.frozen:
            return False
        last = self.tlog.checkpoints.get(self.member)
        since = max(last.ts if last is not None else 0, self.started_at)
        if now - since < self.config.checkpoint_interval_ms:
            return False
        return self.tlog.uncovered(self.member, self.verifier.chain(self.member).seq) > 0

    def _to_cosign(self) -> list[str]:
        """Logs whose latest checkpoint in force we have not cosigned yet."""
        out = []
        for log, cp in self.tlog.checkpoints.items():
            if log == self.member or log in self.frozen:
                continue
            mine = self.tlog.cosigs.get(log, {}).get(self.member)
            if mine is None or mine.size < cp.size:
                out.append(log)
        return sorted(out, key=lambda m: (len(m.encode()), m.encode()))

    def _cosign_due(self, now: int) -> bool:
        if self.note_signer() is None or self.member in self.frozen:
            return False
        since = max(self.tlog.last_cosign_ts.get(self.member, 0), self.started_at)
        return now - since >= self.config.cosign_interval_ms and bool(self._to_cosign())

    def publish_checkpoint(self) -> Steps:
        """Sign a checkpoint of our chain as it stands (run under the ingest lock)."""
        now = yield Now()
        signer = self.note_signer()
        if signer is None or not self._checkpoint_due(now):
            return None
        chain = self.verifier.chain(self.member)
        root = chain_root(self.genesis.id, self.member, chain.seq, chain.id_at)
        body = checkpoint_body(signer, self.genesis.id, self.member, chain.seq, root,
                               now // 1000)
        event = yield from self.publish(KIND_CHECKPOINT, body, now)
        self.note("info", "checkpoint published", size=chain.seq - 1, root=root.hex()[:16])
        return event

    def publish_cosign(self) -> Steps:
        """Cosign the checkpoints of others we hold and have not cosigned, batched into
        one event (run under the ingest lock). Each extends what we cosigned before: our
        verifier accepted it, so its root is our chain's, and our chains only grow; the
        check below says so, should a refreeze have changed a chain meanwhile."""
        now = yield Now()
        signer = self.note_signer()
        if signer is None or not self._cosign_due(now):
            return None
        entries, budget = [], COSIGN_BODY_BUDGET
        for log in self._to_cosign()[:MAX_COSIGS]:
            cp = self.tlog.checkpoints[log]
            chain = self.verifier.chain(log)
            mine = self.tlog.cosigs.get(log, {}).get(self.member)
            if chain.seq < cp.size or chain_root(
                    self.genesis.id, log, cp.size, chain.id_at) != cp.root or (
                    mine is not None and chain_root(
                        self.genesis.id, log, mine.size, chain.id_at) != mine.root):
                self.note("warning", "not cosigning a checkpoint our chain does not extend",
                          log=log, size=cp.size)
                continue
            entry = cosign_entry(signer, self.genesis.id, self.member, log, cp.size,
                                 cp.root, now // 1000)
            budget -= entry_bytes(entry)
            if budget < 0:
                break
            entries.append(entry)
        if not entries:
            return None
        body = {"key": signer.witness_keys.to_wire(), "cosigs": entries}
        event = yield from self.publish(KIND_COSIGN, body, now)
        self.note("info", "checkpoints cosigned", logs=len(entries))
        return event


def _fold_tlog(engine: Engine, event: Event, restoring: bool) -> None:
    engine.tlog.fold(event)


# What each kind means to a node's state, folded after the event commits (and at restore).
# key.rotate has no entry: the verifier itself keeps the keys (§4.3).
FOLDS: dict[str, Callable[[Engine, Event, bool], None]] = {
    KIND_NODE_KEYS: Engine._fold_node_keys,
    KIND_RECORD: Engine._fold_record,
    KIND_SEALED: Engine._fold_sealed,
    KIND_PROPOSE: Engine._fold_propose,
    KIND_VOTE: Engine._fold_vote,
    KIND_OBJECT: Engine._fold_vote,
    KIND_TICK: Engine._fold_tick,
    KIND_WITHDRAW: Engine._fold_withdraw,
    KIND_CHECKPOINT: _fold_tlog,   # §13
    KIND_COSIGN: _fold_tlog,
    requests.KIND_REQUEST: requests.fold_request,
    requests.KIND_REQUEST_PUBLISH: requests.fold_publication,
}
# Governance events are folded at restore in each author's order, before the chains.
GOVERNANCE_FOLDS = (KIND_PROPOSE, KIND_VOTE, KIND_OBJECT, KIND_TICK, KIND_WITHDRAW)


# -- small pure helpers -------------------------------------------------------------------


def _public_key(wire_key: Any, alg: str) -> PublicKey:
    return PublicKey.from_wire(wire_key, alg=alg, path="body.key")


def _utc(ms: int) -> str:
    """A time for a message, without the datetime module (the core reads no clock): days
    to a civil date by H. Hinnant's algorithm."""
    days, rest = divmod(ms // 1000, 86_400)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return f"{year:04d}-{month:02d}-{day:02d} {rest // 3600:02d}:{rest % 3600 // 60:02d} UTC"


def _source_text(source: PeerKey | None) -> str:
    if source is None:
        return "local"
    member, endpoint = source
    return member or endpoint or "unknown peer"


def _proof_seq(proof: bytes) -> int:
    try:
        from pocnode.core.chain import parse_proof
        return parse_proof(proof)[0].seq
    except PocError:
        return 2**63


def _proof_author(proof: bytes) -> str | None:
    try:
        from pocnode.core.chain import parse_proof
        return parse_proof(proof)[0].author
    except PocError:
        return None


__all__ = [
    "Call", "Commit", "Engine", "EngineConfig", "EraseDisclosures", "Freeze", "Health",
    "Ingest", "IngestResult", "Note", "Now", "Publish", "ReadChain", "ReadDisclosures",
    "ReadStored",
    "ReadEvent", "ReadEvents", "ReadProof", "Spawn", "Steps", "StoreDisclosures",
    "StageIdentity", "StoreProof", "SwapIdentity", "UnderLock", "VerifySignatures", "Want",
]
