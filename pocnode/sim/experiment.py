"""The convergence experiment behind ``pocnode simulate``.

One run, in four phases of virtual time:

1. start: every node boots at a random moment of the first interval (nodes of a real
   federation do not start in step); with ``node_keys``, each publishes its node.keys
   and the run waits until every honest node holds all of them;
2. idle: ``idle_intervals`` gossip intervals with nothing new, to measure what an idle
   federation costs (bytes per node per second);
3. updates: from the first update on, ``updates`` records are published by honest
   nodes chosen at random among those up, one every ``update_every_ms``; partitions,
   churn and the Byzantine nodes' own activity start here;
4. the run ends two intervals after every honest node holds every honest update, or
   at ``max_virtual_s`` after the first update, whichever comes first.

An update is *held* by a node when its store has committed it; coverage counts honest
nodes only (Byzantine nodes neither count nor publish tracked updates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pocnode.core.engine import EngineConfig
from pocnode.core.errors import PocError
from pocnode.core.events import Event
from pocnode.sim.network import Network
from pocnode.sim.runner import (
    SimConfig,
    SimNode,
    Simulator,
    Traffic,
    build_federation,
    byzantine_count,
    seeded_random,
    update_record,
)

# Intervals run after the last update reached every honest node: the trailing traffic
# of an update (exchanges in flight, disclosure pulls) belongs to its cost.
TAIL_INTERVALS = 2
# Without node.keys, nodes boot during the first interval; one more lets all gossip once
# (and the connect timeout of a call to a node not started yet must have passed).
START_INTERVALS = 2
# The start's stop condition looks at every node: asked every so many actions.
CHECK_EVERY = 2000
# The progress callback, every so many actions.
PROGRESS_EVERY = 5000


@dataclass
class UpdateTrack:
    number: int
    author: str
    seq: int
    event_id: bytes
    published_at: int
    has: bytearray
    delays: list[int] = field(default_factory=list)   # ms after publishing, in order

    @property
    def holders(self) -> int:
        return len(self.delays)


@dataclass
class Outcome:
    """What a run measured; :mod:`pocnode.sim.report` turns it into figures."""

    config: SimConfig
    honest: int
    byzantine: dict[str, int]
    updates: list[UpdateTrack]
    failed_publishes: list[str]
    warmup_ms: int
    warmup_complete: bool
    idle: Traffic
    idle_ms: int
    phase: Traffic
    phase_ms: int
    complete: bool
    equivocators: dict[str, float]      # member -> fraction of honest nodes that froze it
    started: Counter[str]
    notes: Counter[tuple[str, str]]
    refusals: Counter[str]
    actions: int
    spawn_dropped: int


class Experiment:
    def __init__(self, config: SimConfig,
                 on_progress: Callable[[str, float, float], None] | None = None) -> None:
        """``on_progress(phase, fraction delivered, virtual seconds)`` is called now and
        then: for a progress display."""
        config.check()
        self.config = config
        self.on_progress = on_progress
        genesis, identities = build_federation(config.nodes, config.seed,
                                               hpke=config.node_keys)
        self.scenario = seeded_random(config.seed, "scenario")
        network = Network(rng=seeded_random(config.seed, "network"), latency=config.latency,
                          loss=config.loss, timeout_ms=config.timeout_ms,
                          connect_timeout_ms=config.connect_timeout_ms)
        self.sim = Simulator(
            genesis=genesis, identities=identities, network=network, seed=config.seed,
            engine_config=EngineConfig(gossip_interval_ms=config.interval_ms,
                                       fanout=config.fanout),
            node_keys=config.node_keys, header_bytes=config.header_bytes)
        self.sim.on_commit = self._committed
        nodes = self.sim.nodes
        count = byzantine_count(config)
        chosen = sorted(self.scenario.sample(range(len(nodes)), count))
        behaviours = config.byzantine.behaviours if config.byzantine else ()
        for k, i in enumerate(chosen):
            nodes[i].behaviour = behaviours[k % len(behaviours)]
        self.honest = [n for n in nodes if n.honest]
        self.tracks: dict[bytes, UpdateTrack] = {}
        self.ordered: list[UpdateTrack] = []
        self.failed: list[str] = []
        self.published = 0
        self.remaining = 0
        self._actions = 0

    # -- coverage ------------------------------------------------------------------------------

    def _committed(self, node: SimNode, events: tuple[Event, ...]) -> None:
        if node.behaviour is not None:
            return
        tracks = self.tracks
        for e in events:
            track = tracks.get(e.id)
            if track is not None:
                self._holds(track, node)

    def _holds(self, track: UpdateTrack, node: SimNode) -> None:
        if track.has[node.index]:
            return
        track.has[node.index] = 1
        track.delays.append(self.sim.now - track.published_at)
        if len(track.delays) == len(self.honest):
            self.remaining -= 1

    def _update(self, node: SimNode, number: int) -> Generator[Any, Any, None]:
        assert node.engine is not None
        try:
            event = yield node.engine.compile_record(update_record(node, number))
        except PocError as exc:
            self.failed.append(f"update {number} at {node.member}: {exc}")
            self.published += 1
            return
        track = UpdateTrack(number, node.member, event.seq, event.id, self.sim.now,
                            bytearray(len(self.sim.nodes)))
        self.tracks[event.id] = track
        self.ordered.append(track)
        self.published += 1
        self.remaining += 1
        self._holds(track, node)   # committed before its id was known here

    def _publish_update(self, number: int) -> None:
        up = [n for n in self.honest if n.up and n.engine is not None]
        if not up:   # every honest node down (heavy churn): try again in a second
            self.sim.clock.after(1000, self._publish_update, number)
            return
        node = up[self.scenario.randrange(len(up))]
        self.sim.spawn(node, self._update(node, number), "publish")

    # -- churn -----------------------------------------------------------------------------------

    def _churn_begin(self, node: SimNode) -> None:
        churn = self.config.churn
        assert churn is not None
        if self.scenario.random() < churn.fraction:
            self._down(node)
        else:
            self.sim.clock.after(self._up_time(), self._down, node)

    def _up_time(self) -> int:
        churn = self.config.churn
        assert churn is not None
        mean_up = churn.mean_down_ms * (1 - churn.fraction) / churn.fraction
        return max(1, round(self.scenario.expovariate(1 / mean_up)))

    def _down(self, node: SimNode) -> None:
        churn = self.config.churn
        assert churn is not None
        self.sim.stop(node)
        down = max(1, round(self.scenario.expovariate(1 / churn.mean_down_ms)))
        self.sim.clock.after(down, self._up, node)

    def _up(self, node: SimNode) -> None:
        self.sim.start(node)
        self.sim.clock.after(self._up_time(), self._down, node)

    # -- the run -----------------------------------------------------------------------------------

    def _done(self) -> bool:
        """Asked after every action of the update phase: cheap, so the run stops (and
        the tail starts) at the instant the last honest node took the last update."""
        self._actions += 1
        if self.on_progress is not None and self._actions % PROGRESS_EVERY == 0:
            self._report("updates")
        return self.published == self.config.updates and self.remaining == 0

    def _report(self, phase: str) -> bool:
        if self.on_progress is not None:
            total = self.config.updates * len(self.honest)
            done = sum(len(t.delays) for t in self.ordered)
            self.on_progress(phase, done / total if total else 1.0,
                             (self.sim.now - self.sim.start_ms) / 1000)
        return False

    def run(self) -> Outcome:
        config, sim, scen = self.config, self.sim, self.scenario
        interval = config.interval_ms
        t0 = sim.now
        for node in sim.nodes:
            sim.clock.at(t0 + scen.randrange(interval), sim.start, node)
        # 1. start
        warmup_complete = True
        if config.node_keys:
            authors = sum(1 for n in sim.nodes if n.runs_engine)

            def keys_everywhere() -> bool:
                self._report("start")
                return all(n.engine is not None and n.engine.authors_held() >= authors
                           for n in self.honest)

            limit = t0 + round(config.max_virtual_s * 1000)
            sim.run_until(limit, stop=keys_everywhere, check_every=CHECK_EVERY)
            warmup_complete = keys_everywhere()
            sim.run_until(sim.now + interval)
        else:
            # Calls to nodes not started yet fail after the connect timeout: past it.
            sim.run_until(t0 + START_INTERVALS * interval + config.connect_timeout_ms,
                          stop=lambda: self._report("start"), check_every=PROGRESS_EVERY)
        warmup_ms = sim.now - t0
        # 2. idle
        before = sim.traffic.snapshot()
        idle_start = sim.now
        sim.run_until(idle_start + config.idle_intervals * interval,
                      stop=lambda: self._report("idle"), check_every=PROGRESS_EVERY)
        idle = sim.traffic.minus(before)
        idle_ms = sim.now - idle_start
        # 3. updates
        start = sim.now
        before = sim.traffic.snapshot()
        for k in range(config.updates):
            sim.clock.at(start + k * config.update_every_ms, self._publish_update, k + 1)
        for p in config.partitions:
            side = bytearray(len(sim.nodes))
            for i in scen.sample(range(len(sim.nodes)), max(1, round(p.fraction *
                                                                     len(sim.nodes)))):
                side[i] = 1
            sim.network.add_partition(start + p.split_ms, start + p.heal_ms, side)
        if config.churn is not None and config.churn.fraction > 0:
            for node in self.honest:
                sim.clock.at(start, self._churn_begin, node)
        span = max(1, config.updates * config.update_every_ms)
        for node in sim.nodes:
            if node.behaviour == "equivocate":
                sim.clock.at(start + scen.randrange(span), self._equivocate, node)
            elif node.behaviour in ("lie", "flood"):
                sim.clock.at(start, sim.start_adversary, node)
        # 4. until every honest node holds every update, then the tail
        limit = start + round(config.max_virtual_s * 1000)
        sim.run_until(limit, stop=self._done, check_every=1)
        complete = self._done()
        if complete:
            last = max((t.published_at + t.delays[-1] for t in self.ordered), default=start)
            sim.run_until(max(sim.now, last + TAIL_INTERVALS * interval))
        phase = sim.traffic.minus(before)
        phase_ms = sim.now - start
        return Outcome(
            config=config, honest=len(self.honest),
            byzantine=dict(Counter(n.behaviour for n in sim.nodes if n.behaviour)),
            updates=self.ordered, failed_publishes=self.failed, warmup_ms=warmup_ms,
            warmup_complete=warmup_complete, idle=idle, idle_ms=idle_ms, phase=phase,
            phase_ms=phase_ms, complete=complete, equivocators=self._equivocators(),
            started=sim.started, notes=sim.notes, refusals=sim.refusals,
            actions=sim.clock.processed, spawn_dropped=sim.spawn_dropped)

    def _equivocate(self, node: SimNode) -> None:
        if node.up and node.engine is not None:
            self.sim.equivocate(node, update_record(node, 0))

    def _equivocators(self) -> dict[str, float]:
        out = {}
        for node in self.sim.nodes:
            if node.behaviour == "equivocate":
                froze = sum(1 for n in self.honest
                            if n.engine is not None and node.member in n.engine.frozen)
                out[node.member] = froze / len(self.honest)
        return out


def run(config: SimConfig,
        on_progress: Callable[[str, float, float], None] | None = None) -> Outcome:
    return Experiment(config, on_progress).run()


__all__ = ["Experiment", "Outcome", "UpdateTrack", "run"]
