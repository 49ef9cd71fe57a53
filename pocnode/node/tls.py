"""TLS for the peer port: self-signed certificates, pinned by their SHA-256 (§8.1).

No certificate authority: a node's certificate is bound to its member by the
``tls`` pin in the member's latest signed ``node.keys`` event, and peers check
the pin (aiohttp's Fingerprint) right after the handshake, before any request
byte is sent.

tls.key is a key file like the identity key (:mod:`pocnode.keyfile`: Argon2id, AES-GCM).
OpenSSL reads neither that format nor bytes in memory through Python's ``ssl``:
``load_cert_chain`` wants a path. So :func:`server_context` decrypts the key itself and
hands OpenSSL an anonymous in-memory file (memfd) by its /proc/self/fd path, in the clear:
that file never reaches a disk, goes away when closed, and is readable only by whoever can
already read this process's memory, where the key lives anyway; encrypting it under a
one-time password kept in the same memory would add a PBKDF2 run and no protection.
Where memfd is missing or forbidden (not Linux, a seccomp filter), the key goes to a
temporary file encrypted under a random one-time password, removed right after loading.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocnode.core.errors import KeyFileError
from pocnode.keyfile import KdfParams, load_private_parts, save_private_parts

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
# Certificates are pinned, not chained, so expiry protects nothing; renewal means a new
# node.keys event. Ten years keeps renewal a deliberate act.
VALIDITY_DAYS = 3650


def create_certificate(data_dir: Path, member: str, passphrase: bytes, now: datetime.datetime,
                       *, kdf: KdfParams | None = None) -> bytes:
    """Write tls.key (a key file, 0600) and tls.crt; return the pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pocnode {member}")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
            .sign(key, hashes.SHA256()))
    save_private_parts(data_dir / KEY_FILE, [key], passphrase, kdf=kdf)
    (data_dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pin_of(cert)


def pin_of(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def load_pin(data_dir: Path) -> bytes:
    return pin_of(x509.load_pem_x509_certificate((data_dir / CERT_FILE).read_bytes()))


def server_context(data_dir: Path, passphrase: bytes, *, kdf: KdfParams | None = None,
                   in_memory: bool = True) -> ssl.SSLContext:
    """The peer port's context. A tls.key in the old PKCS#8 format is migrated on the way
    (with ``kdf``); ``in_memory=False`` takes the fallback path (for its test)."""
    path = data_dir / KEY_FILE
    parts = load_private_parts(path, passphrase, kdf=kdf)
    if len(parts) != 1 or not isinstance(parts[0], ec.EllipticCurvePrivateKey):
        kinds = ", ".join(type(p).__name__ for p in parts)
        raise KeyFileError(f"expected one elliptic-curve TLS key, found {kinds}; delete "
                           f"tls.key and tls.crt to have new ones made", path=str(path))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with _key_for_openssl(parts[0], data_dir, in_memory) as (key_path, password):
        try:
            ctx.load_cert_chain(data_dir / CERT_FILE, key_path, password=password)
        except (ssl.SSLError, OSError) as exc:
            raise KeyFileError(f"OpenSSL refused tls.key with tls.crt ({exc}): do they belong "
                               f"together? Delete both to have new ones made",
                               path=str(path)) from None
    return ctx


@contextlib.contextmanager
def _key_for_openssl(key: ec.EllipticCurvePrivateKey, data_dir: Path, in_memory: bool
                     ) -> Iterator[tuple[str, bytes | None]]:
    """A path OpenSSL can read the key from, and its password; gone on exit."""
    fd = -1
    if in_memory:
        with contextlib.suppress(AttributeError, OSError):
            fd = os.memfd_create("pocnode-tls-key", os.MFD_CLOEXEC)
    if fd >= 0:
        try:
            _write_all(fd, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
            proc_path = f"/proc/self/fd/{fd}"
            if os.path.exists(proc_path):  # no /proc mounted: take the fallback below
                yield proc_path, None
                return
        finally:
            os.close(fd)
    # The fallback: on disk, but encrypted under a password that exists only here.
    password = secrets.token_bytes(32)
    fd, tmp = tempfile.mkstemp(prefix=".tls-key-", dir=data_dir)  # 0600, O_EXCL
    try:
        _write_all(fd, key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(password)))
        os.close(fd)
        fd = -1
        yield tmp, password
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def client_context() -> ssl.SSLContext:
    """No CA, no hostname: the pin is the check (aiohttp.Fingerprint), where one is known."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
