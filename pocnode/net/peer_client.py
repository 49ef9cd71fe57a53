"""Talking to other nodes: one aiohttp session, pinned TLS, bounded everything (§8).

Every call has a deadline (connect and total), every answer a size cap; a peer that
breaks any of it raises :class:`PeerError`, which the engine turns into a backoff.
Answers are returned as bytes: the engine reads them by their message's schema.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from pocnode.core import wire
from pocnode.core.errors import PocError
from pocnode.core.keys import SigningKey
from pocnode.core.peer_auth import make_header

CONTENT_TYPE = "application/msgpack"


class PeerError(PocError):
    """A peer did not answer, answered late, too much, or not in the protocol."""

    code = "peer"


def client_context() -> ssl.SSLContext:
    """No CA, no hostname: the pin is the check (aiohttp.Fingerprint), where one is known."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class PeerClient:
    def __init__(self, *, fed: bytes, member: str, key: Callable[[], SigningKey],
                 now_ms: Callable[[], int], request_timeout_s: float, connect_timeout_s: float,
                 max_response_bytes: int) -> None:
        self.fed = fed
        self.member = member
        self.key = key
        self.now_ms = now_ms
        self.max_response_bytes = max_response_bytes
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s,
                                             sock_connect=connect_timeout_s)
        self._ssl = client_context()
        self._session: aiohttp.ClientSession | None = None
        self._fingerprints: dict[bytes, aiohttp.Fingerprint] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=4, ttl_dns_cache=300,
                                         keepalive_timeout=10)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))

    async def close(self) -> None:
        if self._session:
            await self._session.close()

    def _fingerprint(self, pin: bytes) -> aiohttp.Fingerprint:
        """One object per pin: aiohttp pools connections by it, so a new object per call
        would mean a new TLS handshake per call."""
        fp = self._fingerprints.get(pin)
        if fp is None:
            if len(self._fingerprints) > 4096:
                self._fingerprints.clear()
            fp = self._fingerprints[pin] = aiohttp.Fingerprint(pin)
        return fp

    async def call(self, endpoint: str, path: str, body: dict[str, Any], *,
                   pin: bytes | None = None, authenticate: bool = False,
                   skew_ms: int = 0) -> bytes:
        """POST ``body`` (fed added) to ``endpoint + path``; the answer's bytes (a 200).

        With ``pin``, the server's certificate must hash to it or nothing is sent. A call
        that must be authenticated needs the pin too: the signature binds it.
        """
        assert self._session is not None, "start() first"
        data = wire.encode({**body, "fed": self.fed})
        headers = {"Content-Type": CONTENT_TYPE}
        if authenticate:
            if pin is None:
                raise PeerError("no pin known for this peer: cannot authenticate", path=endpoint)
            headers["Authorization"] = make_header(
                self.key(), fed=self.fed, member=self.member, server_pin=pin,
                now=self.now_ms() + skew_ms, method="POST", path=path, body=data)
        ssl_arg: Any = self._fingerprint(pin) if pin is not None else self._ssl
        try:
            async with self._session.post(endpoint + path, data=data, headers=headers,
                                          ssl=ssl_arg) as resp:
                raw = await _read(resp, self.max_response_bytes)
                if resp.content_type != CONTENT_TYPE:
                    raise PeerError(f"answered {resp.status} with {resp.content_type[:40]}",
                                    path=endpoint + path)
                if resp.status != 200:
                    raise PeerError(f"refused ({resp.status}): {_error_text(raw)}",
                                    path=endpoint + path)
                return raw
        except aiohttp.ServerFingerprintMismatch:
            raise PeerError("server certificate does not match the member's pin",
                            path=endpoint) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(_describe(exc), path=endpoint) from None


def _error_text(raw: bytes) -> str:
    try:
        err = wire.read(wire.ERROR, raw, path="answer")
    except PocError:
        return "an answer that is not a §9 error"
    return f"{err['code']}: {err['message'][:200]}"


def _describe(exc: BaseException) -> str:
    """A short, plain account of a transport failure: never an object's repr."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or name in ("ServerTimeoutError", "ConnectionTimeoutError"):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"[:200]
    text = str(exc)
    if " object at 0x" in text:
        text = ""
    return f"{name}: {text}"[:200] if text else name


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    return await read_answer(resp, limit)  # looked up at call time: tests may wrap it


async def read_answer(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise PeerError(f"answer of {resp.content_length} bytes, limit {limit}")
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise PeerError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["PeerClient", "PeerError", "client_context", "read_answer"]
