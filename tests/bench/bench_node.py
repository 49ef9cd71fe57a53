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
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pocnode.core.chain import Verifier
from pocnode.core.disclosure import compile_record
from pocnode.core.events import build_event, parse_event
from pocnode.core.keys import SigningKey
from pocnode.core.record import example_record
from pocnode.node.datadir import load_genesis
from pocnode.node.verify import VerifyPool
from pocnode.store import Store, StoredEvent
from tests.bench.arrivals import arrival as _arrivals
from tests.bench.report import Figure
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
    """Wire bytes in and out of the nodes running now (a stopped one has no metrics)."""
    return sum(_metric(n, "pocnode_peer_wire_bytes_in_total")
               + _metric(n, "pocnode_peer_wire_bytes_out_total")
               for n in fed.nodes.values() if n.proc is not None and n.proc.poll() is None)


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


async def _limit_rate(genesis, events: list[bytes], tmp: Path,
                      pool: VerifyPool | None = None) -> float:
    """Raw Ed25519 verification plus SQLite insert of the same events, as the node batches;
    verification in this thread, or over ``pool``'s threads (the daemon's own pool)."""
    parsed = [parse_event(raw) for raw in events]
    keys = {f.id: f.key for f in genesis.founders}
    raw_keys = {m: Ed25519PublicKey.from_public_bytes(k.ed25519) for m, k in keys.items()}
    path = tmp / f"limit-{'pool' if pool else 'one'}.db"
    store = await Store.open(path, federation_id=genesis.id, member="LIMIT")
    start = time.perf_counter()
    for i in range(0, len(parsed), 1000):
        chunk = parsed[i:i + 1000]
        if pool is None:
            for e in chunk:
                raw_keys[e.author].verify(e.sig.ed25519, e.signing_input)
        else:
            assert all(pool.verify_blocking([(keys[e.author], e.sig, e.signing_input)
                                             for e in chunk]))
        await store.append_events(StoredEvent(author=e.author, seq=e.seq, id=e.id, kind=e.kind,
                                              ts=e.ts, raw=e.raw, received_at=0) for e in chunk)
    elapsed = time.perf_counter() - start
    await store.close()
    path.unlink()
    return len(parsed) / elapsed


def bench_200_authors(root: Path, running: int = 3, per_author: int = 100,
                      syncs: int = 5) -> dict:
    """A fresh node syncs from a seed, ``syncs`` times (a new node each time, only it and
    the seed up: two processes for two cores); the limit is measured beside each. Then
    ``running`` nodes for the idle traffic and memory figures."""
    nodes = max(running, 1 + syncs)
    offline = {f"X{i:03d}": SigningKey.generate() for i in range(200 - nodes)}
    fed = Federation(root, nodes, interval_ms=INTERVAL_MS, offline=offline)
    pool = VerifyPool()
    try:
        names = list(fed.nodes)
        seed = fed[names[0]]
        genesis = load_genesis(seed.m.data_dir)
        events = _offline_events(offline, genesis.id, per_author)
        asyncio.run(_seed(seed, genesis, events))
        for node in fed.nodes.values():
            _json_logs(node)
        fed.start([names[0]])
        ratios, rates, limits, limits_pool = [], [], [], []
        for fresh in (fed[m] for m in names[1:1 + syncs]):
            limit = asyncio.run(_limit_rate(genesis, events, root))
            limit_pool = asyncio.run(_limit_rate(genesis, events, root, pool))
            fresh.start()
            fresh.wait_ready()
            t0 = time.monotonic()
            wait_until(lambda f=fresh: f.get("/v1/status")["events"] >= len(events),
                       timeout=600, every=0.2, what="fresh node synced")
            rate = len(events) / (time.monotonic() - t0)
            fresh.stop()
            rates.append(rate)
            limits.append(limit)
            limits_pool.append(limit_pool)
            ratios.append((rate / limit, rate / limit_pool))
        up = names[:running]
        fed.start(up[1:])
        wait_until(lambda: all(fed[m].get("/v1/status")["events"] >= len(events) + running
                               for m in up), timeout=300, every=1.0, what="all synced")
        rss_after_sync = max(fed[m].rss_kb() for m in up) / 1024
        wait_until(lambda: len({fed[m].get("/v1/status")["summary"] for m in up}) == 1,
                   timeout=60, every=1.0, what="same summary everywhere")
        before, t0 = _wire_total(fed), time.monotonic()
        _measure_for(30)
        idle = (_wire_total(fed) - before) / (time.monotonic() - t0) / running
        fed.stop_all()
        fed.start(up)
        rss_steady = max(fed[m].rss_kb() for m in up) / 1024
        return {"events": len(events), "sync_rate": statistics.median(rates),
                "limit_rate": statistics.median(limits),
                "limit_pool_rate": statistics.median(limits_pool),
                "ratio": statistics.median(r for r, _ in ratios),
                "ratio_pool": statistics.median(r for _, r in ratios),
                "ratios": [r for r, _ in ratios], "threads": pool.threads,
                "rss_after_sync": rss_after_sync, "rss_steady": rss_steady,
                "idle_bytes_per_node_s": idle, "running": running}
    finally:
        pool.close()
        fed.stop_all()


# -- the same benchmark of an earlier pocnode, in this run -------------------------------

# Run in the baseline's tree, with its own harness and nodes: the same measurements, with
# the same sizes as this run, printed as JSON.
_BASELINE_DRIVER = """
import importlib.util, json, sys, tempfile
from pathlib import Path
import tests.bench.bench_node as bench
from tests.bench.bench_node import bench_200_authors, bench_convergence
sizes, updates, per_author = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("arrivals", sys.argv[2])
arrivals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arrivals)
bench._arrivals = arrivals.arrival  # this run's log reader measures both trees
out = {"convergence": {}}
for n in sizes:
    with tempfile.TemporaryDirectory() as tmp:
        out["convergence"][n] = bench_convergence(Path(tmp), n, updates)
with tempfile.TemporaryDirectory() as tmp:
    out["authors"] = bench_200_authors(Path(tmp), per_author=per_author)
print(json.dumps(out))
"""


def baseline(rev: str, sizes: tuple[int, ...], updates: int, per_author: int) -> dict:
    """``rev``'s own node benchmark functions (its code, its harness, its nodes), run with
    this interpreter from a `git archive` of it: the figures to compare with, measured now
    on this machine with the same sizes."""
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="pocnode-baseline-") as tmp:
        tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev],
                             capture_output=True, check=True, timeout=120).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(tmp, filter="data")
        proc = subprocess.run(
            [sys.executable, "-P", "-c", _BASELINE_DRIVER,
             json.dumps([list(sizes), updates, per_author]),
             str(Path(__file__).with_name("arrivals.py"))], cwd=tmp, capture_output=True,
            text=True, env={**os.environ, "PYTHONPATH": tmp}, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"the baseline {rev} benchmark failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["convergence"] = {int(n): r for n, r in out["convergence"].items()}
    return out


GROUP = "node (real processes on loopback, 1 s gossip interval)"
NO_WORSE = 1.10   # "no worse" than the baseline, allowing 10% of run-to-run noise


SIZES = {  # mode: convergence sizes, updates per size, events per author, fresh syncs
    "quick": ((5,), 2, 20, 2),
    "report": ((5, 20), 5, 100, 5),
    "full": ((5, 20, 50), 5, 100, 5),
}


def run(mode: str = "report", baseline_rev: str | None = None):
    """Yields each figure as soon as it is measured (the whole group takes minutes)."""
    sizes, updates, per_author, syncs = SIZES[mode]
    old = baseline(baseline_rev, sizes, updates, per_author) if baseline_rev else None

    def compared(name: str, value: float, unit: str, old_value: float | None, *,
                 higher_is_better: bool = False, goal=None, note: str = "") -> Figure:
        if old_value:
            limit = (">=", round(1 / NO_WORSE, 2), "ratio") if higher_is_better else \
                ("<=", NO_WORSE, "ratio")
            return Figure(GROUP, name, value, unit, against=f"{baseline_rev} in this run, "
                          f"{old_value:,.4g} {unit}", ratio=value / old_value,
                          goal=goal or limit, note=note)
        return Figure(GROUP, name, value, unit, goal=goal, note=note)

    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"pocnode-bench-{n}-") as tmp:
            r = bench_convergence(Path(tmp), n, updates)
        before = old["convergence"].get(n) if old else None
        goals = {"p50": ("<=", 3.0, "value"), "max": ("<=", 6.0, "value")} if n == 50 else {}
        for what in ("p50", "max"):
            yield compared(f"convergence, {n} nodes, {updates} updates of "
                           f"{r['event_bytes']} B: {what}", r[what], "intervals",
                           before[what] if before else None, goal=goals.get(what))
        yield compared(f"wire bytes for one update to reach all {n} nodes, per (N-1) x event "
                       f"size", r["wire_ratio"], "x", before["wire_ratio"] if before else None,
                       goal=("<=", 2.0, "value") if not old else None)
    with tempfile.TemporaryDirectory(prefix="pocnode-bench-200-") as tmp:
        r = bench_200_authors(Path(tmp), per_author=per_author, syncs=syncs)
    before = old["authors"] if old else None
    per = r["events"] // 200
    yield Figure(GROUP, f"fresh node sync, 200 authors x {per} events, median of "
                 f"{len(r['ratios'])} syncs (the issue's figure)", r["sync_rate"], "events/s",
                 against=f"verify in one thread + SQLite insert, {r['limit_rate']:,.0f}/s",
                 ratio=r["ratio"], goal=(">=", 0.6, "ratio"),
                 note="ratios " + ", ".join(f"{x:.2f}" for x in r["ratios"]))
    yield Figure(GROUP, "the same sync against verify over the node's "
                 f"{r['threads']} verify threads + insert", r["sync_rate"], "events/s",
                 against=f"that limit, {r['limit_pool_rate']:,.0f}/s", ratio=r["ratio_pool"])
    if before:
        yield compared("fresh node sync: ratio to its own one-thread limit", r["ratio"], "x",
                       before["ratio"], higher_is_better=True,
                       note=f"{baseline_rev}: one sync")
    yield compared(f"idle gossip, 200 authors known, {r['running']} nodes (HTTP bytes, each "
                   f"counted once)", r["idle_bytes_per_node_s"], "B/node/s",
                   before["idle_bytes_per_node_s"] if before else None,
                   goal=("<=", 1024.0, "value") if not old else None)
    for key, what in (("rss_after_sync", "just after syncing"),
                      ("rss_steady", "after a restart")):
        yield compared(f"resident memory per node, 200 authors x {per} events, {what} "
                       f"(max over {r['running']} nodes)", r[key], "MB",
                       before[key] if before else None,
                       goal=("<=", 80.0, "value") if not old else None)
