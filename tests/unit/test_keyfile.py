"""Key files: Argon2id + AES-GCM in our own armoured format, mode 0600; the old PKCS#8
files are migrated on first use."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocnode import keyfile
from pocnode.core import encoding
from pocnode.core.consent import HpkeKey, seal
from pocnode.core.errors import KeyFileError
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.keyfile import (
    DEFAULT_ARGON2ID,
    MAX_ARGON2ID_ITERATIONS,
    MAX_ARGON2ID_LANES,
    MAX_ARGON2ID_WORK,
    MAX_KDF_MEMORY_BYTES,
    MAX_SCRYPT_LOG2_N,
    MAX_SCRYPT_P,
    MAX_SCRYPT_R,
    Argon2idParams,
    ScryptParams,
    default_kdf,
    load_key_file,
    load_private_parts,
    load_signing_key,
    open_parts,
    parse_header,
    save_private_parts,
    save_signing_key,
    seal_parts,
    write_private_file,
)
from pocnode.node import tls

PASS = b"correct horse battery staple"
# Test-only work factors, passed as arguments: the smallest Argon2id and scrypt allow, so
# that a derivation costs microseconds. test_the_default_work_factor uses the real one.
FAST = Argon2idParams(memory_kib=8, iterations=1, lanes=1)
FAST_SCRYPT = ScryptParams(log2_n=4, r=1, p=1)
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _payload(data: bytes) -> bytes:
    """The binary inside the armour."""
    return base64.b64decode(b"".join(data.strip().splitlines()[1:-1]))


def _armour(payload: bytes) -> bytes:
    body = base64.b64encode(payload)
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([keyfile._BEGIN, *lines, keyfile._END]) + b"\n"


def _with_header(data: bytes, **changes: object) -> bytes:
    """``data`` with header fields replaced, re-encoded canonically (ciphertext kept)."""
    outer = encoding.decode(_payload(data))
    header = encoding.decode(outer["header"])
    header.update(changes)
    return _armour(encoding.encode({"ct": outer["ct"], "header": encoding.encode(header)}))


def _write(path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, data)
    os.close(fd)


def _write_legacy(path, parts, passphrase: bytes = PASS) -> None:
    """A key file as pocnode wrote it before: encrypted PKCS#8 PEM blocks (PBKDF2)."""
    write_private_file(path, b"".join(
        p.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.BestAvailableEncryption(passphrase)) for p in parts))


@pytest.fixture
def derivations(monkeypatch):
    """Counts calls of the KDF (the expensive step), still deriving for real."""
    calls = []
    real = keyfile._derive

    def counting(params, passphrase, salt, where):
        calls.append(params)
        return real(params, passphrase, salt, where)

    monkeypatch.setattr(keyfile, "_derive", counting)
    return calls


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ED25519, HYBRID])
def test_round_trip_keeps_the_key_and_mode_0600(tmp_path, alg):
    key = SigningKey.generate(alg)
    path = tmp_path / "identity.pem"
    save_signing_key(path, key, PASS, kdf=FAST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN POCNODE ENCRYPTED PRIVATE KEY-----\n")
    assert key.public_key.ed25519.hex() not in path.read_text()
    assert key.public_key.ed25519 not in _payload(data)
    loaded = load_signing_key(path, PASS)
    assert loaded.public_key == key.public_key
    assert loaded.public_key.verify(loaded.sign(b"m"), b"m")


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_hpke_parts_round_trip(tmp_path, suite):
    key = HpkeKey.generate(suite)
    path = tmp_path / "hpke.key"
    save_private_parts(path, key.private_parts, PASS, kdf=FAST)
    loaded = HpkeKey(suite, *load_private_parts(path, PASS))
    assert loaded.public_bytes == key.public_bytes
    assert loaded.open(seal(suite, key.public_bytes, b"secret", b"info"), b"info") == b"secret"


def test_scrypt_files_round_trip(tmp_path):
    key = SigningKey.generate(HYBRID)
    path = tmp_path / "k"
    save_signing_key(path, key, PASS, kdf=FAST_SCRYPT)
    assert parse_header(path.read_bytes(), "k")[0].kdf == FAST_SCRYPT
    assert load_signing_key(path, PASS).public_key == key.public_key


def test_the_default_work_factor(tmp_path, derivations):
    """The real default: argon2id (this cryptography has it), stated in the header."""
    assert default_kdf() == DEFAULT_ARGON2ID
    key = SigningKey.generate(HYBRID)
    path = tmp_path / "identity.key"
    save_signing_key(path, key, PASS)
    header = parse_header(path.read_bytes(), str(path))[0]
    assert header.kdf == DEFAULT_ARGON2ID and header.parts == 2
    assert load_signing_key(path, PASS).public_key == key.public_key
    assert derivations == [DEFAULT_ARGON2ID, DEFAULT_ARGON2ID]  # one to save, one to load


def test_one_derivation_per_load_whatever_the_number_of_parts(tmp_path, derivations):
    path = tmp_path / "k"
    save_private_parts(path, HpkeKey.generate("mlkem768-x25519").private_parts, PASS, kdf=FAST)
    save_signing_key(tmp_path / "s", SigningKey.generate(HYBRID), PASS, kdf=FAST)
    derivations.clear()
    load_private_parts(path, PASS)
    load_signing_key(tmp_path / "s", PASS)
    assert len(derivations) == 2


# -- tampering and hostile files ---------------------------------------------------------------

_SEALED = seal_parts(SigningKey.generate(HYBRID).private_parts, PASS, FAST)
_PAYLOAD = _payload(_SEALED)
_OUTER = encoding.decode(_PAYLOAD)
_SPANS = {name: (_PAYLOAD.index(_OUTER[name]), len(_OUTER[name])) for name in ("header", "ct")}


@pytest.mark.parametrize("region", ["header", "ct", "all"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), flip=st.integers(1, 255))
def test_any_changed_byte_is_refused(region, data, flip):
    start, length = _SPANS.get(region, (0, len(_PAYLOAD)))
    pos = data.draw(st.integers(start, start + length - 1), label="position")
    tampered = bytearray(_PAYLOAD)
    tampered[pos] ^= flip
    with pytest.raises(KeyFileError):
        open_parts(_armour(bytes(tampered)), PASS, where="tampered.key")


def test_the_untampered_payload_opens():
    """The property above would pass vacuously if nothing opened at all."""
    assert len(open_parts(_armour(_PAYLOAD), PASS)) == 2


def test_lowering_the_work_factor_is_detected():
    strong = seal_parts([SigningKey.generate()._ed], PASS,
                        Argon2idParams(memory_kib=64, iterations=3, lanes=1))
    for weaker in ({"m": 32, "t": 3, "p": 1}, {"m": 64, "t": 1, "p": 1}):
        weak = _with_header(strong, kdf={"alg": "argon2id", **weaker})
        with pytest.raises(KeyFileError, match="cannot decrypt: wrong passphrase, or the file "
                                               "was altered"):
            open_parts(weak, PASS, where="weak.key")
    with pytest.raises(KeyFileError, match="cannot decrypt"):
        open_parts(_with_header(strong, salt=bytes(16)), PASS)
    with pytest.raises(KeyFileError, match="cannot decrypt"):
        open_parts(_with_header(strong, parts=2), PASS)


MIB = 1024
BAD_KDFS = [
    ({"alg": "argon2id", "m": MAX_KDF_MEMORY_BYTES // 1024 + 1, "t": 1, "p": 1}, "memory"),
    ({"alg": "argon2id", "m": 64 * 1024 * MIB, "t": 1, "p": 1}, "memory"),  # 64 GiB
    ({"alg": "argon2id", "m": 64 * MIB, "t": MAX_ARGON2ID_ITERATIONS + 1, "p": 1}, "t"),
    ({"alg": "argon2id", "m": 256 * MIB, "t": MAX_ARGON2ID_WORK // (256 * MIB) + 1, "p": 4},
     "m x t"),
    ({"alg": "argon2id", "m": 1024, "t": 1, "p": MAX_ARGON2ID_LANES + 1}, "lanes"),
    ({"alg": "argon2id", "m": 1024, "t": 0, "p": 1}, "below the minimum"),
    ({"alg": "argon2id", "m": 7, "t": 1, "p": 1}, "below the minimum"),
    ({"alg": "scrypt", "ln": MAX_SCRYPT_LOG2_N + 1, "r": 1, "p": 1}, "ln"),
    ({"alg": "scrypt", "ln": 14, "r": MAX_SCRYPT_R + 1, "p": 1}, "r"),
    ({"alg": "scrypt", "ln": 10, "r": 1, "p": MAX_SCRYPT_P + 1}, "p"),
    ({"alg": "scrypt", "ln": 20, "r": 8, "p": 1}, "memory"),  # 1 GiB
    ({"alg": "scrypt", "ln": 18, "r": 4, "p": 16}, "N x r x p"),
    ({"alg": "scrypt", "ln": 0, "r": 1, "p": 1}, "below the minimum"),
]


@pytest.mark.parametrize(("kdf", "named"), BAD_KDFS)
def test_parameters_out_of_bounds_are_refused_before_any_derivation(tmp_path, derivations,
                                                                     kdf, named):
    path = tmp_path / "hostile.key"
    _write(path, _with_header(_SEALED, kdf=kdf))
    with pytest.raises(KeyFileError) as err:
        load_signing_key(path, PASS)
    assert derivations == []
    assert err.value.path == str(path)
    assert named in err.value.message and "kdf parameter" in err.value.message


@pytest.mark.parametrize(("change", "message"), [
    ({"kdf": {"alg": "pbkdf2", "i": 2048}}, "unsupported kdf 'pbkdf2'"),
    ({"kdf": {"alg": "argon2id", "m": 8, "t": True, "p": 1}}, "must be integers"),
    ({"kdf": {"alg": "argon2id", "m": 8, "t": 1}}, "exactly"),
    ({"v": 2}, "version 2; this pocnode reads version 1"),
    ({"v": True}, "version True"),
    ({"aead": "chacha20-poly1305"}, "unsupported cipher"),
    ({"salt": b"short"}, "salt must be 16 bytes"),
    ({"parts": 9}, "parts must be 1 to 4"),
    ({"extra": 1}, "exactly"),
])
def test_malformed_headers_name_the_problem(derivations, change, message):
    with pytest.raises(KeyFileError, match=message) as err:
        open_parts(_with_header(_SEALED, **change), PASS, where="/data/identity.key")
    assert err.value.path == "/data/identity.key"
    assert "identity.key" in str(err.value)
    assert derivations == []


def test_truncated_and_garbled_files_say_so(tmp_path):
    lines = _SEALED.splitlines(keepends=True)
    for cut, message in [(b"".join(lines[:-1]), "truncated"),
                         (b"".join(lines[:2]), "truncated"),
                         (_SEALED[: len(_SEALED) // 2], "truncated"),
                         (_SEALED.replace(lines[1], lines[1][:-2] + b"!\n"), "base64"),
                         (b"".join([lines[0], lines[1][:20] + b"\n", lines[-1]]), "damaged")]:
        with pytest.raises(KeyFileError, match=message):
            open_parts(cut, PASS, where="k")


def test_wrong_passphrase_is_a_clear_error(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS, kdf=FAST)
    with pytest.raises(KeyFileError, match="cannot decrypt: wrong passphrase") as err:
        load_signing_key(path, b"wrong passphrase")
    assert str(path) in str(err.value)


def test_a_key_others_can_read_is_refused(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS, kdf=FAST)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path, PASS)


def test_existing_files_are_never_overwritten_and_short_passphrases_refused(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS, kdf=FAST)
    with pytest.raises(KeyFileError, match="exists"):
        save_signing_key(path, SigningKey.generate(), PASS, kdf=FAST)
    with pytest.raises(KeyFileError, match="at least"):
        save_signing_key(tmp_path / "other.pem", SigningKey.generate(), b"short", kdf=FAST)


def test_saving_with_parameters_above_the_maximum_is_refused(tmp_path):
    with pytest.raises(KeyFileError, match="memory"):
        save_signing_key(tmp_path / "k", SigningKey.generate(), PASS,
                         kdf=Argon2idParams(memory_kib=1 << 30, iterations=1, lanes=1))
    assert not (tmp_path / "k").exists()


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    path = tmp_path / "k.pem"
    _write(path, b"not a key")
    with pytest.raises(KeyFileError, match="PEM blocks"):
        load_signing_key(path, PASS)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_signing_key(tmp_path / "absent.pem", PASS)


def test_private_key_never_appears_in_repr():
    key = SigningKey.generate()
    assert "public=" in repr(key)
    assert "_ed" not in repr(key)


def test_a_truncated_hybrid_key_does_not_load_as_ed25519(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(HYBRID), PASS, kdf=FAST)
    data = path.read_bytes()
    cut = tmp_path / "cut.pem"
    _write(cut, data[: len(data) - 100])
    with pytest.raises(KeyFileError, match="nothing else"):
        load_signing_key(cut, PASS)
    with pytest.raises(KeyFileError, match="expected"):
        load_signing_key(path, PASS, alg=ED25519)


def test_fifo_nul_and_missing_directory_are_key_file_errors(tmp_path):
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signing_key(fifo, PASS)
    with pytest.raises(KeyFileError):
        load_signing_key(tmp_path / "a\x00b", PASS)
    with pytest.raises(KeyFileError, match="cannot create"):
        save_signing_key(tmp_path / "missing" / "k.pem", SigningKey.generate(), PASS, kdf=FAST)


# -- migration from PKCS#8 / PBKDF2 ------------------------------------------------------------


@pytest.mark.parametrize("alg", [ED25519, HYBRID])
def test_an_old_key_file_is_migrated_once(tmp_path, caplog, alg):
    key = SigningKey.generate(alg)
    path = tmp_path / "identity.key"
    _write_legacy(path, [p for p in key.private_parts if p is not None])
    caplog.set_level(logging.INFO, logger="pocnode.keyfile")

    first = load_key_file(path, PASS, kdf=FAST)
    assert first.migrated
    migrated = path.read_bytes()
    assert migrated.startswith(keyfile._BEGIN)
    assert parse_header(migrated, str(path))[0].kdf == FAST
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]  # no temp left

    again = load_key_file(path, PASS, kdf=FAST)
    assert not again.migrated
    assert path.read_bytes() == migrated
    assert load_signing_key(path, PASS, alg=alg).public_key == key.public_key
    notes = [r for r in caplog.records if "migrated" in r.getMessage()]
    assert len(notes) == 1 and notes[0].fields["path"] == str(path)


def test_migration_keeps_a_stricter_mode(tmp_path):
    path = tmp_path / "identity.key"
    _write_legacy(path, [SigningKey.generate()._ed])
    os.chmod(path, 0o400)
    assert load_key_file(path, PASS, kdf=FAST).migrated
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400


def test_a_wrong_passphrase_leaves_an_old_file_untouched(tmp_path):
    path = tmp_path / "identity.key"
    _write_legacy(path, SigningKey.generate(HYBRID).private_parts)
    before, inode = path.read_bytes(), os.stat(path).st_ino
    with pytest.raises(KeyFileError, match="cannot decrypt") as err:
        load_signing_key(path, b"not the passphrase", kdf=FAST)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before and os.stat(path).st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]


def test_old_hpke_files_are_migrated(tmp_path):
    key = HpkeKey.generate("mlkem768-x25519")
    path = tmp_path / "hpke.key"
    _write_legacy(path, key.private_parts)
    assert HpkeKey("mlkem768-x25519", *load_private_parts(path, PASS, kdf=FAST)
                   ).public_bytes == key.public_bytes
    assert parse_header(path.read_bytes(), "hpke.key")[0].parts == 2


def test_migration_never_replaces_a_file_that_changed_meanwhile(tmp_path):
    """A key rotation may swap identity.key between our read and our rename: the rotated
    key must survive, and the migration wait for the next load."""
    path = tmp_path / "identity.key"
    _write_legacy(path, [SigningKey.generate()._ed])
    stale = os.stat(path)
    path.unlink()
    _write(path, b"the rotated key")
    with pytest.raises(KeyFileError, match="replaced while"):
        keyfile._replace_private_file(path, b"migrated", stale)
    assert path.read_bytes() == b"the rotated key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]


def test_a_failed_migration_still_loads_the_key(tmp_path, caplog, monkeypatch):
    """A directory that cannot take the rename (read-only, full disk): the key still loads,
    the old file stays as it was, and no temporary file is left."""
    path = tmp_path / "identity.key"
    key = SigningKey.generate()
    _write_legacy(path, [key._ed])
    before = path.read_bytes()

    def refuse(src, dst):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    loaded = load_key_file(path, PASS, kdf=FAST)
    monkeypatch.undo()
    assert not loaded.migrated and loaded.parts[0].public_key() == key._ed.public_key()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    assert any("old PKCS#8" in r.getMessage() and "Read-only" in r.fields["reason"]
               for r in caplog.records)
    assert load_key_file(path, PASS, kdf=FAST).migrated  # the next load tries again


# -- TLS -----------------------------------------------------------------------------------


async def _handshake(ctx) -> tuple[bytes, bytes]:
    """A real TLS 1.3 handshake on loopback; returns the server certificate's pin and the
    answer to a line sent through the tunnel."""
    async def echo(reader, writer):
        writer.write(b"pong " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        async with asyncio.timeout(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           ssl=tls.client_context())
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(b"ping\n")
            answer = await reader.readline()
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return hashlib.sha256(der).digest(), answer


@pytest.mark.parametrize("in_memory", [True, False])
async def test_tls_server_context_from_the_new_format(tmp_path, in_memory):
    pin = tls.create_certificate(tmp_path, "ATL", PASS, NOW, kdf=FAST)
    assert (tmp_path / tls.KEY_FILE).read_bytes().startswith(keyfile._BEGIN)
    assert stat.S_IMODE(os.stat(tmp_path / tls.KEY_FILE).st_mode) == 0o600
    ctx = tls.server_context(tmp_path, PASS, in_memory=in_memory)
    assert await _handshake(ctx) == (pin, b"pong ping\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [tls.CERT_FILE, tls.KEY_FILE]


async def test_an_old_tls_key_still_works_and_is_migrated(tmp_path):
    pin = tls.create_certificate(tmp_path, "ATL", PASS, NOW, kdf=FAST)
    key = load_private_parts(tmp_path / tls.KEY_FILE, PASS)[0]
    (tmp_path / tls.KEY_FILE).unlink()
    _write_legacy(tmp_path / tls.KEY_FILE, [key])  # as tls.py wrote it before
    ctx = tls.server_context(tmp_path, PASS, kdf=FAST)
    assert (tmp_path / tls.KEY_FILE).read_bytes().startswith(keyfile._BEGIN)
    assert await _handshake(ctx) == (pin, b"pong ping\n")
    assert tls.load_pin(tmp_path) == pin


def test_a_tls_key_file_holding_something_else_is_refused(tmp_path):
    tls.create_certificate(tmp_path, "ATL", PASS, NOW, kdf=FAST)
    (tmp_path / tls.KEY_FILE).unlink()
    save_signing_key(tmp_path / tls.KEY_FILE, SigningKey.generate(), PASS, kdf=FAST)
    with pytest.raises(KeyFileError, match="elliptic-curve"):
        tls.server_context(tmp_path, PASS)
    (tmp_path / tls.KEY_FILE).unlink()
    save_private_parts(tmp_path / tls.KEY_FILE, [ec.generate_private_key(ec.SECP256R1())],
                       PASS, kdf=FAST)
    with pytest.raises(KeyFileError, match="belong together"):
        tls.server_context(tmp_path, PASS)
