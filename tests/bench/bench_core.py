"""Protocol core throughput (issue: events validated per second vs raw signature checks).

Each figure is printed beside its baseline measured in the same run, in the same process,
over the same signing inputs, so the ratio holds when the machine's speed drifts.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from pocnode.core.chain import Verifier
from pocnode.core.disclosure import compile_record
from pocnode.core.events import build_event, parse_event
from pocnode.core.genesis import assemble, build_payload, default_governance, parse_genesis
from pocnode.core.genesis import sign_payload as sign_genesis
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.core.record import example_record

GOAL_ED25519_RATIO = 0.7


def _federation(alg: str, n_events: int, kind: str = "record") -> tuple[Verifier, list[bytes]]:
    key = SigningKey.generate(alg)
    payload = build_payload(name="bench", created=0, sig_alg=alg,
                            founders=[{"id": "ATL", "name": "A", "key": key.public_key,
                                       "endpoints": []}],
                            governance=default_governance())
    genesis = parse_genesis(assemble(payload, {"ATL": sign_genesis(payload, key)}))
    body = (compile_record(example_record(), os.urandom).body if kind == "record"
            else {"tls": os.urandom(32), "hpke": {"suite": "x25519", "pk": os.urandom(32)}})
    events, prev = [], None
    for seq in range(1, n_events + 1):
        data = build_event(key, fed=genesis.id, author="ATL", seq=seq, prev=prev,
                           kind=kind, ts=seq, body=body)
        prev = parse_event(data).id
        events.append(data)
    return Verifier(genesis), events


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


def run(quick: bool = False) -> list[str]:
    n, rounds = (300, 3) if quick else (2000, 7)
    lines = []
    for kind, what in (("node.keys", "decode + canonical + chain + verify"),
                       ("record", "the same + record template validation")):
        r = bench_validation(ED25519, n, rounds, kind)
        verdict = "meets" if r["ratio"] >= GOAL_ED25519_RATIO else "below"
        lines.append(
            f"ed25519 {kind} events ({r['event_bytes']} B), {what}: "
            f"{r['validated_per_s']:,.0f}/s vs raw Ed25519 verify {r['raw_per_s']:,.0f}/s, "
            f"ratio {r['ratio']:.2f} (goal >= {GOAL_ED25519_RATIO}: {verdict})")
    hy = bench_validation(HYBRID, n // 2, rounds)
    lines.append(
        f"ed25519+mldsa65 record events ({hy['event_bytes']} B), full validation: "
        f"{hy['validated_per_s']:,.0f}/s vs raw ML-DSA-65 verify {hy['raw_per_s']:,.0f}/s, "
        f"ratio {hy['ratio']:.2f} (no goal: both halves must verify, so < 1 is expected)")
    return lines
