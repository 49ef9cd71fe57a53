"""Identity keys, signatures and their wire forms (PROTOCOL.md §3.3).

A federation chooses one signature algorithm in its genesis, for every member:

* ``ed25519``: RFC 8032 Ed25519, 32-byte public keys, 64-byte signatures;
* ``ed25519+mldsa65``: a hybrid for long-lived state keys. Both an Ed25519 and
  an ML-DSA-65 (FIPS 204, empty context) signature over the same signing input;
  both must verify, so a forger must break both.

No files here: key files are :mod:`pocnode.keyfile`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pocnode.core import ed25519_rules
from pocnode.core.errors import Malformed

ED25519 = "ed25519"
HYBRID = "ed25519+mldsa65"
ALGORITHMS = (ED25519, HYBRID)

ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
MLDSA65_PUBLIC_BYTES = 1952
MLDSA65_SIGNATURE_BYTES = 3309

# Wire field names and lengths of public keys and signatures, per algorithm (§3.3).
_PUBLIC_FIELDS = {
    ED25519: {"ed25519": ED25519_PUBLIC_BYTES},
    HYBRID: {"ed25519": ED25519_PUBLIC_BYTES, "mldsa65": MLDSA65_PUBLIC_BYTES},
}
_SIGNATURE_FIELDS = {
    ED25519: {"ed25519": ED25519_SIGNATURE_BYTES},
    HYBRID: {"ed25519": ED25519_SIGNATURE_BYTES, "mldsa65": MLDSA65_SIGNATURE_BYTES},
}


def _parts(obj: Any, fields: dict[str, int], what: str, path: str) -> dict[str, bytes]:
    if type(obj) is not dict:
        raise Malformed(f"{what} must be a map, got {type(obj).__name__}", path=path)
    expected = set(fields) | ({"alg"} if "alg" in obj else set())
    if set(obj) != expected:
        raise Malformed(f"{what} must have fields {sorted(fields)}, got {sorted(obj)}", path=path)
    out = {}
    for name, size in fields.items():
        value = obj[name]
        if type(value) is not bytes or len(value) != size:
            got = f"{len(value)} bytes" if type(value) is bytes else type(value).__name__
            raise Malformed(f"{what} {name} must be bin of {size} bytes, got {got}",
                            path=f"{path}.{name}")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature in the federation's algorithm; its wire form is a map (§3.3)."""

    alg: str
    ed25519: bytes
    mldsa65: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alg": self.alg, "ed25519": self.ed25519}
        if self.mldsa65 is not None:
            out["mldsa65"] = self.mldsa65
        return out

    @classmethod
    def from_wire(cls, obj: Any, *, path: str) -> Signature:
        """Shape only: raises Malformed. An algorithm outside §3.3 is malformed here;
        one that is known but not the federation's is the verifier's wrong_algorithm."""
        if type(obj) is not dict or type(obj.get("alg")) is not str:
            raise Malformed("signature must be a map with a str 'alg'", path=path)
        alg = obj["alg"]
        if alg not in _SIGNATURE_FIELDS:
            raise Malformed(f"unknown signature algorithm {alg!r:.40}", path=f"{path}.alg")
        parts = _parts(obj, _SIGNATURE_FIELDS[alg], "signature", path)
        return cls(alg=alg, ed25519=parts["ed25519"], mldsa65=parts.get("mldsa65"))


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A member's identity public key. Loaded once, so verifying costs no parsing."""

    alg: str
    ed25519: bytes
    mldsa65: bytes | None = None
    _ed: Any = field(default=None, compare=False, repr=False)
    _ml: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.alg not in _PUBLIC_FIELDS:
            raise Malformed(f"unknown key algorithm {self.alg!r:.40}")
        if len(self.ed25519) != ED25519_PUBLIC_BYTES:
            raise Malformed(f"ed25519 public key must be 32 bytes, got {len(self.ed25519)}")
        if (self.alg == HYBRID) != (self.mldsa65 is not None):
            raise Malformed(f"{self.alg} key must {'' if self.alg == HYBRID else 'not '}"
                            "carry an mldsa65 part")
        if not ed25519_rules.public_key_ok(self.ed25519):
            # §3.3.1: a small-order or non-canonical key lets some libraries accept forgeries.
            raise Malformed("ed25519 public key is not a canonical point of large order")
        object.__setattr__(self, "_ed", ed25519.Ed25519PublicKey.from_public_bytes(self.ed25519))
        if self.mldsa65 is not None:
            if len(self.mldsa65) != MLDSA65_PUBLIC_BYTES:
                raise Malformed(f"mldsa65 public key must be {MLDSA65_PUBLIC_BYTES} bytes")
            try:
                ml = mldsa.MLDSA65PublicKey.from_public_bytes(self.mldsa65)
            except ValueError as exc:
                raise Malformed(f"mldsa65 public key does not load: {exc}") from None
            object.__setattr__(self, "_ml", ml)

    def to_wire(self) -> dict[str, bytes]:
        out = {"ed25519": self.ed25519}
        if self.mldsa65 is not None:
            out["mldsa65"] = self.mldsa65
        return out

    @classmethod
    def from_wire(cls, obj: Any, *, alg: str, path: str) -> PublicKey:
        parts = _parts(obj, _PUBLIC_FIELDS[alg], "public key", path)
        if "alg" in obj:
            raise Malformed("public key has no 'alg' field; the genesis names it", path=path)
        return cls(alg=alg, ed25519=parts["ed25519"], mldsa65=parts.get("mldsa65"))

    def verify(self, signature: Signature, message: bytes) -> bool:
        """True only if every part the algorithm has verifies (§3.3)."""
        if signature.alg != self.alg or not ed25519_rules.signature_r_ok(signature.ed25519):
            return False
        try:
            self._ed.verify(signature.ed25519, message)
            if self._ml is not None:
                self._ml.verify(signature.mldsa65, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """A member's identity private key (both halves in the hybrid mode)."""

    __slots__ = ("alg", "_ed", "_ml", "public_key")

    def __init__(self, alg: str, ed: ed25519.Ed25519PrivateKey,
                 ml: mldsa.MLDSA65PrivateKey | None = None) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {alg!r}")
        if (alg == HYBRID) != (ml is not None):
            raise ValueError(f"{alg} needs {'an' if alg == HYBRID else 'no'} ML-DSA-65 key")
        self.alg = alg
        self._ed = ed
        self._ml = ml
        self.public_key = PublicKey(
            alg=alg,
            ed25519=ed.public_key().public_bytes_raw(),
            mldsa65=ml.public_key().public_bytes_raw() if ml is not None else None,
        )

    @classmethod
    def generate(cls, alg: str = ED25519) -> SigningKey:
        ml = mldsa.MLDSA65PrivateKey.generate() if alg == HYBRID else None
        return cls(alg, ed25519.Ed25519PrivateKey.generate(), ml)

    @classmethod
    def from_seeds(cls, alg: str, ed_seed: bytes, ml_seed: bytes | None = None) -> SigningKey:
        """Deterministic keys, for test vectors: 32-byte seeds (RFC 8032, FIPS 204 ξ)."""
        ed = ed25519.Ed25519PrivateKey.from_private_bytes(ed_seed)
        ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(ml_seed) if ml_seed is not None else None
        return cls(alg, ed, ml)

    @property
    def private_parts(self) -> tuple[ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey | None]:
        """The underlying keys, for serialisation by :mod:`pocnode.keyfile` only."""
        return self._ed, self._ml

    def sign(self, message: bytes) -> Signature:
        return Signature(
            alg=self.alg,
            ed25519=self._ed.sign(message),
            mldsa65=self._ml.sign(message) if self._ml is not None else None,
        )

    def __repr__(self) -> str:  # never print private material
        return f"SigningKey(alg={self.alg!r}, public={self.public_key.ed25519.hex()[:16]}…)"
