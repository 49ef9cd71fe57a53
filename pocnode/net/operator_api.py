"""The operator API: JSON over HTTP on loopback, one bearer token (protocol/openapi.yaml).

The CLI is a client of this API, and so may be any operator's script. Every
route but ``/v1/health`` needs ``Authorization: Bearer <token>``, compared in
constant time. Errors are ``{"code", "message", "path"?}`` with the spec's codes:
400 for a refused request, 500 for a fault of this node, never a bare text page.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pocnode.core.errors import (
    Malformed,
    MethodNotAllowed,
    NotFound,
    PocError,
    Unauthenticated,
)
from pocnode.core.events import MEMBER_ID
from pocnode.net.server_log import ServerLog
from pocnode.net.services import OperatorService

log = logging.getLogger("pocnode.operator")
# A record is a few KB; 256 KiB leaves room for long notes in every field.
MAX_REQUEST_BYTES = 256 * 1024
MAX_EVENTS_PAGE = 500
# ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
_DECIMAL = re.compile(r"[0-9]{1,20}")
# Status per code: a refused request is a 4xx with its own code; this node's faults 5xx.
_STATUS = {"not_found": 404, "unknown_author": 404, "no_record": 404,
           "method_not_allowed": 405, "no_change": 409, "busy": 409, "double_vote": 409,
           "vote_too_late": 409, "oversize": 413,
           "rate_limited": 429, "unauthenticated": 401, "internal": 500, "store": 503,
           "not_party": 403, "out_of_order": 409}


def encode_json_safe(value: Any) -> Any:
    """bytes -> lowercase hex, recursively: JSON has no bytes (openapi.yaml, HexBytes)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [encode_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_json_safe(v) for k, v in value.items()}
    return value


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(encode_json_safe(obj), status=status, headers=_HEADERS,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


# Like the peer port: no library names or versions in answers.
_HEADERS = {"Server": "pocnode"}


def _error(status: int, code: str, message: str, path: str | None = None) -> web.Response:
    body = {"code": code, "message": message}
    if path:
        body["path"] = path
    return _json(body, status)  # noqa: RET504



def _operator_refused(code: str, message: str, **fields: Any) -> None:
    """The operator's own API is loopback and token-gated: its refusals are logged as
    they come, one line each, never with a stranger's bytes beyond the reason's limit."""
    log.warning(message, extra={"fields": {"code": code, **fields}})

class OperatorApi:
    def __init__(self, node: OperatorService, token: str) -> None:
        self.node = node
        self._token = token.encode()
        self.app = web.Application(client_max_size=MAX_REQUEST_BYTES,
                                   middlewares=[self._auth])
        r = self.app.router
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/peers", self.peers)
        r.add_get("/v1/directory", self.directory)
        r.add_get("/v1/directory/{member}", self.directory_member)
        r.add_get("/v1/events/{member}", self.events)
        r.add_get("/v1/record", self.own_record)
        r.add_post("/v1/record", self.publish_record)
        r.add_get("/v1/proofs", self.proofs)
        r.add_post("/v1/key/rotate", self.rotate_key)
        r.add_get("/v1/consent", self.consents)
        r.add_post("/v1/consent/{member}", self.set_consent)
        r.add_post("/v1/token/rotate", self.rotate_token)
        r.add_get("/v1/proposals", self.proposals)
        r.add_post("/v1/proposals", self.propose)
        r.add_get("/v1/proposals/{id}", self.proposal)
        r.add_post("/v1/proposals/{id}/vote", self.vote)
        r.add_post("/v1/withdraw", self.withdraw)
        r.add_get("/v1/applications", self.applications)
        # Communication requests and ping tests (PROTOCOL.md §12).
        r.add_get("/v1/requests", self.requests_list)
        r.add_post("/v1/requests", self.send_request)
        r.add_get("/v1/requests/{member}/{id}", self.request_view)
        r.add_post("/v1/requests/{member}/{id}", self.request_status)
        r.add_get("/v1/ping", self.ping_report)
        r.add_post("/v1/ping", self.ping_run)
        r.add_get("/v1/exchanges", self.exchanges)
        r.add_get("/metrics", self.metrics)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None,
                                     logger=ServerLog(_operator_refused))
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.path != "/v1/health":
            header = request.headers.get("Authorization", "")
            given = header[7:].encode() if header.startswith("Bearer ") else b""
            if not hmac.compare_digest(given, self._token):
                log.warning("operator request refused: bad token",
                            extra={"fields": {"path": request.path}})
                return _error(401, Unauthenticated.code,
                              "missing or wrong bearer token (see the data dir's token file)")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return _error(413, "oversize", f"body larger than {MAX_REQUEST_BYTES} bytes")
            if exc.status == 404:
                return _error(404, NotFound.code, f"no route {request.path[:100]!r}; the "
                                                  "routes are in protocol/openapi.yaml")
            if exc.status == 405:
                response = _error(405, MethodNotAllowed.code,
                                  f"{request.method[:10]} is not allowed on {request.path[:100]}")
                if "Allow" in exc.headers:  # a 405 must say what is allowed
                    response.headers["Allow"] = exc.headers["Allow"]
                return response
            return _error(exc.status, Malformed.code, f"HTTP {exc.status}")
        except PocError as exc:
            return _error(_STATUS.get(exc.code, 400), exc.code, exc.message, exc.path)
        except Exception:
            log.exception("operator request failed", extra={"fields": {"path": request.path}})
            return _error(500, "internal", "internal error; the node's log has the details")

    async def health(self, request: web.Request) -> web.Response:
        health = self.node.health()
        return _json({"status": health["status"], "member": self.node.member,
                      "health": health})

    async def status(self, request: web.Request) -> web.Response:
        return _json(self.node.status())

    async def peers(self, request: web.Request) -> web.Response:
        return _json({"peers": self.node.peers()})

    async def directory(self, request: web.Request) -> web.Response:
        return _json({"members": self.node.directory()})

    async def directory_member(self, request: web.Request) -> web.Response:
        member = self._member(request)
        if not self.node.is_member(member):
            return _error(404, "unknown_author", f"{member} is not a member of this federation")
        view = await self.node.record_view(member)
        if view is None:
            return _error(404, "no_record", f"no record from {member} has reached this node yet")
        return _json(view)

    async def own_record(self, request: web.Request) -> web.Response:
        view = await self.node.record_view(self.node.member)
        if view is None:
            return _error(404, "no_record", "this node has not published a record yet")
        return _json(view)

    async def publish_record(self, request: web.Request) -> web.Response:
        plain = await _json_body(request, "invalid_record")
        return _json(await self.node.publish_record(plain), status=201)

    async def events(self, request: web.Request) -> web.Response:
        member = self._member(request)
        if not self.node.is_member(member):
            return _error(404, "unknown_author", f"{member} is not a member of this federation")
        first = _int_param(request, "from", 1)
        limit = min(_int_param(request, "limit", 100), MAX_EVENTS_PAGE)
        return _json(await self.node.events(member, first, limit))

    async def rotate_key(self, request: web.Request) -> web.Response:
        body = await _json_body(request, "malformed") if request.can_read_body else {}
        _only(body, {"reason"}, set())
        reason = body.get("reason")
        if "reason" in body and (not isinstance(reason, str) or not 1 <= len(reason) <= 256):
            return _error(400, "malformed", "reason must be a string of 1..256 characters",
                          "reason")
        return _json(await self.node.rotate_key(reason), status=201)

    async def consents(self, request: web.Request) -> web.Response:
        return _json({"consents": self.node.consents()})

    async def set_consent(self, request: web.Request) -> web.Response:
        member = self._member(request)
        body = await _json_body(request, "malformed")
        _only(body, {"action"}, {"action"})
        action = body["action"]
        if action not in ("offer", "withdraw"):
            return _error(400, "malformed", "action must be offer or withdraw", "action")
        return _json(await self.node.set_consent(member, action), status=201)

    async def proofs(self, request: web.Request) -> web.Response:
        return _json({"proofs": await self.node.proofs()})

    async def rotate_token(self, request: web.Request) -> web.Response:
        token = await self.node.rotate_token()
        self._token = token.encode()
        return _json({"rotated": True}, status=201)

    async def proposals(self, request: web.Request) -> web.Response:
        return _json({"proposals": self.node.proposals()})

    async def proposal(self, request: web.Request) -> web.Response:
        view = self.node.proposal(_hex32(request.match_info["id"], "id"))
        if view is None:
            return _error(404, "not_found", "no such proposal has reached this node", "id")
        return _json(view)

    async def propose(self, request: web.Request) -> web.Response:
        body = await _json_body(request, "malformed")
        _only(body, {"decision", "note", *_DECISION_FIELDS_ALL}, {"decision"})
        decision = body["decision"]
        fields = _DECISION_FIELDS.get(decision) if isinstance(decision, str) else None
        if fields is None:
            raise Malformed(f"decision must be one of {', '.join(_DECISION_FIELDS)}",
                            path="decision")
        # A field of another decision is refused, not ignored: the proposal signed must be
        # the one the body describes.
        foreign = sorted(set(body) - fields - {"decision", "note"})
        if foreign:
            raise Malformed(f"a {decision} proposal takes {sorted(fields)} and note; "
                            f"not {foreign}", path=foreign[0])
        params: dict[str, Any] = {}
        if "application" in body:
            params["application"] = _hexbytes(body["application"], "application", 16 * 1024)
        if "subject" in body:
            if not isinstance(body["subject"], str):
                raise Malformed("subject must be a member id", path="subject")
            params["subject"] = body["subject"]
        if "key" in body:
            params["key"] = _public_key(body["key"])
        if "from_seq" in body:
            if type(body["from_seq"]) is not int or body["from_seq"] < 1:
                raise Malformed("from_seq must be a positive integer", path="from_seq")
            params["from_seq"] = body["from_seq"]
        if "governance" in body:
            params["governance"] = _governance(body["governance"])
        if "note" in body:
            note = body["note"]
            if not isinstance(note, str) or not 1 <= len(note) <= 256:
                raise Malformed("note must be a string of 1..256 characters", path="note")
            params["note"] = note
        return _json(await self.node.propose(decision, params), status=201)

    async def vote(self, request: web.Request) -> web.Response:
        proposal_id = _hex32(request.match_info["id"], "id")
        body = await _json_body(request, "malformed")
        _only(body, {"vote"}, {"vote"})
        if body["vote"] not in ("yes", "no", "abstain", "object"):
            raise Malformed("vote must be yes, no, abstain or object", path="vote")
        return _json(await self.node.vote(proposal_id, body["vote"]), status=201)

    async def withdraw(self, request: web.Request) -> web.Response:
        body = await _json_body(request, "malformed") if request.can_read_body else {}
        _only(body, {"reason", "confirm"}, {"confirm"})
        if body["confirm"] is not True:
            raise Malformed("withdrawal is final: confirm must be true", path="confirm")
        reason = body.get("reason")
        if "reason" in body and (not isinstance(reason, str) or not 1 <= len(reason) <= 256):
            raise Malformed("reason must be a string of 1..256 characters", path="reason")
        return _json(await self.node.withdraw(reason), status=201)

    async def applications(self, request: web.Request) -> web.Response:
        return _json({"applications": self.node.applications()})
    # -- communication requests (§12) -----------------------------------------------------

    async def requests_list(self, request: web.Request) -> web.Response:
        return _json(self.node.requests_list())

    async def send_request(self, request: web.Request) -> web.Response:
        body = await _json_body(request, "malformed")
        _only(body, _SEND_FIELDS, {"to", "type", "subject"})
        fields: dict[str, Any] = {}
        for name, value in body.items():
            if name == "reply_by":
                if type(value) is not int or not 0 <= value < 2**63:
                    raise Malformed("reply_by must be a time in ms", path=name)
            elif name == "attachments":
                if not isinstance(value, list) or len(value) > 64:
                    raise Malformed("attachments must be a list of SHA-256 digests (hex)",
                                    path=name)
                value = [_hex(v, 32, f"attachments[{i}]") for i, v in enumerate(value)]
            elif name == "ref":
                _only(value, {"sender", "id"}, {"sender", "id"})
                if not isinstance(value["sender"], str):
                    raise Malformed("ref.sender must be a member id", path="ref.sender")
                value = [value["sender"], _hex(value["id"], 16, "ref.id")]
            elif not isinstance(value, str):
                raise Malformed(f"{name} must be a string", path=name)
            fields[name] = value
        return _json(await self.node.send_request(fields), status=201)

    def _request_key(self, request: web.Request) -> tuple[str, bytes]:
        return self._member(request), _hex(request.match_info["id"], 16, "id")

    async def request_view(self, request: web.Request) -> web.Response:
        sender, rid = self._request_key(request)
        found = self.node.request_view(sender, rid)
        if found is None:
            return _error(404, NotFound.code, f"no request {rid.hex()} of {sender} here "
                                              f"(this node sees only its own exchanges)")
        return _json(found)

    async def request_status(self, request: web.Request) -> web.Response:
        sender, rid = self._request_key(request)
        body = await _json_body(request, "malformed")
        _only(body, {"state", "text", "scope"}, {"state"})
        state = body["state"]
        if state not in _OPERATOR_STATES:
            raise Malformed(f"state must be one of {', '.join(_OPERATOR_STATES)}", path="state")
        for name in ("text", "scope"):
            if name in body and not isinstance(body[name], str):
                raise Malformed(f"{name} must be a string", path=name)
        if "scope" in body and state != "publish":
            raise Malformed("scope goes with state publish only", path="scope")
        if "text" in body and state not in ("answered", "declined"):
            raise Malformed("text goes with answered or declined only", path="text")
        if state == "answered" and "text" not in body:
            raise Malformed("an answer needs its text", path="text")
        scope = body.get("scope", "metadata") if state == "publish" else None
        return _json(await self.node.request_status(sender, rid, state, body.get("text"),
                                                    scope), status=201)

    async def ping_run(self, request: web.Request) -> web.Response:
        body = await _json_body(request, "malformed") if request.can_read_body else {}
        _only(body, {"members", "domain"}, set())
        # Absent means every other member; given, it names 1 to 1,024 (null is not absent).
        members = body.get("members")
        if "members" in body and (not isinstance(members, list) or not all(
                isinstance(m, str) and MEMBER_ID.fullmatch(m) for m in members)
                or not 1 <= len(members) <= 1024):
            raise Malformed("members, when given, must list 1 to 1024 member ids (leave it "
                            "out to ping every other member)", path="members")
        domain = body.get("domain")
        if "domain" in body and domain not in ("diplomatic", "policy", "technical"):
            raise Malformed("domain must be diplomatic, policy or technical", path="domain")
        return _json(await self.node.ping_run(members, domain), status=201)

    async def ping_report(self, request: web.Request) -> web.Response:
        return _json(self.node.ping_report())

    async def exchanges(self, request: web.Request) -> web.Response:
        return _json({"exchanges": self.node.exchanges()})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.node.metrics_text(),
                            content_type="text/plain", charset="utf-8",
                            headers={**_HEADERS, "X-Prometheus-Format": "0.0.4"})

    @staticmethod
    def _member(request: web.Request) -> str:
        member = request.match_info["member"]
        if not MEMBER_ID.fullmatch(member):
            raise Malformed(f"member id must match [A-Z][A-Z0-9-]{{1,31}}, got {member!r:.40}",
                            path="member")
        return member


async def _json_body(request: web.Request, code: str) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _BadJson(code, f"body is not JSON: {exc}") from None


def _hex32(text: str, path: str) -> bytes:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise Malformed("must be 64 lowercase hex digits (32 bytes)", path=path)
    return bytes.fromhex(text)


def _hexbytes(value: Any, path: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit or not re.fullmatch(
            r"(?:[0-9a-f]{2})+", value):
        raise Malformed(f"must be lowercase hex of at most {limit} bytes", path=path)
    return bytes.fromhex(value)


def _public_key(value: Any) -> Any:
    from pocnode.core.keys import PublicKey

    if not isinstance(value, dict) or not value.keys() <= {"ed25519", "mldsa65"}:
        raise Malformed("key must be {ed25519: hex, mldsa65?: hex}", path="key")
    wire = {k: _hexbytes(v, f"key.{k}", 4096) for k, v in value.items()}
    alg = "ed25519+mldsa65" if "mldsa65" in wire else "ed25519"
    return PublicKey.from_wire(wire, alg=alg, path="key")


# The fields each decision takes besides `decision` and `note` (PROTOCOL.md §5.7).
_DECISION_FIELDS = {"admission": {"application"}, "observer": {"application"},
                    "key_recovery": {"subject", "key", "from_seq"}, "rules": {"governance"}}
_DECISION_FIELDS_ALL = set().union(*_DECISION_FIELDS.values())
# The canonical encoding's ints (PROTOCOL.md §2.1): a rule's num, den or min beyond them
# could be checked but never signed.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _governance(value: Any) -> dict[str, Any]:
    """An amendment's rules: an object whose ints the canonical encoding can carry (the
    engine checks the rest against PROTOCOL.md §5.3)."""
    if not isinstance(value, dict):
        raise Malformed("governance must be an object of the four decisions' rules",
                        path="governance")
    for decision, rule in value.items():
        for name, item in (rule.items() if isinstance(rule, dict) else ()):
            if type(item) is int and not _INT_MIN <= item <= _INT_MAX:
                raise Malformed(f"must be at most {_INT_MAX}",
                                path=f"governance.{decision}.{name}")
    return value


def _only(body: Any, allowed: set[str], required: set[str]) -> None:
    """A request body must be a JSON object of exactly the documented fields: an action that
    changes keys or consent is never taken on a body that says something else."""
    if not isinstance(body, dict):
        raise Malformed("the body must be a JSON object", path="body")
    extra = sorted(set(body) - allowed)
    if extra:
        raise Malformed(f"unexpected fields {extra}; allowed: {sorted(allowed)}", path="body")
    missing = sorted(required - set(body))
    if missing:
        raise Malformed(f"missing {missing}", path="body")


_SEND_FIELDS = {"to", "type", "subject", "text", "urgency", "lang", "reply_by", "attachments",
                "ref", "from_entry", "to_domain", "to_entry"}
# What an operator may say of a request; "delivered" is the node's own receipt.
_OPERATOR_STATES = ("acknowledged", "answered", "declined", "publish")
_HEX = re.compile(r"[0-9a-f]*")


def _hex(value: Any, size: int, path: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise Malformed(f"must be {2 * size} lowercase hex digits", path=path)
    return bytes.fromhex(value)


class _BadJson(PocError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DECIMAL.fullmatch(raw) or not 1 <= int(raw) < 2**63:
        raise Malformed(f"query parameter {name} must be a positive integer", path=name)
    return int(raw)
