"""Engines driven without sockets or SQLite: a dict store and a direct, synchronous network.

Unit tests of the engine carry its effects out here in a few lines each: a Call to another
engine runs that engine's answer at once, a Commit appends to a dict. Nothing here decides
anything about the protocol: it only does what the engine asks, so the tests exercise the
engine's own decisions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pocnode.core import wire
from pocnode.core.consent import HpkeKey
from pocnode.core.engine import (
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
    Spawn,
    StageIdentity,
    StoreDisclosures,
    StoreProof,
    SwapIdentity,
    UnderLock,
    VerifySignatures,
    verify_jobs,
)
from pocnode.core.errors import PocError, StoreError
from pocnode.core.genesis import assemble, build_payload, default_governance, parse_genesis
from pocnode.core.genesis import sign_payload as sign_genesis
from pocnode.core.keys import SigningKey
from pocnode.core.requests import Alert

T0 = 1_767_225_600_000


class PeerDown(PocError):
    code = "peer"


@dataclass
class Memory:
    """What a node's store holds, as the effects need it."""

    events: dict[tuple[str, int], bytes] = field(default_factory=dict)
    forked: list[bytes] = field(default_factory=list)
    proofs: dict[tuple[str, int], bytes] = field(default_factory=dict)
    disclosures: dict[tuple[bytes, bytes], tuple[str, bytes]] = field(default_factory=dict)
    fail_commits: bool = False


class World:
    """N engines of one federation, a clock, and a network that may drop nodes."""

    def __init__(self, members: tuple[str, ...] = ("ATL", "BOR", "CAL"), *,
                 seed: int = 1, fanout: int = 2,
                 rules: dict[str, dict[str, Any]] | None = None) -> None:
        self.now = T0
        self.keys = {m: SigningKey.generate() for m in members}
        founders = [{"id": m, "name": f"State {m}", "key": k.public_key,
                     "endpoints": [f"https://{m.lower()}.test:7443"]}
                    for m, k in self.keys.items()]
        payload = build_payload(name="Engine test", created=T0, sig_alg="ed25519",
                                founders=founders, governance=rules or default_governance(),
                                exercise=rules is not None)
        self.genesis = parse_genesis(assemble(payload, {
            m: sign_genesis(payload, k) for m, k in self.keys.items()}))
        self.engines: dict[str, Engine] = {}
        self.stores: dict[str, Memory] = {}
        self.down: set[str] = set()
        self.calls: list[tuple[str, str, str]] = []   # (from, to, route)
        self.spawned: list[tuple[str, str]] = []      # (node, name), run at once
        self.run_spawns = True                        # False: noted, not run
        self.alerts: list[tuple[str, Any]] = []       # (node, Alert) the adapter would run
        self.seed = seed
        self.fanout = fanout
        for m in members:
            self.add_node(m, self.keys[m])

    def add_node(self, member: str, key: SigningKey) -> Engine:
        """A node of ``member`` (a founder, or an applicant not yet admitted)."""
        i = len(self.engines)
        salt_rng = random.Random(self.seed * 1000 + i)
        engine = self.engines[member] = Engine(
            genesis=self.genesis, member=member, key=key,
            config=EngineConfig(fanout=self.fanout), rng=random.Random(self.seed + i),
            random_bytes=lambda n, r=salt_rng: r.randbytes(n),
            hpke=HpkeKey.generate("x25519"), pin=hashlib.sha256(member.encode()).digest(),
            now=self.now)
        self.stores[member] = Memory()
        return engine

    # -- carrying out effects ---------------------------------------------------------------

    def run(self, node: str, steps: Generator[Any, Any, Any]) -> Any:
        send, value = True, None
        while True:
            try:
                effect = steps.send(value) if send else steps.throw(value)
            except StopIteration as stop:
                return stop.value
            try:
                value, send = self.carry_out(node, effect), True
            except PocError as exc:
                value, send = exc, False

    def carry_out(self, node: str, effect: Any) -> Any:
        engine, store = self.engines[node], self.stores[node]
        match effect:
            case Now():
                return self.now
            case Call(peer=peer, route=route, body=body):
                self.calls.append((node, peer.member or "?", route))
                if peer.member in self.down or peer.member not in self.engines:
                    raise PeerDown(f"{peer.member} is down")
                return wire.encode(self.answer(peer.member, route, body, node))
            case Ingest(raws=raws, proofs=proofs, source=source):
                return self.run(node, engine.ingest(raws, source=source, now=self.now,
                                                    proofs=proofs))
            case Publish(kind=kind, body=body, disclosures=rows):
                return self.run(node, engine.publish(kind, body, self.now, rows))
            case UnderLock(sequence=sequence):
                return self.run(node, sequence)
            case VerifySignatures(jobs=jobs):
                return verify_jobs(jobs)
            case Alert():
                self.alerts.append((node, effect))
                return None
            case Commit(events=events, disclosures=rows):
                if store.fail_commits:
                    raise StoreError("cannot write: the disk is full (ENOSPC)")
                for e in events:
                    store.events[(e.author, e.seq)] = e.raw
                for r in rows:
                    store.disclosures[(r.event_id, r.digest)] = (r.visibility, r.raw)
                return None
            case ReadEvents(parts=parts):
                out = {}
                for author, first, limit, _ in parts:
                    seqs = sorted(s for a, s in store.events if a == author and s >= first)
                    out[author] = [store.events[(author, s)] for s in seqs[:limit]]
                return out
            case ReadEvent(author=author, seq=seq):
                return store.events.get((author, seq))
            case ReadChain(author=author, upto=upto):
                return [store.events[(author, s)] for s in range(1, upto + 1)
                        if (author, s) in store.events]
            case Cut(author=author, seq=seq):
                for key in [k for k in store.events if k[0] == author and k[1] >= seq]:
                    store.forked.append(store.events.pop(key))
                return None
            case Freeze(author=author, seq=seq, proof=proof):
                store.proofs.setdefault((author, seq), proof)
                for key in [k for k in store.events if k[0] == author and k[1] >= seq]:
                    store.forked.append(store.events.pop(key))
                return None
            case StoreProof(author=author, seq=seq, proof=proof):
                store.proofs.setdefault((author, seq), proof)
                return None
            case ReadProof(author=author, seq=seq):
                return store.proofs.get((author, seq))
            case StoreDisclosures(rows=rows):
                for r in rows:
                    store.disclosures[(r.event_id, r.digest)] = (r.visibility, r.raw)
                return None
            case EraseDisclosures(groups=groups):
                for key in [k for k, (v, _) in store.disclosures.items()
                            if (k[0], v) in set(groups)]:
                    del store.disclosures[key]
                return None
            case ReadDisclosures(event_id=event_id, visibilities=vis):
                return [raw for (e, _), (v, raw) in sorted(store.disclosures.items())
                        if e == event_id and v in vis]
            case Spawn(sequence=sequence, name=name):
                self.spawned.append((node, name))
                if self.run_spawns:
                    self.run(node, sequence)
                else:   # as an adapter that may run no more drops it
                    sequence.close()
                    engine.dropped(name)
                return None
            case StageIdentity() | SwapIdentity():
                return None
        raise AssertionError(f"unexpected effect {effect!r}")

    def answer(self, member: str, route: str, body: dict[str, Any], caller: str) -> Any:
        """The peer's side: its engine answers, through the same parse the server does."""
        engine = self.engines[member]
        msg = {**body, "fed": self.genesis.id}
        schema = {"/v1/peer/summary": wire.SUMMARY, "/v1/peer/exchange": wire.EXCHANGE,
                  "/v1/peer/announce": wire.ANNOUNCE, "/v1/peer/disclosures": wire.DISCLOSURES,
                  "/v1/peer/bilateral": wire.BILATERAL}[route]
        msg = wire.read(schema, wire.encode(msg))
        if route == "/v1/peer/summary":
            return engine.answer_summary(msg, self.now)
        if route == "/v1/peer/announce":
            return engine.answer_announce(msg, self.now)
        if route == "/v1/peer/exchange":
            return self.run(member, engine.answer_exchange(msg, caller, "test"))
        if route == "/v1/peer/disclosures":
            return self.run(member, engine.answer_disclosures(msg, caller))
        return self.run(member, engine.answer_bilateral(msg, caller))

    # -- conveniences -------------------------------------------------------------------------

    def publish(self, node: str, message: Publish, *, quietly: bool = False) -> Any:
        """Publish at ``node``; ``quietly``: without running the announces it starts."""
        self.run_spawns = not quietly
        try:
            return self.run(node, self._one(message))
        finally:
            self.run_spawns = True

    @staticmethod
    def _one(message: Publish) -> Generator[Any, Any, Any]:
        return (yield message)

    def round(self, node: str, peer: str) -> bool:
        engine = self.engines[node]
        (target,) = [p for p in engine.peers.endpoints(peer)][:1]
        return self.run(node, engine.gossip_round(target))

    def settle(self, rounds: int = 20) -> None:
        """Every node gossips with every other, a few times over."""
        for _ in range(rounds):
            for a in self.engines:
                for b in self.engines:
                    if a != b and a not in self.down and b not in self.down:
                        self.round(a, b)

    def due(self, steps: int = 1) -> None:
        """Each live node does what is due now (ticks, node.keys, pulls), not gossip."""
        for _ in range(steps):
            for member, engine in list(self.engines.items()):
                if member in self.down:
                    continue
                for name, sequence in engine.due(self.now):
                    if name == "gossip":
                        sequence.close()  # never started: its finally does not run
                        engine.rounds_running -= 1
                        continue
                    self.run(member, sequence)

    def advance(self, ms: int) -> None:
        self.now += ms

    def summaries(self) -> set[bytes]:
        return {e.summary() for m, e in self.engines.items() if m not in self.down}


def record(member: str, marker: str, *, person_visibility: str = "members") -> dict[str, Any]:
    return {"template": 1, "entries": [
        {"id": "cert", "domain": "technical", "visibility": "public",
         "organisation": f"{member} CERT {marker}", "email": f"cert-{marker}@example.org"},
        {"id": "mfa", "domain": "diplomatic", "visibility": "members",
         "organisation": f"{member} MFA", "person": f"Member {marker}",
         "field_visibility": {"person": person_visibility},
         "email": f"mfa-{marker}@example.org"},
        {"id": "duty", "domain": "policy", "visibility": "bilateral",
         "organisation": f"{member} duty", "person": f"Bilateral {marker}",
         "phone": "+41225550111"},
    ]}


Handler = Callable[[Any], Any]
