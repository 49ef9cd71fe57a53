"""A node's data directory: what `pocnode init` creates and the daemon reads.

    config.toml      settings (see config.py)
    identity.key     the member's identity key, a key file (pocnode.keyfile: Argon2id), 0600
    tls.key, tls.crt the peer port's TLS key (a key file, 0600) and self-signed certificate
    token            the operator API's bearer token, 0600
    passphrase       (trials and local federations only) the keys' passphrase, 0600, when
                     none was given at `init`; production keeps it outside (see below)
    genesis.bin      the signed genesis, once installed
    pocnode.db       events and derived tables (SQLite, WAL)
    lock             held (flock) by the process using the directory: `pocnode run`, or an
                     offline maintenance command; it holds that process's pid

The passphrase that encrypts the keys is found the same way by every command (option,
environment, config, default: see :func:`passphrase_source`), and every error about it
names the file tried and the ways to give another.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from pocnode.core.errors import KeyFileError, PocError
from pocnode.core.genesis import Genesis, parse_draft, parse_genesis
from pocnode.core.keys import ED25519, PublicKey, SigningKey
from pocnode.keyfile import (
    MIN_PASSPHRASE_BYTES,
    load_signing_key,
    read_private_file,
    save_signing_key,
    write_private_file,
)
from pocnode.node import tls
from pocnode.node.config import CONFIG_FILE, render_config

IDENTITY_KEY = "identity.key"
# A rotation's new key before it becomes identity.key (pocnode/node/identity.py).
IDENTITY_STAGED = IDENTITY_KEY + ".next"
TOKEN_FILE = "token"  # noqa: S105 - a file name
PASSPHRASE_FILE = "passphrase"  # noqa: S105 - a file name
GENESIS_FILE = "genesis.bin"
LOCK_FILE = "lock"
PASSPHRASE_ENV = "POCNODE_PASSPHRASE_FILE"  # noqa: S105 - a variable name
PASSPHRASE_OPTION = "--passphrase-file"  # noqa: S105 - an option name
# A passphrase is a line of text; a larger file is the wrong file.
MAX_PASSPHRASE_BYTES = 4096
# What the lock file holds: a pid and a command name, a line of JSON.
MAX_LOCK_BYTES = 512


class DataDirError(PocError):
    """The data directory is missing something or holds something unsafe."""

    code = "data_dir"


class DataDirLocked(DataDirError):
    """Another process (a running node, or offline maintenance) holds the data directory."""

    def __init__(self, message: str, *, pid: int | None, holder: str) -> None:
        super().__init__(message)
        self.pid = pid
        self.holder = holder


@dataclass(frozen=True, slots=True)
class InitResult:
    data_dir: Path
    member: str
    public_key: PublicKey
    tls_pin: bytes
    passphrase_file: Path
    generated_passphrase: bool


# -- the passphrase ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassphraseSource:
    """Which file holds the passphrase, and how we were told (for error messages)."""

    path: Path
    how: str


def passphrase_source(data_dir: Path, configured: str | None,
                      option: Path | None = None) -> PassphraseSource:
    """The one rule every command follows: ``--passphrase-file`` (option), else
    ``POCNODE_PASSPHRASE_FILE``, else ``[node] passphrase_file`` in config.toml (relative to
    the data directory unless absolute), else ``<data-dir>/passphrase``."""
    if option is not None:
        return PassphraseSource(Path(option), PASSPHRASE_OPTION)
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return PassphraseSource(Path(env), f"the environment variable {PASSPHRASE_ENV}")
    if configured and configured != PASSPHRASE_FILE:
        return PassphraseSource(data_dir / configured,
                                f"[node] passphrase_file in {data_dir / CONFIG_FILE}")
    return PassphraseSource(data_dir / PASSPHRASE_FILE, "the default, inside the data directory")


def ways_to_give(data_dir: Path | None) -> str:
    config = f"[node] passphrase_file in {data_dir / CONFIG_FILE}" if data_dir else \
        "[node] passphrase_file in config.toml"
    return f"give the file with {PASSPHRASE_OPTION} FILE, {PASSPHRASE_ENV}=FILE or {config}"


def read_passphrase_from(source: PassphraseSource, data_dir: Path | None) -> bytes:
    """Read and check one passphrase file; errors name it, how it was chosen, and the ways
    to give another."""
    try:
        raw = read_private_file(source.path, MAX_PASSPHRASE_BYTES)
    except KeyFileError as exc:
        raise DataDirError(f"cannot use the passphrase file {source.path} (from {source.how}): "
                           f"{exc.message}; {ways_to_give(data_dir)}") from None
    passphrase = raw.rstrip(b"\r\n")
    if not passphrase.strip():
        raise DataDirError(f"the passphrase file {source.path} (from {source.how}) is empty; "
                           f"write the passphrase into it, or {ways_to_give(data_dir)}")
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise DataDirError(f"the passphrase in {source.path} (from {source.how}) is "
                           f"{len(passphrase)} bytes, shorter than {MIN_PASSPHRASE_BYTES}; "
                           f"use a longer one (head -c 32 /dev/urandom | base64)")
    return passphrase


def read_passphrase(data_dir: Path, configured: str, option: Path | None = None) -> bytes:
    """The keys' passphrase, found by :func:`passphrase_source`. The daemon calls this with
    its config's ``passphrase_file``; `pocnode run` puts its ``--passphrase-file`` into
    ``POCNODE_PASSPHRASE_FILE`` first, so the daemon reads the file the CLI checked."""
    return read_passphrase_from(passphrase_source(data_dir, configured, option), data_dir)


def unlock_identity(data_dir: Path, configured: str,
                    option: Path | None = None) -> tuple[SigningKey, bytes, PassphraseSource]:
    """The identity key, decrypted; a wrong passphrase is named by the file it came from."""
    source = passphrase_source(data_dir, configured, option)
    passphrase = read_passphrase_from(source, data_dir)
    path = data_dir / IDENTITY_KEY
    if not path.exists() and (data_dir / IDENTITY_STAGED).exists():
        # A rotation interrupted between its two renames: the daemon completes it at start
        # (node/identity.py recover); meanwhile the staged key proves the passphrase.
        path = data_dir / IDENTITY_STAGED
    try:
        key = load_signing_key(path, passphrase)
    except KeyFileError as exc:
        if "cannot decrypt" not in exc.message:
            raise DataDirError(f"{exc.path or data_dir / IDENTITY_KEY}: {exc.message}") from None
        raise DataDirError(f"the passphrase in {source.path} (from {source.how}) does not "
                           f"decrypt {path}: is it this node's passphrase "
                           f"file? {ways_to_give(data_dir)}") from None
    return key, passphrase, source


def init_data_dir(data_dir: Path, *, member: str, alg: str = ED25519,
                  passphrase: bytes | None = None, peer_host: str = "127.0.0.1",
                  peer_port: int = 7443, operator_port: int = 7444, advertise: str = "",
                  profile: str = "wan", bootstrap: tuple[str, ...] = (),
                  passphrase_file: Path | None = None) -> InitResult:
    """Create keys, certificate, token and config. Refuses a directory that has a config.

    ``passphrase_file``, when given, is read (the passphrase must not also be given) and
    its absolute path recorded in config.toml, so that every later command finds it. With
    neither, a random passphrase is kept in ``<data-dir>/passphrase`` (0600): fine for
    trials and local federations, not for production, where the operator supplies one.
    """
    if passphrase is not None and passphrase_file is not None:
        raise ValueError("give the passphrase or its file, not both")
    if passphrase_file is not None:
        passphrase_file = Path(passphrase_file).absolute()
        passphrase = read_passphrase_from(PassphraseSource(passphrase_file, PASSPHRASE_OPTION),
                                          None)
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError:
        raise DataDirError(f"cannot create the data directory {data_dir}: permission denied; "
                           f"create it for the node's user first (install -d -m 0700 -o USER "
                           f"{data_dir})") from None
    check_owner(data_dir, "pocnode init")
    os.chmod(data_dir, 0o700)
    if (data_dir / CONFIG_FILE).exists():
        raise DataDirError(f"{data_dir} is already initialised (config.toml exists); "
                           f"choose another directory")
    generated = passphrase is None
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
        advertise=advertise, profile=profile, bootstrap=bootstrap,
        passphrase_file=str(passphrase_file) if passphrase_file else None))
    return InitResult(data_dir=data_dir, member=member, public_key=key.public_key, tls_pin=pin,
                      passphrase_file=passphrase_file or data_dir / PASSPHRASE_FILE,
                      generated_passphrase=generated)


def load_identity(data_dir: Path, passphrase: bytes) -> SigningKey:
    return load_signing_key(data_dir / IDENTITY_KEY, passphrase)


def read_token(data_dir: Path) -> str:
    try:
        return read_private_file(data_dir / TOKEN_FILE, 1024).decode().strip()
    except KeyFileError as exc:
        raise DataDirError(f"operator token: {exc.message}", path=exc.path) from None


# -- who may use the directory -------------------------------------------------------------


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_owner(data_dir: Path, command: str) -> None:
    """Keys and token are private to the node's user (read_private_file refuses files of
    another owner, root included): say which user to run as, instead of failing on the
    first file."""
    try:
        uid = data_dir.stat().st_uid
    except OSError:
        return
    if uid != os.geteuid():
        user = _user_name(uid)
        raise DataDirError(f"{data_dir} belongs to the user {user}, and this command runs as "
                           f"{_user_name(os.geteuid())}: run it as the node's user, e.g. "
                           f"sudo -u {user} {command} (or runuser -u {user} -- {command})")


def check_exists(data_dir: Path, given_by: str) -> None:
    """A mistyped path is "does not exist", not advice to create a node."""
    if not data_dir.exists():
        raise DataDirError(f"the data directory {data_dir} (from {given_by}) does not exist: "
                           f"check the path")
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir} (from {given_by}) is not a directory: check the path")
    if not (data_dir / CONFIG_FILE).exists():
        raise DataDirError(f"{data_dir} (from {given_by}) is not a pocnode data directory "
                           f"(no {CONFIG_FILE}): check the path, or create a node there with "
                           f"`pocnode init --data-dir {data_dir}`")


# -- the lock --------------------------------------------------------------------------------


class DataDirLock:
    """An exclusive flock on ``<data-dir>/lock``, held for the life of the process that
    owns the directory. The kernel drops it when the process dies, even by SIGKILL, so a
    crashed node never leaves a stale lock; the file itself stays (unlinking it would let
    two processes lock two different files)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(data_dir: Path) -> tuple[int | None, str] | None:
    """(pid, what) of the process holding the lock, or None when nobody holds it. Probes
    with a shared lock taken and dropped at once; never creates the file."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder(fd: int) -> tuple[int | None, str]:
    try:
        doc = json.loads(os.pread(fd, MAX_LOCK_BYTES, 0))
        pid = doc.get("pid")
        return (pid if type(pid) is int else None), str(doc.get("what", "pocnode"))[:80]
    except (OSError, ValueError, AttributeError):
        return None, "pocnode"  # the holder has not written its pid yet


def lock_data_dir(data_dir: Path, what: str) -> DataDirLock:
    """Take the data directory for this process (``what``: "pocnode run", "pocnode db
    check"...), or raise DataDirLocked naming who holds it. Nothing else in the directory
    is touched either way."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC |
                     getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise DataDirError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, holder = _holder(fd)
        os.close(fd)
        shown = f"pid {pid}" if pid is not None else "pid unknown"
        raise DataDirLocked(f"{holder} is already running ({shown}) on {data_dir}",
                            pid=pid, holder=holder) from None
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot lock {path}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"pid": os.getpid(), "what": what}) + "\n").encode(), 0)
    return DataDirLock(fd, path)


# -- the genesis ---------------------------------------------------------------------------


def parse_genesis_file(data: bytes, name: str) -> Genesis:
    """parse_genesis, with the one mistake worth naming: the unsigned draft given instead."""
    try:
        return parse_genesis(data)
    except PocError as exc:
        try:
            parse_draft(data)
        except PocError:
            raise exc from None
        raise DataDirError(f"{name} is the unsigned draft, not a signed genesis: every founder "
                           f"signs it (`pocnode genesis sign {name} ...`), then one assembles "
                           f"the signatures (`pocnode genesis assemble {name} SIG... --out "
                           f"genesis.bin`); install genesis.bin") from None


def install_genesis(data_dir: Path, signed: bytes, *, member: str | None = None,
                    name: str = "the genesis", applicant: bool = False) -> Genesis:
    """Verify and install the signed genesis; refuses to replace a different one, and
    refuses one that does not list ``member`` (this node) as a founder, unless the node is
    an ``applicant``: a state that joins after the genesis (PROTOCOL.md §5.6)."""
    genesis = parse_genesis_file(signed, name)
    if member is not None and member not in genesis.members and not applicant:
        founders = ", ".join(f.id for f in genesis.founders)
        raise DataDirError(f"{member} (this node's [node] member) is not a founder of "
                           f"{name} (founders: {founders}): a node runs only in a federation "
                           f"whose genesis lists it, or as an applicant: to join after the "
                           f"genesis, install it with --applicant, then `pocnode apply`")
    target = data_dir / GENESIS_FILE
    if target.exists():
        if target.read_bytes() == signed:
            return genesis
        raise DataDirError(f"a different genesis is already installed in {target}; a node "
                           f"belongs to one federation (use a new data directory)")
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
