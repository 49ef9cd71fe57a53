"""The SQLite file: its schema and migrations, the checks made before trusting it, and the
queries the node runs. See the package docstring for the contract.

One aiosqlite connection serves everything; its thread runs one statement at a time, and
``Store._lock`` keeps a transaction's statements together, so no read ever sees a write
that has not committed (and may still roll back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from pocnode.core.disclosure import DisclosureRow
from pocnode.core.errors import StoreError

SCHEMA_VERSION = 2
# PRAGMA application_id: "POCN" in ASCII, so `file` and SQLite tools can tell our databases.
APPLICATION_ID = 0x504F434E

# How long a statement waits for a lock another connection holds before failing with
# SQLITE_BUSY. Only an operator's sqlite3 shell or a backup tool contends with the node.
BUSY_TIMEOUT_MS = 5_000

# Rows per query when walking all events: 500 envelopes of a few KB keep a batch to a few
# MB, and even at the 64 KB envelope limit to 32 MB.
# Authors read by one query of events_for (4 bound values each, far below SQLite's limit).
READ_PARTS = 500
_INT63 = 2**63 - 1
ITER_BATCH = 500

# A peer's error text may come from the peer; 200 characters keep the table small.
MAX_ERROR_CHARS = 200

# Keys of the meta table that say whose database this is; open() checks them, and
# set_meta() refuses to change them.
IDENTITY_KEYS = ("federation_id", "member")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_HEADER_BYTES = 100
_PRIVATE = 0o600


@dataclass(frozen=True, slots=True)
class StoredEvent:
    author: str
    seq: int
    id: bytes       # 32 bytes
    kind: str
    ts: int         # author's timestamp, ms
    raw: bytes      # the envelope bytes exactly as verified
    received_at: int  # our clock, ms


@dataclass(frozen=True, slots=True)
class DirectoryRow:
    author: str
    seq: int        # sequence of the author's latest accepted record event
    event_id: bytes
    ts: int
    updated_at: int  # our clock when it was accepted, ms


@dataclass(frozen=True, slots=True)
class PeerRow:
    """A peer's health as it stood when last saved, so backoff survives a restart."""

    member: str | None
    endpoint: str
    failures: int
    next_try: int              # ms
    last_contact: int | None   # ms
    last_error: str | None


# -- schema --------------------------------------------------------------------------------
#
# MIGRATIONS[n - 1] takes a database from user_version n - 1 to n, in one transaction with
# the new user_version. Append to this list; never edit a script that has shipped.

_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- A rowid table, not WITHOUT ROWID: the latter is an index b-tree, which keeps at most
-- about 1 KB of a row on a 4 KB page, so every envelope of 1-4 KB would take an overflow
-- page of its own (measured: 3.6 times the file size, 5 times slower inserts).
CREATE TABLE events (
    author      TEXT    NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    id          BLOB    NOT NULL UNIQUE CHECK (typeof(id) = 'blob' AND length(id) = 32),
    kind        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    raw         BLOB    NOT NULL CHECK (typeof(raw) = 'blob'),
    received_at INTEGER NOT NULL,
    UNIQUE (author, seq)
);

CREATE INDEX events_by_kind ON events (kind, author, seq);

-- Append-only, enforced by the database itself so that an auditor need not trust the code.
-- Inserting at a taken (author, seq) is skipped if it is the same event and refused if not;
-- refusing before the conflict check also stops INSERT OR REPLACE from swapping a row
-- (REPLACE deletes without firing DELETE triggers).
CREATE TRIGGER events_insert_once BEFORE INSERT ON events
BEGIN
    SELECT RAISE(ABORT, 'pocnode: another event is stored at this author and seq')
    WHERE EXISTS (SELECT 1 FROM events
                  WHERE author = NEW.author AND seq = NEW.seq AND id <> NEW.id);
    SELECT RAISE(ABORT, 'pocnode: this event id is stored at another author or seq')
    WHERE EXISTS (SELECT 1 FROM events
                  WHERE id = NEW.id AND (author <> NEW.author OR seq <> NEW.seq));
    SELECT RAISE(IGNORE)
    WHERE EXISTS (SELECT 1 FROM events WHERE author = NEW.author AND seq = NEW.seq);
END;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'pocnode: events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'pocnode: events are append-only');
END;

-- One proof of equivocation per (author, seq): two envelopes, a few KB, so a rowid table.
CREATE TABLE proofs (
    author   TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    proof    BLOB    NOT NULL,
    found_at INTEGER NOT NULL,
    PRIMARY KEY (author, seq)
);

-- No foreign key to events: the node stores its own record's disclosures before the
-- record itself (a crash between the two leaves unused disclosures, never a record whose
-- values it cannot disclose).
CREATE TABLE disclosures (
    event_id   BLOB NOT NULL,
    digest     BLOB NOT NULL,
    author     TEXT NOT NULL,
    entry      TEXT NOT NULL,
    field      TEXT NOT NULL,
    visibility TEXT NOT NULL,
    raw        BLOB NOT NULL,
    PRIMARY KEY (event_id, digest)
) WITHOUT ROWID;

CREATE INDEX disclosures_by_author ON disclosures (author, visibility);

-- Derived: each author's latest record event. Kept by the trigger below, which fires only
-- for rows actually inserted; rebuild_derived() recomputes it from events.
CREATE TABLE directory (
    author     TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL,
    event_id   BLOB    NOT NULL REFERENCES events (id),
    ts         INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER events_update_directory AFTER INSERT ON events WHEN NEW.kind = 'record'
BEGIN
    INSERT INTO directory (author, seq, event_id, ts, updated_at)
    VALUES (NEW.author, NEW.seq, NEW.id, NEW.ts, NEW.received_at)
    ON CONFLICT (author) DO UPDATE
        SET seq = excluded.seq, event_id = excluded.event_id, ts = excluded.ts,
            updated_at = excluded.updated_at
        WHERE excluded.seq > directory.seq;
END;

CREATE TABLE peers (
    endpoint     TEXT    PRIMARY KEY,
    member       TEXT,
    source       TEXT    NOT NULL CHECK (source IN ('genesis', 'record', 'config')),
    last_contact INTEGER,
    last_error   TEXT,
    failures     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

# Version 2 (§4.6): events past a proven fork move out of the chains into
# ``forked_events``, the evidence kept beside them; a row leaves ``events`` only if the
# same row is already there, so nothing is ever lost. Peer health is kept per
# (member, endpoint), the identity of a peer, and saved so that backoff survives a
# restart.
_SCHEMA_V2 = """
CREATE TABLE forked_events (
    author      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    id          BLOB    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    raw         BLOB    NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE INDEX forked_events_by_author ON forked_events (author, seq);

CREATE TRIGGER forked_events_no_update BEFORE UPDATE ON forked_events
BEGIN
    SELECT RAISE(ABORT, 'pocnode: forked events are kept as they are');
END;

CREATE TRIGGER forked_events_no_delete BEFORE DELETE ON forked_events
BEGIN
    SELECT RAISE(ABORT, 'pocnode: forked events are kept as they are');
END;

DROP TRIGGER events_no_delete;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM forked_events WHERE id = OLD.id AND raw = OLD.raw)
BEGIN
    SELECT RAISE(ABORT, 'pocnode: events are append-only');
END;

DROP TABLE peers;

CREATE TABLE peer_health (
    member       TEXT    NOT NULL,
    endpoint     TEXT    NOT NULL,
    failures     INTEGER NOT NULL,
    next_try     INTEGER NOT NULL,
    last_contact INTEGER,
    last_error   TEXT,
    PRIMARY KEY (member, endpoint)
) WITHOUT ROWID;
"""

MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2)

_INSERT_EVENT = ("INSERT INTO events (author, seq, id, kind, ts, raw, received_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)")
_INSERT_DISCLOSURE = ("INSERT INTO disclosures"
                      " (author, event_id, digest, entry, field, visibility, raw)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, digest) DO NOTHING")
_RECORD = "record"


class Store:
    """Open with :meth:`open`; every method is safe to call from concurrent tasks."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._lock = asyncio.Lock()
        self._closed = False
        self.wal_dirty = False  # an erasure's checkpoint could not finish yet

    @classmethod
    async def open(cls, path: Path, *, federation_id: bytes, member: str) -> Store:
        """Open or create. New file: create schema, set application_id, user_version, and
        meta(federation_id, member). Existing file: check application_id, user_version
        (migrate forward if older, refuse if newer), PRAGMA quick_check == ok, and that
        meta federation_id/member match; else StoreError. Always WAL + synchronous=FULL."""
        path = Path(path)
        _create_private(path)
        _check_header(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open: {exc}", path=str(path)) from None
        store = cls(db, path)
        try:
            await store._prepare(federation_id, member)
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Waits for a transaction in progress; closing the last connection checkpoints the
        WAL into the main file."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._db.close()

    # -- opening -----------------------------------------------------------------------

    async def _prepare(self, federation_id: bytes, member: str) -> None:
        """The checks of open(), in order: nothing is written until the file is known to be
        ours, of a schema we understand, and intact."""
        try:
            await self._run(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await self._run("PRAGMA foreign_keys = ON")
            await self._run("PRAGMA synchronous = FULL")
            # Zero what is deleted (withdrawn disclosures) instead of leaving it in free space.
            await self._run("PRAGMA secure_delete = ON")
            app_id = await self._pragma("application_id")
            version = await self._pragma("user_version")
            objects = await self._scalar("SELECT count(*) FROM sqlite_schema")
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot read it as an SQLite database: {exc}") from None

        fresh = app_id == 0 and version == 0 and objects == 0
        if not fresh and app_id != APPLICATION_ID:
            raise self._error(f"not a pocnode database (application_id {app_id:#010x}, "
                              f"expected {APPLICATION_ID:#010x})")
        if version > SCHEMA_VERSION:
            raise self._error(f"was written by a newer pocnode (schema {version}, "
                              f"this knows {SCHEMA_VERSION})")
        if not fresh and version == 0:
            raise self._error("pocnode database without a schema version (user_version 0)")
        _make_private(self._path)

        try:
            rows = await self._db.execute_fetchall("PRAGMA quick_check")
            problems = [str(row[0]) for row in rows]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            raise self._error("integrity check failed (PRAGMA quick_check: "
                              + "; ".join(problems[:5]) + "); refusing to use or repair it: "
                              "restore a backup, or move it aside and re-sync from peers")

        try:
            mode = await self._scalar("PRAGMA journal_mode = WAL")
            if str(mode).lower() != "wal":
                raise self._error(f"cannot switch to WAL journal mode (still {mode})")
            await self._migrate(version, federation_id, member)
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot prepare the database: {exc}") from None

        for key, expected in (("federation_id", federation_id), ("member", member.encode())):
            stored = await self.get_meta(key)
            if stored is None:
                raise self._error(f"meta table has no {key}")
            if stored != expected:
                raise self._error(f"belongs to {key} {_show(key, stored)}, "
                                  f"not {_show(key, expected)}")

    async def _migrate(self, version: int, federation_id: bytes, member: str) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with self._transaction():
                found = await self._pragma("user_version")
                if found != target - 1:
                    raise self._error(f"schema moved to {found} while migrating to {target} "
                                      "(another process opened it?)")
                # Not executescript(): it commits first, and version 1 must create the
                # schema and say whose database it is in the same transaction.
                for statement in _statements(MIGRATIONS[target - 1]):
                    await self._run(statement)
                if target == 1:
                    await self._run(f"PRAGMA application_id = {APPLICATION_ID}")
                    await self._db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [("federation_id", federation_id), ("member", member.encode())])
                await self._run(f"PRAGMA user_version = {target}")

    # -- events (append-only) --
    async def append_events(self, events: Iterable[StoredEvent],
                            disclosures: Iterable[DisclosureRow] = ()) -> int:
        """Insert in ONE transaction and commit durably before returning, with the node's own
        disclosures of those events in the same transaction (so a record is never stored
        without the values its author must be able to disclose, nor the reverse). A row
        with the same (author, seq, id) already present is skipped (idempotent); the same
        (author, seq) with a different id raises StoreError (the caller must have refused
        it as an equivocation). Returns the number of event rows actually inserted. Also
        updates the directory row for every inserted record whose seq is greater."""
        rows = [(e.author, e.seq, e.id, e.kind, e.ts, e.raw, e.received_at) for e in events]
        own = [(d.author, d.event_id, d.digest, d.entry, d.field, d.visibility, d.raw)
               for d in disclosures]
        if not rows and not own:
            return 0
        # The skipping, refusing and directory upkeep happen in the triggers of _SCHEMA_V1;
        # the verifier has refused conflicts already, so they are only looked for (to name
        # them) when the schema refuses a batch.
        try:
            async with self._transaction():
                inserted = 0
                if rows:
                    cursor = await self._db.executemany(_INSERT_EVENT, rows)
                    inserted = cursor.rowcount
                    await cursor.close()
                if own:
                    await self._db.executemany(_INSERT_DISCLOSURE, own)
        except sqlite3.IntegrityError as exc:
            self._refuse_conflicts_within(rows)
            raise await self._explain_conflict(rows, exc) from None
        return inserted

    def _refuse_conflicts_within(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """The triggers would catch these too, but could not say which rows collided."""
        by_position: dict[tuple[str, int], bytes] = {}
        by_id: dict[bytes, tuple[str, int]] = {}
        for author, seq, event_id, *_ in rows:
            if by_position.setdefault((author, seq), event_id) != event_id:
                raise self._error(f"author {author} seq {seq}: the batch holds two events "
                                  f"({by_position[author, seq].hex()} and {event_id.hex()}); "
                                  "nothing of it was stored")
            if by_id.setdefault(event_id, (author, seq)) != (author, seq):
                raise self._error(f"event {event_id.hex()} appears in the batch at "
                                  f"{by_id[event_id]} and {(author, seq)}; "
                                  "nothing of it was stored")

    async def _explain_conflict(self, rows: Sequence[tuple[Any, ...]],
                                exc: sqlite3.IntegrityError) -> StoreError:
        """Find the row a trigger refused (the batch has been rolled back)."""
        spans: dict[str, tuple[int, int]] = {}
        for author, seq, *_ in rows:
            low, high = spans.get(author, (seq, seq))
            spans[author] = (min(low, seq), max(high, seq))
        stored: dict[tuple[str, int], bytes] = {}
        for author, (low, high) in spans.items():
            found = await self._fetchall(
                "SELECT seq, id FROM events WHERE author = ? AND seq BETWEEN ? AND ?",
                (author, low, high))
            stored.update(((author, seq), event_id) for seq, event_id in found)
        for author, seq, event_id, *_ in rows:
            held = stored.get((author, seq))
            if held is not None and held != event_id:
                return self._error(f"author {author} seq {seq}: event {held.hex()} is stored, "
                                   f"refusing {event_id.hex()} (an equivocation must be "
                                   "refused before the store); nothing of the batch was stored")
        for author, seq, event_id, *_ in rows:
            found = await self._fetchall("SELECT author, seq FROM events WHERE id = ?",
                                         (event_id,))
            if found and tuple(found[0]) != (author, seq):
                return self._error(f"event {event_id.hex()} is stored at {tuple(found[0])}, "
                                   f"refusing it at {(author, seq)}; "
                                   "nothing of the batch was stored")
        return self._error(f"the schema refused the batch ({exc}); nothing of it was stored")

    async def heads(self) -> dict[str, tuple[int, bytes, int]]:
        """author -> (seq, id, ts) of the highest stored event per author."""
        rows = await self._fetchall(
            "SELECT e.author, e.seq, e.id, e.ts FROM events AS e"
            " JOIN (SELECT author, max(seq) AS seq FROM events GROUP BY author) AS h"
            " ON e.author = h.author AND e.seq = h.seq")
        return {author: (seq, event_id, ts) for author, seq, event_id, ts in rows}

    async def chain_ids(self) -> dict[str, list[bytes]]:
        """author -> ids ordered by seq (index 0 is seq 1). For rebuilding a Verifier."""
        chains: dict[str, list[bytes]] = {}

        def add(rows: Iterable[sqlite3.Row]) -> None:
            for author, event_id in rows:
                chains.setdefault(author, []).append(event_id)

        await self._fold("SELECT author, id FROM events ORDER BY author, seq", (), add)
        return chains

    async def events_of_kinds(self, kinds: Sequence[str]) -> list[StoredEvent]:
        """All events of these kinds, ordered by (author, seq) across them."""
        if not kinds:
            return []
        # Only "?" placeholders are spliced in, one per kind; the kinds are parameters.
        query = ("SELECT author, seq, id, kind, ts, raw, received_at FROM events"  # noqa: S608
                 " WHERE kind IN (" + ", ".join("?" * len(kinds)) + ") ORDER BY author, seq")
        rows = await self._fetchall(query, tuple(kinds))
        return [StoredEvent(*row) for row in rows]

    async def events_of_kind(self, kind: str) -> list[StoredEvent]:
        """All events of a kind, ordered by (author, seq). E.g. key.rotate, node.keys."""
        rows = await self._fetchall(
            "SELECT author, seq, id, kind, ts, raw, received_at FROM events"
            " WHERE kind = ? ORDER BY author, seq", (kind,))
        return [StoredEvent(*row) for row in rows]

    async def events_from(self, author: str, from_seq: int, *, limit: int,
                          max_bytes: int) -> list[bytes]:
        """Raw envelopes of author with seq >= from_seq, ascending, stopping at limit rows or
        before the total raw size would exceed max_bytes (but at least one row if any)."""
        return (await self.events_for([(author, from_seq, limit, max_bytes)])).get(author, [])

    async def events_for(self, parts: Sequence[tuple[str, int, int, int]]
                         ) -> dict[str, list[bytes]]:
        """``events_from`` for many (author, from_seq, limit, max_bytes) at once, in one
        query per ``READ_PARTS`` authors: an answer to a node that is behind reads from
        hundreds of authors, and a query each cost a thread hop each while the peer waited.

        The cut comes first, from sizes alone (length() of a BLOB reads no content), so no
        more than max_bytes (or one envelope) of raw is ever fetched per author. Chains are
        stored without gaps (only verified prefixes; a cut removes a suffix), so an author's
        first ``limit`` rows from ``from_seq`` are those below ``from_seq + limit``."""
        out: dict[str, list[bytes]] = {}
        # One part per author (the last, as a dict keeps it); bounds kept within SQLite's
        # 64-bit integers.
        last = {a: (max(first, 1), min(n, _INT63 - max(first, 1)), size)
                for a, first, n, size in parts}
        wanted = [(a, first, n, size) for a, (first, n, size) in last.items() if n >= 1]
        for i in range(0, len(wanted), READ_PARTS):
            chunk = wanted[i:i + READ_PARTS]
            # Only placeholders are spliced into the statement; every value is bound.
            values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            params = [x for a, first, n, size in chunk for x in (a, first, first + n, size)]
            rows = await self._fetchall(
                f"WITH want(author, first, stop, budget) AS (VALUES {values}),"  # noqa: S608
                " cut AS ("
                "  SELECT e.author AS author, e.seq AS seq, w.budget AS budget,"
                "   row_number() OVER win AS n, sum(length(e.raw)) OVER win AS total"
                "  FROM want w JOIN events e"
                "   ON e.author = w.author AND e.seq >= w.first AND e.seq < w.stop"
                "  WINDOW win AS (PARTITION BY e.author ORDER BY e.seq"
                "                 ROWS UNBOUNDED PRECEDING))"
                " SELECT c.author, e.raw FROM cut c"
                " JOIN events e ON e.author = c.author AND e.seq = c.seq"
                " WHERE c.n = 1 OR c.total <= c.budget ORDER BY c.author, c.seq", params)
            for author, raw in rows:
                out.setdefault(author, []).append(raw)
        return out

    async def event(self, author: str, seq: int) -> StoredEvent | None:
        rows = await self._fetchall(
            "SELECT author, seq, id, kind, ts, raw, received_at FROM events"
            " WHERE author = ? AND seq = ?", (author, seq))
        return StoredEvent(*rows[0]) if rows else None

    async def iter_events(self) -> AsyncIterator[StoredEvent]:
        """Every event, ordered by (author, seq), fetched in batches (bounded memory)."""
        # Each batch is its own query, resuming after the last key: no statement or read
        # transaction stays open while the caller works (which would hold back WAL
        # checkpoints), and events appended meanwhile are seen if they sort later.
        after: tuple[str, int] = ("", 0)
        while True:
            rows = await self._fetchall(
                "SELECT author, seq, id, kind, ts, raw, received_at FROM events"
                " WHERE (author, seq) > (?, ?) ORDER BY author, seq LIMIT ?",
                (*after, ITER_BATCH))
            for row in rows:
                yield StoredEvent(*row)
            if len(rows) < ITER_BATCH:
                return
            after = (rows[-1][0], rows[-1][1])

    async def count_events(self) -> int:
        async with self._lock:
            return int(await self._scalar("SELECT count(*) FROM events"))

    async def chain_raws(self, author: str, upto: int) -> list[bytes]:
        """The author's envelopes from seq 1 to ``upto``, in order."""
        rows = await self._fetchall(
            "SELECT raw FROM events WHERE author = ? AND seq <= ? ORDER BY seq",
            (author, upto))
        return [raw for (raw,) in rows]

    async def events_after(self, author: str, seq: int) -> list[StoredEvent]:
        rows = await self._fetchall(
            "SELECT author, seq, id, kind, ts, raw, received_at FROM events"
            " WHERE author = ? AND seq > ? ORDER BY seq", (author, seq))
        return [StoredEvent(*row) for row in rows]

    async def freeze(self, author: str, seq: int, proof: bytes, found_at: int) -> int:
        """§4.6: keep the proof, and move the author's events from ``seq`` on out of the
        chains into ``forked_events`` (the evidence), in one transaction. The directory
        row of the author is recomputed from what stays. Returns the rows moved."""
        async with self._transaction():
            await self._run(
                "INSERT INTO proofs (author, seq, proof, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (author, seq) DO NOTHING", (author, seq, proof, found_at))
            return await self._move_aside(author, seq)

    async def cut(self, author: str, seq: int) -> int:
        """§5.9 key recovery: the author's events from ``seq`` on move out of the chains
        into ``forked_events`` (kept, never deleted), in one transaction."""
        async with self._transaction():
            return await self._move_aside(author, seq)

    async def _move_aside(self, author: str, seq: int) -> int:
        """Within a transaction: the author's events from ``seq`` on into
        ``forked_events``, and its directory row recomputed from what stays."""
        await self._run(
            "INSERT OR IGNORE INTO forked_events"
            " SELECT author, seq, id, kind, ts, raw, received_at FROM events"
            " WHERE author = ? AND seq >= ?", (author, seq))
        await self._run("DELETE FROM directory WHERE author = ?", (author,))
        cursor = await self._db.execute(
            "DELETE FROM events WHERE author = ? AND seq >= ?", (author, seq))
        moved = cursor.rowcount
        await cursor.close()
        await self._run(
            "INSERT INTO directory (author, seq, event_id, ts, updated_at)"
            " SELECT author, max(seq), id, ts, received_at FROM events"
            " WHERE author = ? AND kind = ? GROUP BY author", (author, _RECORD))
        return int(moved)

    async def forked_events(self) -> list[StoredEvent]:
        rows = await self._fetchall(
            "SELECT author, seq, id, kind, ts, raw, received_at FROM forked_events"
            " ORDER BY author, seq, id")
        return [StoredEvent(*row) for row in rows]

    async def proof(self, author: str, seq: int) -> bytes | None:
        rows = await self._fetchall("SELECT proof FROM proofs WHERE author = ? AND seq = ?",
                                    (author, seq))
        return bytes(rows[0][0]) if rows else None

    # -- equivocation proofs --
    async def add_proof(self, author: str, seq: int, proof: bytes, found_at: int) -> bool:
        """Keep one proof per (author, seq); True if it was new. Durable on return."""
        async with self._transaction():
            cursor = await self._db.execute(
                "INSERT INTO proofs (author, seq, proof, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (author, seq) DO NOTHING", (author, seq, proof, found_at))
            added = cursor.rowcount == 1
            await cursor.close()
        return added

    async def proofs(self) -> list[tuple[str, int, bytes, int]]:
        rows = await self._fetchall(
            "SELECT author, seq, proof, found_at FROM proofs ORDER BY author, seq")
        return [(str(a), int(s), bytes(p), int(t)) for a, s, p, t in rows]

    # -- disclosures (checked by the caller against the record's digests) --
    async def add_disclosures(self, rows: Iterable[tuple[str, bytes, bytes, str, str, str,
                                                         bytes]]) -> int:
        """rows of (author, event_id, digest, entry, field, visibility, raw); idempotent on
        (event_id, digest). Durable on return. Returns rows inserted."""
        batch = list(rows)
        if not batch:
            return 0
        try:
            async with self._transaction():
                cursor = await self._db.executemany(
                    "INSERT INTO disclosures"
                    " (author, event_id, digest, entry, field, visibility, raw)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, digest) DO NOTHING",
                    batch)
                inserted = cursor.rowcount
                await cursor.close()
        except sqlite3.IntegrityError as exc:
            raise self._error(f"the schema refused the disclosures ({exc}); "
                              "nothing of the batch was stored") from None
        return inserted

    async def disclosures_for(self, event_id: bytes,
                              visibilities: tuple[str, ...] = ("members", "bilateral"),
                              ) -> list[bytes]:
        """Raw disclosures held for one record event, of the given visibilities."""
        # One record's disclosures are a few dozen rows: filtering here keeps the SQL fixed.
        rows = await self._fetchall(
            "SELECT visibility, raw FROM disclosures WHERE event_id = ? ORDER BY digest",
            (event_id,))
        return [raw for visibility, raw in rows if visibility in visibilities]

    async def disclosure_index(self) -> list[tuple[str, bytes, bytes, str]]:
        """(author, event id, digest, visibility) of every disclosure held: what a node
        keeps in memory to decide what to ask, show and erase without reading values."""
        rows = await self._fetchall(
            "SELECT author, event_id, digest, visibility FROM disclosures")
        return [(a, bytes(e), bytes(d), v) for a, e, d, v in rows]

    async def erase_disclosures(self, groups: Iterable[tuple[bytes, str]]) -> int:
        """Delete every disclosure of each (event id, visibility) group, durably, then empty
        the write-ahead log so the erased values leave the files (§7.1)."""
        groups = list(groups)
        if not groups:
            return 0
        async with self._transaction():
            deleted = 0
            for event_id, visibility in groups:
                cursor = await self._db.execute(
                    "DELETE FROM disclosures WHERE event_id = ? AND visibility = ?",
                    (event_id, visibility))
                deleted += cursor.rowcount
                await cursor.close()
        if deleted:
            await self.checkpoint()
        return deleted

    async def checkpoint(self) -> bool:
        """Copy the WAL home and empty it, so erased rows leave no old page images behind.
        A reader holding the database (an online backup, say) can stop it from finishing:
        ``wal_dirty`` then stays set, and the node calls this again until it completes."""
        async with self._lock:
            rows = list(await self._db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        busy = bool(rows and rows[0][0])
        self.wal_dirty = busy
        return not busy

    # -- derived tables --
    async def directory(self) -> list[DirectoryRow]:
        rows = await self._fetchall(
            "SELECT author, seq, event_id, ts, updated_at FROM directory ORDER BY author")
        return [DirectoryRow(*row) for row in rows]

    async def rebuild_derived(self) -> None:
        """Drop and recompute the directory from events (kind == "record", max seq per
        author). Peers learned from records are recomputed by the node, not here."""
        async with self._transaction():
            await self._run("DELETE FROM directory")
            # SQLite takes the bare columns of a max() aggregate from the row holding the max.
            await self._run(
                "INSERT INTO directory (author, seq, event_id, ts, updated_at)"
                " SELECT author, max(seq), id, ts, received_at FROM events"
                " WHERE kind = ? GROUP BY author", (_RECORD,))

    async def save_peer_health(self, rows: Iterable[PeerRow]) -> None:
        """Replace the saved peer health with ``rows`` (the node saves it now and then and
        at shutdown; losing the latest is harmless, so one transaction is enough)."""
        batch = [(r.member or "", r.endpoint, r.failures, r.next_try, r.last_contact,
                  None if r.last_error is None else r.last_error[:MAX_ERROR_CHARS])
                 for r in rows]
        async with self._transaction():
            await self._run("DELETE FROM peer_health")
            if batch:
                await self._db.executemany(
                    "INSERT INTO peer_health (member, endpoint, failures, next_try,"
                    " last_contact, last_error) VALUES (?, ?, ?, ?, ?, ?)", batch)

    async def peer_health(self) -> list[PeerRow]:
        rows = await self._fetchall(
            "SELECT member, endpoint, failures, next_try, last_contact, last_error"
            " FROM peer_health ORDER BY member, endpoint")
        return [PeerRow(m or None, e, f, n, c, err) for m, e, f, n, c, err in rows]

    # -- meta --
    async def get_meta(self, key: str) -> bytes | None:
        rows = await self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: bytes) -> None:
        """Any key but those naming the database's owner, which open() wrote once."""
        if key in IDENTITY_KEYS:
            raise ValueError(f"meta {key!r} is set when the database is created, never after")
        async with self._transaction():
            await self._run(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- plumbing ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT under the lock, rolled back on any exception,
        cancellation included, so the connection never stays inside a transaction.

        Statements already queued still run on the connection's thread after a cancel;
        the ROLLBACK is queued behind them, and fails harmlessly if COMMIT got there first.
        """
        async with self._lock:
            try:
                await self._run("BEGIN IMMEDIATE")
                yield
                await self._run("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._run("ROLLBACK")
                raise self._write_error(exc) from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await self._run("ROLLBACK")
                raise

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement, run to completion so that no statement stays open."""
        await self._db.execute_fetchall(sql, params)

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._db.execute_fetchall(sql, params)
        return next(iter(rows))[0]

    async def _pragma(self, name: str) -> int:
        return int(await self._scalar(f"PRAGMA {name}"))

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    async def _fold(self, sql: str, params: Sequence[Any],
                    into: Callable[[list[sqlite3.Row]], None]) -> None:
        """Feed a query's rows to ``into`` a batch at a time, never holding them all."""
        async with self._lock, self._db.execute(sql, params) as cursor:
            while rows := list(await cursor.fetchmany(ITER_BATCH)):
                into(rows)

    def _error(self, message: str) -> StoreError:
        return StoreError(message, path=str(self._path))

    def _write_error(self, exc: sqlite3.OperationalError) -> StoreError:
        """A write that did not happen, said plainly: a full disk is the usual cause."""
        text = str(exc)
        if "full" in text or getattr(exc, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
            return self._error("cannot write: the disk is full (ENOSPC); nothing of this "
                               "write was stored; free space and the node carries on")
        return self._error(f"cannot write ({text}); nothing of this write was stored")


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; sqlite3.complete_statement knows that a trigger's
    BEGIN ... END holds semicolons. One statement may not share a line with the next."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"migration ends inside a statement: {pending.strip()[:80]!r}")


def _create_private(path: Path) -> None:
    """Create an absent database file as 0600, whatever the umask, before SQLite writes to
    it; SQLite gives the -wal and -shm files it creates the main file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create: {exc.strerror}", path=str(path)) from None
    try:
        os.fchmod(fd, _PRIVATE)  # the mode given to open() passed through the umask
    finally:
        os.close(fd)


def _make_private(path: Path) -> None:
    """Tighten an existing database (and its -wal, -shm) to 0600, once it is known ours."""
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.chmod(name, _PRIVATE)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot chmod 600 {name}: {exc.strerror}",
                             path=str(path)) from None


def _check_header(path: Path) -> None:
    """Refuse what is not SQLite before SQLite sees it; an empty file is a new database."""
    try:
        with open(path, "rb") as file:
            header = file.read(_SQLITE_HEADER_BYTES)
    except OSError as exc:
        raise StoreError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if header and (len(header) < _SQLITE_HEADER_BYTES or not header.startswith(_SQLITE_MAGIC)):
        raise StoreError("not an SQLite database (no SQLite header)", path=str(path))


def _show(key: str, value: bytes) -> str:
    return value.hex() if key == "federation_id" else repr(value.decode("utf-8", "replace"))
