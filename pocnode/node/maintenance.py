"""Offline maintenance of a node's database: re-verification and rebuilding derived tables.

Run with the daemon stopped: each command takes the data directory's lock (datadir.py),
so it refuses while a node runs, and no node starts while it works. ``check`` replays
every stored event through the same :class:`~pocnode.core.chain.Verifier` the node and
auditors use, from the genesis on:
the store is trusted by the running node (it only ever holds what was verified), and
this is how an operator or auditor confirms that trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pocnode.core.chain import Verifier
from pocnode.core.errors import PocError
from pocnode.node import datadir
from pocnode.node.config import load_config
from pocnode.store import Store


@dataclass(frozen=True, slots=True)
class CheckReport:
    events: int
    authors: int
    proofs: int
    problems: list[str]


def lock_offline(data_dir: Path, what: str) -> datadir.DataDirLock:
    """Take the data directory's lock for an offline command, or refuse naming the running
    node's pid. Held until the command ends, so a node cannot start on a database being
    checked or rebuilt (and the command never works on a live database)."""
    try:
        return datadir.lock_data_dir(data_dir, what)
    except datadir.DataDirLocked as exc:
        shown = f"pid {exc.pid}" if exc.pid is not None else "pid unknown"
        raise datadir.DataDirError(
            f"{exc.holder} is running ({shown}) on {data_dir}, and `{what}` opens the "
            f"database offline: stop it first (systemctl stop pocnode, or kill "
            f"{exc.pid if exc.pid is not None else 'it'})") from None


async def _open(data_dir: Path) -> tuple[Store, Verifier]:
    config = load_config(data_dir)
    genesis = datadir.load_genesis(data_dir)
    store = await Store.open(config.db_path, federation_id=genesis.id, member=config.member)
    return store, Verifier(genesis)


async def check(data_dir: Path) -> CheckReport:
    with lock_offline(data_dir, "pocnode db check"):
        return await _check(data_dir)


async def _check(data_dir: Path) -> CheckReport:
    store, verifier = await _open(data_dir)
    problems: list[str] = []
    count = 0
    try:
        async for stored in store.iter_events():
            count += 1
            try:
                event = verifier.ingest(stored.raw)
            except PocError as exc:
                problems.append(f"{stored.author} #{stored.seq}: {exc}")
                continue
            if (event.author, event.seq, event.id) != (stored.author, stored.seq, stored.id):
                problems.append(f"{stored.author} #{stored.seq}: stored under the wrong key")
        for author, seq, proof, _ in await store.proofs():
            try:
                verifier.check_proof(proof)
            except PocError as exc:
                problems.append(f"proof {author} #{seq}: {exc}")
        proofs = len(await store.proofs())
    finally:
        await store.close()
    authors = sum(1 for c in verifier.chains.values() if c.ids)
    return CheckReport(events=count, authors=authors, proofs=proofs, problems=problems)


async def rebuild(data_dir: Path) -> int:
    with lock_offline(data_dir, "pocnode db rebuild"):
        return await _rebuild(data_dir)


async def _rebuild(data_dir: Path) -> int:
    store, _ = await _open(data_dir)
    try:
        await store.rebuild_derived()
        return len(await store.directory())
    finally:
        await store.close()
