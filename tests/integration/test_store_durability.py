"""An acknowledged append survives kill -9: a writer process prints "ACK <seq>" only after
append_events returns; we kill it mid-stream and every acknowledged event must be there."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from pocnode.store import Store

ROOT = Path(__file__).resolve().parents[2]
FED = bytes(range(32))
ACKS_BEFORE_KILL = 200
BATCH = 10
TIMEOUT = 60.0

# The writer: batches of synthetic events (the store verifies nothing), one ACK line per
# returned append_events, bounded by a batch count and a wall-clock limit.
WRITER = """
import asyncio, os, sys, time
from pathlib import Path
from pocnode.store import Store, StoredEvent

async def main(path, batch, max_batches, max_seconds):
    store = await Store.open(Path(path), federation_id=bytes(range(32)), member="ATL")
    deadline = time.monotonic() + max_seconds
    seq = 0
    for _ in range(max_batches):
        if time.monotonic() > deadline:
            break
        events = []
        for _ in range(batch):
            seq += 1
            kind = "record" if seq % 3 == 0 else "note"
            events.append(StoredEvent(author="ATL", seq=seq, id=os.urandom(32), kind=kind,
                                      ts=seq, raw=os.urandom(1300), received_at=seq))
        await store.append_events(events)
        sys.stdout.write(f"ACK {seq}\\n")
        sys.stdout.flush()
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
"""


async def test_acknowledged_events_survive_sigkill(tmp_path: Path):
    db_path = tmp_path / "pocnode.db"
    stderr = open(tmp_path / "writer.err", "wb")  # noqa: SIM115 - handed to the child
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(db_path), str(BATCH), "100000", str(TIMEOUT),
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    stderr.close()
    acked = 0
    acks = 0
    try:
        deadline = time.monotonic() + TIMEOUT
        while acks < ACKS_BEFORE_KILL:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only {acks} acks within {TIMEOUT}s"
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=remaining)
            if not line:
                errors = (tmp_path / "writer.err").read_text()
                raise AssertionError(f"writer exited after {acks} acks: {errors}")
            word, seq = line.split()
            assert word == b"ACK" and int(seq) > acked
            acked, acks = int(seq), acks + 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL

    # Reopening runs every check of open(), quick_check included.
    store = await Store.open(db_path, federation_id=FED, member="ATL")
    try:
        head_seq = (await store.heads())["ATL"][0]
        assert head_seq >= acked
        # Batches are all or nothing: what is there beyond the last ACK is whole batches.
        assert head_seq % BATCH == 0
        assert await store.count_events() == head_seq
        ids = (await store.chain_ids())["ATL"]
        assert len(ids) == head_seq
        for seq in (1, acked // 2, acked):
            stored = await store.event("ATL", seq)
            assert stored is not None and stored.id == ids[seq - 1]
            assert len(stored.raw) == 1300
        last_record = head_seq - head_seq % 3
        assert [(r.author, r.seq) for r in await store.directory()] == [("ATL", last_record)]
    finally:
        await store.close()
