"""CONTRACT STUB: implemented by the storage task. Signatures and docstrings are binding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from pocnode.core.errors import PocError

SCHEMA_VERSION = 1
# PRAGMA application_id: "POCN" in ASCII, so `file` and SQLite tools can tell our databases.
APPLICATION_ID = 0x504F434E


class StoreError(PocError):
    """The database cannot be used as it is: foreign, newer, corrupt, or of another node."""

    code = "store"


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
    endpoint: str
    member: str | None
    source: str          # "genesis" | "record" | "config"
    last_contact: int | None   # ms
    last_error: str | None
    failures: int


class Store:
    @classmethod
    async def open(cls, path: Path, *, federation_id: bytes, member: str) -> Store:
        """Open or create. New file: create schema, set application_id, user_version, and
        meta(federation_id, member). Existing file: check application_id, user_version
        (migrate forward if older, refuse if newer), PRAGMA quick_check == ok, and that
        meta federation_id/member match; else StoreError. Always WAL + synchronous=FULL."""
        raise NotImplementedError

    async def close(self) -> None: ...

    # -- events (append-only) --
    async def append_events(self, events: Iterable[StoredEvent]) -> int:
        """Insert in ONE transaction and commit durably before returning. A row with the same
        (author, seq, id) already present is skipped (idempotent); the same (author, seq) with
        a different id raises StoreError (the caller must have refused it as an equivocation).
        Returns the number of rows actually inserted. Also updates the directory row for
        every inserted kind == "record" event whose seq is greater than the row's."""
        raise NotImplementedError

    async def heads(self) -> dict[str, tuple[int, bytes, int]]:
        """author -> (seq, id, ts) of the highest stored event per author."""
        raise NotImplementedError

    async def chain_ids(self) -> dict[str, list[bytes]]:
        """author -> ids ordered by seq (index 0 is seq 1). For rebuilding a Verifier."""
        raise NotImplementedError

    async def events_of_kind(self, kind: str) -> list[StoredEvent]:
        """All events of a kind, ordered by (author, seq). E.g. key.rotate, node.keys."""
        raise NotImplementedError

    async def events_from(self, author: str, from_seq: int, *, limit: int,
                          max_bytes: int) -> list[bytes]:
        """Raw envelopes of author with seq >= from_seq, ascending, stopping at limit rows or
        before the total raw size would exceed max_bytes (but at least one row if any)."""
        raise NotImplementedError

    async def event(self, author: str, seq: int) -> StoredEvent | None: ...

    async def iter_events(self) -> AsyncIterator[StoredEvent]:
        """Every event, ordered by (author, seq), fetched in batches (bounded memory)."""
        raise NotImplementedError
        yield  # pragma: no cover

    async def count_events(self) -> int: ...

    # -- equivocation proofs --
    async def add_proof(self, author: str, seq: int, proof: bytes, found_at: int) -> bool:
        """Keep one proof per (author, seq); True if it was new. Durable on return."""
        raise NotImplementedError

    async def proofs(self) -> list[tuple[str, int, bytes, int]]: ...

    # -- disclosures (checked by the caller against the record's digests) --
    async def add_disclosures(self, rows: Iterable[tuple[str, bytes, bytes, str, str, str,
                                                         bytes]]) -> int:
        """rows of (author, event_id, digest, entry, field, visibility, raw); idempotent on
        (event_id, digest). Durable on return. Returns rows inserted."""
        raise NotImplementedError

    async def disclosures_for(self, event_id: bytes,
                              visibilities: tuple[str, ...] = ("members", "bilateral"),
                              ) -> list[bytes]:
        """Raw disclosures held for one record event, of the given visibilities."""
        raise NotImplementedError

    async def delete_disclosures(self, author: str, visibility: str) -> int:
        """Erase what we hold of an author at a visibility (consent withdrawn). Durable."""
        raise NotImplementedError

    # -- derived tables --
    async def directory(self) -> list[DirectoryRow]: ...

    async def rebuild_derived(self) -> None:
        """Drop and recompute the directory from events (kind == "record", max seq per
        author). Peers learned from records are recomputed by the node, not here."""
        raise NotImplementedError

    async def upsert_peer(self, endpoint: str, *, member: str | None, source: str) -> None: ...

    async def record_contact(self, endpoint: str, *, ok: bool, at: int,
                             error: str | None = None) -> None:
        """ok: last_contact = at, failures = 0, last_error = None. Not ok: failures += 1,
        last_error = error (truncated to 200 chars)."""
        raise NotImplementedError

    async def peers(self) -> list[PeerRow]: ...

    # -- meta --
    async def get_meta(self, key: str) -> bytes | None: ...

    async def set_meta(self, key: str, value: bytes) -> None: ...
