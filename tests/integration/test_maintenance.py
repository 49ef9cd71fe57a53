"""`pocnode db check` re-verifies a real node's store; `db rebuild` restores derived tables."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pocnode", *args], capture_output=True,
                          text=True, timeout=60)


def test_db_check_and_rebuild_on_a_real_store(federation_factory):
    fed = federation_factory(2)
    fed.start()
    assert fed["ATL"].api("POST", "/v1/record", record("ATL", "db"))[0] == 201
    bor = fed["BOR"]
    wait_until(lambda: bor.api("GET", "/v1/directory/ATL")[0] == 200, timeout=30,
               what="BOR has ATL's record")
    running = _cli("db", "check", "--data-dir", str(bor.dir))
    assert running.returncode == 1 and "stop it first" in running.stderr
    bor.stop()
    ok = _cli("db", "check", "--data-dir", str(bor.dir))
    assert ok.returncode == 0, ok.stderr
    assert "every event and proof verifies" in ok.stdout
    with sqlite3.connect(bor.dir / "pocnode.db") as conn:
        conn.execute("DELETE FROM directory")
    rebuilt = _cli("db", "rebuild", "--data-dir", str(bor.dir))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 members with a record" in rebuilt.stdout
    bor.start()
    bor.wait_ready()
    assert bor.get("/v1/directory/ATL")["record"]["entries"]
