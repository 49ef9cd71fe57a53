"""An export bundle read from a node's database, read-only (PROTOCOL.md §13.6).

SQLite opened with ``mode=ro`` reads the file while the node writes it (WAL mode), and
one read transaction makes the export a snapshot: an event the node accepts meanwhile is
either wholly in the bundle or wholly not, and a freeze cannot move events out from under
it. Rows are streamed from the cursor, so the bundle is never in memory: only the
record being written is.

Events are written in the order the node stored them (rowid): an order in which it
accepted them, so a verifier can accept them in it too, whatever a later version makes
one author's events depend on (another member's decision, say).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Generator
from pathlib import Path

from pocnode.core.bundle import BundleWriter
from pocnode.core.errors import StoreError

# The node waits up to 5 s for a lock; a reader is in the same position.
BUSY_TIMEOUT_S = 5.0


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection that never creates or changes the database."""
    if not path.exists():
        raise StoreError("no database yet (the node has never run)", path=str(path))
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    old = os.umask(0o077)  # -wal and -shm it may create stay as private as the database
    try:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open read-only: {exc}", path=str(path)) from None
    finally:
        os.umask(old)


def bundle_chunks(db_path: Path, *, genesis: bytes, fed: bytes, created: int,
                  source: str = "", author: str | None = None
                  ) -> Generator[bytes, None, None]:
    """The bundle's bytes, record by record. With ``author``: that member's chain only
    (the genesis, its events, evidence and proofs), for comparing one history."""
    writer = BundleWriter()
    conn = connect_read_only(db_path)
    where, args = ("WHERE author = ?", (author,)) if author else ("", ())
    try:
        conn.execute("BEGIN")  # one snapshot for the whole export
        yield writer.header(fed, created, source)
        yield writer.genesis(genesis)
        for (raw,) in conn.execute(f"SELECT raw FROM events {where} ORDER BY rowid",  # noqa: S608
                                   args):
            yield writer.event(bytes(raw))
        for (raw,) in conn.execute(
                f"SELECT raw FROM forked_events {where} ORDER BY author, seq, id", args):  # noqa: S608
            yield writer.forked(bytes(raw))
        for (raw,) in conn.execute(
                f"SELECT proof FROM proofs {where} ORDER BY author, seq", args):  # noqa: S608
            yield writer.proof(bytes(raw))
        yield writer.end()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read: {exc}", path=str(db_path)) from None
    finally:
        conn.close()


def checkpoint_events(db_path: Path) -> list[bytes]:
    """Every checkpoint and cosign event in force, in store order: what `pocnode
    checkpoint show` folds (its own fold, the engine's, over these rows)."""
    conn = connect_read_only(db_path)
    try:
        rows = conn.execute("SELECT raw FROM events WHERE kind IN ('checkpoint', 'cosign')"
                            " ORDER BY rowid").fetchall()
        return [bytes(r) for (r,) in rows]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read: {exc}", path=str(db_path)) from None
    finally:
        conn.close()


def chain_ids(db_path: Path, author: str) -> list[bytes]:
    """The author's event ids in force, oldest first: a checkpoint's leaves."""
    conn = connect_read_only(db_path)
    try:
        return [bytes(i) for (i,) in conn.execute(
            "SELECT id FROM events WHERE author = ? ORDER BY seq", (author,))]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read: {exc}", path=str(db_path)) from None
    finally:
        conn.close()
