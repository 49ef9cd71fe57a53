"""Key files (PROTOCOL.md §3.3): PKCS#8, passphrase-encrypted, mode 0600."""

from __future__ import annotations

import os
import stat

import pytest

from pocnode.core.errors import KeyFileError
from pocnode.core.keys import ED25519, HYBRID, SigningKey
from pocnode.keyfile import load_signing_key, save_signing_key

PASS = b"correct horse battery staple"


@pytest.mark.parametrize("alg", [ED25519, HYBRID])
def test_round_trip_keeps_the_key_and_mode_0600(tmp_path, alg):
    key = SigningKey.generate(alg)
    path = tmp_path / "identity.pem"
    save_signing_key(path, key, PASS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    assert key.public_key.ed25519.hex() not in path.read_text()
    loaded = load_signing_key(path, PASS)
    assert loaded.public_key == key.public_key
    assert loaded.public_key.verify(loaded.sign(b"m"), b"m")


def test_wrong_passphrase_is_a_clear_error(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS)
    with pytest.raises(KeyFileError, match="cannot decrypt"):
        load_signing_key(path, b"wrong passphrase")


def test_a_key_others_can_read_is_refused(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path, PASS)


def test_existing_files_are_never_overwritten_and_short_passphrases_refused(tmp_path):
    path = tmp_path / "k.pem"
    save_signing_key(path, SigningKey.generate(), PASS)
    with pytest.raises(KeyFileError, match="exists"):
        save_signing_key(path, SigningKey.generate(), PASS)
    with pytest.raises(KeyFileError, match="at least"):
        save_signing_key(tmp_path / "other.pem", SigningKey.generate(), b"short")


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    path = tmp_path / "k.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
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
    save_signing_key(path, SigningKey.generate(HYBRID), PASS)
    data = path.read_bytes()
    cut = tmp_path / "cut.pem"
    fd = os.open(cut, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data[: len(data) - 200])
    os.close(fd)
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
        save_signing_key(tmp_path / "missing" / "k.pem", SigningKey.generate(), PASS)
