"""Durable storage of events, proofs, disclosures and derived tables (aiosqlite).

The contract the node relies on:

* **An acknowledged event is on disk.** :meth:`Store.append_events` returns only after
  the transaction holding the events has committed with ``synchronous=FULL`` in WAL mode,
  so a 2xx sent after it survives ``kill -9`` and power loss.
* **Events are append-only.** Nothing updates a row of ``events``, and a row leaves it
  only into ``forked_events``, the evidence of a proven fork (PROTOCOL.md §4.6); derived
  tables (``directory``) can be dropped and rebuilt from the events.
* **Refuse, never repair.** Opening a file that is not a pocnode database, one of another
  federation or member, one from a newer schema, or one failing SQLite's integrity check
  raises :class:`StoreError` with a message naming the file and the problem.

Verification is not the store's business: it stores what the core has accepted.
"""

from pocnode.store.db import (
    SCHEMA_VERSION,
    DirectoryRow,
    PeerRow,
    Store,
    StoredEvent,
    StoreError,
)

__all__ = ["SCHEMA_VERSION", "DirectoryRow", "PeerRow", "Store", "StoreError", "StoredEvent"]
