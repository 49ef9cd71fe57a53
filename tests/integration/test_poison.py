"""A member who seals garbage to us cannot stop us (review finding): the malformed message
is ignored, the rest of its batch is applied, and the node restarts."""

from __future__ import annotations

import os

import pytest

from pocnode.core import encoding
from pocnode.core.consent import HpkeKey, consent_info, seal
from pocnode.core.disclosure import compile_record
from pocnode.core.events import parse_event
from pocnode.core.record import example_record
from tests.integration.harness import wait_until
from tests.integration.peer import Author, call

pytestmark = pytest.mark.slow


def test_garbage_sealed_to_us_is_ignored_and_the_batch_applies(federation_factory):
    fed = federation_factory(2)
    bor = fed["BOR"]
    bor.start()
    bor.wait_ready()
    atl = Author(fed["ATL"].dir)
    port, fed_id = bor.m.peer_port, atl.genesis.id
    _, answer = call(port, "/v1/peer/exchange", fed_id, {"events": [], "want": [["BOR", 1]]})
    bor_keys = parse_event(answer["events"][0]).body["hpke"]
    info = consent_info(fed_id, "ATL")
    garbage = seal("x25519", bor_keys["pk"], b"\x00" * 64, info)    # opens, but says nothing
    decoy = seal("x25519", HpkeKey.generate("x25519").public_bytes, b"\x00" * 64, info)
    poison = atl.next("sealed", {"suite": "x25519", "boxes": sorted([garbage, decoy])})
    after = atl.next("record", compile_record(example_record(), os.urandom).body)
    status, answer = call(port, "/v1/peer/exchange", fed_id,
                          {"events": [poison, after], "want": []})
    assert status == 200 and answer["accepted"] == 2, answer
    wait_until(lambda: bor.api("GET", "/v1/directory/ATL")[0] == 200, timeout=10,
               what="the record after the garbage is applied")
    bor.stop()
    bor.start()
    bor.wait_ready()
    assert bor.get("/v1/directory/ATL")["seq"] == 2
    assert bor.get("/v1/consent")["consents"] == []
    assert encoding.decode(poison)  # the poison itself stays in the chain, verified
