"""The Ed25519 validity rules every pocnode verifier applies (PROTOCOL.md §3.3.1).

RFC 8032 leaves room: libraries differ on small-order points and non-canonical
encodings, and a malicious member could craft a signature one library accepts
and another refuses, splitting the federation. OpenSSL (our library) accepts a
small-order public key, and a signature whose R is the neutral point; libsodium
refuses both. pocnode pins the strict reading, which both then agree on:

* a public key must be a canonical encoding of a point that is not of small
  order, checked once, where a key enters the federation (genesis, key.rotate);
* a signature's R must not encode a small-order point, checked at every
  verification (a set lookup, so it costs nothing);
* S < L and the cofactorless equation, compared as encoded bytes, which OpenSSL
  and libsodium both implement.

Plain integer arithmetic over the curve; no secrets pass through here.
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, P - 2, P)) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
_NEUTRAL: _Point = (0, 1, 1, 0)


def _add(p: _Point, q: _Point) -> _Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * _D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, p: _Point) -> _Point:
    out = _NEUTRAL
    while k:
        if k & 1:
            out = _add(out, p)
        p = _add(p, p)
        k >>= 1
    return out


def _is_neutral(p: _Point) -> bool:
    x, y, z, _ = p
    return x % P == 0 and (y - z) % P == 0


def decode_point(data: bytes) -> _Point | None:
    """RFC 8032 §5.1.3, strictly: None for y >= p, for no square root, or for x = 0 with
    the sign bit set (a second encoding of the same point)."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (_D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if (v * x * x - u) % P != 0:
        x = x * _SQRT_M1 % P
        if (v * x * x - u) % P != 0:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def encode_point(p: _Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def public_key_ok(data: bytes) -> bool:
    """A canonical encoding of a point whose order is not 1, 2, 4 or 8."""
    point = decode_point(data)
    return point is not None and not _is_neutral(_mul(8, point))


def _small_order_encodings() -> frozenset[bytes]:
    """All eight points of order dividing 8, canonically encoded, found from the curve
    itself: [L]Q lies in the 8-torsion for any point Q; one of order 8 generates it."""
    for y in range(2, 100):
        q = decode_point(y.to_bytes(32, "little"))
        if q is None:
            continue
        t = _mul(L, q)
        if not _is_neutral(_mul(4, t)):  # order exactly 8
            points, acc = [], _NEUTRAL
            for _ in range(8):
                points.append(encode_point(acc))
                acc = _add(acc, t)
            return frozenset(points)
    raise AssertionError("no point of order 8 found")  # pragma: no cover


SMALL_ORDER = _small_order_encodings()


def signature_r_ok(signature: bytes) -> bool:
    """R, the first half of the signature, must not be a small-order point."""
    return signature[:32] not in SMALL_ORDER
