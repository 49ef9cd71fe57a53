"""Fault tests with real processes (issue 13): a partition healed, kill -9 while publishing,
clocks an hour off, a full disk.

Every test has a hard deadline, every wait is a polled condition with its own deadline,
and each prints its figures and writes them as JSON under its pytest tmp dir (run pytest
with -s to see them). Everything made is removed in teardown, whatever the outcome.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pocnode.node.localfed import create_federation
from tests.integration import netns
from tests.integration.fault_harness import (
    FaultNode,
    NetnsNode,
    hard_deadline,
    log_excerpt,
    write_figures,
)
from tests.integration.harness import Federation, record, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def figures(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What a test measured: printed and written to <tmp>/figures.json, even on failure."""
    data: dict[str, Any] = {"test": request.node.name}
    started = time.monotonic()
    yield data
    data.setdefault("total_s", round(time.monotonic() - started, 2))
    path = tmp_path / "figures.json"
    write_figures(path, data)
    print(f"\n[figures] {request.node.name}:\n{json.dumps(data, indent=1, default=str)}\n"
          f"[figures] written to {path}")


# -- 1. partition ------------------------------------------------------------------------

PARTITION_NODES = 10
PARTITION_INTERVAL_MS = 500
PEER_PORT, OPERATOR_PORT = 7443, 7444
# Ten daemons start in a few seconds each on two busy cores.
START_TIMEOUT_S = 90
# Gossip every 500 ms. A side of five converges in 1 to 6 s here: a node whose round picked
# a peer across the cut waits out the connect timeout (1 s), or the request timeout (5 s) on
# a pooled connection that went dead, before its next round. This is for a slow box.
SIDE_CONVERGE_TIMEOUT_S = 60
# Rounds watched after a side converged, during which nothing may cross the partition.
QUIET_ROUNDS = 6
# After the heal, peers across the cut are retried once their backoff (up to 5 min after
# many failures) expires; the split is kept short so that this stays within seconds.
HEAL_CONVERGE_TIMEOUT_S = 90
PARTITION_DEADLINE_S = 240


@pytest.fixture
def netns_lab() -> Iterator[dict[str, Any]]:
    """A :class:`netns.Lab` and its nodes; everything removed at the end.

    Guard: namespaces of an earlier run whose process is gone (pft<pid>...) are removed
    first, each of their processes killed by pid; if they cannot be, the test does not
    start. A run in progress elsewhere on the machine has its own names and is left alone.
    """
    reason = netns.cannot_run()
    if reason:
        pytest.skip(reason)
    try:
        leftovers = netns.remove_leftovers()
    except RuntimeError as exc:
        pytest.fail(f"leftovers of an earlier run cannot be removed, refusing to start: {exc}")
    if leftovers:
        print(f"\n[guard] removed leftovers of an earlier run: {leftovers}")
    state: dict[str, Any] = {"lab": None, "nodes": [], "leftovers": leftovers}
    try:
        yield state
    finally:
        for node in state["nodes"]:
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - teardown goes on; the lab kills it
                print(f"[teardown] stopping {node.member}: {exc}")
        if state["lab"] is not None:
            state["lab"].teardown()
        remaining = netns.our_namespaces(leftovers_only=True)
        assert remaining == [], f"namespaces left behind: {remaining}"


def _tcp_reaches(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def test_partition_5_5_then_heal(netns_lab: dict[str, Any], figures: dict[str, Any],
                                 tmp_path: Path) -> None:
    n, interval_s = PARTITION_NODES, PARTITION_INTERVAL_MS / 1000
    figures.update(nodes=n, gossip_interval_ms=PARTITION_INTERVAL_MS,
                   guard_removed=netns_lab["leftovers"])
    with hard_deadline(PARTITION_DEADLINE_S, "partition test"):
        t0 = time.monotonic()
        lab = netns_lab["lab"] = netns.Lab(n)
        lab.create()
        members = create_federation(
            tmp_path / "fed", n, interval_ms=PARTITION_INTERVAL_MS, listen_host="0.0.0.0",
            endpoint_template=f"https://{netns.SUBNET}.1{{index:02d}}:{PEER_PORT}",
            peer_port=PEER_PORT, operator_port=OPERATOR_PORT)
        assert [f"https://{netns.address(i)}:{PEER_PORT}" for i in range(1, n + 1)] == [
            _advertised(m.data_dir) for m in members]
        nodes = [NetnsNode(lab, i + 1, m) for i, m in enumerate(members)]
        netns_lab["nodes"] = nodes
        for node in nodes:
            node.start()
        for node in nodes:
            wait_until(node.ready, timeout=START_TIMEOUT_S, every=0.2,
                       what=f"{node.member} answers in {netns.host_name(node.index)}")
        figures["start_s"] = round(time.monotonic() - t0, 2)

        # Every node publishes node.keys at start: the same summary everywhere, with all
        # ten authors, is a converged federation.
        def all_converged() -> bool:
            statuses = [node.get("/v1/status") for node in nodes]
            return (all(s["authors"] == n for s in statuses)
                    and len({s["summary"] for s in statuses}) == 1)

        t1 = time.monotonic()
        wait_until(all_converged, timeout=SIDE_CONVERGE_TIMEOUT_S, every=0.2,
                   what="all 10 nodes hold each other's node.keys")
        figures["initial_converge_s"] = round(time.monotonic() - t1, 2)
        before = _chain_seqs(nodes[0])

        # -- split 5/5 --
        side_a, side_b = nodes[:n // 2], nodes[n // 2:]
        lab.split(node.index for node in side_b)
        where = lab.bridge_of()
        assert {where[x.index] for x in side_a} == {"br0"}, where
        assert {where[x.index] for x in side_b} == {"br1"}, where
        far, near = netns.address(side_b[0].index), netns.address(side_a[1].index)
        assert lab.run_in(1, lambda: _tcp_reaches(near, PEER_PORT, 2.0)), "side A is cut"
        assert not lab.run_in(1, lambda: _tcp_reaches(far, PEER_PORT, 1.0)), \
            "the partition lets a TCP connection through"
        t_split = time.monotonic()

        updates: dict[str, tuple[int, str]] = {}
        for node in nodes:
            status, answer = node.api("POST", "/v1/record", record(node.member, "split"))
            assert status == 201, (node.member, status, answer)
            updates[node.member] = (answer["seq"], answer["event_id"])
        t_published = time.monotonic()
        a_authors = {x.member for x in side_a}
        b_authors = {x.member for x in side_b}
        leaks: list[str] = []
        checks = {"n": 0}

        def side_state() -> dict[str, dict[str, int]]:
            seqs = {node.member: _chain_seqs(node) for node in nodes}
            checks["n"] += 1
            for node in nodes:
                other = b_authors if node.member in a_authors else a_authors
                for author in other:
                    if seqs[node.member][author] != before[author]:
                        leaks.append(f"{node.member} holds {author} #"
                                     f"{seqs[node.member][author]} across the partition")
            return seqs

        def side_converged(side: list[NetnsNode], authors: set[str]) -> bool:
            seqs = side_state()
            return all(seqs[x.member][a] >= updates[a][0] for x in side for a in authors)

        converged_at: dict[str, float] = {}
        deadline = time.monotonic() + SIDE_CONVERGE_TIMEOUT_S
        while len(converged_at) < 2 and time.monotonic() < deadline and not leaks:
            for name, side, authors in (("A", side_a, a_authors), ("B", side_b, b_authors)):
                if name not in converged_at and side_converged(side, authors):
                    converged_at[name] = time.monotonic() - t_published
            time.sleep(0.1)
        assert not leaks, leaks[:5]
        assert len(converged_at) == 2, f"sides converged: {converged_at} (of A, B)"
        figures["side_converge_s"] = {k: round(v, 2) for k, v in converged_at.items()}
        figures["side_converge_intervals"] = {k: round(v / interval_s, 1)
                                              for k, v in converged_at.items()}

        # Nothing crosses while the cut lasts: watch a few more rounds.
        quiet_until = time.monotonic() + QUIET_ROUNDS * interval_s
        while time.monotonic() < quiet_until and not leaks:
            side_state()
            time.sleep(0.1)
        assert not leaks, leaks[:5]
        figures["isolation_checks"] = checks["n"]
        figures["split_lasted_s"] = round(time.monotonic() - t_split, 2)

        # What backoff the nodes are in for peers across the cut, as the heal happens.
        cross_failures = []
        for node in nodes:
            other = side_b if node in side_a else side_a
            endpoints = {f"https://{netns.address(x.index)}:{PEER_PORT}" for x in other}
            for peer in node.get("/v1/peers")["peers"]:
                if peer["endpoint"] in endpoints:
                    cross_failures.append(peer["failures"])
        figures["at_heal_cross_peer_failures"] = {
            "pairs": len(cross_failures), "min": min(cross_failures),
            "median": sorted(cross_failures)[len(cross_failures) // 2],
            "max": max(cross_failures),
            # PeerTable: 1 s doubled per consecutive failure (+ up to 25% jitter), 5 min cap.
            "backoff_s_at_min_failures": _backoff_s(min(cross_failures)),
            "backoff_s_at_max_failures": _backoff_s(max(cross_failures))}

        # -- heal --
        lab.heal()
        t_heal = time.monotonic()
        assert set(lab.bridge_of().values()) == {"br0"}
        held_all_at: dict[str, float] = {}

        def everyone_has_everything() -> bool:
            for node in nodes:
                if node.member in held_all_at:
                    continue
                seqs = _chain_seqs(node)
                if all(seqs[a] >= s for a, (s, _) in updates.items()):
                    held_all_at[node.member] = round(time.monotonic() - t_heal, 2)
            return len(held_all_at) == n

        wait_until(everyone_has_everything, timeout=HEAL_CONVERGE_TIMEOUT_S, every=0.1,
                   what="all 10 nodes hold all 10 updates after the heal")
        heal_s = max(held_all_at.values())
        figures["heal_to_convergence_s"] = heal_s
        figures["heal_to_convergence_intervals"] = round(heal_s / interval_s, 1)
        figures["heal_first_node_complete_s"] = min(held_all_at.values())
        figures["heal_per_node_s"] = held_all_at

        # The same events everywhere (ids, not only sequence numbers).
        for node in nodes:
            for author, (seq, event_id) in updates.items():
                got = node.get(f"/v1/events/{author}?from={seq}&limit=1")["events"]
                assert got and got[0]["id"] == event_id, (node.member, author, got)
        summaries = {node.get("/v1/status")["summary"] for node in nodes}
        assert len(summaries) == 1, summaries
        for node in nodes:
            assert node.running()
            assert "Traceback" not in node.log(), f"{node.member}: {node.log()[-3000:]}"
        print(f"[partition] heal -> convergence {heal_s:.2f} s = "
              f"{heal_s / interval_s:.1f} gossip intervals of {PARTITION_INTERVAL_MS} ms; "
              f"cross-cut failures at heal {figures['at_heal_cross_peer_failures']}")


def _advertised(data_dir: Path) -> str:
    for line in (data_dir / "config.toml").read_text().splitlines():
        if line.startswith("advertise ="):
            return line.split('"')[1]
    raise AssertionError(f"no advertise in {data_dir}/config.toml")


def _chain_seqs(node: Any) -> dict[str, int]:
    """author -> head sequence this node holds (0 for none)."""
    return {m["member"]: m["events"] for m in node.get("/v1/directory")["members"]}


def _backoff_s(failures: int) -> float:
    if failures == 0:
        return 0.0
    return min(300.0, 2.0 ** min(failures - 1, 20))


# -- 2. kill -9 during continuous publishing ----------------------------------------------

KILL_SEED = 1313
PUBLISHER_KILLS = 4
RECEIVER_KILLS = 2
KILL_INTERVAL_MS = 300
# A kill lands this long after the last restart's first acknowledgement, at random.
KILL_DELAY_S = (0.05, 1.2)
# Restart after kill -9: the database is opened, checked (quick_check) and replayed.
RESTART_TIMEOUT_S = 30
# After the publisher stops, the receivers catch up at the speed of verification.
CATCH_UP_TIMEOUT_S = 60
KILL_DEADLINE_S = 180
# The publisher gives up on its own after this, whatever the test does.
PUBLISHER_MAX_S = 120


def _chain_ids(node: Any, author: str) -> dict[int, str]:
    """seq -> event id of every event of ``author`` the node holds, paging the API."""
    out: dict[int, str] = {}
    first = 1
    for _ in range(10_000):  # bounded: 500 per page
        page = node.get(f"/v1/events/{author}?from={first}&limit=500")
        out.update({e["seq"]: e["id"] for e in page["events"]})
        if not page["events"] or first + 500 > page["head"]:
            return out
        first += 500
    raise AssertionError("more than 5 million events?")


def _missing(acked: list[tuple[int, str]], held: dict[int, str]) -> list[str]:
    return [f"#{seq} {event_id[:16]} (held: {held.get(seq, 'nothing')[:16]})"
            for seq, event_id in acked if held.get(seq) != event_id]


def _db_check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pocnode", "db", "check", "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=120)


def test_kill9_during_continuous_publishing(federation_factory: Callable[..., Federation],
                                            figures: dict[str, Any]) -> None:
    rng = random.Random(KILL_SEED)
    plan = ["ATL"] * PUBLISHER_KILLS + ["BOR"] * RECEIVER_KILLS
    rng.shuffle(plan)
    figures.update(seed=KILL_SEED, plan=plan, gossip_interval_ms=KILL_INTERVAL_MS)
    with hard_deadline(KILL_DEADLINE_S, "kill -9 test"):
        fed = federation_factory(3, interval_ms=KILL_INTERVAL_MS)
        fed.start()
        atl = fed["ATL"]
        acked: list[tuple[int, str]] = []
        failed: list[str] = []
        other: list[tuple[int, Any]] = []
        stop = threading.Event()

        def publish() -> None:
            deadline = time.monotonic() + PUBLISHER_MAX_S
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                i += 1
                try:
                    status, answer = atl.api("POST", "/v1/record", record("ATL", f"k{i}"),
                                             timeout=10)
                except (OSError, http.client.HTTPException) as exc:
                    failed.append(type(exc).__name__)
                    stop.wait(0.02)  # the node is down: try again shortly, bounded above
                    continue
                if status == 201:
                    acked.append((answer["seq"], answer["event_id"]))
                else:
                    other.append((status, answer))

        publisher = threading.Thread(target=publish, name="publisher", daemon=True)
        publisher.start()
        restarts: list[dict[str, Any]] = []
        try:
            for victim in plan:
                node = fed[victim]
                acked_before = len(acked)
                wait_until(lambda n=acked_before: len(acked) > n, timeout=RESTART_TIMEOUT_S,
                           what="the publisher has an acknowledgement since the last kill")
                delay = rng.uniform(*KILL_DELAY_S)
                time.sleep(delay)  # a random moment to kill at, not a synchronisation
                acked_at_kill = len(acked)
                node.kill9()
                t_killed = time.monotonic()
                node.start()
                node.wait_ready(timeout=RESTART_TIMEOUT_S)
                restarted_s = time.monotonic() - t_killed
                if victim == "ATL":
                    # Every acknowledgement given before the kill survived it, same id.
                    snapshot = acked[:acked_at_kill]
                    lost = _missing(snapshot, _chain_ids(atl, "ATL"))
                    assert not lost, f"acknowledged events lost by kill -9: {lost[:5]}"
                restarts.append({"victim": victim, "after_s": round(delay, 2),
                                 "acked_at_kill": acked_at_kill,
                                 "restart_s": round(restarted_s, 2)})
        finally:
            stop.set()
            publisher.join(timeout=15)
        assert not publisher.is_alive(), "publisher thread did not stop"
        figures["restarts"] = restarts
        assert not other, f"publish answered other than 201: {other[:3]}"
        assert len(acked) > len(plan), f"only {len(acked)} acknowledgements"
        seqs = [s for s, _ in acked]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "acks out of order"

        # Everyone converges on ATL's whole chain, with every acknowledged event in it.
        head = atl.get("/v1/events/ATL?from=1&limit=1")["head"]
        for name in ("BOR", "CAL"):
            wait_until(lambda n=name: fed[n].get("/v1/events/ATL?from=1&limit=1")["head"]
                       >= head, timeout=CATCH_UP_TIMEOUT_S, every=0.2,
                       what=f"{name} holds ATL's chain up to #{head}")
        wait_until(lambda: len({fed[m].get("/v1/status")["summary"]
                                for m in ("ATL", "BOR", "CAL")}) == 1,
                   timeout=CATCH_UP_TIMEOUT_S, every=0.2, what="the three nodes agree")
        chains = {}
        for name in ("ATL", "BOR", "CAL"):
            chains[name] = _chain_ids(fed[name], "ATL")
            lost = _missing(acked, chains[name])
            assert not lost, f"{name} lacks acknowledged events: {lost[:5]}"
        assert chains["ATL"] == chains["BOR"] == chains["CAL"]
        for name in ("ATL", "BOR", "CAL"):
            assert "Traceback" not in fed[name].log(), fed[name].log()[-3000:]
        records = head - 1  # seq 1 is ATL's node.keys
        figures.update(acknowledged=len(acked), failed_attempts=len(failed),
                       failed_kinds=sorted(set(failed)), atl_head=head,
                       stored_not_acknowledged=records - len(acked),
                       publisher_kills=PUBLISHER_KILLS, receiver_kills=RECEIVER_KILLS)

        # A clean stop, then the offline check re-verifies every stored event.
        codes = {name: fed[name].stop() for name in ("ATL", "BOR", "CAL")}
        assert codes == {"ATL": 0, "BOR": 0, "CAL": 0}, f"exit codes on SIGTERM: {codes}"
        checks = {}
        for name in ("ATL", "BOR", "CAL"):
            out = _db_check(fed[name].dir)
            checks[name] = out.stdout.strip().splitlines()[0] if out.stdout else out.stderr
            assert out.returncode == 0, f"db check {name}: {out.stdout}{out.stderr}"
            assert "every event and proof verifies" in out.stdout
        figures["db_check"] = checks
        print(f"[kill9] {len(acked)} acknowledged, {len(failed)} failed attempts, "
              f"{PUBLISHER_KILLS}+{RECEIVER_KILLS} kills, none lost; db check: {checks}")


# -- 3. clocks an hour ahead and behind ----------------------------------------------------

AHEAD_S, BEHIND_S = 3600.0, -3600.0
SKEW_INTERVAL_MS = 300
# PROTOCOL.md §4.1 step 15: an event more than ten minutes ahead of the receiver waits.
MAX_SKEW_MS = 600_000
# A wall-clock reading in the test and one in a node differ by the time between the two
# reads (and a loaded machine's scheduling): seconds, never minutes.
CLOCK_TOLERANCE_S = 60
SKEW_WAIT_S = 45
SKEW_DEADLINE_S = 180


def _refused(node: Any, code: str) -> int:
    status, text = node.api("GET", "/metrics")
    assert status == 200, (status, text)
    match = re.search(rf'^pocnode_events_refused_total\{{code="{code}"\}} (\d+)', text, re.M)
    return int(match.group(1)) if match else 0


def _near(ms: int | None, expected_s: float) -> bool:
    return ms is not None and abs(ms / 1000 - expected_s) < CLOCK_TOLERANCE_S


def _members_value_seen(node: Any, author: str, marker: str) -> bool:
    status, view = node.api("GET", f"/v1/directory/{author}")
    return status == 200 and f"Member-{marker}" in json.dumps(view)


def _db_rows(data_dir: Path) -> list[tuple[str, int, int, int]]:
    """(author, seq, ts, received_at) of every stored event, read-only, node stopped."""
    db = sqlite3.connect(f"file:{data_dir / 'pocnode.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT author, seq, ts, received_at FROM events "
                          "ORDER BY author, seq").fetchall()
    finally:
        db.close()


def test_clock_an_hour_ahead_and_behind(federation_factory: Callable[..., Federation],
                                        figures: dict[str, Any]) -> None:
    """ATL's clock runs an hour ahead, BOR's an hour behind, CAL's is right.

    What the spec says (PROTOCOL.md §4.1): step 14, an author's timestamps never go back;
    step 15, a receiver refuses an event more than ten minutes ahead of its own clock with
    timestamp_in_future, as early, not invalid, and tries it again later. So with these
    clocks: BOR's events (an hour in everyone's past) reach everyone; CAL's reach ATL but
    wait at BOR (an hour ahead of BOR's clock); ATL's wait everywhere else. Once a
    receiver's clock reaches an event's time, the event is accepted and nothing is lost:
    phase 2 corrects BOR's clock, phase 4 moves CAL's an hour on (as an hour passing would).

    Phase 3 corrects ATL's clock: its chain head is stamped an hour ahead, so its next event
    may not carry the true time (step 14) and one stamped at the head's time is an hour
    early for every node, itself included (step 15). The publish is refused and the node
    goes on working. (The code of that refusal is test_clock_corrected_author_... below.)

    Not asserted, reported in the figures: members values do not travel between nodes
    whose clocks differ by more than five minutes, since the peer tokens that disclosure
    requests carry are refused beyond that (§8.2).
    """
    fed = federation_factory(3, interval_ms=SKEW_INTERVAL_MS)
    fed.nodes = {m.member: FaultNode(m) for m in fed.members}
    ahead, behind, true = fed["ATL"], fed["BOR"], fed["CAL"]
    ahead.shift_s, behind.shift_s = AHEAD_S, BEHIND_S
    nodes = (ahead, behind, true)
    observed: dict[str, Any] = {}
    figures.update(shifts_s={"ATL": AHEAD_S, "BOR": BEHIND_S, "CAL": 0.0},
                   observed=observed)
    with hard_deadline(SKEW_DEADLINE_S, "clock skew test"):
        started = time.time()
        fed.start()

        # -- phase 1: skewed --
        published: dict[str, dict[str, Any]] = {}
        for node in nodes:
            status, answer = node.api("POST", "/v1/record", record(node.member, "skew1"))
            assert status == 201, (node.member, status, answer)
            # The author's timestamp is its own clock's reading, whatever that is.
            assert _near(answer["ts"], time.time() + node.shift_s), (node.member, answer)
            published[node.member] = answer

        def holds(node: Any, author: str, seq: int) -> bool:
            return _chain_seqs(node)[author] >= seq

        wait_until(lambda: holds(ahead, "BOR", 2) and holds(ahead, "CAL", 2),
                   timeout=SKEW_WAIT_S, what="ATL (ahead) holds BOR's and CAL's records")
        wait_until(lambda: holds(true, "BOR", 2), timeout=SKEW_WAIT_S,
                   what="CAL holds the record of BOR (an hour behind)")
        wait_until(lambda: _refused(true, "timestamp_in_future") > 0
                   and _refused(behind, "timestamp_in_future") > 0, timeout=SKEW_WAIT_S,
                   what="CAL and BOR refused events from their future")
        assert _chain_seqs(true)["ATL"] == 0, "CAL accepted ATL's events from an hour ahead"
        assert _chain_seqs(behind)["ATL"] == 0 and _chain_seqs(behind)["CAL"] == 0, \
            "BOR accepted events an hour or two ahead of its clock"
        refusal = log_excerpt(true.log(), ("timestamp_in_future",), limit=1)
        assert refusal and "ATL" in refusal[0], true.log()[-2000:]
        observed["phase1_refusal_log_at_CAL"] = refusal[0]

        # Times as shown: event timestamps are the author's; times of receipt and contact
        # are the receiving node's own clock.
        for viewer, author in ((true, "BOR"), (ahead, "BOR"), (ahead, "CAL")):
            entry = next(m for m in viewer.get("/v1/directory")["members"]
                         if m["member"] == author)
            assert entry["record_ts"] == published[author]["ts"], (viewer.member, entry)
            events = viewer.get(f"/v1/events/{author}?from=2&limit=1")["events"]
            assert events[0]["ts"] == published[author]["ts"]
        for node in nodes:
            contacts = wait_until(lambda n=node: [p["last_contact"] for p in n.get(
                "/v1/peers")["peers"] if p["last_contact"]], timeout=SKEW_WAIT_S,
                what=f"{node.member} had a successful round with a peer")
            assert _near(max(contacts), time.time() + node.shift_s), (node.member, contacts)
            uptime = node.get("/v1/status")["uptime_s"]
            assert 0 <= uptime <= time.time() - started + CLOCK_TOLERANCE_S, uptime
        listed = true.cli("directory", "list", "--data-dir", str(true.dir), "--json")
        assert listed.returncode == 0, listed.stderr
        bor_row = next(m for m in json.loads(listed.stdout) if m["member"] == "BOR")
        assert bor_row["record_ts"] == published["BOR"]["ts"]
        shown = true.cli("directory", "show", "BOR", "--data-dir", str(true.dir))
        signed = time.strftime("%Y-%m-%d %H:%M:%SZ",
                               time.gmtime(published["BOR"]["ts"] / 1000))
        assert f"signed {signed}" in shown.stdout, shown.stdout[:500]
        peers_cli = ahead.cli("peers", "--data-dir", str(ahead.dir))
        assert peers_cli.returncode == 0 and " s ago" in peers_cli.stdout, peers_cli.stdout
        observed["phase1_members_values_BOR_at_CAL"] = _members_value_seen(true, "BOR",
                                                                             "skew1")
        observed["phase1_auth_refusals_logged_at_BOR"] = len(log_excerpt(
            behind.log(), ("token time is",), limit=10_000))

        # -- phase 2: BOR's clock corrected; it catches up with CAL's events --
        behind.stop()
        behind.shift_s = 0.0
        behind.start()
        behind.wait_ready()
        wait_until(lambda: holds(behind, "CAL", 2), timeout=SKEW_WAIT_S,
                   what="BOR, its clock right, accepts CAL's events it refused as early")
        wait_until(lambda: _refused(behind, "timestamp_in_future") > 0, timeout=SKEW_WAIT_S,
                   what="BOR still refuses ATL's events from an hour ahead")
        assert _chain_seqs(behind)["ATL"] == 0
        status, answer = behind.api("POST", "/v1/record", record("BOR", "skew2"))
        assert status == 201, answer
        assert _near(answer["ts"], time.time()), answer  # its own clock, right again
        published["BOR2"] = answer
        for node in (ahead, true):
            wait_until(lambda n=node: holds(n, "BOR", 3), timeout=SKEW_WAIT_S,
                       what=f"{node.member} holds BOR's record signed after the correction")

        # -- phase 3: ATL's clock corrected; its chain already holds timestamps an hour on --
        ahead.stop()
        ahead.shift_s = 0.0
        ahead.start()
        ahead.wait_ready()
        # Its next event may not go back in time (step 14), and one stamped at its head's
        # time would be refused by itself and by everyone as an hour early (step 15): the
        # publish is refused, and the node keeps working.
        status, answer = ahead.api("POST", "/v1/record", record("ATL", "skew3"))
        observed["phase3_ATL_publish_after_correction"] = {"status": status, "body": answer}
        assert status != 201, f"ATL published an event an hour early: {answer}"
        assert "timestamp_in_future" in json.dumps(answer), answer
        assert _chain_seqs(ahead)["ATL"] == 2, "a refused publish changed ATL's chain"
        status, answer = true.api("POST", "/v1/record", record("CAL", "skew3"))
        assert status == 201, answer
        for node in (ahead, behind):
            wait_until(lambda n=node: holds(n, "CAL", 3), timeout=SKEW_WAIT_S,
                       what=f"{node.member} holds CAL's newest record")
        refused_before = _refused(true, "timestamp_in_future")
        wait_until(lambda: _refused(true, "timestamp_in_future") > refused_before,
                   timeout=SKEW_WAIT_S, what="CAL refuses ATL's events again")
        assert _chain_seqs(true)["ATL"] == 0 and _chain_seqs(behind)["ATL"] == 0
        observed["phase3_refusal_log_at_CAL"] = log_excerpt(
            true.log(), ("timestamp_in_future",), limit=10_000)[-1]

        # -- phase 4: CAL's clock reaches ATL's timestamps (shifted an hour on) --
        atl_chain = _chain_ids(ahead, "ATL")
        true.stop()
        true.shift_s = AHEAD_S
        true.start()
        true.wait_ready()
        wait_until(lambda: _chain_ids(true, "ATL") == atl_chain, timeout=SKEW_WAIT_S,
                   what="CAL, its clock at ATL's timestamps, accepts ATL's whole chain")
        observed["phase4_members_values_BOR_at_CAL"] = _members_value_seen(true, "BOR",
                                                                             "skew2")
        for node in nodes:
            assert node.running()
            assert "Traceback" not in node.log(), node.log()[-3000:]

        # A clean stop; the offline check; the spec's timestamp rules in every database.
        codes = {node.member: node.stop() for node in nodes}
        assert codes == {"ATL": 0, "BOR": 0, "CAL": 0}, f"exit codes on SIGTERM: {codes}"
        for node in nodes:
            out = _db_check(node.dir)
            assert out.returncode == 0, f"db check {node.member}: {out.stdout}{out.stderr}"
            rows = _db_rows(node.dir)
            last: dict[str, int] = {}
            for author, seq, ts, received_at in rows:
                assert ts >= last.get(author, 0), f"{node.member}: {author} #{seq} regresses"
                assert ts <= received_at + MAX_SKEW_MS, \
                    f"{node.member}: {author} #{seq} accepted {ts - received_at} ms early"
                last[author] = ts
        # CAL received ATL's events on its own clock (an hour on), BOR's first record
        # on its clock of then (the true time).
        rows = {(a, s): (ts, rec) for a, s, ts, rec in _db_rows(true.dir)}
        assert _near(rows[("ATL", 2)][1], time.time() + AHEAD_S), rows[("ATL", 2)]
        assert rows[("BOR", 2)][1] < time.time() * 1000, rows[("BOR", 2)]
        assert _near(rows[("BOR", 2)][0], started + BEHIND_S), rows[("BOR", 2)]
        figures["published_ts_minus_real_s"] = {
            k: round(v["ts"] / 1000 - time.time(), 0) for k, v in published.items()}
        print(f"[clock] observed: {json.dumps(observed, default=str)}")


def test_clock_corrected_author_gets_a_fitting_refusal(
        federation_factory: Callable[..., Federation], figures: dict[str, Any]) -> None:
    """An operator whose node signed with a clock an hour fast, then fixed the clock, is told
    what is wrong in the spec's terms (§9: a refusal carries a fitting code, not internal)."""
    with hard_deadline(60, "corrected clock refusal"):
        fed = federation_factory(1, interval_ms=SKEW_INTERVAL_MS)
        fed.nodes = {m.member: FaultNode(m) for m in fed.members}
        node = fed["ATL"]
        node.shift_s = AHEAD_S
        fed.start()
        status, answer = node.api("POST", "/v1/record", record("ATL", "fast"))
        assert status == 201, answer
        node.stop()
        node.shift_s = 0.0
        node.start()
        node.wait_ready()
        status, answer = node.api("POST", "/v1/record", record("ATL", "fixed"))
        figures["publish_after_correction"] = {"status": status, "body": answer}
        assert status == 400, (status, answer)
        assert answer["code"] == "timestamp_in_future", answer


# -- 4. full disk ----------------------------------------------------------------------------

# The tmpfs's source name, with the test process's pid: how the guard finds leftovers.
DISK_SOURCE = "pftdisk"
DISK_BYTES = 8 * 1024 * 1024
DISK_INTERVAL_MS = 300
# Records of ~50 KB each (notes at their 2,000-character limit): a few dozen outgrow any
# slack the database and its write-ahead log kept.
BIG_ENTRIES = 24
BIG_RECORDS_MAX = 60
DISK_WAIT_S = 60
DISK_DEADLINE_S = 180
FILL_CHUNK = 64 * 1024
# Rounds of its own a node must run while its disk is full: each one asks for what it lacks.
FULL_ROUNDS = 5


def _our_mounts() -> list[str]:
    """Mount points of this test's tmpfs mounts (source pftdisk-<pid>) that are this
    process's or left by a process that is gone."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, *_ = line.split()
        match = re.fullmatch(rf"{DISK_SOURCE}-(\d+)", source)
        if match is None:
            continue
        owner = int(match.group(1))
        if owner == os.getpid() or not Path(f"/proc/{owner}").exists():
            out.append(target.replace("\\040", " "))
    return out


def _umount(target: str) -> None:
    out = subprocess.run(["umount", target], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:  # still busy: detach it now, the kernel frees it when idle
        subprocess.run(["umount", "-l", target], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_disk() -> Iterator[dict[str, Any]]:
    """``state["mount"](path, bytes)`` mounts a tmpfs of that size on an existing directory,
    keeping its files; at the end every node in ``state["feds"]`` is stopped, then every
    such mount is removed. Guard: mounts left by an earlier run are removed first."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a small tmpfs (running as uid {os.geteuid()})")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("needs mount and umount (Debian package mount)")
    leftovers = _our_mounts()
    for target in leftovers:
        _umount(target)
    if _our_mounts():
        pytest.fail(f"tmpfs mounts of an earlier run cannot be removed: {_our_mounts()}")

    def mount(path: Path, size: int) -> None:
        stash = path.with_name(path.name + ".stash")
        path.rename(stash)
        path.mkdir(mode=0o700)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                              f"{DISK_SOURCE}-{os.getpid()}", str(path)],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            path.rmdir()
            stash.rename(path)
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
        state["mounted"].append(str(path))
        for item in stash.iterdir():
            shutil.move(str(item), str(path / item.name))  # keeps modes (0600 keys)
        stash.rmdir()

    state: dict[str, Any] = {"mount": mount, "feds": [], "mounted": [],
                             "leftovers": leftovers}
    try:
        yield state
    finally:
        for fed in state["feds"]:
            fed.stop_all()
        for target in _our_mounts():
            _umount(target)
        assert _our_mounts() == [], f"tmpfs mounts left behind: {_our_mounts()}"


def _big_record(member: str, i: int, rng: random.Random) -> dict[str, Any]:
    letters = "abcdefghijklmnopqrstuvwxyz "
    return {"template": 1, "entries": [
        {"id": f"e{j}", "domain": "technical", "visibility": "public",
         "organisation": f"{member} CERT big {i}", "email": f"big-{i}-{j}@example.org",
         "notes": "".join(rng.choice(letters) for _ in range(2000))}
        for j in range(BIG_ENTRIES)]}


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; the bytes written."""
    written = 0
    chunk = bytes(FILL_CHUNK)
    with open(path, "wb", buffering=0) as f:
        for _ in range(1_000_000):  # bounded: far more than any disk the test mounts
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != 28:  # ENOSPC
                    raise
                return written
    raise AssertionError("the disk never filled up")


def _gossip_rounds(node: Any) -> int:
    """Gossip rounds this node started, whatever their outcome (its /metrics)."""
    status, text = node.api("GET", "/metrics")
    assert status == 200, (status, text)
    return sum(int(float(v)) for v in re.findall(
        r'^pocnode_gossip_rounds_total\{[^}]*\} (\S+)$', text, re.M))


_FULL_WORDS = ("full", "No space", "ENOSPC")


def _run_victim_out_of_space(fed: Federation, small_disk: dict[str, Any],
                             figures: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """CAL's data directory on a small tmpfs, filled up; BOR publishes big records until CAL
    runs out of space storing them. Returns what the tests need to go on."""
    rng = random.Random(4242)
    small_disk["feds"].append(fed)
    victim_dir = fed["CAL"].dir
    small_disk["mount"](victim_dir, DISK_BYTES)
    # The victim's log lives off the small disk, as journald's would.
    fed.nodes["CAL"] = FaultNode(fed.nodes["CAL"].m, log_path=tmp_path / "CAL.log")
    fed.start()
    bor, victim = fed["BOR"], fed["CAL"]
    wait_until(lambda: victim.get("/v1/status")["authors"] == 3, timeout=DISK_WAIT_S,
               what="CAL holds every member's node.keys")
    filler = victim_dir / "filler"
    figures["filler_bytes"] = _fill(filler)
    log_mark = len(victim.log())
    published = []
    for i in range(BIG_RECORDS_MAX):
        status, answer = bor.api("POST", "/v1/record", _big_record("BOR", i, rng))
        assert status == 201, answer
        published.append((answer["seq"], answer["event_id"]))
        if any(w in victim.log()[log_mark:] for w in _FULL_WORDS):
            break
    bor_head = published[-1][0]
    # The victim must have run into the full disk (else the test proves nothing).
    wait_until(lambda: _chain_seqs(victim)["BOR"] < bor_head
               and any(w in victim.log()[log_mark:] for w in _FULL_WORDS),
               timeout=DISK_WAIT_S, what="CAL ran out of space while BOR's records arrived")
    full_log = victim.log()[log_mark:]
    figures.update(
        big_records_published=len(published), bor_head=bor_head,
        victim_held_while_full=_chain_seqs(victim)["BOR"],
        log_bytes_while_full=len(full_log),
        log_while_full=log_excerpt(full_log, _FULL_WORDS + ("rror", "Traceback"), limit=20))
    return {"victim": victim, "bor": bor, "filler": filler, "published": published,
            "bor_head": bor_head, "full_log": full_log, "victim_dir": victim_dir}


def test_full_disk_then_space_returns(federation_factory: Callable[..., Federation],
                                      small_disk: dict[str, Any], figures: dict[str, Any],
                                      tmp_path: Path) -> None:
    """No corruption, the operator API answers while full, and everything is caught up
    once space returns; `db check` passes."""
    figures.update(disk_bytes=DISK_BYTES, guard_removed=small_disk["leftovers"])
    with hard_deadline(DISK_DEADLINE_S, "full disk test"):
        fed = federation_factory(3, interval_ms=DISK_INTERVAL_MS)
        s = _run_victim_out_of_space(fed, small_disk, figures, tmp_path)
        victim, published, bor_head = s["victim"], s["published"], s["bor_head"]

        assert victim.running()
        status, health = victim.api("GET", "/v1/health")
        figures["health_while_full"] = {"status": status, "body": health}
        assert status in (200, 503), (status, health)
        assert victim.api("GET", "/v1/status")[0] == 200

        s["filler"].unlink()
        t_space = time.monotonic()
        wait_until(lambda: _chain_seqs(victim)["BOR"] >= bor_head, timeout=DISK_WAIT_S,
                   every=0.2, what="CAL catches up with BOR's records once space returns")
        figures["catch_up_after_space_s"] = round(time.monotonic() - t_space, 2)
        lost = _missing(published, _chain_ids(victim, "BOR"))
        assert not lost, lost[:5]
        status, answer = victim.api("POST", "/v1/record", record("CAL", "after-full"))
        assert status == 201, answer
        wait_until(lambda: _chain_seqs(fed["ATL"])["CAL"] >= answer["seq"],
                   timeout=DISK_WAIT_S, what="ATL holds CAL's record written after the fill")

        fed.stop_all()
        checks = {}
        for name in ("ATL", "BOR", "CAL"):
            out = _db_check(fed[name].dir)
            assert out.returncode == 0, f"db check {name}: {out.stdout}{out.stderr}"
            checks[name] = out.stdout.strip().splitlines()[0]
        figures["db_check"] = checks


def test_full_disk_error_names_enospc_and_the_file(
        federation_factory: Callable[..., Federation], small_disk: dict[str, Any],
        figures: dict[str, Any], tmp_path: Path) -> None:
    with hard_deadline(DISK_DEADLINE_S, "full disk error message"):
        fed = federation_factory(3, interval_ms=DISK_INTERVAL_MS)
        s = _run_victim_out_of_space(fed, small_disk, figures, tmp_path)
        lines = [line for line in s["full_log"].splitlines()
                 if "No space left on device" in line or "ENOSPC" in line]
        assert lines, f"no log line names ENOSPC: {figures['log_while_full']}"
        assert any(str(s["victim_dir"] / "pocnode.db") in line for line in lines), \
            f"no ENOSPC line names the database file: {lines[:5]}"
        assert "Traceback" not in s["full_log"], "a full disk is an expected fault, not a bug"


def test_full_disk_gossip_survives_and_stop_is_clean(
        federation_factory: Callable[..., Federation], small_disk: dict[str, Any],
        figures: dict[str, Any], tmp_path: Path) -> None:
    with hard_deadline(DISK_DEADLINE_S, "full disk gossip"):
        fed = federation_factory(3, interval_ms=DISK_INTERVAL_MS)
        s = _run_victim_out_of_space(fed, small_disk, figures, tmp_path)
        victim = s["victim"]
        # While the disk stays full the node goes on gossiping: each of its own rounds asks
        # for BOR's records, fails to store them, and is counted as failed.
        rounds = _gossip_rounds(victim)
        try:
            wait_until(lambda: _gossip_rounds(victim) >= rounds + FULL_ROUNDS,
                       timeout=FULL_ROUNDS * DISK_INTERVAL_MS / 1000 + 10,
                       what=f"CAL runs {FULL_ROUNDS} gossip rounds of its own while full")
            s["filler"].unlink()
            wait_until(lambda: _chain_seqs(victim)["BOR"] >= s["bor_head"],
                       timeout=DISK_WAIT_S, every=0.2,
                       what="CAL catches up with BOR's records once space returns")
        finally:
            figures["victim_gossip_rounds"] = {"when_full": rounds,
                                               "at_end": _gossip_rounds(victim)}
            s["filler"].unlink(missing_ok=True)
            code = victim.stop()
            figures["victim_exit_code"] = code
            figures["victim_log_tail"] = victim.log()[-300:]
        assert code == 0, f"CAL exited {code} on SIGTERM: {victim.log()[-300:]}"
