"""Communication requests, their states, ping campaigns and published exchanges
(PROTOCOL.md §12).

A request is an event of kind ``request`` in its **sender's** chain, so it is signed,
ordered, gossiped, stored and audited like every event; its body holds two HPKE boxes of
one padded size, one to the recipient and one to the sender itself (as consent messages,
§7.2), so a third node learns neither its content nor its recipient. Every change of state
(delivered, acknowledged, answered, declined, and each side's consent to publish the
exchange) is a ``request`` event in the chain of whoever makes it, sealed to the
counterpart the same way: the two parties, and only they, see the whole timeline.
"Expired" is derived from the reply-by time and the clock; nothing is written for it.

A record of the exchange becomes visible to members only when both parties signed a
``request.publish`` event carrying the same record (§12.6); each node writes its own
only once it holds the other side's sealed consent.

This module is pure (no I/O, no clock): body rules, plaintext formats, sealing, the
:class:`RequestBook` (the state a node folds from the request events it can open) and
the protocol sequences the engine runs (each a generator of the engine's effects).
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pocnode.core import encoding
from pocnode.core.consent import BOX_BYTES, CONSENT_PLAINTEXT_BYTES, HpkeKey, SealError, seal
from pocnode.core.errors import (
    Busy,
    InvalidBody,
    InvalidRequest,
    NoChange,
    NotFound,
    NotParty,
    OutOfOrder,
    Oversize,
    PocError,
    RateLimited,
    Replay,
    StoreError,
    UnknownAuthor,
    UnknownRequest,
)
from pocnode.core.events import MEMBER_ID
from pocnode.core.limits import KeyedLimiter
from pocnode.core.record import DOMAINS

if TYPE_CHECKING:
    from pocnode.core.engine import Engine
    from pocnode.core.events import Event

KIND_REQUEST = "request"
KIND_REQUEST_PUBLISH = "request.publish"
REQUEST_DOMAIN = b"pocnode/v1/request\x00"

TYPES = ("ping", "incident-notification", "information-request", "assistance-request",
         "follow-up", "other")
URGENCIES = ("routine", "priority", "urgent")
DELIVERED, ACKNOWLEDGED, ANSWERED, DECLINED, PUBLISH = (
    "delivered", "acknowledged", "answered", "declined", "publish")
# The recipient's states, in the only order they may come (§12.4); answered and declined
# are final. A party's consent to publish (``publish``) stands beside them.
RANK = {DELIVERED: 1, ACKNOWLEDGED: 2, ANSWERED: 3, DECLINED: 3}
STATES = (*RANK, PUBLISH)
SCOPES = ("metadata", "content")

# -- limits (§2.5, §12.2): every text is bounded, and so is the padded plaintext ------------
ID_BYTES = 16
SUBJECT_MAX_CHARS = 200
# A request or an answer is a message between duty officers, not a document: documents
# travel elsewhere and are named here by their digests.
TEXT_MAX_CHARS = 8000
MAX_ATTACHMENTS = 16
CAMPAIGN_MAX_CHARS = 64
# Plaintexts are padded to one of these sizes, so a box says which of four classes its
# message falls in and nothing finer. Two boxes of the largest, plus a hybrid signature,
# stay well inside the 64 KiB event limit (§2.5).
PAD_SIZES = (512, 2048, 8192, 24576)
MAX_PLAINTEXT_BYTES = PAD_SIZES[-1]
_LEN = struct.Struct(">I")  # the framing: the canonical map's length, then the map

_ENTRY_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")

# -- what a node does with requests: defaults of the settings in node/config.py --------------
# Receipts and alerts per sending member per hour: a flood from one member is kept (it is in
# that member's chain) but wakes nobody and is not answered beyond this, and each member
# has its own budget, so one flood never delays another member's request.
DEFAULT_ALERTS_PER_MEMBER_HOUR = 60
# Refusals kept for the operator to see (the log has them all, rate-limited).
MAX_REFUSALS_KEPT = 200
# Statuses held at restore before the request they name (restore reads chain by chain).
MAX_ORPHANS = 4096
# A receipt or alert still owed at restart (the node stopped between storing a request and
# answering it) is made up for only for requests this recent: a week-old ping is history.
OWED_MAX_AGE_MS = 24 * 3_600_000


def box_overhead(suite: str) -> int:
    """HPKE ``enc`` plus the AEAD tag: what a box adds to its plaintext."""
    return BOX_BYTES[suite] - CONSENT_PLAINTEXT_BYTES


# -- body rules (§12.2, §12.6): what every verifier checks ----------------------------------


def check_request_body(body: dict[str, Any], hpke_suite: str) -> None:
    """§12.2: shape only, like ``sealed``; who can open a box is nobody else's business."""
    if body.keys() != {"suite", "boxes"}:
        raise InvalidBody(f"request body must have exactly suite, boxes; got {sorted(body)}",
                          path="body")
    if body["suite"] != hpke_suite:
        raise InvalidBody(f"suite must be the genesis suite {hpke_suite}", path="body.suite")
    boxes = body["boxes"]
    if type(boxes) is not list or len(boxes) != 2 or not all(type(b) is bytes for b in boxes):
        raise InvalidBody("boxes must be two bin", path="body.boxes")
    overhead = box_overhead(hpke_suite)
    for i, box in enumerate(boxes):
        if len(box) - overhead > MAX_PLAINTEXT_BYTES:
            raise Oversize(f"a box of {len(box)} bytes holds more than the largest plaintext "
                           f"({MAX_PLAINTEXT_BYTES} bytes)", path=f"body.boxes[{i}]")
        if len(box) - overhead not in PAD_SIZES:
            raise InvalidBody(f"a box must be {overhead} bytes plus one of the padded sizes "
                              f"{PAD_SIZES}, got {len(box)}", path=f"body.boxes[{i}]")
    if len(boxes[0]) != len(boxes[1]):
        raise InvalidBody("both boxes must be of one size", path="body.boxes")
    if not boxes[0] < boxes[1]:
        raise InvalidBody("boxes must be distinct and in ascending order", path="body.boxes")


_EXCHANGE_REQUIRED = frozenset({"sender", "recipient", "id", "scope", "request", "sent",
                                "type", "urgency", "steps"})


def check_publication_body(body: dict[str, Any]) -> dict[str, Any]:
    """§12.6: ``{"exchange": record}``, the record in clear, every field checked."""
    if body.keys() != {"exchange"} or type(body["exchange"]) is not dict:
        raise InvalidBody("request.publish body must be exactly {exchange: map}", path="body")
    x = body["exchange"]
    where = "body.exchange"
    allowed = _EXCHANGE_REQUIRED | {"content"}
    if not _EXCHANGE_REQUIRED <= x.keys() <= allowed:
        raise InvalidBody(f"exchange keys: required {sorted(_EXCHANGE_REQUIRED)}, optional "
                          f"content; got {sorted(x)}", path=where)
    for name in ("sender", "recipient"):
        if type(x[name]) is not str or not MEMBER_ID.fullmatch(x[name]):
            raise InvalidBody(f"{name} must be a member id", path=f"{where}.{name}")
    if x["sender"] == x["recipient"]:
        raise InvalidBody("sender and recipient must differ", path=where)
    _bin(x["id"], ID_BYTES, f"{where}.id")
    _bin(x["request"], 32, f"{where}.request")
    _ts(x["sent"], f"{where}.sent")
    _choice(x["type"], TYPES, f"{where}.type")
    _choice(x["urgency"], URGENCIES, f"{where}.urgency")
    _choice(x["scope"], SCOPES, f"{where}.scope")
    steps = x["steps"]
    if type(steps) is not list or len(steps) > len(RANK):
        raise InvalidBody(f"steps must be an array of at most {len(RANK)}",
                          path=f"{where}.steps")
    rank = 0
    for i, step in enumerate(steps):
        p = f"{where}.steps[{i}]"
        if type(step) is not list or len(step) != 3:
            raise InvalidBody("a step is [state, event id, ts]", path=p)
        _choice(step[0], tuple(RANK), f"{p}[0]")
        if RANK[step[0]] <= rank:
            raise InvalidBody("steps must follow the order of §12.4", path=p)
        rank = RANK[step[0]]
        _bin(step[1], 32, f"{p}[1]")
        _ts(step[2], f"{p}[2]")
    if (x["scope"] == "content") != ("content" in x):
        raise InvalidBody("content is present exactly when scope is content", path=where)
    if "content" in x:
        c = x["content"]
        p = f"{where}.content"
        if type(c) is not dict or not {"subject", "text", "lang"} <= c.keys() <= {
                "subject", "text", "lang", "answer", "reason"}:
            raise InvalidBody("content must have subject, text, lang and optionally answer "
                              "or reason", path=p)
        _text(c["subject"], 1, SUBJECT_MAX_CHARS, f"{p}.subject")
        _text(c["text"], 0, TEXT_MAX_CHARS, f"{p}.text")
        _lang(c["lang"], f"{p}.lang")
        for name in ("answer", "reason"):
            if name in c:
                _text(c[name], 0, TEXT_MAX_CHARS, f"{p}.{name}")
    return x


# -- plaintexts (§12.3) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestMessage:
    """What a request says, as its sender wrote it (the template of MISSION.md row 3c)."""

    id: bytes
    to: str
    type: str
    subject: str
    text: str
    urgency: str
    lang: str
    reply_by: int | None = None
    attachments: tuple[bytes, ...] = ()
    ref: tuple[str, bytes] | None = None       # (sender, id) of an earlier request
    from_entry: str | None = None               # the sender's PoC: an entry of its record
    to_domain: str | None = None
    to_entry: str | None = None
    campaign: str | None = None                 # the ping campaign it belongs to

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"m": "request", "id": self.id, "to": self.to,
                               "type": self.type, "subject": self.subject, "text": self.text,
                               "urgency": self.urgency, "lang": self.lang}
        if self.reply_by is not None:
            out["reply_by"] = self.reply_by
        if self.attachments:
            out["attachments"] = list(self.attachments)
        if self.ref is not None:
            out["ref"] = [self.ref[0], self.ref[1]]
        for name in ("from_entry", "to_domain", "to_entry", "campaign"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A change of state of the request (``sender``, ``id``), told to ``to``."""

    to: str
    sender: str
    id: bytes
    state: str
    text: str | None = None     # the answer, or the reason for declining
    scope: str | None = None    # publish only: metadata or content

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"m": "status", "to": self.to, "sender": self.sender,
                               "id": self.id, "state": self.state}
        if self.text is not None:
            out["text"] = self.text
        if self.scope is not None:
            out["scope"] = self.scope
        return out


Message = RequestMessage | StatusMessage

_REQUEST_KEYS = frozenset({"m", "id", "to", "type", "subject", "text", "urgency", "lang"})
_REQUEST_OPTIONAL = frozenset({"reply_by", "attachments", "ref", "from_entry", "to_domain",
                               "to_entry", "campaign"})
_STATUS_KEYS = frozenset({"m", "to", "sender", "id", "state"})


def frame(message: Message) -> bytes:
    """The padded plaintext: length (4 bytes, big-endian), the canonical map, zero bytes up
    to the smallest size of :data:`PAD_SIZES` that holds it."""
    body = encoding.encode(message.to_wire())
    need = _LEN.size + len(body)
    size = next((s for s in PAD_SIZES if s >= need), None)
    if size is None:
        raise Oversize(f"the message is {need} bytes framed; at most {MAX_PLAINTEXT_BYTES} "
                       f"fit a box (shorten the text)", path="request")
    return _LEN.pack(len(body)) + body + b"\x00" * (size - need)


def parse_message(raw: bytes) -> Message:
    """Inverse of :func:`frame`, checking every rule of §12.3; ``invalid_body`` for a broken
    format, ``oversize`` for a text over its limit."""
    if len(raw) not in PAD_SIZES:
        raise InvalidBody(f"plaintext of {len(raw)} bytes is not a padded size", path="request")
    (n,) = _LEN.unpack_from(raw)
    if n > len(raw) - _LEN.size or any(raw[_LEN.size + n:]):
        raise InvalidBody("plaintext framing: length beyond the box, or padding not zero",
                          path="request")
    try:
        msg = encoding.decode(raw[_LEN.size:_LEN.size + n], max_size=MAX_PLAINTEXT_BYTES)
    except PocError as exc:
        raise InvalidBody(f"plaintext is not canonical msgpack: {exc.message}",
                          path="request") from None
    if type(msg) is not dict:
        raise InvalidBody("plaintext must be a map", path="request")
    if msg.get("m") == "request":
        return _parse_request(msg)
    if msg.get("m") == "status":
        return _parse_status(msg)
    raise InvalidBody("plaintext m must be request or status", path="request.m")


def _parse_request(msg: dict[str, Any]) -> RequestMessage:
    p = "request"
    if not _REQUEST_KEYS <= msg.keys() <= _REQUEST_KEYS | _REQUEST_OPTIONAL:
        raise InvalidBody(f"request keys: required {sorted(_REQUEST_KEYS)}, optional "
                          f"{sorted(_REQUEST_OPTIONAL)}; got {sorted(msg)}", path=p)
    _bin(msg["id"], ID_BYTES, f"{p}.id")
    _member(msg["to"], f"{p}.to")
    _choice(msg["type"], TYPES, f"{p}.type")
    _text(msg["subject"], 1, SUBJECT_MAX_CHARS, f"{p}.subject")
    _text(msg["text"], 0, TEXT_MAX_CHARS, f"{p}.text")
    _choice(msg["urgency"], URGENCIES, f"{p}.urgency")
    _lang(msg["lang"], f"{p}.lang")
    if "reply_by" in msg:
        _ts(msg["reply_by"], f"{p}.reply_by")
    attachments = msg.get("attachments", [])
    if "attachments" in msg and (type(attachments) is not list
                                 or not 1 <= len(attachments) <= MAX_ATTACHMENTS):
        raise InvalidBody(f"attachments must be an array of 1..{MAX_ATTACHMENTS} SHA-256 "
                          f"digests", path=f"{p}.attachments")
    for i, digest in enumerate(attachments):
        _bin(digest, 32, f"{p}.attachments[{i}]")
    ref = msg.get("ref")
    if ref is not None:
        if type(ref) is not list or len(ref) != 2:
            raise InvalidBody("ref must be [sender, id]", path=f"{p}.ref")
        _member(ref[0], f"{p}.ref[0]")
        _bin(ref[1], ID_BYTES, f"{p}.ref[1]")
    for name in ("from_entry", "to_entry"):
        if name in msg and (type(msg[name]) is not str or not _ENTRY_RE.fullmatch(msg[name])):
            raise InvalidBody(f"{name} must be an entry id [a-z0-9][a-z0-9-]{{0,31}}",
                              path=f"{p}.{name}")
    if "to_domain" in msg:
        _choice(msg["to_domain"], DOMAINS, f"{p}.to_domain")
    if "campaign" in msg:
        _text(msg["campaign"], 1, CAMPAIGN_MAX_CHARS, f"{p}.campaign")
    return RequestMessage(
        id=msg["id"], to=msg["to"], type=msg["type"], subject=msg["subject"], text=msg["text"],
        urgency=msg["urgency"], lang=msg["lang"], reply_by=msg.get("reply_by"),
        attachments=tuple(attachments), ref=(ref[0], ref[1]) if ref is not None else None,
        from_entry=msg.get("from_entry"), to_domain=msg.get("to_domain"),
        to_entry=msg.get("to_entry"), campaign=msg.get("campaign"))


def _parse_status(msg: dict[str, Any]) -> StatusMessage:
    p = "status"
    if not _STATUS_KEYS <= msg.keys() <= _STATUS_KEYS | {"text", "scope"}:
        raise InvalidBody(f"status keys: required {sorted(_STATUS_KEYS)}, optional text, "
                          f"scope; got {sorted(msg)}", path=p)
    _member(msg["to"], f"{p}.to")
    _member(msg["sender"], f"{p}.sender")
    _bin(msg["id"], ID_BYTES, f"{p}.id")
    state = _choice(msg["state"], STATES, f"{p}.state")
    if "text" in msg:
        if state not in (ANSWERED, DECLINED):
            raise InvalidBody("only an answer or a decline carries text", path=f"{p}.text")
        _text(msg["text"], 0, TEXT_MAX_CHARS, f"{p}.text")
    if state == ANSWERED and "text" not in msg:
        raise InvalidBody("an answer carries its text", path=f"{p}.text")
    if (state == PUBLISH) != ("scope" in msg):
        raise InvalidBody("scope is given exactly with publish", path=f"{p}.scope")
    if "scope" in msg:
        _choice(msg["scope"], SCOPES, f"{p}.scope")
    return StatusMessage(to=msg["to"], sender=msg["sender"], id=msg["id"], state=state,
                         text=msg.get("text"), scope=msg.get("scope"))


def _bin(value: Any, size: int, path: str) -> None:
    if type(value) is not bytes or len(value) != size:
        raise InvalidBody(f"must be bin of {size} bytes", path=path)


def _ts(value: Any, path: str) -> None:
    if type(value) is not int or not 0 <= value < 2**63:
        raise InvalidBody("must be an int time in ms, 0 <= t < 2^63", path=path)


def _member(value: Any, path: str) -> None:
    if type(value) is not str or not MEMBER_ID.fullmatch(value):
        raise InvalidBody("must be a member id [A-Z][A-Z0-9-]{1,31}", path=path)


def _choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if type(value) is not str or value not in choices:
        raise InvalidBody(f"must be one of {', '.join(choices)}; got {value!r:.40}", path=path)
    return value


def _text(value: Any, low: int, high: int, path: str) -> None:
    if type(value) is not str:
        raise InvalidBody("must be a str", path=path)
    if len(value) > high:
        raise Oversize(f"{len(value)} characters; at most {high}", path=path)
    if len(value) < low:
        raise InvalidBody(f"at least {low} character(s)", path=path)


def _lang(value: Any, path: str) -> None:
    if type(value) is not str or not _LANGUAGE_RE.fullmatch(value):
        raise InvalidBody("must be a language tag such as en or fr-CH", path=path)


# -- sealing (§12.3) ---------------------------------------------------------------------------


def request_info(fed: bytes, author: str) -> bytes:
    """Binds a box to its federation and its author: a box copied into another member's
    event does not open, for anyone."""
    return REQUEST_DOMAIN + fed + author.encode()


def sealed_request_body(*, suite: str, fed: bytes, author: str, message: Message,
                        to_public: bytes, own_public: bytes) -> dict[str, Any]:
    plaintext = frame(message)
    info = request_info(fed, author)
    return {"suite": suite, "boxes": sorted([seal(suite, to_public, plaintext, info),
                                             seal(suite, own_public, plaintext, info)])}


def open_request(body: dict[str, Any], key: HpkeKey, *, fed: bytes, author: str
                 ) -> bytes | None:
    """The plaintext, if one of the boxes opens under ``key``; None otherwise."""
    info = request_info(fed, author)
    for box in body["boxes"]:
        try:
            return key.open(box, info)
        except SealError:
            continue
    return None


# -- a node's state: the requests it is a party to ---------------------------------------------


@dataclass(slots=True)
class Step:
    """One signed change of state, as this node learned it."""

    state: str
    at: int           # the status event's ts: its author's signed time
    seen_at: int      # this node's clock when the event reached it
    event_id: bytes
    seq: int
    text: str | None = None
    scope: str | None = None


@dataclass(slots=True)
class Request:
    sender: str
    msg: RequestMessage
    event_id: bytes
    seq: int
    sent_at: int      # the request event's ts
    seen_at: int
    steps: list[Step] = field(default_factory=list)
    publish: dict[str, Step] = field(default_factory=dict)   # party -> its consent
    limited: bool = False        # over the sender's hourly budget: no receipt, no alert
    owed: bool = False           # to us, and neither receipt nor alert given yet
    push: str | None = None      # our direct push of it: "accepted" or "failed"
    published: bool = False      # our request.publish for it is written

    @property
    def key(self) -> tuple[str, bytes]:
        return (self.sender, self.msg.id)

    @property
    def recipient(self) -> str:
        return self.msg.to

    def step(self, state: str) -> Step | None:
        return next((s for s in self.steps if s.state == state), None)

    def rank(self) -> int:
        return max((RANK[s.state] for s in self.steps), default=0)

    def state(self, now: int) -> str:
        """§12.4: the latest state, or expired once reply-by has passed unanswered."""
        last = max(self.steps, key=lambda s: RANK[s.state], default=None)
        if last is not None and RANK[last.state] == 3:
            return last.state
        if self.msg.reply_by is not None and now > self.msg.reply_by:
            return "expired"
        return last.state if last is not None else "sent"

    def via(self) -> str | None:
        """How it reached the recipient, known once the receipt is back: our direct push
        was accepted, or gossip carried it."""
        if self.step(DELIVERED) is None:
            return None
        return "direct" if self.push == "accepted" else "gossip"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str
    author: str
    seq: int
    at: int


class RequestBook:
    """Every request this node is a party to, folded from the request events it can open,
    with the rules of §12.4 applied in each author's order. Rebuilt from the chains at
    start: nothing here is stored apart from the events themselves."""

    def __init__(self, me: str, *, alerts_per_member_hour: int = DEFAULT_ALERTS_PER_MEMBER_HOUR
                 ) -> None:
        self.me = me
        self.requests: dict[tuple[str, bytes], Request] = {}
        self.refusals: deque[Refusal] = deque(maxlen=MAX_REFUSALS_KEPT)
        self.orphans: dict[tuple[str, bytes], list[tuple[Event, StatusMessage, int]]] = {}
        self.fresh: list[tuple[str, tuple[str, bytes], Step | None]] = []
        self.exchanges: dict[tuple[str, bytes], dict[str, dict[str, Any]]] = {}
        self.restoring_at: int | None = None
        self.alerts_per_member_hour = alerts_per_member_hour
        self._limiter = self._make_limiter()
        # Ping campaigns in config (node/config.py [ping] schedule) and when the next is due.
        self.schedule: tuple[str, ...] = ()
        self.schedule_targets: tuple[str, ...] = ()
        self.schedule_domain: str | None = None
        self.next_campaign_at: int | None = None

    def _make_limiter(self) -> KeyedLimiter:
        per_hour = max(1, self.alerts_per_member_hour)
        return KeyedLimiter(rate=per_hour / 3600, burst=per_hour, max_keys=1024)

    def configure(self, *, alerts_per_member_hour: int, schedule: Iterable[str] = (),
                  targets: Iterable[str] = (), domain: str | None = None) -> None:
        self.alerts_per_member_hour = alerts_per_member_hour
        self._limiter = self._make_limiter()
        self.schedule = tuple(schedule)
        for item in self.schedule:
            parse_schedule_item(item)  # refuses a bad one at start
        self.schedule_targets = tuple(targets)
        self.schedule_domain = domain or None
        self.next_campaign_at = None

    # -- refusals --------------------------------------------------------------------------

    def refuse(self, engine: Engine, event: Event, exc: PocError) -> None:
        self.refusals.append(Refusal(exc.code, exc.message[:300], event.author, event.seq,
                                     event.ts))
        engine.count("pocnode_requests_refused_total", code=exc.code)
        engine.note("warning", "refused a request message", refusal=exc.code,
                    author=event.author, seq=event.seq, reason=exc.message[:200])

    # -- queries -------------------------------------------------------------------------------

    def inbox(self) -> list[Request]:
        return sorted((r for r in self.requests.values() if r.recipient == self.me),
                      key=lambda r: (r.seen_at, r.sender, r.seq))

    def outbox(self) -> list[Request]:
        return sorted((r for r in self.requests.values() if r.sender == self.me),
                      key=lambda r: (r.sent_at, r.seq))

    def find(self, sender: str, rid: bytes) -> Request | None:
        return self.requests.get((sender, rid))

    def unacknowledged(self) -> int:
        """Requests to us nobody has acknowledged yet (for `pocnode status`)."""
        return sum(1 for r in self.inbox() if r.rank() < RANK[ACKNOWLEDGED] and not r.limited)

    def published_exchanges(self) -> list[dict[str, Any]]:
        """Exchanges both parties signed the same record of (§12.6)."""
        out = []
        for (_sender, _rid), sides in sorted(self.exchanges.items()):
            a, b = sides.get("sender"), sides.get("recipient")
            if a is not None and a == b:
                out.append(a)
        return out


# -- folds: what a request event means to a node (called by the engine's FOLDS) ----------------


def fold_request(engine: Engine, event: Event, restoring: bool) -> None:
    """A ``request`` event: open it if it is ours to open, then apply §12.4."""
    if engine.hpke is None:
        return
    raw = open_request(event.body, engine.hpke, fed=engine.genesis.id, author=event.author)
    if raw is None:
        return  # the normal case: a message between two other members
    apply_opened(engine, event, raw, restoring)


def apply_opened(engine: Engine, event: Any, raw: bytes, restoring: bool) -> None:
    """§12.4 on a plaintext that opened under our key; ``event`` needs author, seq, id, ts."""
    book: RequestBook = engine.requests
    seen_at = book.restoring_at if book.restoring_at is not None else event.ts
    try:
        msg = parse_message(raw)
        if event.author != engine.member and msg.to != engine.member:
            return  # a box that opens for us must be about us (as §7.2)
        if msg.to == event.author:
            raise InvalidBody("a request or status is between two members; to names its "
                              "own author", path="request.to")
        if not engine.is_member(msg.to):
            raise UnknownAuthor(f"{msg.to} is not a member", path="request.to")
        if isinstance(msg, RequestMessage):
            _fold_new_request(engine, book, event, msg, seen_at, restoring)
        else:
            _fold_status(engine, book, event, msg, seen_at, restoring)
    except PocError as exc:
        book.refuse(engine, event, exc)


def _fold_new_request(engine: Engine, book: RequestBook, event: Event, msg: RequestMessage,
                      seen_at: int, restoring: bool) -> None:
    key = (event.author, msg.id)
    held = book.requests.get(key)
    if held is not None and held.event_id == event.id:
        return  # the same event folded again (a chain refolded after a proven fork)
    if held is not None:
        raise Replay(f"{event.author} already sent request {msg.id.hex()} (#{held.seq}); this "
                     f"copy (#{event.seq}) is ignored", path="request.id")
    request = Request(sender=event.author, msg=msg, event_id=event.id, seq=event.seq,
                      sent_at=event.ts, seen_at=seen_at)
    book.requests[key] = request
    if msg.to == engine.member:
        request.owed = True
        if restoring:
            # The same budget as when it arrived, replayed in order of arrival.
            request.limited = not book._limiter.take(event.author, seen_at)
            request.owed = not request.limited
        else:
            book.fresh.append(("request", key, None))
    for orphan, status, at in book.orphans.pop(key, []):
        _fold_status(engine, book, orphan, status, at, restoring)


def _fold_status(engine: Engine, book: RequestBook, event: Event, msg: StatusMessage,
                 seen_at: int, restoring: bool) -> None:
    key = (msg.sender, msg.id)
    request = book.requests.get(key)
    if request is None:
        if restoring and sum(map(len, book.orphans.values())) < MAX_ORPHANS:
            book.orphans.setdefault(key, []).append((event, msg, seen_at))
            return
        raise UnknownRequest(f"{event.author} gives status {msg.state} of request "
                             f"{msg.id.hex()} of {msg.sender}, which this node does not hold",
                             path="status.id")
    parties = (request.sender, request.recipient)
    if any(s.event_id == event.id for s in (*request.steps, *request.publish.values())):
        return  # the same event folded again
    if msg.state == PUBLISH:
        if event.author not in parties:
            raise NotParty(f"{event.author} is not a party to request {msg.id.hex()}; only "
                           f"its sender and recipient consent to publish it",
                           path="status.state")
        if ("sender" if event.author == request.sender else "recipient") in request.publish:
            raise Replay(f"{event.author} already consented to publish request "
                         f"{msg.id.hex()}", path="status.state")
    elif event.author != request.recipient:
        raise NotParty(f"{event.author} cannot say {msg.state} for request {msg.id.hex()} "
                       f"sent by {request.sender} to {request.recipient}: only its recipient "
                       f"can", path="status.state")
    elif request.step(msg.state) is not None:
        raise Replay(f"{event.author} already said {msg.state} for request {msg.id.hex()}",
                     path="status.state")
    elif RANK[msg.state] <= request.rank():
        raise OutOfOrder(f"{msg.state} cannot follow {request.state(0)} (request "
                         f"{msg.id.hex()})", path="status.state")
    other = request.recipient if event.author == request.sender else request.sender
    if msg.to != other:
        raise InvalidBody(f"a status about request {msg.id.hex()} must be told to {other}, "
                          f"not {msg.to}", path="status.to")
    step = Step(state=msg.state, at=event.ts, seen_at=seen_at, event_id=event.id,
                seq=event.seq, text=msg.text, scope=msg.scope)
    if msg.state == PUBLISH:
        request.publish["sender" if event.author == request.sender else "recipient"] = step
    else:
        request.steps.append(step)
        if event.author == engine.member and msg.state == DELIVERED:
            request.owed = False
    if not restoring:
        book.fresh.append(("status", key, step))


def fold_publication(engine: Engine, event: Event, restoring: bool) -> None:
    """A ``request.publish`` event: one party's signed record of an exchange (§12.6)."""
    book: RequestBook = engine.requests
    x = event.body["exchange"]
    if event.author not in (x["sender"], x["recipient"]):
        book.refuse(engine, event, NotParty(
            f"{event.author} published a record of an exchange between {x['sender']} and "
            f"{x['recipient']}; only they can", path="body.exchange"))
        return
    side = "sender" if event.author == x["sender"] else "recipient"
    sides = book.exchanges.setdefault((x["sender"], x["id"]), {})
    if side in sides:
        book.refuse(engine, event, Replay(f"{event.author} already published this exchange",
                                          path="body.exchange.id"))
        return
    sides[side] = x
    if event.author == engine.member:
        request = book.requests.get((x["sender"], x["id"]))
        if request is not None:
            request.published = True


def finish_restore(engine: Engine) -> None:
    """After every request event is folded: statuses whose request never came are refused."""
    book: RequestBook = engine.requests
    book.restoring_at = None
    for pending in list(book.orphans.values()):
        for event, msg, _ in pending:
            book.refuse(engine, event, UnknownRequest(
                f"status {msg.state} of request {msg.id.hex()} of {msg.sender}, which this "
                f"node does not hold", path="status.id"))
    book.orphans.clear()


# -- views ---------------------------------------------------------------------------------


def view(request: Request, me: str, now: int, *, content: bool = True) -> dict[str, Any]:
    """What the API shows a party: the request, its state and its timeline with times."""
    m = request.msg
    out: dict[str, Any] = {
        "sender": request.sender, "recipient": request.recipient, "id": m.id.hex(),
        "direction": "out" if request.sender == me else "in",
        "event_id": request.event_id.hex(), "type": m.type, "urgency": m.urgency,
        "subject": m.subject, "lang": m.lang, "reply_by": m.reply_by,
        "state": request.state(now), "sent_at": request.sent_at,
        "expired": request.msg.reply_by is not None and now > request.msg.reply_by
        and request.rank() < 3,
        "push": request.push, "via": request.via(), "rate_limited": request.limited,
        "campaign": m.campaign, "from_entry": m.from_entry, "to_domain": m.to_domain,
        "to_entry": m.to_entry,
        "ref": {"sender": m.ref[0], "id": m.ref[1].hex()} if m.ref else None,
        "attachments": [a.hex() for a in m.attachments],
        "timeline": [{"state": "sent", "at": request.sent_at, "seen_at": request.seen_at,
                      "by": request.sender, "event_id": request.event_id.hex()}]
        + [{"state": s.state, "at": s.at, "seen_at": s.seen_at, "by": request.recipient,
            "event_id": s.event_id.hex(), **({"text": s.text} if s.text is not None
                                            and content else {})} for s in request.steps]
        + [{"state": "publish", "at": s.at, "seen_at": s.seen_at,
            "by": request.sender if side == "sender" else request.recipient,
            "event_id": s.event_id.hex(), "scope": s.scope}
           for side, s in sorted(request.publish.items(), key=lambda kv: kv[1].at)],
        "publish": {"sender": _scope(request, "sender"),
                    "recipient": _scope(request, "recipient"),
                    "published": request.published},
    }
    delivered, acked = request.step(DELIVERED), request.step(ACKNOWLEDGED)
    out["receipt_s"] = _secs(request, delivered)
    out["ack_s"] = _secs(request, acked)
    if content:
        out["text"] = m.text
        answer = request.step(ANSWERED)
        declined = request.step(DECLINED)
        out["answer"] = answer.text if answer else None
        out["reason"] = declined.text if declined else None
    return out


def _scope(request: Request, side: str) -> str | None:
    step = request.publish.get(side)
    return step.scope if step else None


def _secs(request: Request, step: Step | None) -> float | None:
    """Seconds from sending to the step, on the sender's clock when we are the sender (the
    step's arrival here), else on the signed times."""
    if step is None:
        return None
    return round(max(0, step.seen_at - request.sent_at) / 1000, 3)


def ping_report(book: RequestBook, members: Iterable[str], now: int) -> dict[str, Any]:
    """Per member: the latest campaign's outcome, the last success, the history (§12.5)."""
    pings = [r for r in book.outbox() if r.msg.type == "ping" and r.msg.campaign]
    campaigns: dict[str, int] = {}
    for r in pings:
        campaigns[r.msg.campaign or ""] = min(campaigns.get(r.msg.campaign or "", r.sent_at),
                                              r.sent_at)
    order = sorted(campaigns, key=lambda c: campaigns[c])
    rows = []
    for member in members:
        mine = [r for r in pings if r.recipient == member]
        if not mine:
            continue
        mine.sort(key=lambda r: r.sent_at)
        last = mine[-1]
        delivered = [r for r in mine if r.step(DELIVERED)]
        rows.append({
            "member": member, "campaign": last.msg.campaign, "sent_at": last.sent_at,
            "delivered": last.step(DELIVERED) is not None,
            "receipt_s": _secs(last, last.step(DELIVERED)),
            "ack_s": _secs(last, last.step(ACKNOWLEDGED)),
            "via": last.via(), "state": last.state(now),
            "last_success": max((r.step(DELIVERED).seen_at  # type: ignore[union-attr]
                                 for r in delivered), default=None),
            "history": [{"campaign": r.msg.campaign, "sent_at": r.sent_at,
                         "delivered": r.step(DELIVERED) is not None,
                         "receipt_s": _secs(r, r.step(DELIVERED)),
                         "ack_s": _secs(r, r.step(ACKNOWLEDGED))} for r in mine]})
    summary = []
    for c in order:
        these = [r for r in pings if r.msg.campaign == c]
        summary.append({"campaign": c, "started_at": campaigns[c], "sent": len(these),
                        "delivered": sum(1 for r in these if r.step(DELIVERED)),
                        "acknowledged": sum(1 for r in these if r.step(ACKNOWLEDGED))})
    return {"members": rows, "campaigns": summary}


# -- ping schedules (config.toml [ping] schedule) ---------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SCHEDULE_RE = re.compile(r"(?:(mon|tue|wed|thu|fri|sat|sun) )?([01][0-9]|2[0-3]):([0-5][0-9])")
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
# 1970-01-01 was a Thursday: day 0 of the epoch is weekday 3 (Monday = 0).
_EPOCH_WEEKDAY = 3


def parse_schedule_item(item: str) -> tuple[int | None, int]:
    """``"HH:MM"`` (daily, UTC) or ``"mon HH:MM"`` (weekly): (weekday or None, ms in day)."""
    match = _SCHEDULE_RE.fullmatch(item.strip())
    if match is None:
        raise InvalidRequest(f"ping schedule item {item!r:.40}: expected \"HH:MM\" or "
                             f"\"mon HH:MM\" (UTC)", path="ping.schedule")
    day = _DAYS.index(match.group(1)) if match.group(1) else None
    return day, (int(match.group(2)) * 60 + int(match.group(3))) * 60_000


def next_scheduled(schedule: Iterable[str], now: int) -> int | None:
    """The first time after ``now`` any item of the schedule falls on."""
    best: int | None = None
    for item in schedule:
        day, offset = parse_schedule_item(item)
        if day is None:
            at = now - now % _DAY_MS + offset
            if at <= now:
                at += _DAY_MS
        else:
            days = now // _DAY_MS
            weekday = (days + _EPOCH_WEEKDAY) % 7
            at = (days - weekday + day) * _DAY_MS + offset
            while at <= now:
                at += _WEEK_MS
        best = at if best is None else min(best, at)
    return best


# -- sequences (run by the engine's adapter; each yields the engine's effects) -----------------


@dataclass(frozen=True, slots=True)
class Alert:
    """Wake people up (§12.5): the adapter runs the operator's configured alerts, each bounded
    in time, none blocking the node. ``summary`` holds no sealed content; ``content`` does,
    and is sent only where the operator opted in."""

    summary: dict[str, Any]
    content: dict[str, Any]


Steps = Generator[Any, Any, Any]


def after_ingest(engine: Engine, now: int) -> Iterable[tuple[str, Steps]]:
    """What the request events just folded call for: receipts, alerts and publications.
    Each member has its own hourly budget of receipts and alerts (§12.5)."""
    book: RequestBook = engine.requests
    fresh, book.fresh = book.fresh, []
    out: list[tuple[str, Steps]] = []
    for what, key, step in fresh:
        request = book.requests.get(key)
        if request is None:
            continue
        if what == "request":
            request.seen_at = now
            if not book._limiter.take(request.sender, now):
                request.limited = True
                request.owed = False
                engine.count("pocnode_requests_rate_limited_total")
                engine.note("warning", "request over its sender's hourly budget: kept, not "
                            "alerted nor receipted", refusal=RateLimited.code,
                            member=request.sender)
                continue
            request.owed = False
            out.append(("receipt", status_steps(engine, key, DELIVERED)))
            out.append(("alert", alert_steps(_alert(engine, request, "request", now))))
            engine.count("pocnode_requests_received_total", type=request.msg.type)
        elif step is not None:
            step.seen_at = now
            if step.state in (ANSWERED, DECLINED) and request.sender == engine.member:
                out.append(("alert", alert_steps(_alert(engine, request, step.state, now))))
            if step.state == PUBLISH and _publication_due(engine, request):
                out.append(("publication", publication_steps(engine, key)))
    return out


def due(engine: Engine, now: int) -> list[tuple[str, Steps]]:
    """From the timer: receipts and alerts owed since a restart, and scheduled campaigns."""
    book: RequestBook = engine.requests
    out: list[tuple[str, Steps]] = []
    for request in book.requests.values():
        if request.owed:
            request.owed = False
            if now - request.seen_at <= OWED_MAX_AGE_MS:
                out.append(("receipt", status_steps(engine, request.key, DELIVERED)))
                out.append(("alert", alert_steps(_alert(engine, request, "request", now))))
    if book.schedule:
        if book.next_campaign_at is None:
            book.next_campaign_at = next_scheduled(book.schedule, now)
        elif now >= book.next_campaign_at:
            book.next_campaign_at = next_scheduled(book.schedule, now)
            out.append(("campaign", campaign_steps(
                engine, list(book.schedule_targets) or None, book.schedule_domain,
                campaign=f"scheduled-{now}")))
    return out


def _alert(engine: Engine, request: Request, event: str, now: int) -> Alert:
    m = request.msg
    summary = {"event": event, "node": engine.member, "sender": request.sender,
               "recipient": request.recipient, "id": m.id.hex(), "type": m.type,
               "urgency": m.urgency, "lang": m.lang, "sent_at": request.sent_at,
               "reply_by": m.reply_by, "to_domain": m.to_domain, "to_entry": m.to_entry,
               "campaign": m.campaign, "at": now}
    content: dict[str, Any] = {"subject": m.subject, "text": m.text}
    step = request.step(event)
    if step is not None and step.text is not None:
        content["answer" if event == ANSWERED else "reason"] = step.text
    return Alert(summary=summary, content=content)


def alert_steps(alert: Alert) -> Steps:
    yield alert


def _keys_for(engine: Engine, member: str) -> bytes:
    if engine.hpke is None:
        raise Busy("this node has no encryption key yet")
    public = engine.hpke_keys.get(member)
    if public is None:
        raise Busy(f"no encryption key of {member} has reached this node yet (its "
                         f"node.keys event); try again once it has", path="to")
    return public


def new_request(engine: Engine, fields: dict[str, Any], now: int) -> RequestMessage:
    """The operator's request, checked against §12.3 before anything is sealed."""
    to = fields.get("to")
    if type(to) is not str or not MEMBER_ID.fullmatch(to):
        raise InvalidBody("to must be a member id", path="to")
    if to == engine.member:
        raise InvalidRequest("a request goes to another member, not to this node's own",
                             path="to")
    if not engine.is_member(to):
        raise UnknownAuthor(f"{to} is not a member of this federation", path="to")
    reply_by = fields.get("reply_by")
    if reply_by is not None and (type(reply_by) is not int or reply_by <= now):
        raise InvalidRequest("reply_by must be a time (ms) in the future", path="reply_by")
    ref = fields.get("ref")
    msg = RequestMessage(
        id=engine.random_bytes(ID_BYTES), to=to, type=fields.get("type", "other"),
        subject=fields.get("subject", ""), text=fields.get("text", ""),
        urgency=fields.get("urgency", "routine"), lang=fields.get("lang", "en"),
        reply_by=reply_by, attachments=tuple(fields.get("attachments", ())),
        ref=(ref[0], ref[1]) if ref else None, from_entry=fields.get("from_entry"),
        to_domain=fields.get("to_domain"), to_entry=fields.get("to_entry"),
        campaign=fields.get("campaign"))
    parse_message(frame(msg))  # every rule of §12.3, with its code and path
    if msg.from_entry is not None:
        own = engine.records.get(engine.member)
        if own is None or msg.from_entry not in {e["id"] for e in own.body["entries"]}:
            raise InvalidRequest(f"from_entry {msg.from_entry} is not an entry of this "
                                 f"member's record", path="from_entry")
    return msg


def _publish_request(engine: Engine, msg: RequestMessage) -> Steps:
    """Seal and publish; the Request as the fold of our own event registered it."""
    body = sealed_request_body(suite=engine.genesis.hpke_suite, fed=engine.genesis.id,
                               author=engine.member, message=msg,
                               to_public=_keys_for(engine, msg.to),
                               own_public=engine.hpke.public_bytes)  # type: ignore[union-attr]
    yield engine.PublishEffect(KIND_REQUEST, body)
    request = engine.requests.find(engine.member, msg.id)
    engine.count("pocnode_requests_sent_total", type=msg.type)
    return request


def send_steps(engine: Engine, msg: RequestMessage) -> Steps:
    """Seal, publish, then push to the recipient's own node first (§12.5)."""
    request = yield from _publish_request(engine, msg)
    if request is not None:
        yield from push_steps(engine, request)
    return request


def push_steps(engine: Engine, request: Request) -> Steps:
    accepted = yield from push_direct(engine, request.recipient)
    request.push = "accepted" if accepted else "failed"


def status_steps(engine: Engine, key: tuple[str, bytes], state: str, text: str | None = None,
                 scope: str | None = None) -> Steps:
    """Publish our change of state of a request, sealed to the counterpart, and push it to
    the counterpart's node first."""
    book: RequestBook = engine.requests
    request = book.requests.get(key)
    if request is None:
        raise NotFound(f"no request {key[1].hex()} of {key[0]} here", path="id")
    if state == PUBLISH:
        if scope not in SCOPES:
            raise InvalidRequest("scope must be metadata or content", path="scope")
        side = "sender" if request.sender == engine.member else "recipient"
        if side in request.publish:
            raise NoChange("this side already consented to publish the exchange",
                              path="state")
    elif request.recipient != engine.member:
        raise NotParty(f"only the recipient ({request.recipient}) can say {state}",
                       path="state")
    elif request.step(state) is not None:
        raise NoChange(f"already {state}", path="state")
    elif RANK[state] <= request.rank():
        raise OutOfOrder(f"the request is {request.state(0)}; {state} cannot follow",
                         path="state")
    other = request.recipient if request.sender == engine.member else request.sender
    msg = StatusMessage(to=other, sender=request.sender, id=request.msg.id, state=state,
                        text=text, scope=scope)
    parse_message(frame(msg))
    body = sealed_request_body(suite=engine.genesis.hpke_suite, fed=engine.genesis.id,
                               author=engine.member, message=msg,
                               to_public=_keys_for(engine, other),
                               own_public=engine.hpke.public_bytes)  # type: ignore[union-attr]
    yield engine.PublishEffect(KIND_REQUEST, body)
    yield from push_direct(engine, other)
    return request


def push_direct(engine: Engine, member: str) -> Steps:
    """Announce our new head to ``member``'s own endpoints and send what it asks for: True
    once one of its nodes holds the event (it asked and accepted, or had it already)."""
    from pocnode.core import wire
    from pocnode.core.reconcile import answer_wants, heads_to_wire

    chain = engine.verifier.chain(engine.member)
    heads = {engine.member: (chain.seq, chain.ids[-1])}
    for peer in engine.peers.endpoints(member):
        pin = engine.pins.get(member)
        skew = engine.skew_ms.get(member, 0)
        try:
            raw = yield engine.CallEffect(peer, "/v1/peer/announce",
                                          {"heads": heads_to_wire(heads)}, pin=pin,
                                          authenticate=pin is not None, skew_ms=skew)
            answer = wire.read(wire.ANNOUNCE_ANSWER, raw, path="answer")
            ranges = answer_wants(wire.wants(answer.get("want", [])),
                                  head_seq=engine.head_seq, id_at=engine.id_at)
            events = yield from engine._collect(ranges)
            if events:
                raw = yield engine.CallEffect(peer, "/v1/peer/exchange",
                                              {"events": events, "want": []}, pin=pin,
                                              authenticate=pin is not None, skew_ms=skew)
                wire.read(wire.EXCHANGE_ANSWER, raw, path="answer")
            now = yield engine.NowEffect()
            engine.peers.success(peer.key, now)
            return True
        except PocError as exc:
            if isinstance(exc, StoreError):
                raise
            now = yield engine.NowEffect()
            engine.peers.failure(peer.key, now, engine.rng, exc.message)
            engine.note("info", "direct push failed; gossip carries it", member=member,
                        peer=peer.endpoint, reason=exc.message[:200])
    return False


def _publication_due(engine: Engine, request: Request) -> bool:
    return (not request.published and "sender" in request.publish
            and "recipient" in request.publish)


def exchange_record(request: Request) -> dict[str, Any]:
    """The record both parties sign (§12.6): the same bytes on both sides, from what both
    hold once both consents exist: the request, and the recipient's statuses that precede
    its consent in its chain."""
    mine = request.publish["recipient"]
    scope = "content" if all(s.scope == "content" for s in request.publish.values()) \
        else "metadata"
    steps = [s for s in request.steps if s.seq < mine.seq]
    record: dict[str, Any] = {
        "sender": request.sender, "recipient": request.recipient, "id": request.msg.id,
        "scope": scope, "request": request.event_id, "sent": request.sent_at,
        "type": request.msg.type, "urgency": request.msg.urgency,
        "steps": [[s.state, s.event_id, s.at] for s in steps]}
    if scope == "content":
        content: dict[str, Any] = {"subject": request.msg.subject, "text": request.msg.text,
                                   "lang": request.msg.lang}
        for s in steps:
            if s.state == ANSWERED and s.text is not None:
                content["answer"] = s.text
            if s.state == DECLINED and s.text is not None:
                content["reason"] = s.text
        record["content"] = content
    return record


def publication_steps(engine: Engine, key: tuple[str, bytes]) -> Steps:
    request = engine.requests.requests.get(key)
    if request is None or not _publication_due(engine, request):
        return None
    request.published = True  # one publication per exchange, even if two are started
    try:
        event = yield engine.PublishEffect(KIND_REQUEST_PUBLISH,
                                           {"exchange": exchange_record(request)})
    except PocError:
        request.published = False
        raise
    return event


def campaign_steps(engine: Engine, members: list[str] | None, domain: str | None, *,
                   campaign: str | None = None) -> Steps:
    """A ping test (§12.5): one ping request to each member named (or every other member).
    Each is published in turn and pushed by a task of its own, so unreachable members do
    not hold the campaign up; a member whose encryption key is unknown is listed as
    skipped. Result: the campaign's name, what was sent and what was skipped."""
    now = yield engine.NowEffect()
    name = campaign or f"c{now}-{engine.random_bytes(3).hex()}"
    targets = members if members else [m for m in engine.members() if m != engine.member]
    sent, skipped = [], []
    for member in targets:
        try:
            msg = new_request(engine, {"to": member, "type": "ping", "subject": "Ping test",
                                       "text": "", "urgency": "routine", "lang": "en",
                                       "to_domain": domain, "campaign": name}, now)
            request = yield from _publish_request(engine, msg)
        except PocError as exc:
            if isinstance(exc, StoreError):
                raise
            skipped.append({"member": member, "code": exc.code, "message": exc.message[:200]})
            continue
        sent.append({"member": member, "id": msg.id.hex()})
        if request is not None:
            yield engine.SpawnEffect(push_steps(engine, request), "ping push")
    engine.note("info", "ping campaign sent", campaign=name, sent=len(sent),
                skipped=len(skipped))
    return {"campaign": name, "sent": sent, "skipped": skipped}


__all__ = ["Alert", "KIND_REQUEST", "KIND_REQUEST_PUBLISH", "Request", "RequestBook",
           "RequestMessage", "StatusMessage", "check_publication_body",
           "check_request_body", "fold_publication", "fold_request", "frame", "open_request",
           "parse_message", "ping_report", "sealed_request_body", "view"]
