"""Issue acceptance: kill -9 in the middle of heavy ingest loses no acknowledged event."""

from __future__ import annotations

import os
import threading

import pytest

from pocnode.core.disclosure import compile_record
from pocnode.core.record import example_record
from tests.integration.harness import wait_until
from tests.integration.peer import Author, call

pytestmark = pytest.mark.slow


def test_kill9_during_heavy_ingest_loses_no_acknowledged_event(federation_factory):
    fed = federation_factory(2)
    bor = fed["BOR"]
    bor.start()
    bor.wait_ready()
    atl = Author(fed["ATL"].dir)
    body = compile_record(example_record(), os.urandom).body
    events = [atl.next("record", body) for _ in range(3000)]
    acked = {"seq": 0}
    stop = threading.Event()

    def push() -> None:
        for i in range(0, len(events), 50):
            if stop.is_set():
                return
            try:
                status, answer = call(bor.m.peer_port, "/v1/peer/exchange", atl.genesis.id,
                                      {"events": events[i:i + 50], "want": []}, timeout=10)
            except OSError:
                return  # the node died under us: nothing more is acknowledged
            if status != 200:
                return
            assert answer["refused"] == 0
            acked["seq"] = i + 50  # acknowledged: a 2xx after the batch was ingested

    pusher = threading.Thread(target=push)
    pusher.start()
    wait_until(lambda: acked["seq"] >= 600, timeout=60, what="600 events acknowledged")
    bor.kill9()
    stop.set()
    pusher.join(timeout=30)
    assert acked["seq"] >= 600
    bor.start()
    bor.wait_ready()
    head = bor.get("/v1/events/ATL?from=1&limit=1")["head"]
    assert head >= acked["seq"], f"acknowledged {acked['seq']}, kept {head}"
