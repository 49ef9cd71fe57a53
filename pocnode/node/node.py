"""The daemon: an adapter that feeds the engine and carries out its effects.

Every protocol decision is :class:`pocnode.core.engine.Engine`'s. This module opens
the data directory, the database and the keys, restores the engine from the store,
runs the servers and a timer, and carries out each effect the engine's sequences
yield: calls with aiohttp, reads and commits with aiosqlite, key files on disk. It
decides nothing about the protocol.

Ingest is serialised by one lock and shielded from cancellation: a peer that drops
its connection while its events are being stored cancels its request, never the
commit, and the engine applies a batch only after the commit returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import random
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

from pocnode import __version__
from pocnode.core import requests
from pocnode.core.consent import HpkeKey
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
    Note,
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
)
from pocnode.core.errors import (
    InvalidRecord,
    PocError,
    StoreError,
    UnknownAuthor,
)
from pocnode.core.events import KIND_KEY_ROTATE
from pocnode.core.genesis import Genesis
from pocnode.core.keys import PublicKey, SigningKey
from pocnode.keyfile import load_private_parts, save_private_parts, write_private_file
from pocnode.net.guard import GuardLimits
from pocnode.net.operator_api import OperatorApi
from pocnode.net.peer_client import PeerClient
from pocnode.net.peer_server import PeerServer, PeerServerConfig
from pocnode.node import datadir, identity, memory, tls
from pocnode.node.alerts import Alerter
from pocnode.node.config import Config, ConfigError, load_config
from pocnode.node.logs import RefusalLog, setup_logging
from pocnode.node.metrics import NodeMetrics, counter_items
from pocnode.node.verify import VerifyPool
from pocnode.store import PeerRow, Store, StoredEvent
from pocnode.store.bundle_source import bundle_chunks

log = logging.getLogger("pocnode.node")
HPKE_KEY_FILE = "hpke.key"
APPLICATION_FILE = "application.bin"   # an applicant's own signed application (§5.6)
RUN_FILE = "run.json"
# How often the node looks at its disk and saves its peers' health.
DISK_CHECK_S = 10.0
PEER_SAVE_S = 300.0
# A bundle streams to its reader in pieces of this size (each a thread hop to SQLite).
BUNDLE_BATCH_BYTES = 256 * 1024


def wall_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One running node: the engine, the store, the servers and the timer."""

    def __init__(self, *, config: Config, genesis: Genesis, engine: Engine, store: Store,
                 passphrase: bytes, token: str) -> None:
        self.config = config
        self.genesis = genesis
        self.engine = engine
        self.store = store
        self._passphrase = passphrase
        self._token = token
        self.fed = genesis.id
        self.member = config.member
        self.pin = engine.pin or b""
        self._ingest_lock = asyncio.Lock()
        self._verifiers = VerifyPool()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.refusals = RefusalLog(logging.getLogger("pocnode.peer"))
        self.net_counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.client = PeerClient(fed=genesis.id, member=config.member, key=self._key,
                                 now_ms=wall_ms, request_timeout_s=config.request_timeout_s,
                                 connect_timeout_s=config.connect_timeout_s,
                                 max_response_bytes=config.max_body_bytes)
        self.peer_server = PeerServer(self, PeerServerConfig(
            max_body_bytes=config.max_body_bytes, rate=config.peer_rate,
            burst=config.peer_burst, guard=GuardLimits(
                max_total=config.max_connections,
                max_per_prefix=config.max_connections_per_ip,
                max_per_member=config.max_connections_per_ip,
                handshake_timeout_s=3 * config.connect_timeout_s,
                request_deadline_s=2 * config.request_timeout_s,
                write_deadline_s=2 * config.request_timeout_s)))
        self.alerter = Alerter(config)  # §12.5: the operator's alerts
        self.metrics = NodeMetrics(
            [counter_items(engine.counters), counter_items(self.net_counters),
             self._guard_counters, counter_items(self.alerter.counters)],
            {"pocnode_events_pending": lambda: len(engine.pending),
             "pocnode_authors": engine.authors_held,
             "pocnode_events": engine.events_held,
             "pocnode_peers": lambda: len(engine.peers),
             "pocnode_peer_connections": lambda: len(self.peer_server.policy.live),
             "pocnode_health": self._health_gauge})
        self.peer_port = 0
        self.operator_port = 0
        self.started_at = wall_ms()

    def _key(self) -> SigningKey:
        assert self.engine.key is not None
        return self.engine.key

    # -- opening ---------------------------------------------------------------------

    @classmethod
    async def open(cls, data_dir: Path) -> Node:
        config = load_config(data_dir)
        setup_logging(config.log_format, config.log_level)
        passphrase = datadir.read_passphrase(data_dir, config.passphrase_file)
        genesis = datadir.load_genesis(data_dir)
        applicant = (data_dir / APPLICATION_FILE).exists()
        if config.member not in genesis.members and not applicant:
            raise datadir.DataDirError(
                f"{config.member} is not a member of this federation: a state joining after "
                f"the genesis applies first (`pocnode apply`)", path=str(data_dir))
        token = datadir.read_token(data_dir)
        store = await Store.open(config.db_path, federation_id=genesis.id, member=config.member)
        try:
            hpke = _load_or_create_hpke(data_dir, genesis.hpke_suite, passphrase)
            engine = Engine(genesis=genesis, member=config.member, key=None,  # type: ignore[arg-type]
                            config=engine_config(config),
                            rng=random.Random(os.urandom(16)),  # noqa: S311 - not secrets
                            random_bytes=os.urandom, hpke=hpke, pin=tls.load_pin(data_dir),
                            now=wall_ms())
            node = cls(config=config, genesis=genesis, engine=engine, store=store,
                       passphrase=passphrase, token=token)
            try:
                engine.requests.configure(
                    alerts_per_member_hour=config.alerts_per_member_hour,
                    schedule=config.ping_schedule, targets=config.ping_targets,
                    domain=config.ping_domain)
            except PocError as exc:
                raise ConfigError(exc.message, path=f"{config.data_dir}/config.toml: "
                                                    f"[ping] schedule") from None
            await node._restore()
            current = engine.current_key(config.member)
            if current is None:  # an applicant: its key is the one it applied with
                engine.key = datadir.load_identity(data_dir, passphrase)
                log.info("running as an applicant: syncing, waiting to be admitted",
                         extra={"fields": {"member": config.member}})
            else:
                rotations = await store.events_of_kind(KIND_KEY_ROTATE)
                last = max((e.seq for e in rotations if e.author == config.member),
                           default=None)
                recovered = identity.recover(data_dir, passphrase, current, last,
                                             allow_other=True)
                if recovered.action:
                    log.warning(recovered.action, extra={"fields": {"member": config.member}})
                engine.key = recovered.key
        except BaseException:
            await store.close()  # else the process lingers, and nothing restarts it
            raise
        return node

    async def _restore(self) -> None:
        await self.run_steps(self.engine.restore(wall_ms(), config_peers=self.config.bootstrap))

    # -- carrying out effects ----------------------------------------------------------

    async def run_steps(self, steps: Generator[Any, Any, Any]) -> Any:
        """Drive one of the engine's sequences: carry out each effect it yields and send
        the result back, or throw the failure in (the engine decides what a failure
        means)."""
        send, value = True, None
        try:
            while True:
                try:
                    effect = steps.send(value) if send else steps.throw(_error(value))
                except StopIteration as stop:
                    return stop.value
                finally:
                    self._drain_notes()
                try:
                    value, send = await self._carry_out(effect), True
                except PocError as exc:
                    value, send = exc, False
        finally:
            steps.close()

    async def _carry_out(self, effect: Any) -> Any:
        store = self.store
        match effect:
            case Now():
                return wall_ms()
            case Call(peer=peer, route=route, body=body, pin=pin, authenticate=auth,
                      skew_ms=skew):
                return await self.client.call(peer.endpoint, route, body, pin=pin,
                                              authenticate=auth, skew_ms=skew)
            case Ingest(raws=raws, proofs=proofs, source=source):
                # Shielded: the caller (a peer's request) may be cancelled; the commit not.
                return await asyncio.shield(self._locked(
                    lambda: self.engine.ingest(raws, source=source, now=wall_ms(),
                                               proofs=proofs)))
            case VerifySignatures(jobs=jobs):
                return await self._verifiers.verify(jobs)
            case UnderLock(sequence=sequence):
                return await asyncio.shield(self._locked(lambda: sequence))
            case Publish(kind=kind, body=body, disclosures=rows):
                return await asyncio.shield(self._locked(
                    lambda: self.engine.publish(kind, body, wall_ms(), rows)))
            case Commit(events=events, received_at=at, disclosures=rows):
                try:
                    await store.append_events(
                        [StoredEvent(author=e.author, seq=e.seq, id=e.id, kind=e.kind, ts=e.ts,
                                     raw=e.raw, received_at=at) for e in events], rows)
                except StoreError as exc:
                    if self.engine.disk_error is None:  # once per episode, not per batch
                        log.error("could not store events", extra={"fields": {
                            "reason": exc.message[:300], "path": exc.path or ""}})
                    self.engine.disk_error = exc.message[:200]
                    raise
                if self.engine.disk_error is not None:
                    log.warning("storing events again", extra={"fields": {
                        "after": self.engine.disk_error}})
                    self.engine.disk_error = None
                return None
            case ReadEvents(parts=parts):
                return await store.events_for(parts)
            case ReadEvent(author=author, seq=seq):
                stored = await store.event(author, seq)
                return stored.raw if stored is not None else None
            case ReadChain(author=author, upto=upto):
                return await store.chain_raws(author, upto)
            case Freeze(author=author, seq=seq, proof=proof, found_at=at):
                await store.freeze(author, seq, proof, at)
                return None
            case Cut(author=author, seq=seq):
                await store.cut(author, seq)
                return None
            case StoreProof(author=author, seq=seq, proof=proof, found_at=at):
                await store.add_proof(author, seq, proof, at)
                return None
            case ReadProof(author=author, seq=seq):
                return await store.proof(author, seq)
            case StoreDisclosures(rows=rows):
                await store.add_disclosures(
                    (r.author, r.event_id, r.digest, r.entry, r.field, r.visibility, r.raw)
                    for r in rows)
                return None
            case EraseDisclosures(groups=groups):
                await store.erase_disclosures(groups)
                return None
            case ReadDisclosures(event_id=event_id, visibilities=vis):
                return await store.disclosures_for(event_id, vis)
            case ReadStored(what=what, kinds=kinds):
                return await self._read_stored(what, kinds)
            case Spawn(sequence=sequence, name=name):
                self._spawn(sequence, name)
                return None
            case StageIdentity(key=key):
                # A memory-hard KDF takes a quarter of a second: not on the event loop.
                await asyncio.to_thread(identity.stage, self.config.data_dir, key,
                                        self._passphrase)
                return None
            case SwapIdentity(seq=seq):
                identity.swap(self.config.data_dir, seq)
                return None
            case requests.Alert():
                # Runs in the alert's own task: bounded per channel, never raised.
                await self.alerter.fire(effect)
                return None
        raise PocError(f"unknown effect {type(effect).__name__}")

    async def _read_stored(self, what: str, kinds: tuple[str, ...]) -> Any:
        store = self.store
        if what == "kinds":
            return [e.raw for e in await store.events_of_kinds(kinds)]
        if what == "kinds_received":
            return [(e.raw, e.received_at) for e in await store.events_of_kinds(kinds)]
        if what == "heads":
            return await store.heads()
        if what == "chain_ids":
            return await store.chain_ids()
        if what == "records":
            out = []
            for row in await store.directory():
                record = await store.event(row.author, row.seq)
                if record is not None:
                    out.append(record.raw)
            return out
        if what == "disclosure_index":
            return await store.disclosure_index()
        if what == "proofs":
            return [(a, s) for a, s, _, _ in await store.proofs()]
        if what == "peer_health":
            return [(r.member, r.endpoint, r.failures, r.next_try, r.last_contact,
                     r.last_error) for r in await store.peer_health()]
        raise PocError(f"unknown store read {what!r}")

    async def _locked(self, make: Any) -> Any:
        async with self._ingest_lock:
            return await self.run_steps(make())

    def _spawn(self, sequence: Generator[Any, Any, Any], name: str) -> None:
        if len(self._tasks) >= self.engine.config.max_spawned:
            sequence.close()
            self.engine.dropped(name)
            return
        task = asyncio.create_task(self._run_quietly(sequence, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_quietly(self, sequence: Generator[Any, Any, Any], name: str) -> None:
        try:
            await self.run_steps(sequence)
        except asyncio.CancelledError:
            raise
        except StoreError:
            pass  # logged once per episode where the write failed
        except PocError as exc:
            log.info(f"{name} stopped", extra={"fields": {"reason": exc.message[:200]}})
        except Exception:
            log.exception(f"{name} failed (a bug)")

    def _drain_notes(self) -> None:
        notes = self.engine.notes
        while notes:
            note: Note = notes.popleft()
            fields = dict(note.fields)
            if note.refusal is not None:
                self.refusals.refused(note.refusal, note.message, **fields)
                continue
            logging.getLogger("pocnode.engine").log(
                logging.getLevelName(note.level.upper()), note.message,
                extra={"fields": fields})

    # -- the timer -------------------------------------------------------------------------

    async def _timer(self) -> None:
        next_disk = 0.0
        next_save = time.monotonic() + PEER_SAVE_S
        while not self._stop.is_set():
            now = wall_ms()
            for name, sequence in self.engine.due(now):
                self._spawn(sequence, name)
            mono = time.monotonic()
            if mono >= next_disk:
                next_disk = mono + DISK_CHECK_S
                self._check_disk()
                memory.trim()   # what a burst of connections left free goes back
                if self.store.wal_dirty and await self.store.checkpoint():
                    log.info("erased values left the write-ahead log")
                self.refusals.flush()
            if mono >= next_save:
                next_save = mono + PEER_SAVE_S
                await self._save_peers()
            wait_ms = max(TIMER_MIN_MS, min(TIMER_MAX_MS, self.engine.next_wakeup - wall_ms()))
            wait = wait_ms / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    def _check_disk(self) -> None:
        try:
            st = os.statvfs(self.config.data_dir)
            self.engine.disk_free = st.f_bavail * st.f_frsize
        except OSError:
            self.engine.disk_free = None

    async def _save_peers(self) -> None:
        rows = [PeerRow(member=m, endpoint=e, failures=h.failures, next_try=h.next_try,
                        last_contact=h.last_contact, last_error=h.last_error)
                for (m, e), h in self.engine.peers.health.items()]
        with contextlib.suppress(StoreError):
            await self.store.save_peer_health(rows)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        operator = OperatorApi(self, self._token)
        await self.client.start()
        try:
            self.peer_port = await _bind("[peer] listen_port", self.config.peer_port,
                                         self.peer_server.start(
                                             self.config.peer_host, self.config.peer_port,
                                             tls.server_context(self.config.data_dir,
                                                                self._passphrase)))
            self.operator_port = await _bind("[operator] listen_port", self.config.operator_port,
                                             operator.start(self.config.operator_host,
                                                            self.config.operator_port))
            message = self.engine.node_keys_message()
            if message is not None:
                await self.run_steps(_publish(message))
                log.info("published node.keys", extra={"fields": {"pin": self.pin.hex()[:16]}})
            self._write_runfile()
            log.info("node running", extra={"fields": {
                "member": self.member, "version": __version__,
                "federation": self.genesis.id.hex()[:16], "peer_port": self.peer_port,
                "operator_port": self.operator_port, "pid": os.getpid()}})
            timer = asyncio.create_task(self._timer(), name="timer")
            await self._stop.wait()
            log.info("stopping")
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        finally:
            await operator.stop()
            await self.peer_server.stop()
            for task in list(self._tasks):
                task.cancel()
            async with self._ingest_lock:  # let an ingest in flight commit before closing
                await self._save_peers()
                self.refusals.flush(force=True)
                await self.store.close()
            await self.client.close()
            self._verifiers.close()
            self._runfile().unlink(missing_ok=True)
            log.info("stopped")

    def stop(self) -> None:
        self._stop.set()

    def _runfile(self) -> Path:
        return self.config.data_dir / RUN_FILE

    def _write_runfile(self) -> None:
        tmp = self._runfile().with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "peer_port": self.peer_port,
                                   "operator_port": self.operator_port,
                                   "member": self.member, "started_at": self.started_at}))
        os.replace(tmp, self._runfile())

    # -- PeerService (net/services.py) -----------------------------------------------------------

    def current_key(self, member: str) -> PublicKey | None:
        return self.engine.current_key(member)

    def now_ms(self) -> int:
        return wall_ms()

    def summary(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.engine.answer_summary(msg, wall_ms())

    def announce(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.engine.answer_announce(msg, wall_ms())

    async def exchange(self, msg: dict[str, Any], member: str | None,
                       remote: str) -> dict[str, Any]:
        return await self.run_steps(self.engine.answer_exchange(msg, member, remote))

    async def disclosures(self, msg: dict[str, Any], member: str) -> dict[str, Any]:
        return await self.run_steps(self.engine.answer_disclosures(msg, member))

    async def bilateral(self, msg: dict[str, Any], member: str) -> dict[str, Any]:
        return await self.run_steps(self.engine.answer_bilateral(msg, member))

    def public_record(self, member: str) -> dict[str, Any] | None:
        return self.engine.public_record(member)

    async def checkpoint_events(self) -> list[bytes]:
        """§13.8: the latest checkpoint event in force of each author."""
        out = []
        for author, cp in sorted(self.engine.tlog.checkpoints.items()):
            stored = await self.store.event(author, cp.seq)
            if stored is not None and stored.id == cp.event_id:
                out.append(stored.raw)
        return out

    async def bundle_chunks(self, author: str | None) -> AsyncIterator[bytes]:
        """§13.6: an export bundle from a read-only snapshot of the database, read in a
        thread a batch at a time (the event loop never waits on the disk)."""
        chunks = bundle_chunks(self.config.db_path, genesis=self.genesis.raw, fed=self.fed,
                               created=wall_ms(), source=self.member, author=author)
        try:
            while batch := await asyncio.to_thread(_take, chunks, BUNDLE_BATCH_BYTES):
                yield batch
        finally:
            chunks.close()

    def refused(self, code: str, message: str, **fields: Any) -> None:
        self.refusals.refused(code, message, **fields)

    def count(self, name: str, value: int = 1, **labels: str) -> None:
        self.net_counters[(name, tuple(sorted(labels.items())))] += value

    def _guard_counters(self) -> list[tuple[tuple[str, tuple[tuple[str, str], ...]], float]]:
        p = self.peer_server.policy
        return [(("pocnode_peer_wire_bytes_in_total", ()), p.bytes_in),
                (("pocnode_peer_wire_bytes_out_total", ()), p.bytes_out),
                (("pocnode_log_refusals_suppressed_total", ()),
                 sum(self.refusals._counted.values()))]

    # -- OperatorService (net/services.py) -------------------------------------------------------

    def is_member(self, member: str) -> bool:
        return self.engine.is_member(member)

    def health(self) -> dict[str, Any]:
        self._check_disk()
        h = self.engine.health(wall_ms())
        return {"status": h.status, "reasons": h.reasons, "checks": h.checks}

    def _health_gauge(self) -> float:
        return {"ok": 0, "degraded": 1, "failing": 2}[self.engine.health(wall_ms()).status]

    def status(self) -> dict[str, Any]:
        e = self.engine
        return {
            "member": self.member, "version": __version__, "pid": os.getpid(),
            "federation_id": self.genesis.id.hex(), "federation": self.genesis.name,
            "uptime_s": (wall_ms() - self.started_at) // 1000,
            "events": e.events_held(), "authors": e.authors_held(),
            "members": len(e.members()), "peers": len(e.peers),
            "pending": len(e.pending), "summary": e.summary().hex(),
            "peer_port": self.peer_port, "tls_pin": self.pin.hex(),
            "health": self.health(), "equivocators": sorted(e.frozen),
            "role": e.role(self.member) or "applicant", "exercise": self.genesis.exercise,
            "proposals_awaiting_vote": [p.id.hex() for p in e.gov.awaiting(self.member)],
            "observers": e.observers(),
            "requests_unacknowledged": e.requests.unacknowledged(),
        }

    def peers(self) -> list[dict[str, Any]]:
        e = self.engine
        out = []
        for p in e.peers.all():
            h = e.peers.health_of(p.key)
            out.append({"endpoint": p.endpoint, "member": p.member, "source": p.source,
                        "last_contact": h.last_contact, "failures": h.failures,
                        "last_error": h.last_error, "pinned": e.pin_for(p.member) is not None})
        return out

    def directory(self) -> list[dict[str, Any]]:
        e = self.engine
        out = []
        for member in e.members():
            record = e.records.get(member)
            out.append({
                "member": member, "name": e.member_name(member),
                "events": e.verifier.head(member)[0],
                "record_seq": record.seq if record else None,
                "record_ts": record.ts if record else None,
                "entries": len(record.body["entries"]) if record else 0,
                "domains": sorted({x["domain"] for x in record.body["entries"]})
                if record else [],
                "equivocated": member in e.frozen,
                "withdrawn": member in e.gov.withdrawals})
        return out

    async def record_view(self, member: str) -> dict[str, Any] | None:
        return await self.run_steps(self.engine.record_view(member))

    async def publish_record(self, plain: Any) -> dict[str, Any]:
        if not isinstance(plain, dict):
            raise InvalidRecord("the record must be a JSON object", path="record")
        event = await self.run_steps(_publish(self.engine.compile_record(plain)))
        log.info("record published", extra={"fields": {"seq": event.seq,
                                                        "id": event.id.hex()[:16]}})
        return {"member": event.author, "seq": event.seq, "event_id": event.id, "ts": event.ts}

    async def events(self, member: str, first: int, limit: int) -> dict[str, Any]:
        head = self.engine.verifier.head(member)[0]
        out = []
        for seq in range(first, min(head, first + limit - 1) + 1):
            stored = await self.store.event(member, seq)
            if stored is not None:
                out.append({"seq": stored.seq, "id": stored.id, "kind": stored.kind,
                            "ts": stored.ts, "received_at": stored.received_at,
                            "bytes": len(stored.raw)})
        return {"member": member, "head": head, "events": out,
                "frozen_at": self.engine.frozen.get(member)}

    async def rotate_key(self, reason: str | None) -> dict[str, Any]:
        new_key = SigningKey.generate(self._key().alg)
        event = await self.run_steps(self.engine.rotate_key(new_key, reason))
        return {"member": event.author, "seq": event.seq, "event_id": event.id,
                "new_key": new_key.public_key.to_wire()}

    def consents(self) -> list[dict[str, Any]]:
        e = self.engine
        rows = e.consent.table()
        for row in rows:
            row["we_offered_at"] = e.consent_at.get((self.member, row["member"]))
            row["they_offered_at"] = e.consent_at.get((row["member"], self.member))
            row["awaiting_our_answer"] = row["they_offer"] and not row["we_offer"]
        return rows

    async def set_consent(self, member: str, action: str) -> dict[str, Any]:
        event = await self.run_steps(_publish(self.engine.consent_message(member, action)))
        return {"member": member, "action": action, "seq": event.seq, "event_id": event.id,
                "mutual": self.engine.consent.mutual(member)}

    async def proofs(self) -> list[dict[str, Any]]:
        return [{"author": a, "seq": s, "proof": p, "found_at": t}
                for a, s, p, t in await self.store.proofs()]

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def proposals(self) -> list[dict[str, Any]]:
        e = self.engine
        now = wall_ms()
        return [e.proposal_view(e.gov.proposals[i], now) for i in reversed(e.gov.order)]

    def proposal(self, proposal_id: bytes) -> dict[str, Any] | None:
        p = self.engine.gov.proposals.get(proposal_id)
        return self.engine.proposal_view(p, wall_ms()) if p is not None else None

    async def propose(self, decision: str, params: dict[str, Any]) -> dict[str, Any]:
        event = await self.run_steps(_publish(self.engine.propose_message(decision, **params)))
        return {"id": event.id, "seq": event.seq, "decision": decision}

    async def vote(self, proposal_id: bytes, vote: str) -> dict[str, Any]:
        event = await self.run_steps(_publish(self.engine.vote_message(proposal_id, vote)))
        view = self.proposal(proposal_id)
        return {"id": proposal_id, "vote": vote, "seq": event.seq,
                "outcome": view["outcome"] if view else None}

    async def withdraw(self, reason: str | None) -> dict[str, Any]:
        event = await self.run_steps(_publish(self.engine.withdraw_message(reason)))
        log.warning("this member withdrew from the federation", extra={"fields": {
            "seq": event.seq}})
        return {"member": self.member, "seq": event.seq, "event_id": event.id}

    def applications(self) -> list[dict[str, Any]]:
        return [{"id": app.id, "member": app.member, "role": app.role, "name": app.name,
                 "fingerprint": app.fingerprint(), "reference": app.reference,
                 "received_at": at, "application": app.raw}
                for app, at in sorted(self.engine.applications.values(), key=lambda x: x[1])]

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        """PeerService: a stranger's application, kept for our operator to sponsor."""
        app = self.engine.receive_application(msg["application"], wall_ms())
        return {"received": True, "id": app.id, "fingerprint": app.fingerprint()}
    # -- communication requests (§12; OperatorService) ------------------------------------

    def requests_list(self) -> dict[str, Any]:
        book, now = self.engine.requests, wall_ms()
        return {"inbox": [requests.view(r, self.member, now, content=False)
                          for r in book.inbox()],
                "outbox": [requests.view(r, self.member, now, content=False)
                           for r in book.outbox()],
                "refused": [{"code": r.code, "message": r.message, "author": r.author,
                             "seq": r.seq, "at": r.at} for r in book.refusals],
                "unacknowledged": book.unacknowledged()}

    def request_view(self, sender: str, rid: bytes) -> dict[str, Any] | None:
        request = self.engine.requests.find(sender, rid)
        return None if request is None else requests.view(request, self.member, wall_ms())

    async def send_request(self, fields: dict[str, Any]) -> dict[str, Any]:
        msg = requests.new_request(self.engine, fields, wall_ms())
        request = await self.run_steps(requests.send_steps(self.engine, msg))
        log.info("request sent", extra={"fields": {"to": msg.to, "type": msg.type,
                                                    "push": request.push}})
        return requests.view(request, self.member, wall_ms())

    async def request_status(self, sender: str, rid: bytes, state: str, text: str | None,
                             scope: str | None) -> dict[str, Any]:
        request = await self.run_steps(requests.status_steps(
            self.engine, (sender, rid), state, text=text, scope=scope))
        return requests.view(request, self.member, wall_ms())

    async def ping_run(self, members: list[str] | None, domain: str | None) -> dict[str, Any]:
        for member in members or []:
            if not self.engine.is_member(member):
                raise UnknownAuthor(f"{member} is not a member of this federation",
                                    path="members")
        return await self.run_steps(requests.campaign_steps(self.engine, members, domain))

    def ping_report(self) -> dict[str, Any]:
        return requests.ping_report(self.engine.requests, self.engine.members(), wall_ms())

    def exchanges(self) -> list[dict[str, Any]]:
        return self.engine.requests.published_exchanges()

    async def rotate_token(self) -> str:
        """A new operator token, written atomically; the old one stops working now."""
        token = secrets.token_urlsafe(32)
        path = self.config.data_dir / datadir.TOKEN_FILE
        tmp = path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        write_private_file(tmp, token.encode() + b"\n")
        os.replace(tmp, path)
        log.info("operator token rotated")
        return token


def _take(chunks: Iterator[bytes], limit: int) -> bytes:
    """Chunks joined until ``limit`` bytes or the end (b"" at the end)."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) >= limit:
            break
    return bytes(out)


def _error(value: Any) -> BaseException:
    assert isinstance(value, BaseException)
    return value


def _publish(message: Any) -> Generator[Any, Any, Any]:
    """A one-step sequence: publish the engine's prepared message under the ingest lock."""
    event = yield message
    return event


def engine_config(config: Config) -> EngineConfig:
    return EngineConfig(
        gossip_interval_ms=config.gossip_interval_ms, fanout=config.fanout,
        max_events_per_message=config.max_events_per_message,
        exchange_budget_bytes=config.exchange_budget_bytes,
        max_body_bytes=config.max_body_bytes, pending_max_bytes=config.pending_max_bytes,
        checkpoint_interval_ms=int(config.tlog_checkpoint_interval_s * 1000),
        cosign_interval_ms=int(config.tlog_cosign_interval_s * 1000))


async def _bind(setting: str, port: int, starting: Any) -> int:
    try:
        return await starting
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise datadir.DataDirError(
                f"port {port} is in use by another program; set {setting} in config.toml to "
                f"a free port (the node did not start)", path=setting) from None
        raise datadir.DataDirError(f"cannot listen on port {port} ({exc.strerror}); check "
                                   f"{setting} in config.toml (the node did not start)",
                                   path=setting) from None


def _load_or_create_hpke(data_dir: Path, suite: str, passphrase: bytes) -> HpkeKey:
    """The node's HPKE key for its federation's suite: created at first start (the suite
    is only known once a genesis is installed), encrypted like the identity key."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

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


async def run_node(data_dir: Path) -> None:
    if not memory.tune_allocator():
        log.info("allocator not tuned (not glibc): memory taken by bursts of connections "
                 "may not be given back")
    node = await Node.open(data_dir)
    await node.run()


__all__ = ["Node", "engine_config", "run_node"]
