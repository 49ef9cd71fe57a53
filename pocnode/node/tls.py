"""TLS for the peer port: self-signed certificates, pinned by their SHA-256 (§8.1).

No certificate authority: a node's certificate is bound to its member by the
``tls`` pin in the member's latest signed ``node.keys`` event, and peers check
the pin (aiohttp's Fingerprint) right after the handshake, before any request
byte is sent.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocnode.keyfile import write_private_file

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
# Certificates are pinned, not chained, so expiry protects nothing; renewal means a new
# node.keys event. Ten years keeps renewal a deliberate act.
VALIDITY_DAYS = 3650


def create_certificate(data_dir: Path, member: str, passphrase: bytes, now: datetime.datetime
                       ) -> bytes:
    """Write tls.key (encrypted, 0600) and tls.crt; return the pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pocnode {member}")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
            .sign(key, hashes.SHA256()))
    write_private_file(data_dir / KEY_FILE, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase)))
    (data_dir / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pin_of(cert)


def pin_of(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def load_pin(data_dir: Path) -> bytes:
    return pin_of(x509.load_pem_x509_certificate((data_dir / CERT_FILE).read_bytes()))


def server_context(data_dir: Path, passphrase: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(data_dir / CERT_FILE, data_dir / KEY_FILE, password=passphrase)
    return ctx


def client_context() -> ssl.SSLContext:
    """No CA, no hostname: the pin is the check (aiohttp.Fingerprint), where one is known."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
