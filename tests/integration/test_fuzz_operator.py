"""Fuzzing a real node's operator API from protocol/openapi.yaml with schemathesis (issue 13).

Schemathesis makes, for every operation the document describes, requests that follow it
(positive) and requests that break it in one place (negative): path parameters, query
parameters and bodies, with the node's token or with whatever token schemathesis makes up.
Member ids are also drawn from the federation's own (ATL, the fuzzed node, and BOR), so that
consent offers, records and key rotations really happen and later answers carry them.

Every answer must: not be a 5xx; have a status, content type, headers and body the document
lists for that operation (schemathesis' conformance checks); refuse what breaks the
document (its negative-data check); and, when it is a refusal, be JSON
``{"code", "message", "path"?}`` with a PROTOCOL.md §9 code (or one §9 gives the operator
API) that fits the status and is never `internal` in a 4xx.

Not checked: schemathesis' positive-data acceptance, because two rules of the record
template are beyond JSON Schema by design (unique entry ids; see record.py), so a
schema-valid record may rightly be refused.

What today's node gets wrong is listed in KNOWN, each entry matched narrowly and pinned by a
strict xfail below, so the fuzzing goes on finding new faults meanwhile. When an xfail
starts passing, delete it and its KNOWN entry together.

Bounded by a wall-clock budget (about 40 s of requests) and an example count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.fuzzkit import Budget, operator_refusal, operator_request
from tests.integration.harness import Federation, Node, record, wait_until
from tests.integration.test_openapi import REGISTRY, SPEC_URI
from tests.unit.test_record import _records

pytestmark = pytest.mark.slow

SPEC_FILE = Path(__file__).resolve().parents[2] / "protocol" / "openapi.yaml"
FUZZ_SECONDS = 25
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection)
OWN = "ATL"
MEMBERS = ("ATL", "BOR")


# -- what today's node gets wrong (each pinned by a strict xfail below) --------------------------


def _path(case: Any) -> str:
    return case.operation.path


def _member(case: Any) -> Any:
    return (case.path_parameters or {}).get("member")


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _consent_to_oneself(case: Any, response: Any, check: str) -> bool:
    body = _json(response)
    return (case.method == "POST" and _path(case) == "/v1/consent/{member}"
            and _member(case) == OWN and response.status_code == 500
            and type(body) is dict and body.get("code") == "internal"
            and "not another member" in body.get("message", ""))


def _rotate_takes_any_json(case: Any, response: Any, check: str) -> bool:
    return (check == "negative_data_rejection" and case.method == "POST"
            and _path(case) == "/v1/key/rotate" and response.status_code == 201)


def _consent_takes_extra_fields(case: Any, response: Any, check: str) -> bool:
    return (check == "negative_data_rejection" and case.method == "POST"
            and _path(case) == "/v1/consent/{member}" and response.status_code == 201
            and type(case.body) is dict and case.body.get("action") in ("offer", "withdraw")
            and set(case.body) != {"action"})


# Withdrawal is final: the fuzzed node must stay a member, so only bodies the document
# refuses are sent (tests/integration/test_openapi.py withdraws a node for real).
WITHDRAW_BODY = Draft202012Validator(
    {"$ref": SPEC_URI + "#/paths/~1v1~1withdraw/post/requestBody/content/application~1json/schema"},
    registry=REGISTRY)
EVENTS_SCHEMA = Draft202012Validator({"$ref": SPEC_URI + "#/components/schemas/Events"},
                                     registry=REGISTRY)


def _events_list_sealed(case: Any, response: Any, check: str) -> bool:
    """The answer breaks the schema only by listing `sealed` events."""
    body = _json(response)
    if (check != "response_schema_conformance" or _path(case) != "/v1/events/{member}"
            or response.status_code != 200 or type(body) is not dict):
        return False
    kinds = [e.get("kind") for e in body.get("events", []) if type(e) is dict]
    if "sealed" not in kinds:
        return False
    patched = dict(body, events=[dict(e, kind="record") if e.get("kind") == "sealed" else e
                                 for e in body["events"]])
    return EVENTS_SCHEMA.is_valid(patched)


def _limit_over_the_page(case: Any, response: Any, check: str) -> bool:
    limit = (case.query or {}).get("limit")
    return (check == "negative_data_rejection" and _path(case) == "/v1/events/{member}"
            and response.status_code == 200 and type(limit) is int and limit > 500)


# Empty since the node answers as the document says; a new fault goes here only with a
# strict xfail that pins it.
KNOWN: dict[str, Callable[[Any, Any, str], bool]] = {}


# -- the node and the strategies ---------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_fed(tmp_path_factory) -> Any:
    fed = Federation(tmp_path_factory.mktemp("fuzzoperator"), 2)
    try:
        fed.start()
        atl, bor = fed["ATL"], fed["BOR"]
        assert atl.api("POST", "/v1/record", record("ATL", "op"))[0] == 201
        assert bor.api("POST", "/v1/record", record("BOR", "op"))[0] == 201
        # Each must hold the other's encryption key (node.keys) before it can offer consent.
        for node, other in ((atl, "BOR"), (bor, "ATL")):
            wait_until(lambda n=node, o=other: n.api("GET", f"/v1/directory/{o}")[0] == 200,
                       timeout=30, what=f"{node.member} has {other}'s record")
            status, answer = node.api("POST", f"/v1/consent/{other}", {"action": "offer"})
            assert status == 201, answer
        yield fed
    finally:
        fed.stop_all()


# Schemathesis takes about a second per record here (the record schema is large), so its
# record strategies get fewer examples per round than the others.
EXAMPLES_PER_ROUND = 6
SLOW_EXAMPLES_PER_ROUND = 2


def _strategies(node: Node) -> list[tuple[st.SearchStrategy, int]]:
    """Schemathesis' strategies for every operation, both modes, with the node's token and
    sometimes with its own; member ids also fixed to the federation's; and records from
    test_record's generator beside schemathesis' own. Each with its examples per round."""
    schema = schemathesis.openapi.from_path(SPEC_FILE)
    auth = {"Authorization": f"Bearer {node.token}"}
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/token/rotate":
            # Rotating the token would lock the fuzzer out mid-run; tests/integration/
            # test_openapi.py rotates it and checks the old one is refused.
            continue
        if op.path == "/v1/withdraw":
            out.append((op.as_strategy(GenerationMode.NEGATIVE, headers=auth).filter(
                lambda case: not WITHDRAW_BODY.is_valid(case.body)), EXAMPLES_PER_ROUND))
            out.append((op.as_strategy(GenerationMode.POSITIVE), EXAMPLES_PER_ROUND))
            continue
        has_member = "{member}" in op.path
        publish = op.path == "/v1/record" and op.method.upper() == "POST"
        examples = SLOW_EXAMPLES_PER_ROUND if publish else EXAMPLES_PER_ROUND
        # Operations without parameters or a body have nothing to break but the token.
        negatable = op.method.upper() == "POST" or op.path == "/v1/events/{member}"
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) \
            if negatable or has_member else (GenerationMode.POSITIVE,)
        for mode in modes:
            out.append((op.as_strategy(mode, headers=auth), examples))
            if has_member and (mode is GenerationMode.POSITIVE or negatable):
                for member in MEMBERS:
                    out.append((op.as_strategy(mode, headers=auth,
                                               path_parameters={"member": member}), examples))
        if publish:
            out.append((_records().flatmap(lambda body, op=op: op.as_strategy(
                GenerationMode.POSITIVE, headers=auth, body=body)), EXAMPLES_PER_ROUND))
        else:  # schemathesis' own tokens
            out.append((op.as_strategy(GenerationMode.POSITIVE), EXAMPLES_PER_ROUND))
    return out


def _failures(case: Any, response: Any, headers: dict[str, str]) -> list[tuple[str, str]]:
    """(check, message) for each check the answer fails."""
    out = []
    for check in CHECKS:
        try:
            case.validate_response(response, checks=[check], headers=headers)
        except (AssertionError, BaseExceptionGroup) as exc:
            out.append((check.__name__, str(exc)[:1500]))
    return out


def test_fuzz_the_operator_api_from_its_openapi_document(operator_fed):
    atl = operator_fed["ATL"]
    base = f"http://127.0.0.1:{atl.m.operator_port}"
    budget = Budget(FUZZ_SECONDS)
    seen: Counter[tuple[str, str, int]] = Counter()
    known: Counter[str] = Counter()

    def fuzzer(strategy: st.SearchStrategy, examples: int) -> Any:
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def fuzz(case: Any) -> None:
            budget.examples += 1
            headers = dict(case.headers or {})
            response = case.call(base_url=base, timeout=30)
            seen[(case.method, _path(case), response.status_code)] += 1
            new = []
            for check, message in _failures(case, response, headers):
                matched = [name for name, is_it in KNOWN.items()
                           if is_it(case, response, check)]
                if matched:
                    known[matched[0]] += 1
                else:
                    new.append(f"[{check}] {message}")
            if response.status_code >= 400:
                try:
                    operator_refusal(response.status_code,
                                     {k: v[0] for k, v in response.headers.items()},
                                     response.content, f"{case.method} {case.formatted_path}")
                except AssertionError as exc:
                    if not any(is_it(case, response, "body") for is_it in KNOWN.values()):
                        new.append(f"[error body] {exc}")
            assert not new, f"{case.as_curl_command()}\n" + "\n".join(new)
        return fuzz

    runs = budget.round_robin([fuzzer(s, n) for s, n in _strategies(atl)])
    print(f"\noperator fuzz: {budget.examples} cases in {runs} runs ({budget.rounds} full "
          f"rounds), {budget.elapsed():.1f} s; "
          + ", ".join(f"{m} {p} {s}: {n}" for (m, p, s), n in sorted(seen.items())))
    print("known faults met: " + (", ".join(f"{k}: {n}" for k, n in known.items()) or "none"))
    # The run reached past the token into every operation.
    operations = {(m, p) for m, p, s in seen if s != 401}
    described = {(r.ok().method.upper(), r.ok().path)
                 for r in schemathesis.openapi.from_path(SPEC_FILE).get_all_operations()
                 if r.ok().path != "/v1/token/rotate"}
    assert described <= operations, f"never past the token: {described - operations}"
    assert atl.api("GET", "/v1/health")[0] == 200


# -- the faults KNOWN tolerates, pinned ---------------------------------------------------------


@pytest.mark.parametrize("body", [b"[1]", b'"x"', b"3", b'{"reason": "ok", "force": true}'])
def test_rotate_refuses_a_body_that_is_not_the_documented_object(operator_fed, body):
    node = operator_fed["BOR"]
    seq = node.get("/v1/events/BOR")["head"]
    status, headers, raw = operator_request(node, "POST", "/v1/key/rotate", body)
    assert node.get("/v1/events/BOR")["head"] == seq, f"the key was rotated: {raw[:200]!r}"
    assert operator_refusal(status, headers, raw, "POST /v1/key/rotate")["code"] == "malformed"


def test_consent_refuses_fields_the_document_does_not_allow(operator_fed):
    node = operator_fed["BOR"]
    seq = node.get("/v1/events/BOR")["head"]
    status, headers, raw = operator_request(node, "POST", "/v1/consent/ATL",
                                            b'{"action": "offer", "to": "CAL"}')
    assert node.get("/v1/events/BOR")["head"] == seq, f"published: {raw[:200]!r}"
    assert operator_refusal(status, headers, raw, "POST /v1/consent/ATL")["code"] == "malformed"


def test_events_of_every_kind_follow_the_document(operator_fed):
    node = operator_fed["ATL"]
    body = node.get("/v1/events/ATL?limit=500")
    assert "sealed" in {e["kind"] for e in body["events"]}  # the fixture offered consent
    errors = [e.message for e in EVENTS_SCHEMA.iter_errors(body)]
    assert not errors, errors


def test_a_limit_over_the_page_is_what_the_document_says(operator_fed):
    node = operator_fed["ATL"]
    spec_limit = next(p for p in _op_parameters("/v1/events/{member}") if p["name"] == "limit")
    status, _, raw = operator_request(node, "GET", "/v1/events/ATL?limit=501")
    # The document allows it and says larger limits are served as a page of 500.
    assert spec_limit["schema"]["maximum"] >= 501 and "500" in spec_limit["description"]
    assert status == 200 and len(json.loads(raw)["events"]) <= 500, status


def _op_parameters(path: str) -> list[dict[str, Any]]:
    from tests.integration.test_openapi import SPEC

    return SPEC["paths"][path]["get"]["parameters"]
