"""An independent pocnode protocol-1 verifier, written from protocol/PROTOCOL.md alone.

It exists to show that the specification suffices: nothing here was taken from the
reference implementation (``pocnode/``), and it uses other libraries for everything that
matters:

- msgpack: a strict canonical decoder and encoder written here from §2 (no ``msgpack``);
- Ed25519: PyNaCl (libsodium), not ``cryptography``, behind the rules of §3.3.1 checked
  here explicitly with our own integer arithmetic (strict point decoding, [8]A not neutral,
  the R list, S < L); the tests hold libsodium to a pure-Python cofactorless verifier;
- ML-DSA-65 (the hybrid mode of §3.3): dilithium-py, pure Python;
- SHA-256: hashlib.

A `sealed` event (§3.4.4) is checked for its shape only, as the spec asks: no HPKE library is
involved, since who can open a box is not a verifier's business (§7.2).

Every refusal raises :class:`ProtocolError` whose ``code`` is a code of §9.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, TypeAlias

import nacl.exceptions
import nacl.signing
from dilithium_py.ml_dsa import ML_DSA_65

# A decoded msgpack value (§2.1): nil, bool, int, str, bin, array, map. bin is ``bytes``, str
# is ``str``; a map is a ``dict`` whose iteration order is the (canonical) order of its keys.
Value: TypeAlias = None | bool | int | str | bytes | list[Any] | dict[str, Any]


class ProtocolError(Exception):
    """A refusal with its §9 error code and, for people, the path of §1.3."""

    def __init__(self, code: str, path: str = "", detail: str = "") -> None:
        self.code = code
        self.path = path
        self.detail = detail
        super().__init__(f"{code} at {path or '-'}{': ' + detail if detail else ''}")


# ---------------------------------------------------------------------------------------
# §2.5 Limits
# ---------------------------------------------------------------------------------------
EVENT_LIMIT: Final = 65_536
GENESIS_LIMIT: Final = 2_097_152
PROOF_LIMIT: Final = 131_136
DISCLOSURE_LIMIT: Final = 16_384
MAX_DEPTH: Final = 16

INT_MIN: Final = -(2**63)
UINT_MAX: Final = 2**64 - 1
I63: Final = 2**63  # the exclusive upper bound of seq, ts and created

# ---------------------------------------------------------------------------------------
# §2.4 The decoding algorithm
# ---------------------------------------------------------------------------------------
# Initial bytes of the forbidden types (§2.1, §2.4 step 2): c1, float 32/64, ext 8/16/32,
# fixext 1/2/4/8/16.
_FORBIDDEN: Final = frozenset({0xC1, 0xCA, 0xCB, 0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})


def _is_str_initial(b: int) -> bool:
    """fixstr a0..bf, str 8/16/32 (§2.4 step 6, map keys)."""
    return 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        # §2.4 steps 3 and 5: the input ends first -> truncated.
        if self.remaining() < n:
            raise ProtocolError("truncated", detail=f"{n} bytes needed at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=False)

    def sint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=True)

    def value(self, depth: int) -> Value:
        # §2.4 step 1: read the initial byte.
        if self.remaining() < 1:
            raise ProtocolError("truncated", detail="no initial byte")
        b = self.data[self.pos]
        self.pos += 1
        # Step 2: forbidden types.
        if b in _FORBIDDEN:
            raise ProtocolError("forbidden_type", detail=f"initial byte {b:02x}")
        # Single-byte values: never non-minimal (§2.2).
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        # Fix containers and fixstr: the count is in the initial byte, so no step 3/4.
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.str(b & 0x1F)
        # uint 8/16/32/64: steps 3 and 4. A non-negative int must use the smallest form, and
        # positive fixint first (§2.2).
        if 0xCC <= b <= 0xCF:
            size = 1 << (b - 0xCC)
            n = self.uint(size)
            floor = {1: 0x80, 2: 0x100, 4: 0x1_0000, 8: 0x1_0000_0000}[size]
            if n < floor:
                raise ProtocolError("non_minimal", detail=f"uint{size * 8} holding {n}")
            return n
        # int 8/16/32/64: only for negatives, and only below the next smaller form's range.
        if 0xD0 <= b <= 0xD3:
            size = 1 << (b - 0xD0)
            n = self.sint(size)
            ceiling = {1: -32, 2: -128, 4: -32768, 8: -(2**31)}[size]
            if n >= ceiling:
                raise ProtocolError("non_minimal", detail=f"int{size * 8} holding {n}")
            return n
        # bin 8/16/32: bin has no fix form; bin 8 is always minimal.
        if b in (0xC4, 0xC5, 0xC6):
            size = {0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
            n = self.uint(size)
            if n < {1: 0, 2: 0x100, 4: 0x1_0000}[size]:
                raise ProtocolError("non_minimal", detail=f"bin{size * 8} of {n} bytes")
            return self.take(n)  # step 5
        # str 8/16/32.
        if b in (0xD9, 0xDA, 0xDB):
            size = {0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
            n = self.uint(size)
            if n < {1: 32, 2: 0x100, 4: 0x1_0000}[size]:
                raise ProtocolError("non_minimal", detail=f"str{size * 8} of {n} bytes")
            return self.str(n)
        # array 16/32, map 16/32.
        if b in (0xDC, 0xDD, 0xDE, 0xDF):
            size = 2 if b in (0xDC, 0xDE) else 4
            n = self.uint(size)
            if n < (16 if size == 2 else 0x1_0000):
                raise ProtocolError("non_minimal", detail=f"container{size * 8} of {n}")
            return self.array(n, depth) if b in (0xDC, 0xDD) else self.map(n, depth)
        raise AssertionError(f"unreachable initial byte {b:02x}")  # every byte is covered

    def str(self, n: int) -> str:
        raw = self.take(n)  # §2.4 step 5: truncated first, then UTF-8
        try:
            # Python's strict UTF-8 codec refuses overlong forms, surrogates and code points
            # above U+10FFFF, as RFC 3629 (§2.1) requires.
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ProtocolError("invalid_utf8") from None

    def array(self, count: int, depth: int) -> list[Value]:
        # §2.4 step 6: depth, then the count against the bytes left.
        if depth > MAX_DEPTH:
            raise ProtocolError("too_deep", detail=f"array at depth {depth}")
        if count > self.remaining():
            raise ProtocolError("truncated", detail=f"array of {count} items")
        return [self.value(depth + 1) for _ in range(count)]

    def map(self, count: int, depth: int) -> dict[str, Value]:
        if depth > MAX_DEPTH:
            raise ProtocolError("too_deep", detail=f"map at depth {depth}")
        if 2 * count > self.remaining():
            raise ProtocolError("truncated", detail=f"map of {count} entries")
        out: dict[str, Value] = {}
        previous: bytes | None = None
        for _ in range(count):
            if self.remaining() < 1:
                raise ProtocolError("truncated", detail="map key missing")
            if not _is_str_initial(self.data[self.pos]):
                raise ProtocolError("map_key_type", detail=f"key byte {self.data[self.pos]:02x}")
            start = self.pos
            key = self.value(depth + 1)
            assert isinstance(key, str)
            encoded = self.data[start : self.pos]
            # §2.3: strictly ascending encoded bytes; Python's bytes comparison is bytewise
            # with shorter-is-smaller on a common prefix, as §2.3 says.
            if previous is not None:
                if encoded == previous:
                    raise ProtocolError("duplicate_key", detail=repr(key))
                if encoded < previous:
                    raise ProtocolError("unsorted_keys", detail=repr(key))
            previous = encoded
            out[key] = self.value(depth + 1)
        return out


def decode(data: bytes, limit: int) -> Value:
    """Decode one canonical value (§2.4), refusing every non-canonical input."""
    # §2.4 step 0.
    if len(data) > limit:
        raise ProtocolError("oversize", detail=f"{len(data)} > {limit}")
    reader = _Reader(data)
    value = reader.value(1)
    # Step 7.
    if reader.remaining():
        raise ProtocolError("trailing_bytes", detail=f"{reader.remaining()} bytes")
    return value


# ---------------------------------------------------------------------------------------
# §2.2 The canonical encoder (used for key/signature maps and in tests)
# ---------------------------------------------------------------------------------------
def _length_prefix(n: int, fix_base: int | None, fix_max: int, codes: tuple[int, ...]) -> bytes:
    if fix_base is not None and n <= fix_max:
        return bytes([fix_base + n])
    if codes[0] in (0xC4, 0xD9) and n <= 0xFF:
        return bytes([codes[0], n])
    if n <= 0xFFFF:
        return bytes([codes[-2]]) + n.to_bytes(2, "big")
    if n <= 0xFFFF_FFFF:
        return bytes([codes[-1]]) + n.to_bytes(4, "big")
    raise ValueError("too long for msgpack")


def encode(value: Value) -> bytes:
    """The one canonical form (§2.2) of a value; map keys sorted as §2.3 says."""
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        v = value
        if 0 <= v <= 0x7F:
            return bytes([v])
        if 0 <= v <= 0xFF:
            return b"\xcc" + v.to_bytes(1, "big")
        if 0 <= v <= 0xFFFF:
            return b"\xcd" + v.to_bytes(2, "big")
        if 0 <= v <= 0xFFFF_FFFF:
            return b"\xce" + v.to_bytes(4, "big")
        if 0 <= v <= UINT_MAX:
            return b"\xcf" + v.to_bytes(8, "big")
        if -32 <= v < 0:
            return bytes([v + 0x100])
        if -128 <= v < 0:
            return b"\xd0" + v.to_bytes(1, "big", signed=True)
        if -32768 <= v < 0:
            return b"\xd1" + v.to_bytes(2, "big", signed=True)
        if -(2**31) <= v < 0:
            return b"\xd2" + v.to_bytes(4, "big", signed=True)
        if INT_MIN <= v < 0:
            return b"\xd3" + v.to_bytes(8, "big", signed=True)
        raise ValueError("int out of range")
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _length_prefix(len(raw), 0xA0, 31, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(value, bytes | bytearray):
        return _length_prefix(len(value), None, -1, (0xC4, 0xC5, 0xC6)) + bytes(value)
    if isinstance(value, list | tuple):
        head = _length_prefix(len(value), 0x90, 15, (0xDC, 0xDD))
        return head + b"".join(encode(item) for item in value)
    if isinstance(value, dict):
        items = sorted((encode(k), encode(v)) for k, v in value.items())
        head = _length_prefix(len(items), 0x80, 15, (0xDE, 0xDF))
        return head + b"".join(k + v for k, v in items)
    raise TypeError(f"not a protocol value: {type(value).__name__}")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------
# Shape helpers. ``bool`` is a subclass of ``int`` in Python: a msgpack bool is never an int.
# ---------------------------------------------------------------------------------------
def is_int(v: object) -> bool:
    return type(v) is int


def is_str(v: object) -> bool:
    return type(v) is str


def is_bin(v: object, length: int | None = None) -> bool:
    return type(v) is bytes and (length is None or len(v) == length)


def is_map(v: object) -> bool:
    return type(v) is dict


def is_array(v: object) -> bool:
    return type(v) is list


def str_len_between(v: object, lo: int, hi: int) -> bool:
    """A str of lo..hi characters; characters are Unicode code points (§6.1)."""
    return is_str(v) and lo <= len(v) <= hi  # type: ignore[arg-type]


MEMBER_ID: Final = re.compile(r"[A-Z][A-Z0-9-]{1,31}")  # §1.2, whole string


def is_member_id(v: object) -> bool:
    return is_str(v) and MEMBER_ID.fullmatch(v) is not None  # type: ignore[arg-type]


# §1.2: in patterns, "\s" is exactly this list (Unicode White_Space), whatever a regex
# engine's own \s is. Python's \s differs (it adds U+001C..U+001F), so it is never used.
_WS: Final = "\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
HTTPS_ENDPOINT: Final = re.compile(rf"https://[^{_WS}]+")  # §5.2, whole string (§1.2)


def is_endpoint(v: object) -> bool:
    """§5.2: a str of at most 256 characters (code points) matching `https://[^\\s]+`."""
    return (
        is_str(v) and len(v) <= 256 and HTTPS_ENDPOINT.fullmatch(v) is not None  # type: ignore[arg-type]
    )


def endpoints_ok(v: object) -> bool:
    """§5.2 (and §6.2 by reference): an array of 0..8 unique endpoints."""
    return (
        is_array(v)
        and len(v) <= 8  # type: ignore[arg-type]
        and all(is_endpoint(e) for e in v)  # type: ignore[union-attr]
        and len(set(v)) == len(v)  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------
# §3.3 Signature algorithms and keys
# ---------------------------------------------------------------------------------------
ED25519: Final = "ed25519"
HYBRID: Final = "ed25519+mldsa65"
# For each algorithm, the keys of its public key map and of its signature map (less `alg`),
# with the bin lengths.
KEY_SHAPE: Final[dict[str, dict[str, int]]] = {
    ED25519: {"ed25519": 32},
    HYBRID: {"ed25519": 32, "mldsa65": 1952},
}
SIG_SHAPE: Final[dict[str, dict[str, int]]] = {
    ED25519: {"ed25519": 64},
    HYBRID: {"ed25519": 64, "mldsa65": 3309},
}


def is_public_key(v: object, alg: str) -> bool:
    """A public key map of ``alg``: exactly the keys of its row, no `alg` (§3.3)."""
    shape = KEY_SHAPE[alg]
    return (
        is_map(v)
        and set(v) == set(shape)  # type: ignore[arg-type]
        and all(is_bin(v[k], n) for k, n in shape.items())  # type: ignore[index]
    )


def public_key_ok(v: object, alg: str) -> bool:
    """A public key map of ``alg`` that may enter the federation: §3.3 and §3.3.1 rule 1."""
    return is_public_key(v, alg) and ed25519_public_key_ok(v["ed25519"])  # type: ignore[index]


def is_signature_map(v: object) -> bool:
    """A signature map of any §3.3 algorithm: exactly `alg` and that row's keys."""
    if not is_map(v) or not is_str(v.get("alg")):  # type: ignore[union-attr]
        return False
    alg = v["alg"]  # type: ignore[index]
    if alg not in SIG_SHAPE:
        return False
    shape = SIG_SHAPE[alg]
    return set(v) == {"alg", *shape} and all(
        is_bin(v[k], n)  # type: ignore[index]
        for k, n in shape.items()
    )


# ---------------------------------------------------------------------------------------
# §3.3.1 Ed25519, exactly: the key rule and the signature rules, in our own integer
# arithmetic (RFC 8032 §5.1), then libsodium (PyNaCl) for the verification equation.
# ---------------------------------------------------------------------------------------
ED_P: Final = 2**255 - 19  # the field prime
ED_L: Final = 2**252 + 27742317777372353535851937790883648493  # the group order
ED_D: Final = (-121665 * pow(121666, -1, ED_P)) % ED_P
_SQRT_M1: Final = pow(2, (ED_P - 1) // 4, ED_P)

# An extended point (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z (RFC 8032 §5.1.4).
EdPoint: TypeAlias = tuple[int, int, int, int]
ED_NEUTRAL: Final[EdPoint] = (0, 1, 1, 0)
_BY: Final = 4 * pow(5, -1, ED_P) % ED_P


def ed_add(a: EdPoint, b: EdPoint) -> EdPoint:
    """Complete twisted Edwards addition (RFC 8032 §5.1.4)."""
    p = ED_P
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % p
    bb = (y1 + x1) * (y2 + x2) % p
    cc = 2 * t1 * t2 * ED_D % p
    dd = 2 * z1 * z2 % p
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def ed_mul(k: int, pt: EdPoint) -> EdPoint:
    acc = ED_NEUTRAL
    while k:
        if k & 1:
            acc = ed_add(acc, pt)
        pt = ed_add(pt, pt)
        k >>= 1
    return acc


def ed_is_neutral(pt: EdPoint) -> bool:
    x, y, z, _ = pt
    return x % ED_P == 0 and (y - z) % ED_P == 0


def ed_encode(pt: EdPoint) -> bytes:
    """RFC 8032 §5.1.2: y little-endian, the low bit of x in the top bit."""
    x, y, z, _ = pt
    zi = pow(z, -1, ED_P)
    x, y = x * zi % ED_P, y * zi % ED_P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ed_decode(s: bytes) -> EdPoint | None:
    """RFC 8032 §5.1.3, strictly: y < p, a square root exists, and x = 0 with the sign bit
    set is refused. None when the 32 bytes are not a point."""
    if len(s) != 32:
        return None
    n = int.from_bytes(s, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= ED_P:
        return None
    u = (y * y - 1) % ED_P
    v = (ED_D * y * y + 1) % ED_P
    x = u * pow(v, 3, ED_P) * pow(u * pow(v, 7, ED_P), (ED_P - 5) // 8, ED_P) % ED_P
    vxx = v * x * x % ED_P
    if vxx == u:
        pass
    elif vxx == (-u) % ED_P:
        x = x * _SQRT_M1 % ED_P
    else:
        return None  # no square root
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = ED_P - x
    return (x, y, 1, x * y % ED_P)


def _base_point() -> EdPoint:
    b = ed_decode(_BY.to_bytes(32, "little"))
    assert b is not None
    return b


ED_B: Final[EdPoint] = _base_point()


@lru_cache(maxsize=1024)
def ed25519_public_key_ok(key: bytes) -> bool:
    """§3.3.1 rule 1: decodes strictly, and [8]A is not the neutral point."""
    a = ed_decode(key)
    if a is None:
        return False
    for _ in range(3):
        a = ed_add(a, a)
    return not ed_is_neutral(a)


# §3.3.1 rule 2: the eight encodings of the points of small order, as the spec lists them.
SMALL_ORDER_R: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def ed25519_signature_rules_ok(signature: bytes) -> bool:
    """§3.3.1 rule 2, the parts before the equation: R not of small order, S < L."""
    if len(signature) != 64:
        return False
    r, s = signature[:32], signature[32:]
    return r not in SMALL_ORDER_R and int.from_bytes(s, "little") < ED_L


def ed25519_verify_cofactorless(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """§3.3.1 in full, in pure Python: the key rule, the R and S rules, then the
    cofactorless equation compared as bytes. Slow; the tests hold libsodium to it."""
    if not ed25519_public_key_ok(public_key) or not ed25519_signature_rules_ok(signature):
        return False
    a = ed_decode(public_key)
    assert a is not None
    r, s = signature[:32], int.from_bytes(signature[32:], "little")
    k = int.from_bytes(hashlib.sha512(r + public_key + message).digest(), "little") % ED_L
    x, y, z, t = ed_mul(k, a)
    return ed_encode(ed_add(ed_mul(s, ED_B), ((-x) % ED_P, y, z, (-t) % ED_P))) == r


@lru_cache(maxsize=4096)
def libsodium_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """PyNaCl (libsodium) on its own, with none of our checks."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """PureEd25519 under §3.3.1: our explicit checks of the key (it entered the federation
    through them already; checked again, it costs little), of R and of S, then libsodium for
    the cofactorless equation."""
    if not ed25519_public_key_ok(public_key) or not ed25519_signature_rules_ok(signature):
        return False
    return libsodium_verify(public_key, message, signature)


@lru_cache(maxsize=4096)
def mldsa65_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """ML-DSA-65 (FIPS 204), pure ML-DSA with the empty context string (§3.3).

    Cached: dilithium-py is pure Python and slow, and the vectors verify the same
    (key, message, signature) triples more than once.
    """
    try:
        return bool(ML_DSA_65.verify(public_key, message, signature, ctx=b""))
    except ValueError:
        return False


def signature_verifies(alg: str, key: dict[str, bytes], sig: dict[str, Any], msg: bytes) -> bool:
    """§3.3: for the hybrid algorithm, **both** halves must verify over the same input."""
    if sig.get("alg") != alg or not is_public_key(key, alg):
        return False
    if not ed25519_verify(key["ed25519"], msg, sig["ed25519"]):
        return False
    if alg == HYBRID:
        return mldsa65_verify(key["mldsa65"], msg, sig["mldsa65"])
    return True


# ---------------------------------------------------------------------------------------
# §5 The genesis
# ---------------------------------------------------------------------------------------
GENESIS_PREFIX: Final = b"pocnode/v1/genesis\x00"  # §5.4: 18 ASCII bytes, one zero byte
EVENT_PREFIX: Final = b"pocnode/v1/event\x00"  # §3.2: 16 ASCII bytes, one zero byte
assert len(GENESIS_PREFIX) == 19 and len(EVENT_PREFIX) == 17

HPKE_SUITES: Final[dict[str, int]] = {"x25519": 32, "mlkem768-x25519": 1216}  # §3.4.3, §7
# §3.4.4: the size of one box of a `sealed` event, per suite. §7.2 explains them (a box is
# enc || ciphertext of a 64-byte plaintext under AES-128-GCM, whose tag is 16 bytes); the
# verifier takes the numbers as §3.4.4 states them and checks nothing else about a box.
SEALED_BOX_SIZES: Final[dict[str, int]] = {"x25519": 112, "mlkem768-x25519": 1200}
WINDOW_MIN: Final = 3_600_000
EXERCISE_WINDOW_MIN: Final = 1_000  # §5.3: in an exercise federation (§5.1), a second
WINDOW_MAX: Final = 31_622_400_000
GOVERNANCE_KEYS: Final = frozenset({"admission", "observer", "key_recovery", "rules"})
RULE_KEYS: Final[dict[str, frozenset[str]]] = {  # §5.3, each row plus `rule` itself
    "consensus": frozenset({"rule", "window_ms"}),
    "fraction": frozenset({"rule", "window_ms", "num", "den"}),
    "count": frozenset({"rule", "window_ms", "min"}),
    "silence": frozenset({"rule", "window_ms"}),
}
GENESIS_KEYS: Final = frozenset(
    {"type", "v", "name", "created", "sig_alg", "hpke_suite", "template", "governance", "founders"}
)


@dataclass(frozen=True)
class Founder:
    id: str
    name: str
    key: dict[str, bytes]
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class Genesis:
    payload: bytes
    federation_id: bytes
    sig_alg: str
    hpke_suite: str
    name: str
    created: int
    governance: dict[str, Any]
    founders: tuple[Founder, ...]
    exercise: bool = False  # §5.1: windows may be as short as a second

    def member_key(self, member: str) -> dict[str, bytes] | None:
        for f in self.founders:
            if f.id == member:
                return f.key
        return None


def _malformed(path: str, detail: str = "") -> ProtocolError:
    return ProtocolError("malformed", path, detail)


def _check_rule(rule: object, path: str, exercise: bool = False) -> None:
    """§5.3: a rule map has exactly the keys of its row."""
    if not is_map(rule):
        raise _malformed(path, "rule is not a map")
    assert isinstance(rule, dict)
    kind = rule.get("rule")
    if not is_str(kind) or kind not in RULE_KEYS:
        raise _malformed(f"{path}.rule", "unknown rule")
    if set(rule) != RULE_KEYS[kind]:
        raise _malformed(path, "keys")
    window = rule["window_ms"]
    low = EXERCISE_WINDOW_MIN if exercise else WINDOW_MIN
    if not is_int(window) or not low <= window <= WINDOW_MAX:
        raise _malformed(f"{path}.window_ms")
    if kind == "fraction":
        num, den = rule["num"], rule["den"]
        if not (is_int(num) and is_int(den) and 1 <= num <= den):
            raise _malformed(path, "1 <= num <= den")
    if kind == "count" and not (is_int(rule["min"]) and rule["min"] >= 1):
        raise _malformed(f"{path}.min")


def _check_genesis_payload(p: dict[str, Any]) -> tuple[Founder, ...]:
    """§5.1 to §5.3, after type and v (§5.5 step 3)."""
    if set(p) - {"exercise"} != GENESIS_KEYS:
        raise _malformed("genesis", "keys")
    if not str_len_between(p["name"], 1, 128):
        raise _malformed("genesis.name")
    if not (is_int(p["created"]) and 0 <= p["created"] < I63):
        raise _malformed("genesis.created")
    sig_alg = p["sig_alg"]
    if not is_str(sig_alg) or sig_alg not in KEY_SHAPE:
        raise _malformed("genesis.sig_alg")
    if not is_str(p["hpke_suite"]) or p["hpke_suite"] not in HPKE_SUITES:
        raise _malformed("genesis.hpke_suite")
    if not (is_int(p["template"]) and p["template"] == 1):
        raise _malformed("genesis.template")
    if "exercise" in p and p["exercise"] is not True:  # §5.1: present only as true
        raise _malformed("genesis.exercise")
    gov = p["governance"]
    if not is_map(gov) or set(gov) != GOVERNANCE_KEYS:
        raise _malformed("genesis.governance", "keys")
    for name, rule in gov.items():
        _check_rule(rule, f"genesis.governance.{name}", p.get("exercise") is True)
    founders = p["founders"]
    if not is_array(founders) or not 1 <= len(founders) <= 256:
        raise _malformed("genesis.founders")
    out: list[Founder] = []
    previous: bytes | None = None
    ed_keys: set[bytes] = set()
    for i, f in enumerate(founders):
        path = f"genesis.founders[{i}]"
        if not is_map(f) or set(f) != {"id", "name", "key", "endpoints"}:
            raise _malformed(path, "keys")
        if not is_member_id(f["id"]):
            raise _malformed(f"{path}.id")
        if not str_len_between(f["name"], 1, 128):
            raise _malformed(f"{path}.name")
        if not is_public_key(f["key"], sig_alg):
            raise _malformed(f"{path}.key")
        if not ed25519_public_key_ok(f["key"]["ed25519"]):  # §3.3.1 rule 1
            raise _malformed(f"{path}.key.ed25519", "not a point, or of small order")
        if f["key"]["ed25519"] in ed_keys:  # §5.2: one holder, two votes
            raise _malformed(f"{path}.key.ed25519", "another founder's Ed25519 key")
        ed_keys.add(f["key"]["ed25519"])
        if not endpoints_ok(f["endpoints"]):  # §5.2: 0..8, unique, each the pattern
            raise _malformed(f"{path}.endpoints")
        eps = f["endpoints"]
        # §5.1: sorted by id as §2.3 sorts keys (encoded bytes), ids unique.
        encoded = encode(f["id"])
        if previous is not None and encoded <= previous:
            raise _malformed(f"{path}.id", "founders not sorted by id, or a duplicate")
        previous = encoded
        out.append(Founder(f["id"], f["name"], f["key"], tuple(eps)))
    return tuple(out)


def verify_genesis(data: bytes) -> Genesis:
    """§5.5: verify a signed genesis document."""
    # Step 1.
    doc = decode(data, GENESIS_LIMIT)
    # Step 2.
    if not is_map(doc) or set(doc) != {"genesis", "sigs"}:  # type: ignore[arg-type]
        raise _malformed("genesis", "document keys")
    assert isinstance(doc, dict)
    payload, sigs = doc["genesis"], doc["sigs"]
    if not is_bin(payload) or not is_map(sigs):
        raise _malformed("genesis", "document types")
    # Step 3.
    p = decode(payload, GENESIS_LIMIT)
    if not is_map(p):
        raise _malformed("genesis", "payload is not a map")
    assert isinstance(p, dict)
    if p.get("type") != "pocnode/genesis" or not is_str(p.get("type")):
        raise _malformed("genesis.type")
    if not is_int(p.get("v")):
        raise _malformed("genesis.v")
    if p["v"] != 1:
        raise ProtocolError("unsupported_version", "genesis.v")
    founders = _check_genesis_payload(p)
    sig_alg: str = p["sig_alg"]
    # Step 4: every founder signed, and no one else.
    for f in founders:
        if f.id not in sigs:
            raise ProtocolError("missing_signature", f"sigs.{f.id}")
    if set(sigs) - {f.id for f in founders}:
        raise _malformed("sigs", "a non-founder signed")
    # Step 5: per founder in order, the shape then the signature.
    message = GENESIS_PREFIX + payload
    for f in founders:
        sig = sigs[f.id]
        if not is_signature_map(sig) or sig["alg"] != sig_alg:
            raise _malformed(f"sigs.{f.id}")
        if not signature_verifies(sig_alg, f.key, sig, message):
            raise ProtocolError("bad_signature", f"sigs.{f.id}")
    return Genesis(
        payload=payload,
        federation_id=sha256(payload),
        sig_alg=sig_alg,
        hpke_suite=p["hpke_suite"],
        name=p["name"],
        created=p["created"],
        governance=p["governance"],
        founders=founders,
        exercise=p.get("exercise") is True,
    )


# ---------------------------------------------------------------------------------------
# §3.1, §3.2 Envelopes and payloads (§4.1 steps 1 to 5)
# ---------------------------------------------------------------------------------------
PAYLOAD_KEYS: Final = frozenset({"v", "fed", "author", "seq", "prev", "kind", "ts", "body"})
KINDS: Final = frozenset({"record", "key.rotate", "node.keys", "sealed", "request",
                          "request.publish"})  # §3.4; §3.5 refused
# Kinds specified outside §3.4 (§13: checkpoint, cosign), with their step-16 rule, which sees
# the chain before the event. Filled by independent_tlog.py, written from §13 alone.
EXTRA_KINDS: dict[str, Callable[[Verifier, Event, ChainState], None]] = {}


@dataclass(frozen=True)
class Event:
    envelope: bytes
    payload: bytes
    sig: dict[str, Any]
    fed: bytes
    author: str
    seq: int
    prev: bytes | None
    kind: str
    ts: int
    body: dict[str, Any]

    @property
    def event_id(self) -> bytes:
        """§3.2: SHA-256 of the payload; the signature is not part of it."""
        return sha256(self.payload)

    @property
    def signing_input(self) -> bytes:
        """§3.2: "pocnode/v1/event" || 00 || payload."""
        return EVENT_PREFIX + self.payload


def parse_envelope(data: bytes) -> Event:
    """§4.1 steps 1 to 5."""
    # Step 1 (also §2.4 step 0) and step 2.
    env = decode(data, EVENT_LIMIT)
    # Step 3.
    if not is_map(env) or set(env) != {"sig", "event"}:  # type: ignore[arg-type]
        raise _malformed("envelope", "keys")
    assert isinstance(env, dict)
    if not is_bin(env["event"]):
        raise _malformed("envelope.event", "not a bin")
    if not is_signature_map(env["sig"]):
        raise _malformed("envelope.sig")
    payload: bytes = env["event"]
    # Step 4: the payload is a second input under the same event limit (§2.5).
    p = decode(payload, EVENT_LIMIT)
    # Step 5: first a map with an int v, then v = 1, then the exact shape of §3.2.
    if not is_map(p) or not is_int(p.get("v")):  # type: ignore[union-attr]
        raise _malformed("event.v")
    assert isinstance(p, dict)
    if p["v"] != 1:
        raise ProtocolError("unsupported_version", "event.v")
    if set(p) != PAYLOAD_KEYS:
        raise _malformed("event", "keys")
    if not is_bin(p["fed"], 32):
        raise _malformed("event.fed")
    if not is_member_id(p["author"]):
        raise _malformed("event.author")
    seq = p["seq"]
    if not (is_int(seq) and 1 <= seq < I63):
        raise _malformed("event.seq")
    prev = p["prev"]
    if seq == 1 and prev is not None:
        raise _malformed("event.prev", "must be nil at seq 1")
    if seq > 1 and not is_bin(prev, 32):
        raise _malformed("event.prev", "must be a 32-byte bin after seq 1")
    if not str_len_between(p["kind"], 1, 32):
        raise _malformed("event.kind")
    if not (is_int(p["ts"]) and 0 <= p["ts"] < I63):
        raise _malformed("event.ts")
    if not is_map(p["body"]):
        raise _malformed("event.body")
    return Event(
        envelope=data,
        payload=payload,
        sig=env["sig"],
        fed=p["fed"],
        author=p["author"],
        seq=seq,
        prev=prev,
        kind=p["kind"],
        ts=p["ts"],
        body=p["body"],
    )


# ---------------------------------------------------------------------------------------
# §6.1 Content fields, as the signed record body (§6.2) and disclosures (§6.4) carry them
# ---------------------------------------------------------------------------------------
ENTRY_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
DOMAINS: Final = frozenset({"diplomatic", "policy", "technical"})
VISIBILITIES: Final = frozenset({"public", "members", "bilateral"})
LEVELS: Final = frozenset({"political", "senior", "working", "operational"})
CHANNEL_TYPES: Final = frozenset({"openpgp", "smime", "signal", "matrix", "threema", "other"})
EMAIL: Final = re.compile(rf"[^@{_WS}]+@[^@{_WS}]+\.[^@{_WS}]+")
PHONE: Final = re.compile(r"\+[1-9][0-9]{6,14}")
LANGUAGE: Final = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")
TIMEZONE: Final = re.compile(r"[A-Za-z0-9_+/-]+")


def _name(v: Any) -> bool:
    return str_len_between(v, 1, 200)


def _level(v: Any) -> bool:
    return is_str(v) and v in LEVELS


def _email(v: Any) -> bool:
    return str_len_between(v, 3, 254) and EMAIL.fullmatch(v) is not None


def _phone(v: Any) -> bool:
    return is_str(v) and PHONE.fullmatch(v) is not None


def _secure_channels(v: Any) -> bool:
    if not is_array(v) or not 1 <= len(v) <= 8:
        return False
    return all(
        is_map(c)
        and set(c) == {"type", "value"}
        and is_str(c["type"])
        and c["type"] in CHANNEL_TYPES
        and str_len_between(c["value"], 1, 512)
        for c in v
    )


def _languages(v: Any) -> bool:
    if not is_array(v) or not 1 <= len(v) <= 16:
        return False
    if not all(is_str(x) and LANGUAGE.fullmatch(x) is not None for x in v):
        return False
    return len(set(v)) == len(v)  # unique


def _hours(v: Any) -> bool:
    if not is_map(v) or not v or not set(v) <= {"timezone", "availability"}:
        return False
    if "timezone" in v and not (
        str_len_between(v["timezone"], 1, 64) and TIMEZONE.fullmatch(v["timezone"])
    ):
        return False
    return "availability" not in v or str_len_between(v["availability"], 1, 128)


def _notes(v: Any) -> bool:
    return str_len_between(v, 1, 2000)


CONTENT_FIELDS: Final[dict[str, Callable[[Any], bool]]] = {
    "organisation": _name,
    "unit": _name,
    "role": _name,
    "level": _level,
    "person": _name,
    "email": _email,
    "phone": _phone,
    "secure_channels": _secure_channels,
    "languages": _languages,
    "hours": _hours,
    "notes": _notes,
}


def content_value_ok(field_name: str, value: Any) -> bool:
    check = CONTENT_FIELDS.get(field_name)
    return check is not None and check(value)


# ---------------------------------------------------------------------------------------
# §6.2 The signed record body; §3.4 bodies of the other kinds
# ---------------------------------------------------------------------------------------
def _invalid(path: str, detail: str = "") -> ProtocolError:
    return ProtocolError("invalid_body", path, detail)


def check_record_body(body: dict[str, Any], path: str = "event.body") -> None:
    """§6.2; every violation is `invalid_body`."""
    if not set(body) >= {"template", "entries"} or not set(body) <= {
        "template",
        "entries",
        "node",
    }:
        raise _invalid(path, "keys")
    if not (is_int(body["template"]) and body["template"] == 1):
        raise _invalid(f"{path}.template")
    if "node" in body:
        node = body["node"]
        if not is_map(node) or set(node) != {"endpoints"}:
            raise _invalid(f"{path}.node")
        if not endpoints_ok(node["endpoints"]):  # §6.2: the rule of §5.2
            raise _invalid(f"{path}.node.endpoints")
    entries = body["entries"]
    if not is_array(entries) or not 1 <= len(entries) <= 32:
        raise _invalid(f"{path}.entries")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        epath = f"{path}.entries[{i}]"
        _check_signed_entry(entry, epath)
        if entry["id"] in seen:
            raise _invalid(f"{epath}.id", "duplicate entry id")
        seen.add(entry["id"])


def _check_signed_entry(entry: Any, path: str) -> None:
    if not is_map(entry):
        raise _invalid(path, "not a map")
    required = {"id", "domain", "visibility", "fields"}
    if not required <= set(entry) <= required | {"sd"}:
        raise _invalid(path, "keys")
    if not (is_str(entry["id"]) and ENTRY_ID.fullmatch(entry["id"])):
        raise _invalid(f"{path}.id")
    if not (is_str(entry["domain"]) and entry["domain"] in DOMAINS):
        raise _invalid(f"{path}.domain")
    if not (is_str(entry["visibility"]) and entry["visibility"] in VISIBILITIES):
        raise _invalid(f"{path}.visibility")
    fields = entry["fields"]
    if not is_map(fields):
        raise _invalid(f"{path}.fields")
    for name, value in fields.items():
        if not content_value_ok(name, value):
            raise _invalid(f"{path}.fields.{name}")
    digests = 0
    if "sd" in entry:
        sd = entry["sd"]
        if not is_map(sd) or not sd or not set(sd) <= {"members", "bilateral"}:
            raise _invalid(f"{path}.sd")
        for vis, lst in sd.items():
            lpath = f"{path}.sd.{vis}"
            if not is_array(lst) or not 1 <= len(lst) <= 16:
                raise _invalid(lpath)
            if not all(is_bin(d, 32) for d in lst):
                raise _invalid(lpath, "not a 32-byte bin")
            # Strictly ascending bytewise.
            if any(a >= b for a, b in zip(lst, lst[1:], strict=False)):
                raise _invalid(lpath, "digests not strictly ascending")
            digests += len(lst)
    if not fields and digests == 0:
        raise _invalid(path, "no field and no digest")


def check_key_rotate_body(body: dict[str, Any], sig_alg: str) -> None:
    """§3.4.2."""
    if "key" not in body or not set(body) <= {"key", "reason"}:
        raise _invalid("event.body", "keys")
    if not public_key_ok(body["key"], sig_alg):  # §3.3 shape, §3.3.1 rule 1
        raise _invalid("event.body.key")
    if "reason" in body and not str_len_between(body["reason"], 1, 256):
        raise _invalid("event.body.reason")


def check_node_keys_body(body: dict[str, Any], hpke_suite: str) -> None:
    """§3.4.3; ``hpke_suite`` is the genesis's."""
    if "tls" not in body or not set(body) <= {"tls", "hpke"}:
        raise _invalid("event.body", "keys")
    if not is_bin(body["tls"], 32):
        raise _invalid("event.body.tls")
    if "hpke" in body:
        hpke = body["hpke"]
        if not is_map(hpke) or set(hpke) != {"suite", "pk"}:
            raise _invalid("event.body.hpke")
        suite = hpke["suite"]
        if not is_str(suite) or suite != hpke_suite:
            raise _invalid("event.body.hpke.suite", "not the genesis hpke_suite")
        if not is_bin(hpke["pk"], HPKE_SUITES[suite]):
            raise _invalid("event.body.hpke.pk")


def check_sealed_body(body: dict[str, Any], hpke_suite: str) -> None:
    """§3.4.4; ``hpke_suite`` is the genesis's. The shape only: whether a box opens, and for
    whom, is not a verifier's business (§7.2)."""
    if set(body) != {"suite", "boxes"}:
        raise _invalid("event.body", "keys")
    suite = body["suite"]
    if not is_str(suite) or suite != hpke_suite:
        raise _invalid("event.body.suite", "not the genesis hpke_suite")
    boxes = body["boxes"]
    if not is_array(boxes) or len(boxes) != 2:
        raise _invalid("event.body.boxes", "not an array of exactly two")
    size = SEALED_BOX_SIZES[suite]
    for i, box in enumerate(boxes):
        if not is_bin(box, size):
            raise _invalid(f"event.body.boxes[{i}]", f"not a bin of {size} bytes")
    # Distinct and in ascending bytewise order: strictly ascending (equal lengths, so no
    # prefix case arises).
    if not boxes[0] < boxes[1]:
        raise _invalid("event.body.boxes", "boxes equal or not in ascending order")


# ---------------------------------------------------------------------------------------
# §4.3, §4.4 Chain state; §4.1 the verification algorithm; §4.5 proofs
# ---------------------------------------------------------------------------------------
@dataclass
class ChainState:
    """§4.4: per member, the accepted ids by sequence, the keys by first valid seq, the head
    timestamp."""

    ids: list[bytes] = field(default_factory=list)
    keys: list[tuple[int, dict[str, bytes]]] = field(default_factory=list)
    head_ts: int = 0
    # §5.9: the sequence of the author's `member.withdraw`; its chain takes nothing after it
    # (§4.1 step 10) until governance admits it again.
    withdrawn_at: int | None = None

    @property
    def head(self) -> int:
        return len(self.ids)

    def key_at(self, seq: int) -> dict[str, bytes]:
        """§4.3: the key introduced by the last rotation with sequence < seq, or the genesis
        key. Keys are stored with the first sequence they sign, so: the last key whose first
        sequence is <= seq."""
        valid = self.keys[0][1]
        for first, key in self.keys:
            if first <= seq:
                valid = key
        return valid


@dataclass(frozen=True)
class Accepted:
    event: Event
    key: dict[str, bytes]  # the key the event verified under (§4.3)


# §5.6, §4.1 step 8: the only kinds an observer writes.
OBSERVER_KINDS: Final = frozenset({"node.keys", "sealed", "member.withdraw"})


class Verifier:
    """A verifier bound to one verified genesis (§4.1, §4.5). Who besides the founders may
    write (members and observers admitted by governance, §5.6) is told to it by
    ``independent_gov.py``, which tallies; alone, it knows the founders only."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.chains: dict[str, ChainState] = {}
        self.admitted: dict[str, dict[str, bytes]] = {}  # id -> the application's key
        self.observers: set[str] = set()

    def chain(self, member: str) -> ChainState:
        state = self.chains.get(member)
        if state is None:
            key = self.genesis.member_key(member) or self.admitted.get(member)
            if key is None:
                raise ProtocolError("unknown_author", "event.author")
            state = ChainState(keys=[(1, key)])  # §4.3, §5.6: the first key from seq 1
            self.chains[member] = state
        return state

    def accepted(self, ev: Event) -> None:
        """Called once an event is accepted (§4.4); governance folds it here."""

    def _verifies(self, ev: Event, key: dict[str, bytes]) -> bool:
        return signature_verifies(self.genesis.sig_alg, key, ev.sig, ev.signing_input)

    def verify_event(self, data: bytes, now: int | None = None) -> Accepted:
        """§4.1; on success the chain state is extended (§4.4), on refusal nothing changes."""
        ev = parse_envelope(data)  # steps 1 to 5
        g = self.genesis
        if ev.fed != g.federation_id:  # step 6
            raise ProtocolError("wrong_federation", "event.fed")
        if ev.kind not in KINDS and ev.kind not in EXTRA_KINDS:  # step 7
            raise ProtocolError("unknown_kind", "event.kind")
        state = self.chain(ev.author)  # step 8: unknown_author
        if ev.author in self.observers and ev.kind not in OBSERVER_KINDS:
            raise ProtocolError("kind_not_allowed", "event.kind")
        if ev.sig["alg"] != g.sig_alg:  # step 9
            raise ProtocolError("wrong_algorithm", "envelope.sig.alg")
        h = state.head
        key = state.key_at(ev.seq)
        if ev.seq <= h:  # step 10
            if ev.event_id == state.ids[ev.seq - 1]:
                raise ProtocolError("duplicate")
            if not self._verifies(ev, key):
                raise ProtocolError("bad_signature", "envelope.sig")
            raise ProtocolError("equivocation", "event.seq")
        if state.withdrawn_at is not None and ev.seq > state.withdrawn_at:  # step 10, §5.9
            raise ProtocolError("withdrawn", "event.seq")
        if ev.seq > h + 1:  # step 11
            raise ProtocolError("sequence_gap", "event.seq")
        if not self._verifies(ev, key):  # step 12
            raise ProtocolError("bad_signature", "envelope.sig")
        head_id = state.ids[-1] if h else None
        if ev.prev != head_id:  # step 13
            raise ProtocolError("wrong_prev", "event.prev")
        if ev.ts < state.head_ts:  # step 14 (head ts is 0 when h = 0)
            raise ProtocolError("timestamp_regression", "event.ts")
        if now is not None and ev.ts > now + 600_000:  # step 15
            raise ProtocolError("timestamp_in_future", "event.ts")
        # Step 16.
        if ev.kind == "record":
            check_record_body(ev.body)
        elif ev.kind == "key.rotate":
            check_key_rotate_body(ev.body, g.sig_alg)
        elif ev.kind == "node.keys":
            check_node_keys_body(ev.body, g.hpke_suite)
        elif ev.kind == "sealed":
            check_sealed_body(ev.body, g.hpke_suite)
        elif ev.kind == "request":
            check_request_body(ev.body, g.hpke_suite)
        elif ev.kind == "request.publish":
            check_publication_body(ev.body)
        else:
            EXTRA_KINDS[ev.kind](self, ev, state)  # step 7 let no other kind through
        # §4.4: accept.
        state.ids.append(ev.event_id)
        state.head_ts = ev.ts
        if ev.kind == "key.rotate":
            state.keys.append((ev.seq + 1, ev.body["key"]))
        if ev.kind == "member.withdraw":
            state.withdrawn_at = ev.seq
        self.accepted(ev)
        return Accepted(ev, key)

    def check_proof(self, data: bytes) -> tuple[str, int]:
        """§4.5: check an equivocation proof; returns (author, seq)."""
        proof = decode(data, PROOF_LIMIT)
        if not is_map(proof) or set(proof) != {"a", "b"}:  # type: ignore[arg-type]
            raise _malformed("proof", "keys")
        assert isinstance(proof, dict)
        if not is_bin(proof["a"]) or not is_bin(proof["b"]):
            raise _malformed("proof", "a and b must be bin")
        # Step 2: a, then b, each through §4.1 steps 1 to 5.
        a = parse_envelope(proof["a"])
        b = parse_envelope(proof["b"])
        # Step 3.
        for name, ev in (("a", a), ("b", b)):
            if ev.fed != self.genesis.federation_id:
                raise ProtocolError("wrong_federation", f"proof.{name}")
        # Step 4.
        if a.author != b.author or a.seq != b.seq:
            raise ProtocolError("not_equivocation", "proof", "different author or seq")
        if not a.event_id < b.event_id:
            raise ProtocolError("not_equivocation", "proof", "id of a not below id of b")
        # Step 5.
        state = self.chain(a.author)  # unknown_author
        for name, ev in (("a", a), ("b", b)):
            if ev.sig["alg"] != self.genesis.sig_alg:
                raise ProtocolError("wrong_algorithm", f"proof.{name}")
        # Step 6: the key valid at seq is known only from the chain up to seq - 1.
        if a.seq > state.head + 1:
            raise ProtocolError("sequence_gap", "proof", "ahead of the chain held")
        # Step 7.
        key = state.key_at(a.seq)
        for name, ev in (("a", a), ("b", b)):
            if not self._verifies(ev, key):
                raise ProtocolError("bad_signature", f"proof.{name}")
        return a.author, a.seq


# ---------------------------------------------------------------------------------------
# §6.4 Checking a disclosure
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Disclosure:
    salt: bytes
    entry_id: str
    field_name: str
    value: Value
    visibility: str  # the list the digest was found in: members or bilateral


def check_disclosure(body: dict[str, Any], data: bytes) -> Disclosure:
    """§6.4, against a record body already accepted (§4.1)."""
    d = decode(data, DISCLOSURE_LIMIT)  # step 1
    # Step 2.
    if not is_array(d) or len(d) != 4:  # type: ignore[arg-type]
        raise _malformed("disclosure", "not an array of 4")
    assert isinstance(d, list)
    salt, entry_id, field_name, value = d
    if not is_bin(salt, 16) or not is_str(entry_id) or not is_str(field_name):
        raise _malformed("disclosure")
    # Step 3.
    digest = sha256(data)
    entry = next((e for e in body["entries"] if e["id"] == entry_id), None)
    if entry is None:
        raise ProtocolError("disclosure_mismatch", "disclosure[1]", "no such entry")
    visibility = next(
        (vis for vis in ("members", "bilateral") if digest in entry.get("sd", {}).get(vis, [])),
        None,
    )
    if visibility is None:
        raise ProtocolError("disclosure_mismatch", "disclosure", "digest not in the entry")
    # Step 4.
    if field_name not in CONTENT_FIELDS or field_name in entry["fields"]:
        raise _invalid("disclosure[2]", "not a content field, or already public")
    if not content_value_ok(field_name, value):
        raise _invalid("disclosure[3]")
    return Disclosure(salt, entry_id, field_name, value, visibility)


# ---------------------------------------------------------------------------------------
# §12 Communication requests: the two kinds (§12.2, §12.6), plaintexts (§12.3), and what a
# party's node does with the plaintexts it opens (§12.4)
# ---------------------------------------------------------------------------------------
PADDED_SIZES: Final = (512, 2048, 8192, 24576)  # §12.2, §12.3
BOX_OVERHEAD: Final = {"x25519": 48, "mlkem768-x25519": 1136}  # enc + the 16-byte tag
REQUEST_TYPES: Final = frozenset({"ping", "incident-notification", "information-request",
                                  "assistance-request", "follow-up", "other"})
URGENCIES: Final = frozenset({"routine", "priority", "urgent"})
STATE_RANK: Final = {"delivered": 1, "acknowledged": 2, "answered": 3, "declined": 3}
ENTRY_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
DOMAINS: Final = frozenset({"diplomatic", "policy", "technical"})


def check_request_body(body: dict[str, Any], hpke_suite: str) -> None:
    """§12.2: exactly suite and boxes; two bin of one length, overhead + a padded size."""
    if set(body) != {"suite", "boxes"}:
        raise _invalid("event.body", "keys")
    if not is_str(body["suite"]) or body["suite"] != hpke_suite:
        raise _invalid("event.body.suite")
    boxes = body["boxes"]
    if not is_array(boxes) or len(boxes) != 2 or not all(is_bin(b) for b in boxes):
        raise _invalid("event.body.boxes", "two bin")
    overhead = BOX_OVERHEAD[hpke_suite]
    for i, box in enumerate(boxes):
        inner = len(box) - overhead
        if inner > PADDED_SIZES[-1]:
            raise ProtocolError("oversize", f"event.body.boxes[{i}]")
        if inner not in PADDED_SIZES:
            raise _invalid(f"event.body.boxes[{i}]", "not overhead + a padded size")
    if len(boxes[0]) != len(boxes[1]) or not boxes[0] < boxes[1]:
        raise _invalid("event.body.boxes", "one length, distinct, ascending")


def _text_ok(v: Any, lo: int, hi: int, path: str) -> None:
    """A str of lo..hi characters: longer is oversize (§12.3), anything else invalid."""
    if not is_str(v):
        raise _invalid(path)
    if len(v) > hi:
        raise ProtocolError("oversize", path)
    if len(v) < lo:
        raise _invalid(path)


def _is_time(v: Any) -> bool:
    return is_int(v) and 0 <= v < I63


def check_publication_body(body: dict[str, Any]) -> None:
    """§12.6: {"exchange": record}, the record checked field by field."""
    if set(body) != {"exchange"} or not is_map(body["exchange"]):
        raise _invalid("event.body", "exactly exchange")
    x = body["exchange"]
    p = "event.body.exchange"
    required = {"sender", "recipient", "id", "scope", "request", "sent", "type", "urgency",
                "steps"}
    if not required <= set(x) <= required | {"content"}:
        raise _invalid(p, "keys")
    if not (is_member_id(x["sender"]) and is_member_id(x["recipient"])) \
            or x["sender"] == x["recipient"]:
        raise _invalid(p, "two distinct members")
    if not is_bin(x["id"], 16) or not is_bin(x["request"], 32) or not _is_time(x["sent"]):
        raise _invalid(p, "id, request, sent")
    if x["type"] not in REQUEST_TYPES or x["urgency"] not in URGENCIES \
            or x["scope"] not in ("metadata", "content"):
        raise _invalid(p, "type, urgency, scope")
    steps = x["steps"]
    if not is_array(steps):
        raise _invalid(f"{p}.steps")
    last = 0
    for i, st in enumerate(steps):
        if (not is_array(st) or len(st) != 3 or not is_str(st[0]) or st[0] not in STATE_RANK
                or not is_bin(st[1], 32) or not _is_time(st[2])
                or STATE_RANK[st[0]] <= last):
            raise _invalid(f"{p}.steps[{i}]")
        last = STATE_RANK[st[0]]
    if (x["scope"] == "content") != ("content" in x):
        raise _invalid(p, "content exactly with scope content")
    if "content" in x:
        c = x["content"]
        if not is_map(c) or not {"subject", "text", "lang"} <= set(c) <= {
                "subject", "text", "lang", "answer", "reason"}:
            raise _invalid(f"{p}.content")
        _text_ok(c["subject"], 1, 200, f"{p}.content.subject")
        _text_ok(c["text"], 0, 8000, f"{p}.content.text")
        if not is_str(c["lang"]) or LANGUAGE.fullmatch(c["lang"]) is None:
            raise _invalid(f"{p}.content.lang")
        for k in ("answer", "reason"):
            if k in c:
                _text_ok(c[k], 0, 8000, f"{p}.content.{k}")


def parse_request_plaintext(raw: bytes) -> dict[str, Any]:
    """§12.3: the framing, then the map of a request or a status, every rule."""
    if len(raw) not in PADDED_SIZES:
        raise _invalid("request", "not a padded size")
    n = int.from_bytes(raw[:4], "big")
    if 4 + n > len(raw) or any(raw[4 + n:]):
        raise _invalid("request", "framing")
    try:
        msg = decode(raw[4:4 + n], PADDED_SIZES[-1])
    except ProtocolError:
        raise _invalid("request", "not one canonical value") from None
    if not is_map(msg):
        raise _invalid("request")
    assert isinstance(msg, dict)
    if msg.get("m") == "request":
        _check_request_message(msg)
    elif msg.get("m") == "status":
        _check_status_message(msg)
    else:
        raise _invalid("request.m")
    return msg


def _check_request_message(m: dict[str, Any]) -> None:
    base = {"m", "id", "to", "type", "subject", "text", "urgency", "lang"}
    extra = {"reply_by", "attachments", "ref", "from_entry", "to_domain", "to_entry",
             "campaign"}
    if not base <= set(m) <= base | extra:
        raise _invalid("request", "keys")
    if not is_bin(m["id"], 16) or not is_member_id(m["to"]):
        raise _invalid("request.id")
    if m["type"] not in REQUEST_TYPES or m["urgency"] not in URGENCIES:
        raise _invalid("request.type")
    _text_ok(m["subject"], 1, 200, "request.subject")
    _text_ok(m["text"], 0, 8000, "request.text")
    if not is_str(m["lang"]) or LANGUAGE.fullmatch(m["lang"]) is None:
        raise _invalid("request.lang")
    if "reply_by" in m and not _is_time(m["reply_by"]):
        raise _invalid("request.reply_by")
    if "attachments" in m and not (is_array(m["attachments"])
                                   and 1 <= len(m["attachments"]) <= 16
                                   and all(is_bin(a, 32) for a in m["attachments"])):
        raise _invalid("request.attachments")
    if "ref" in m and not (is_array(m["ref"]) and len(m["ref"]) == 2
                           and is_member_id(m["ref"][0]) and is_bin(m["ref"][1], 16)):
        raise _invalid("request.ref")
    for k in ("from_entry", "to_entry"):
        if k in m and not (is_str(m[k]) and ENTRY_ID.fullmatch(m[k])):
            raise _invalid(f"request.{k}")
    if "to_domain" in m and m["to_domain"] not in DOMAINS:
        raise _invalid("request.to_domain")
    if "campaign" in m:
        _text_ok(m["campaign"], 1, 64, "request.campaign")


def _check_status_message(m: dict[str, Any]) -> None:
    base = {"m", "to", "sender", "id", "state"}
    if not base <= set(m) <= base | {"text", "scope"}:
        raise _invalid("status", "keys")
    if not is_member_id(m["to"]) or not is_member_id(m["sender"]) or not is_bin(m["id"], 16):
        raise _invalid("status")
    state = m["state"]
    if not is_str(state) or state not in (*STATE_RANK, "publish"):
        raise _invalid("status.state")
    if "text" in m:
        if state not in ("answered", "declined"):
            raise _invalid("status.text")
        _text_ok(m["text"], 0, 8000, "status.text")
    elif state == "answered":
        raise _invalid("status.text", "an answer has text")
    if (state == "publish") != ("scope" in m) or (
            "scope" in m and m["scope"] not in ("metadata", "content")):
        raise _invalid("status.scope")


@dataclass
class _Exchange:
    sender: str
    recipient: str
    rank: int = 0
    states: set[str] = field(default_factory=set)
    consented: set[str] = field(default_factory=set)


class RequestParty:
    """§12.4 at one party's node (``me``): the plaintexts that opened under its key, each with
    its event's author, in the order its node accepts them."""

    def __init__(self, me: str, members: frozenset[str]) -> None:
        self.me = me
        self.members = members
        self.exchanges: dict[tuple[str, bytes], _Exchange] = {}

    def apply(self, author: str, raw: bytes) -> str:
        """"valid", "ignored" (not about us), or raises the refusal's ProtocolError."""
        msg = parse_request_plaintext(raw)  # step 1: format
        if author != self.me and msg["to"] != self.me:
            return "ignored"
        if msg["to"] == author:
            raise _invalid("request.to", "to its own author")
        if msg["to"] not in self.members:
            raise ProtocolError("unknown_author", "request.to")
        if msg["m"] == "request":
            key = (author, msg["id"])
            if key in self.exchanges:  # step 2
                raise ProtocolError("replay", "request.id")
            self.exchanges[key] = _Exchange(sender=author, recipient=msg["to"])
            return "valid"
        x = self.exchanges.get((msg["sender"], msg["id"]))
        if x is None:  # step 3
            raise ProtocolError("unknown_request", "status.id")
        state = msg["state"]
        if state == "publish":  # step 4
            if author not in (x.sender, x.recipient):
                raise ProtocolError("not_party", "status.state")
            if author in x.consented:
                raise ProtocolError("replay", "status.state")
        else:
            if author != x.recipient:
                raise ProtocolError("not_party", "status.state")
            if state in x.states:  # step 5
                raise ProtocolError("replay", "status.state")
            if STATE_RANK[state] <= x.rank:
                raise ProtocolError("out_of_order", "status.state")
        other = x.recipient if author == x.sender else x.sender
        if msg["to"] != other:  # step 6
            raise _invalid("status.to", "not the other party")
        if state == "publish":
            x.consented.add(author)
        else:
            x.states.add(state)
            x.rank = STATE_RANK[state]
        return "valid"
