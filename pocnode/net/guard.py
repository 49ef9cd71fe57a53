"""Connection limits aiohttp's server does not have (PROTOCOL.md §8.5).

aiohttp bounds header sizes but sets no deadline on reading a request, so a
client sending one byte a second would hold a connection forever. :class:`Guard`
wraps each connection's protocol: it caps connections per address and in all,
and a sweeper closes any connection that has been inside one request (bytes
received, no response written) for longer than the request deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pocnode.net")
# Test hook: with POCNODE_TEST_TRAFFIC_DUMP set to a file, every plaintext byte this node
# receives on its peer port (after TLS) is appended to it, so a test can show that nothing
# confidential reached a node. Never set in production: it writes what peers send.
TRAFFIC_DUMP = os.environ.get("POCNODE_TEST_TRAFFIC_DUMP")


def dump_traffic(data: bytes) -> None:
    if TRAFFIC_DUMP:
        with open(TRAFFIC_DUMP, "ab") as f:
            f.write(data)


class _TransportProxy:
    """Forwards everything to the real transport; notes when a response is written."""

    def __init__(self, transport: asyncio.Transport, guard: Guard) -> None:
        self._transport = transport
        self._guard = guard

    def write(self, data: bytes) -> None:
        self._guard.responded(len(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self._guard.responded(sum(len(c) for c in chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardPolicy:
    """Shared state of all guarded connections of one listener."""

    def __init__(self, *, max_per_ip: int, max_total: int, request_deadline_s: float,
                 on_refuse: Callable[[str, str], None] | None = None) -> None:
        self.max_per_ip = max_per_ip
        self.max_total = max_total
        self.request_deadline_s = request_deadline_s
        self.on_refuse = on_refuse or (lambda ip, why: None)
        self.per_ip: dict[str, int] = {}
        self.live: set[Guard] = set()
        self.closed_slow = 0
        self.refused = 0
        # HTTP bytes (headers and bodies, after TLS) through this listener, both ways. Every
        # peer exchange has exactly one server, so summed over nodes each byte counts once.
        self.bytes_in = 0
        self.bytes_out = 0

    def sweep(self) -> None:
        now = time.monotonic()
        for guard in list(self.live):
            if guard.busy_since is not None and now - guard.busy_since > self.request_deadline_s:
                self.closed_slow += 1
                self.on_refuse(guard.ip, "request not completed within "
                                         f"{self.request_deadline_s:.0f} s (slow client)")
                guard.abort()

    async def run_sweeper(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.sweep()


class Guard(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, policy: GuardPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.transport: asyncio.Transport | None = None
        self.ip = "?"
        self.busy_since: float | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if isinstance(peer, tuple) else str(peer)
        p = self.policy
        if len(p.live) >= p.max_total or p.per_ip.get(self.ip, 0) >= p.max_per_ip:
            p.refused += 1
            p.on_refuse(self.ip, "too many connections")
            transport.abort()
            return
        p.per_ip[self.ip] = p.per_ip.get(self.ip, 0) + 1
        p.live.add(self)
        self._counted = True
        self.inner.connection_made(_TransportProxy(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.busy_since is None:
            self.busy_since = time.monotonic()
        self.policy.bytes_in += len(data)
        dump_traffic(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            p = self.policy
            p.live.discard(self)
            left = p.per_ip.get(self.ip, 1) - 1
            if left:
                p.per_ip[self.ip] = left
            else:
                p.per_ip.pop(self.ip, None)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def responded(self, size: int) -> None:
        self.busy_since = None
        self.policy.bytes_out += size

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
