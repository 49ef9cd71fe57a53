"""Protocol core throughput (issue: events validated per second vs raw signature checks).

Each figure is printed beside its baseline measured in the same run, in the same process,
over the same signing inputs, so the ratio holds when the machine's speed drifts.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable

from pocnode.core.chain import Verifier
from pocnode.core.disclosure import compile_record
from pocnode.core.engine import Commit, Engine, EngineConfig, Now, Spawn, VerifySignatures
from pocnode.core.events import build_event, parse_event
from pocnode.core.genesis import assemble, build_payload, default_governance, parse_genesis
from pocnode.core.genesis import sign_payload as sign_genesis
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.core.record import example_record
from pocnode.node.verify import VerifyPool
from tests.bench.report import Figure

GOAL_ED25519_RATIO = 0.7


def _federation(alg: str, n_events: int, kind: str = "record") -> tuple[Verifier, list[bytes]]:
    key, other = SigningKey.generate(alg), SigningKey.generate(alg)
    founders = [{"id": m, "name": m, "key": k.public_key, "endpoints": []}
                for m, k in (("ATL", key), ("BOR", other))]
    payload = build_payload(name="bench", created=0, sig_alg=alg, founders=founders,
                            governance=default_governance())
    genesis = parse_genesis(assemble(payload, {"ATL": sign_genesis(payload, key),
                                               "BOR": sign_genesis(payload, other)}))
    _KEYS[genesis.id] = other
    body = (compile_record(example_record(), os.urandom).body if kind == "record"
            else {"tls": os.urandom(32), "hpke": {"suite": "x25519", "pk": os.urandom(32)}})
    events, prev = [], None
    for seq in range(1, n_events + 1):
        data = build_event(key, fed=genesis.id, author="ATL", seq=seq, prev=prev,
                           kind=kind, ts=seq, body=body)
        prev = parse_event(data).id
        events.append(data)
    return Verifier(genesis), events


_KEYS: dict[bytes, SigningKey] = {}   # the ingesting node's key, by federation
BATCH = 250   # events per ingest: a pull's page, about


def _engine_ingest(genesis, events: list[bytes], pool: VerifyPool | None) -> None:
    """A fresh node's engine ingests the events in pages, as from a pull: verification,
    chain checks, commit (a no-op here) and folds; signatures checked by ``pool``, as the
    daemon does, or inline."""
    engine = Engine(genesis=genesis, member="BOR", key=_KEYS[genesis.id],
                    config=EngineConfig(), rng=random.Random(1), random_bytes=os.urandom,
                    now=10**13)
    for i in range(0, len(events), BATCH):
        steps = engine.ingest(events[i:i + BATCH], source=None, now=10**13)
        value = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration:
                break
            value = None
            if isinstance(effect, VerifySignatures):
                value = (pool.verify_blocking(effect.jobs) if pool is not None
                         else [k.verify(sig, m) for k, sig, m in effect.jobs])
            elif isinstance(effect, Now):
                value = 10**13
            elif isinstance(effect, Spawn):
                effect.sequence.close()
            elif not isinstance(effect, Commit):
                raise RuntimeError(f"unexpected effect {type(effect).__name__}")


def bench_engine_ingest(n: int, rounds: int) -> dict[str, float]:
    """Record ingest through the engine, signatures over the verify threads, against raw
    Ed25519 verify in one thread (the issue's limit) and over the same threads."""
    verifier, events = _federation(ED25519, n, "record")
    genesis = verifier.genesis
    parsed = [parse_event(e) for e in events]
    key = verifier.chain("ATL").key_at(1)
    raw_key = key._ed
    pool = VerifyPool()
    jobs = [(key, e.sig, e.signing_input) for e in parsed]
    try:
        def raw() -> None:
            for e in parsed:
                raw_key.verify(e.sig.ed25519, e.signing_input)

        ingest, single, ratio = _paired("engine", lambda: _engine_ingest(genesis, events, pool),
                                        raw, n, rounds)
        _, threaded, ratio_threads = _paired(
            "engine", lambda: _engine_ingest(genesis, events, pool),
            lambda: pool.verify_blocking(jobs), n, rounds)
    finally:
        pool.close()
    return {"events": n, "ingest_per_s": ingest, "raw_per_s": single, "ratio": ratio,
            "raw_threads_per_s": threaded, "ratio_threads": ratio_threads,
            "threads": pool.threads}


def _rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _paired(label: str, a: Callable[[], None], b: Callable[[], None], n: int,
            rounds: int) -> tuple[float, float, float]:
    """Alternate A and B; return the medians of A's rate, B's rate and A/B per pair."""
    ra, rb, ratios = [], [], []
    for _ in range(rounds):
        x, y = _rate(a, n), _rate(b, n)
        ra.append(x)
        rb.append(y)
        ratios.append(x / y)
    return statistics.median(ra), statistics.median(rb), statistics.median(ratios)


def bench_validation(alg: str, n: int, rounds: int, kind: str = "record") -> dict[str, float]:
    verifier, events = _federation(alg, n, kind)
    genesis = verifier.genesis
    parsed = [parse_event(e) for e in events]
    key = verifier.chain("ATL").key_at(1)

    def validate() -> None:
        Verifier(genesis).ingest_all(events)

    if alg == ED25519:
        raw_key = key._ed

        def raw() -> None:
            for e in parsed:
                raw_key.verify(e.sig.ed25519, e.signing_input)
    else:
        raw_key = key._ml

        def raw() -> None:
            for e in parsed:
                raw_key.verify(e.sig.mldsa65, e.signing_input)

    validated, baseline, ratio = _paired(alg, validate, raw, n, rounds)
    return {"events": n, "event_bytes": len(events[0]), "validated_per_s": validated,
            "raw_per_s": baseline, "ratio": ratio}


def run(quick: bool = False) -> list[Figure]:
    n, rounds = (300, 3) if quick else (2000, 7)
    out = []
    for kind, what in (("node.keys", "decode + canonical + chain + verify"),
                       ("record", "the same + record template validation")):
        r = bench_validation(ED25519, n, rounds, kind)
        out.append(Figure(
            "protocol core", f"Verifier alone, one thread: ed25519 {kind} events "
            f"({r['event_bytes']} B), {what}", r["validated_per_s"], "events/s",
            against=f"raw Ed25519 verify in one thread, {r['raw_per_s']:,.0f}/s",
            ratio=r["ratio"], goal=(">=", GOAL_ED25519_RATIO, "ratio") if kind == "node.keys"
            else None))
    e = bench_engine_ingest(n, rounds)
    out.append(Figure(
        "protocol core", f"record ingest by the engine, {BATCH}-event pages, signatures over "
        f"{e['threads']} verify threads (the issue's figure)", e["ingest_per_s"], "events/s",
        against=f"raw Ed25519 verify in one thread, {e['raw_per_s']:,.0f}/s",
        ratio=e["ratio"], goal=(">=", GOAL_ED25519_RATIO, "ratio")))
    out.append(Figure(
        "protocol core", f"the same ingest against raw verify over the same {e['threads']} "
        f"threads (what the node spends beside signatures)", e["ingest_per_s"], "events/s",
        against=f"raw Ed25519 verify over {e['threads']} threads, "
                f"{e['raw_threads_per_s']:,.0f}/s", ratio=e["ratio_threads"]))
    hy = bench_validation(HYBRID, n // 2, rounds)
    out.append(Figure(
        "protocol core", f"ed25519+mldsa65 record events ({hy['event_bytes']} B), full "
        f"validation, one thread", hy["validated_per_s"], "events/s",
        against=f"raw ML-DSA-65 verify, {hy['raw_per_s']:,.0f}/s", ratio=hy["ratio"],
        note="both halves must verify, so < 1 is expected"))
    return out
