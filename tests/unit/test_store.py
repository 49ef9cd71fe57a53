"""The store on real SQLite files: round trips, append-only rules, refusals at open."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from pocnode.store import SCHEMA_VERSION, DirectoryRow, PeerRow, Store, StoredEvent, StoreError
from pocnode.store import db as store_db

FED = hashlib.sha256(b"unit federation").digest()
OTHER_FED = hashlib.sha256(b"another federation").digest()
T0 = 1_767_225_600_000


def ev(author: str, seq: int, kind: str = "record", *, size: int = 100, variant: int = 0,
       received_at: int | None = None) -> StoredEvent:
    """A synthetic event: the store checks no signatures, so any bytes will do."""
    digest = hashlib.sha256(f"{author}/{seq}/{kind}/{variant}".encode()).digest()
    raw = (digest * (size // 32 + 1))[:size]
    return StoredEvent(author=author, seq=seq, id=digest, kind=kind, ts=T0 + seq, raw=raw,
                       received_at=T0 + 1000 + seq if received_at is None else received_at)


def chain(author: str, n: int, kind: str = "record", start: int = 1, **kw) -> list[StoredEvent]:
    return [ev(author, seq, kind, **kw) for seq in range(start, start + n)]


async def open_store(path: Path, *, federation_id: bytes = FED, member: str = "ATL") -> Store:
    return await Store.open(path, federation_id=federation_id, member=member)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "pocnode.db"


@pytest.fixture
async def store(db_path: Path):
    s = await open_store(db_path)
    try:
        yield s
    finally:
        await s.close()


def raw_sql(path: Path, *statements: str) -> list[list[tuple]]:
    """Run statements on a plain sqlite3 connection, as an operator or attacker would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return [conn.execute(sql).fetchall() for sql in statements]
    finally:
        conn.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- creating and reopening -------------------------------------------------------------


async def test_new_file_gets_schema_identity_and_pragmas(store: Store, db_path: Path):
    [[(app_id,)], [(version,)], [(journal,)]] = raw_sql(
        db_path, "PRAGMA application_id", "PRAGMA user_version", "PRAGMA journal_mode")
    assert app_id == store_db.APPLICATION_ID
    assert version == SCHEMA_VERSION
    assert journal == "wal"
    # Per-connection settings, so asked of the store's own connection.
    for pragma, value in (("synchronous", 2), ("foreign_keys", 1),
                          ("busy_timeout", store_db.BUSY_TIMEOUT_MS)):
        assert list(await store._db.execute_fetchall(f"PRAGMA {pragma}")) == [(value,)]
    assert await store.get_meta("federation_id") == FED
    assert await store.get_meta("member") == b"ATL"
    assert await store.count_events() == 0
    assert await store.heads() == {}


def test_one_migration_per_schema_version():
    assert len(store_db.MIGRATIONS) == SCHEMA_VERSION


async def test_reopen_keeps_everything(db_path: Path):
    s = await open_store(db_path)
    await s.append_events(chain("ATL", 3))
    await s.set_meta("genesis", b"g")
    await s.close()
    await s.close()  # idempotent
    s = await open_store(db_path)
    try:
        assert await s.count_events() == 3
        assert await s.get_meta("genesis") == b"g"
        assert [r.seq for r in await s.directory()] == [3]
    finally:
        await s.close()


async def test_an_older_schema_is_migrated_forward(db_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    s = await open_store(db_path)
    await s.append_events(chain("ATL", 2))
    await s.close()
    later = SCHEMA_VERSION + 1
    step = "CREATE TABLE later (x INTEGER);\nINSERT INTO later VALUES (42);\n"
    monkeypatch.setattr(store_db, "MIGRATIONS", (*store_db.MIGRATIONS, step))
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", later)
    s = await open_store(db_path)
    await s.close()
    assert raw_sql(db_path, "PRAGMA user_version", "SELECT x FROM later") == [
        [(later,)], [(42,)]]
    monkeypatch.undo()
    with pytest.raises(StoreError, match=rf"newer pocnode \(schema {later}, this knows "
                                         rf"{SCHEMA_VERSION}\)"):
        await open_store(db_path)


async def test_a_version_1_database_is_migrated_with_its_events(db_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:1])
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", 1)
    s = await open_store(db_path)
    await s.append_events(chain("ATL", 3))
    await s.close()
    monkeypatch.undo()
    s = await open_store(db_path)
    try:
        assert await s.count_events() == 3
        assert await s.peer_health() == []
        assert await s.forked_events() == []
    finally:
        await s.close()


async def test_a_failing_migration_leaves_the_old_version(db_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    await (await open_store(db_path)).close()
    broken = "CREATE TABLE later (x INTEGER);\nCREATE TABLE later (y INTEGER);\n"
    monkeypatch.setattr(store_db, "MIGRATIONS", (*store_db.MIGRATIONS, broken))
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="already exists") as info:
        await open_store(db_path)
    assert str(db_path) in str(info.value)
    assert raw_sql(db_path, "PRAGMA user_version",
                   "SELECT count(*) FROM sqlite_schema WHERE name = 'later'") == [
        [(SCHEMA_VERSION,)], [(0,)]]


# -- events ---------------------------------------------------------------------------------


async def test_append_round_trips_every_reader(store: Store):
    atl = chain("ATL", 3) + [ev("ATL", 4, "key.rotate")]
    bor = [ev("BOR", 1, "node.keys"), ev("BOR", 2)]
    assert await store.append_events(bor + atl) == 6
    assert await store.count_events() == 6
    assert await store.event("ATL", 2) == atl[1]
    assert await store.event("ATL", 9) is None
    assert await store.heads() == {"ATL": (4, atl[3].id, atl[3].ts),
                                   "BOR": (2, bor[1].id, bor[1].ts)}
    assert await store.chain_ids() == {"ATL": [e.id for e in atl], "BOR": [e.id for e in bor]}
    assert await store.events_of_kind("record") == atl[:3] + bor[1:]
    assert await store.events_of_kind("key.rotate") == [atl[3]]
    assert await store.events_of_kind("nothing") == []
    assert [e async for e in store.iter_events()] == atl + bor


async def test_append_nothing(store: Store):
    assert await store.append_events([]) == 0
    assert await store.append_events(iter(())) == 0


async def test_append_is_idempotent(store: Store):
    events = chain("ATL", 5)
    assert await store.append_events(events[:3]) == 3
    assert await store.append_events(events[:3]) == 0
    assert await store.append_events(events) == 2
    assert await store.append_events([events[0], events[0], ev("BOR", 1)]) == 1
    assert await store.count_events() == 6


async def test_conflicting_append_rolls_back_the_whole_batch(store: Store, db_path: Path):
    await store.append_events(chain("ATL", 3))
    before = (await store.heads(), await store.directory())
    batch = chain("BOR", 2) + [ev("ATL", 2, variant=1)] + chain("CAL", 1)
    with pytest.raises(StoreError, match="author ATL seq 2") as info:
        await store.append_events(batch)
    assert str(db_path) in str(info.value)
    assert ev("ATL", 2).id.hex() in info.value.message
    assert await store.count_events() == 3
    assert (await store.heads(), await store.directory()) == before
    assert await store.event("BOR", 1) is None
    # The store is usable afterwards.
    assert await store.append_events(chain("BOR", 2)) == 2


async def test_conflict_within_one_batch_stores_nothing(store: Store):
    with pytest.raises(StoreError, match="author ATL seq 2: the batch holds two events"):
        await store.append_events(chain("ATL", 2) + [ev("ATL", 2, variant=1)])
    assert await store.count_events() == 0


async def test_an_id_at_two_positions_is_refused(store: Store):
    first = ev("ATL", 1)
    await store.append_events([first])
    moved = StoredEvent(author="ATL", seq=2, id=first.id, kind="record", ts=1, raw=b"x",
                        received_at=1)
    with pytest.raises(StoreError, match="is stored at"):
        await store.append_events([ev("BOR", 1), moved])
    assert await store.count_events() == 1


async def test_schema_refuses_malformed_rows(store: Store):
    short_id = StoredEvent(author="ATL", seq=1, id=b"short", kind="record", ts=1, raw=b"x",
                           received_at=1)
    with pytest.raises(StoreError, match="schema refused"):
        await store.append_events([short_id])
    with pytest.raises(StoreError, match="schema refused"):
        await store.append_events([ev("ATL", 0)])
    assert await store.count_events() == 0


async def test_events_are_append_only_in_sql(store: Store, db_path: Path):
    await store.append_events(chain("ATL", 2))
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for sql in ("UPDATE events SET kind = 'x'", "DELETE FROM events",
                    "DELETE FROM events WHERE seq = 2"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        with pytest.raises(sqlite3.IntegrityError, match="another event is stored"):
            conn.execute("INSERT INTO events VALUES ('ATL', 1, zeroblob(32), 'record', 0,"
                         " x'00', 0)")
        # REPLACE deletes without DELETE triggers; the insert trigger stops it first.
        conn.execute("INSERT OR REPLACE INTO events SELECT author, seq, id, kind, ts,"
                     " x'0badbad0', received_at FROM events WHERE seq = 1")
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (2,)
    finally:
        conn.close()
    assert await store.event("ATL", 1) == ev("ATL", 1)


async def test_events_from_respects_limit_and_max_bytes(store: Store):
    sizes = [100, 200, 300, 50, 1000, 10, 10]
    events = [ev("ATL", i + 1, size=size) for i, size in enumerate(sizes)]
    await store.append_events(events + chain("BOR", 3, size=5))
    raws = [e.raw for e in events]
    for from_seq in range(0, len(sizes) + 2):
        for limit in (0, 1, 2, 3, 7, 100):
            for max_bytes in (0, 1, 99, 100, 299, 300, 599, 650, 10_000):
                want: list[bytes] = []
                for raw in raws[max(from_seq - 1, 0):][:limit]:
                    if want and sum(map(len, want)) + len(raw) > max_bytes:
                        break
                    want.append(raw)
                got = await store.events_from("ATL", from_seq, limit=limit,
                                              max_bytes=max_bytes)
                assert got == want, (from_seq, limit, max_bytes)
    assert await store.events_from("XXX", 1, limit=10, max_bytes=10_000) == []


async def test_events_for_many_authors_equals_each_author_read_alone(store: Store):
    """One query for many authors (what an answer to a node that is behind reads) gives, per
    author, exactly the rows the one-author rule gives: first seq, limit, byte budget and at
    least one row, also across query chunks (READ_PARTS) and for unknown authors."""
    rng = random.Random(7)
    held: dict[str, list[bytes]] = {}
    rows: list[StoredEvent] = []
    for i in range(12):
        author = f"A{i:02d}"
        events = [ev(author, seq, size=rng.choice([10, 60, 300, 900]))
                  for seq in range(1, rng.randint(1, 9) + 1)]
        held[author] = [e.raw for e in events]
        rows += events
    await store.append_events(rows)

    def alone(author: str, first: int, limit: int, budget: int) -> list[bytes]:
        out: list[bytes] = []
        for raw in held.get(author, [])[max(first - 1, 0):][:max(limit, 0)]:
            if out and sum(map(len, out)) + len(raw) > budget:
                break
            out.append(raw)
        return out

    for trial in range(40):
        authors = rng.sample([*held, "ZZZ", "YYY"], rng.randint(1, 14))
        parts = [(a, rng.randint(0, 10), rng.choice([0, 1, 2, 5, 50]),
                  rng.choice([0, 50, 400, 1500, 10**6])) for a in authors]
        expected = {a: alone(a, f, n, b) for a, f, n, b in parts}
        store_db.READ_PARTS, before = rng.choice([1, 3, 500]), store_db.READ_PARTS
        try:
            got = await store.events_for(parts)
        finally:
            store_db.READ_PARTS = before
        assert {a: v for a, v in expected.items() if v} == got, (trial, parts)
    # One author asked twice: the last ask counts (as a dict of asks keeps it), never both.
    twice = [("A00", 1, 3, 10**6), ("A00", 2, 3, 10**6)]
    assert await store.events_for(twice) == {"A00": alone("A00", 2, 3, 10**6)}
    # Bounds near 2^63 are no error: nothing is held there.
    assert await store.events_for([("A00", 2**63 - 2, 1000, 10**6)]) == {}


async def test_iter_events_crosses_batches_in_order(store: Store):
    n = store_db.ITER_BATCH * 2 + 7
    authors = ("ATL", "BOR", "CAL")
    for author in authors:
        await store.append_events(chain(author, n // 3 + 1, size=10))
    seen = [(e.author, e.seq) async for e in store.iter_events()]
    assert seen == [(a, s) for a in authors for s in range(1, n // 3 + 2)]


async def test_concurrent_calls_are_serialised(store: Store):
    async def writer(author: str) -> int:
        total = 0
        for start in range(1, 50, 10):
            total += await store.append_events(chain(author, 10, start=start))
        return total

    async def reader() -> int:
        return len([e async for e in store.iter_events()]) + len(await store.heads())

    results = await asyncio.gather(*(writer(f"M{i}") for i in range(8)),
                                   *(reader() for _ in range(4)))
    assert results[:8] == [50] * 8
    assert await store.count_events() == 400


async def test_a_cancelled_append_rolls_back_and_frees_the_connection(store: Store):
    batch = chain("ATL", 20_000, size=300)
    task = asyncio.create_task(store.append_events(batch))
    deadline = time.monotonic() + 5
    while not store._db.in_transaction:  # cancel inside BEGIN ... COMMIT, not before
        assert time.monotonic() < deadline and not task.done(), "no transaction started"
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.count_events() == 0
    assert not store._db.in_transaction
    await store.append_events(batch + chain("BOR", 1))
    assert await store.count_events() == len(batch) + 1


# -- directory ----------------------------------------------------------------------------


async def test_directory_keeps_the_highest_record_per_author(store: Store, db_path: Path):
    await store.append_events([ev("ATL", 1), ev("ATL", 2, "key.rotate"), ev("ATL", 3),
                               ev("BOR", 1, "node.keys")])
    await store.append_events([ev("ATL", 4, "node.keys"), ev("BOR", 3, received_at=7)])
    await store.append_events([ev("BOR", 2)])  # late, and lower: no change
    expected = [DirectoryRow("ATL", 3, ev("ATL", 3).id, T0 + 3, T0 + 1003),
                DirectoryRow("BOR", 3, ev("BOR", 3).id, T0 + 3, 7)]
    assert await store.directory() == expected

    raw_sql(db_path, "DELETE FROM directory")
    assert await store.directory() == []
    await store.rebuild_derived()
    assert await store.directory() == expected
    await store.rebuild_derived()
    assert await store.directory() == expected


# -- proofs, disclosures, peers, meta ------------------------------------------------------


async def test_proofs_keep_the_first_per_author_and_seq(store: Store):
    assert await store.add_proof("BOR", 2, b"proof-1", 10) is True
    assert await store.add_proof("BOR", 2, b"proof-2", 20) is False
    assert await store.add_proof("ATL", 5, b"proof-3", 30) is True
    assert await store.proofs() == [("ATL", 5, b"proof-3", 30), ("BOR", 2, b"proof-1", 10)]


async def test_disclosures_round_trip_filter_and_delete(store: Store):
    rec, other = ev("ATL", 1), ev("BOR", 1)
    rows = [("ATL", rec.id, b"d1" * 16, "e0", "email", "members", b"raw-1"),
            ("ATL", rec.id, b"d2" * 16, "e0", "phone", "bilateral", b"raw-2"),
            ("ATL", rec.id, b"d3" * 16, "e1", "name", "public", b"raw-3"),
            ("BOR", other.id, b"d4" * 16, "e0", "email", "members", b"raw-4")]
    assert await store.add_disclosures(rows) == 4
    assert await store.add_disclosures(rows[:2]) == 0
    assert await store.add_disclosures([]) == 0
    assert await store.disclosures_for(rec.id) == [b"raw-1", b"raw-2"]
    assert await store.disclosures_for(rec.id, ("members",)) == [b"raw-1"]
    assert await store.disclosures_for(rec.id, ("public", "members")) == [b"raw-1", b"raw-3"]
    assert await store.disclosures_for(rec.id, ()) == []
    assert await store.erase_disclosures([(rec.id, "members")]) == 1
    assert await store.erase_disclosures([(rec.id, "members")]) == 0
    assert await store.disclosures_for(rec.id) == [b"raw-2"]
    assert await store.disclosures_for(other.id) == [b"raw-4"]
    assert sorted(await store.disclosure_index()) == sorted([
        ("ATL", rec.id, b"d2" * 16, "bilateral"), ("ATL", rec.id, b"d3" * 16, "public"),
        ("BOR", other.id, b"d4" * 16, "members")])


async def test_own_disclosures_commit_with_their_record_or_not_at_all(store: Store):
    from pocnode.core.disclosure import DisclosureRow
    rec = ev("ATL", 1)
    row = DisclosureRow(author="ATL", event_id=rec.id, digest=b"d" * 32, entry="e0",
                        field="email", visibility="members", raw=b"raw")
    await store.append_events([rec], [row])
    assert await store.disclosures_for(rec.id) == [b"raw"]
    # a batch the schema refuses takes its disclosures down with it
    clash = ev("ATL", 1, variant=1)
    other = DisclosureRow(author="ATL", event_id=clash.id, digest=b"e" * 32, entry="e0",
                          field="email", visibility="members", raw=b"raw-2")
    with pytest.raises(StoreError):
        await store.append_events([clash], [other])
    assert await store.disclosures_for(clash.id) == []


async def test_freezing_moves_events_past_the_fork_into_evidence(store: Store, db_path: Path):
    await store.append_events(chain("ATL", 5) + chain("BOR", 2))
    assert await store.freeze("ATL", 3, b"proof", 99) == 3
    assert await store.chain_raws("ATL", 10) == [e.raw for e in chain("ATL", 2)]
    assert [(e.seq, e.id) for e in await store.forked_events()] == [
        (e.seq, e.id) for e in chain("ATL", 3, start=3)]
    assert await store.proof("ATL", 3) == b"proof"
    assert [r.seq for r in await store.directory() if r.author == "ATL"] == [2]
    # evidence is kept as it is, and events leave the chains only into it
    for sql in ("DELETE FROM forked_events", "UPDATE forked_events SET raw = x'00'",
                "DELETE FROM events WHERE author = 'BOR'"):
        with pytest.raises(sqlite3.DatabaseError):
            raw_sql(db_path, sql)
    # the freed sequences can hold another event (a recovered chain, later)
    await store.append_events([ev("ATL", 3, variant=7)])
    assert await store.count_events() == 5


async def test_a_deleted_disclosure_leaves_no_bytes_in_the_files(store: Store, db_path: Path):
    secret = b"withdrawn-consent-" + os.urandom(16).hex().encode()
    await store.append_events(chain("ATL", 20, size=500))
    await store.add_disclosures([("ATL", ev("ATL", 1).id, b"d" * 32, "e0", "phone",
                                  "bilateral", secret)])
    assert secret in Path(f"{db_path}-wal").read_bytes()
    assert await store.erase_disclosures([(ev("ATL", 1).id, "bilateral")]) == 1
    for name in (db_path, Path(f"{db_path}-wal")):
        if name.exists():
            assert secret not in name.read_bytes(), name


async def test_peer_health_is_saved_and_replaced(store: Store):
    rows = [PeerRow("BOR", "https://b:7443", 2, 500, None, "x" * 500),
            PeerRow(None, "https://a:7443", 0, 0, 7, None)]
    await store.save_peer_health(rows)
    assert await store.peer_health() == [
        PeerRow(None, "https://a:7443", 0, 0, 7, None),
        PeerRow("BOR", "https://b:7443", 2, 500, None, "x" * 200)]
    await store.save_peer_health(rows[1:])
    assert await store.peer_health() == [PeerRow(None, "https://a:7443", 0, 0, 7, None)]


async def test_meta_round_trip_and_identity_is_fixed(store: Store):
    assert await store.get_meta("nothing") is None
    await store.set_meta("genesis", b"one")
    await store.set_meta("genesis", b"two")
    assert await store.get_meta("genesis") == b"two"
    for key in ("federation_id", "member"):
        with pytest.raises(ValueError, match=key):
            await store.set_meta(key, b"x")
    assert await store.get_meta("member") == b"ATL"


# -- refusals at open -----------------------------------------------------------------------


async def refused(path: Path, match: str, **kw) -> StoreError:
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match) as info:
        await open_store(path, **kw)
    assert str(path) in str(info.value)
    assert info.value.to_dict()["path"] == str(path)
    assert path.read_bytes() == before, "a refused file must be left as it was"
    return info.value


async def test_refuses_random_bytes(db_path: Path):
    db_path.write_bytes(os.urandom(8192))
    await refused(db_path, "not an SQLite database")


async def test_refuses_garbage_behind_an_sqlite_header(db_path: Path):
    db_path.write_bytes(b"SQLite format 3\x00" + random.Random(7).randbytes(8192 - 16))
    await refused(db_path, "cannot read it as an SQLite database")


async def test_refuses_a_short_file(db_path: Path):
    db_path.write_bytes(b"SQLite format 3\x00")
    await refused(db_path, "not an SQLite database")


async def test_refuses_another_applications_database(db_path: Path):
    raw_sql(db_path, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)",
            "INSERT INTO accounts (name) VALUES ('alice')")
    await refused(db_path, r"not a pocnode database \(application_id 0x00000000")


async def test_refuses_another_application_id(db_path: Path):
    raw_sql(db_path, "PRAGMA application_id = 1234")
    await refused(db_path, "not a pocnode database")


async def test_refuses_another_federation(db_path: Path):
    await (await open_store(db_path)).close()
    await refused(db_path, f"federation_id {FED.hex()}, not {OTHER_FED.hex()}",
                  federation_id=OTHER_FED)


async def test_refuses_another_member(db_path: Path):
    await (await open_store(db_path)).close()
    await refused(db_path, "member 'ATL', not 'BOR'", member="BOR")


async def test_refuses_a_newer_schema(db_path: Path):
    await (await open_store(db_path)).close()
    raw_sql(db_path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    await refused(db_path, rf"written by a newer pocnode \(schema {SCHEMA_VERSION + 1}, "
                           rf"this knows {SCHEMA_VERSION}\)")


async def test_refuses_a_corrupt_database(db_path: Path):
    s = await open_store(db_path)
    for start in range(1, 401, 100):
        await s.append_events(chain("ATL", 100, start=start, size=1300))
    await s.close()  # the last connection's close checkpoints the WAL into the file
    assert not Path(f"{db_path}-wal").exists()
    [[(page_size,)], [(pages,)]] = raw_sql(db_path, "PRAGMA page_size", "PRAGMA page_count")
    assert pages > 100
    # Garbage over the b-tree header of a page in the middle of the file: quick_check
    # walks every b-tree page and refuses this one. (Garbage in a row's payload would not
    # do: quick_check does not look inside records.)
    with open(db_path, "r+b") as file:
        file.seek((pages // 2) * page_size)
        file.write(b"\xff" * 12)
    error = await refused(db_path, "integrity check failed")
    assert "quick_check" in error.message


async def test_refuses_a_missing_directory(tmp_path: Path):
    path = tmp_path / "absent" / "pocnode.db"
    with pytest.raises(StoreError, match="cannot create") as info:
        await open_store(path)
    assert str(path) in str(info.value)


# -- file modes -------------------------------------------------------------------------------


async def test_files_are_private_whatever_the_umask(db_path: Path):
    old = os.umask(0)
    try:
        s = await open_store(db_path)
        try:
            await s.append_events(chain("ATL", 3))
            names = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert [n.exists() for n in names] == [True, True, True]
            assert [mode(n) for n in names] == [0o600] * 3
        finally:
            await s.close()
    finally:
        os.umask(old)


async def test_reopening_tightens_a_loose_mode(db_path: Path):
    await (await open_store(db_path)).close()
    os.chmod(db_path, 0o644)
    s = await open_store(db_path)
    try:
        assert mode(db_path) == 0o600
    finally:
        await s.close()
