"""Audit throughput (issue 12): a 200-member x 100-event bundle, audited from its genesis, as
a ratio to raw signature verification of the same bundle in the same run; and the
bundle's size against the sum of its events' sizes.

The bundle is a realistic directory: each member publishes records and node.keys events,
checkpoints its chain, and cosigns the others' checkpoints in batches, so the audit
verifies every event signature, every checkpoint's note signature and every cosignature.
The baseline verifies exactly those signatures (Ed25519, the library's own call) and
nothing else; the ratio is how much of the auditor's time is signature checking.
"""

from __future__ import annotations

import os
import statistics
import time

from pocnode.core import bundle, merkle, tlog
from pocnode.core.audit import Auditor
from pocnode.core.disclosure import compile_record
from pocnode.core.events import build_event, parse_event
from pocnode.core.genesis import assemble, build_payload, default_governance, parse_genesis
from pocnode.core.genesis import sign_payload as sign_genesis
from pocnode.core.keys import ED25519, SigningKey
from pocnode.core.record import example_record
from tests.bench.report import Figure

GOAL_RATIO = 0.7
T0 = 1_767_225_600_000


def build(members: int, events_per_member: int) -> tuple[bytes, int, list[tuple]]:
    """(bundle bytes, sum of event sizes, every signature as (key, message, sig))."""
    keys = {f"S{i:03d}": SigningKey.generate(ED25519) for i in range(members)}
    payload = build_payload(name="bench", created=T0, sig_alg=ED25519, founders=[
        {"id": m, "name": m, "key": k.public_key, "endpoints": []} for m, k in keys.items()],
        governance=default_governance())
    genesis = parse_genesis(assemble(payload, {m: sign_genesis(payload, k)
                                               for m, k in keys.items()}))
    body = compile_record(example_record(), os.urandom).body
    signers = {m: tlog.NoteSigner(k) for m, k in keys.items()}
    chains: dict[str, list[bytes]] = {m: [] for m in keys}
    raws: dict[str, list[bytes]] = {m: [] for m in keys}
    checkpoints: dict[str, tuple[int, bytes]] = {}
    cosign_every = 25  # a witness batches cosignatures; a log checkpoints now and then
    for step in range(events_per_member):
        ts = T0 + step * 60_000
        for m, key in keys.items():
            seq = len(chains[m]) + 1
            prev = chains[m][-1] if chains[m] else None
            if step % cosign_every == cosign_every - 2:
                size = len(chains[m])
                root = merkle.tree_hash(chains[m])
                kind, b = tlog.KIND_CHECKPOINT, tlog.checkpoint_body(
                    signers[m], genesis.id, m, size, root, ts // 1000)
                checkpoints[m] = (size, root)
            elif step % cosign_every == cosign_every - 1 and checkpoints:
                logs = sorted(a for a in checkpoints if a != m)[:tlog.MAX_COSIGS]
                entries = [tlog.cosign_entry(signers[m], genesis.id, m, a, *checkpoints[a],
                                             ts // 1000) for a in logs]
                kind, b = tlog.KIND_COSIGN, {"key": signers[m].witness_keys.to_wire(),
                                             "cosigs": entries[:120]}
            elif step % 2:
                kind, b = "node.keys", {"tls": os.urandom(32)}
            else:
                kind, b = "record", body
            raw = build_event(key, fed=genesis.id, author=m, seq=seq, prev=prev, kind=kind,
                              ts=ts, body=b)
            chains[m].append(parse_event(raw).id)
            raws[m].append(raw)
    writer = bundle.BundleWriter()
    out = [writer.header(genesis.id, T0, "S000"), writer.genesis(genesis.raw)]
    total = 0
    sigs: list[tuple] = []
    for step in range(events_per_member):  # in an order a node could have accepted them
        for m in keys:
            raw = raws[m][step]
            out.append(writer.event(raw))
            total += len(raw)
            ev = parse_event(raw)
            sigs.append((keys[m].public_key._ed, ev.signing_input, ev.sig.ed25519))
            if ev.kind == tlog.KIND_CHECKPOINT:
                cp = tlog.note.Checkpoint(tlog.origin(genesis.id, m), ev.body["size"],
                                          ev.body["root"])
                sigs.append((_pub(ev.body["key"]), cp.text().encode(),
                             ev.body["sig"]["ed25519"]))
            elif ev.kind == tlog.KIND_COSIGN:
                for c in ev.body["cosigs"]:
                    cp = tlog.note.Checkpoint(tlog.origin(genesis.id, c["log"]), c["size"],
                                              c["root"])
                    t = int.from_bytes(c["sig"]["ed25519"][:8], "big")
                    sigs.append((_pub(ev.body["key"]),
                                 tlog.note.cosignature_message(cp.text(), t),
                                 c["sig"]["ed25519"][8:]))
    out.append(writer.end())
    return b"".join(out), total, sigs


def _pub(key: dict) -> object:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PublicKey.from_public_bytes(key["ed25519"])


def audit(data: bytes) -> None:
    auditor = Auditor()
    reader = bundle.BundleReader()
    for i in range(0, len(data), 256 * 1024):
        for record in reader.feed(data[i:i + 256 * 1024]):
            auditor.add(record)
    reader.close()
    report = auditor.finish()
    assert report.status == "ok", [p.text() for p in report.problems][:3]


def raw_verify(sigs: list[tuple]) -> None:
    for key, message, sig in sigs:
        key.verify(sig, message)  # type: ignore[attr-defined]


def run(quick: bool = False) -> list[Figure]:
    members, per = (40, 50) if quick else (200, 100)
    rounds = 1 if quick else 3
    data, total, sigs = build(members, per)
    n = members * per
    ratios, audits, raws = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        audit(data)
        a = time.perf_counter() - start
        start = time.perf_counter()
        raw_verify(sigs)
        r = time.perf_counter() - start
        audits.append(a)
        raws.append(r)
        ratios.append(r / a)
    ratio = statistics.median(ratios)
    group = "audit (export bundles)"
    return [
        Figure(group, f"audit of a {members}-member x {per}-event bundle ({n:,} events, "
               f"{len(sigs):,} signatures incl. checkpoints and cosignatures)",
               statistics.median(audits), "s",
               against=f"raw Ed25519 verify of the same signatures, "
                       f"{statistics.median(raws):.2f} s (ratio = raw / audit)",
               ratio=ratio, goal=(">=", GOAL_RATIO, "ratio")),
        Figure(group, "bundle size", len(data), "B", against=f"the sum of its events, "
               f"{total:,} B", ratio=len(data) / total,
               note=f"{len(data) - total:,} B of genesis, framing and header"),
    ]

if __name__ == "__main__":
    for figure in run(quick=os.environ.get("QUICK") == "1"):
        print(figure.line())
