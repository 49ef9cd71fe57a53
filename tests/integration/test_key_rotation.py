"""Key rotation end to end: the old key signs the rotation, the new one signs what follows,
every node follows, and the node restarts with the new key."""

from __future__ import annotations

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow


def test_rotate_publish_restart_publish(federation_factory):
    fed = federation_factory(2)
    fed.start()
    atl, bor = fed["ATL"], fed["BOR"]
    status, answer = atl.api("POST", "/v1/key/rotate", {"reason": "annual rotation"})
    assert status == 201, answer
    assert (atl.dir / f"identity.key.old-{answer['seq']}").exists()
    status, first = atl.api("POST", "/v1/record", record("ATL", "after-rotation"))
    assert status == 201, first
    wait_until(lambda: bor.api("GET", "/v1/directory/ATL")[0] == 200, timeout=30,
               what="BOR accepts ATL's record under the new key")
    atl.stop()
    atl.start()
    atl.wait_ready()
    status, second = atl.api("POST", "/v1/record", record("ATL", "after-restart"))
    assert status == 201, second
    wait_until(lambda: bor.get("/v1/directory/ATL")["seq"] == second["seq"], timeout=30,
               what="BOR accepts the record signed after the restart")
    assert bor.get("/v1/proofs")["proofs"] == []
    assert "refused event" not in bor.log()
