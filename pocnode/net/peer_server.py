"""The peer port: HTTPS, canonical msgpack bodies (PROTOCOL.md §8).

Thin on purpose: each handler decodes and shape-checks a request, hands plain
values to the node, and encodes its answer. Every refusal is a 4xx whose body
is ``{"code", "message"}`` with a spec error code, and is logged with the peer's
address so an operator can see who sends what.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pocnode.core import encoding
from pocnode.core.consent import NoConsent
from pocnode.core.disclosure import reveal
from pocnode.core.errors import Malformed, Oversize, PocError, WrongFederation
from pocnode.core.limits import KeyedLimiter
from pocnode.core.peer_auth import AuthError, check_header
from pocnode.core.reconcile import heads_from_wire
from pocnode.net.guard import Guard, GuardPolicy

if TYPE_CHECKING:
    from pocnode.node.daemon import Node

log = logging.getLogger("pocnode.peer")
CONTENT_TYPE = "application/msgpack"


# aiohttp would announce its name and version in every answer: idle gossip is mostly
# headers, and a peer has no business knowing our library versions.
_HEADERS = {"Server": "pocnode"}


def _reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encoding.encode(obj), status=status, content_type=CONTENT_TYPE,
                        headers=_HEADERS)


def _refuse(request: web.Request, status: int, error: PocError) -> web.Response:
    log.warning("refused peer request", extra={"fields": {
        "peer": request.remote, "path": request.path, "code": error.code,
        "reason": error.message[:200]}})
    return _reply({"code": error.code, "message": error.message[:500]}, status)


class PeerServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        c = node.config
        self.limiter = KeyedLimiter(rate=c.peer_rate, burst=c.peer_burst)
        self.policy = GuardPolicy(
            max_per_ip=c.max_connections_per_ip, max_total=c.max_connections,
            request_deadline_s=2 * c.request_timeout_s,
            on_refuse=lambda ip, why: log.warning("closed peer connection", extra={
                "fields": {"peer": ip, "reason": why}}))
        node.metrics.gauge("pocnode_peer_wire_bytes_in", lambda: self.policy.bytes_in)
        node.metrics.gauge("pocnode_peer_wire_bytes_out", lambda: self.policy.bytes_out)
        node.metrics.gauge("pocnode_peer_connections_closed_slow",
                           lambda: self.policy.closed_slow)
        node.metrics.gauge("pocnode_peer_connections_refused", lambda: self.policy.refused)
        self.app = web.Application(client_max_size=c.max_body_bytes,
                                   middlewares=[self._limits])
        self.app.router.add_get("/v1/peer/hello", self.hello)
        self.app.router.add_post("/v1/peer/summary", self._wrap(self.summary))
        self.app.router.add_post("/v1/peer/exchange", self._wrap(self.exchange))
        self.app.router.add_post("/v1/peer/announce", self._wrap(self.announce))
        self.app.router.add_post("/v1/peer/disclosures", self._wrap(self.disclosures, auth=True))
        self.app.router.add_post("/v1/peer/bilateral", self._wrap(self.bilateral, auth=True))
        self.app.router.add_get("/v1/peer/public/{member}", self.public)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int, ssl_context: Any) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=15.0,
                                     handler_cancellation=True)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        factory = self._runner.server
        assert factory is not None
        self._server = await loop.create_server(
            lambda: Guard(factory(), self.policy), host, port, ssl=ssl_context,
            ssl_handshake_timeout=self.node.config.connect_timeout_s * 3, backlog=256)
        self._sweeper = asyncio.create_task(self.policy.run_sweeper(), name="guard-sweeper")
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._server:
            self._server.close()
            for guard in list(self.policy.live):
                guard.abort()
        if self._runner:
            await self._runner.cleanup()

    # -- middleware and wrappers -------------------------------------------------------

    @web.middleware
    async def _limits(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        now = int(time.time() * 1000)
        if not self.limiter.take(request.remote or "?", now):
            self.node.metrics.inc("pocnode_peer_requests_refused_total", reason="rate")
            return _refuse(request, 429, PocError("rate limit exceeded; slow down"))
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            self.node.metrics.inc("pocnode_peer_requests_refused_total", reason="oversize")
            return _refuse(request, 413, Oversize(
                f"body larger than {self.node.config.max_body_bytes} bytes"))

    def _wrap(self, handler: Callable[[dict[str, Any], str | None], Awaitable[Any]],
              auth: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            body = await request.read()
            self.node.metrics.inc("pocnode_peer_bytes_received_total", len(body))
            try:
                member = None
                if auth:
                    member = check_header(
                        request.headers.get("Authorization"), fed=self.node.genesis.id,
                        own_pin=self.node.pin, now=int(time.time() * 1000),
                        method=request.method, path=request.path, body=body,
                        current_key=self.node.current_key)
                # Framing: C-speed check only; a stranger can send megabytes (§8.5).
                msg = encoding.decode(body, max_size=self.node.config.max_body_bytes,
                                      exact=False)
                if type(msg) is not dict:
                    raise Malformed("request body must be a map", path="request")
                if msg.get("fed") != self.node.genesis.id:
                    raise WrongFederation("request for another federation", path="request.fed")
                answer = await handler(msg, member)
            except AuthError as exc:
                self.node.metrics.inc("pocnode_peer_requests_refused_total", reason="auth")
                return _refuse(request, 401, exc)
            except NoConsent as exc:
                self.node.metrics.inc("pocnode_peer_requests_refused_total", reason="consent")
                return _refuse(request, 403, exc)
            except PocError as exc:
                self.node.metrics.inc("pocnode_peer_requests_refused_total", reason=exc.code)
                return _refuse(request, 400, exc)
            out = encoding.encode(answer)
            self.node.metrics.inc("pocnode_peer_bytes_sent_total", len(out))
            return web.Response(body=out, content_type=CONTENT_TYPE, headers=_HEADERS)
        return wrapped

    # -- handlers -------------------------------------------------------------------------

    async def hello(self, request: web.Request) -> web.Response:
        return _reply({"fed": self.node.genesis.id, "member": self.node.config.member, "v": 1})

    async def summary(self, msg: dict[str, Any], member: str | None) -> Any:
        summary = msg.get("summary")
        if type(summary) is not bytes or len(summary) != 32:
            raise Malformed("summary must be bin of 32 bytes", path="request.summary")
        return self.node.answer_summary(summary)

    async def exchange(self, msg: dict[str, Any], member: str | None) -> Any:
        events = _bin_list(msg.get("events", []), "request.events",
                           self.node.config.max_events_per_message)
        proofs = _bin_list(msg.get("proofs", []), "request.proofs", 64)
        want = _want_list(msg.get("want", []))
        return await self.node.answer_exchange(events, want, proofs)

    async def announce(self, msg: dict[str, Any], member: str | None) -> Any:
        heads = heads_from_wire(msg.get("heads"), path="request.heads")
        return {"want": [[a, s] for a, s in self.node.wants_for(heads)]}

    async def bilateral(self, msg: dict[str, Any], member: str | None) -> Any:
        ids = _bin_list(msg.get("events", []), "request.events", 16)
        assert member is not None
        return {"sealed": await self.node.bilateral_for(ids, member)}

    async def public(self, request: web.Request) -> web.Response:
        """What anyone may read (§6.5): a member's record with its public values only."""
        member = request.match_info["member"]
        event = self.node.records.get(member)
        if event is None:
            return _reply({"code": "no_record", "message": f"no record of {member:.40}"}, 404)
        return _reply({"fed": self.node.genesis.id, "member": member, "seq": event.seq,
                       "event": event.raw, "record": reveal(event.body, [])})

    async def disclosures(self, msg: dict[str, Any], member: str | None) -> Any:
        ids = _bin_list(msg.get("events", []), "request.events", 1024)
        assert member is not None
        return {"disclosures": await self.node.disclosures_for_member(ids, member)}


def _bin_list(value: Any, path: str, limit: int) -> list[bytes]:
    if type(value) is not list or len(value) > limit:
        raise Malformed(f"must be a list of at most {limit}", path=path)
    for i, item in enumerate(value):
        if type(item) is not bytes:
            raise Malformed("must be bin", path=f"{path}[{i}]")
    return value


def _want_list(value: Any) -> list[tuple[str, int]]:
    if type(value) is not list or len(value) > 1024:
        raise Malformed("want must be a list of at most 1024", path="request.want")
    out = []
    for i, item in enumerate(value):
        if (type(item) is not list or len(item) != 2 or type(item[0]) is not str
                or type(item[1]) is not int or item[1] < 1):
            raise Malformed("want item is [author, first seq]", path=f"request.want[{i}]")
        out.append((item[0], item[1]))
    return out
