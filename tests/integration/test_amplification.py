"""Issue 13, class 8: what a peer request may cost in memory is a small, stated multiple of
its size, whatever its shape.

A megabyte of msgpack can decode into a megabyte of Python objects or into a hundred:
an empty map is one byte on the wire and about 64 bytes in CPython, plus the 8-byte pointer
that holds it. Each case here sends, in parallel, requests whose bodies are a valid request
with one field replaced by a 1 MiB array of tiny items (empty maps, empty arrays, nested
arrays, small ints, empty strs), to each field of each route of a real node's peer port, and
reads the node's peak resident memory (VmHWM in /proc, reset before each case) against its
resident memory before.

The bound: peak growth <= 8 x the bytes in flight + 16 MiB. Eight copies covers what an
honest request costs (the body read, the decoded bins, the re-encode the canonical check
makes, the answer); 16 MiB covers TLS and aiohttp's per-connection buffers and the
allocator's granularity. Cases that break it today are strict xfails carrying the figure
measured on this 2-core machine; the test prints every figure.

The node is restarted before each case, so a case is measured on a fresh process: memory a
previous case left in the allocator would otherwise make the next one look cheaper.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from pocnode.core import encoding
from pocnode.core.peer_auth import make_header
from tests.integration.fuzzkit import memory_kb, peer_request, reset_peak
from tests.integration.harness import Federation, Node
from tests.integration.peer import Author

pytestmark = pytest.mark.slow

BODY_BYTES = 1024 * 1024
PARALLEL = 2
AMPLIFICATION_LIMIT = 8
SLACK_KB = 16 * 1024
# Items: one tiny msgpack value repeated; each decodes to a Python object (or a pointer to a
# shared one: small ints and "" are cached by CPython).
SHAPES = {
    "empty_maps": b"\x80",
    "empty_arrays": b"\x90",
    "nested_arrays": b"\x92\x90\x91\x90",  # [[], [[]]]: four lists in four bytes
    "small_ints": b"\x00",
    "empty_strs": b"\xa0",
}
# Each POST route's fields (PROTOCOL.md §8.3), and one no route reads; GET routes ignore a body.
FIELDS = {
    "summary": ["summary", "x"],
    "exchange": ["events", "want", "proofs"],
    "announce": ["heads"],
    "disclosures": ["events"],
    "bilateral": ["events"],
    "hello": [None],
    "public": [None],
}
PATHS = {"hello": "/v1/peer/hello", "public": "/v1/peer/public/ATL"}


@dataclass
class Solo:
    node: Node
    fed_id: bytes
    author: Author
    pin: bytes


@pytest.fixture(scope="module")
def solo(tmp_path_factory) -> Any:
    fed = Federation(tmp_path_factory.mktemp("amplification"), 1)
    try:
        fed.start()
        node = fed["ATL"]
        author = Author(node.dir)
        yield Solo(node=node, fed_id=author.genesis.id, author=author,
                   pin=bytes.fromhex(node.get("/v1/status")["tls_pin"]))
    finally:
        fed.stop_all()


def _restart(node: Node) -> int:
    node.kill9()  # quicker than a clean stop; a node must survive it anyway
    node.start()
    node.wait_ready()
    assert node.proc is not None
    return node.proc.pid


def _amplifier(head: bytes, shape: bytes, size: int) -> bytes:
    """``head``, then a canonical msgpack array of ``shape`` items, ``size`` bytes at most."""
    count = (size - len(head) - 5) // len(shape)
    if count >= 0x1_0000:
        return head + b"\xdd" + count.to_bytes(4, "big") + shape * count
    count = (size - len(head) - 3) // len(shape)
    if count >= 16:
        return head + b"\xdc" + count.to_bytes(2, "big") + shape * count
    count = min(15, (size - len(head) - 1) // len(shape))
    return head + bytes([0x90 | count]) + shape * count


def _body(fed_id: bytes, field: str | None, shape: bytes, size: int = BODY_BYTES) -> bytes:
    """{"fed": fed_id, field: [shape, shape, ...]}, canonical, ``size`` bytes long; for a
    GET route (field None) the bare array."""
    if field is None:
        return _amplifier(b"", shape, size)
    fed_pair = encoding.encode("fed") + encoding.encode(fed_id)
    key = encoding.encode(field)
    if encoding.key_order(field) < encoding.key_order("fed"):  # map keys sort (§2.3)
        return _amplifier(b"\x82" + key, shape, size - len(fed_pair)) + fed_pair
    return _amplifier(b"\x82" + fed_pair + key, shape, size)


def test_the_bodies_are_canonical_requests():
    fed_id = bytes(range(32))
    for field in ("x", "events", "summary"):
        for shape in SHAPES.values():
            body = _body(fed_id, field, shape, size=200)
            doc = encoding.decode(body)
            assert doc["fed"] == fed_id and len(body) <= 200
            assert encoding.encode(doc[field][:1])[1:] == shape


def measure(solo: Solo, route: str, field: str | None, shape: bytes) -> tuple[int, int, list]:
    """(peak growth in kB, bytes in flight, statuses) for PARALLEL requests at once."""
    pid = _restart(solo.node)
    path = PATHS.get(route, f"/v1/peer/{route}")
    method = "GET" if route in PATHS else "POST"
    body = _body(solo.fed_id, field, shape)
    headers = {}
    if route in ("disclosures", "bilateral"):  # a member may send these; they are decoded
        headers["Authorization"] = make_header(
            solo.author.key, fed=solo.fed_id, member="ATL", server_pin=solo.pin,
            now=int(time.time() * 1000), method=method, path=path, body=body)
    if not reset_peak(pid):
        pytest.skip("cannot reset VmHWM (/proc/PID/clear_refs not writable)")
    before = memory_kb(pid)["VmRSS"]
    statuses: list[Any] = []
    threads = [threading.Thread(target=lambda: statuses.append(
        peer_request(solo.node.m.peer_port, method, path, body, headers=headers,
                     timeout=60).status)) for _ in range(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    peak = memory_kb(pid)["VmHWM"]
    return peak - before, PARALLEL * len(body), statuses


def _check(solo: Solo, route: str, fields: list[str | None], shape_name: str) -> None:
    """Measure every field, print each figure, then fail on the worst one over the bound."""
    over = []
    for field in fields:
        growth_kb, in_flight, statuses = measure(solo, route, field, SHAPES[shape_name])
        bound_kb = AMPLIFICATION_LIMIT * in_flight // 1024 + SLACK_KB
        ratio = growth_kb * 1024 / in_flight
        print(f"\n{route}.{field or '(body)'} {shape_name}: {PARALLEL} x "
              f"{in_flight // PARALLEL // 1024} KiB -> peak +{growth_kb // 1024} MiB "
              f"({ratio:.1f}x the bytes in flight; bound {bound_kb // 1024} MiB) {statuses}")
        if not all(s is not None and s < 500 for s in statuses):  # not the bound's failure
            raise RuntimeError(f"{route}.{field}: answers {statuses}")
        if growth_kb > bound_kb:
            over.append(f"{route}.{field}: {shape_name} cost {growth_kb // 1024} MiB at peak "
                        f"for {in_flight // 1024} KiB in flight ({ratio:.0f}x), bound "
                        f"{bound_kb // 1024} MiB")
    assert not over, "; ".join(over)


@pytest.mark.parametrize("route", [
    pytest.param(r) for r in FIELDS])
def test_each_field_of_each_route_costs_a_bounded_multiple_of_its_size(solo, route):
    _check(solo, route, FIELDS[route], "empty_maps")


@pytest.mark.parametrize("shape", [
    # empty_maps: measured by the test above, on exchange.events among others
    pytest.param("empty_arrays"),
    pytest.param("nested_arrays"),
    "small_ints", "empty_strs"])
def test_each_shape_costs_a_bounded_multiple_of_its_size(solo, shape):
    _check(solo, "exchange", ["events"], shape)
