"""Fault tests with real processes (issue 13): a partition healed, kill -9 while publishing,
clocks an hour off, a full disk.

Every test has a hard deadline, every wait is a polled condition with its own deadline,
and each prints its figures and writes them as JSON under its pytest tmp dir (run pytest
with -s to see them). Everything made is removed in teardown, whatever the outcome.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
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
    NetnsNode,
    hard_deadline,
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
# Gossip every 500 ms: a side of five converges in a few rounds; this is for a slow box.
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

    Guard: namespaces of an earlier run (pft*) are removed first, each of their processes
    killed by pid; if they cannot be, the test does not start.
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
        remaining = netns.our_namespaces()
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
PUBLISHER_KILLS = 5
RECEIVER_KILLS = 3
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
        records = head - 1  # seq 1 is ATL's node.keys
        figures.update(acknowledged=len(acked), failed_attempts=len(failed),
                       failed_kinds=sorted(set(failed)), atl_head=head,
                       stored_not_acknowledged=records - len(acked),
                       publisher_kills=PUBLISHER_KILLS, receiver_kills=RECEIVER_KILLS)

        # A clean stop, then the offline check re-verifies every stored event.
        fed.stop_all()
        checks = {}
        for name in ("ATL", "BOR", "CAL"):
            out = _db_check(fed[name].dir)
            checks[name] = out.stdout.strip().splitlines()[0] if out.stdout else out.stderr
            assert out.returncode == 0, f"db check {name}: {out.stdout}{out.stderr}"
            assert "every event and proof verifies" in out.stdout
        figures["db_check"] = checks
        print(f"[kill9] {len(acked)} acknowledged, {len(failed)} failed attempts, "
              f"{PUBLISHER_KILLS}+{RECEIVER_KILLS} kills, none lost; db check: {checks}")
