"""A node's data directory: what `pocnode init` creates and the daemon reads.

    config.toml      settings (see config.py)
    identity.key     the member's identity key, a key file (pocnode.keyfile: Argon2id), 0600
    tls.key, tls.crt the peer port's TLS key (a key file, 0600) and self-signed certificate
    token            the operator API's bearer token, 0600
    passphrase       (local federations only) the keys' passphrase, 0600; production nodes
                     take it from POCNODE_PASSPHRASE_FILE (systemd credentials) instead
    genesis.bin      the signed genesis, once installed
    pocnode.db       events and derived tables (SQLite, WAL)
"""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pocnode.core.errors import KeyFileError, PocError
from pocnode.core.genesis import Genesis, parse_genesis
from pocnode.core.keys import ED25519, SigningKey
from pocnode.keyfile import (
    load_signing_key,
    read_private_file,
    save_signing_key,
    write_private_file,
)
from pocnode.node import tls
from pocnode.node.config import CONFIG_FILE, render_config

IDENTITY_KEY = "identity.key"
TOKEN_FILE = "token"  # noqa: S105 - a file name
PASSPHRASE_FILE = "passphrase"  # noqa: S105 - a file name
GENESIS_FILE = "genesis.bin"
PASSPHRASE_ENV = "POCNODE_PASSPHRASE_FILE"  # noqa: S105 - a variable name


class DataDirError(PocError):
    """The data directory is missing something or holds something unsafe."""

    code = "data_dir"


@dataclass(frozen=True, slots=True)
class InitResult:
    data_dir: Path
    member: str
    public_key: object
    tls_pin: bytes


def init_data_dir(data_dir: Path, *, member: str, alg: str = ED25519,
                  passphrase: bytes | None = None, peer_host: str = "127.0.0.1",
                  peer_port: int = 7443, operator_port: int = 7444, advertise: str = "",
                  profile: str = "wan", bootstrap: tuple[str, ...] = ()) -> InitResult:
    """Create keys, certificate, token and config. Refuses a directory that has a config.

    With ``passphrase`` None a random one is generated and kept in ``passphrase`` (0600):
    fine for local federations, not for production, where the operator supplies it.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    if (data_dir / CONFIG_FILE).exists():
        raise DataDirError("already initialised (config.toml exists)", path=str(data_dir))
    if passphrase is None:
        passphrase = secrets.token_urlsafe(32).encode()
        write_private_file(data_dir / PASSPHRASE_FILE, passphrase + b"\n")
    key = SigningKey.generate(alg)
    save_signing_key(data_dir / IDENTITY_KEY, key, passphrase)
    pin = tls.create_certificate(data_dir, member, passphrase, datetime.datetime.now(datetime.UTC))
    write_private_file(data_dir / TOKEN_FILE, secrets.token_urlsafe(32).encode() + b"\n")
    advertise = advertise or f"https://{peer_host}:{peer_port}"
    (data_dir / CONFIG_FILE).write_text(render_config(
        member=member, peer_host=peer_host, peer_port=peer_port, operator_port=operator_port,
        advertise=advertise, profile=profile, bootstrap=bootstrap))
    return InitResult(data_dir=data_dir, member=member, public_key=key.public_key, tls_pin=pin)


def read_passphrase(data_dir: Path, configured: str) -> bytes:
    path = Path(os.environ.get(PASSPHRASE_ENV) or data_dir / configured)
    try:
        return read_private_file(path, 4096).rstrip(b"\r\n")
    except KeyFileError as exc:
        raise DataDirError(f"identity key passphrase: {exc.message}", path=exc.path) from None


def load_identity(data_dir: Path, passphrase: bytes) -> SigningKey:
    return load_signing_key(data_dir / IDENTITY_KEY, passphrase)



def read_token(data_dir: Path) -> str:
    try:
        return read_private_file(data_dir / TOKEN_FILE, 1024).decode().strip()
    except KeyFileError as exc:
        raise DataDirError(f"operator token: {exc.message}", path=exc.path) from None


def install_genesis(data_dir: Path, signed: bytes) -> Genesis:
    """Verify and install the signed genesis; refuses to replace a different one."""
    genesis = parse_genesis(signed)
    target = data_dir / GENESIS_FILE
    if target.exists():
        if target.read_bytes() == signed:
            return genesis
        raise DataDirError("a different genesis is already installed", path=str(target))
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(signed)
    os.replace(tmp, target)
    return genesis


def load_genesis(data_dir: Path) -> Genesis:
    path = data_dir / GENESIS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataDirError("no genesis installed: run `pocnode genesis install`",
                           path=str(path)) from None
    return parse_genesis(data)
