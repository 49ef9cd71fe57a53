"""Talking to other nodes: one aiohttp session, pinned TLS, bounded everything (§8).

Every call has a deadline (connect and total), every response body a size cap,
and every answer is decoded as canonical msgpack; a peer that breaks any of it
raises :class:`PeerError`, which the gossip loop turns into a backoff.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from pocnode.core import encoding
from pocnode.core.errors import PocError
from pocnode.core.keys import SigningKey
from pocnode.core.peer_auth import make_header
from pocnode.net.guard import dump_traffic
from pocnode.node import tls

CONTENT_TYPE = "application/msgpack"


class PeerError(PocError):
    """A peer did not answer, answered late, too much, or not in the protocol."""

    code = "peer"


class PeerClient:
    def __init__(self, *, fed: bytes, member: str, key: SigningKey, request_timeout_s: float,
                 connect_timeout_s: float, max_response_bytes: int) -> None:
        self.fed = fed
        self.member = member
        self.key = key
        self.max_response_bytes = max_response_bytes
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_s,
                                             sock_connect=connect_timeout_s)
        self._ssl = tls.client_context()
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
                   pin: bytes | None = None, authenticate: bool = False) -> dict[str, Any]:
        """POST ``body`` (fed added) to ``endpoint + path``; the decoded map answered.

        With ``pin``, the server's certificate must hash to it or nothing is sent. A call
        that must be authenticated needs the pin too: the signature binds it.
        """
        assert self._session is not None, "start() first"
        data = encoding.encode({**body, "fed": self.fed})
        headers = {"Content-Type": CONTENT_TYPE}
        if authenticate:
            if pin is None:
                raise PeerError("no pin known for this peer: cannot authenticate", path=endpoint)
            headers["Authorization"] = make_header(
                self.key, fed=self.fed, member=self.member, server_pin=pin,
                now=int(time.time() * 1000), method="POST", path=path, body=data)
        ssl: Any = self._fingerprint(pin) if pin is not None else self._ssl
        try:
            async with self._session.post(endpoint + path, data=data, headers=headers,
                                          ssl=ssl) as resp:
                raw = await _read_capped(resp, self.max_response_bytes)
                dump_traffic(raw)
                if resp.content_type != CONTENT_TYPE:
                    raise PeerError(f"answered {resp.status} with {resp.content_type}",
                                    path=endpoint + path)
                answer = encoding.decode(raw, max_size=self.max_response_bytes, exact=False)
                if type(answer) is not dict:
                    raise PeerError("answer is not a map", path=endpoint + path)
                if resp.status != 200:
                    raise PeerError(f"refused ({resp.status}): {answer.get('code')}: "
                                    f"{str(answer.get('message'))[:200]}", path=endpoint + path)
                return answer
        except aiohttp.ServerFingerprintMismatch:
            raise PeerError("server certificate does not match the member's pin",
                            path=endpoint) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(f"{type(exc).__name__}: {exc}"[:300], path=endpoint) from None
        except PocError as exc:
            if isinstance(exc, PeerError):
                raise
            raise PeerError(f"answer not canonical msgpack: {exc}", path=endpoint) from None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise PeerError(f"answer of {resp.content_length} bytes, limit {limit}")
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise PeerError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
