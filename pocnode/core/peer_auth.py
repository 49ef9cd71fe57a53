"""Peer request authentication (PROTOCOL.md §8.2): a member signs what it asks.

Requests that return ``members`` data must come from a member. The client signs,
with its identity key, the federation id, its member id, the time, a hash of the
request (method, path, body) and the pin of the server certificate it sees. The
pin binds the signature to this TLS connection's server: a man in the middle,
who must present its own certificate, gets a signature the real server refuses.
A replay within the time window repeats an identical request to the same server,
which changes nothing that request could not already change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from pocnode.core import encoding
from pocnode.core.errors import (
    BadSignature,
    Malformed,
    PocError,
    Unauthenticated,
    UnknownAuthor,
    WrongFederation,
)
from pocnode.core.events import MEMBER_ID
from pocnode.core.keys import PublicKey, Signature, SigningKey

AUTH_DOMAIN = b"pocnode/v1/peer-auth\x00"
AUTH_SCHEME = "Pocnode"
# Clocks of state networks agree within minutes; a header older than this is refused.
MAX_AUTH_SKEW_MS = 5 * 60 * 1000
# A hybrid signature is 3.4 KB; base64 makes it 4.6 KB. Anything larger is not ours.
MAX_AUTH_HEADER = 6 * 1024


AuthError = Unauthenticated  # the name the network layer uses


def request_hash(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.upper().encode() + b" " + path.encode() + b"\n" + body).digest()


def make_header(key: SigningKey, *, fed: bytes, member: str, server_pin: bytes, now: int,
                method: str, path: str, body: bytes) -> str:
    claims = encoding.encode({"fed": fed, "member": member, "pin": server_pin, "ts": now,
                              "req": request_hash(method, path, body)})
    sig = key.sign(AUTH_DOMAIN + claims)
    token = encoding.encode({"claims": claims, "sig": sig.to_wire()})
    return f"{AUTH_SCHEME} {base64.urlsafe_b64encode(token).decode()}"


def check_header(header: str | None, *, fed: bytes, own_pin: bytes, now: int, method: str,
                 path: str, body: bytes, current_key: Callable[[str], PublicKey | None]) -> str:
    """Return the authenticated member id, or raise AuthError saying why not."""
    if not header:
        raise AuthError("no Authorization header")
    if len(header) > MAX_AUTH_HEADER or not header.startswith(AUTH_SCHEME + " "):
        raise AuthError(f"Authorization must be '{AUTH_SCHEME} <token>' under "
                        f"{MAX_AUTH_HEADER} bytes")
    try:
        # Strict base64url: characters outside the alphabet are refused, not skipped, so a
        # token has one spelling (no malleable headers).
        token = encoding.decode(base64.b64decode(
            header[len(AUTH_SCHEME) + 1:].encode("ascii"), altchars=b"-_", validate=True))
        if type(token) is not dict or token.keys() != {"claims", "sig"} \
                or type(token["claims"]) is not bytes:
            raise Malformed("token must be {claims: bin, sig: map}")
        sig = Signature.from_wire(token["sig"], path="auth.sig")
        claims = encoding.decode(token["claims"])
        if type(claims) is not dict or claims.keys() != {"fed", "member", "pin", "ts", "req"}:
            raise Malformed("claims must have exactly fed, member, pin, ts, req")
        member = claims["member"]
        if type(member) is not str or not MEMBER_ID.fullmatch(member) \
                or type(claims["ts"]) is not int:
            raise Malformed("claims.member or claims.ts out of shape")
        if claims["fed"] != fed:
            raise WrongFederation("token for another federation")
        key = current_key(member)
        if key is None:
            raise UnknownAuthor(f"{member} is not a member")
        if claims["pin"] != own_pin:
            raise AuthError("token was made for another server certificate (relayed?)")
        if abs(claims["ts"] - now) > MAX_AUTH_SKEW_MS:
            raise AuthError(f"token time is {abs(claims['ts'] - now) // 1000} s from ours")
        if claims["req"] != request_hash(method, path, body):
            raise AuthError("token was made for another request")
        if not key.verify(sig, AUTH_DOMAIN + token["claims"]):
            raise BadSignature(f"token signature does not verify under {member}'s key")
    except AuthError:
        raise
    except (PocError, ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise AuthError(f"bad token: {exc}") from None
    return member
