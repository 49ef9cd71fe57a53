"""The peer port: HTTPS, msgpack bodies (PROTOCOL.md §8).

Thin on purpose: each handler reads its request by the message's schema
(:mod:`pocnode.core.wire`, which never builds what the schema does not allow), hands
plain values to the node through :class:`~pocnode.net.services.PeerService`, and
encodes the answer. Every refusal, whatever refuses it (a handler, the router, the
body limit, the rate limiter), is a 4xx whose body is ``{"code", "message"}`` with a
code of §9, and is logged through the node's rate-limited refusal log.

Limits (§8.5): connections through :mod:`pocnode.net.guard`; requests per second per
member for requests a member authenticated (§8.2), per address or IPv6 /64 for
everything else, so strangers share their own budget and cannot spend a member's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pocnode.core import encoding, wire
from pocnode.core.consent import NoConsent
from pocnode.core.errors import (
    Malformed,
    MethodNotAllowed,
    NotFound,
    Oversize,
    PocError,
    RateLimited,
    Unauthenticated,
    WrongFederation,
)
from pocnode.core.events import MEMBER_ID
from pocnode.core.limits import KeyedLimiter
from pocnode.core.peer_auth import check_header
from pocnode.net.guard import Conn, GuardLimits, GuardPolicy, prefix_of
from pocnode.net.server_log import ServerLog
from pocnode.net.services import PeerService

CONTENT_TYPE = "application/msgpack"
# aiohttp would announce its name and version in every answer: idle gossip is mostly
# headers, and a peer has no business knowing our library versions.
_HEADERS = {"Server": "pocnode"}


@dataclass(frozen=True, slots=True)
class PeerServerConfig:
    max_body_bytes: int = 2 * 1024 * 1024
    rate: float = 50.0            # requests per second per address, and per member
    burst: float = 200.0
    guard: GuardLimits = GuardLimits()


def _reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=encoding.encode(obj), status=status, content_type=CONTENT_TYPE,
                        headers=_HEADERS)


# Bundles streamed at once: a bundle is the whole directory (megabytes), read from disk;
# one per address, a few in all, so auditors cannot crowd out gossip.
MAX_BUNDLE_STREAMS = 2
MAX_BUNDLE_STREAMS_PER_PREFIX = 1

_STATUS = {"unauthenticated": 401, "no_consent": 403, "not_found": 404,
           "method_not_allowed": 405, "oversize": 413, "rate_limited": 429,
           "store": 503, "busy": 503, "internal": 500}


class PeerServer:
    def __init__(self, service: PeerService, config: PeerServerConfig,
                 on_data: Callable[[bytes], None] | None = None) -> None:
        self.service = service
        self.config = config
        self.limiter = KeyedLimiter(rate=config.rate, burst=config.burst)
        self.policy = GuardPolicy(config.guard, on_refuse=self._connection_refused)
        self._on_data = on_data
        self.app = web.Application(client_max_size=config.max_body_bytes,
                                   middlewares=[self._errors])
        r = self.app.router
        r.add_get("/v1/peer/hello", self.hello)
        r.add_post("/v1/peer/summary", self._wrap(self.summary, wire.SUMMARY))
        r.add_post("/v1/peer/exchange", self._wrap(self.exchange, wire.EXCHANGE))
        r.add_post("/v1/peer/announce", self._wrap(self.announce, wire.ANNOUNCE))
        r.add_post("/v1/peer/disclosures", self._wrap(self.disclosures, wire.DISCLOSURES,
                                                      auth=True))
        r.add_post("/v1/peer/bilateral", self._wrap(self.bilateral, wire.BILATERAL, auth=True))
        r.add_get("/v1/peer/public/{member}", self.public)
        r.add_post("/v1/peer/apply", self._wrap(self.apply, wire.APPLY))
        # §13.8: checkpoints and export bundles, public data, to anyone (rate limited).
        r.add_get("/v1/peer/checkpoints", self.checkpoints)
        r.add_get("/v1/peer/bundle", self.bundle)
        self._streams: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, ssl_context: Any) -> int:
        self._runner = web.AppRunner(
            self.app, access_log=None, keepalive_timeout=15.0, handler_cancellation=True,
            logger=ServerLog(self.service.refused,
                             lambda remote: self._limited("p:" + prefix_of(remote))))
        await self._runner.setup()
        factory = self._runner.server
        assert factory is not None
        loop = asyncio.get_running_loop()
        # Plain TCP: each connection is counted at accept and upgraded by the guard.
        self._server = await loop.create_server(
            lambda: Conn(self.policy, factory, ssl_context, self._on_data), host, port,
            backlog=256)
        self._sweeper = asyncio.create_task(self.policy.run_sweeper(), name="guard-sweeper")
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._server:
            self._server.close()
            self.policy.close_all()
        if self._runner:
            await self._runner.cleanup()

    # -- refusals --------------------------------------------------------------------

    def _connection_refused(self, code: str, ip: str, why: str) -> None:
        self.service.count("pocnode_peer_connections_refused_total", reason=code)
        self.service.refused(code, "closed peer connection", peer=ip, reason=why)

    def _refuse(self, request: web.Request, error: PocError) -> web.Response:
        status = _STATUS.get(error.code, 400)
        self.service.count("pocnode_peer_requests_refused_total", reason=error.code)
        self.service.refused(error.code, "refused peer request", peer=request.remote or "?",
                             path=request.path[:100], reason=error.message[:200])
        return _reply({"code": error.code, "message": error.message[:500]}, status)

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            # A request no route takes costs its address budget as one a route refuses.
            if self._limited("p:" + prefix_of(request.remote or "?")):
                return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
            if exc.status == 413:
                return self._refuse(request, Oversize(
                    f"body larger than {self.config.max_body_bytes} bytes"))
            if exc.status == 404:
                return self._refuse(request, NotFound(f"no route {request.path[:100]!r}"))
            if exc.status == 405:
                response = self._refuse(request, MethodNotAllowed(
                    f"{request.method[:10]} is not allowed on {request.path[:100]}"))
                if "Allow" in exc.headers:
                    response.headers["Allow"] = exc.headers["Allow"]
                return response
            return self._refuse(request, Malformed(f"HTTP {exc.status}"))

    def _limited(self, key: str) -> bool:
        return not self.limiter.take(key, self.service.now_ms())

    def _wrap(self, handler: Callable[[dict[str, Any], str | None, str], Awaitable[Any]],
              schema: wire.Map, auth: bool = False
              ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            header = request.headers.get("Authorization")
            prefix = "p:" + prefix_of(request.remote or "?")
            if header is None and self._limited(prefix):
                return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
            if header is not None and self.limiter.level(prefix, self.service.now_ms()) < 1:
                # No budget left to pay for a failed check: refuse before verifying.
                return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
            body = await request.read()
            self.service.count("pocnode_peer_bytes_received_total", len(body))
            try:
                member = None
                if header is not None:
                    try:
                        member = check_header(
                            header, fed=self.service.fed, own_pin=self.service.pin,
                            now=self.service.now_ms(), method=request.method,
                            path=request.path, body=body, current_key=self.service.current_key)
                    except Unauthenticated:
                        self._limited(prefix)
                        if auth:
                            raise
                        # Events, heads and summaries prove themselves: a token that does not
                        # verify here (the sender rotated its key and we lack the event yet)
                        # only means the request is served as a stranger's, so a federation
                        # whose members all rotate at once still gossips the rotations.
                        member = None
                    if member is not None:
                        if self._limited("m:" + member):
                            raise RateLimited(f"rate limit exceeded for {member}; slow down")
                        conn = request.transport.get_extra_info("pocnode_conn") \
                            if request.transport else None
                        if isinstance(conn, Conn):
                            self.policy.authenticated(conn, member)
                elif auth:
                    raise Unauthenticated("this request needs a member's token (§8.2)")
                msg = wire.read(schema, body)
                if msg["fed"] != self.service.fed:
                    raise WrongFederation("request for another federation", path="request.fed")
                answer = await handler(msg, member, request.remote or "?")
            except NoConsent as exc:
                return self._refuse(request, exc)
            except PocError as exc:
                return self._refuse(request, exc)
            out = encoding.encode(answer)
            self.service.count("pocnode_peer_bytes_sent_total", len(out))
            return web.Response(body=out, content_type=CONTENT_TYPE, headers=_HEADERS)
        return wrapped

    # -- handlers -------------------------------------------------------------------------

    async def hello(self, request: web.Request) -> web.Response:
        if self._limited("p:" + prefix_of(request.remote or "?")):
            return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
        return _reply({"fed": self.service.fed, "member": self.service.member, "v": 1})

    async def summary(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        return self.service.summary(msg)

    async def exchange(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        return await self.service.exchange(msg, member, remote)

    async def announce(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        return self.service.announce(msg)

    async def disclosures(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        assert member is not None
        return await self.service.disclosures(msg, member)

    async def bilateral(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        assert member is not None
        return await self.service.bilateral(msg, member)

    async def apply(self, msg: dict[str, Any], member: str | None, remote: str) -> Any:
        """A state's application to join (§5.6): anyone may hand one in, within the
        address's rate limit; the node keeps a few for its operator to sponsor."""
        return self.service.apply(msg)

    async def public(self, request: web.Request) -> web.Response:
        """What anyone may read (§6.5): a member's record with its public values only."""
        if self._limited("p:" + prefix_of(request.remote or "?")):
            return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
        member = request.match_info["member"]
        if not MEMBER_ID.fullmatch(member):
            return self._refuse(request, Malformed("not a member id", path="member"))
        view = self.service.public_record(member)
        if view is None:
            return self._refuse(request, NotFound(f"no record of {member}"))
        return _reply({"fed": self.service.fed, **view})

    async def checkpoints(self, request: web.Request) -> web.Response:
        """The latest checkpoint of each author's chain this node holds (§13.8)."""
        if self._limited("p:" + prefix_of(request.remote or "?")):
            return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
        try:
            events = await self.service.checkpoint_events()
        except PocError as exc:
            return self._refuse(request, exc)
        return _reply({"fed": self.service.fed, "checkpoints": events})

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        """An export bundle of this node's public data, streamed (§13.6, §13.8)."""
        prefix = "p:" + prefix_of(request.remote or "?")
        if self._limited(prefix):
            return self._refuse(request, RateLimited("rate limit exceeded; slow down"))
        author = request.query.get("author")
        if author is not None and not MEMBER_ID.fullmatch(author):
            return self._refuse(request, Malformed("author must be a member id",
                                                   path="author"))
        if (sum(self._streams.values()) >= MAX_BUNDLE_STREAMS
                or self._streams.get(prefix, 0) >= MAX_BUNDLE_STREAMS_PER_PREFIX):
            return self._refuse(request, RateLimited(
                "bundles are being streamed already; try again later"))
        self._streams[prefix] = self._streams.get(prefix, 0) + 1
        try:
            response = web.StreamResponse(headers={**_HEADERS,
                                                   "Content-Type": "application/octet-stream"})
            await response.prepare(request)
            sent = 0
            async for chunk in self.service.bundle_chunks(author):
                await response.write(chunk)
                sent += len(chunk)
            self.service.count("pocnode_peer_bytes_sent_total", sent)
            await response.write_eof()
            return response
        finally:
            self._streams[prefix] -= 1
            if not self._streams[prefix]:
                del self._streams[prefix]
