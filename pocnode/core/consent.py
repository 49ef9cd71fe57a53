"""Mutual consent and sealed messages (PROTOCOL.md §7).

Consent is directed and revocable: A offers consent to B, B to A; only while both offers
stand does either disclose its ``bilateral`` values to the other. Offers and withdrawals
are ``sealed`` events in their author's chain: signed like every event, gossiped to all,
but holding two fixed-size HPKE boxes, one to the counterpart and one to the author
itself, in sorted order. A third node sees that a member published a sealed event, when,
and how many; not to whom, and not whether it offers or withdraws. The self box lets
the author rebuild its own consent state from its chain alone.

Bilateral disclosures never enter a chain: the counterpart's node fetches them from the
author's node, each sealed to the counterpart's key, so that withdrawal can erase them.

HPKE (RFC 9180) in base mode; no secret here touches a file or a socket.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from pocnode.core import encoding
from pocnode.core.errors import InvalidBody, Malformed, PocError
from pocnode.core.events import HPKE_SUITES, MEMBER_ID

SEALED_DOMAIN = b"pocnode/v1/sealed\x00"
BILATERAL_DOMAIN = b"pocnode/v1/bilateral\x00"
# Consent plaintexts are padded to one size, so an offer and a withdrawal look the same.
CONSENT_PLAINTEXT_BYTES = 64
_TAG = 16  # AES-128-GCM
_ENC = {"x25519": 32, "mlkem768-x25519": 1120}
BOX_BYTES = {suite: enc + CONSENT_PLAINTEXT_BYTES + _TAG for suite, enc in _ENC.items()}
OFFER = "offer"
WITHDRAW = "withdraw"
_MLKEM_PUBLIC = 1184


class NoConsent(PocError):
    """Bilateral disclosures asked for without mutual consent (§7.3)."""

    code = "no_consent"


class SealError(PocError):
    """A sealed box that does not open under our key: not for us, or damaged."""

    code = "not_for_us"


def _suite(name: str) -> hpke.Suite:
    kem = hpke.KEM.X25519 if name == "x25519" else hpke.KEM.MLKEM768_X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


class HpkeKey:
    """A node's HPKE private key for its federation's suite."""

    __slots__ = ("suite", "_x", "_mlkem", "_private", "public_bytes")

    def __init__(self, suite: str, x: x25519.X25519PrivateKey,
                 ml: mlkem.MLKEM768PrivateKey | None = None) -> None:
        if suite not in HPKE_SUITES or (suite == "mlkem768-x25519") != (ml is not None):
            raise ValueError(f"suite {suite!r} needs {'an' if ml is None else 'no'} ML-KEM key")
        self.suite = suite
        self._x = x
        self._mlkem = ml
        self._private: Any = hpke.MLKEM768X25519PrivateKey(ml, x) if ml is not None else x
        xpub = x.public_key().public_bytes_raw()
        self.public_bytes = (ml.public_key().public_bytes_raw() + xpub) if ml else xpub

    @classmethod
    def generate(cls, suite: str) -> HpkeKey:
        ml = mlkem.MLKEM768PrivateKey.generate() if suite == "mlkem768-x25519" else None
        return cls(suite, x25519.X25519PrivateKey.generate(), ml)

    @property
    def private_parts(self) -> tuple[Any, ...]:
        """For :mod:`pocnode.keyfile` only."""
        return (self._x,) if self._mlkem is None else (self._x, self._mlkem)

    def open(self, box: bytes, info: bytes) -> bytes:
        try:
            return _suite(self.suite).decrypt(box, self._private, info=info)
        except Exception:  # noqa: BLE001 - any failure means: not for us (or damaged)
            raise SealError("box does not open under our key") from None

    def __repr__(self) -> str:
        return f"HpkeKey(suite={self.suite!r}, public={self.public_bytes.hex()[:16]}…)"


def public_key_object(suite: str, public: bytes) -> Any:
    if len(public) != HPKE_SUITES[suite]:
        raise Malformed(f"{suite} public key must be {HPKE_SUITES[suite]} bytes")
    try:
        if suite == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(public)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:_MLKEM_PUBLIC]),
            x25519.X25519PublicKey.from_public_bytes(public[_MLKEM_PUBLIC:]))
    except ValueError as exc:
        raise Malformed(f"{suite} public key does not load: {exc}") from None


def seal(suite: str, public: bytes, plaintext: bytes, info: bytes) -> bytes:
    return _suite(suite).encrypt(plaintext, public_key_object(suite, public), info=info)


# -- consent messages (the body of a `sealed` event, §7.2) ---------------------------------


def consent_info(fed: bytes, author: str) -> bytes:
    return SEALED_DOMAIN + fed + author.encode()


def consent_plaintext(to: str, action: str) -> bytes:
    body = encoding.encode({"to": to, "action": action})
    if len(body) > CONSENT_PLAINTEXT_BYTES - 1:
        raise ValueError("consent message too long")
    # Padding: 0x00 bytes after the canonical map; the map says where it ends.
    return body + b"\x00" * (CONSENT_PLAINTEXT_BYTES - len(body))


def parse_consent_plaintext(raw: bytes) -> tuple[str, str]:
    """Inverse of :func:`consent_plaintext`; Malformed if a sender broke the format."""
    if len(raw) != CONSENT_PLAINTEXT_BYTES:
        raise Malformed("consent plaintext of the wrong size")
    end = len(raw.rstrip(b"\x00"))
    msg = encoding.decode(raw[:end], max_size=CONSENT_PLAINTEXT_BYTES)
    if (type(msg) is not dict or msg.keys() != {"to", "action"}
            or type(msg["to"]) is not str or not MEMBER_ID.fullmatch(msg["to"])
            or msg["action"] not in (OFFER, WITHDRAW)):
        raise Malformed("consent message must be {to: member, action: offer|withdraw}")
    return msg["to"], msg["action"]


def sealed_body(*, suite: str, fed: bytes, author: str, to: str, action: str,
                to_public: bytes, own_public: bytes) -> dict[str, Any]:
    """Body of a `sealed` consent event: one box to ``to``, one to the author."""
    info = consent_info(fed, author)
    plaintext = consent_plaintext(to, action)
    boxes = sorted([seal(suite, to_public, plaintext, info),
                    seal(suite, own_public, plaintext, info)])
    return {"suite": suite, "boxes": boxes}


def check_sealed(body: dict[str, Any], hpke_suite: str) -> None:
    """§3.4.4: shape only; who may open the boxes is nobody else's business."""
    if body.keys() != {"suite", "boxes"}:
        raise InvalidBody(f"sealed body must have exactly suite, boxes; got {sorted(body)}",
                          path="body")
    if body["suite"] != hpke_suite:
        raise InvalidBody(f"suite must be the genesis suite {hpke_suite}", path="body.suite")
    boxes = body["boxes"]
    size = BOX_BYTES[hpke_suite]
    if (type(boxes) is not list or len(boxes) != 2
            or not all(type(b) is bytes and len(b) == size for b in boxes)):
        raise InvalidBody(f"boxes must be two bin of {size} bytes", path="body.boxes")
    if not boxes[0] < boxes[1]:
        raise InvalidBody("boxes must be distinct and in ascending order", path="body.boxes")


def open_consent(body: dict[str, Any], key: HpkeKey, *, fed: bytes, author: str
                 ) -> tuple[str, str] | None:
    """(to, action) if one of the boxes opens under ``key``; None if neither does."""
    info = consent_info(fed, author)
    for box in body["boxes"]:
        try:
            plaintext = key.open(box, info)
        except SealError:
            continue
        try:
            return parse_consent_plaintext(plaintext)
        except PocError:
            # §7.2: a message whose plaintext breaks the format is ignored. A sender who
            # seals garbage to us must not be able to stop us from reading anything else.
            return None
    return None


# -- bilateral disclosures (§7.3) ----------------------------------------------------------


def bilateral_info(fed: bytes, author: str, recipient: str, event_id: bytes) -> bytes:
    return BILATERAL_DOMAIN + hashlib.sha256(
        encoding.encode([fed, author, recipient, event_id])).digest()


# -- state and viewers (§7.1, §6.5) ------------------------------------------------------------


class Viewer(enum.Enum):
    """Who asks. Observers are admitted by a governance decision (a later version)."""

    MEMBER = "member"
    OBSERVER = "observer"
    ANYONE = "anyone"


def may_see(visibility: str, viewer: Viewer, mutual: bool) -> bool:
    """The one rule of who reads what (§6.5). Mutual consent opens bilateral values to a
    member or an observer a member chose; nothing opens them to an anonymous reader."""
    if visibility == "public":
        return True
    if visibility == "members":
        return viewer is Viewer.MEMBER
    if visibility == "bilateral":
        return mutual and viewer is not Viewer.ANYONE
    return False


@dataclass
class ConsentState:
    """Directed offers as the chains say them: (from, to) -> (seq, action)."""

    me: str
    offers: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    def apply(self, author: str, seq: int, to: str, action: str) -> bool:
        """Record an author's message; True if it changed whether consent is mutual."""
        if to == author:
            return False
        key = (author, to)
        held = self.offers.get(key)
        if held is not None and held[0] >= seq:
            return False
        other = to if author == self.me else author
        before = self.mutual(other)
        self.offers[key] = (seq, action)
        return self.mutual(other) != before

    def offered(self, author: str, to: str) -> bool:
        held = self.offers.get((author, to))
        return held is not None and held[1] == OFFER

    def mutual(self, other: str) -> bool:
        return self.offered(self.me, other) and self.offered(other, self.me)

    def counterparts(self) -> set[str]:
        return {b if a == self.me else a for a, b in self.offers}

    def table(self) -> list[dict[str, Any]]:
        return [{"member": m, "we_offer": self.offered(self.me, m),
                 "they_offer": self.offered(m, self.me), "mutual": self.mutual(m)}
                for m in sorted(self.counterparts())]
