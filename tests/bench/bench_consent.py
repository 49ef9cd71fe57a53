"""Cost of confidentiality: sealing one record's bilateral values to 200 consented
counterparts, and opening them, per HPKE suite, beside raw X25519 key agreement
measured in the same run (one seal costs at least one key agreement: that is the unit)."""

from __future__ import annotations

import os
import statistics
import time

from cryptography.hazmat.primitives.asymmetric import x25519

from pocnode.core.consent import HpkeKey, bilateral_info, seal
from pocnode.core.disclosure import compile_record
from pocnode.core.record import example_record
from tests.bench.report import Figure

COUNTERPARTS = 200


def _timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False):
    repeat = 3 if quick else 7
    fed = os.urandom(32)
    compiled = compile_record(example_record(), os.urandom)
    bilateral = [d.raw for d in compiled.disclosures if d.visibility == "bilateral"]
    a, b = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    b_pub = b.public_key()
    n_agree = 2000 if not quick else 500
    t_agree = _timed(lambda: [a.exchange(b_pub) for _ in range(n_agree)], repeat) / n_agree
    yield Figure("confidentiality (HPKE sealing)", "raw X25519 key agreement (the unit "
                 "below)", 1 / t_agree, "agreements/s")
    for suite in ("x25519", "mlkem768-x25519"):
        keys = [HpkeKey.generate(suite) for _ in range(COUNTERPARTS)]
        event_id = os.urandom(32)
        infos = [bilateral_info(fed, "ATL", f"M{i:03d}", event_id) for i in range(COUNTERPARTS)]

        def seal_all(keys=keys, infos=infos, suite=suite):
            return [[seal(suite, k.public_bytes, raw, info) for raw in bilateral]
                    for k, info in zip(keys, infos, strict=True)]

        t_seal = _timed(seal_all, repeat)
        boxes = seal_all()[0]
        t_open = _timed(lambda k=keys[0], boxes=boxes, info=infos[0]:
                        [k.open(box, info) for box in boxes], repeat * 5)
        size = sum(map(len, boxes))
        group = "confidentiality (HPKE sealing)"
        yield Figure(group, f"{suite}: sealing one record ({len(bilateral)} bilateral values, "
                     f"{size} B per counterpart) to {COUNTERPARTS} counterparts",
                     t_seal * 1e3, "ms", against="X25519 agreements (x)",
                     ratio=t_seal / t_agree,
                     note=f"{t_seal / t_agree / (COUNTERPARTS * len(bilateral)):.1f} "
                          f"agreements per value")
        yield Figure(group, f"{suite}: opening it at one counterpart", t_open * 1e3, "ms",
                     against="X25519 agreements (x)", ratio=t_open / t_agree)
