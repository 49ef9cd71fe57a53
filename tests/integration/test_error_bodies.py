"""Issue 13, class 9: every refusal on either port is a PROTOCOL.md §9 body with a fitting
code, never library text and never `internal` (which §9 keeps for bugs).

The peer port answers canonical msgpack ``{"code", "message"}``; the operator API answers
JSON ``{"code", "message", "path"?}``. A rate-limited request is ``rate_limited`` (429), an
unknown path ``not_found`` (404), a method a route lacks ``method_not_allowed`` (405, with
``Allow``), a body over the limit ``oversize`` (413). The tests expect exactly those names;
where today's servers answer otherwise they are strict xfails naming the bug, so each turns
into a failure (XPASS) the day it is fixed, and its mark must then go.

One node runs, with a low peer rate limit (2 requests per second, bursts of 10) so that a
429 is easy to provoke. Each test speaks from its own loopback address (127.0.0.N), which
has its own bucket, so the tests do not limit one another.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from pocnode.core import encoding
from pocnode.core.peer_auth import make_header
from pocnode.net.operator_api import MAX_REQUEST_BYTES
from tests.integration.fuzzkit import (
    PEER_CODES,
    Answer,
    describe,
    operator_refusal,
    operator_request,
    peer_request,
    refusal_of,
)
from tests.integration.harness import Federation, Node
from tests.integration.peer import Author

pytestmark = pytest.mark.slow

PEER_RATE = 2.0
PEER_BURST = 10.0
MAX_BODY = 2 * 1024 * 1024
_addresses = (f"127.0.0.{n}" for n in itertools.count(2))

PEER_NOT_FOUND = ("the peer port leaves unknown paths to aiohttp, which answers text/plain "
                  "'404: Not Found' (peer_server.PeerServer._limits lets HTTPNotFound through)")
PEER_405 = ("the peer port leaves a method a route lacks to aiohttp, which answers text/plain "
            "'405: Method Not Allowed' (peer_server.PeerServer._limits lets "
            "HTTPMethodNotAllowed through)")
PEER_429 = ("the peer port's rate limit refuses with PocError's base code 'internal' "
            "(peer_server.PeerServer._limits raises PocError('rate limit exceeded')), not "
            "'rate_limited'")
OPERATOR_404_405 = ("the operator API answers an unknown path or a method a route lacks with "
                    "code 'http' and aiohttp's reason text ('Not Found', 'Method Not Allowed') "
                    "as the message (operator_api.OperatorApi._auth)")


@dataclass
class Solo:
    node: Node
    port: int
    fed_id: bytes
    author: Author
    pin: bytes


@pytest.fixture(scope="module")
def solo(tmp_path_factory) -> Any:
    fed = Federation(tmp_path_factory.mktemp("errors"), 1)
    node = fed["ATL"]
    node.configure("peer_rate", str(PEER_RATE))
    node.configure("peer_burst", str(PEER_BURST))
    try:
        fed.start()
        author = Author(node.dir)
        pin = bytes.fromhex(node.get("/v1/status")["tls_pin"])
        yield Solo(node=node, port=node.m.peer_port, fed_id=author.genesis.id, author=author,
                   pin=pin)
    finally:
        fed.stop_all()


def _peer(solo: Solo, method: str, path: str, body: bytes = b"", *, source: str,
          headers: dict[str, str] | None = None) -> tuple[Answer, str]:
    answer = peer_request(solo.port, method, path, body, headers=headers, source=source)
    return answer, describe(method, path, body, headers, answer)


# -- peer port -------------------------------------------------------------------------------


def test_peer_rate_limit_is_rate_limited(solo):
    # Four bursts' worth at once, so that even a slow machine outruns the refill.
    source = next(_addresses)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _peer(solo, "GET", "/v1/peer/hello", source=source),
                                range(int(PEER_BURST) * 4)))
    limited = [(answer, what) for answer, what in answers if answer.status == 429]
    if not limited:
        raise RuntimeError(f"no 429 among {[a.status for a, _ in answers]}")
    answer, what = limited[0]
    assert refusal_of(answer, PEER_CODES, what)["code"] == "rate_limited"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/v1/peer/nothing"), ("POST", "/v1/peer/summary/x"),
    ("GET", "/v1/peer/public"), ("GET", "/v1/status")])
def test_peer_unknown_path_is_not_found(solo, method, path):
    answer, what = _peer(solo, method, path, source=next(_addresses))
    assert answer.status == 404, what
    assert refusal_of(answer, PEER_CODES, what)["code"] == "not_found"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/v1/peer/hello", "GET"), ("GET", "/v1/peer/summary", "POST"),
    ("PUT", "/v1/peer/exchange", "POST"), ("DELETE", "/v1/peer/public/ATL", "GET")])
def test_peer_wrong_method_is_method_not_allowed(solo, method, path, allowed):
    answer, what = _peer(solo, method, path, source=next(_addresses))
    assert answer.status == 405, what
    assert allowed in answer.headers.get("allow", ""), f"no Allow: {allowed}: {what}"
    assert refusal_of(answer, PEER_CODES, what)["code"] == "method_not_allowed"


def test_peer_oversize_is_oversize(solo):
    body = encoding.encode({"fed": solo.fed_id, "pad": b"\x00" * MAX_BODY})
    answer, what = _peer(solo, "POST", "/v1/peer/exchange", body, source=next(_addresses))
    assert answer.status == 413, what
    assert refusal_of(answer, PEER_CODES, what)["code"] == "oversize"


def test_peer_refusals_carry_fitting_codes(solo):
    source = next(_addresses)
    fed_id = solo.fed_id
    members = encoding.encode({"fed": fed_id, "events": [bytes(32)]})

    def token(path: str, body: bytes, skew_ms: int = 0) -> dict[str, str]:
        return {"Authorization": make_header(
            solo.author.key, fed=fed_id, member="ATL", server_pin=solo.pin,
            now=int(time.time() * 1000) + skew_ms, method="POST", path=path, body=body)}

    cases = [
        ("POST", "/v1/peer/disclosures", members, None, 401, "unauthenticated"),
        ("POST", "/v1/peer/disclosures", members,
         token("/v1/peer/disclosures", members, skew_ms=-10 * 60 * 1000), 401,
         "unauthenticated"),
        # A member asking for bilateral values without mutual consent (with itself, here).
        ("POST", "/v1/peer/bilateral", members, token("/v1/peer/bilateral", members), 403,
         "no_consent"),
        ("POST", "/v1/peer/summary", encoding.encode({"fed": bytes(32), "summary": bytes(32)}),
         None, 400, "wrong_federation"),
        ("POST", "/v1/peer/summary", encoding.encode({"fed": fed_id, "summary": b"x"}), None,
         400, "malformed"),
        # Request bodies are read by schema, not decoded whole (§8.5): not a map is malformed.
        ("POST", "/v1/peer/exchange", b"\xc1", None, 400, "malformed"),
        ("GET", "/v1/peer/public/ATL", b"", None, 404, "not_found"),
    ]
    for method, path, body, headers, status, code in cases:
        answer, what = _peer(solo, method, path, body, headers=headers, source=source)
        assert answer.status == status, what
        assert refusal_of(answer, PEER_CODES, what)["code"] == code, what


# -- operator API ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nothing", "/", "/v1/peer/hello", "/v1/record/x"])
def test_operator_unknown_path_is_not_found(solo, path):
    status, headers, raw = operator_request(solo.node, "GET", path)
    doc = operator_refusal(status, headers, raw, f"GET {path}")
    assert (status, doc["code"]) == (404, "not_found"), doc
    assert doc["message"] != "Not Found", "library text"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/v1/status", "GET"), ("PUT", "/v1/record", "POST"),
    ("GET", "/v1/key/rotate", "POST"), ("PATCH", "/v1/consent/BOR", "POST")])
def test_operator_wrong_method_is_method_not_allowed(solo, method, path, allowed):
    status, headers, raw = operator_request(solo.node, method, path)
    doc = operator_refusal(status, headers, raw, f"{method} {path}")
    assert status == 405 and allowed in headers.get("allow", ""), (status, headers)
    assert doc["code"] == "method_not_allowed", doc
    assert doc["message"] != "Method Not Allowed", "library text"


def test_operator_oversize_is_oversize(solo):
    status, headers, raw = operator_request(solo.node, "POST", "/v1/record",
                                     b" " * (MAX_REQUEST_BYTES + 1))
    doc = operator_refusal(status, headers, raw, "POST /v1/record (oversize)")
    assert (status, doc["code"]) == (413, "oversize")


def test_operator_refusals_carry_fitting_codes(solo):
    node = solo.node
    cases = [
        ("GET", "/v1/status", None, "wrong", 401, "unauthenticated"),
        ("GET", "/v1/nothing", None, "", 401, "unauthenticated"),  # before routing
        ("GET", "/v1/directory/atl", None, None, 400, "malformed"),
        ("GET", "/v1/directory/ZZZ", None, None, 404, "unknown_author"),
        ("GET", "/v1/directory/ATL", None, None, 404, "no_record"),
        ("GET", "/v1/events/ATL?limit=0", None, None, 400, "malformed"),
        ("POST", "/v1/record", b"{", None, 400, "invalid_record"),
        ("POST", "/v1/consent/ZZZ", b'{"action": "offer"}', None, 404, "unknown_author"),
        ("POST", "/v1/key/rotate", b'{"reason": ""}', None, 400, "malformed"),
    ]
    for method, path, data, token, status, code in cases:
        got, headers, raw = operator_request(node, method, path, data, token=token)
        doc = operator_refusal(got, headers, raw, f"{method} {path}")
        assert (got, doc["code"]) == (status, code), (method, path, got, doc)


def test_operator_consent_to_oneself_is_refused_as_a_bad_request(solo):
    status, headers, raw = operator_request(solo.node, "POST", "/v1/consent/ATL",
                                     b'{"action": "offer"}')
    doc = operator_refusal(status, headers, raw, "POST /v1/consent/ATL")
    assert status == 400 and doc.get("path") == "member", doc
