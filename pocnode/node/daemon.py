"""The daemon: store + core + network + timers.

:class:`Node` owns one :class:`~pocnode.core.chain.Verifier`, one store and the
peer table. Every event, from a peer, an operator or this node itself, enters
through :meth:`Node.ingest`, which verifies with the core, commits to disk, and
only then tells anyone (peers, operators) it has the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocnode import __version__
from pocnode.core import encoding
from pocnode.core.chain import Verifier, equivocation_proof
from pocnode.core.consent import (
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
from pocnode.core.disclosure import check_disclosure, compile_record, reveal
from pocnode.core.errors import (
    Duplicate,
    Equivocation,
    PocError,
    SequenceGap,
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
from pocnode.core.keys import PublicKey, SigningKey
from pocnode.core.reconcile import (
    PeerTable,
    PendingBuffer,
    heads_from_wire,
    heads_to_wire,
    interleave,
    plan,
    summary_hash,
)
from pocnode.keyfile import load_signing_key
from pocnode.net.peer_client import PeerClient, PeerError
from pocnode.node import datadir, tls
from pocnode.node.config import Config, load_config
from pocnode.node.logs import setup_logging
from pocnode.node.metrics import Metrics
from pocnode.store import Store, StoredEvent

log = logging.getLogger("pocnode.node")
# Authors' disclosures we ask one peer for in one round, and how long before we ask about
# the same record again (its author's node may be the only holder, and may be down).
DISCLOSURE_BATCH = 64
DISCLOSURE_RETRY_MS = 30_000
DISCLOSURE_RETRY_MAX_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class IngestResult:
    accepted: list[Event] = field(default_factory=list)
    duplicates: int = 0
    pending: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    equivocations: int = 0


class Node:
    def __init__(self, *, config: Config, genesis: Genesis, key: SigningKey, store: Store,
                 pin: bytes, passphrase: bytes) -> None:
        self.config = config
        self.genesis = genesis
        self.key = key
        self.store = store
        self.pin = pin
        self._passphrase = passphrase  # for keys created later: hpke.key, a rotated identity
        self.member = config.member
        self.verifier = Verifier(genesis)
        self.pending = PendingBuffer(max_bytes=config.pending_max_bytes)
        self.peers = PeerTable(self_member=config.member)
        self.rng = random.Random(os.urandom(16))  # noqa: S311 - peer choice, not secrets
        self.metrics = Metrics()
        self.started_at = now_ms()
        self.pins: dict[str, bytes] = {}               # member -> TLS pin (node.keys)
        self.records: dict[str, Event] = {}            # member -> latest record event
        self.need_disclosures: dict[bytes, str] = {}   # record event id -> author
        self.hpke: HpkeKey | None = None               # ours, for opening sealed boxes
        self.hpke_keys: dict[str, bytes] = {}          # member -> HPKE public key
        self.consent = ConsentState(me=config.member)
        self.need_bilateral: dict[str, bytes] = {}     # counterpart -> its record event id
        self._erasure_due = False
        # (record event id, peer endpoint) -> when we last asked that peer for its disclosures
        self._asked: dict[tuple[bytes, str], tuple[int, int]] = {}  # -> (next ask, delay)
        self.client = PeerClient(fed=genesis.id, member=config.member, key=key,
                                 request_timeout_s=config.request_timeout_s,
                                 connect_timeout_s=config.connect_timeout_s,
                                 max_response_bytes=config.max_body_bytes)
        self._lock = asyncio.Lock()          # ingest: verify, commit, apply
        self._publishing = asyncio.Lock()    # our own next sequence: number, sign, store
        self._summary: bytes | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self.peer_port = 0
        self.operator_port = 0
        self._register_gauges()

    # -- opening ---------------------------------------------------------------------

    @classmethod
    async def open(cls, data_dir: Path) -> Node:
        config = load_config(data_dir)
        setup_logging(config.log_format, config.log_level)
        passphrase = datadir.read_passphrase(data_dir, config.passphrase_file)
        key = datadir.load_identity(data_dir, passphrase)
        genesis = datadir.load_genesis(data_dir)
        member_key = genesis.members.get(config.member)
        if member_key is None:
            raise datadir.DataDirError(f"{config.member} is not a member of this federation",
                                       path=str(data_dir))
        store = await Store.open(config.db_path, federation_id=genesis.id, member=config.member)
        node = cls(config=config, genesis=genesis, key=key, store=store,
                   pin=tls.load_pin(data_dir), passphrase=passphrase)
        try:
            node.hpke = _load_or_create_hpke(data_dir, genesis.hpke_suite, passphrase)
            await node.restore()
            await node.enforce_erasure()
        except BaseException:
            await store.close()  # else the process lingers, and nothing restarts it
            raise
        if key.public_key != node.current_key(config.member):
            staged = data_dir / (datadir.IDENTITY_KEY + ".next")
            if staged.exists():
                # A rotation was published, then the node stopped before swapping the files.
                staged_key = load_signing_key(staged, passphrase)
                if staged_key.public_key == node.current_key(config.member):
                    chain = node.verifier.chains[config.member]
                    os.replace(data_dir / datadir.IDENTITY_KEY,
                               data_dir / f"{datadir.IDENTITY_KEY}.old-{chain.seq}")
                    os.replace(staged, data_dir / datadir.IDENTITY_KEY)
                    node.key = node.client.key = staged_key
                    return node
            await store.close()
            raise datadir.DataDirError("identity.key is not this member's current key",
                                       path=str(data_dir / datadir.IDENTITY_KEY))
        return node

    async def restore(self) -> None:
        """Rebuild chain state from our own verified store (no signature re-checks: the
        store only ever held what the verifier accepted; `pocnode audit` re-verifies)."""
        heads = await self.store.heads()
        for author, ids in (await self.store.chain_ids()).items():
            chain = self.verifier.chains[author]
            chain.ids = ids
            chain.head_ts = heads[author][2]
        for ev in await self.store.events_of_kind(KIND_KEY_ROTATE):
            new_key = check_key_rotate(parse_event(ev.raw).body, self.genesis.sig_alg)
            self.verifier.chains[ev.author].add_key(ev.seq + 1, new_key)
        for ev in await self.store.events_of_kind(KIND_NODE_KEYS):
            self._note_node_keys(ev.author, parse_event(ev.raw).body)
        for ev in await self.store.events_of_kind(KIND_SEALED):
            try:
                self._note_sealed(parse_event(ev.raw), restoring=True)
            except Exception:  # noqa: BLE001 - a bad message must not keep the node down
                log.exception("ignored a sealed event", extra={"fields": {
                    "author": ev.author, "seq": ev.seq}})
        for row in await self.store.directory():
            stored = await self.store.event(row.author, row.seq)
            if stored is not None:
                self._note_record(parse_event(stored.raw))
        for founder in self.genesis.founders:
            for endpoint in founder.endpoints:
                self.peers.learn(endpoint, member=founder.id, source="genesis")
        for endpoint in self.config.bootstrap:
            self.peers.learn(endpoint, member=None, source="config")
        self._summary = None

    # -- state views -----------------------------------------------------------------

    def heads(self) -> dict[str, tuple[int, bytes]]:
        return {a: (c.seq, c.ids[-1]) for a, c in self.verifier.chains.items() if c.ids}

    def summary(self) -> bytes:
        if self._summary is None:
            self._summary = summary_hash(self.heads())
        return self._summary

    def current_key(self, member: str) -> PublicKey | None:
        chain = self.verifier.chains.get(member)
        return chain.key_at(chain.seq + 1) if chain is not None else None

    def pin_for(self, member: str | None) -> bytes | None:
        return self.pins.get(member) if member else None

    # -- ingest ----------------------------------------------------------------------

    async def ingest(self, raws: Iterable[bytes], *, source: str | None = None) -> IngestResult:
        """Verify, commit durably, then apply; the one way events enter this node."""
        result = IngestResult()
        async with self._lock:
            now = now_ms()
            queue = deque(raws)
            stored: list[StoredEvent] = []
            proofs: list[tuple[str, int, bytes]] = []
            batch: dict[tuple[str, int], bytes] = {}
            while queue:
                raw = queue.popleft()
                try:
                    event = self.verifier.check(raw, now=now)
                except Duplicate:
                    result.duplicates += 1
                    continue
                except SequenceGap:
                    event = parse_event(raw)
                    if self.pending.add(event.author, event.seq, raw,
                                        self.verifier.chains[event.author].seq):
                        result.pending += 1
                    continue
                except Equivocation as exc:
                    held = batch.get((exc.author, exc.seq))
                    if held is None:
                        row = await self.store.event(exc.author, exc.seq)
                        held = row.raw if row else None
                    if held is not None:
                        proofs.append((exc.author, exc.seq, equivocation_proof(held, raw)))
                    result.equivocations += 1
                    log.warning("equivocation", extra={"fields": {
                        "author": exc.author, "seq": exc.seq, "source": source}})
                    continue
                except PocError as exc:
                    result.refused.append((exc.code, exc.message))
                    self.metrics.inc("pocnode_events_refused_total", code=exc.code)
                    log.warning("refused event", extra={"fields": {
                        "code": exc.code, "reason": exc.message[:200], "source": source}})
                    continue
                self.verifier.apply(event)
                result.accepted.append(event)
                batch[(event.author, event.seq)] = raw
                stored.append(StoredEvent(author=event.author, seq=event.seq, id=event.id,
                                          kind=event.kind, ts=event.ts, raw=raw,
                                          received_at=now))
                queue.extendleft(reversed(self.pending.take_ready(event.author, event.seq)))
            if stored:
                try:
                    await self.store.append_events(stored)
                except BaseException:
                    # Memory ran ahead of the disk: rebuild it from what the disk has.
                    self.verifier = Verifier(self.genesis)
                    await self.restore()
                    raise
            for author, seq, proof in proofs:
                if await self.store.add_proof(author, seq, proof, now):
                    self.metrics.inc("pocnode_equivocations_total")
        self.metrics.inc("pocnode_events_duplicate_total", result.duplicates)
        if result.accepted:
            newest: dict[str, int] = {}
            for event in result.accepted:
                newest[event.author] = max(newest.get(event.author, 0), event.seq)
            log.info("accepted events", extra={"fields": {
                "count": len(result.accepted), "source": source or "local",
                "heads": ",".join(f"{a}:{s}" for a, s in sorted(newest.items())[:50])}})
            self.metrics.inc("pocnode_events_accepted_total", len(result.accepted))
            self._summary = None
            for event in result.accepted:
                try:
                    self._note_event(event)
                except Exception:  # noqa: BLE001 - one event's side effect, not the batch's
                    log.exception("could not apply an accepted event's effects", extra={
                        "fields": {"author": event.author, "seq": event.seq,
                                   "kind": event.kind}})
            if self._erasure_due:
                await self.enforce_erasure()
            heads = {a: (c.seq, c.ids[-1]) for a in newest
                     if (c := self.verifier.chains[a]).ids}
            self._spawn(self._announce(heads, exclude=source))
        return result

    def _note_event(self, event: Event) -> None:
        if event.kind == KIND_NODE_KEYS:
            self._note_node_keys(event.author, event.body)
        elif event.kind == KIND_RECORD:
            self._note_record(event)
        elif event.kind == KIND_SEALED:
            self._note_sealed(event)

    def _note_node_keys(self, author: str, body: dict[str, Any]) -> None:
        self.pins[author] = body["tls"]
        if "hpke" in body:
            self.hpke_keys[author] = body["hpke"]["pk"]

    def _note_sealed(self, event: Event, restoring: bool = False) -> None:
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
        changed = self.consent.apply(event.author, event.seq, to, action)
        if not changed or restoring:
            if restoring and self.consent.mutual(other):
                self._want_bilateral(other)
            return
        if self.consent.mutual(other):
            log.info("consent is mutual", extra={"fields": {"member": other}})
            self._want_bilateral(other)
        else:
            log.info("consent ended: erasing bilateral values", extra={"fields": {
                "member": other}})
            self.need_bilateral.pop(other, None)
            self._erasure_due = True

    async def enforce_erasure(self) -> None:
        """Hold others' values only as the rules allow (§7.1, §7.3): members values of each
        author's current record, bilateral values of a current record under mutual consent.
        A rule applied after every change and at start, so nothing survives a missed
        withdrawal, a lost key or a crash in between. Our own values are never erased here:
        they are stored before our own record commits."""
        self._erasure_due = False
        current = {a: e.id for a, e in self.records.items() if a != self.member}
        current[self.member] = b"keep"  # marker; own rows are excluded below
        members_keep = dict(current)
        bilateral_keep = {a: i for a, i in current.items()
                          if a == self.member or self.consent.mutual(a)}
        await self.store.keep_only_disclosures("members", members_keep, never=self.member)
        await self.store.keep_only_disclosures("bilateral", bilateral_keep, never=self.member)

    def _want_bilateral(self, other: str) -> None:
        record = self.records.get(other)
        if record is not None and any("bilateral" in e.get("sd", {})
                                      for e in record.body["entries"]):
            self.need_bilateral[other] = record.id

    def _note_record(self, event: Event) -> None:
        previous = self.records.get(event.author)
        if previous is not None:
            self._forget_disclosure_need(previous.id)
        self.records[event.author] = event
        for endpoint in event.body.get("node", {}).get("endpoints", []):
            self.peers.learn(endpoint, member=event.author, source="record")
        if event.author != self.member and any(
                "members" in e.get("sd", {}) for e in event.body["entries"]):
            self.need_disclosures[event.id] = event.author
        if event.author != self.member:
            # A new record replaces the old one's values (§7.3); erasure enforces it.
            self._erasure_due = True
            if self.consent.mutual(event.author):
                self._want_bilateral(event.author)

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, kind: str, body: dict[str, Any],
                      disclosures: Iterable[Any] = ()) -> Event:
        """Sign our next event and ingest it like any other.

        One lock from numbering to storing: two publishers must never both sign the next
        sequence, or this node would equivocate against itself.
        """
        async with self._publishing:
            chain = self.verifier.chains[self.member]
            raw = build_event(self.key, fed=self.genesis.id, author=self.member,
                              seq=chain.seq + 1, prev=chain.head_id, kind=kind,
                              ts=max(now_ms(), chain.head_ts), body=body)
            disclosures = list(disclosures)
            if disclosures:
                # Disclosures first: keyed by the event id, known before the event commits,
                # so a crash between the two leaves at worst unused disclosures, never a
                # record whose values this node cannot disclose.
                event_id = parse_event(raw).id
                await self.store.add_disclosures(
                    (self.member, event_id, d.digest, d.entry, d.name, d.visibility, d.raw)
                    for d in disclosures)
            result = await self.ingest([raw])
        if not result.accepted:
            code, message = result.refused[0] if result.refused else ("internal", "not accepted")
            raise PocError(f"own event refused: {code}: {message}")
        return result.accepted[0]

    async def publish_record(self, plain: dict[str, Any]) -> Event:
        compiled = compile_record(plain, os.urandom)
        return await self.publish(KIND_RECORD, compiled.body, compiled.disclosures)

    async def rotate_key(self, reason: str | None = None) -> Event:
        """Replace the identity key: §3.4.2, signed by the old key, the new one valid from the
        next event on. Files first (new key saved beside the old), then the event, then the
        swap: a crash at any point leaves a key that matches the chain on disk."""
        from pocnode.keyfile import save_signing_key

        data_dir = self.config.data_dir
        current = data_dir / datadir.IDENTITY_KEY
        staged = data_dir / (datadir.IDENTITY_KEY + ".next")
        staged.unlink(missing_ok=True)
        new_key = SigningKey.generate(self.key.alg)
        save_signing_key(staged, new_key, self._passphrase)
        body: dict[str, Any] = {"key": new_key.public_key.to_wire()}
        if reason:
            body["reason"] = reason
        event = await self.publish(KIND_KEY_ROTATE, body)
        os.replace(current, data_dir / f"{datadir.IDENTITY_KEY}.old-{event.seq}")
        os.replace(staged, current)
        self.key = new_key
        self.client.key = new_key
        log.info("identity key rotated", extra={"fields": {
            "seq": event.seq, "new_key": new_key.public_key.ed25519.hex()[:16]}})
        return event

    async def ensure_node_keys(self) -> None:
        assert self.hpke is not None
        if (self.pins.get(self.member) != self.pin
                or self.hpke_keys.get(self.member) != self.hpke.public_bytes):
            await self.publish(KIND_NODE_KEYS, {"tls": self.pin, "hpke": {
                "suite": self.hpke.suite, "pk": self.hpke.public_bytes}})
            log.info("published node.keys", extra={"fields": {"pin": self.pin.hex()[:16]}})

    # -- consent (§7) ----------------------------------------------------------------------

    async def set_consent(self, member: str, action: str) -> Event:
        if member == self.member or member not in self.verifier.chains:
            raise PocError(f"{member} is not another member of this federation", path="member")
        to_public = self.hpke_keys.get(member)
        if to_public is None:
            raise PocError(f"no encryption key of {member} has reached this node yet (its "
                           f"node.keys event); try again once it has", path="member")
        assert self.hpke is not None
        try:
            body = sealed_body(suite=self.genesis.hpke_suite, fed=self.genesis.id,
                               author=self.member, to=member, action=action,
                               to_public=to_public, own_public=self.hpke.public_bytes)
        except (ValueError, PocError):
            if action != "withdraw":
                raise PocError(f"{member}'s encryption key is unusable; cannot seal an offer "
                               f"to it", path="member") from None
            # A counterpart must not be able to stop us withdrawing by publishing a broken
            # key: its box goes to a throwaway key; our own box records the withdrawal.
            body = sealed_body(suite=self.genesis.hpke_suite, fed=self.genesis.id,
                               author=self.member, to=member, action=action,
                               to_public=HpkeKey.generate(self.genesis.hpke_suite).public_bytes,
                               own_public=self.hpke.public_bytes)
        return await self.publish(KIND_SEALED, body)

    async def bilateral_for(self, ids: list[bytes], member: str) -> list[bytes]:
        """Our bilateral disclosures of the records asked for, sealed to ``member``."""
        viewer = Viewer.MEMBER if member in self.verifier.chains else Viewer.ANYONE
        if not may_see("bilateral", viewer, self.consent.mutual(member)):
            raise NoConsent(f"no mutual consent with {member}")
        public = self.hpke_keys.get(member)
        if public is None:
            raise NoConsent(f"no encryption key of {member} known")
        own = {e.id for e in (self.records.get(self.member),) if e is not None}
        out = []
        for event_id in ids:
            if event_id not in own:
                continue
            info = bilateral_info(self.genesis.id, self.member, member, event_id)
            for raw in await self.store.disclosures_for(event_id, ("bilateral",)):
                try:
                    out.append(seal(self.genesis.hpke_suite, public, raw, info))
                except (ValueError, PocError):
                    raise NoConsent(f"{member}'s encryption key is unusable") from None
        # Consent or the record may have changed while we read: decide again at the end.
        current = self.records.get(self.member)
        if not self.consent.mutual(member) or current is None or not own <= {current.id}:
            raise NoConsent(f"consent with {member} changed while answering")
        return out

    async def pull_bilateral(self) -> None:
        """Fetch counterparts' bilateral disclosures from their own nodes (§7.3)."""
        assert self.hpke is not None
        now = now_ms()
        for other, event_id in list(self.need_bilateral.items()):
            if not self.consent.mutual(other):
                self.need_bilateral.pop(other, None)
                continue
            for peer in [p for p in self.peers.peers.values() if p.member == other]:
                key = (event_id, "bilateral:" + peer.endpoint)
                if self._asked.get(key, (0, 0))[0] > now:
                    continue
                _, delay = self._asked.get(key, (0, DISCLOSURE_RETRY_MS // 16))
                self._asked[key] = (now + min(2 * delay, DISCLOSURE_RETRY_MAX_MS),
                                    min(2 * delay, DISCLOSURE_RETRY_MAX_MS))
                try:
                    answer = await self.client.call(
                        peer.endpoint, "/v1/peer/bilateral", {"events": [event_id]},
                        pin=self.pin_for(other), authenticate=True)
                except PocError as exc:
                    log.info("bilateral pull failed", extra={"fields": {
                        "member": other, "reason": exc.message[:200]}})
                    continue
                if await self._take_bilateral(other, event_id, answer.get("sealed")):
                    self.need_bilateral.pop(other, None)
                    self._asked.pop(key, None)
                    break

    async def _take_bilateral(self, other: str, event_id: bytes, sealed: Any) -> bool:
        record = self.records.get(other)
        if record is None or record.id != event_id or type(sealed) is not list:
            return False
        assert self.hpke is not None
        info = bilateral_info(self.genesis.id, other, self.member, event_id)
        rows = []
        for box in sealed[:256]:
            try:
                d = check_disclosure(record.body, self.hpke.open(box, info))
            except PocError as exc:
                log.warning("refused bilateral disclosure", extra={"fields": {
                    "member": other, "code": exc.code}})
                continue
            if d.visibility == "bilateral":
                rows.append((other, event_id, d.digest, d.entry, d.name, d.visibility, d.raw))
        if rows and self.consent.mutual(other) and self.records.get(other) is record:
            await self.store.add_disclosures(rows)
        return bool(rows)

    # -- answering peers -------------------------------------------------------------------

    def answer_summary(self, summary: bytes) -> dict[str, Any]:
        if summary == self.summary():
            return {"same": True}
        return {"heads": heads_to_wire(self.heads())}

    def wants_for(self, theirs: dict[str, tuple[int, bytes]]) -> list[tuple[str, int]]:
        ours = self.heads()
        return [(a, ours.get(a, (0, b""))[0] + 1) for a, (seq, _) in theirs.items()
                if a in self.verifier.chains and seq > ours.get(a, (0, b""))[0]]

    async def answer_exchange(self, events: list[bytes], want: list[tuple[str, int]],
                              proofs: list[bytes]) -> dict[str, Any]:
        result = await self.ingest(events)
        for proof in proofs:
            await self._take_proof(proof)
        out = await self._collect(want)
        return {"events": out, "accepted": len(result.accepted),
                "refused": len(result.refused)}

    async def _collect(self, ranges: Iterable[tuple[str, int]]) -> list[bytes]:
        """Events for the ranges, oldest first round-robin, within one message's budget.

        Round-robin takes the same depth from every author, so each author's query asks
        only for its share: reading every author's whole backlog to send one message would
        cost memory and time in proportion to the federation's history.
        """
        budget = self.config.exchange_budget_bytes
        limit = self.config.max_events_per_message
        due = [(a, f) for a, f in ranges
               if a in self.verifier.chains and f <= self.verifier.chains[a].seq]
        if not due:
            return []
        share = -(-limit // len(due))
        share_bytes = budget // len(due) + encoding.MAX_EVENT_BYTES
        batches = {author: await self.store.events_from(author, first, limit=share,
                                                        max_bytes=share_bytes)
                   for author, first in due}
        return interleave(batches, max_bytes=budget, max_events=limit)

    async def _take_proof(self, proof: bytes) -> None:
        try:
            author, seq = self.verifier.check_proof(proof)
        except PocError as exc:
            log.warning("refused proof", extra={"fields": {"code": exc.code}})
            return
        if await self.store.add_proof(author, seq, proof, now_ms()):
            self.metrics.inc("pocnode_equivocations_total")

    async def disclosures_for_member(self, ids: list[bytes], member: str) -> list[bytes]:
        """Members disclosures we hold for those records, within one answer's budget."""
        viewer = Viewer.MEMBER if member in self.verifier.chains else Viewer.ANYONE
        if not may_see("members", viewer, self.consent.mutual(member)):
            return []
        budget = self.config.max_body_bytes - 64 * 1024
        out: list[bytes] = []
        for event_id in ids:
            for raw in await self.store.disclosures_for(event_id, ("members",)):
                budget -= len(raw) + 8
                if budget < 0:
                    return out
                out.append(raw)
        return out

    # -- gossip ----------------------------------------------------------------------------

    async def gossip_round(self, endpoint: str, member: str | None) -> bool:
        """One push-pull exchange with a peer; True if there is more to exchange."""
        pin = self.pin_for(member)
        answer = await self.client.call(endpoint, "/v1/peer/summary",
                                        {"summary": self.summary()}, pin=pin)
        if answer.get("same") is True:
            self.metrics.inc("pocnode_gossip_rounds_total", outcome="same")
            await self._pull_disclosures(endpoint, member)
            return False
        theirs = heads_from_wire(answer.get("heads"), path="answer.heads")
        decided = plan(self.heads(), theirs)
        sending = await self._collect(decided.send + tuple(
            (a, theirs[a][0]) for a in decided.forks))
        answer = await self.client.call(endpoint, "/v1/peer/exchange", {
            "events": sending, "want": [[a, s] for a, s in decided.want]}, pin=pin)
        incoming = answer.get("events")
        if type(incoming) is not list or not all(type(e) is bytes for e in incoming):
            raise PeerError("answer.events must be a list of bin", path=endpoint)
        result = await self.ingest(incoming, source=endpoint)
        self.metrics.inc("pocnode_gossip_rounds_total", outcome="exchanged")
        await self._pull_disclosures(endpoint, member)
        # Go again at once while either side had more than one message could hold. "Nothing
        # accepted" is not "nothing left": the peer may have pushed the same events to us
        # while we asked for them.
        return (bool(result.accepted) or self._full(incoming) or self._full(sending))

    def _full(self, events: list[bytes]) -> bool:
        return (len(events) >= self.config.max_events_per_message
                or sum(map(len, events)) >= self.config.exchange_budget_bytes - 64 * 1024)

    async def _pull_disclosures(self, endpoint: str, member: str | None) -> None:
        pin = self.pin_for(member)
        if pin is None or not self.need_disclosures:
            return
        now = now_ms()
        ids = [i for i in self.need_disclosures
               if self._asked.get((i, endpoint), (0, 0))[0] <= now][:DISCLOSURE_BATCH]
        if not ids:
            return
        for event_id in ids:
            # Ask this peer again after 30 s, then 1, 2, 4 ... minutes, at most hourly: the
            # author's node may be the only holder, and it may be down for a long time.
            _, delay = self._asked.get((event_id, endpoint), (0, DISCLOSURE_RETRY_MS // 2))
            delay = min(2 * delay, DISCLOSURE_RETRY_MAX_MS)
            self._asked[(event_id, endpoint)] = (now + delay, delay)
        answer = await self.client.call(endpoint, "/v1/peer/disclosures", {"events": ids},
                                        pin=pin, authenticate=True)
        raws = answer.get("disclosures")
        if type(raws) is not list:
            raise PeerError("answer.disclosures must be a list", path=endpoint)
        # Index the digests we need: a disclosure is hashed once and looked up, so a hostile
        # answer costs a hash per item, not a decode per item and record (§6.4).
        by_id = {e.id: e for e in self.records.values()}
        wanted: dict[bytes, Event] = {}
        for event_id in ids:
            event = by_id.get(event_id)
            if event is None:
                continue
            for entry in event.body["entries"]:
                for digest in entry.get("sd", {}).get("members", ()):
                    wanted[digest] = event
        rows = []
        seen: set[tuple[bytes, str, str]] = set()
        for raw in raws[: DISCLOSURE_BATCH * 64]:
            if type(raw) is not bytes:
                continue
            event = wanted.get(hashlib.sha256(raw).digest())
            if event is None:
                continue
            try:
                d = check_disclosure(event.body, raw)
            except PocError:
                continue
            key = (event.id, d.entry, d.name)
            if d.visibility != "members" or key in seen:
                continue  # §6.4: the first value for a field is the one kept
            seen.add(key)
            rows.append((event.author, event.id, d.digest, d.entry, d.name, d.visibility,
                         d.raw))
        if rows:
            await self.store.add_disclosures(rows)
        for event_id in ids:
            event = by_id.get(event_id)
            if event is None or await self._has_all_members_disclosures(event):
                self._forget_disclosure_need(event_id)

    def _forget_disclosure_need(self, event_id: bytes) -> None:
        self.need_disclosures.pop(event_id, None)
        for key in [k for k in self._asked if k[0] == event_id]:
            del self._asked[key]

    async def _has_all_members_disclosures(self, event: Event) -> bool:
        wanted = sum(len(e.get("sd", {}).get("members", ())) for e in event.body["entries"])
        held = await self.store.disclosures_for(event.id, ("members",))
        return len(held) >= wanted

    async def _announce(self, heads: dict[str, tuple[int, bytes]], exclude: str | None) -> None:
        """Tell a few peers our new heads (not the events: they pull what they lack)."""
        peers = self.peers.choose(now_ms(), self.rng, k=self.config.fanout,
                                  exclude=[exclude] if exclude else [])
        await asyncio.gather(*(self._announce_to(p.endpoint, p.member, heads) for p in peers))

    async def _announce_to(self, endpoint: str, member: str | None,
                           heads: dict[str, tuple[int, bytes]]) -> None:
        pin = self.pin_for(member)
        try:
            answer = await self.client.call(endpoint, "/v1/peer/announce",
                                            {"heads": heads_to_wire(heads)}, pin=pin)
            want = answer.get("want")
            if type(want) is list and want:
                ranges = [(w[0], w[1]) for w in want[:1024]
                          if type(w) is list and len(w) == 2 and type(w[0]) is str
                          and type(w[1]) is int]
                events = await self._collect(ranges)
                if events:
                    await self.client.call(endpoint, "/v1/peer/exchange",
                                           {"events": events, "want": []}, pin=pin)
            self.peers.success(endpoint, now_ms())
        except PocError as exc:
            self.peers.failure(endpoint, now_ms(), self.rng, exc.message)

    async def gossip_loop(self) -> None:
        interval = self.config.gossip_interval_ms / 1000
        first = True  # a node that starts syncs at once; then every interval
        while not self._stop.is_set():
            if not first:
                # Jitter keeps nodes that started together from gossiping in lockstep.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(),
                                           interval * (0.75 + 0.5 * self.rng.random()))
            first = False
            if self._stop.is_set():
                return
            if self.store.wal_dirty and await self.store.checkpoint():
                log.info("erased values left the write-ahead log")
            if self.need_bilateral:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.pull_bilateral(),
                                           timeout=self.config.request_timeout_s)
            for _ in range(64):  # catch-up rounds back to back, bounded
                chosen = self.peers.choose(now_ms(), self.rng)
                if not chosen:
                    break
                peer = chosen[0]
                try:
                    more = await self.gossip_round(peer.endpoint, peer.member)
                    self.peers.success(peer.endpoint, now_ms())
                except PocError as exc:
                    self.peers.failure(peer.endpoint, now_ms(), self.rng, exc.message)
                    self.metrics.inc("pocnode_gossip_rounds_total", outcome="failed")
                    log.info("gossip round failed", extra={"fields": {
                        "peer": peer.endpoint, "reason": exc.message[:200]}})
                    break
                if not more or self._stop.is_set():
                    break

    # -- lifecycle -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _register_gauges(self) -> None:
        self.metrics.gauge("pocnode_events_pending", lambda: len(self.pending))
        self.metrics.gauge("pocnode_authors",
                           lambda: sum(1 for c in self.verifier.chains.values() if c.ids))
        self.metrics.gauge("pocnode_events",
                           lambda: sum(c.seq for c in self.verifier.chains.values()))
        self.metrics.gauge("pocnode_peers", lambda: len(self.peers.peers))

    async def run(self) -> None:
        from pocnode.net.operator_api import OperatorApi
        from pocnode.net.peer_server import PeerServer

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        peer_server = PeerServer(self)
        operator = OperatorApi(self, datadir.read_token(self.config.data_dir))
        await self.client.start()
        try:
            self.peer_port = await peer_server.start(
                self.config.peer_host, self.config.peer_port,
                tls.server_context(self.config.data_dir, self._passphrase))
            self.operator_port = await operator.start(self.config.operator_host,
                                                      self.config.operator_port)
            await self.ensure_node_keys()
            self._write_runfile()
            log.info("node running", extra={"fields": {
                "member": self.member, "version": __version__,
                "federation": self.genesis.id.hex()[:16], "peer_port": self.peer_port,
                "operator_port": self.operator_port, "pid": os.getpid()}})
            gossip = asyncio.create_task(self.gossip_loop(), name="gossip")
            await self._stop.wait()
            log.info("stopping")
            gossip.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gossip
        finally:
            await operator.stop()
            await peer_server.stop()
            for task in list(self._tasks):
                task.cancel()
            async with self._lock:  # let an ingest in flight commit before closing
                await self.store.close()
            await self.client.close()
            self._runfile().unlink(missing_ok=True)
            log.info("stopped")

    def stop(self) -> None:
        self._stop.set()

    def _runfile(self) -> Path:
        return self.config.data_dir / "run.json"

    def _write_runfile(self) -> None:
        import json

        tmp = self._runfile().with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "peer_port": self.peer_port,
                                   "operator_port": self.operator_port,
                                   "member": self.member, "started_at": self.started_at}))
        os.replace(tmp, self._runfile())

    # -- views for the operator API ----------------------------------------------------------

    async def view_record(self, member: str) -> dict[str, Any] | None:
        event = self.records.get(member)
        if event is None:
            return None
        visibilities = (("members", "bilateral")
                        if member == self.member or self.consent.mutual(member)
                        else ("members",))
        raws = await self.store.disclosures_for(event.id, visibilities)
        opened = []
        for raw in raws:
            with contextlib.suppress(PocError):
                opened.append(check_disclosure(event.body, raw))
        view = reveal(event.body, opened)
        return {"member": member, "seq": event.seq, "event_id": event.id.hex(),
                "ts": event.ts, "record": view}

    def status(self) -> dict[str, Any]:
        return {
            "member": self.member, "version": __version__, "pid": os.getpid(),
            "federation_id": self.genesis.id.hex(), "federation": self.genesis.name,
            "uptime_s": (now_ms() - self.started_at) // 1000,
            "events": sum(c.seq for c in self.verifier.chains.values()),
            "authors": sum(1 for c in self.verifier.chains.values() if c.ids),
            "members": len(self.verifier.chains), "peers": len(self.peers.peers),
            "pending": len(self.pending), "summary": self.summary().hex(),
            "peer_port": self.peer_port, "tls_pin": self.pin.hex(),
        }


def _load_or_create_hpke(data_dir: Path, suite: str, passphrase: bytes) -> HpkeKey:
    """The node's HPKE key for its federation's suite: created at first start (the suite
    is only known once a genesis is installed), encrypted like the identity key."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    from pocnode.keyfile import load_private_parts, save_private_parts

    path = data_dir / HPKE_KEY_FILE
    if not path.exists():
        key = HpkeKey.generate(suite)
        save_private_parts(path, key.private_parts, passphrase)
        return key
    parts = load_private_parts(path, passphrase)
    x = next((p for p in parts if isinstance(p, x25519.X25519PrivateKey)), None)
    ml = next((p for p in parts if isinstance(p, mlkem.MLKEM768PrivateKey)), None)
    if x is None or (suite == "mlkem768-x25519") != (ml is not None):
        raise datadir.DataDirError(f"{HPKE_KEY_FILE} does not hold a {suite} key",
                                   path=str(path))
    return HpkeKey(suite, x, ml)


HPKE_KEY_FILE = "hpke.key"


async def run_node(data_dir: Path) -> None:
    node = await Node.open(data_dir)
    await node.run()


__all__ = ["IngestResult", "Node", "run_node"]
