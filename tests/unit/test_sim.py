"""The simulator (pocnode/sim): its options, its store, its executor, and issue 8's
acceptance figures at a size that runs in CI (the 1,000 and 5,000-node runs are in
tests/bench/bench_sim.py)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pocnode.cli import main
from pocnode.core.disclosure import DisclosureRow
from pocnode.core.errors import StoreError
from pocnode.core.events import parse_event
from pocnode.sim import report
from pocnode.sim.experiment import Experiment, run
from pocnode.sim.network import Latency, Partition, SimOptionError
from pocnode.sim.runner import (
    Byzantine,
    Churn,
    SimConfig,
    build_federation,
)
from pocnode.sim.store import MemoryStore

# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,mean", [("50", 50), ("const:7", 7), ("uniform:10:100", 55),
                                       ("exp:50", 50), ("exp:20:50", 50),
                                       ("normal:80:10", 80)])
def test_latency_syntax(text, mean):
    latency = Latency.parse(text)
    assert latency.mean_ms == mean
    assert Latency.parse(str(latency)) == latency


@pytest.mark.parametrize("text,says", [
    ("fast", "expected const:N"), ("uniform:10", "uniform takes 2"),
    ("uniform:100:10", "LO <= HI"), ("exp:x", "numbers of milliseconds"),
    ("exp:60:50", "MIN <= MEAN"), ("const:-5", "0..600000"), ("const:nan", "0..600000")])
def test_latency_refusals_name_the_problem(text, says):
    with pytest.raises(SimOptionError) as info:
        Latency.parse(text)
    assert says in info.value.message and info.value.path == "--latency-ms"


@settings(max_examples=200, deadline=None)
@given(lo=st.integers(0, 5000), span=st.integers(0, 5000), seed=st.integers(0, 2**32))
def test_uniform_latency_stays_within_its_bounds(lo, span, seed):
    latency = Latency.parse(f"uniform:{lo}:{lo + span}")
    rng = random.Random(seed)
    assert all(lo <= latency.draw(rng) <= lo + span for _ in range(20))


@settings(max_examples=100, deadline=None)
@given(floor=st.integers(0, 1000), extra=st.integers(0, 1000), seed=st.integers(0, 2**32))
def test_exponential_latency_never_goes_below_its_floor(floor, extra, seed):
    latency = Latency.parse(f"exp:{floor}:{floor + extra}")
    rng = random.Random(seed)
    assert all(latency.draw(rng) >= floor for _ in range(20))


def test_partition_byzantine_and_churn_syntax():
    assert Partition.parse("2:30") == Partition(2000, 30000, 0.5)
    assert Partition.parse("-1:4.5:0.3") == Partition(-1000, 4500, 0.3)
    assert Byzantine.parse("0.1") == Byzantine(0.1)
    assert Byzantine.parse("0.2:drop,flood").behaviours == ("drop", "flood")
    assert Churn.parse("0.1:20") == Churn(0.1, 20_000)
    for parse, text, says in [
            (Partition.parse, "30:2", "must come after"), (Partition.parse, "1:2:1.5", "between"),
            (Partition.parse, "soon", "SPLIT_S:HEAL_S"), (Byzantine.parse, "1.5", "[0, 1)"),
            (Byzantine.parse, "0.1:drop,steal", "unknown behaviour steal"),
            (Churn.parse, "0.1:0", "FRACTION[:MEAN_DOWN_S]")]:
        with pytest.raises(SimOptionError) as info:
            parse(text)
        assert says in info.value.message


def test_config_refuses_what_the_protocol_cannot_carry():
    with pytest.raises(SimOptionError) as info:
        SimConfig(nodes=2000, node_keys=True).check()
    assert "at most 1024" in info.value.message
    with pytest.raises(SimOptionError):
        SimConfig(nodes=4, byzantine=Byzantine(0.9)).check()


def test_adapter_policies_are_the_daemons():
    # the limits both adapters apply come from the one EngineConfig, not copies
    import inspect

    from pocnode.node import node
    from pocnode.sim.runner import Simulator

    assert "max_spawned" in inspect.getsource(node.Node._spawn)
    assert "max_spawned" in inspect.getsource(Simulator.spawn)


# -- the store ------------------------------------------------------------------------------


def _chain(n: int, genesis, key, member: str) -> list:
    from pocnode.core.events import build_event

    out, prev = [], None
    for seq in range(1, n + 1):
        raw = build_event(key, fed=genesis.id, author=member, seq=seq, prev=prev,
                          kind="node.keys", ts=seq, body={"tls": bytes([seq]) * 32})
        prev = parse_event(raw).id
        out.append(parse_event(raw))
    return out


def test_store_keeps_chains_append_only_and_refuses_a_conflict():
    genesis, ids = build_federation(2, 1)
    events = _chain(4, genesis, ids[0].key, ids[0].member)
    store = MemoryStore()
    store.append(events[:2])
    store.append(events[:3])                 # the same again: skipped, the new one kept
    assert store.ids(ids[0].member) == [e.id for e in events[:3]]
    forged = parse_event(_forked(genesis, ids[0], events[0].id))
    with pytest.raises(StoreError) as info:
        store.append([events[3], forged])
    assert "nothing of the batch was stored" in info.value.message
    assert store.ids(ids[0].member) == [e.id for e in events[:3]]
    sizes = [len(e.raw) for e in events]
    assert store.events_from(ids[0].member, 2, 10, sizes[1]) == [events[1].raw]
    assert store.events_from(ids[0].member, 2, 10, 0) == [events[1].raw]  # at least one
    assert store.events_from(ids[0].member, 1, 2, 10**6) == [e.raw for e in events[:2]]
    store.freeze(ids[0].member, 2, b"proof", 5)
    assert store.ids(ids[0].member) == [events[0].id] and len(store.forked) == 2
    assert store.proof(ids[0].member, 2) == b"proof"


def _forked(genesis, ident, prev: bytes) -> bytes:
    from pocnode.core.events import build_event

    return build_event(ident.key, fed=genesis.id, author=ident.member, seq=2, prev=prev,
                       kind="node.keys", ts=9, body={"tls": b"\xff" * 32})


def test_store_disclosures_first_kept_erased_by_group_and_read_in_digest_order():
    store = MemoryStore()

    def row(digest: int, vis: str, raw: bytes = b"v") -> DisclosureRow:
        return DisclosureRow(author="ATL", event_id=b"e" * 32, digest=bytes([digest]) * 32,
                             entry="x", field="email", visibility=vis, raw=raw)

    store.add_disclosures([row(3, "members"), row(1, "bilateral"), row(2, "members")])
    store.add_disclosures([row(3, "members", b"other")])
    assert store.disclosures_for(b"e" * 32, ("members", "bilateral")) == [b"v"] * 3
    assert store.disclosures[(b"e" * 32, bytes([3]) * 32)].raw == b"v"
    store.erase_disclosures([(b"e" * 32, "members")])
    assert [d.visibility for d in store.disclosures.values()] == ["bilateral"]


# -- issue 8's acceptance, at CI size --------------------------------------------------------


def test_fanout_3_no_loss_one_update_200_nodes_within_1_5_of_push_pull():
    fig = report.figures(run(SimConfig(nodes=200, fanout=3, loss=0.0, updates=1, seed=11)))
    assert fig["honest_coverage"] == 1.0 and fig["complete"]
    assert fig["rounds_to_100"] <= 1.5 * report.push_pull_rounds(200), fig["rounds_to_100"]
    assert fig["rounds_to_50"] <= fig["rounds_to_99"] <= fig["rounds_to_100"]
    assert 1.0 <= fig["redundancy"] < 3, fig["redundancy"]
    # idle: one summary exchange per interval, about 100 bytes of bodies
    assert 50 < fig["idle_bytes_per_node_per_s"] < 200


def test_anti_entropy_alone_is_a_push_pull_epidemic():
    """With no announces (fanout 0) only the engine's rounds spread an update: one call to
    one random peer per interval, both sides exchanging what the other lacks, which is the
    process Karp et al. analyse."""
    fig = report.figures(run(SimConfig(nodes=200, fanout=0, updates=2, seed=13)))
    assert fig["honest_coverage"] == 1.0
    reference = report.push_pull_rounds(200)
    assert 0.5 * reference <= fig["rounds_to_100"] <= 1.5 * reference, fig["rounds_to_100"]
    assert fig["sequences_started"].get("announce", 0) == 0


def test_every_honest_update_reaches_every_honest_node_under_loss_and_byzantine_nodes():
    config = SimConfig(nodes=200, loss=0.1, updates=3, seed=12,
                       byzantine=Byzantine.parse("0.1:drop,lie,replay,equivocate,flood"))
    outcome = run(config)
    fig = report.figures(outcome)
    assert fig["byzantine_nodes"] == {b: 4 for b in ("drop", "equivocate", "flood", "lie",
                                                     "replay")}
    assert fig["complete"] and fig["honest_coverage"] == 1.0
    assert [u["holders"] for u in fig["updates"]] == [180] * 3
    assert fig["calls_failed"] > 0  # the loss and the black holes did bite
    assert fig["refusals"].get("bad_signature", 0) > 0   # the flood was refused
    # equivocators were caught: at least one honest node froze each
    assert fig["equivocators"] and all(f > 0 for f in fig["equivocators"].values())


def test_same_seed_byte_identical_json_whatever_the_hash_seed(tmp_path):
    args = [sys.executable, "-m", "pocnode", "simulate", "--nodes", "30", "--loss", "0.1",
            "--byzantine", "0.1", "--updates", "2", "--churn", "0.1:3", "--partition",
            "0:4", "--node-keys", "--seed", "5", "--json"]
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(args, capture_output=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr.decode()
        outs.append(done.stdout)
    assert outs[0] == outs[1]
    fig = json.loads(outs[0])
    for key in ("nodes", "seed", "rounds_to_100", "theory_rounds", "honest_coverage",
                "bytes_per_node"):
        assert key in fig
    other = CliRunner().invoke(main, ["simulate", "--nodes", "30", "--seed", "6", "--json"])
    assert other.exit_code == 0 and json.loads(other.output)["updates"] != fig["updates"]


def test_a_partition_holds_an_update_on_its_side_until_it_heals():
    # The update is published at 0 s; the split is from 0 s to 20 s.
    outcome = run(SimConfig(nodes=60, seed=3, partitions=(Partition.parse("0:20"),)))
    (track,) = outcome.updates
    crossed = [d for d in track.delays if d < 20_000]
    assert 1 <= len(crossed) <= 30          # the author's side only (half the nodes)
    assert track.holders == 60 and track.delays[-1] >= 20_000


def test_churned_nodes_restore_from_their_store_and_catch_up():
    experiment = Experiment(SimConfig(nodes=40, seed=4, updates=3, churn=Churn(0.2, 3000)))
    outcome = experiment.run()
    assert outcome.complete and all(t.holders == 40 for t in outcome.updates)
    restarted = [n for n in experiment.sim.nodes if n.life > 0]
    assert restarted, "churn stopped some nodes"
    for node in restarted:
        if node.up:  # its engine was rebuilt from its store: the same heads
            assert node.engine.heads() == {a: (s, i) for a, (s, i, _) in
                                           node.store.heads().items()}


def test_node_keys_make_calls_authenticated_and_members_values_flow():
    experiment = Experiment(SimConfig(nodes=30, seed=9, node_keys=True))
    outcome = experiment.run()
    (track,) = outcome.updates
    assert outcome.warmup_complete and track.holders == 30
    fig = report.figures(outcome)
    assert fig["bytes_by_route"].get("/v1/peer/disclosures", 0) > 0
    record = parse_event(experiment.sim.by_member[track.author].store.event(
        track.author, track.seq))
    from pocnode.core.disclosure import withheld_digests

    members = withheld_digests(record.body, "members")
    for node in experiment.sim.nodes:
        held = {d for (e, d) in node.store.disclosures if e == record.id}
        assert members <= held, node.member   # every node pulled the members values


def test_restore_rebuilds_an_engine_equal_to_the_one_that_ran():
    experiment = Experiment(SimConfig(nodes=12, seed=2, node_keys=True, updates=2))
    experiment.run()
    sim = experiment.sim
    node = sim.nodes[0]
    before = node.engine
    assert before is not None
    sim.stop(node)
    sim.start(node)
    after = node.engine
    assert after is not before and after.heads() == before.heads()
    assert after.records.keys() == before.records.keys()
    assert after.pins == before.pins and after.held == before.held


# -- the command -------------------------------------------------------------------------------


def test_simulate_prints_a_table_and_refuses_bad_options_clearly():
    ok = CliRunner().invoke(main, ["simulate", "--nodes", "20"])
    assert ok.exit_code == 0, ok.output
    assert "rounds to 100%" in ok.output and "push-pull" in ok.output
    bad = CliRunner().invoke(main, ["simulate", "--latency-ms", "gauss:5"])
    assert bad.exit_code == 2 and "--latency-ms" in bad.output and "uniform:LO:HI" in bad.output
    bad = CliRunner().invoke(main, ["simulate", "--byzantine", "0.1:steal"])
    assert bad.exit_code == 2 and "unknown behaviour steal" in bad.output


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "coverage.png"
    done = CliRunner().invoke(main, ["simulate", "--nodes", "20", "--plot", str(path)])
    assert done.exit_code == 0, done.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    done = CliRunner().invoke(main, ["simulate", "--nodes", "5", "--plot",
                                     str(tmp_path / "x.png")])
    assert done.exit_code == 2 and "pip install 'pocnode[sim]'" in done.output


# -- theory ---------------------------------------------------------------------------------------


def test_theory_references():
    # Karp et al.: log3 N + ln ln N
    assert report.push_pull_rounds(200) == pytest.approx(6.49, abs=0.01)
    assert report.push_pull_rounds(5000) == pytest.approx(9.89, abs=0.01)
    # Serf: logistic with rate fanout/2 per round; half the nodes at ln(n + 1) / rate
    assert report.serf_rounds(50, 200, 3, 0, 0) == pytest.approx(
        __import__("math").log(201) / 1.5)
    assert report.serf_fraction(report.serf_rounds(99, 200, 3, 0.1, 0.1), 200, 3, 0.1, 0.1) \
        == pytest.approx(0.99)
    curve = report.push_pull_curve(1000, 20)
    assert curve[0] == pytest.approx(0.001) and curve[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(curve, curve[1:], strict=False))


# -- what the simulator's executor showed about the engine ------------------------------------


def test_values_stored_after_a_newer_record_was_folded_do_not_stay_held():
    """The daemon awaits StoreDisclosures (an aiosqlite write) while other tasks run; here
    that interleaving is made by hand: the author's next record is ingested while the pull's
    store is in flight."""
    from pocnode.core import wire
    from pocnode.core.engine import Call, Now, StoreDisclosures
    from pocnode.core.reconcile import Peer
    from pocnode.sim.runner import _one_step, update_record

    experiment = Experiment(SimConfig(nodes=3, node_keys=True, updates=0, seed=3))
    experiment.run()
    sim = experiment.sim
    author, node = sim.nodes[0], sim.nodes[1]

    def publish(number: int):
        message = author.engine.compile_record(update_record(author, number))
        return sim.run_now(author, _one_step(message))

    def ingest(event) -> None:
        sim.run_now(node, node.engine.ingest([event.raw], source=(author.member,
                                                                  author.endpoint),
                                             now=sim.now))

    first = publish(1)
    ingest(first)
    assert first.id in node.engine.need_members
    steps = node.engine.pull_members_from(Peer(author.member, author.endpoint, "genesis"))
    value = None
    while True:
        effect = steps.send(value)
        if type(effect) is Now:
            value = sim.now
        elif type(effect) is Call:
            request = wire.read(wire.DISCLOSURES, wire.encode({**effect.body, "fed": sim.fed}))
            value = wire.encode(sim.run_now(author, author.engine.answer_disclosures(
                request, node.member)))
        else:
            assert type(effect) is StoreDisclosures
            ingest(publish(2))                      # folded while the write is in flight
            node.store.add_disclosures(effect.rows)  # the write completes
            break
    from pocnode.core.engine import EraseDisclosures

    erased = False
    with pytest.raises(StopIteration):
        effect = steps.send(None)
        while True:  # the pull now sees the superseded rows and erases them itself
            assert type(effect) is EraseDisclosures
            node.store.erase_disclosures(effect.groups)
            erased = True
            effect = steps.send(None)
    assert erased
    assert node.engine.records[author.member].id != first.id
    # §7.3: superseded values are neither kept nor served; either nothing of the first
    # record is held, or its erasure is at least pending
    assert node.engine.doomed_disclosures() == [] or node.engine._erasure_due
