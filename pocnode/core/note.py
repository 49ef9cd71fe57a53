"""C2SP signed notes, tlog-checkpoint and tlog-cosignature, exactly (PROTOCOL.md §13.3).

A checkpoint must be checkable by tooling that knows nothing of pocnode (Go's
``golang.org/x/mod/sumdb/note``, transparency-dev witnesses, tlog-tiles clients), so
this module follows the C2SP texts rule for rule and adds nothing:

* signed-note: text ending in a newline, a blank line, then signature lines
  ``— <name> base64(key id || signature)``; UTF-8 without control characters other than
  newline; key names non-empty, without Unicode spaces or ``+``; key id = the first four
  bytes of SHA-256(name || 0x0A || signature type || public key); verifier keys
  ``<name>+<hex key id>+base64(type || public key)``.
* signature types used: 0x01 (Ed25519 over the note text), 0x04 (tlog-cosignature
  Ed25519: ``cosignature/v1\\ntime <t>\\n`` then the checkpoint body, signature =
  u64 t || Ed25519), 0x06 (tlog-cosignature ML-DSA-44: the ``subtree/v1\\n\\0``
  ``cosigned_message`` structure, signature = u64 t || ML-DSA-44).
* tlog-checkpoint: origin, tree size (decimal, no leading zero), base64 root hash;
  pocnode writes no extension lines and refuses notes that carry any.

Pure: text and bytes in, text and verdicts out.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pocnode.core import ed25519_rules
from pocnode.core.errors import Malformed

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
SIG_MLDSA44_SUBTREE = 0x06
ED25519_SIG_BYTES = 64
MLDSA44_PUBLIC_BYTES = 1312
MLDSA44_SIG_BYTES = 2420
TIMESTAMP_BYTES = 8
EM_DASH = "\u2014"
COSIGNATURE_HEADER = "cosignature/v1"
SUBTREE_LABEL = b"subtree/v1\n\x00"
# C2SP: verifiers MUST accept at least 16 signatures; a checkpoint of a federation of
# 256 members carries up to 255 cosignatures per algorithm, so we accept 1,024 lines, and
# bound the note (ML-DSA-44 lines are about 3.3 KB) before anything is parsed.
MAX_SIGNATURES = 1024
MAX_NOTE_BYTES = 4 * 1024 * 1024
# C2SP forbids spaces (any Unicode White_Space) and "+" in key names.
_SPACE = re.compile(r"[\s\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note, Signatures)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def check_key_name(name: str) -> None:
    if not name or _SPACE.search(name) or "+" in name or _CONTROL.search(name) \
            or "\n" in name:
        raise Malformed(f"key name {name!r:.80} must be non-empty, without spaces or '+'",
                        path="note")


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """One key a note may be signed with: a name, a signature type, the public key."""

    name: str
    sig_type: int
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    def text(self) -> str:
        """The vkey form: ``<name>+<hex id>+base64(type || public key)``."""
        return (f"{self.name}+{self.id.hex()}+"
                f"{base64.b64encode(bytes([self.sig_type]) + self.public).decode()}")

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise Malformed("a verifier key is <name>+<hex key id>+<base64>", path="vkey")
        name, hex_id, b64 = parts
        check_key_name(name)
        raw = _b64(b64, "vkey")
        if len(raw) < 2 or len(hex_id) != 8:
            raise Malformed("verifier key too short", path="vkey")
        key = cls(name, raw[0], raw[1:])
        if key.id.hex() != hex_id.lower():
            raise Malformed("verifier key id does not match its name and key", path="vkey")
        return key


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: bytes     # 4 bytes
    signature: bytes  # what follows the key id

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    text: str                          # includes its final newline
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_note(data: str | bytes) -> SignedNote:
    """signed-note, Format: text, the last blank line, signature lines."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise Malformed(f"note longer than {MAX_NOTE_BYTES} bytes", path="note")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("a note must be UTF-8", path="note") from None
    elif len(data) > MAX_NOTE_BYTES:
        raise Malformed(f"note longer than {MAX_NOTE_BYTES} characters", path="note")
    if _CONTROL.search(data):
        raise Malformed("a note must not contain control characters other than newline",
                        path="note")
    split = data.rfind("\n\n")
    if split < 0 or not data.endswith("\n"):
        raise Malformed("a note is text, a blank line, then signature lines", path="note")
    text, sig_block = data[:split + 1], data[split + 2:]
    lines = sig_block.split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise Malformed(f"a note carries 1..{MAX_SIGNATURES} signature lines", path="note")
    sigs = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise Malformed("a signature line starts with an em dash and a space",
                            path="note")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise Malformed("a signature line is '— <name> <base64>'", path="note")
        name, blob = fields
        check_key_name(name)
        raw = _b64(blob, "note")
        if len(raw) < 5:
            raise Malformed("a signature is a 4-byte key id and a signature", path="note")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
    return SignedNote(text, tuple(sigs))


def _b64(text: str, path: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("not standard base64", path=path) from None
    if base64.b64encode(raw).decode() != text:
        raise Malformed("base64 not in its canonical form", path=path)
    return raw


# -- checkpoints (tlog-checkpoint) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """The three lines; pocnode checkpoints have no extension lines (§13.3)."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise Malformed("a pocnode checkpoint is exactly origin, size and root, each ended "
                        "by a newline (no extension lines)", path="note")
    origin, size, root = lines[:3]
    if not origin or not _DECIMAL.fullmatch(size) or len(size) > 20:
        raise Malformed("checkpoint origin must be non-empty and size a decimal",
                        path="note")
    digest = _b64(root, "note")
    if len(digest) != 32:
        raise Malformed("checkpoint root must be 32 bytes", path="note")
    return Checkpoint(origin, int(size), digest)


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """tlog-cosignature, Ed25519 signed message."""
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


def subtree_message(cosigner: str, timestamp: int, origin: str, size: int,
                    root: bytes) -> bytes:
    """tlog-cosignature, ML-DSA-44 signed message (a checkpoint: start 0, end = size)."""
    name, log = cosigner.encode(), origin.encode()
    if not 1 <= len(name) <= 255 or not 1 <= len(log) <= 255:
        raise Malformed("cosigner name and origin must be 1..255 bytes", path="note")
    return (SUBTREE_LABEL + bytes([len(name)]) + name + struct.pack(">Q", timestamp)
            + bytes([len(log)]) + log + struct.pack(">QQ", 0, size) + root)


# -- signing and verifying ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteKeyPair:
    """A private note key: Ed25519, or ML-DSA-44 (the post-quantum cosignature type)."""

    ed25519: ed25519.Ed25519PrivateKey | None = None
    mldsa44: mldsa.MLDSA44PrivateKey | None = None

    def public(self) -> bytes:
        if self.ed25519 is not None:
            return self.ed25519.public_key().public_bytes_raw()
        assert self.mldsa44 is not None
        return self.mldsa44.public_key().public_bytes_raw()


def sign_checkpoint(key: ed25519.Ed25519PrivateKey, name: str, cp: Checkpoint
                    ) -> NoteSignature:
    """0x01: the log's own Ed25519 signature over the note text."""
    public = key.public_key().public_bytes_raw()
    return NoteSignature(name, key_id(name, SIG_ED25519, public), key.sign(cp.text().encode()))


def cosign_ed25519(key: ed25519.Ed25519PrivateKey, name: str, cp: Checkpoint,
                   timestamp: int) -> NoteSignature:
    """0x04: timestamped_signature = u64 timestamp || Ed25519(cosignature message)."""
    public = key.public_key().public_bytes_raw()
    sig = key.sign(cosignature_message(cp.text(), timestamp))
    return NoteSignature(name, key_id(name, SIG_COSIGNATURE_V1, public),
                         struct.pack(">Q", timestamp) + sig)


def cosign_mldsa44(key: mldsa.MLDSA44PrivateKey, name: str, cp: Checkpoint,
                   timestamp: int) -> NoteSignature:
    """0x06: timestamped_signature = u64 timestamp || ML-DSA-44(cosigned_message)."""
    public = key.public_key().public_bytes_raw()
    sig = key.sign(subtree_message(name, timestamp, cp.origin, cp.size, cp.root))
    return NoteSignature(name, key_id(name, SIG_MLDSA44_SUBTREE, public),
                         struct.pack(">Q", timestamp) + sig)


@functools.lru_cache(maxsize=4096)
def _ed_public(key: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(key)


def verify_signature(vkey: VerifierKey, cp: Checkpoint, sig: NoteSignature) -> bool:
    """Whether ``sig`` is ``vkey``'s valid signature of type ``vkey.sig_type`` on ``cp``.

    Ed25519 signatures obey PROTOCOL.md §3.3.1 as event signatures do (no small-order R;
    keys are checked where they enter, §13.4), so no two verifiers disagree on a note.
    """
    if sig.name != vkey.name or sig.key_id != vkey.id:
        return False
    try:
        if vkey.sig_type == SIG_ED25519:
            if len(sig.signature) != ED25519_SIG_BYTES or \
                    not ed25519_rules.signature_r_ok(sig.signature):
                return False
            _ed_public(vkey.public).verify(
                sig.signature, cp.text().encode())
            return True
        if vkey.sig_type == SIG_COSIGNATURE_V1:
            if len(sig.signature) != TIMESTAMP_BYTES + ED25519_SIG_BYTES:
                return False
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            raw = sig.signature[8:]
            if timestamp >= 2**63 or not ed25519_rules.signature_r_ok(raw):
                return False
            _ed_public(vkey.public).verify(
                raw, cosignature_message(cp.text(), timestamp))
            return True
        if vkey.sig_type == SIG_MLDSA44_SUBTREE:
            if len(sig.signature) != TIMESTAMP_BYTES + MLDSA44_SIG_BYTES:
                return False
            (timestamp,) = struct.unpack(">Q", sig.signature[:8])
            if timestamp >= 2**63:
                return False
            mldsa.MLDSA44PublicKey.from_public_bytes(vkey.public).verify(
                sig.signature[8:],
                subtree_message(vkey.name, timestamp, cp.origin, cp.size, cp.root))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def signature_timestamp(sig: NoteSignature) -> int | None:
    """The cosignature's time (POSIX seconds), for types 0x04 and 0x06."""
    if len(sig.signature) < TIMESTAMP_BYTES:
        return None
    return int(struct.unpack(">Q", sig.signature[:8])[0])
