"""What the hostile-input tests against real nodes share (issue 13): the error codes of
PROTOCOL.md §9 as the spec's own text states them, a raw peer-port client that reports a
dropped connection instead of raising, the checks every peer answer must pass, a wall-clock
budget for hypothesis runs, and a node's memory as the kernel counts it.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocnode.core import encoding
from pocnode.core.errors import PocError
from tests.integration.harness import Node
from tests.integration.peer import tls_context
from tests.unit.test_spec import SPEC, _spec_codes

# -- §9 ----------------------------------------------------------------------------------------

TABLE_CODES = _spec_codes()


def _operator_own_codes() -> set[str]:
    """The codes §9's closing paragraph gives the operator API beside the table."""
    section = SPEC.split("## 9. Error codes", 1)[1].split("\n## ", 1)[0]
    own = section.split("of its own", 1)[1] if "of its own" in section else ""
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", own))


OPERATOR_OWN_CODES = _operator_own_codes()
# "internal" is in the table, but §9 says what it is: a bug, never a verdict on input. A 4xx
# is a verdict on input, so it never carries it.
NOT_A_VERDICT = {"internal"}
# The peer port's /v1/peer/public/{member} answers `no_record`, a code §9 names only for the
# operator API; allowed here, and reported (§8 does not describe that route at all).
PEER_CODES = TABLE_CODES | {"no_record"}
OPERATOR_CODES = TABLE_CODES | OPERATOR_OWN_CODES
# Which codes fit which refusal status. 400 takes any verdict not reserved to another one.
FITTING: dict[int, set[str]] = {
    401: {"unauthenticated"},
    403: {"no_consent"},
    404: {"no_record", "not_found", "unknown_author"},
    405: {"method_not_allowed"},
    409: {"no_change", "busy"},
    413: {"oversize"},
    429: {"rate_limited"},
    503: {"store", "busy"},
}
_RESERVED = {"unauthenticated", "no_consent", "not_found", "method_not_allowed",
             "rate_limited", "no_change", "busy", "store"}
# The operator API's statuses add a request's party and order (PROTOCOL.md §12.4) and the
# tally's refusals of a ballot it would not count (§5.8), as protocol/openapi.yaml lists them.
OPERATOR_FITTING: dict[int, set[str]] = {
    **FITTING, 403: FITTING[403] | {"not_party"},
    409: FITTING[409] | {"out_of_order", "double_vote", "vote_too_late"}}

MSGPACK = "application/msgpack"


# -- talking to the peer port -----------------------------------------------------------------


@dataclass
class Answer:
    """One request's outcome: a status, or ``dropped`` naming how the connection ended."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    dropped: str | None = None

    @property
    def media(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


def peer_request(port: int, method: str, path: str, body: bytes = b"", *,
                 headers: dict[str, str] | None = None, source: str | None = None,
                 timeout: float = 15) -> Answer:
    """One request on a fresh TLS connection; a reset or an early close is an Answer too."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=timeout, context=tls_context(),
        source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body if body or method not in ("GET", "HEAD")
                     else None, headers={"Content-Type": MSGPACK, **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        return Answer(status=response.status,
                      headers={k.lower(): v for k, v in response.getheaders()}, body=raw)
    except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, TLS alerts
        return Answer(status=None, dropped=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def describe(method: str, path: str, body: bytes, headers: dict[str, str] | None,
             answer: Answer) -> str:
    """A failure message that lets a reader replay the request."""
    auth = (headers or {}).get("Authorization")
    return (f"{method} {path} body[{len(body)}]={body[:96].hex()}"
            f"{'…' if len(body) > 96 else ''} auth={auth[:40] + '…' if auth else None!r} -> "
            f"{answer.status or answer.dropped} {answer.media!r} {answer.body[:300]!r}")


def refusal_of(answer: Answer, codes: set[str], what: str) -> dict[str, Any]:
    """Check a peer-port refusal: status fits, body is canonical msgpack {code, message} with
    a §9 verdict code fitting the status; return the decoded body."""
    assert answer.status is not None and 400 <= answer.status < 500, what
    assert answer.media == MSGPACK, f"refusal is not {MSGPACK}: {what}"
    try:
        doc = encoding.decode(answer.body, max_size=64 * 1024)
    except PocError as exc:
        raise AssertionError(f"refusal body is not canonical msgpack ({exc.code}): {what}") \
            from None
    assert type(doc) is dict and doc.keys() == {"code", "message"}, f"not {{code, message}}: {what}"
    code, message = doc["code"], doc["message"]
    assert type(code) is str and type(message) is str and message, what
    assert code in codes, f"code {code!r} is not in PROTOCOL.md §9: {what}"
    assert code not in NOT_A_VERDICT, f"a 4xx carries {code!r}, which §9 keeps for bugs: {what}"
    fitting = FITTING.get(answer.status, (codes - _RESERVED))
    assert code in fitting, f"code {code!r} does not fit status {answer.status}: {what}"
    return doc


# -- talking to the operator API --------------------------------------------------------------


def operator_request(node: Node, method: str, path: str, data: bytes | None = None, *,
                     token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lowercase names, body) of one operator API request."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.m.operator_port}{path}",
                                     data=data, method=method)
    request.add_header("Authorization", f"Bearer {node.token if token is None else token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - loopback
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def operator_refusal(status: int, headers: dict[str, str], raw: bytes, what: str
                     ) -> dict[str, Any]:
    """An operator API refusal: JSON {code, message, path?}, a §9 (or the API's own) code
    that fits the status; a 4xx never carries `internal`."""
    what = f"{what} -> {status} {raw[:300]!r}"
    assert 400 <= status < 600, what
    assert headers.get("content-type", "").split(";")[0] == "application/json", what
    doc = json.loads(raw)
    assert type(doc) is dict and {"code", "message"} <= doc.keys() <= {"code", "message",
                                                                        "path"}, what
    assert type(doc["code"]) is str and type(doc["message"]) is str and doc["message"], what
    assert doc["code"] in OPERATOR_CODES, f"code not in PROTOCOL.md §9: {what}"
    if status < 500:
        assert doc["code"] not in NOT_A_VERDICT, f"a 4xx carries a bug's code: {what}"
        assert doc["code"] in OPERATOR_FITTING.get(status, OPERATOR_CODES), \
            f"code does not fit: {what}"
    else:  # openapi.yaml, the Internal response: the node's fault, never the request's
        assert doc["code"] in ("internal", "store"), what
    return doc


# -- a wall-clock budget for hypothesis --------------------------------------------------------


class Budget:
    """A wall-clock bound on fuzzing, whatever hypothesis's example counts say.

    Hypothesis cannot be told to stop at a time (a test whose draws depend on the clock is
    flaky to it), so fuzzing runs as whole hypothesis runs of a few examples each, one per
    slice of the input space (a route, an operation), in rounds while the budget lasts. The
    first round always completes, so every slice is fuzzed however loaded the machine is;
    the budget is overshot by one run at most.
    """

    def __init__(self, seconds: float, *, max_rounds: int = 1000) -> None:
        self.seconds = seconds
        self.max_rounds = max_rounds
        self.start = time.monotonic()
        self.examples = 0
        self.rounds = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def round_robin(self, runs: list[Callable[[], None]]) -> int:
        """Call each ``run`` (a @given test) in turn, round after round, until the budget is
        spent; return the number of runs made."""
        made = 0
        while self.rounds < self.max_rounds:
            for run in runs:
                if self.rounds and self.elapsed() >= self.seconds:
                    return made
                run()
                made += 1
            self.rounds += 1
        return made


# -- a node's memory -------------------------------------------------------------------------


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident since start or the last reset), in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to VmRSS (Linux >= 4.0, writing 5 to clear_refs); False if we may not."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
