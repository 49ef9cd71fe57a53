"""A federation across network namespaces (deploy/netns-federation.sh): each node its own
host with its own address, gossiping over a bridge as states' nodes would over a network.

Needs root and working network namespaces; skipped, with the reason, anywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import record, wait_until

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "netns-federation.sh"
MEMBERS = 3
OPERATOR_PORT = 7444  # inside each namespace, as the script sets it
# `up` waits for every node to answer; a stop takes a second or two, SIGKILL after 20 s.
SCRIPT_TIMEOUT_S = 120
# Gossip across the bridge is as fast as on loopback; this leaves room for a slow CI box.
CONVERGE_TIMEOUT_S = 60

# Runs inside a node's namespace: one operator API request, the token read from its file.
_REQUEST = """
import sys, urllib.error, urllib.request
port, method, path, token_file = sys.argv[1:5]
body = sys.stdin.buffer.read() or None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
with open(token_file) as f:
    req.add_header("Authorization", "Bearer " + f.read().strip())
if body is not None:
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=5) as resp:
        status, raw = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    status, raw = exc.code, exc.read()
# One layer for both writes: text and binary stdout buffer separately, and their order is
# only kept when Python runs unbuffered.
sys.stdout.buffer.write(f"{status}\\n".encode() + raw)
"""


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def _our_namespaces() -> list[str]:
    out = _run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.split()
            and line.split()[0].startswith("poc")]


def _cannot_run() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs ip (iproute2)"
    probe = f"pocprobe-{uuid.uuid4().hex[:8]}"
    made = _run("ip", "netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    _run("ip", "netns", "delete", probe)
    cli = _run(sys.executable, "-m", "pocnode", "federation", "create", "--help")
    if cli.returncode != 0:
        return "`pocnode federation create` is not available"
    if _our_namespaces():
        # The script uses fixed names (pocsw, poc1...); another run's would be deleted.
        return f"poc* namespaces already exist: {' '.join(_our_namespaces())}"
    return None


def _script(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POCNODE_PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), command, *args], capture_output=True,
                          text=True, env=env, timeout=SCRIPT_TIMEOUT_S)


def _api(member_dir: Path, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """An operator API request made inside the member's namespace, as its operator would."""
    ns = (member_dir / "netns").read_text().strip()
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _REQUEST, str(OPERATOR_PORT),
         method, path, str(member_dir / "token")],
        input=json.dumps(body).encode() if body is not None else b"",
        capture_output=True, timeout=20)
    if out.returncode != 0:
        raise AssertionError(f"{method} {path} in {ns} failed: "
                             f"{out.stderr.decode(errors='replace')[-500:]}")
    status, _, raw = out.stdout.partition(b"\n")
    return int(status), json.loads(raw) if raw.strip() else None


def _node_processes(root: Path) -> list[str]:
    """Command lines of `pocnode run` processes whose data directory is under root."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited while we looked
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if "pocnode run" in line and str(root) in line:
            found.append(f"{proc.name}: {line}")
    return found


@pytest.fixture
def netns_root(tmp_path: Path) -> Iterator[Path]:
    reason = _cannot_run()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "fed"
    try:
        yield root
    finally:
        _script("down", str(root))  # idempotent: the test's own down may have run already


def test_federation_across_namespaces(netns_root: Path) -> None:
    root = netns_root
    up = _script("up", str(root), str(MEMBERS))
    assert up.returncode == 0, up.stdout + up.stderr
    dirs = sorted(d for d in root.iterdir() if (d / "config.toml").is_file())
    assert [d.name for d in dirs] == ["ATL", "BOR", "CAL"]
    first, third = dirs[0], dirs[2]
    assert [(d / "netns").read_text().strip() for d in dirs] == ["poc1", "poc2", "poc3"]

    # Every node publishes its node.keys at start: all 3 authors everywhere means every
    # node reached every other across the bridge.
    for d in dirs:
        wait_until(lambda d=d: _api(d, "GET", "/v1/status")[1]["authors"] == MEMBERS,
                   timeout=CONVERGE_TIMEOUT_S, every=0.25,
                   what=f"{d.name} holds events of all {MEMBERS} members")

    status, published = _api(first, "POST", "/v1/record", record("ATL", "netns"))
    assert status == 201, published
    assert published["member"] == "ATL"

    def third_has_it() -> bool:
        status, view = _api(third, "GET", "/v1/directory/ATL")
        # The public value carries the marker: the record itself arrived, not just a head.
        return status == 200 and "ATL CERT netns" in json.dumps(view)

    wait_until(third_has_it, timeout=CONVERGE_TIMEOUT_S, every=0.25,
               what="CAL holds ATL's record, gossiped across namespaces")
    peers = _api(third, "GET", "/v1/peers")[1]["peers"]
    assert peers and all(p["endpoint"].startswith("https://10.231.0.1") for p in peers), peers

    down = _script("down", str(root))
    assert down.returncode == 0, down.stdout + down.stderr
    assert _node_processes(root) == []
    assert _our_namespaces() == []
