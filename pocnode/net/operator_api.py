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
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pocnode.core.errors import Malformed, PocError, Unauthenticated
from pocnode.core.events import MEMBER_ID

if TYPE_CHECKING:
    from pocnode.node.daemon import Node

log = logging.getLogger("pocnode.operator")
# A record is a few KB; 256 KiB leaves room for long notes in every field.
MAX_REQUEST_BYTES = 256 * 1024
MAX_EVENTS_PAGE = 500
# ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
_DECIMAL = re.compile(r"[0-9]{1,20}")
# Codes that are this node's fault, not the request's.
_LOCAL_FAULTS = frozenset({"internal", "store"})


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
    return web.json_response(encode_json_safe(obj), status=status,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _error(status: int, code: str, message: str, path: str | None = None) -> web.Response:
    body = {"code": code, "message": message}
    if path:
        body["path"] = path
    return _json(body, status)


class OperatorApi:
    def __init__(self, node: Node, token: str) -> None:
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
        r.add_get("/metrics", self.metrics)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
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
            response = _error(exc.status, "http", exc.reason)
            if "Allow" in exc.headers:  # a 405 must say what is allowed
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except PocError as exc:
            status = 500 if exc.code in _LOCAL_FAULTS else 400
            return _error(status, exc.code, exc.message, exc.path)
        except Exception:
            log.exception("operator request failed", extra={"fields": {"path": request.path}})
            return _error(500, "internal", "internal error; the node's log has the details")

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "member": self.node.member})

    async def status(self, request: web.Request) -> web.Response:
        return _json(self.node.status())

    async def peers(self, request: web.Request) -> web.Response:
        return _json({"peers": [
            {"endpoint": p.endpoint, "member": p.member, "source": p.source,
             "last_contact": p.last_contact, "failures": p.failures,
             "last_error": p.last_error,
             "pinned": self.node.pin_for(p.member) is not None}
            for p in sorted(self.node.peers.peers.values(), key=lambda p: p.endpoint)]})

    async def directory(self, request: web.Request) -> web.Response:
        out = []
        for founder in self.node.genesis.founders:
            chain = self.node.verifier.chains[founder.id]
            record = self.node.records.get(founder.id)
            out.append({
                "member": founder.id, "name": founder.name, "events": chain.seq,
                "record_seq": record.seq if record else None,
                "record_ts": record.ts if record else None,
                "entries": len(record.body["entries"]) if record else 0,
                "domains": sorted({e["domain"] for e in record.body["entries"]})
                if record else []})
        return _json({"members": out})

    async def directory_member(self, request: web.Request) -> web.Response:
        member = self._member(request)
        if member not in self.node.verifier.chains:
            return _error(404, "unknown_author", f"{member} is not a member of this federation")
        view = await self.node.view_record(member)
        if view is None:
            return _error(404, "no_record", f"no record from {member} has reached this node yet")
        return _json(view)

    async def own_record(self, request: web.Request) -> web.Response:
        view = await self.node.view_record(self.node.member)
        if view is None:
            return _error(404, "no_record", "this node has not published a record yet")
        return _json(view)

    async def publish_record(self, request: web.Request) -> web.Response:
        try:
            plain = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, "invalid_record", f"body is not JSON: {exc}")
        event = await self.node.publish_record(plain)  # the node serialises its publishes
        log.info("record published", extra={"fields": {"seq": event.seq,
                                                        "id": event.id.hex()[:16]}})
        return _json({"member": event.author, "seq": event.seq, "event_id": event.id,
                      "ts": event.ts}, status=201)

    async def events(self, request: web.Request) -> web.Response:
        member = self._member(request)
        chain = self.node.verifier.chains.get(member)
        if chain is None:
            return _error(404, "unknown_author", f"{member} is not a member of this federation")
        first = _int_param(request, "from", 1)
        limit = min(_int_param(request, "limit", 100), MAX_EVENTS_PAGE)
        out = []
        for seq in range(first, min(chain.seq, first + limit - 1) + 1):
            stored = await self.node.store.event(member, seq)
            if stored is not None:
                out.append({"seq": stored.seq, "id": stored.id, "kind": stored.kind,
                            "ts": stored.ts, "bytes": len(stored.raw)})
        return _json({"member": member, "head": chain.seq, "events": out})

    async def rotate_key(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=json.loads) if request.can_read_body else {}
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, "malformed", f"body is not JSON: {exc}")
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason) <= 256):
            return _error(400, "malformed", "reason must be a string of 1..256 characters",
                          "reason")
        event = await self.node.rotate_key(reason)
        return _json({"member": event.author, "seq": event.seq, "event_id": event.id,
                      "new_key": self.node.key.public_key.to_wire()}, status=201)

    async def consents(self, request: web.Request) -> web.Response:
        return _json({"consents": self.node.consent.table()})

    async def set_consent(self, request: web.Request) -> web.Response:
        member = self._member(request)
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, "malformed", f"body is not JSON: {exc}")
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ("offer", "withdraw"):
            return _error(400, "malformed", "action must be offer or withdraw", "action")
        if member not in self.node.verifier.chains:
            return _error(404, "unknown_author", f"{member} is not a member of this federation")
        event = await self.node.set_consent(member, action)
        return _json({"member": member, "action": action, "seq": event.seq,
                      "event_id": event.id, "mutual": self.node.consent.mutual(member)},
                     status=201)

    async def proofs(self, request: web.Request) -> web.Response:
        return _json({"proofs": [{"author": a, "seq": s, "proof": p, "found_at": t}
                                 for a, s, p, t in await self.node.store.proofs()]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.node.metrics.render(),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    @staticmethod
    def _member(request: web.Request) -> str:
        member = request.match_info["member"]
        if not MEMBER_ID.fullmatch(member):
            raise Malformed(f"member id must match [A-Z][A-Z0-9-]{{1,31}}, got {member!r:.40}",
                            path="member")
        return member


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DECIMAL.fullmatch(raw) or not 1 <= int(raw) < 2**63:
        raise Malformed(f"query parameter {name} must be a positive integer", path=name)
    return int(raw)
