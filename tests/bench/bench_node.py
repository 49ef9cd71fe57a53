"""Node benchmarks: real `pocnode run` processes on loopback, 1-second gossip interval.

Figures, each beside its goal:
* convergence: time until every node holds a new record, in gossip intervals (p50, max
  over several updates), at 5, 20 and 50 nodes; arrival times come from the nodes' own
  JSON logs (one clock: they share the machine);
* bytes on the wire for one ~4 KB update to reach all N nodes, as a ratio to (N-1) x the
  event size; bytes are HTTP bytes (headers and bodies) counted by every node's peer port,
  so each byte on each link counts once; TLS framing (22 bytes a record) is not included;
  idle gossip in the same window is measured separately and subtracted;
* idle gossip bytes per node per second, 200 authors known;
* a fresh node syncing 200 authors x 100 events, events/s as a ratio to the limit measured
  in this run (Ed25519 verification plus SQLite insert of the same events, in batches);
* resident memory per node with 200 authors.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocnode.core.chain import Verifier
from pocnode.core.disclosure import compile_record
from pocnode.core.events import build_event, parse_event
from pocnode.core.keys import SigningKey
from pocnode.core.record import example_record
from pocnode.node.datadir import load_genesis
from pocnode.store import Store, StoredEvent
from tests.integration.harness import Federation, record, wait_until

INTERVAL_MS = 1000


def _measure_for(seconds: float) -> None:
    """A measurement window of fixed length: here waiting is the point, not a guess."""
    time.sleep(seconds)


def _json_logs(node) -> None:
    node.configure("format", '"json"')


def _metric(node, name: str) -> float:
    status, text = node.api("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wire_total(fed: Federation) -> float:
    return sum(_metric(n, "pocnode_peer_wire_bytes_in_total")
               + _metric(n, "pocnode_peer_wire_bytes_out_total")
               for n in fed.nodes.values())


def _arrivals(node, author: str, seq: int) -> float | None:
    """Wall time (s) of the first log line saying the node holds author's seq."""
    for line in node.log().splitlines():
        if '"accepted events"' not in line:
            continue
        entry = json.loads(line)
        for head in entry.get("heads", "").split(","):
            a, _, s = head.partition(":")
            if a == author and int(s) >= seq:
                return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
    return None


def _padded_record(member: str, marker: str, size: int) -> dict:
    """A record whose signed event is close to ``size`` bytes (public notes as padding)."""
    rec = record(member, marker)
    padding = max(1, size - 700)
    for entry in rec["entries"][:2]:
        entry["visibility"] = "public"
        entry["notes"] = "n" * min(2000, padding)
        padding -= min(2000, padding)
        if padding <= 0:
            break
    return rec


def bench_convergence(root: Path, n: int, updates: int) -> dict:
    fed = Federation(root, n, interval_ms=INTERVAL_MS)
    try:
        for node in fed.nodes.values():
            _json_logs(node)
        fed.start()
        members = list(fed.nodes)
        wait_until(lambda: all(fed[m].get("/v1/status")["authors"] == n for m in members),
                   timeout=60 + n, every=1.0, what="every node holds every node.keys")
        times, ratios = [], []
        for i in range(updates):
            author = members[i % n]
            idle_start, t_idle = _wire_total(fed), time.monotonic()
            _measure_for(3)
            idle_rate = (_wire_total(fed) - idle_start) / (time.monotonic() - t_idle)
            before, t0_mono = _wire_total(fed), time.monotonic()
            status, pub = fed[author].api("POST", "/v1/record",
                                          _padded_record(author, f"u{i}", 4096))
            assert status == 201, pub
            seq = pub["seq"]
            wait_until(lambda a=author, s=seq: all(_arrivals(fed[m], a, s) for m in members),
                       timeout=30, every=0.25, what=f"update {i} everywhere")
            t0 = _arrivals(fed[author], author, seq)
            last = max(_arrivals(fed[m], author, seq) for m in members)
            times.append((last - t0) * 1000 / INTERVAL_MS)
            window = time.monotonic() - t0_mono
            event_bytes = fed[author].get(f"/v1/events/{author}?from={seq}&limit=1")[
                "events"][0]["bytes"]
            spent = _wire_total(fed) - before - idle_rate * window
            ratios.append(spent / ((n - 1) * event_bytes))
        return {"n": n, "p50": statistics.median(times), "max": max(times),
                "wire_ratio": statistics.median(ratios), "event_bytes": event_bytes}
    finally:
        fed.stop_all()


def _offline_events(keys: dict[str, SigningKey], fed_id: bytes, per_author: int) -> list[bytes]:
    body = compile_record(example_record(), os.urandom).body
    out = []
    now = int(time.time() * 1000) - 3_600_000
    for member, key in keys.items():
        prev = None
        for seq in range(1, per_author + 1):
            raw = build_event(key, fed=fed_id, author=member, seq=seq, prev=prev,
                              kind="record", ts=now + seq, body=body)
            prev = parse_event(raw).id
            out.append(raw)
    return out


async def _seed(node, genesis, events: list[bytes]) -> None:
    store = await Store.open(node.m.data_dir / "pocnode.db", federation_id=genesis.id,
                             member=node.member)
    verifier = Verifier(genesis)
    batch = []
    for raw in events:
        e = verifier.ingest(raw)
        batch.append(StoredEvent(author=e.author, seq=e.seq, id=e.id, kind=e.kind, ts=e.ts,
                                 raw=raw, received_at=0))
    for i in range(0, len(batch), 1000):
        await store.append_events(batch[i:i + 1000])
    await store.close()


async def _limit_rate(genesis, events: list[bytes], tmp: Path) -> float:
    """Raw Ed25519 verification plus SQLite insert of the same events, as the node batches."""
    parsed = [parse_event(raw) for raw in events]
    keys = {f.id: Ed25519PublicKey.from_public_bytes(f.key.ed25519) for f in genesis.founders}
    store = await Store.open(tmp / "limit.db", federation_id=genesis.id, member="LIMIT")
    start = time.perf_counter()
    for i in range(0, len(parsed), 1000):
        chunk = parsed[i:i + 1000]
        for e in chunk:
            keys[e.author].verify(e.sig.ed25519, e.signing_input)
        await store.append_events(StoredEvent(author=e.author, seq=e.seq, id=e.id, kind=e.kind,
                                              ts=e.ts, raw=e.raw, received_at=0) for e in chunk)
    elapsed = time.perf_counter() - start
    await store.close()
    return len(parsed) / elapsed


def bench_200_authors(root: Path, running: int = 3, per_author: int = 100) -> dict:
    """Sync with the seed and the fresh node alone (two processes for two cores, as the
    limit is measured in one), then bring up the rest for the idle and memory figures."""
    offline = {f"X{i:03d}": SigningKey.generate() for i in range(200 - running)}
    fed = Federation(root, running, interval_ms=INTERVAL_MS, offline=offline)
    try:
        names = list(fed.nodes)
        seed, fresh = fed[names[0]], fed[names[1]]
        genesis = load_genesis(seed.m.data_dir)
        events = _offline_events(offline, genesis.id, per_author)
        asyncio.run(_seed(seed, genesis, events))
        limit = asyncio.run(_limit_rate(genesis, events, root))
        for node in fed.nodes.values():
            _json_logs(node)
        fed.start([names[0]])
        fresh.start()
        fresh.wait_ready()
        t0 = time.monotonic()
        wait_until(lambda: fresh.get("/v1/status")["events"] >= len(events), timeout=600,
                   every=0.5, what="fresh node synced")
        sync_rate = len(events) / (time.monotonic() - t0)
        fed.start(names[2:])
        wait_until(lambda: all(fed[m].get("/v1/status")["events"] >= len(events) + running
                               for m in names), timeout=300, every=1.0, what="all synced")
        rss_after_sync = max(fed[m].rss_kb() for m in names) / 1024
        wait_until(lambda: len({fed[m].get("/v1/status")["summary"] for m in names}) == 1,
                   timeout=60, every=1.0, what="same summary everywhere")
        before, t0 = _wire_total(fed), time.monotonic()
        _measure_for(30)
        idle = (_wire_total(fed) - before) / (time.monotonic() - t0) / running
        fed.stop_all()
        fed.start()
        rss_steady = max(fed[m].rss_kb() for m in names) / 1024
        return {"events": len(events), "sync_rate": sync_rate, "limit_rate": limit,
                "ratio": sync_rate / limit, "rss_after_sync": rss_after_sync,
                "rss_steady": rss_steady, "idle_bytes_per_node_s": idle, "running": running}
    finally:
        fed.stop_all()


def run(quick: bool = False):
    """Yields each figure as soon as it is measured (the whole group takes minutes)."""
    sizes = (5, 20) if quick else (5, 20, 50)
    updates = 2 if quick else 5
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"pocnode-bench-{n}-") as tmp:
            r = bench_convergence(Path(tmp), n, updates)
        goal = " (goal at 50: p50 <= 3, max <= 6)" if n == 50 else ""
        yield (f"convergence, {n} nodes, {updates} updates of {r['event_bytes']} B: "
                     f"p50 {r['p50']:.2f} intervals, max {r['max']:.2f} intervals{goal}")
        yield (f"wire bytes for one update to reach all {n} nodes: "
                     f"{r['wire_ratio']:.2f} x (N-1) x event size (goal <= 2.0)")
    with tempfile.TemporaryDirectory(prefix="pocnode-bench-200-") as tmp:
        r = bench_200_authors(Path(tmp), per_author=20 if quick else 100)
    yield (f"fresh node sync, 200 authors x {r['events'] // 200} events: "
                 f"{r['sync_rate']:,.0f} events/s vs limit (verify + SQLite insert) "
                 f"{r['limit_rate']:,.0f}/s, ratio {r['ratio']:.2f} (goal >= 0.5)")
    yield (f"idle gossip, 200 authors known, {r['running']} nodes: "
                 f"{r['idle_bytes_per_node_s']:,.0f} bytes per node per second "
                 f"(HTTP bytes, each counted once; goal <= 1 KB/s)")
    yield (f"resident memory per node, 200 authors x {r['events'] // 200} events: "
           f"{r['rss_after_sync']:.1f} MB just after syncing, {r['rss_steady']:.1f} MB after a "
           f"restart (max over {r['running']} nodes; goal <= 80 MB)")
