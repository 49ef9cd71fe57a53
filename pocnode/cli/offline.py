"""Reading a node's database without the node: the directory, record history, proofs.

The operator API answers only while the node runs; an operator at 3 a.m. may need the
directory when it does not (a crash, a maintenance window). SQLite opened read-only
(``mode=ro``) reads the same file, and, the database being in WAL mode, even while the
node writes to it. What is shown follows the node's own viewer rule as far as the
database can: public values, members values, and the bilateral values this node holds
(it keeps those only while consent with their author is mutual, and erases them when it
ends); nothing the node would not show.

The queries read the append-only ``events`` table, ``disclosures`` and ``proofs``
(pocnode/store), never the derived tables, so a directory is computed here the way the
node computes it: the latest record event of each author, opened with the disclosures
held for it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocnode.cli.client import CliError
from pocnode.core import encoding
from pocnode.core.disclosure import check_disclosure, viewer_record
from pocnode.core.errors import PocError
from pocnode.core.events import parse_event
from pocnode.node import datadir
from pocnode.node.config import load_config

# The node waits up to 5 s for a lock; a reader never holds one for long, but a
# checkpoint may, briefly.
BUSY_TIMEOUT_MS = 5_000
_RECORDS = ("SELECT author, seq, id, ts, raw, received_at FROM events"
            " WHERE kind = 'record'")
# A proof is two envelopes of at most 64 KB each.
MAX_PROOF_BYTES = 256 * 1024


def node_running(data_dir: Path) -> bool:
    """True while some process holds the data directory's lock (`pocnode run`)."""
    holder = datadir.lock_holder(data_dir)
    return holder is not None and holder[1] == "pocnode run"


@dataclass(frozen=True, slots=True)
class RecordVersion:
    seq: int
    event_id: bytes
    ts: int
    received_at: int
    view: dict[str, Any]   # as the operator API's record view: entries with fields, withheld


class OfflineReader:
    """Read-only views of one data directory's database."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.config = load_config(data_dir)
        self.genesis = datadir.load_genesis(data_dir)
        self.member = self.config.member

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection | None]:
        path = self.config.db_path
        if not path.exists():
            yield None  # the node has never run: no events yet
            return
        uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
        # A read-only connection to a WAL database may create -wal and -shm beside it when
        # they are missing; the node reuses them, so they must be as private as the rest.
        old = os.umask(0o077)
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            raise CliError(f"cannot open {path} read-only: {exc}") from None
        finally:
            os.umask(old)
        try:
            yield conn
        except sqlite3.Error as exc:
            raise CliError(f"cannot read {path}: {exc} (a database of another pocnode "
                           f"version?)") from None
        finally:
            conn.close()

    # -- the directory ---------------------------------------------------------------------

    def _record_rows(self, conn: sqlite3.Connection, member: str | None = None
                     ) -> list[tuple[str, int, bytes, int, bytes, int]]:
        if member is None:
            return conn.execute(_RECORDS + " ORDER BY author, seq").fetchall()
        return conn.execute(_RECORDS + " AND author = ? ORDER BY seq", (member,)).fetchall()

    def _view(self, conn: sqlite3.Connection, author: str, event_id: bytes,
              raw: bytes) -> dict[str, Any]:
        body = parse_event(raw).body
        held = conn.execute("SELECT raw, visibility FROM disclosures WHERE event_id = ?",
                            (event_id,)).fetchall()
        opened = []
        for disclosure_raw, visibility in held:
            # The node keeps bilateral values only under mutual consent; its own are all
            # its own to see.
            if visibility not in ("members", "bilateral"):
                continue
            with contextlib.suppress(PocError):
                opened.append(check_disclosure(body, disclosure_raw))
        # Consent is not folded offline: bilateral values count as readable (awaiting) for
        # our own record, or where the node holds some of them (it did under consent).
        may = {"members"}
        if author == self.member or any(d.visibility == "bilateral" for d in opened):
            may.add("bilateral")
        return viewer_record(body, opened, may)

    def directory(self) -> list[dict[str, Any]]:
        """As GET /v1/directory: every founder and the latest record held of it."""
        latest: dict[str, tuple[int, bytes, int, bytes]] = {}
        heads: dict[str, int] = {}
        forked: set[str] = set()
        with self._connect() as conn:
            if conn is not None:
                for author, seq, event_id, ts, raw, _ in self._record_rows(conn):
                    latest[author] = (seq, event_id, ts, raw)
                heads = dict(conn.execute("SELECT author, max(seq) FROM events GROUP BY author"))
                forked = {a for (a,) in conn.execute("SELECT DISTINCT author FROM proofs")}
        out = []
        for founder in self.genesis.founders:
            record = latest.get(founder.id)
            body = parse_event(record[3]).body if record else None
            out.append({
                "member": founder.id, "name": founder.name, "events": heads.get(founder.id, 0),
                "record_seq": record[0] if record else None,
                "record_ts": record[2] if record else None,
                "entries": len(body["entries"]) if body else 0,
                "domains": sorted({e["domain"] for e in body["entries"]}) if body else [],
                "equivocated": founder.id in forked})
        return out

    def view(self, member: str) -> dict[str, Any]:
        """As GET /v1/directory/{member}."""
        if member not in self.genesis.members:
            raise CliError(f"unknown_author: {member} is not a member of this federation")
        with self._connect() as conn:
            rows = self._record_rows(conn, member) if conn is not None else []
            if not rows:
                raise CliError(f"no_record: no record from {member} is in this node's "
                               f"database yet")
            _, seq, event_id, ts, raw, _ = rows[-1]
            view = self._view(conn, member, event_id, raw)  # type: ignore[arg-type]
        return {"member": member, "seq": seq, "event_id": event_id.hex(), "ts": ts,
                "record": view}

    def history(self, member: str) -> list[RecordVersion]:
        """Every record version of ``member`` this node holds, oldest first."""
        if member not in self.genesis.members:
            raise CliError(f"unknown_author: {member} is not a member of this federation")
        out = []
        with self._connect() as conn:
            if conn is None:
                return []
            for _, seq, event_id, ts, raw, received_at in self._record_rows(conn, member):
                out.append(RecordVersion(seq=seq, event_id=event_id, ts=ts,
                                         received_at=received_at,
                                         view=self._view(conn, member, event_id, raw)))
        return out

    def proofs(self) -> list[dict[str, Any]]:
        """As GET /v1/proofs, with the proof as hex."""
        with self._connect() as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT author, seq, proof, found_at FROM proofs "
                                "ORDER BY author, seq").fetchall()
        return [{"author": a, "seq": s, "proof": p.hex(), "found_at": t} for a, s, p, t in rows]


def proof_events(proof_hex: str) -> list[dict[str, Any]]:
    """The two events of an equivocation proof (id, time), for display; [] if unreadable
    (the node checked it; this is only for showing)."""
    try:
        doc = encoding.decode(bytes.fromhex(proof_hex), max_size=MAX_PROOF_BYTES)
        return [{"id": (event := parse_event(doc[name])).id.hex(), "ts": event.ts,
                 "kind": event.kind} for name in ("a", "b")]
    except (PocError, ValueError, KeyError, TypeError):
        return []
