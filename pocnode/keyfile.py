"""Private keys in files: encrypted under a memory-hard KDF, mode 0600.

Why a format of our own: ``cryptography`` writes passphrase-encrypted PKCS#8 only as PBES2
with PBKDF2 at 2,048 iterations, which a thief of the file can try passphrases against by
the million per second on one GPU, and it cannot write PBES2 with scrypt or Argon2. So a key
file is one armoured block::

    -----BEGIN POCNODE ENCRYPTED PRIVATE KEY-----
    base64 (64 per line) of the canonical msgpack (PROTOCOL.md §2) {"ct": bin, "header": bin}
    -----END POCNODE ENCRYPTED PRIVATE KEY-----

``header`` is the canonical msgpack of::

    {"v": 1,
     "kdf": {"alg": "argon2id", "m": memory KiB, "t": passes, "p": lanes}    (RFC 9106)
         or {"alg": "scrypt", "ln": log2 N, "r": block size, "p": parallelism} (RFC 7914),
     "salt": 16 random bytes, "aead": "aes-256-gcm", "nonce": 12 random bytes,
     "parts": how many private keys}

and ``ct`` is AES-256-GCM, under the 32-byte key the KDF derives from the passphrase and
salt, of the canonical array of each private key's unencrypted PKCS#8 DER. The header's
exact bytes are the associated data, so nobody can lower the work factor, swap the salt or
drop a part without decryption failing. One derivation opens all parts. "PRIVATE KEY" stays
in the armour line so that secret scanners still flag the file if it is ever committed.

Every parameter a file states is checked against a maximum before any derivation: a
hostile or corrupt file gets a :class:`KeyFileError`, not 64 GiB of allocation or an hour
of CPU. Files in the earlier format (encrypted PKCS#8 PEM blocks, PBKDF2) still load, and
are rewritten in this format on their first successful use (atomically, mode kept).
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pocnode.core import encoding
from pocnode.core.errors import EncodingError, KeyFileError
from pocnode.core.keys import ED25519, HYBRID, SigningKey

try:  # Argon2id arrived in cryptography 44; scrypt is the fallback where it is missing.
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
except ImportError:  # pragma: no cover - the pinned cryptography has it
    Argon2id = None  # type: ignore[assignment,misc]

log = logging.getLogger("pocnode.keyfile")

# A key file holds at most a few small keys (an ML-DSA-65 key in PKCS#8 is under 4 KiB,
# or 54 bytes as a seed); anything larger is not ours.
MAX_KEY_FILE_BYTES = 64 * 1024
MIN_PASSPHRASE_BYTES = 8
FORMAT_VERSION = 1
# The most private keys one file holds: a hybrid identity key and a hybrid HPKE key have 2.
MAX_PARTS = 4
SALT_BYTES = 16
NONCE_BYTES = 12
AEAD_NAME = "aes-256-gcm"
_KEY_BYTES = 32
_BEGIN = b"-----BEGIN POCNODE ENCRYPTED PRIVATE KEY-----"
_END = b"-----END POCNODE ENCRYPTED PRIVATE KEY-----"
_B64_LINE = 64
_HEADER_KEYS = frozenset({"v", "kdf", "salt", "aead", "nonce", "parts"})

# The earlier format: one encrypted PKCS#8 PEM block per key.
_LEGACY_BEGIN = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----\r?\n.+?-----END ENCRYPTED PRIVATE KEY-----\r?\n?",
    re.DOTALL,
)

_WHAT_TO_DO = "restore the file from a backup, or create the key anew"


# -- KDF parameters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Argon2idParams:
    """Argon2id (RFC 9106): ``memory_kib`` of memory, passed over ``iterations`` times,
    in ``lanes`` independent lanes."""

    memory_kib: int
    iterations: int
    lanes: int

    name = "argon2id"

    def to_wire(self) -> dict[str, Any]:
        return {"alg": self.name, "m": self.memory_kib, "t": self.iterations, "p": self.lanes}

    @property
    def memory_bytes(self) -> int:
        return self.memory_kib * 1024

    @property
    def work(self) -> int:
        """Memory times passes, in KiB: what a derivation's time is proportional to."""
        return self.memory_kib * self.iterations


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt (RFC 7914): N = 2**``log2_n``, block size ``r``, parallelism ``p``."""

    log2_n: int
    r: int
    p: int

    name = "scrypt"

    def to_wire(self) -> dict[str, Any]:
        return {"alg": self.name, "ln": self.log2_n, "r": self.r, "p": self.p}

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * (1 << self.log2_n)

    @property
    def work(self) -> int:
        return (1 << self.log2_n) * self.r * self.p


KdfParams = Argon2idParams | ScryptParams

# The work factor, chosen by measurement on the development machine (2 cores, shared with
# other jobs; cryptography 50.0.2, OpenSSL's Argon2id), median of 7 derivations each:
#   argon2id m=64 MiB t=4 p=4   0.248 s   (peak RSS +65 MiB)   <- chosen
#   argon2id m=64 MiB t=4 p=1   0.306 s   (lanes run in parallel threads)
#   argon2id m=128 MiB t=2 p=4  0.295 s   argon2id m=256 MiB t=1 p=4  0.450 s
#   scrypt N=2^16 r=8 p=1       0.276 s   (64 MiB)                <- the fallback
# 64 MiB and 4 lanes are RFC 9106's second recommended option (§4); the passes were raised
# until one derivation took about 0.25 s. A node derives three times when it starts
# (identity, HPKE and TLS keys), one at a time: 64 MiB each, freed after, well within the
# systemd unit's MemoryMax=512M. tests/bench/bench_keyfile.py measures it again.
DEFAULT_ARGON2ID = Argon2idParams(memory_kib=64 * 1024, iterations=4, lanes=4)
DEFAULT_SCRYPT = ScryptParams(log2_n=16, r=8, p=1)

# What a file may ask for. Memory: four times the default, leaving room to raise the
# default later, and half the systemd unit's MemoryMax. Work (memory x passes): eight times
# the default's, about 2 s here. Lanes and scrypt's p: more than any machine we run on has
# cores. A file above any of these is refused before deriving anything.
MAX_KDF_MEMORY_BYTES = 256 * 1024 * 1024
MAX_ARGON2ID_WORK = 8 * DEFAULT_ARGON2ID.work
MAX_ARGON2ID_ITERATIONS = 64
MAX_ARGON2ID_LANES = 16
MAX_SCRYPT_LOG2_N = 20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
MAX_SCRYPT_WORK = 8 * DEFAULT_SCRYPT.work


@functools.cache
def argon2id_available() -> bool:
    """Whether this cryptography build derives Argon2id (it needs OpenSSL 3.2 or later)."""
    if Argon2id is None:
        return False
    try:
        Argon2id(salt=bytes(SALT_BYTES), length=_KEY_BYTES, iterations=1, lanes=1,
                 memory_cost=8).derive(b"probe")
    except UnsupportedAlgorithm:
        return False
    return True


def default_kdf() -> KdfParams:
    return DEFAULT_ARGON2ID if argon2id_available() else DEFAULT_SCRYPT


def _kdf_problem(params: KdfParams) -> str | None:
    """Why ``params`` may not be used, or None. Bounds first: nothing is derived before."""
    def above(name: str, value: int, limit: int, unit: str = "") -> str:
        return (f"kdf parameter {name} = {value:,}{unit} is above the maximum {limit:,}{unit} "
                f"this pocnode accepts (a damaged or hostile file?)")

    def below(name: str, value: int, limit: int) -> str:
        return f"kdf parameter {name} = {value:,} is below the minimum {limit:,}"

    if params.memory_bytes > MAX_KDF_MEMORY_BYTES:
        return above("memory", params.memory_bytes // 1024, MAX_KDF_MEMORY_BYTES // 1024,
                     " KiB")
    if isinstance(params, Argon2idParams):
        if params.lanes > MAX_ARGON2ID_LANES:
            return above("p (lanes)", params.lanes, MAX_ARGON2ID_LANES)
        if params.iterations > MAX_ARGON2ID_ITERATIONS:
            return above("t (passes)", params.iterations, MAX_ARGON2ID_ITERATIONS)
        if params.work > MAX_ARGON2ID_WORK:
            return above("m x t (memory x passes)", params.work, MAX_ARGON2ID_WORK, " KiB")
        if params.lanes < 1:
            return below("p (lanes)", params.lanes, 1)
        if params.iterations < 1:
            return below("t (passes)", params.iterations, 1)
        if params.memory_kib < 8 * params.lanes:  # RFC 9106 §3.1: m >= 8p
            return below("m (memory KiB)", params.memory_kib, 8 * params.lanes)
        return None
    if params.log2_n > MAX_SCRYPT_LOG2_N:
        return above("ln (log2 N)", params.log2_n, MAX_SCRYPT_LOG2_N)
    if params.r > MAX_SCRYPT_R:
        return above("r", params.r, MAX_SCRYPT_R)
    if params.p > MAX_SCRYPT_P:
        return above("p", params.p, MAX_SCRYPT_P)
    if params.work > MAX_SCRYPT_WORK:
        return above("N x r x p", params.work, MAX_SCRYPT_WORK)
    for name, value in (("ln (log2 N)", params.log2_n), ("r", params.r), ("p", params.p)):
        if value < 1:
            return below(name, value, 1)
    return None


def _derive(params: KdfParams, passphrase: bytes, salt: bytes, where: str) -> bytes:
    """The one expensive step: called once per save and once per load."""
    try:
        if isinstance(params, Argon2idParams):
            if not argon2id_available():
                raise KeyFileError(
                    "the file is encrypted with argon2id, which this cryptography build "
                    "cannot derive (it needs OpenSSL 3.2 or later); run pocnode with the "
                    "cryptography wheel from the package index", path=where)
            kdf: Any = Argon2id(salt=salt, length=_KEY_BYTES, iterations=params.iterations,
                                lanes=params.lanes, memory_cost=params.memory_kib)
        else:
            kdf = Scrypt(salt=salt, length=_KEY_BYTES, n=1 << params.log2_n, r=params.r,
                         p=params.p)
        return kdf.derive(passphrase)
    except (ValueError, MemoryError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"cannot derive the key with {params.name}: {exc}",
                           path=where) from None


# -- the format, in memory -------------------------------------------------------------------


def seal_parts(parts: Sequence[Any], passphrase: bytes, kdf: KdfParams | None = None, *,
               where: str = "<memory>") -> bytes:
    """The bytes of a key file holding ``parts``; no I/O."""
    params = kdf or default_kdf()
    problem = _kdf_problem(params)
    if problem:
        raise KeyFileError(problem, path=where)
    if not 1 <= len(parts) <= MAX_PARTS:
        raise KeyFileError(f"a key file holds 1 to {MAX_PARTS} keys, not {len(parts)}",
                           path=where)
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    header = encoding.encode({"v": FORMAT_VERSION, "kdf": params.to_wire(), "salt": salt,
                              "aead": AEAD_NAME, "nonce": nonce, "parts": len(parts)})
    plaintext = encoding.encode([
        part.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()) for part in parts])
    key = _derive(params, passphrase, salt, where)
    ct = AESGCM(key).encrypt(nonce, plaintext, header)
    body = base64.b64encode(encoding.encode({"ct": ct, "header": header}))
    lines = [body[i:i + _B64_LINE] for i in range(0, len(body), _B64_LINE)]
    return b"\n".join([_BEGIN, *lines, _END]) + b"\n"


@dataclass(frozen=True, slots=True)
class _Header:
    kdf: KdfParams
    salt: bytes
    nonce: bytes
    parts: int


def parse_header(data: bytes, where: str) -> tuple[_Header, bytes, bytes]:
    """Armour, structure and bounds of a key file: (header, its exact bytes, ciphertext).
    Everything is checked here, before any derivation."""
    outer = _map(_decode(_unarmour(data, where), where), {"ct", "header"}, "the file", where)
    raw_header, ct = outer["header"], outer["ct"]
    if not isinstance(raw_header, bytes) or not isinstance(ct, bytes):
        raise KeyFileError(f"header and ct must be byte strings; {_WHAT_TO_DO}", path=where)
    fields = _decode(raw_header, where)
    # The version first: a newer format may have other fields, and deserves a clear word.
    version = fields.get("v") if isinstance(fields, dict) else None
    if type(version) is not int or version != FORMAT_VERSION:
        raise KeyFileError(f"key file format version {version!r}; this pocnode reads "
                           f"version {FORMAT_VERSION} (written by a newer pocnode? upgrade "
                           f"this one)", path=where)
    fields = _map(fields, _HEADER_KEYS, "the header", where)
    if fields["aead"] != AEAD_NAME:
        raise KeyFileError(f"unsupported cipher {fields['aead']!r}; this pocnode reads "
                           f"{AEAD_NAME} only", path=where)
    salt, nonce, parts = fields["salt"], fields["nonce"], fields["parts"]
    if not (isinstance(salt, bytes) and len(salt) == SALT_BYTES
            and isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES):
        raise KeyFileError(f"salt must be {SALT_BYTES} bytes and nonce {NONCE_BYTES} bytes; "
                           f"{_WHAT_TO_DO}", path=where)
    if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= MAX_PARTS:
        raise KeyFileError(f"parts must be 1 to {MAX_PARTS}, not {parts!r}; {_WHAT_TO_DO}",
                           path=where)
    kdf = _kdf_from_wire(fields["kdf"], where)
    problem = _kdf_problem(kdf)
    if problem:
        raise KeyFileError(f"{problem}; {_WHAT_TO_DO}", path=where)
    return _Header(kdf, salt, nonce, parts), raw_header, ct


def open_parts(data: bytes, passphrase: bytes, *, where: str = "<memory>") -> list[Any]:
    """The private keys in key-file bytes ``data``; one derivation whatever their number."""
    header, raw_header, ct = parse_header(data, where)
    key = _derive(header.kdf, passphrase, header.salt, where)
    try:
        plaintext = AESGCM(key).decrypt(header.nonce, ct, raw_header)
    except InvalidTag:
        raise KeyFileError(
            "cannot decrypt: wrong passphrase, or the file was altered. Check the passphrase "
            "file given to pocnode (POCNODE_PASSPHRASE_FILE or the configured passphrase "
            "file) is the one this key was saved with", path=where) from None
    ders = _decode(plaintext, where)
    if (not isinstance(ders, list) or len(ders) != header.parts
            or not all(isinstance(d, bytes) for d in ders)):
        raise KeyFileError(f"expected {header.parts} PKCS#8 keys inside; {_WHAT_TO_DO}",
                           path=where)
    try:
        return [serialization.load_der_private_key(der, password=None) for der in ders]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"a key inside does not load ({exc}); {_WHAT_TO_DO}",
                           path=where) from None


def _unarmour(data: bytes, where: str) -> bytes:
    lines = data.strip().splitlines()
    if not lines or lines[0].strip() != _BEGIN:
        raise KeyFileError(f"not a key file: expected {_BEGIN.decode()!r} (or, from an older "
                           f"pocnode, encrypted PKCS#8 PEM blocks)", path=where)
    if len(lines) < 3 or lines[-1].strip() != _END:
        raise KeyFileError(f"truncated or edited: expected one armoured block, "
                           f"{_BEGIN.decode()!r} to {_END.decode()!r}, and nothing else; "
                           f"{_WHAT_TO_DO}", path=where)
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"the armoured block is not valid base64; {_WHAT_TO_DO}",
                           path=where) from None


def _decode(data: bytes, where: str) -> Any:
    try:
        return encoding.decode(data, max_size=MAX_KEY_FILE_BYTES)
    except EncodingError as exc:
        raise KeyFileError(f"damaged ({exc}); {_WHAT_TO_DO}", path=where) from None


def _map(value: Any, keys: frozenset[str] | set[str], what: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(keys):
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise KeyFileError(f"{what} must be a map of exactly {sorted(keys)}, found {found}; "
                           f"{_WHAT_TO_DO}", path=where)
    return value


def _kdf_from_wire(value: Any, where: str) -> KdfParams:
    alg = value.get("alg") if isinstance(value, dict) else None
    if alg == Argon2idParams.name:
        v = _map(value, {"alg", "m", "t", "p"}, "kdf", where)
        params: KdfParams = Argon2idParams(memory_kib=v["m"], iterations=v["t"], lanes=v["p"])
        ints = (v["m"], v["t"], v["p"])
    elif alg == ScryptParams.name:
        v = _map(value, {"alg", "ln", "r", "p"}, "kdf", where)
        params = ScryptParams(log2_n=v["ln"], r=v["r"], p=v["p"])
        ints = (v["ln"], v["r"], v["p"])
    else:
        raise KeyFileError(f"unsupported kdf {alg!r}; this pocnode reads argon2id and scrypt "
                           f"(written by a newer pocnode? upgrade this one)", path=where)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise KeyFileError(f"kdf parameters must be integers; {_WHAT_TO_DO}", path=where)
    return params


def _open_legacy(data: bytes, passphrase: bytes, where: str) -> list[Any]:
    """The earlier format: encrypted PKCS#8 PEM blocks (PBKDF2), one per key."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks or b"".join(blocks).strip() != data.strip():
        raise KeyFileError("truncated or edited: expected encrypted PKCS#8 PEM blocks and "
                           f"nothing else; {_WHAT_TO_DO}", path=where)
    if len(blocks) > MAX_PARTS:
        raise KeyFileError(f"{len(blocks)} PEM blocks, more than {MAX_PARTS}", path=where)
    try:
        return [serialization.load_pem_private_key(block, passphrase) for block in blocks]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # cryptography says "Bad decrypt. Incorrect password?" for a wrong passphrase.
        raise KeyFileError(f"cannot decrypt the key ({exc}): wrong passphrase, or a damaged "
                           "file. Check the passphrase file given to pocnode", path=where
                           ) from None


# -- files -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedKeyFile:
    """What a load found: the keys, and whether the file was just rewritten from the old
    PKCS#8/PBKDF2 format (so the caller can say so)."""

    parts: tuple[Any, ...]
    migrated: bool


def save_private_parts(path: Path, parts: Sequence[Any], passphrase: bytes, *,
                       kdf: KdfParams | None = None) -> None:
    """Any private keys (an HPKE key's X25519 and ML-KEM halves, a TLS key), one file;
    refuses to overwrite one. ``kdf`` defaults to :func:`default_kdf`."""
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise KeyFileError(f"passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes",
                           path=str(path))
    write_private_file(path, seal_parts(parts, passphrase, kdf, where=str(path)))


def save_signing_key(path: Path, key: SigningKey, passphrase: bytes, *,
                     kdf: KdfParams | None = None) -> None:
    """Write ``key`` encrypted under ``passphrase``; refuses to overwrite a file."""
    save_private_parts(path, [p for p in key.private_parts if p is not None], passphrase,
                       kdf=kdf)


def load_key_file(path: Path, passphrase: bytes, *, kdf: KdfParams | None = None
                  ) -> LoadedKeyFile:
    """Read any key file; a file in the old format is rewritten in the new one (with
    ``kdf``, default :func:`default_kdf`) once it has decrypted. A wrong passphrase or
    any other error leaves the file untouched."""
    data, info = _read_private(path, MAX_KEY_FILE_BYTES)
    where = str(path)
    if not data.lstrip().startswith(_LEGACY_BEGIN):
        return LoadedKeyFile(tuple(open_parts(data, passphrase, where=where)), False)
    parts = _open_legacy(data, passphrase, where)
    return LoadedKeyFile(tuple(parts), _migrate(path, info, parts, passphrase, kdf))


def load_private_parts(path: Path, passphrase: bytes, *, kdf: KdfParams | None = None
                       ) -> list[Any]:
    return list(load_key_file(path, passphrase, kdf=kdf).parts)


def load_signing_key(path: Path, passphrase: bytes, *, alg: str | None = None,
                     kdf: KdfParams | None = None) -> SigningKey:
    """Read a key written by :func:`save_signing_key`; errors name the file and the cause.

    The file must hold one or two keys: a hybrid key cut short must not load as the
    Ed25519 key it starts with. ``alg``, when given, must match.
    """
    parts = load_key_file(path, passphrase, kdf=kdf).parts
    if len(parts) == 1 and isinstance(parts[0], ed25519.Ed25519PrivateKey):
        key = SigningKey(ED25519, parts[0])
    elif (len(parts) == 2 and isinstance(parts[0], ed25519.Ed25519PrivateKey)
            and isinstance(parts[1], mldsa.MLDSA65PrivateKey)):
        key = SigningKey(HYBRID, parts[0], parts[1])
    else:
        kinds = ", ".join(type(p).__name__ for p in parts)
        raise KeyFileError(f"expected an Ed25519 key, optionally followed by an ML-DSA-65 key; "
                           f"found {kinds}", path=str(path))
    if alg is not None and key.alg != alg:
        raise KeyFileError(f"holds an {key.alg} key, {alg} expected", path=str(path))
    return key


def _migrate(path: Path, info: os.stat_result, parts: Sequence[Any], passphrase: bytes,
             kdf: KdfParams | None) -> bool:
    """Rewrite an old-format file in place: new file beside it, fsync, rename over it, fsync
    the directory. Not done (and said in the log) if the file changed since it was read,
    e.g. a key rotation swapped it: the rename must never put an older key back. A failure
    leaves the old file, which still loads; the next load tries again."""
    params = kdf or default_kdf()
    try:
        data = seal_parts(parts, passphrase, params, where=str(path))
        _replace_private_file(path, data, info)
    except KeyFileError as exc:
        log.warning("key file left in the old PKCS#8 format; will retry at the next load",
                    extra={"fields": {"path": str(path), "reason": exc.message}})
        return False
    log.info("key file migrated from PKCS#8/PBKDF2 to the memory-hard format",
             extra={"fields": {"path": str(path), "kdf": params.name}})
    return True


def _replace_private_file(path: Path, data: bytes, expected: os.stat_result) -> None:
    # A unique name: two processes migrating at once each write a whole file of their own.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    write_private_file(tmp, data)
    try:
        os.chmod(tmp, stat.S_IMODE(expected.st_mode))
        now = os.stat(path, follow_symlinks=False)
        if ((now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
                != (expected.st_dev, expected.st_ino, expected.st_size, expected.st_mtime_ns)):
            raise KeyFileError("replaced while it was being migrated (a key rotation, or "
                               "another pocnode process migrating it); left as it is",
                               path=str(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyFileError(f"cannot replace: {_reason(exc)}", path=str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte on, write all of it, fsync it and
    its directory; never overwrite. A failed write leaves no file behind."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError("file exists; refusing to overwrite a secret", path=str(path)) from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot create: {_reason(exc)}", path=str(path)) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write: {_reason(exc)}", path=str(path)) from None
    os.close(fd)
    _fsync_dir(path.parent)


def read_private_file(path: Path, limit: int) -> bytes:
    """Read a secret, refusing one that others can read, that someone else owns, or that is
    not a plain file (a FIFO would block the open; O_NONBLOCK makes it fail instead)."""
    return _read_private(path, limit)[0]


def _read_private(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot open: {_reason(exc)}", path=str(path)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError("not a regular file", path=str(path))
        if info.st_uid != os.geteuid():
            raise KeyFileError(f"owned by uid {info.st_uid}, not by us ({os.geteuid()})",
                               path=str(path))
        if info.st_mode & 0o077:
            raise KeyFileError(f"mode {stat.S_IMODE(info.st_mode):04o} lets others read it; "
                               f"chmod 600 it", path=str(path))
        if info.st_size > limit:
            raise KeyFileError(f"{info.st_size} bytes, more than {limit}", path=str(path))
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks), info
    except OSError as exc:
        raise KeyFileError(f"cannot read: {_reason(exc)}", path=str(path)) from None
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
