"""A federation across network namespaces (deploy/netns-federation.sh): each node its own
host with its own address. Skipped cleanly where namespaces cannot be made (not root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "netns-federation.sh"


def _namespaces_work() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    probe = f"pocprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if any(line.split()[0].startswith("poc") for line in existing.splitlines() if line):
        return "poc* namespaces already exist (another run?)"
    return None


def _api(ns: str, data_dir: Path, method: str, path: str, body=None) -> tuple[int, object]:
    token = (data_dir / "token").read_text().strip()
    code = (
        "import json,sys,urllib.request,urllib.error\n"
        "req=urllib.request.Request('http://127.0.0.1:7444'+sys.argv[1],method=sys.argv[2],"
        "data=(sys.argv[4].encode() if sys.argv[4] else None))\n"
        "req.add_header('Authorization','Bearer '+sys.argv[3])\n"
        "req.add_header('Content-Type','application/json')\n"
        "try:\n r=urllib.request.urlopen(req,timeout=5)\n"
        " print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, path, method,
                          token, json.dumps(body) if body is not None else ""],
                         capture_output=True, text=True, timeout=20)
    status, _, text = out.stdout.partition("\n")
    return int(status or 0), (json.loads(text) if text.strip() else None)


def test_federation_across_namespaces(tmp_path):
    reason = _namespaces_work()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "fed"
    env = {**os.environ, "POCNODE_PYTHON": sys.executable}
    up = subprocess.run(["bash", str(SCRIPT), "up", str(root), "3"], capture_output=True,
                        text=True, env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        dirs = {p.name: p for p in root.iterdir()}
        ns = {name: (d / "netns").read_text().strip() for name, d in dirs.items()}
        for name, d in dirs.items():
            wait_until(lambda n=name, d=d: _api(ns[n], d, "GET", "/v1/status")[1]["authors"] == 3,
                       timeout=60, every=0.5, what=f"{name} knows all 3 nodes across hosts")
        status, published = _api(ns["ATL"], dirs["ATL"], "POST", "/v1/record",
                                 record("ATL", "netns"))
        assert status == 201, published
        wait_until(lambda: _api(ns["CAL"], dirs["CAL"], "GET", "/v1/directory/ATL")[0] == 200,
                   timeout=60, every=0.5, what="CAL holds ATL's record across namespaces")
        peers = _api(ns["CAL"], dirs["CAL"], "GET", "/v1/peers")[1]["peers"]
        assert all(p["endpoint"].startswith("https://10.231.0.1") for p in peers)
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down", str(root)], capture_output=True,
                              text=True, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in left.splitlines() if line.split()[0].startswith("poc")]
    running = subprocess.run(["pgrep", "-af", "pocnode run"], capture_output=True, text=True)
    assert str(root) not in running.stdout
