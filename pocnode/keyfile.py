"""Identity keys in files: PKCS#8, encrypted with a passphrase, mode 0600 (PROTOCOL.md §3.3).

The thin I/O shell around :class:`pocnode.core.keys.SigningKey`. A hybrid key is
one file holding two PEM blocks, the Ed25519 key first, then the ML-DSA-65 key,
each its own encrypted PKCS#8 document, so standard tools can read either.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from pocnode.core.errors import KeyFileError
from pocnode.core.keys import ED25519, HYBRID, SigningKey

# A key file holds at most two small PEM blocks; anything larger is not ours.
MAX_KEY_FILE_BYTES = 64 * 1024
MIN_PASSPHRASE_BYTES = 8
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----\r?\n.+?-----END ENCRYPTED PRIVATE KEY-----\r?\n?",
    re.DOTALL,
)


def save_signing_key(path: Path, key: SigningKey, passphrase: bytes) -> None:
    """Write ``key`` encrypted under ``passphrase``; refuses to overwrite a file."""
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise KeyFileError(f"passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes",
                           path=str(path))
    encryption = serialization.BestAvailableEncryption(passphrase)
    blocks = [part.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 encryption)
              for part in key.private_parts if part is not None]
    write_private_file(path, b"".join(blocks))


def save_private_parts(path: Path, parts: tuple[Any, ...], passphrase: bytes) -> None:
    """Any private keys (an HPKE key's X25519 and ML-KEM halves), one PKCS#8 block each."""
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise KeyFileError(f"passphrase must be at least {MIN_PASSPHRASE_BYTES} bytes",
                           path=str(path))
    encryption = serialization.BestAvailableEncryption(passphrase)
    write_private_file(path, b"".join(
        part.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           encryption) for part in parts))


def load_private_parts(path: Path, passphrase: bytes) -> list[Any]:
    data = read_private_file(path, MAX_KEY_FILE_BYTES)
    blocks = _PEM_BLOCK.findall(data)
    if not blocks or b"".join(blocks).strip() != data.strip():
        raise KeyFileError("expected encrypted PKCS#8 PEM blocks and nothing else",
                           path=str(path))
    try:
        return [serialization.load_pem_private_key(block, passphrase) for block in blocks]
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot decrypt the key ({exc})", path=str(path)) from None


def load_signing_key(path: Path, passphrase: bytes, *, alg: str | None = None) -> SigningKey:
    """Read a key written by :func:`save_signing_key`; errors name the file and the cause.

    The file must be exactly one or two PEM blocks: a hybrid key cut short must not load
    as the Ed25519 key it starts with. ``alg``, when given, must match.
    """
    data = read_private_file(path, MAX_KEY_FILE_BYTES)
    blocks = _PEM_BLOCK.findall(data)
    if len(blocks) not in (1, 2) or b"".join(blocks).strip() != data.strip():
        raise KeyFileError("expected exactly 1 or 2 encrypted PKCS#8 PEM blocks and nothing "
                           "else (a truncated or edited file?)", path=str(path))
    try:
        parts = [serialization.load_pem_private_key(block, passphrase) for block in blocks]
    except (ValueError, TypeError) as exc:
        # cryptography says "Bad decrypt. Incorrect password?" for a wrong passphrase.
        raise KeyFileError(f"cannot decrypt the key ({exc})", path=str(path)) from None
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
        return b"".join(chunks)
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
