"""Signed events: the envelope, the payload, ids and signing inputs (PROTOCOL.md §3).

An event travels as an *envelope*, ``{"sig": signature, "event": bin}``, whose
``event`` field holds the canonical bytes of the unsigned *payload*. Signing and
hashing work on those exact bytes, so a receiver never re-encodes anything to
check a signature or compute an id, and the id does not change when a hedged
(randomised) ML-DSA signature is made again over the same content.

This module checks shape only (§4.1 steps 1 to 5). Whether an event extends its
author's chain is :mod:`pocnode.core.chain`'s question.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pocnode.core import encoding
from pocnode.core.errors import InvalidBody, Malformed, UnsupportedVersion
from pocnode.core.keys import PublicKey, Signature, SigningKey

PROTOCOL_VERSION = 1
EVENT_DOMAIN = b"pocnode/v1/event\x00"

MEMBER_ID = re.compile(r"[A-Z][A-Z0-9-]{1,31}")
_INT63 = 2**63

# The kinds of the first protocol issue (§3.4; every kind with its body rule is in
# pocnode/core/kinds.py). A verifier refuses any kind not there with unknown_kind (§3.5).
KIND_RECORD = "record"
KIND_KEY_ROTATE = "key.rotate"
KIND_NODE_KEYS = "node.keys"
KIND_SEALED = "sealed"
# Names earlier drafts reserved, now unknown like any other (§3.5): named in the refusal.
RESERVED_KINDS = ("request.send", "request.status", "ping", "pong")

_PAYLOAD_FIELDS = frozenset({"v", "fed", "author", "seq", "prev", "kind", "ts", "body"})
_ENVELOPE_FIELDS = frozenset({"sig", "event"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A shape-valid event. Not yet verified: see :class:`pocnode.core.chain.Verifier`."""

    raw: bytes       # the envelope, as received
    payload: bytes   # the canonical unsigned event: what is hashed and signed
    id: bytes        # SHA-256(payload), §3.2
    fed: bytes
    author: str
    seq: int
    prev: bytes | None
    kind: str
    ts: int
    body: dict[str, Any]
    sig: Signature

    @property
    def signing_input(self) -> bytes:
        return EVENT_DOMAIN + self.payload

    def summary(self) -> dict[str, Any]:
        """The header, for logs and JSON output (never the body: it may be large)."""
        return {"id": self.id.hex(), "author": self.author, "seq": self.seq, "kind": self.kind,
                "ts": self.ts}


def event_id(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def parse_event(data: bytes) -> Event:
    """§4.1 steps 1 to 5: size, encodings, envelope and payload shape, version."""
    envelope = encoding.decode(data)
    if type(envelope) is not dict:
        raise Malformed(f"envelope must be a map, got {type(envelope).__name__}", path="envelope")
    if envelope.keys() != _ENVELOPE_FIELDS:
        raise Malformed(f"envelope must have exactly fields event, sig; got {sorted(envelope)}",
                        path="envelope")
    payload = envelope["event"]
    if type(payload) is not bytes:
        raise Malformed("envelope.event must be bin", path="envelope.event")
    sig = Signature.from_wire(envelope["sig"], path="envelope.sig")
    fields = encoding.decode(payload)
    if type(fields) is not dict:
        raise Malformed(f"event must be a map, got {type(fields).__name__}", path="event")
    version = fields.get("v")
    if type(version) is not int:
        raise Malformed("event.v must be an int", path="event.v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version}, this verifier speaks "
                                 f"{PROTOCOL_VERSION}", path="event.v")
    if fields.keys() != _PAYLOAD_FIELDS:
        missing = sorted(_PAYLOAD_FIELDS - fields.keys())
        extra = sorted(fields.keys() - _PAYLOAD_FIELDS)
        raise Malformed(f"event fields: missing {missing}, unexpected {extra}", path="event")
    fed, author, seq, prev = fields["fed"], fields["author"], fields["seq"], fields["prev"]
    kind, ts, body = fields["kind"], fields["ts"], fields["body"]
    if type(fed) is not bytes or len(fed) != 32:
        raise Malformed("event.fed must be bin of 32 bytes", path="event.fed")
    if type(author) is not str or not MEMBER_ID.fullmatch(author):
        raise Malformed(f"event.author must be a member id [A-Z][A-Z0-9-]{{1,31}}, "
                        f"got {author!r:.40}", path="event.author")
    if type(seq) is not int or not 1 <= seq < _INT63:
        raise Malformed(f"event.seq must be an int in [1, 2^63), got {seq!r:.40}",
                        path="event.seq")
    if seq == 1:
        if prev is not None:
            raise Malformed("event.prev must be nil at seq 1", path="event.prev")
    elif type(prev) is not bytes or len(prev) != 32:
        raise Malformed("event.prev must be bin of 32 bytes after seq 1", path="event.prev")
    if type(kind) is not str or not 1 <= len(kind) <= 32:
        raise Malformed("event.kind must be a str of 1..32 characters", path="event.kind")
    if type(ts) is not int or not 0 <= ts < _INT63:
        raise Malformed(f"event.ts must be an int in [0, 2^63), got {ts!r:.40}", path="event.ts")
    if type(body) is not dict:
        raise Malformed(f"event.body must be a map, got {type(body).__name__}", path="event.body")
    return Event(raw=bytes(data), payload=payload, id=event_id(payload), fed=fed, author=author,
                 seq=seq, prev=prev, kind=kind, ts=ts, body=body, sig=sig)


def build_event(key: SigningKey, *, fed: bytes, author: str, seq: int, prev: bytes | None,
                kind: str, ts: int, body: dict[str, Any]) -> bytes:
    """Sign and encode an event envelope. Checks nothing about the chain: the author's
    node verifies its own event like any other before storing it."""
    payload = encoding.encode({"v": PROTOCOL_VERSION, "fed": fed, "author": author, "seq": seq,
                               "prev": prev, "kind": kind, "ts": ts, "body": body})
    sig = key.sign(EVENT_DOMAIN + payload)
    return encoding.encode({"sig": sig.to_wire(), "event": payload})


# -- bodies of the kinds specified in this version (§3.4) -----------------------------

TLS_PIN_BYTES = 32
# HPKE suites a node may publish an encryption key for, and their public key sizes (§7).
HPKE_SUITES = {"x25519": 32, "mlkem768-x25519": 1216}
_REASON_MAX = 256


def check_key_rotate(body: dict[str, Any], alg: str) -> PublicKey:
    """§3.4.2: the new identity key, valid from the next sequence on."""
    extra = body.keys() - {"key", "reason"}
    if extra:
        raise InvalidBody(f"unexpected fields {sorted(extra)}", path="body")
    if "key" not in body:
        raise InvalidBody("missing required field 'key'", path="body.key")
    reason = body.get("reason")
    if "reason" in body and (type(reason) is not str or not 1 <= len(reason) <= _REASON_MAX):
        raise InvalidBody(f"reason must be a str of 1..{_REASON_MAX} characters",
                          path="body.reason")
    try:
        return PublicKey.from_wire(body["key"], alg=alg, path="body.key")
    except Malformed as exc:
        raise InvalidBody(exc.message, path=exc.path) from None


def check_node_keys(body: dict[str, Any], hpke_suite: str) -> None:
    """§3.4.3: the node's TLS key pin and, optionally, its HPKE key in the genesis suite."""
    extra = body.keys() - {"tls", "hpke"}
    if extra:
        raise InvalidBody(f"unexpected fields {sorted(extra)}", path="body")
    tls = body.get("tls")
    if type(tls) is not bytes or len(tls) != TLS_PIN_BYTES:
        raise InvalidBody("tls must be bin of 32 bytes (SHA-256 of the TLS certificate)",
                          path="body.tls")
    if "hpke" in body:
        hpke = body["hpke"]
        if type(hpke) is not dict or hpke.keys() != {"suite", "pk"}:
            raise InvalidBody("hpke must be a map with exactly suite, pk", path="body.hpke")
        suite, pk = hpke["suite"], hpke["pk"]
        if suite != hpke_suite:
            raise InvalidBody(f"hpke.suite must be the genesis suite {hpke_suite}, "
                              f"got {suite!r:.40}", path="body.hpke.suite")
        if type(pk) is not bytes or len(pk) != HPKE_SUITES[suite]:
            raise InvalidBody(f"hpke.pk must be bin of {HPKE_SUITES[suite]} bytes for {suite}",
                              path="body.hpke.pk")
