"""Issue 8 acceptance: the simulator and real daemons end a scenario with identical stores.

The scenario: five nodes; records from three members; a consent pair (ATL and BOR offer
each other, so each discloses its bilateral values to the other); a restart (CAL); then
two more records. It runs first with real daemons (`pocnode run`, HTTPS on loopback,
SQLite), then in the simulator with the same genesis and keys.

Real daemons sign with the wall clock's timestamps, draw salts and HPKE randomness from
the OS: the simulator cannot re-derive their events. So each real node's own events
(its node.keys, records, consent messages, read from its database) are replayed in the
simulator as that node's operator inputs, at their own timestamps in virtual time, with
the record's own disclosures read from the author's database right after publishing
(before a later record makes the node erase them). Everything else (gossip, fork
checks, pulling members values, sealing and opening bilateral values with the nodes'
real HPKE keys, erasure) is the engine's doing in both runs. At the end, per node: the
event ids per author, and the (event id, digest) of every disclosure held, must be equal.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from pocnode.core.disclosure import DisclosureRow
from pocnode.core.engine import EngineConfig
from pocnode.node import datadir, tls
from pocnode.node.config import DEFAULT_FANOUT, load_config
from pocnode.node.node import _load_or_create_hpke
from pocnode.sim.network import Latency, Network
from pocnode.sim.runner import SimIdentity, Simulator, seeded_random
from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow

INTERVAL_MS = 300
# Virtual time the simulation runs past the last real event: many gossip intervals.
SETTLE_MS = 60_000


def wall_ms() -> int:
    return int(time.time() * 1000)


def _db(node) -> contextlib.closing[sqlite3.Connection]:
    """Read-only, closed after use: the daemon's own checkpoints must not wait for us."""
    return contextlib.closing(sqlite3.connect(f"file:{node.dir / 'pocnode.db'}?mode=ro",
                                              uri=True))


def own_disclosures(node, event_id: bytes) -> list[DisclosureRow]:
    """The author's own disclosures of one record, as its database holds them now."""
    with _db(node) as db:
        rows = db.execute("SELECT author, event_id, digest, entry, field, visibility, raw "
                          "FROM disclosures WHERE event_id = ? ORDER BY digest",
                          (event_id,)).fetchall()
    return [DisclosureRow(author=a, event_id=bytes(e), digest=bytes(d), entry=en, field=f,
                          visibility=v, raw=bytes(r)) for a, e, d, en, f, v, r in rows]


def final_state(db_path: Path) -> tuple[dict[str, list[bytes]], set[tuple[bytes, bytes]]]:
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        events: dict[str, list[bytes]] = {}
        for author, _seq, event_id in db.execute(
                "SELECT author, seq, id FROM events ORDER BY author, seq"):
            events.setdefault(author, []).append(bytes(event_id))
        disclosures = {(bytes(e), bytes(d)) for e, d in
                       db.execute("SELECT event_id, digest FROM disclosures")}
        assert db.execute("SELECT count(*) FROM forked_events").fetchone()[0] == 0
    return events, disclosures


def own_events(node) -> list[tuple[int, int, str, bytes]]:
    """(seq, ts, kind, raw) of the node's own chain."""
    with _db(node) as db:
        return [(s, t, k, bytes(r)) for s, t, k, r in db.execute(
            "SELECT seq, ts, kind, raw FROM events WHERE author = ? ORDER BY seq",
            (node.member,))]


def fields(node, member: str) -> dict[str, dict]:
    status, view = node.api("GET", f"/v1/directory/{member}")
    assert status == 200, view
    return {e["id"]: e["fields"] for e in view["record"]["entries"]}


def publish(node, marker: str, captured: dict[bytes, list[DisclosureRow]]) -> None:
    status, answer = node.api("POST", "/v1/record", record(node.member, marker))
    assert status == 201, answer
    event_id = bytes.fromhex(answer["event_id"])
    captured[event_id] = own_disclosures(node, event_id)
    assert captured[event_id], "a record with members and bilateral values has disclosures"


def identity(node, genesis) -> SimIdentity:
    config = load_config(node.dir)
    passphrase = datadir.read_passphrase(node.dir, config.passphrase_file)
    founder = next(f for f in genesis.founders if f.id == node.member)
    return SimIdentity(member=node.member, key=datadir.load_identity(node.dir, passphrase),
                       hpke=_load_or_create_hpke(node.dir, genesis.hpke_suite, passphrase),
                       pin=tls.load_pin(node.dir), endpoint=founder.endpoints[0])


def test_simulator_and_daemons_end_with_identical_stores(federation_factory):
    fed = federation_factory(5, interval_ms=INTERVAL_MS)
    names = [n.member for n in fed.nodes.values()]
    atl, bor, cal, dun = fed["ATL"], fed["BOR"], fed["CAL"], fed["DUN"]
    captured: dict[bytes, list[DisclosureRow]] = {}

    # -- the real federation -------------------------------------------------------------
    fed.start()
    for node in fed.nodes.values():
        wait_until(lambda n=node: n.get("/v1/status")["authors"] == 5, timeout=60,
                   what=f"{node.member} holds every node.keys")
    publish(atl, "A1", captured)
    publish(bor, "B1", captured)
    publish(dun, "D1", captured)
    assert atl.api("POST", "/v1/consent/BOR", {"action": "offer"})[0] == 201
    wait_until(lambda: bor.get("/v1/consent")["consents"] != [], timeout=60,
               what="BOR sees ATL's offer")
    assert bor.api("POST", "/v1/consent/ATL", {"action": "offer"})[0] == 201
    wait_until(lambda: "person" in fields(bor, "ATL")["duty"], timeout=60,
               what="BOR holds ATL's bilateral values")
    wait_until(lambda: "person" in fields(atl, "BOR")["duty"], timeout=60,
               what="ATL holds BOR's bilateral values")
    stopped_at = wall_ms()
    cal.stop()
    started_at = wall_ms()
    cal.start()
    cal.wait_ready()
    publish(cal, "C1", captured)
    publish(atl, "A2", captured)
    total = sum(len(own_events(n)) for n in fed.nodes.values())
    for node in fed.nodes.values():
        wait_until(lambda n=node: n.get("/v1/status")["events"] == total, timeout=60,
                   what=f"{node.member} holds all {total} events")
        for author in ("ATL", "BOR", "CAL", "DUN"):
            wait_until(lambda n=node, a=author: "email" in fields(n, a)["mfa"], timeout=60,
                       what=f"{node.member} holds {author}'s members values")
    wait_until(lambda: fields(bor, "ATL")["duty"].get("person") == "Bilateral-A2",
               timeout=60, what="BOR holds ATL's second bilateral values")
    published = {n.member: own_events(n) for n in fed.nodes.values()}
    fed.stop_all()
    real = {m: final_state(fed[m].dir / "pocnode.db") for m in names}
    for member, (events, disclosures) in real.items():  # the comparison is not of nothing
        assert sum(map(len, events.values())) == total and len(events) == 5, member
        assert disclosures, member

    # -- the same in the simulator ----------------------------------------------------------
    genesis = datadir.load_genesis(atl.dir)
    identities = [identity(fed[m], genesis) for m in names]
    first = min(ts for chain in published.values() for _, ts, _, _ in chain)
    last = max(ts for chain in published.values() for _, ts, _, _ in chain)
    start = min(first, stopped_at) - 2 * INTERVAL_MS
    sim = Simulator(
        genesis=genesis, identities=identities, seed=8,
        engine_config=EngineConfig(gossip_interval_ms=INTERVAL_MS, fanout=DEFAULT_FANOUT),
        network=Network(rng=seeded_random(8, "net"), latency=Latency.parse("uniform:1:5"),
                        loss=0.0, timeout_ms=5_000, connect_timeout_ms=1_000),
        start_ms=start)
    cal_sim = sim.by_member["CAL"]
    sim.clock.at(stopped_at, sim.stop, cal_sim)
    sim.clock.at(started_at, sim.start, cal_sim)
    for member, chain in published.items():
        node = sim.by_member[member]
        # A daemon publishes its node.keys as it opens, before its first tick: each
        # simulated node starts when its daemon's node.keys was signed, with that event
        # (else its engine, finding no node.keys in its chain, signs one of its own).
        (_seq, ts, kind, raw), *rest = chain
        assert kind == "node.keys", (member, kind)
        sim.clock.at(ts, _start_with, sim, node, raw)
        for _seq, ts, _kind, raw in rest:
            rows = captured.get(_event_id(raw), [])
            sim.clock.at(ts, _inject, sim, node, raw, rows)
    sim.run_until(last + SETTLE_MS)

    # -- identical stores ---------------------------------------------------------------------
    for member in names:
        events, disclosures = real[member]
        store = sim.by_member[member].store
        sim_events = {a: store.ids(a) for a in store.chains}
        sim_disclosures = set(store.disclosures)
        assert sim_events == events, f"{member}: event ids per author differ"
        assert sim_disclosures == disclosures, (
            f"{member}: disclosures differ: only in the daemon's store "
            f"{_describe(disclosures - sim_disclosures, store)}; only in the simulator's "
            f"{_describe(sim_disclosures - disclosures, store)}")
    # and the scenario did what it says: bilateral values between ATL and BOR only
    bilateral = {m: {d.author for d in sim.by_member[m].store.disclosures.values()
                     if d.visibility == "bilateral"} for m in names}
    assert bilateral == {"ATL": {"ATL", "BOR"}, "BOR": {"ATL", "BOR"}, "CAL": {"CAL"},
                         "DUN": {"DUN"}, "ELB": set()}


def _describe(rows: set[tuple[bytes, bytes]], store) -> str:
    """Which events the differing disclosures belong to, and whether each is its author's
    record in force: a superseded record's values held by the daemon would be the race of
    a disclosure pull whose store completes after a newer record's erasure."""
    if not rows:
        return "none"
    where = {}
    for author, chain in store.chains.items():
        for seq, event_id in enumerate(chain.ids, 1):
            where[event_id] = (author, seq, seq == chain.record_seq)
    counts: dict[bytes, int] = {}
    for event_id, _ in rows:
        counts[event_id] = counts.get(event_id, 0) + 1
    return ", ".join(
        f"{n} of {where[e][0]} #{where[e][1]} "
        f"({'record in force' if where[e][2] else 'superseded'})" if e in where
        else f"{n} of unknown event {e.hex()[:16]}" for e, n in counts.items())


def _event_id(raw: bytes) -> bytes:
    from pocnode.core.events import parse_event

    return parse_event(raw).id


def _start_with(sim: Simulator, node, raw: bytes) -> None:
    sim.start(node)
    _inject(sim, node, raw, [])


def _inject(sim: Simulator, node, raw: bytes, rows: list[DisclosureRow]) -> None:
    result = sim.inject_own(node, raw, rows)
    assert result.accepted, f"{node.member} did not take its own replayed event: {result}"
