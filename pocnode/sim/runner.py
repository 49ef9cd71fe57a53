"""N engines over an in-memory network in virtual time: the simulator's executor.

The daemon (``pocnode/node/node.py``) carries out the effects of
:class:`pocnode.core.engine.Engine` with aiohttp, aiosqlite and the wall clock; this
module carries out the same effects of the same engine with a
:class:`~pocnode.sim.store.MemoryStore`, a :class:`~pocnode.sim.network.Network` and a
:class:`~pocnode.sim.network.Clock`. It decides nothing about the protocol: whom to
gossip with, what to send, what to accept, when to back off, what to erase, all come
from the engine. What is the adapter's here is what is the adapter's in the daemon,
done the same way and said where:

* the timer: ``Engine.due(now)`` started, then a wake-up after ``next_wakeup`` clamped
  to 10 ms..1 s (``Node._timer``); one shortcut: a node whose only reason to wake is a
  round still running wakes when that round ends, not by polling every 10 ms (the
  daemon starts the next round 0..10 ms later than this);
* spawned sequences capped at ``EngineConfig.max_spawned`` per node (as ``Node._spawn``);
* the peer server's checks: body size, the member token (the real
  :mod:`pocnode.core.peer_auth`, signed and checked), the per-peer rate limit (the real
  :class:`pocnode.core.limits.KeyedLimiter`), the message schema (the real
  :func:`pocnode.core.wire.read`), the federation id;
* the client's checks: a pin must match the server's, an authenticated call needs one;
* a restart restores a new engine from the store in ``Node._restore``'s order.

Ingest and publish run to completion at one virtual instant (their effects are all
local), which is what the daemon's ingest lock serialises; verification and storage
take no virtual time. Bytes on the wire are the msgpack bodies of requests and answers
(``pocnode.core.wire.encode``) plus the member token when a call carries one; HTTP
headers, TLS and TCP/IP are not counted unless ``header_bytes`` adds a fixed estimate
per message.

Byzantine nodes are the adversary's code, not the protocol's: ``drop`` answers nothing
and starts nothing; ``lie`` claims to be in sync or to hold events it has not, asks for
everything announced to it and gives nothing; ``replay`` runs the honest engine but
adds stale events to every exchange it sends or answers; ``equivocate`` runs the honest
engine and, once updates start, signs two different records at one sequence and pushes
the second to a few peers; ``flood`` runs the honest engine and sends bursts of junk
(forged signatures, events far ahead of any chain, bytes that are not msgpack).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from pocnode.core import encoding, wire
from pocnode.core.consent import HpkeKey, NoConsent
from pocnode.core.disclosure import DisclosureRow
from pocnode.core.engine import (
    TIMER_MAX_MS,
    TIMER_MIN_MS,
    Call,
    Commit,
    Cut,
    Engine,
    EngineConfig,
    EraseDisclosures,
    Freeze,
    Ingest,
    Now,
    Publish,
    ReadChain,
    ReadDisclosures,
    ReadEvent,
    ReadEvents,
    ReadProof,
    ReadStored,
    Spawn,
    StageIdentity,
    StoreDisclosures,
    StoreProof,
    SwapIdentity,
    UnderLock,
    VerifySignatures,
    verify_jobs,
)
from pocnode.core.errors import (
    Malformed,
    Oversize,
    PocError,
    RateLimited,
    Unauthenticated,
    WrongFederation,
)
from pocnode.core.events import (
    KIND_NODE_KEYS,
    KIND_RECORD,
    Event,
    build_event,
)
from pocnode.core.genesis import (
    MAX_FOUNDERS,
    TEMPLATE_VERSION,
    Founder,
    Genesis,
    assemble,
    build_payload,
    default_governance,
    genesis_id,
    parse_genesis,
    sign_payload,
)
from pocnode.core.keys import ED25519, SigningKey
from pocnode.core.limits import KeyedLimiter
from pocnode.core.peer_auth import check_header, make_header
from pocnode.core.reconcile import Peer
from pocnode.core.record import example_record
from pocnode.core.requests import Alert
from pocnode.sim.network import (
    Clock,
    Fate,
    Latency,
    Network,
    NetworkError,
    Partition,
    SimOptionError,
    colon_floats,
)
from pocnode.sim.store import MemoryStore, PeerHealthRow

# -- the daemon's adapter policies, the same numbers (tests/unit/test_sim.py checks them) ----

# The timer's bounds are the engine's (TIMER_MIN_MS, TIMER_MAX_MS), as the daemon's.
# pocnode/node/config.py defaults: peer request rate and burst, body limit.
PEER_RATE = 50.0
PEER_BURST = 200.0
MAX_BODY_BYTES = 2 * 1024 * 1024

# 2026-01-01 00:00 UTC: a fixed start, so that event timestamps (and ids) depend on the
# seed only.
DEFAULT_START_MS = 1_767_225_600_000

ROUTES: dict[str, tuple[wire.Map, bool]] = {   # route -> (request schema, needs a token)
    "/v1/peer/summary": (wire.SUMMARY, False),
    "/v1/peer/exchange": (wire.EXCHANGE, False),
    "/v1/peer/announce": (wire.ANNOUNCE, False),
    "/v1/peer/disclosures": (wire.DISCLOSURES, True),
    "/v1/peer/bilateral": (wire.BILATERAL, True),
}

BEHAVIOURS = ("drop", "lie", "replay", "equivocate", "flood")
# Per gossip interval, each flooding node sends this many requests of junk, each with
# this many junk events: bursts far above an honest node's one exchange per interval.
FLOOD_REQUESTS = 8
FLOOD_EVENTS = 16
# Stale events a replaying node adds to each exchange it sends or answers.
REPLAY_EVENTS = 16
# Peers an equivocating author pushes its second history to.
EQUIVOCATE_PEERS = 3


# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Byzantine:
    """``--byzantine FRACTION[:BEHAVIOUR,...]``: that fraction of the nodes (rounded) is
    Byzantine, each given one of the behaviours in turn (all five if none is named)."""

    fraction: float
    behaviours: tuple[str, ...] = BEHAVIOURS

    @classmethod
    def parse(cls, text: str) -> Byzantine:
        head, _, tail = text.strip().partition(":")
        try:
            fraction = float(head)
        except ValueError:
            fraction = math.nan
        if not 0 <= fraction < 1:
            raise SimOptionError(f"byzantine {text!r}: expected FRACTION[:BEHAVIOUR,...] with "
                                 f"a fraction in [0, 1), e.g. 0.1:drop,lie", path="--byzantine")
        names = tuple(n.strip() for n in tail.split(",") if n.strip()) if tail else BEHAVIOURS
        unknown = [n for n in names if n not in BEHAVIOURS]
        if unknown or not names:
            raise SimOptionError(f"byzantine {text!r}: unknown behaviour "
                                 f"{', '.join(unknown) or '(none)'}; choose from "
                                 f"{', '.join(BEHAVIOURS)}", path="--byzantine")
        return cls(fraction, names)

    def __str__(self) -> str:
        return f"{self.fraction:g}:{','.join(self.behaviours)}"


@dataclass(frozen=True, slots=True)
class Churn:
    """``--churn FRACTION[:MEAN_DOWN_S]``: from the first update on, each honest node goes
    down and comes back, down for an exponential time of mean MEAN_DOWN_S (default 10 s)
    and up for one such that FRACTION of the time it is down. A stop is graceful (peer
    health saved, as at SIGTERM); a start restores a new engine from the node's store."""

    fraction: float
    mean_down_ms: int = 10_000

    @classmethod
    def parse(cls, text: str) -> Churn:
        values = colon_floats(text)
        if len(values) not in (1, 2) or not 0 <= values[0] < 1 or (
                len(values) == 2 and not 0 < values[1] <= 86_400):
            raise SimOptionError(f"churn {text!r}: expected FRACTION[:MEAN_DOWN_S], a fraction "
                                 f"in [0, 1) and a mean outage of 0..86400 s, e.g. 0.1:20",
                                 path="--churn")
        return cls(values[0], round(values[1] * 1000) if len(values) == 2 else 10_000)

    def __str__(self) -> str:
        return f"{self.fraction:g}:{self.mean_down_ms / 1000:g}"


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 100
    fanout: int = 3
    interval_ms: int = 1000
    loss: float = 0.0
    latency: Latency = field(default_factory=lambda: Latency.parse("uniform:20:150"))
    partitions: tuple[Partition, ...] = ()
    churn: Churn | None = None
    byzantine: Byzantine | None = None
    updates: int = 1
    update_every_ms: int = 1000
    seed: int = 1
    node_keys: bool = False
    timeout_ms: int = 10_000
    connect_timeout_ms: int = 3_000
    header_bytes: int = 0
    max_virtual_s: float = 600.0
    idle_intervals: int = 5

    def check(self) -> None:
        if not 2 <= self.nodes <= 100_000:
            raise SimOptionError(f"nodes must be 2..100000, got {self.nodes}", path="--nodes")
        if not 0 <= self.fanout <= 64:
            raise SimOptionError(f"fanout must be 0..64, got {self.fanout}", path="--fanout")
        if not 10 <= self.interval_ms <= 3_600_000:
            raise SimOptionError(f"interval must be 10 ms..1 h, got {self.interval_ms}",
                                 path="--interval-ms")
        if not 0 <= self.updates <= 10_000:
            raise SimOptionError(f"updates must be 0..10000, got {self.updates}",
                                 path="--updates")
        if self.node_keys and self.nodes > wire.MAX_AUTHORS:
            raise SimOptionError(
                f"--node-keys makes every node an author, and a heads list carries at most "
                f"{wire.MAX_AUTHORS} authors (PROTOCOL.md §8.5): use at most "
                f"{wire.MAX_AUTHORS} nodes with it", path="--node-keys")
        honest = self.nodes - byzantine_count(self)
        if honest < 1:
            raise SimOptionError("no honest node left", path="--byzantine")


def byzantine_count(config: SimConfig) -> int:
    return round(config.byzantine.fraction * config.nodes) if config.byzantine else 0


# -- the federation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimIdentity:
    """What one node needs besides its store: who it is and its keys."""

    member: str
    key: SigningKey
    hpke: HpkeKey | None
    pin: bytes
    endpoint: str


def derive(seed: int, *labels: object) -> bytes:
    """32 bytes from the seed and labels: every key and random source of a run."""
    text = "/".join(str(x) for x in ("pocnode-sim", seed, *labels))
    return hashlib.sha256(text.encode()).digest()


def seeded_random(seed: int, *labels: object) -> random.Random:
    return random.Random(int.from_bytes(derive(seed, *labels), "big"))  # noqa: S311


def make_identity(seed: int, index: int, member: str, *, hpke: bool = False) -> SimIdentity:
    """The identity of node ``index`` (1-based), its keys derived from the seed: a founder
    of :func:`build_federation`, or (an index past the founders) an applicant's node."""
    key = SigningKey.from_seeds(ED25519, derive(seed, "identity", index))
    hk = HpkeKey("x25519", x25519.X25519PrivateKey.from_private_bytes(
        derive(seed, "hpke", index))) if hpke else None
    return SimIdentity(member, key, hk, derive(seed, "tls-pin", index),
                       f"https://{member.lower()}.sim:7443")


def build_federation(n: int, seed: int, *, hpke: bool = False,
                     start_ms: int = DEFAULT_START_MS,
                     governance: dict[str, dict[str, Any]] | None = None,
                     exercise: bool = False) -> tuple[Genesis, list[SimIdentity]]:
    """n members with keys derived from the seed, in one genesis.

    ``governance``: the rules of §5.3 (default: :func:`default_governance`); ``exercise``
    marks an exercise federation (§5.1), whose windows may be as short as a second, so
    that a governance scenario runs in a few virtual minutes.

    Up to MAX_FOUNDERS (256) members the genesis is built, signed and verified as the
    genesis ceremony does (``build_payload``, ``parse_genesis``). A larger federation is
    beyond the spec's limit on founders (§5, MAX_FOUNDERS): its genesis has the same
    fields, is neither signed nor parsed (the parser would refuse it, and 5,000 founders
    each signing a 600 KB document would cost more than the run), and is used as given.
    """
    width = max(4, len(str(n)))
    identities = [make_identity(seed, i, f"S{i:0{width}d}", hpke=hpke)
                  for i in range(1, n + 1)]
    founders = [Founder(s.member, f"Simulated state {i}", s.key.public_key, (s.endpoint,))
                for i, s in enumerate(identities, 1)]
    name = f"Simulated federation (seed {seed})"
    governance = governance if governance is not None else default_governance()
    if n <= MAX_FOUNDERS:
        payload = build_payload(
            name=name, created=start_ms, sig_alg=ED25519, hpke_suite="x25519",
            governance=governance, exercise=exercise,
            founders=[{"id": f.id, "name": f.name, "key": f.key,
                       "endpoints": list(f.endpoints)} for f in founders])
        signed = assemble(payload, {s.member: sign_payload(payload, s.key) for s in identities})
        return parse_genesis(signed), identities
    fields: dict[str, Any] = {
        "type": "pocnode/genesis", "v": 1, "name": name, "created": start_ms,
        "sig_alg": ED25519, "hpke_suite": "x25519", "template": TEMPLATE_VERSION,
        "governance": governance, "founders": [
            {"id": f.id, "name": f.name, "key": f.key.to_wire(), "endpoints": list(f.endpoints)}
            for f in founders]}
    if exercise:
        fields["exercise"] = True
    payload = encoding.encode(fields)
    return Genesis(raw=assemble(payload, {}), payload=payload, id=genesis_id(payload), name=name,
                   created=start_ms, sig_alg=ED25519, hpke_suite="x25519",
                   template=TEMPLATE_VERSION,
                   governance=MappingProxyType({k: MappingProxyType(v)
                                                for k, v in governance.items()}),
                   founders=tuple(founders), exercise=exercise), identities


# -- one node ---------------------------------------------------------------------------------


class SimNode:
    """A node of the simulation: identity, store, and its engine while it is up."""

    __slots__ = ("index", "member", "endpoint", "key", "staged_key", "hpke", "pin", "rng",
                 "random_bytes", "engine", "store", "up", "life", "tasks", "behaviour",
                 "limiter", "timer_token", "wake_on_round_end", "junk")

    def __init__(self, index: int, identity: SimIdentity, seed: int) -> None:
        self.index = index
        self.member = identity.member
        self.endpoint = identity.endpoint
        self.key = identity.key
        self.staged_key: SigningKey | None = None
        self.hpke = identity.hpke
        self.pin = identity.pin
        self.rng = seeded_random(seed, "engine", index)
        self.random_bytes = seeded_random(seed, "salts", index).randbytes
        self.engine: Engine | None = None
        self.store = MemoryStore()
        self.up = False
        self.life = 0                      # bumped at each stop: older tasks are void
        self.tasks: dict[int, _Task] = {}
        self.behaviour: str | None = None  # None: honest
        self.limiter: KeyedLimiter | None = None
        self.timer_token = 0
        self.wake_on_round_end = False
        self.junk: list[bytes] = []

    @property
    def honest(self) -> bool:
        return self.behaviour is None

    @property
    def runs_engine(self) -> bool:
        """drop and lie nodes never run the protocol; the others run it, some tampered."""
        return self.behaviour not in ("drop", "lie")


class _Task:
    __slots__ = ("node", "gen", "name", "life", "number", "closed")

    def __init__(self, node: SimNode, gen: Generator[Any, Any, Any], name: str,
                 number: int) -> None:
        self.node = node
        self.gen = gen
        self.name = name
        self.life = node.life
        self.number = number
        self.closed = False


class _Flight:
    """One call on its way: the calling task, both ends, what was sent and its fate."""

    __slots__ = ("task", "client", "server", "server_life", "route", "data", "header",
                 "size", "sent_at", "fate", "where")

    def __init__(self, task: _Task, client: SimNode, server: SimNode, route: str,
                 data: bytes, header: str | None, size: int, sent_at: int, fate: Fate,
                 where: str) -> None:
        self.task = task
        self.client = client
        self.server = server
        self.server_life = server.life
        self.route = route
        self.data = data
        self.header = header
        self.size = size
        self.sent_at = sent_at
        self.fate = fate
        self.where = where


@dataclass
class Traffic:
    """Counters of the whole run; the experiment snapshots them at phase boundaries."""

    bytes_sent: int = 0
    messages: int = 0
    calls: int = 0
    calls_failed: int = 0
    events_received: int = 0     # event copies that reached an ingest from a peer
    events_accepted: int = 0     # ... of which new to the node
    by_route: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> Traffic:
        return Traffic(self.bytes_sent, self.messages, self.calls, self.calls_failed,
                       self.events_received, self.events_accepted, Counter(self.by_route))

    def minus(self, before: Traffic) -> Traffic:
        return Traffic(self.bytes_sent - before.bytes_sent, self.messages - before.messages,
                       self.calls - before.calls, self.calls_failed - before.calls_failed,
                       self.events_received - before.events_received,
                       self.events_accepted - before.events_accepted,
                       self.by_route - before.by_route)


# -- the simulator ---------------------------------------------------------------------------


class Simulator:
    """Engines, their stores, the network and the clock; carries out effects."""

    def __init__(self, *, genesis: Genesis, identities: list[SimIdentity],
                 engine_config: EngineConfig, network: Network, seed: int,
                 start_ms: int = DEFAULT_START_MS, node_keys: bool = False,
                 header_bytes: int = 0, peer_rate: float = PEER_RATE,
                 peer_burst: float = PEER_BURST, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.genesis = genesis
        self.fed = genesis.id
        self.config = engine_config
        self.network = network
        self.clock = Clock(start_ms)
        self.start_ms = start_ms
        self.seed = seed
        self.node_keys = node_keys
        self.header_bytes = header_bytes
        self.peer_rate = peer_rate
        self.peer_burst = peer_burst
        self.max_body_bytes = max_body_bytes
        self.nodes = [SimNode(i, ident, seed) for i, ident in enumerate(identities)]
        self.by_member = {n.member: n for n in self.nodes}
        self.by_endpoint = {n.endpoint: n for n in self.nodes}
        self.traffic = Traffic()
        self.sent = [0] * len(self.nodes)       # bytes sent per node
        self.notes: Counter[tuple[str, str]] = Counter()   # (level, message) -> count
        self.refusals: Counter[str] = Counter()
        self.spawn_dropped = 0
        self.started: Counter[str] = Counter()   # sequences started, by name
        self.on_commit: Callable[[SimNode, tuple[Event, ...]], None] | None = None
        # Called once an ingest or a publish has been applied to a node's engine (its
        # tallies evaluated): where a scenario watches what each node shows.
        self.on_applied: Callable[[SimNode], None] | None = None
        self._tasks = 0
        self._handlers: dict[type, Callable[[SimNode, Any], Any]] = {
            Ingest: self._ingest, Publish: self._publish, Commit: self._commit,
            UnderLock: lambda n, e: self.run_now(n, e.sequence),
            VerifySignatures: lambda n, e: verify_jobs(e.jobs),
            Alert: lambda n, e: None,   # nobody to wake in a simulation (counted as started)
            ReadEvents: self._read_events,
            ReadEvent: lambda n, e: n.store.event(e.author, e.seq),
            ReadChain: lambda n, e: n.store.chain_raws(e.author, e.upto),
            Freeze: lambda n, e: n.store.freeze(e.author, e.seq, e.proof, e.found_at),
            StoreProof: lambda n, e: n.store.add_proof(e.author, e.seq, e.proof, e.found_at),
            ReadProof: lambda n, e: n.store.proof(e.author, e.seq),
            StoreDisclosures: lambda n, e: n.store.add_disclosures(e.rows),
            EraseDisclosures: lambda n, e: n.store.erase_disclosures(e.groups),
            ReadDisclosures: lambda n, e: n.store.disclosures_for(e.event_id, e.visibilities),
            Spawn: lambda n, e: self.spawn(n, e.sequence, e.name),
            StageIdentity: self._stage_identity, SwapIdentity: self._swap_identity,
            ReadStored: lambda n, e: n.store.read_stored(e.what, e.kinds),
            Cut: lambda n, e: n.store.cut(e.author, e.seq),
        }

    @property
    def now(self) -> int:
        return self.clock.now

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, node: SimNode) -> None:
        """Boot a node as ``Node.open`` + ``Node.run`` do: restore an engine from its store,
        publish node.keys if the chain does not say what this node holds, arm the timer."""
        if node.up:
            return
        node.up = True
        node.limiter = KeyedLimiter(rate=self.peer_rate, burst=self.peer_burst)
        if not node.runs_engine:
            return
        now = self.now
        engine = Engine(genesis=self.genesis, member=node.member, key=node.key,
                        config=self.config, rng=node.rng, random_bytes=node.random_bytes,
                        hpke=node.hpke, pin=node.pin, now=now)
        node.engine = engine
        self.run_now(node, engine.restore(now))
        if self.node_keys:
            message = engine.node_keys_message()
            if message is not None:
                self.spawn(node, _one_step(message), "node.keys")
        self._arm(node)

    def stop(self, node: SimNode, *, graceful: bool = True) -> None:
        """Stop a node: its running sequences end where they are (as tasks cancelled at
        shutdown); a graceful stop saves peer health as the daemon does at SIGTERM."""
        if not node.up:
            return
        node.up = False
        node.life += 1
        node.timer_token += 1
        for task in list(node.tasks.values()):
            task.closed = True
            task.gen.close()
        node.tasks.clear()
        engine = node.engine
        if engine is not None and graceful:
            node.store.peer_health = [
                PeerHealthRow(m, e, h.failures, h.next_try, h.last_contact, h.last_error)
                for (m, e), h in engine.peers.health.items()]
        if engine is not None:
            self._drain(engine)
        node.engine = None

    # -- running ----------------------------------------------------------------------------

    def run_until(self, until_ms: int, *, stop: Callable[[], bool] | None = None,
                  check_every: int = 1000) -> None:
        """Carry out everything due up to ``until_ms`` (or until ``stop()`` is true, asked
        every ``check_every`` actions), then set the clock there."""
        clock = self.clock
        count = 0
        while True:
            nxt = clock.next_time()
            if nxt is None or nxt > until_ms:
                break
            clock.step()
            count += 1
            if stop is not None and count % check_every == 0 and stop():
                return
        clock.now = max(clock.now, until_ms)

    def spawn(self, node: SimNode, sequence: Generator[Any, Any, Any], name: str) -> None:
        """Start a sequence at this virtual instant, after what is running now (as
        ``asyncio.create_task`` does), unless the node runs MAX_SPAWNED already."""
        if not node.up or len(node.tasks) >= self.config.max_spawned:
            sequence.close()
            self.spawn_dropped += 1
            if node.engine is not None:
                node.engine.dropped(name)
            return
        self._tasks += 1
        self.started[name] += 1
        task = _Task(node, sequence, name, self._tasks)
        node.tasks[task.number] = task
        self.clock.at(self.now, self._resume, task, None, False)

    def run_now(self, node: SimNode, steps: Generator[Any, Any, Any]) -> Any:
        """Drive a sequence whose effects are all local to completion, now (ingest,
        publish, answering a peer, restoring): what the daemon awaits in one request."""
        value: Any = None
        failed = False
        handlers = self._handlers
        engine = node.engine
        try:
            while True:
                try:
                    effect = steps.throw(value) if failed else steps.send(value)
                except StopIteration as stop:
                    return stop.value
                finally:
                    if engine is not None and engine.notes:
                        self._drain(engine)
                if type(effect) is Now:
                    value, failed = self.clock.now, False
                    continue
                handler = handlers.get(type(effect))
                if handler is None:  # a Call here would be a bug: fail loudly, not as a refusal
                    raise RuntimeError(f"a sequence run in one step asked for "
                                       f"{type(effect).__name__}")
                try:
                    value, failed = handler(node, effect), False
                except PocError as exc:
                    value, failed = exc, True
        finally:
            steps.close()

    def _resume(self, task: _Task, value: Any, failed: bool) -> None:
        """Carry on a sequence until it waits for the network or ends."""
        if task.closed:
            return
        node = task.node
        gen = task.gen
        engine = node.engine
        handlers = self._handlers
        while True:
            try:
                effect = gen.throw(value) if failed else gen.send(value)
            except StopIteration:
                self._finished(task)
                return
            except PocError:
                # _run_quietly in the daemon logs it; the sequence is over either way.
                self._finished(task)
                return
            finally:
                if engine is not None and engine.notes:
                    self._drain(engine)
            kind = type(effect)
            if kind is Now:
                value, failed = self.clock.now, False
                continue
            if kind is Call:
                self._call(task, effect)
                return
            handler = handlers.get(kind)
            if handler is None:
                raise RuntimeError(f"unknown effect {kind.__name__}")
            try:
                value, failed = handler(node, effect), False
            except PocError as exc:
                value, failed = exc, True

    def _finished(self, task: _Task) -> None:
        task.closed = True
        node = task.node
        node.tasks.pop(task.number, None)
        if task.name == "gossip" and node.wake_on_round_end and node.up:
            node.wake_on_round_end = False
            self._arm(node)

    def _drain(self, engine: Engine) -> None:
        notes = engine.notes
        while notes:
            note = notes.popleft()
            if note.refusal is not None:
                self.refusals[note.refusal] += 1
            else:
                self.notes[(note.level, note.message)] += 1

    # -- the timer (Node._timer) ----------------------------------------------------------------

    def _arm(self, node: SimNode) -> None:
        engine = node.engine
        if engine is None or not node.up:
            return
        now = self.clock.now
        wake = engine.next_wakeup
        if wake <= now and engine.round_running and wake == engine.next_round_at:
            node.wake_on_round_end = True   # nothing but the running round to wait for
            return
        delay = min(TIMER_MAX_MS, max(TIMER_MIN_MS, wake - now))
        node.timer_token += 1
        self.clock.at(now + delay, self._tick, node, node.timer_token)

    def _tick(self, node: SimNode, token: int) -> None:
        if token != node.timer_token or not node.up or node.engine is None:
            return
        for name, sequence in node.engine.due(self.clock.now):
            self.spawn(node, sequence, name)
        self._arm(node)

    # -- effects carried out locally ---------------------------------------------------------

    def _ingest(self, node: SimNode, effect: Ingest) -> Any:
        engine = node.engine
        assert engine is not None
        result = self.run_now(node, engine.ingest(effect.raws, source=effect.source,
                                                  now=self.clock.now, proofs=effect.proofs))
        if effect.source is not None:
            self.traffic.events_received += len(effect.raws)
            self.traffic.events_accepted += len(result.accepted)
        if self.on_applied is not None:
            self.on_applied(node)
        return result

    def _publish(self, node: SimNode, effect: Publish) -> Event:
        engine = node.engine
        assert engine is not None
        try:
            return self.run_now(node, engine.publish(effect.kind, effect.body, self.clock.now,
                                                     effect.disclosures))
        finally:
            if self.on_applied is not None:
                self.on_applied(node)

    def _commit(self, node: SimNode, effect: Commit) -> None:
        node.store.append(effect.events, effect.disclosures, effect.received_at)
        if self.on_commit is not None and effect.events:
            self.on_commit(node, effect.events)

    def _read_events(self, node: SimNode, effect: ReadEvents) -> dict[str, list[bytes]]:
        store = node.store
        return {a: store.events_from(a, first, n, size) for a, first, n, size in effect.parts}

    def _stage_identity(self, node: SimNode, effect: StageIdentity) -> None:
        node.staged_key = effect.key

    def _swap_identity(self, node: SimNode, effect: SwapIdentity) -> None:
        if node.staged_key is not None:
            node.key, node.staged_key = node.staged_key, None

    # -- operator inputs ---------------------------------------------------------------------

    def publish(self, node: SimNode, message: Publish) -> None:
        """An operator's publish (record, consent): as the operator API runs it."""
        self.spawn(node, _one_step(message), "publish")

    def inject_own(self, node: SimNode, raw: bytes, rows: Iterable[DisclosureRow] = ()) -> Any:
        """An event this node's member signed elsewhere (a differential test replays a
        real node's events): taken in exactly as :meth:`Engine.publish` takes its own."""
        assert node.engine is not None
        try:
            return self.run_now(node, node.engine.ingest([raw], source=None,
                                                         now=self.clock.now,
                                                         own_disclosures=tuple(rows)))
        finally:
            if self.on_applied is not None:
                self.on_applied(node)

    def deliver(self, node: SimNode, raws: Iterable[bytes]) -> Any:
        """Events handed to a node's ingest now, as a peer's exchange would hand them,
        without the network's delay: a scenario that must know what each node does with
        an event the instant it is signed. Returns the ingest's result."""
        assert node.engine is not None
        try:
            return self.run_now(node, node.engine.ingest(list(raws), source=None,
                                                         now=self.clock.now))
        finally:
            if self.on_applied is not None:
                self.on_applied(node)

    def operate(self, node: SimNode, build: Callable[[Engine], Any],
                done: Callable[[Any], None] | None = None) -> None:
        """An operator's command at this instant, as the operator API runs one: ``build``
        makes the message from the node's engine (``propose_message``, ``vote_message``,
        ``withdraw_message``, which refuse what could never count), and the message is
        carried out under the ingest lock. ``done`` is given the event, or the refusal
        (a :class:`PocError`); a node that is down refuses with a ``peer`` error."""
        if not node.up or node.engine is None:
            if done is not None:
                done(NetworkError(f"{node.member}'s node is down", path=node.endpoint))
            return
        self.spawn(node, _operation(node.engine, build, done), "operator")

    def forge(self, node: SimNode, kind: str, body: dict[str, Any], *, ts: int,
              seq: int | None = None) -> bytes:
        """An event signed with the node's key outside its engine, at ``seq`` (default:
        after the head its store holds), linked to the stored event before it: a member's
        own tool, or the adversary's (a back-dated vote, a second history). Nothing is
        checked here; refusing it is the engines' job."""
        chain = node.store.chains.get(node.member)
        held = len(chain.ids) if chain is not None else 0
        seq = held + 1 if seq is None else seq
        prev = chain.ids[seq - 2] if chain is not None and seq > 1 else None
        return build_event(node.key, fed=self.fed, author=node.member, seq=seq, prev=prev,
                           kind=kind, ts=ts, body=body)

    def send_events(self, node: SimNode, raws: Iterable[bytes],
                    to: Iterable[SimNode]) -> None:
        """Push events from ``node`` to each of ``to`` in one exchange call each (what
        gossip would carry, or what an adversary wants a few nodes to see first)."""
        events = list(raws)
        self.spawn(node, _calls([(Peer(t.member, t.endpoint, "genesis"), "/v1/peer/exchange",
                                  {"events": events, "want": []}) for t in to]), "push")

    def partition(self, side: Iterable[SimNode], split_at: int, heal_at: int) -> None:
        """Nodes of ``side`` cut off from all others from ``split_at`` until ``heal_at``
        (virtual ms); calls between the two sides time out meanwhile."""
        mark = bytearray(len(self.nodes))
        for node in side:
            mark[node.index] = 1
        self.network.add_partition(split_at, heal_at, mark)

    # -- the network: calls ---------------------------------------------------------------------

    def _call(self, task: _Task, call: Call) -> None:
        client = task.node
        now = self.clock.now
        route = call.route
        body = dict(call.body)
        body["fed"] = self.fed
        if client.behaviour == "replay" and route == "/v1/peer/exchange":
            body["events"] = list(body.get("events", ())) + self._stale(client)
        data = wire.encode(body)
        where = call.peer.endpoint + route
        self.traffic.calls += 1
        header = None
        if call.authenticate:
            if call.pin is None:
                self._count_sent(client, len(data) + self.header_bytes, route)
                self.clock.at(now, self._fail, task, "no pin known for this peer: cannot "
                              "authenticate", where)
                return
            header = make_header(client.key, fed=self.fed, member=client.member,
                                 server_pin=call.pin, now=now + call.skew_ms, method="POST",
                                 path=route, body=data)
        size = len(data) + (len(header) if header else 0) + self.header_bytes
        self._count_sent(client, size, route)
        server = self.by_endpoint.get(call.peer.endpoint)
        net = self.network
        if server is None or not server.up:
            self.clock.at(now + net.connect_timeout_ms, self._fail, task,
                          "cannot connect: Connection refused", where)
            return
        fate = net.fate()
        if call.pin is not None and call.pin != server.pin:
            self.clock.at(now + fate.request_ms + fate.answer_ms, self._fail, task,
                          "server certificate does not match the member's pin", where)
            return
        if fate.request_lost or net.apart(client.index, server.index, now):
            self.clock.at(now + net.timeout_ms, self._fail, task, "timed out", where)
            return
        flight = _Flight(task, client, server, route, data, header, size, now, fate, where)
        self.clock.at(now + fate.request_ms, self._arrive, flight)

    def _arrive(self, flight: _Flight) -> None:
        server = flight.server
        now = self.clock.now
        deadline = flight.sent_at + self.network.timeout_ms
        if server.life != flight.server_life or not server.up \
                or self.network.apart(flight.client.index, server.index, now):
            self.clock.at(deadline, self._fail, flight.task, "timed out", flight.where)
            return
        answer = self._serve(server, flight)
        if answer is None:
            self.clock.at(deadline, self._fail, flight.task, "timed out", flight.where)
            return
        payload, error = answer
        self._count_sent(server, len(payload) + self.header_bytes, flight.route + " answer")
        fate = flight.fate
        if fate.answer_lost or now + fate.answer_ms > deadline:
            self.clock.at(deadline, self._fail, flight.task, "timed out", flight.where)
            return
        self.clock.at(now + fate.answer_ms, self._answered, flight, payload, error)

    def _answered(self, flight: _Flight, payload: bytes, error: str | None) -> None:
        task = flight.task
        if task.closed or task.life != task.node.life:
            return
        if self.network.apart(flight.client.index, flight.server.index, self.clock.now):
            self.clock.at(flight.sent_at + self.network.timeout_ms, self._fail, task,
                          "timed out", flight.where)
            return
        if error is not None:
            self._fail(task, f"refused: {error}", flight.where)
            return
        if len(payload) > self.max_body_bytes:
            self._fail(task, f"answer larger than {self.max_body_bytes} bytes", flight.where)
            return
        self._resume(task, payload, False)

    def _fail(self, task: _Task, message: str, where: str) -> None:
        if task.closed or task.life != task.node.life:
            return
        self.traffic.calls_failed += 1
        self._resume(task, NetworkError(message, path=where), True)

    def _count_sent(self, node: SimNode, size: int, what: str) -> None:
        self.traffic.bytes_sent += size
        self.traffic.messages += 1
        self.traffic.by_route[what] += size
        self.sent[node.index] += size

    # -- the network: the peer server (pocnode/net/peer_server.py) ------------------------------

    def _serve(self, server: SimNode, flight: _Flight) -> tuple[bytes, str | None] | None:
        """The answer's bytes and, for a refusal, its "code: message"; None for none."""
        behaviour = server.behaviour
        if behaviour == "drop":
            return None
        route = flight.route
        limiter = server.limiter
        assert limiter is not None
        try:
            if len(flight.data) > self.max_body_bytes:
                raise Oversize(f"body larger than {self.max_body_bytes} bytes")
            schema, needs_token = ROUTES.get(route, (None, False))
            if schema is None:
                raise Malformed(f"no route {route!r}")
            member = None
            key = "p:" + flight.client.endpoint
            if flight.header is not None:
                member = check_header(
                    flight.header, fed=self.fed, own_pin=server.pin, now=self.clock.now,
                    method="POST", path=route, body=flight.data,
                    current_key=server.engine.current_key if server.engine is not None
                    else lambda m: None)
                key = "m:" + member
            elif needs_token:
                raise Unauthenticated("this request needs a member's token (§8.2)")
            if not limiter.take(key, self.clock.now):
                raise RateLimited("rate limit exceeded; slow down")
            msg = wire.read(schema, flight.data)
            if msg["fed"] != self.fed:
                raise WrongFederation("request for another federation", path="request.fed")
            if behaviour == "lie":
                answer = self._lie(server, route, msg)
            else:
                answer = self._answer(server, route, msg, member, flight.client.endpoint)
        except PocError as exc:
            return wire.encode({"code": exc.code, "message": exc.message[:500]}), \
                f"{exc.code}: {exc.message[:200]}"
        if behaviour == "replay" and route == "/v1/peer/exchange":
            answer = {**answer, "events": list(answer["events"]) + self._stale(server)}
        return wire.encode(answer), None

    def _answer(self, server: SimNode, route: str, msg: dict[str, Any], member: str | None,
                remote: str) -> dict[str, Any]:
        engine = server.engine
        assert engine is not None
        if route == "/v1/peer/summary":
            return engine.answer_summary(msg, self.clock.now)
        if route == "/v1/peer/announce":
            return engine.answer_announce(msg, self.clock.now)
        if route == "/v1/peer/exchange":
            return self.run_now(server, engine.answer_exchange(msg, member, remote))
        assert member is not None
        if route == "/v1/peer/disclosures":
            return self.run_now(server, engine.answer_disclosures(msg, member))
        return self.run_now(server, engine.answer_bilateral(msg, member))

    # -- Byzantine behaviour (the adversary's code) ---------------------------------------------

    def _lie(self, node: SimNode, route: str, msg: dict[str, Any]) -> dict[str, Any]:
        rng = node.rng
        now = self.clock.now
        if route == "/v1/peer/summary":
            if rng.random() < 0.5:
                return {"same": True, "now": now}   # "we are in sync": nothing flows
            return {"heads": self._fake_heads(node), "now": now}
        if route == "/v1/peer/announce":
            return {"want": [[a, 1, None] for a, _, _ in msg["heads"]]}  # everything, again
        if route == "/v1/peer/exchange":
            return {"events": [], "proofs": [], "accepted": len(msg.get("events", [])),
                    "refused": 0}
        if route == "/v1/peer/disclosures":
            return {"disclosures": []}
        raise NoConsent("no mutual consent")

    def _fake_heads(self, node: SimNode) -> list[list[Any]]:
        """Heads of a few real members, far ahead of anything signed, with made-up ids."""
        rng = node.rng
        authors = sorted({self.nodes[rng.randrange(len(self.nodes))].member
                          for _ in range(4)}, key=encoding.key_order)
        return [[a, rng.randrange(2, 1000), rng.randbytes(32)] for a in authors]

    def _stale(self, node: SimNode) -> list[bytes]:
        """Old events this node holds: the first event of up to REPLAY_EVENTS authors."""
        out = []
        for chain in node.store.chains.values():
            if chain.raws:
                out.append(chain.raws[0])
                if len(out) >= REPLAY_EVENTS:
                    break
        return out

    def start_adversary(self, node: SimNode) -> None:
        """The Byzantine node's own activity, once per interval from now on."""
        if node.behaviour in ("lie", "flood"):
            self.clock.at(self.now + node.rng.randrange(self.config.gossip_interval_ms),
                          self._adversary_tick, node)

    def _adversary_tick(self, node: SimNode) -> None:
        if not node.up:
            return
        rng = node.rng
        others = [n for n in (self.nodes[rng.randrange(len(self.nodes))]
                              for _ in range(FLOOD_REQUESTS)) if n is not node]
        calls: list[tuple[Peer, str, dict[str, Any]]] = []
        if node.behaviour == "lie":
            heads = self._fake_heads(node)
            for other in others[:self.config.fanout]:
                calls.append((Peer(other.member, other.endpoint, "genesis"),
                              "/v1/peer/announce", {"heads": heads}))
        else:
            if not node.junk:
                node.junk = self._make_junk(node)
            for other in others:
                events = [node.junk[rng.randrange(len(node.junk))] for _ in range(FLOOD_EVENTS)]
                calls.append((Peer(other.member, other.endpoint, "genesis"),
                              "/v1/peer/exchange", {"events": events, "want": []}))
        self.spawn(node, _calls(calls), "adversary")
        self.clock.at(self.now + self.config.gossip_interval_ms, self._adversary_tick, node)

    def _make_junk(self, node: SimNode) -> list[bytes]:
        """Events no honest node may accept: signatures forged in others' names, events
        of our own far ahead of our chain, and bytes that are not an envelope."""
        rng = seeded_random(self.seed, "junk", node.index)
        junk = []
        for i in range(FLOOD_EVENTS):
            victim = self.nodes[rng.randrange(len(self.nodes))].member
            body = {"tls": rng.randbytes(32)}
            if i % 3 == 0:
                junk.append(build_event(node.key, fed=self.fed, author=victim, seq=1, prev=None,
                                        kind=KIND_NODE_KEYS, ts=self.now, body=body))
            elif i % 3 == 1:
                junk.append(build_event(node.key, fed=self.fed, author=node.member,
                                        seq=1_000_000 + i, prev=rng.randbytes(32),
                                        kind=KIND_NODE_KEYS, ts=self.now, body=body))
            else:
                junk.append(rng.randbytes(200 + rng.randrange(800)))
        return junk

    def equivocate(self, node: SimNode, plain: dict[str, Any]) -> None:
        """Sign a record through the engine, then a second one at the same sequence, and
        push the second to a few peers."""
        self.spawn(node, self._equivocation(node, plain), "adversary")

    def _equivocation(self, node: SimNode, plain: dict[str, Any]) -> Generator[Any, Any, None]:
        engine = node.engine
        assert engine is not None
        event = yield engine.compile_record(plain)
        other = dict(plain, entries=[dict(plain["entries"][0],
                                          organisation="A second history")])
        fork = build_event(node.key, fed=self.fed, author=node.member, seq=event.seq,
                           prev=event.prev, kind=KIND_RECORD, ts=event.ts,
                           body=engine.compile_record(other).body)
        rng = node.rng
        for _ in range(EQUIVOCATE_PEERS):
            target = self.nodes[rng.randrange(len(self.nodes))]
            if target is node:
                continue
            try:
                yield Call(Peer(target.member, target.endpoint, "genesis"),
                           "/v1/peer/exchange", {"events": [fork], "want": []})
            except PocError:
                continue


def _one_step(message: Any) -> Generator[Any, Any, Any]:
    """A one-step sequence, as the daemon's ``_publish``: the prepared message, carried
    out under the ingest lock."""
    result = yield message
    return result


def _operation(engine: Engine, build: Callable[[Engine], Any],
               done: Callable[[Any], None] | None) -> Generator[Any, Any, None]:
    try:
        result = yield build(engine)
    except PocError as exc:
        result = exc
    if done is not None:
        done(result)


def _calls(calls: list[tuple[Peer, str, dict[str, Any]]]) -> Generator[Any, Any, None]:
    for peer, route, body in calls:
        try:
            yield Call(peer, route, body)
        except PocError:
            continue


def update_record(node: SimNode, number: int) -> dict[str, Any]:
    """The record an update publishes: the template's example (one entry public, one for
    members, one bilateral), marked with its number, listing the node's own endpoint (the
    example's would be a peer nobody answers at)."""
    plain = example_record()
    first = dict(plain["entries"][0], organisation=f"Ministry of Foreign Affairs of "
                 f"{node.member}", unit=f"Update {number}")
    return {**plain, "entries": [first, *plain["entries"][1:]],
            "node": {"endpoints": [node.endpoint]}}


__all__ = ["BEHAVIOURS", "Byzantine", "Churn", "SimConfig", "SimIdentity", "SimNode",
           "Simulator", "Traffic", "build_federation", "byzantine_count", "derive",
           "make_identity", "seeded_random", "update_record"]
