"""The identity key's files through a rotation, recoverable at every crash point.

A rotation is four steps (PROTOCOL.md §3.4.2; the engine decides, this module does):

1. the new key is written to ``identity.key.next`` (fsynced);
2. the ``key.rotate`` event, signed by the old key, commits to the database;
3. ``identity.key`` becomes ``identity.key.old-<seq>``;
4. ``identity.key.next`` becomes ``identity.key``.

The chain on disk says which key is current, so at start :func:`recover` looks at
the files and finishes or undoes whatever a crash interrupted: before step 2 the new
key is discarded (nothing was signed with it), after it the swap is completed. No
state of the files between two steps leaves a node unable to start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pocnode.core.keys import PublicKey, SigningKey
from pocnode.keyfile import load_signing_key, save_signing_key
from pocnode.node.datadir import IDENTITY_KEY, IDENTITY_STAGED, DataDirError

STAGED_SUFFIX = IDENTITY_STAGED.removeprefix(IDENTITY_KEY)
RETIRED_SUFFIX = ".old-"


def current_path(data_dir: Path) -> Path:
    return data_dir / IDENTITY_KEY


def staged_path(data_dir: Path) -> Path:
    return data_dir / (IDENTITY_KEY + STAGED_SUFFIX)


def retired_path(data_dir: Path, seq: int) -> Path:
    return data_dir / f"{IDENTITY_KEY}{RETIRED_SUFFIX}{seq}"


def stage(data_dir: Path, key: SigningKey, passphrase: bytes) -> None:
    """Step 1. A leftover staged file (an interrupted rotation that never committed) is
    replaced: no event was ever signed with it."""
    staged = staged_path(data_dir)
    staged.unlink(missing_ok=True)
    save_signing_key(staged, key, passphrase)


def swap(data_dir: Path, seq: int) -> None:
    """Steps 3 and 4, after the rotation at ``seq`` committed."""
    current, staged = current_path(data_dir), staged_path(data_dir)
    if current.exists():
        os.replace(current, retired_path(data_dir, seq))
    os.replace(staged, current)
    _fsync_dir(data_dir)


@dataclass(frozen=True, slots=True)
class Recovered:
    key: SigningKey
    action: str | None   # what was done, for the log; None when nothing was needed


def recover(data_dir: Path, passphrase: bytes, current_key: PublicKey,
            last_rotation_seq: int | None, *, allow_other: bool = False) -> Recovered:
    """Bring the files to the state the chain says: ``current_key`` is the key the chain
    expects for our next event; ``last_rotation_seq`` the sequence of our latest
    ``key.rotate`` (to name the retired file). With ``allow_other``, an identity key that
    is not the chain's (a member that lost its key and made a new one, §5.9) is returned
    as it is: the node runs, publishes nothing, and waits for the recovery decision."""
    current, staged = current_path(data_dir), staged_path(data_dir)
    key = _load(current, passphrase)
    if key is not None and key.public_key == current_key:
        if staged.exists():
            staged.unlink()  # step 1 done, step 2 not: nothing was signed with it
            _fsync_dir(data_dir)
            return Recovered(key, "discarded a rotation that never committed")
        return Recovered(key, None)
    new = _load(staged, passphrase)
    if new is not None and new.public_key == current_key:
        # Step 2 committed; the swap (steps 3, 4 or only 4) is what was interrupted.
        swap(data_dir, last_rotation_seq or 0)
        return Recovered(new, "completed an interrupted key rotation")
    if allow_other and key is not None:
        return Recovered(key, "identity.key is not this member's current key: publishing "
                              "nothing until a key recovery decision makes it current")
    if not current.exists():
        raise DataDirError(
            f"{IDENTITY_KEY} is missing and no staged key matches this member's current key; "
            "restore it from a backup, or recover the member's key by governance",
            path=str(current))
    raise DataDirError(
        f"{IDENTITY_KEY} is not this member's current key (the chain expects "
        f"{current_key.ed25519.hex()[:16]}…); restore the right file from a backup",
        path=str(current))


def _load(path: Path, passphrase: bytes) -> SigningKey | None:
    if not path.exists():
        return None
    try:
        return load_signing_key(path, passphrase)
    except Exception:  # noqa: BLE001 - a truncated staged file is the crash we recover from
        if path.name.endswith(STAGED_SUFFIX):
            return None
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
