"""Connection limits aiohttp's server does not have (PROTOCOL.md §8.5).

Every connection is counted from the moment it is accepted, before its TLS handshake:
the listener speaks plain TCP, and each accepted connection is upgraded with
``loop.start_tls`` under a handshake deadline, so half-open handshakes hold a slot
and a deadline like anything else. What one source can hold is capped per address
(IPv4) or per /64 prefix (IPv6, where one host has millions of addresses), and in
all. When the table is full a new connection evicts the oldest idle connection of a
stranger; connections on which a member has authenticated (§8.2) are counted per
member, not per address, and are evicted last, so strangers cannot crowd members out.

A sweeper closes what holds resources without progress: a request not completed
within the request deadline (a client sending a byte a second), an idle connection
past the idle deadline (short when the table is nearly full), and a response nobody
reads (its bytes would otherwise stay in our memory): written data still buffered
after the write deadline, or more buffered in all than the node allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Bytes a client's request may bring before the HTTP server takes the connection over: the
# TLS layer can hand over a read or two (up to 256 KiB each) between the handshake's end and
# the moment this guard attaches the server; more than that is not a client waiting.
_EARLY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_total: int = 512
    max_per_prefix: int = 32
    max_per_member: int = 32
    handshake_timeout_s: float = 9.0
    request_deadline_s: float = 20.0
    idle_timeout_s: float = 15.0
    # When the table is this full, idle strangers are closed after pressed_idle_s.
    pressure_fraction: float = 0.75
    pressed_idle_s: float = 1.0
    write_deadline_s: float = 20.0
    max_buffered_bytes: int = 64 * 1024 * 1024


def prefix_of(ip: str) -> str:
    """The unit limits apply to: an IPv4 address, or the /64 of an IPv6 address (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class GuardPolicy:
    """Shared state of all guarded connections of one listener."""

    def __init__(self, limits: GuardLimits, *,
                 on_refuse: Callable[[str, str, str], None] | None = None) -> None:
        self.limits = limits
        # (category, address, reason): categories are log and metric buckets
        # (too_many_connections, slow_request, unread_answer), not wire codes.
        self.on_refuse = on_refuse or (lambda code, ip, why: None)
        self.live: set[Conn] = set()
        self.per_prefix: Counter[str] = Counter()
        self.per_member: Counter[str] = Counter()
        self.refused = 0
        self.evicted = 0
        self.closed_slow = 0
        self.closed_idle = 0
        self.closed_unread = 0
        # HTTP bytes (headers and bodies, after TLS) through this listener, both ways. Every
        # peer exchange has exactly one server, so summed over nodes each byte counts once.
        self.bytes_in = 0
        self.bytes_out = 0

    # -- admission -------------------------------------------------------------------

    def admit(self, conn: Conn) -> bool:
        lim = self.limits
        if self.per_prefix[conn.prefix] >= lim.max_per_prefix:
            self._refuse(conn, f"more than {lim.max_per_prefix} connections from this address")
            return False
        if len(self.live) >= lim.max_total:
            victim = self._victim()
            if victim is None:
                self._refuse(conn, f"all {lim.max_total} connections busy")
                return False
            self.evicted += 1
            victim.close()
        self.live.add(conn)
        self.per_prefix[conn.prefix] += 1
        return True

    def _refuse(self, conn: Conn, why: str) -> None:
        self.refused += 1
        self.on_refuse("too_many_connections", conn.ip, why)

    def _victim(self) -> Conn | None:
        """The oldest idle stranger; a member's connection only if no stranger is idle."""
        now = time.monotonic()
        best: Conn | None = None
        for conn in self.live:
            if not conn.evictable(now):
                continue
            if best is None or (conn.member is None, -conn.idle_since) > (
                    best.member is None, -best.idle_since):
                best = conn
        return best

    def authenticated(self, conn: Conn, member: str) -> None:
        """A request on ``conn`` proved it comes from ``member``'s node (§8.2): it is now
        counted against that member, not the address, unless the member has too many."""
        if conn.member is not None or conn not in self.live:
            return
        if self.per_member[member] >= self.limits.max_per_member:
            return
        self.per_member[member] += 1
        self.per_prefix[conn.prefix] -= 1
        if self.per_prefix[conn.prefix] <= 0:
            del self.per_prefix[conn.prefix]
        conn.member = member

    def release(self, conn: Conn) -> None:
        if conn not in self.live:
            return
        self.live.discard(conn)
        counter, unit = ((self.per_member, conn.member) if conn.member is not None
                         else (self.per_prefix, conn.prefix))
        counter[unit] -= 1
        if counter[unit] <= 0:
            del counter[unit]

    # -- the sweeper -------------------------------------------------------------------

    def sweep(self) -> None:
        lim = self.limits
        now = time.monotonic()
        pressed = len(self.live) >= lim.pressure_fraction * lim.max_total
        buffered = 0
        for conn in list(self.live):
            if conn.busy_since is not None and now - conn.busy_since > lim.request_deadline_s:
                self.closed_slow += 1
                self.on_refuse("slow_request", conn.ip, "request not completed within "
                               f"{lim.request_deadline_s:.0f} s (slow client)")
                conn.close()
                continue
            pending = conn.write_buffered()
            if pending:
                buffered += pending
                if conn.unread_since is None:
                    conn.unread_since = now
                elif now - conn.unread_since > lim.write_deadline_s:
                    self.closed_unread += 1
                    self.on_refuse("unread_answer", conn.ip, "answer not read within "
                                   f"{lim.write_deadline_s:.0f} s")
                    conn.close()
                    continue
            else:
                conn.unread_since = None
            idle_limit = (lim.pressed_idle_s if pressed and conn.member is None
                          else lim.idle_timeout_s)
            if conn.evictable(now) and now - conn.idle_since > idle_limit:
                self.closed_idle += 1
                conn.close()
        if buffered > lim.max_buffered_bytes:
            for conn in sorted(self.live, key=lambda c: -c.write_buffered()):
                if buffered <= lim.max_buffered_bytes:
                    break
                buffered -= conn.write_buffered()
                self.closed_unread += 1
                self.on_refuse("unread_answer", conn.ip, "too many unread answers buffered")
                conn.close()

    async def run_sweeper(self, every_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.sweep()

    def close_all(self) -> None:
        for conn in list(self.live):
            conn.close()


class _TransportProxy:
    """The TLS transport as the HTTP server sees it: notes when a response is written,
    and lets a request find its connection (``get_extra_info("pocnode_conn")``)."""

    def __init__(self, transport: asyncio.Transport, conn: Conn) -> None:
        self._transport = transport
        self._conn = conn

    def write(self, data: bytes) -> None:
        self._conn.responded(len(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self._conn.responded(sum(len(c) for c in chunks))
        self._transport.writelines(chunks)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "pocnode_conn":
            return self._conn
        if name == "peername":
            return self._conn.peername
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Conn(asyncio.Protocol):
    """One accepted connection: first the raw TCP side, then (after ``start_tls``) the
    application side of the TLS layer, forwarding to aiohttp's protocol."""

    def __init__(self, policy: GuardPolicy, app_factory: Callable[[], asyncio.Protocol],
                 ssl_context: ssl.SSLContext,
                 on_data: Callable[[bytes], None] | None = None) -> None:
        self.policy = policy
        self.app_factory = app_factory
        self.ssl_context = ssl_context
        self.on_data = on_data
        self.ip = "?"
        self.peername: Any = None
        self.prefix = "?"
        self.member: str | None = None
        self.raw: asyncio.Transport | None = None
        self.tls: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.accepted_at = time.monotonic()
        self.idle_since = self.accepted_at
        self.busy_since: float | None = None
        self.unread_since: float | None = None
        self._early: list[bytes] = []
        self._early_bytes = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def evictable(self, now: float) -> bool:
        """Idle: no request in progress and nothing unsent (a handshake that has taken more
        than a second is as good as idle)."""
        if self._closed or self.busy_since is not None:
            return False
        if self.app is None:
            return now - self.accepted_at > 1.0
        return True

    def write_buffered(self) -> int:
        transport = self.tls
        try:
            return transport.get_write_buffer_size() if transport is not None else 0
        except (AttributeError, RuntimeError):
            return 0

    # -- the raw side -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.raw is not None:
            return  # the TLS layer does not call this (call_connection_made=False)
        self.raw = transport
        transport.pause_reading()  # nothing is read until the TLS layer takes over
        self.peername = transport.get_extra_info("peername")
        self.ip = self.peername[0] if isinstance(self.peername, tuple) else str(self.peername)
        self.prefix = prefix_of(self.ip)
        if not self.policy.admit(self):
            self._closed = True
            transport.abort()
            return
        self._task = asyncio.get_running_loop().create_task(self._handshake())

    async def _handshake(self) -> None:
        assert self.raw is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(self.raw, self, self.ssl_context, server_side=True,
                                       ssl_handshake_timeout=self.policy.limits.handshake_timeout_s)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError,
                RuntimeError):
            self._drop()
            return
        if self._closed or tls is None:
            if tls is not None:
                tls.abort()
            self._drop()
            return
        self.tls = tls
        self.idle_since = time.monotonic()
        self.app = self.app_factory()
        self.app.connection_made(_TransportProxy(tls, self))  # type: ignore[arg-type]
        early, self._early = self._early, []
        for chunk in early:
            self._deliver(chunk)

    # -- the application side of TLS ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.app is None:
            self._early_bytes += len(data)
            if self._early_bytes > _EARLY_BYTES:
                self.close()
                return
            self._early.append(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.busy_since is None:
            self.busy_since = time.monotonic()
        self.policy.bytes_in += len(data)
        if self.on_data is not None:
            self.on_data(data)
        assert self.app is not None
        self.app.data_received(data)

    def eof_received(self) -> bool | None:
        return self.app.eof_received() if self.app is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop()
        if self.app is not None:
            app, self.app = self.app, None
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def responded(self, size: int) -> None:
        self.busy_since = None
        self.idle_since = time.monotonic()
        self.policy.bytes_out += size

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        for transport in (self.tls, self.raw):
            if transport is not None:
                with contextlib.suppress(RuntimeError, AttributeError):
                    transport.abort()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._drop()

    def _drop(self) -> None:
        self.policy.release(self)
