"""protocol/openapi.yaml describes the operator API as it is: the server has exactly the
routes described, and every answer real nodes give follows the schema the document lists
for its route, method and status, down to the last error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pocnode.core.events import MEMBER_ID
from pocnode.net.operator_api import MAX_EVENTS_PAGE, MAX_REQUEST_BYTES, OperatorApi
from tests.integration.governance_routes import (
    exercise_governance_routes,
    governance_federation,
)
from tests.integration.harness import Node, record, wait_until
from tests.integration.request_routes import exercise_request_routes

pytestmark = pytest.mark.slow

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
SPEC_FILE = PROTOCOL / "openapi.yaml"
RECORD_FILE = PROTOCOL / "record.schema.json"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text())
SPEC_URI = SPEC_FILE.as_uri()
# The spec's `$ref: "record.schema.json"` is relative to the spec's own location, so the
# record schema is registered under the sibling file's URI.
REGISTRY: Registry = Registry().with_resources([
    (SPEC_URI, DRAFT202012.create_resource(SPEC)),
    (RECORD_FILE.as_uri(), Resource.from_contents(json.loads(RECORD_FILE.read_text()))),
])
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# No request makes a sound node fail: its 500s are described but cannot be provoked here.
# The node's own faults (a bug, a full disk), and a rotation caught in the middle.
UNPROVOKED = {"500", "503"}
UNPROVOKED_ROUTES = {("/v1/key/rotate", "post", "409"), ("/v1/record", "post", "409"),
                     ("/v1/requests", "post", "409"), ("/v1/proposals", "post", "409"),
                     ("/v1/withdraw", "post", "409")}


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in SPEC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def _governance(operation: dict[str, Any]) -> bool:
    """Governance routes are exercised in an exercise federation of their own."""
    return "governance" in operation["tags"]


def _unseen(api: Api, governance: bool) -> set[tuple[str, str, str]]:
    """Responses the document lists (for governance routes, or for the others) that the
    test has not seen, bar the node's own faults."""
    described = {(p, m, s) for p, m, op in _operations() if _governance(op) == governance
                 for s in op["responses"]}
    return {d for d in described - api.seen
            if d[2] not in UNPROVOKED and d not in UNPROVOKED_ROUTES}


def _pointer(segments: tuple[str, ...]) -> str:
    escaped = (s.replace("~", "~0").replace("/", "~1") for s in segments)
    return "#" + quote("/" + "/".join(escaped), safe="/~")


def _resolve_ref(ref: str) -> tuple[tuple[str, ...], Any]:
    assert ref.startswith("#/"), f"only references within openapi.yaml here: {ref}"
    segments = tuple(s.replace("~1", "/").replace("~0", "~") for s in ref[2:].split("/"))
    node: Any = SPEC
    for s in segments:
        node = node[s]
    return segments, node


def _walk(value: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield where, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*where, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*where, str(i)))


class Api:
    """Calls a node's operator API and checks each answer against openapi.yaml."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(self, node: Node, method: str, route: str, status: int, *,
                 url: str | None = None, body: Any = None, raw: bytes | None = None,
                 token: str | None = None) -> Any:
        """Request ``url`` (by default the route itself), expect ``status``, validate the
        answer against the spec's response for ``route``, ``method`` and that status."""
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.m.operator_port}{url or route}", data=data, method=method)
        if token != "":
            request.add_header("Authorization",
                               f"Bearer {token if token is not None else node.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                got, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            got, headers, payload = exc.code, exc.headers, exc.read()
        what = f"{method} {url or route} at {node.member}"
        assert got == status, f"{what}: {got} {payload[:500]!r}, expected {status}"
        media = headers.get_content_type()
        answer = json.loads(payload) if media == "application/json" else payload.decode()
        self.check(method, route, status, media, headers, answer, what)
        return answer

    def check(self, method: str, route: str, status: int, media: str, headers: Any,
              answer: Any, what: str) -> None:
        operation = SPEC["paths"][route][method.lower()]
        key = str(status)
        assert key in operation["responses"], f"{what}: status {status} is not in openapi.yaml"
        where: tuple[str, ...] = ("paths", route, method.lower(), "responses", key)
        response = operation["responses"][key]
        if "$ref" in response:
            where, response = _resolve_ref(response["$ref"])
        assert media in response["content"], f"{what}: {media} not described"
        validator = Draft202012Validator(
            {"$ref": SPEC_URI + _pointer((*where, "content", media, "schema"))},
            registry=REGISTRY)
        errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                  for e in validator.iter_errors(answer)]
        assert not errors, f"{what} {status} breaks openapi.yaml:\n" + "\n".join(errors)
        for name, header in response.get("headers", {}).items():
            assert name in headers, f"{what}: no {name} header"
            Draft202012Validator(header["schema"]).validate(headers[name])
        self.seen.add((route, method.lower(), key))


# -- the document itself ---------------------------------------------------------------------


def test_the_server_has_exactly_the_routes_described():
    # The constructor only stores the node and builds the router; no handler runs here,
    # so no node is needed to list the routes.
    api = OperatorApi(None, "unused")  # type: ignore[arg-type]
    served = {(r.method, r.resource.canonical) for r in api.app.router.routes()
              if r.resource is not None}
    # aiohttp answers HEAD wherever GET is (allow_head); the spec says so once, globally.
    assert {p for m, p in served if m == "HEAD"} == {p for m, p in served if m == "GET"}
    described = {(m.upper(), p) for p, m, _ in _operations()}
    assert {(m, p) for m, p in served if m != "HEAD"} == described


def test_the_document_is_sound():
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    description = SPEC["info"]["description"]
    assert "token" in description and "loopback" in description
    assert SPEC["security"] == [{"operatorToken": []}]
    scheme = SPEC["components"]["securitySchemes"]["operatorToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in _operations():
        codes = set(operation["responses"])
        assert all(type(c) is str for c in codes), f"{method} {path}: quote status codes"
        if path == "/v1/health":
            assert operation["security"] == [] and "401" not in codes
        else:
            assert "security" not in operation and "401" in codes, f"{method} {path}"
        assert "500" in codes, f"{method} {path}"
    # Every reference resolves: to openapi.yaml itself or to the record schema beside it.
    resolver = REGISTRY.resolver(base_uri=SPEC_URI)
    refs = [v["$ref"] for _, v in _walk(SPEC) if isinstance(v, dict) and "$ref" in v]
    assert any(r.startswith("record.schema.json") for r in refs)
    for ref in refs:
        resolver.lookup(ref)
    # Every schema is a valid JSON Schema 2020-12.
    schemas = [v for w, v in _walk(SPEC) if w[-1:] == ("schema",)]
    schemas += SPEC["components"]["schemas"].values()
    for schema in schemas:
        Draft202012Validator.check_schema(schema)
    # Limits the server enforces are the ones described.
    member = SPEC["components"]["parameters"]["Member"]["schema"]["$ref"]
    assert _resolve_ref(member)[1]["pattern"] == f"^{MEMBER_ID.pattern}$"
    limit = next(p for p in SPEC["paths"]["/v1/events/{member}"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert str(MAX_EVENTS_PAGE) in limit["description"]
    assert SPEC["components"]["schemas"]["Events"]["properties"]["events"]["maxItems"] == \
        MAX_EVENTS_PAGE
    publish = SPEC["paths"]["/v1/record"]["post"]
    assert publish["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "record.schema.json"}
    assert str(MAX_REQUEST_BYTES) in publish["description"]


# -- real nodes -----------------------------------------------------------------------------


def _view(node: Node, member: str) -> dict[str, Any] | None:
    status, body = node.api("GET", f"/v1/directory/{member}")
    return body if status == 200 else None


def _entry(view: dict[str, Any], entry_id: str) -> dict[str, Any]:
    return next(e for e in view["record"]["entries"] if e["id"] == entry_id)


def test_every_answer_follows_the_spec(federation_factory):
    fed = federation_factory(2)
    fed.start()
    atl, bor = fed["ATL"], fed["BOR"]
    api = Api()

    # Before any record: BOR never publishes one.
    assert api(atl, "GET", "/v1/record", 404)["code"] == "no_record"
    assert api(bor, "GET", "/v1/record", 404)["code"] == "no_record"
    missing = api(atl, "GET", "/v1/directory/{member}", 404, url="/v1/directory/BOR")
    assert missing["code"] == "no_record"

    published = api(atl, "POST", "/v1/record", 201, body=record("ATL", "x"))
    assert published["member"] == "ATL"
    # BOR has the record, and the members-only values after its authenticated pull.
    wait_until(lambda: (v := _view(bor, "ATL")) is not None
               and v["event_id"] == published["event_id"]
               and "person" in _entry(v, "mfa")["fields"],
               timeout=30, what="BOR holds ATL's record and its members values")

    for node in (atl, bor):
        assert api(node, "GET", "/v1/health", 200, token="")["member"] == node.member
        assert api(node, "GET", "/v1/status", 200)["member"] == node.member
        assert api(node, "GET", "/v1/peers", 200)["peers"]
        directory = api(node, "GET", "/v1/directory", 200)["members"]
        assert [m["member"] for m in directory] == ["ATL", "BOR"]
        assert directory[0]["record_seq"] == published["seq"]
        assert directory[1]["record_seq"] is None
        events = api(node, "GET", "/v1/events/{member}", 200, url="/v1/events/ATL")
        assert events["head"] == published["seq"] == len(events["events"])
        assert api(node, "GET", "/v1/proofs", 200) == {"proofs": []}
        assert "pocnode_events" in api(node, "GET", "/metrics", 200)
    theirs = api(bor, "GET", "/v1/directory/{member}", 200, url="/v1/directory/ATL")
    assert theirs["event_id"] == published["event_id"]
    assert "person" not in _entry(theirs, "duty")["fields"]
    assert _entry(theirs, "duty")["withheld"] == {"bilateral": 3}
    own = api(atl, "GET", "/v1/record", 200)
    assert own == api(atl, "GET", "/v1/directory/{member}", 200, url="/v1/directory/ATL")
    assert _entry(own, "duty")["fields"]["person"] == "Bilateral-x"
    assert _entry(own, "duty")["field_visibility"]["person"] == "bilateral"
    page = api(bor, "GET", "/v1/events/{member}", 200, url="/v1/events/ATL?from=2&limit=1")
    assert [e["seq"] for e in page["events"]] == [2]
    assert [e["kind"] for e in page["events"]] == ["record"]
    past = api(bor, "GET", "/v1/events/{member}", 200, url="/v1/events/ATL?from=99")
    assert past["events"] == []
    # A limit above the page size is served as the page size, not refused.
    api(bor, "GET", "/v1/events/{member}", 200, url=f"/v1/events/BOR?limit={10**6}")

    # A missing or wrong token, on every route that needs one.
    for route, method, _ in _operations():
        if route == "/v1/health":
            continue
        url = route.replace("{member}", "ATL")
        for token in ("", "wrong", atl.token + "x", bor.token):
            answer = api(atl, method.upper(), route, 401, url=url, token=token,
                         body=record("ATL", "y") if method == "post" else None)
            assert answer["code"] == "unauthenticated"

    for route in ("/v1/directory/{member}", "/v1/events/{member}"):
        unknown = api(atl, "GET", route, 404, url=route.replace("{member}", "ZZZ"))
        assert unknown["code"] == "unknown_author"
        for bad in ("atl", "A", "A" * 33, "A_B", "%C3%84TL"):
            answer = api(atl, "GET", route, 400, url=route.replace("{member}", bad))
            assert (answer["code"], answer["path"]) == ("malformed", "member")
    for query, name in (("from=0", "from"), ("limit=0", "limit"), ("from=-1", "from"),
                        ("from=abc", "from"), ("limit=1.5", "limit"), ("from=%C2%B2", "from"),
                        ("limit=%D9%A3", "limit"), (f"from={2**63}", "from"),
                        (f"limit={'9' * 5000}", "limit")):
        answer = api(atl, "GET", "/v1/events/{member}", 400, url=f"/v1/events/ATL?{query}")
        assert (answer["code"], answer["path"]) == ("malformed", name), query

    broken = record("ATL", "z")
    broken["entries"][1]["email"] = "not an address"
    answer = api(atl, "POST", "/v1/record", 400, body=broken)
    assert (answer["code"], answer["path"]) == ("invalid_record", "entries[1].email")
    for raw in (b"{", b"\xff", b"", b"[]", b"[" * 100_000, b'{"template": 1}'):
        answer = api(atl, "POST", "/v1/record", 400, raw=raw)
        assert answer["code"] == "invalid_record", raw[:20]
    answer = api(atl, "POST", "/v1/record", 413, raw=b" " * (MAX_REQUEST_BYTES + 1))
    assert answer["code"] == "oversize"
    # None of that published anything.
    assert api(atl, "GET", "/v1/record", 200)["seq"] == published["seq"]

    # Consent: list, a bad action, an unknown member, an offer.
    assert api(atl, "GET", "/v1/consent", 200) == {"consents": []}
    consent = "/v1/consent/{member}"
    assert api(atl, "POST", consent, 400, url="/v1/consent/BOR",
               body={"action": "maybe"})["code"] == "malformed"
    assert api(atl, "POST", consent, 404, url="/v1/consent/ZZZ",
               body={"action": "offer"})["code"] == "unknown_author"
    assert api(atl, "POST", consent, 400, url="/v1/consent/ATL",
               body={"action": "offer"})["code"] == "invalid_request"
    assert api(atl, "POST", consent, 400, url="/v1/consent/BOR",
               body={"action": "offer", "also": 1})["code"] == "malformed"
    offered = api(atl, "POST", consent, 201, url="/v1/consent/BOR", body={"action": "offer"})
    assert offered["mutual"] is False
    assert api(atl, "POST", consent, 409, url="/v1/consent/BOR",
               body={"action": "offer"})["code"] == "no_change"
    published["seq"] = offered["seq"]

    # Key rotation: a bad reason is refused, a good request rotates.
    assert api(atl, "POST", "/v1/key/rotate", 400, body={"reason": ""})["code"] == "malformed"
    for bad in ([1], "x", 3, {"reason": "ok", "extra": True}):
        assert api(atl, "POST", "/v1/key/rotate", 400, body=bad)["code"] == "malformed"
    rotated = api(atl, "POST", "/v1/key/rotate", 201, body={"reason": "openapi test"})
    assert rotated["seq"] == published["seq"] + 1

    # Communication requests, ping tests and published exchanges (PROTOCOL.md §12).
    exercise_request_routes(api, atl, bor)

    # The token: rotated, the old one refused at once, the new one (from the file) works.
    assert api(atl, "POST", "/v1/token/rotate", 201) == {"rotated": True}
    assert api(atl, "GET", "/v1/status", 401)["code"] == "unauthenticated"
    atl.token = (atl.dir / "token").read_text().strip()
    assert api(atl, "GET", "/v1/status", 200)["member"] == "ATL"

    # Every response the document lists was given, bar the node's own faults (and the
    # governance routes, which have their own test below).
    assert _unseen(api, governance=False) == set()


def test_every_governance_answer_follows_the_spec(federation_factory):
    fed = governance_federation(federation_factory)
    api = Api()
    exercise_governance_routes(api, fed)
    atl = fed["ATL"]
    for route, method, operation in _operations():
        if _governance(operation):
            url = route.replace("{id}", "00" * 32)
            answer = api(atl, method.upper(), route, 401, url=url, token="wrong",
                         body={"vote": "yes"} if method == "post" else None)
            assert answer["code"] == "unauthenticated"
    assert _unseen(api, governance=True) == set()


def test_a_method_a_route_lacks_is_answered_405_with_allow(federation_factory):
    fed = federation_factory(1)
    fed.start()
    node = fed["ATL"]
    request = urllib.request.Request(f"http://127.0.0.1:{node.m.operator_port}/v1/status",
                                     data=b"{}", method="POST")
    request.add_header("Authorization", f"Bearer {node.token}")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=15)  # noqa: S310
    assert caught.value.code == 405
    assert "GET" in caught.value.headers["Allow"]
    answer = json.loads(caught.value.read())
    assert answer["code"] == "method_not_allowed"
    Draft202012Validator({"$ref": SPEC_URI + "#/components/schemas/Error"},
                         registry=REGISTRY).validate(answer)


def test_concurrent_publications_take_one_seq_each(federation_factory):
    # Two records published at once must not be signed at one seq: that is an
    # equivocation of the node's own member, and the federation would hold the proof.
    fed = federation_factory(1)
    fed.start()
    node = fed["ATL"]
    api = Api()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda i: api(node, "POST", "/v1/record", 201, body=record("ATL", f"c{i}")),
            range(8)))
    seqs = sorted(a["seq"] for a in answers)
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    assert api(node, "GET", "/v1/proofs", 200) == {"proofs": []}
    assert api(node, "GET", "/v1/record", 200)["seq"] == seqs[-1]
