"""A node whose key files are in the old PKCS#8/PBKDF2 format starts, migrates all three
once, keeps its identity and TLS pin, and a wrong passphrase changes nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from pocnode.keyfile import load_private_parts, write_private_file
from pocnode.node import datadir
from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow

KEY_FILES = ("identity.key", "hpke.key", "tls.key")
NEW = b"-----BEGIN POCNODE ENCRYPTED PRIVATE KEY-----"
OLD = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def _to_old_format(path, passphrase: bytes) -> None:
    """Rewrite a key file as pocnode wrote it before: encrypted PKCS#8 PEM blocks."""
    parts = load_private_parts(path, passphrase)
    path.unlink()
    write_private_file(path, b"".join(
        p.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.BestAvailableEncryption(passphrase)) for p in parts))


def test_old_key_files_are_migrated_at_start(federation_factory, tmp_path):
    fed = federation_factory(2, hpke_suite="mlkem768-x25519")
    fed.start()  # the first start creates hpke.key
    atl, bor = fed["ATL"], fed["BOR"]
    pin = atl.get("/v1/status")["tls_pin"]
    atl.stop()
    passphrase = datadir.read_passphrase(atl.dir, datadir.PASSPHRASE_FILE)
    for name in KEY_FILES:
        _to_old_format(atl.dir / name, passphrase)
    old = {name: (atl.dir / name).read_bytes() for name in KEY_FILES}

    # A wrong passphrase: the node refuses to start, names the file, and changes nothing.
    wrong = tmp_path / "wrong-passphrase"
    write_private_file(wrong, b"not the passphrase\n")
    run = subprocess.run([sys.executable, "-m", "pocnode", "run", "--data-dir", str(atl.dir)],
                         env={**os.environ, datadir.PASSPHRASE_ENV: str(wrong)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "identity.key" in run.stderr + run.stdout
    assert "does not decrypt" in run.stderr + run.stdout
    assert {name: (atl.dir / name).read_bytes() for name in KEY_FILES} == old

    atl.start()
    atl.wait_ready()
    for name in KEY_FILES:
        assert (atl.dir / name).read_bytes().startswith(NEW), name
        assert stat.S_IMODE(os.stat(atl.dir / name).st_mode) == 0o600
    migrated = [line for line in atl.log().splitlines() if "key file migrated" in line]
    assert sorted(n for n in KEY_FILES for line in migrated if n in line) == sorted(KEY_FILES)
    assert atl.get("/v1/status")["tls_pin"] == pin

    # Still the same member to its peers: a record signed now reaches BOR over pinned TLS.
    status, answer = atl.api("POST", "/v1/record", record("ATL", "after-migration"))
    assert status == 201, answer
    wait_until(lambda: bor.api("GET", "/v1/directory/ATL")[0] == 200, timeout=30,
               what="BOR accepts ATL's record after the migration")

    atl.stop()
    atl.start()
    atl.wait_ready()
    assert sum("key file migrated" in line for line in atl.log().splitlines()) == 3
    assert not any(p.name.endswith(".new") for p in atl.dir.iterdir())
    assert not any((atl.dir / name).read_bytes().startswith(OLD) for name in KEY_FILES)
