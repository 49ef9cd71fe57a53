"""Tools for the adversarial tests of issue 13 (test_attacks.py).

Self-contained on purpose: everything here speaks to a node only through its two
ports (the operator API and the peer protocol of PROTOCOL.md §8) and builds events
with the core's public functions, so the same tests run against any version of the
node, including the one before the issue was fixed (to show that they fail there).

Attackers must not share the honest nodes' address: a loopback federation's nodes
all come from 127.0.0.1, so attacking clients bind other loopback addresses
(127.0.0.2 and up: all of 127.0.0.0/8 is local on Linux).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocnode.core import encoding
from pocnode.core.events import build_event, parse_event
from pocnode.core.keys import SigningKey
from pocnode.core.peer_auth import make_header
from tests.integration.harness import Node, wait_until

# A source address per attacker: the honest nodes are 127.0.0.1.
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 40)]


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the peer protocol, from any source address ----------------------------------------


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


TLS = _TLS = tls_context()


def peer_request(port: int, method: str, path: str, body: bytes = b"", *,
                 headers: dict[str, str] | None = None, source: str = "127.0.0.1",
                 host: str = "127.0.0.1", timeout: float = 10) -> tuple[int, Any]:
    """One request on a fresh connection; the answer decoded if it is msgpack."""
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_TLS,
                                       source_address=(source, 0))
    try:
        conn.request(method, path, body=body if method != "GET" else None, headers={
            "Content-Type": "application/msgpack", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, encoding.decode(raw, max_size=8 * 1024 * 1024)
    except Exception:  # noqa: BLE001 - a non-msgpack answer is returned as bytes
        return resp.status, raw


def peer_call(port: int, route: str, fed: bytes, msg: dict[str, Any], **kw: Any
              ) -> tuple[int, Any]:
    return peer_request(port, "POST", route, encoding.encode({**msg, "fed": fed}), **kw)


def auth_header(key: SigningKey, *, fed: bytes, member: str, server_pin: bytes, path: str,
                body: bytes) -> dict[str, str]:
    return {"Authorization": make_header(key, fed=fed, member=member, server_pin=server_pin,
                                         now=now_ms(), method="POST", path=path, body=body)}


def push_and_abort(port: int, body: bytes, *, source: str, path: str = "/v1/peer/exchange",
                   linger_s: float = 0.0) -> None:
    """Send a whole request, then reset the connection without reading the answer: the
    client that drops its connection while its events are being stored (class 2)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    try:
        sock = _TLS.wrap_socket(raw)
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock.sendall(head + body)
        if linger_s:
            time.sleep(linger_s)  # the attack's own timing: abort mid-processing
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    finally:
        raw.close()


# -- events of a member, any history it likes ---------------------------------------------


@dataclass
class Signer:
    """Signs events as ``member`` with ``key``; branches are lists of raw envelopes."""

    key: SigningKey
    fed: bytes
    member: str
    ts: int = field(default_factory=now_ms)

    def event(self, seq: int, prev: bytes | None, tag: str, *, kind: str = "node.keys",
              body: dict[str, Any] | None = None, ts: int | None = None) -> bytes:
        if body is None:  # a valid node.keys body that differs per branch and sequence
            body = {"tls": hashlib.sha256(f"{self.member}/{tag}/{seq}".encode()).digest()}
        return build_event(self.key, fed=self.fed, author=self.member, seq=seq, prev=prev,
                           kind=kind, ts=ts or self.ts, body=body)

    def extend(self, prefix: list[bytes], n: int, tag: str) -> list[bytes]:
        """``prefix`` followed by n new events; different tags give different branches."""
        out = list(prefix)
        prev = parse_event(out[-1]).id if out else None
        for _ in range(n):
            raw = self.event(len(out) + 1, prev, tag)
            out.append(raw)
            prev = parse_event(raw).id
        return out


def event_id(raw: bytes) -> bytes:
    return parse_event(raw).id


# -- nodes, seen from outside -------------------------------------------------------------


def head_of(node: Node, member: str) -> tuple[int, int | None]:
    """(head, frozen_at) of ``member`` as ``node`` shows it (GET /v1/events)."""
    answer = node.get(f"/v1/events/{member}?limit=1")
    return answer["head"], answer.get("frozen_at")


def summary_of(node: Node) -> str:
    return node.get("/v1/status")["summary"]


def rss_kb(node: Node) -> int:
    return node.rss_kb()


def log_size(node: Node) -> int:
    path = node.dir / "node.log"
    return path.stat().st_size if path.exists() else 0


def record_seq(node: Node, member: str) -> int | None:
    status, body = node.api("GET", "/v1/directory")
    if status != 200:
        return None
    for row in body["members"]:
        if row["member"] == member:
            return row["record_seq"]
    return None


def wait_record(nodes: list[Node], member: str, seq: int, *, timeout: float) -> float:
    """Seconds until every node shows ``member``'s record at ``seq`` or later."""
    start = time.monotonic()
    for node in nodes:
        wait_until(lambda n=node: (record_seq(n, member) or 0) >= seq, timeout=timeout,
                   every=0.02, what=f"{node.member} holds {member}'s record #{seq}")
    return time.monotonic() - start


def plain_record(member: str, marker: str, *, endpoints: list[str] | None = None,
                 move_to: str = "members") -> dict[str, Any]:
    """A record with a public, a members and a bilateral entry; the members entry's person
    carries ``marker`` (``move_to`` may move that entry to bilateral, or "drop" it)."""
    entries = [
        {"id": "cert", "domain": "technical", "visibility": "public",
         "organisation": f"{member} CERT", "email": "cert@example.org"},
        {"id": "duty", "domain": "policy", "visibility": "bilateral",
         "organisation": f"{member} Duty", "person": f"Bil{marker}", "phone": "+41225550111"},
    ]
    if move_to != "drop":
        entries.insert(1, {"id": "mfa", "domain": "diplomatic", "visibility": move_to,
                           "organisation": f"{member} MFA", "person": f"Mem{marker}",
                           "email": "mfa@example.org"})
    plain: dict[str, Any] = {"template": 1, "entries": entries}
    if endpoints is not None:
        plain["node"] = {"endpoints": endpoints}
    return plain


def files_holding(directory: Path, needle: bytes) -> list[str]:
    hits = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError), open(path, "rb") as f:
                if needle in f.read():
                    hits.append(path)
    return hits


# -- a node started through a test launcher -----------------------------------------------


def start_with(node: Node, argv_prefix: list[str]) -> None:
    """Start ``node`` as ``python <argv_prefix> run --data-dir <dir>``, logging where the
    harness logs."""
    assert node.proc is None or node.proc.poll() is not None, "already running"
    (node.dir / "run.json").unlink(missing_ok=True)
    with open(node.dir / "node.log", "ab") as log:
        node.proc = subprocess.Popen([sys.executable, "-P", *argv_prefix, "run",
                                      "--data-dir", str(node.dir)],
                                     stdout=log, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})


CRASH_LAUNCHER = Path(__file__).with_name("crash_launcher.py")
CRASH_EXIT = 86  # the launcher's exit code when it crashed the node on purpose


def start_crashing(node: Node, at: int, torn: bool) -> None:
    start_with(node, [str(CRASH_LAUNCHER), str(at), "torn" if torn else "before"])


def arm_crash(node: Node) -> None:
    assert node.proc is not None
    node.proc.send_signal(signal.SIGUSR1)


# -- resources of attackers ------------------------------------------------------------


class Tarpit:
    """A TCP port that completes handshakes in the kernel and never answers: a junk
    endpoint that costs its caller a full timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def running(threads: list[threading.Thread]) -> Iterator[threading.Event]:
    """Start attack threads (each loops until its own deadline or the yielded event);
    after the block, wait for them to end (setting the event first if the block raised)."""
    stop = threading.Event()
    for t in threads:
        t._kwargs["stop"] = stop  # type: ignore[attr-defined]
        t.daemon = True
        t.start()
    try:
        yield stop
    except BaseException:
        stop.set()
        raise
    finally:
        for t in threads:
            t.join(timeout=60)
        stop.set()


def figure(name: str, **values: Any) -> None:
    """A measured figure on one line, for the report (pytest -s shows it)."""
    print(f"FIGURE {name}: " + json.dumps(values, default=str), flush=True)


def loop(body: Callable[[], Any], *, stop: threading.Event, seconds: float,
         errors: list[str] | None = None) -> None:
    """Call ``body`` until ``stop`` or ``seconds`` have passed; connection errors are the
    attack's normal fate and are not kept."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            body()
        except (OSError, http.client.HTTPException, ssl.SSLError):
            pass
        except Exception as exc:  # noqa: BLE001 - reported by the test
            if errors is not None and len(errors) < 20:
                errors.append(repr(exc))


LOG_LINE_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|"
                           r"CRITICAL) +pocnode[.\w]* ")


# -- connection attacks (class 6) -----------------------------------------------------------

IP_FREEBIND = 15  # linux/in.h: bind an address not (yet) on an interface


def _socket(host: str, source: str, *, freebind: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if freebind:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.settimeout(3)
    sock.bind((source, 0))
    return sock


def _closed(sock: socket.socket) -> bool:
    """Has the server closed (or reset) this connection? Read from the kernel's TCP state,
    so nothing is ever read from the socket."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _ESTABLISHED
    except (OSError, ValueError):
        return True


_ESTABLISHED = 1  # linux/tcp_states.h


@dataclass
class Holder:
    """Keeps up to ``target`` connections open from ``source``: idle TLS connections, or
    half-open ones (TCP only, no handshake). Reopens what the server closes."""

    host: str
    port: int
    source: str
    target: int
    tls: bool
    freebind: bool = False
    opened: int = 0
    failed: int = 0
    most: int = 0
    socks: list[socket.socket] = field(default_factory=list)

    def run(self, *, stop: threading.Event, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                alive = []
                for s in self.socks:
                    if _closed(s):
                        s.close()
                    else:
                        alive.append(s)
                self.socks = alive
                for _ in range(min(8, self.target - len(self.socks))):
                    try:
                        s = _socket(self.host, self.source, freebind=self.freebind)
                        s.connect((self.host, self.port))
                        if self.tls:
                            s = _TLS.wrap_socket(s)
                        self.socks.append(s)
                        self.opened += 1
                    except (OSError, ssl.SSLError):
                        self.failed += 1
                self.most = max(self.most, len(self.socks))
                stop.wait(0.05)  # pacing of the attack, not a synchronisation
        finally:
            for s in self.socks:
                s.close()
            self.socks = []


@dataclass
class NonReader:
    """Sends many requests with large answers on a connection and never reads; opens a
    fresh connection every ``every_s`` (a server that gives up on one is not told so: its
    close waits behind the answer it could not send), holding up to ``most`` at once."""

    port: int
    source: str
    body: bytes
    requests: int = 30
    every_s: float = 3.0
    most: int = 8
    connections: int = 0

    def run(self, *, stop: threading.Event, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        head = (f"POST /v1/peer/exchange HTTP/1.1\r\nHost: x\r\nContent-Type: "
                f"application/msgpack\r\nContent-Length: {len(self.body)}\r\n\r\n").encode()
        held: list[socket.socket] = []
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if len(held) >= self.most:
                    held.pop(0).close()
                try:
                    s = _TLS.wrap_socket(_socket("127.0.0.1", self.source, freebind=False))
                    held.append(s)
                    s.connect(("127.0.0.1", self.port))
                    s.sendall((head + self.body) * self.requests)
                    self.connections += 1
                except (OSError, ssl.SSLError):
                    pass
                stop.wait(self.every_s)  # pacing of the attack
        finally:
            for s in held:
                s.close()


def fd_count(node: Node) -> int:
    assert node.proc is not None
    try:
        return len(os.listdir(f"/proc/{node.proc.pid}/fd"))
    except OSError:
        return 0


@contextlib.contextmanager
def local_ipv6_prefix(prefix: str) -> Iterator[bool]:
    """Make every address of ``prefix`` (a /64) local to this host, so attackers can bind
    them (with IP_FREEBIND); yields False where that is not allowed here."""
    added = subprocess.run(["ip", "-6", "route", "add", "local", prefix, "dev", "lo"],
                           capture_output=True, check=False).returncode == 0
    try:
        yield added
    finally:
        if added:
            subprocess.run(["ip", "-6", "route", "del", "local", prefix, "dev", "lo"],
                           capture_output=True, check=False)


# -- log lines (class 7) ---------------------------------------------------------------------

_JSON_STR = r'"(?:[^"\\]|\\.)*"'
_PLAIN_TOKEN = r"[A-Za-z0-9_.:/@,+\-#]+"
_TEXT_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)"
    rf" +(?P<logger>pocnode[.\w]*) (?P<msg>{_JSON_STR}|[^=\"]*?)"
    rf"(?P<fields>(?: (?:{_PLAIN_TOKEN}|{_JSON_STR})=(?:{_PLAIN_TOKEN}|{_JSON_STR}))*)")
_FIELD = re.compile(rf" ({_PLAIN_TOKEN}|{_JSON_STR})=({_PLAIN_TOKEN}|{_JSON_STR})")


def parse_text_line(line: str) -> dict[str, Any] | None:
    """A text log line as (ts, level, logger, msg, fields), or None if it is not one
    whole line of the format (logs.py): what a forged line would fail."""
    m = _TEXT_LINE.fullmatch(line)
    if m is None:
        return None
    fields = {}
    for key, value in _FIELD.findall(m.group("fields")):
        fields[json.loads(key) if key.startswith('"') else key] = (
            json.loads(value) if value.startswith('"') else value)
    return {"level": m.group("level"), "logger": m.group("logger"), "msg": m.group("msg"),
            "fields": fields}


def log_lines(node: Node, start: int) -> list[str]:
    """The log's lines written after byte ``start``, split on newlines only."""
    with open(node.dir / "node.log", "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", errors="replace").split("\n")[:-1]
