"""Fuzzing the peer port of a real node (issue 13): every route, unknown paths and wrong
methods, with hypothesis-made bodies and Authorization headers, then checks that the node is
still the node it was.

A two-node federation runs on loopback; BOR is fuzzed, ATL is its honest peer. Bodies are
random bytes, msgpack-shaped noise, random msgpack values of random shape, and mutations of
valid requests of each route (fields missing, added, retyped; lists past their limits; deep
nesting; oversize bins; non-canonical spellings; byte flips), each sent with no
Authorization header, a valid member's token, an expired one, a forged one or noise.

Every answer must be 200 or a 4xx (never a 5xx, never a dropped connection but for a body
over the 2 MiB limit), of type application/msgpack, and a 4xx must carry a canonical
``{"code", "message"}`` whose code is a verdict of PROTOCOL.md §9 that fits the status.
After the run BOR must still serve an honest peer, its resident memory must not have grown
past a stated bound, nothing it logged may be a traceback, and a normal update must still
converge both ways.

Rate limits: BOR runs the local profile (the harness's default, 2,000 requests per second and
bursts of 8,000 per address), far above what one fuzzing client sends, so no answer here is a
429; test_error_bodies.py covers the 429 with a node configured to refuse.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocnode.core import encoding
from pocnode.core.consent import HpkeKey
from pocnode.core.governance import make_application
from pocnode.core.keys import SigningKey
from pocnode.core.peer_auth import make_header
from tests.integration.fuzzkit import (
    MSGPACK,
    PEER_CODES,
    Answer,
    Budget,
    describe,
    memory_kb,
    peer_request,
    refusal_of,
)
from tests.integration.harness import Federation, Node, record, wait_until
from tests.integration.peer import Author, call, tls_context
from tests.mutations import WILD, loose, msgpack_soup, mutate_bytes, mutate_tree

pytestmark = pytest.mark.slow

PEER_SERVER = Path(__file__).resolve().parents[2] / "pocnode" / "net" / "peer_server.py"
ROUTES = {
    "hello": ("GET", "/v1/peer/hello"),
    "summary": ("POST", "/v1/peer/summary"),
    "exchange": ("POST", "/v1/peer/exchange"),
    "announce": ("POST", "/v1/peer/announce"),
    "disclosures": ("POST", "/v1/peer/disclosures"),
    "bilateral": ("POST", "/v1/peer/bilateral"),
    "public": ("GET", "/v1/peer/public/{member}"),
    "apply": ("POST", "/v1/peer/apply"),
    "checkpoints": ("GET", "/v1/peer/checkpoints"),
    "bundle": ("GET", "/v1/peer/bundle"),
}
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
# The peer port's body limit (config max_body_bytes); only a body over it may be cut off.
MAX_BODY = 2 * 1024 * 1024
# Wall-clock share of the fuzzing itself; with the federation's start and the checks after
# it, the test takes about 40 s on this 2-core machine.
FUZZ_SECONDS = 20
# How far BOR's resident memory may grow over the whole run. Bodies here are at most a few
# hundred KB apart from a few just over the 2 MiB limit (refused before decoding), and an
# idle node holds ~60 MB; growth past this would be state kept from refused requests.
MAX_RSS_GROWTH_KB = 48 * 1024


def test_the_fuzzer_knows_every_route_of_the_peer_server():
    served = set(re.findall(r'add_(?:get|post|put|delete|patch|route)\(\s*"(/[^"]*)"',
                            PEER_SERVER.read_text()))
    assert served == {path for _, path in ROUTES.values()}, (
        "peer_server.py serves routes the fuzzer does not know (or no longer serves some): "
        "update ROUTES and TEMPLATES")


@dataclass
class Target:
    """The fuzzed node and what an honest peer knows about it."""

    fed: Federation
    bor: Node
    atl: Node
    port: int
    fed_id: bytes
    pin: bytes
    atl_key: Any
    events: list[bytes]
    heads: list[Any]
    summary: bytes
    record_id: bytes
    application: bytes

    def templates(self) -> dict[str, dict[str, Any]]:
        """A valid request body for each POST route."""
        return {
            "summary": {"fed": self.fed_id, "summary": self.summary},
            "exchange": {"fed": self.fed_id, "events": self.events[:3],
                         "want": [["ATL", 1], ["BOR", 1]], "proofs": []},
            "announce": {"fed": self.fed_id, "heads": self.heads},
            "disclosures": {"fed": self.fed_id, "events": [self.record_id]},
            "bilateral": {"fed": self.fed_id, "events": [self.record_id]},
            "apply": {"fed": self.fed_id, "application": self.application},
        }

    def token(self, method: str, path: str, body: bytes, *, key: Any = None,
              skew_ms: int = 0) -> str:
        return make_header(key or self.atl_key, fed=self.fed_id, member="ATL",
                           server_pin=self.pin, now=int(time.time() * 1000) + skew_ms,
                           method=method, path=path, body=body)


def _record_view(node: Node, member: str) -> dict[str, Any] | None:
    status, body = node.api("GET", f"/v1/directory/{member}")
    return body if status == 200 else None


def _has_members_values(view: dict[str, Any] | None, event_id: str) -> bool:
    if view is None or view["event_id"] != event_id:
        return False
    mfa = next(e for e in view["record"]["entries"] if e["id"] == "mfa")
    return "person" in mfa["fields"]


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Any:
    fed = Federation(tmp_path_factory.mktemp("fuzzpeer"), 2)
    try:
        fed.start()
        atl, bor = fed["ATL"], fed["BOR"]
        status, published = atl.api("POST", "/v1/record", record("ATL", "fuzz"))
        assert status == 201, published
        wait_until(lambda: _has_members_values(_record_view(bor, "ATL"), published["event_id"]),
                   timeout=30, what="BOR holds ATL's record and its members values")
        author = Author(atl.dir)
        port = bor.m.peer_port
        _, held = call(port, "/v1/peer/exchange", author.genesis.id,
                       {"events": [], "want": [["ATL", 1]]})
        _, heads = call(port, "/v1/peer/summary", author.genesis.id, {"summary": bytes(32)})
        status_doc = bor.get("/v1/status")
        yield Target(fed=fed, bor=bor, atl=atl, port=port, fed_id=author.genesis.id,
                     pin=bytes.fromhex(status_doc["tls_pin"]), atl_key=author.key,
                     events=held["events"], heads=heads["heads"],
                     summary=bytes.fromhex(status_doc["summary"]),
                     record_id=bytes.fromhex(published["event_id"]),
                     application=make_application(
                         SigningKey.generate("ed25519"), fed=author.genesis.id, role="member",
                         member="NEW", name="Applicant NEW", hpke_suite="x25519",
                         hpke=HpkeKey.generate("x25519").public_bytes, endpoints=[],
                         ts=1_700_000_000_000))
    finally:
        fed.stop_all()


# -- what is sent ------------------------------------------------------------------------------

_SMALL_ITEMS = st.sampled_from([b"\x00" * 32, ["ATL", 1], ["ATL", 1, b"\x00" * 32], [], {}, 0,
                                "", b""])


def _non_canonical(value: dict[str, Any], draw: st.DrawFn) -> bytes:
    """The same request spelled another way (wide ints and lengths, unsorted keys), or
    with a float or an extension type added."""
    how = draw(st.sampled_from(["loose", "loose", "float", "ext"]))
    if how == "float":
        return msgpack.packb({**value, "x": 1.5}, use_bin_type=True)
    if how == "ext":
        return msgpack.packb({**value, "x": msgpack.ExtType(1, b"xx")}, use_bin_type=True)
    return loose(value, draw, [])


@st.composite
def post_body(draw: st.DrawFn, target: Target, route: str) -> bytes:
    template = target.templates()[route]
    how = draw(st.sampled_from([
        "valid", "mutated", "mutated", "mutated", "bytes", "soup", "random", "random_with_fed",
        "huge_count", "deep", "oversize_bin", "non_canonical", "byte_flips", "over_limit"]))
    if how == "valid":
        return encoding.encode(template)
    if how == "bytes":
        return draw(st.binary(max_size=4096))
    if how == "soup":
        return draw(msgpack_soup())
    if how in ("random", "random_with_fed"):
        value = draw(WILD)
        if how == "random_with_fed":
            value = {**(value if type(value) is dict else {"x": value}), "fed": target.fed_id}
        try:
            return encoding.encode(value)
        except (TypeError, ValueError):
            return b"\xc1"
    if how == "non_canonical":
        return _non_canonical(template, draw)
    if how == "byte_flips":
        return mutate_bytes(encoding.encode(template), draw)
    if how == "over_limit":  # just over the body limit: 413, or cut off while sending
        return encoding.encode({**template, "pad": b"\x00" * MAX_BODY})
    name = draw(st.sampled_from(sorted(template)))
    value = dict(template)
    if how == "huge_count":
        value[name] = [draw(_SMALL_ITEMS)] * draw(st.sampled_from([65, 257, 1001, 1025, 5000,
                                                                  30_000]))
    elif how == "deep":
        nested: Any = value[name]
        for _ in range(draw(st.integers(12, 20))):
            nested = [nested]
        value[name] = nested
    elif how == "oversize_bin":
        size = draw(st.sampled_from([64 * 1024 + 1, 200_000, 1024 * 1024]))
        value[name] = [b"\x00" * size] if type(template[name]) is list else b"\x00" * size
    else:
        value = mutate_tree(template, draw)
    try:
        return encoding.encode(value)
    except (TypeError, ValueError):
        return msgpack.packb(value, use_bin_type=True) if _packable(value) else b"\x90"


def _packable(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


SLICES = (*ROUTES, "unknown_path", "wrong_method")


@st.composite
def peer_requests(draw: st.DrawFn, target: Target, part: str
                  ) -> tuple[str, str, str, bytes, dict]:
    """(route or what, method, path, body, headers) for one slice: a route, requests to
    paths that are none, or a route's path with a method it lacks."""
    kind = part if part in ("unknown_path", "wrong_method") else "route"
    route = part if part in ROUTES else draw(st.sampled_from(sorted(ROUTES)))
    method, path = ROUTES[route]
    body = b""
    if route == "public":
        member = draw(st.sampled_from(["ATL", "BOR", "ZZZ", "atl", ""]) | st.text(max_size=40))
        path = "/v1/peer/public/" + quote(member, safe="")
        if path.endswith("/"):
            path += "ATL"
    if route == "bundle" and draw(st.booleans()):
        author = draw(st.sampled_from(["ATL", "BOR", "ZZZ", "atl", ""]) | st.text(max_size=40))
        path += "?author=" + quote(author, safe="")
    if kind == "unknown_path":
        route = "unknown"
        method = draw(st.sampled_from(["GET", "POST"]))
        path = draw(st.sampled_from([
            "/", "/v1", "/v1/peer", "/v1/peer/", "/v1/peer/hellox", "/v1/peer/hello/x",
            "/v1/peer/public", "/v1/peer/public/ATL/x", "/v2/peer/hello", "/metrics",
            "/v1/health", "/v1/peer/SUMMARY"]) | st.text(min_size=1, max_size=30).map(
            lambda t: "/" + quote(t, safe="/")))
    elif kind == "wrong_method":
        method = draw(st.sampled_from([m for m in METHODS if m != method
                                       and not (method == "GET" and m == "HEAD")]))
        route = "wrong_method"
    if method not in ("GET", "HEAD") or draw(st.integers(0, 9)) == 0:
        body = draw(post_body(target, route if route in target.templates() else "exchange"))
    # Routes that need a member's token mostly get one, so their bodies are reached too.
    needs_token = route in ("disclosures", "bilateral")
    auth = draw(st.sampled_from(["valid"] * (3 if needs_token else 1)
                                + ["none", "none", "expired", "forged", "noise"]))
    headers: dict[str, str] = {}
    if auth == "valid":
        headers["Authorization"] = target.token(method, path, body)
    elif auth == "expired":
        headers["Authorization"] = target.token(method, path, body, skew_ms=-10 * 60 * 1000)
    elif auth == "forged":
        headers["Authorization"] = target.token(method, path, body, key=SigningKey.generate())
    elif auth == "noise":
        headers["Authorization"] = draw(st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=120)).strip() or "x"
    return route, method, path, body, headers


# -- what must come back -----------------------------------------------------------------------

_OK_SHAPES = {
    "hello": [{"fed", "member", "v"}],
    "summary": [{"same", "now"}, {"heads", "frozen", "now"}],
    "exchange": [{"events", "proofs", "accepted", "refused"}],
    "announce": [{"want"}],
    "disclosures": [{"disclosures"}],
    "bilateral": [{"sealed"}],
    "public": [{"fed", "member", "seq", "event", "record"}],
    "apply": [{"received", "id", "fingerprint"}],
    "checkpoints": [{"fed", "checkpoints"}],
}
# Routes whose 200 is not a msgpack map: an export bundle streams its own format (§13.6).
_STREAMED = {"bundle"}


def check_answer(route: str, method: str, path: str, body: bytes, headers: dict,
                 answer: Answer) -> str:
    what = describe(method, path, body, headers, answer)
    if answer.status is None:
        assert len(body) > MAX_BODY, f"connection dropped: {what}"
        return "dropped"
    assert answer.status < 500, f"server error: {what}"
    assert answer.status == 200 or 400 <= answer.status < 500, f"unexpected status: {what}"
    if method == "HEAD":
        return str(answer.status)
    if answer.status != 200:
        return f"{answer.status} {refusal_of(answer, PEER_CODES, what)['code']}"
    if route in _STREAMED:
        assert answer.media == "application/octet-stream" and answer.body, what
        return "200"
    assert answer.media == MSGPACK, f"answer is not {MSGPACK}: {what}"
    doc = encoding.decode(answer.body, max_size=8 * 1024 * 1024)
    assert type(doc) is dict and doc.keys() in _OK_SHAPES.get(route, [doc.keys()]), what
    return "200"


# -- the run -----------------------------------------------------------------------------------


def test_fuzz_every_peer_route_and_the_node_stays_sound(target):
    bor, atl = target.bor, target.atl
    assert bor.proc is not None
    rss_before = memory_kb(bor.proc.pid)["VmRSS"]
    budget = Budget(FUZZ_SECONDS)
    seen: Counter[tuple[str, str]] = Counter()

    def fuzzer(part: str) -> Any:
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(peer_requests(target, part))
        def fuzz(request: tuple[str, str, str, bytes, dict]) -> None:
            route, method, path, body, headers = request
            budget.examples += 1
            answer = peer_request(target.port, method, path, body, headers=headers)
            seen[(route, check_answer(route, method, path, body, headers, answer))] += 1
        return fuzz

    # First, one honest request to each route passes the same checks.
    for route, (method, path) in ROUTES.items():
        path = path.replace("{member}", "ATL")
        body = encoding.encode(target.templates()[route]) if method == "POST" else b""
        headers = {"Authorization": target.token(method, path, body)}
        answer = peer_request(target.port, method, path, body, headers=headers)
        outcome = check_answer(route, method, path, body, headers, answer)
        assert outcome == ("403 no_consent" if route == "bilateral" else "200"), outcome

    runs = budget.round_robin([fuzzer(part) for part in SLICES])
    total = sum(seen.values())
    print(f"\npeer fuzz: {total} requests in {runs} runs ({budget.rounds} full rounds), "
          f"{budget.elapsed():.1f} s; "
          + ", ".join(f"{r} {o}: {n}" for (r, o), n in sorted(seen.items())))
    # Every route was fuzzed, and the POST routes past the framing, into their own checks.
    routes = {r for r, _ in seen}
    assert set(ROUTES) <= routes, f"routes never fuzzed: {set(ROUTES) - routes}"
    for route in ("summary", "exchange", "announce", "disclosures", "bilateral", "apply"):
        assert any(r == route and o.startswith("400 ") for r, o in seen), route

    # The node is still itself.
    status, answer = call(target.port, "/v1/peer/exchange", target.fed_id,
                          {"events": [], "want": [["ATL", 1]]})
    assert status == 200 and answer["events"][:1] == target.events[:1]
    hello = peer_request(target.port, "GET", "/v1/peer/hello")
    assert hello.status == 200 and encoding.decode(hello.body)["member"] == "BOR"
    rss_after = memory_kb(bor.proc.pid)["VmRSS"]
    print(f"BOR resident memory: {rss_before} kB before, {rss_after} kB after "
          f"(+{rss_after - rss_before} kB, bound {MAX_RSS_GROWTH_KB} kB)")
    assert rss_after - rss_before <= MAX_RSS_GROWTH_KB
    log = bor.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]

    # A normal update still converges, both ways.
    status, mine = atl.api("POST", "/v1/record", record("ATL", "after-fuzz"))
    assert status == 201
    status, theirs = bor.api("POST", "/v1/record", record("BOR", "after-fuzz"))
    assert status == 201
    wait_until(lambda: _has_members_values(_record_view(bor, "ATL"), mine["event_id"]),
               timeout=30, what="BOR has ATL's new record and its members values")
    wait_until(lambda: _has_members_values(_record_view(atl, "BOR"), theirs["event_id"]),
               timeout=30, what="ATL has BOR's new record and its members values")


def test_random_garbage_on_a_raw_socket_leaves_the_node_serving(target):
    """Below HTTP: TLS records of noise and broken request lines. Each connection ends
    (closed by the node, or answered 400); the node keeps serving."""
    for garbage in (os.urandom(4096), b"GET / HTTP/1.1\r\n" + os.urandom(512) + b"\r\n\r\n",
                    b"POST /v1/peer/summary HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                    b"POST /v1/peer/summary HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"fffffffffffffff\r\n", b"\x00" * 70_000):
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as raw, \
                tls_context().wrap_socket(raw) as tls:
            try:
                tls.sendall(garbage)
                first = tls.recv(64)
            except OSError:
                first = b""
        assert not first.startswith(b"HTTP/1.1 5"), (garbage[:60], first)
    hello = peer_request(target.port, "GET", "/v1/peer/hello")
    assert hello.status == 200
