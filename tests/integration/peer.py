"""A test-side peer: speaks the peer protocol to a real node, honestly or not."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from pocnode.core import encoding
from pocnode.core.events import build_event, parse_event
from pocnode.core.genesis import parse_genesis
from pocnode.node import datadir


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def post(port: int, path: str, body: bytes, *, headers: dict[str, str] | None = None,
         timeout: float = 10) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls_context())
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/msgpack", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, encoding.decode(raw, max_size=8 * 1024 * 1024)
        except Exception:  # noqa: BLE001 - a non-msgpack answer is shown as bytes
            return resp.status, raw
    finally:
        conn.close()


def call(port: int, path: str, fed: bytes, msg: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    return post(port, path, encoding.encode({**msg, "fed": fed}), **kw)


class Author:
    """Writes events as a member would, from that member's data directory."""

    def __init__(self, data_dir: Path) -> None:
        passphrase = datadir.read_passphrase(data_dir, datadir.PASSPHRASE_FILE)
        self.key = datadir.load_identity(data_dir, passphrase)
        self.genesis = parse_genesis((data_dir / datadir.GENESIS_FILE).read_bytes())
        self.member = (data_dir / "config.toml").read_text().split('member = "')[1].split('"')[0]
        self.seq = 0
        self.prev: bytes | None = None

    def next(self, kind: str, body: dict[str, Any], *, ts: int | None = None) -> bytes:
        self.seq += 1
        raw = build_event(self.key, fed=self.genesis.id, author=self.member, seq=self.seq,
                          prev=self.prev, kind=kind, ts=ts or int(time.time() * 1000),
                          body=body)
        self.prev = parse_event(raw).id
        return raw


def slow_client(port: int, *, seconds: float, every: float = 1.0) -> float:
    """Open TLS and send a request one byte per `every` s; return how long the server
    let the connection live (capped at `seconds`)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = tls_context().wrap_socket(raw)
    start = time.monotonic()
    request = b"POST /v1/peer/summary HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    try:
        for byte in request * 10:
            if time.monotonic() - start > seconds:
                break
            sock.send(bytes([byte]))
            time.sleep(every)  # the attack itself: a byte a second, on purpose
    except OSError:
        pass
    finally:
        sock.close()
    return time.monotonic() - start
