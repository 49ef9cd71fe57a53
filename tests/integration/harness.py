"""Real federations for integration tests: `pocnode run` processes on loopback.

Nothing here fakes a pocnode component: nodes are separate processes talking
HTTPS to each other; the tests talk to them as an operator would, through the
operator API, or as a peer would, through the peer port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pocnode.node.config import DEFAULT_FANOUT
from pocnode.node.localfed import LocalMember, create_federation


def wait_until(check: Callable[[], Any], *, timeout: float, every: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a node not up yet, say; try again
            last_error = exc
        time.sleep(every)
    raise AssertionError(f"{what} not met within {timeout}s (last error: {last_error})")


class Node:
    def __init__(self, m: LocalMember) -> None:
        self.m = m
        self.member = m.member
        self.dir = m.data_dir
        self.proc: subprocess.Popen | None = None
        self.token = (self.dir / "token").read_text().strip()

    def start(self, env: dict[str, str] | None = None, *,
              traffic_dump: Path | None = None) -> None:
        """Start `pocnode run`; with ``traffic_dump``, through the test launcher that writes
        every plaintext byte the node receives to that file."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        (self.dir / "run.json").unlink(missing_ok=True)
        log = open(self.dir / "node.log", "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # -P: the current directory must not shadow the installed package (see
        # pocnode.cli.federation_cmds.node_command).
        entry = ([str(Path(__file__).with_name("traffic_launcher.py")), str(traffic_dump)]
                 if traffic_dump is not None else ["-m", "pocnode"])
        self.proc = subprocess.Popen([sys.executable, "-P", *entry, "run", "--data-dir",
                                      str(self.dir)], stdout=log, stderr=log, env=env)
        log.close()

    def wait_ready(self, timeout: float = 60) -> None:
        """Up and answering. The default allows for a loaded machine: a start unlocks an
        Argon2id key file (a quarter second alone, seconds when the cores are busy)."""
        wait_until(lambda: self.running() and self.api("GET", "/v1/health")[0] == 200,
                   timeout=timeout, what=f"{self.member} ready")

    def running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.member} exited with {self.proc.returncode}:\n"
                                 + self.log()[-3000:])
        return self.proc is not None

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        path = self.dir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            timeout: float = 10) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.m.operator_port}{path}",
                                     data=data, method=method)
        req.add_header("Authorization", f"Bearer {token if token is not None else self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        ctype = "json"
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            ctype = "text"
        return status, raw.decode(errors="replace") if ctype == "text" else raw

    def configure(self, key: str, value: str) -> None:
        """Uncomment and set one `# key = default` line of config.toml."""
        path = self.dir / "config.toml"
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.lstrip("# ").startswith(f"{key} ="):
                lines[i] = f"{key} = {value}"
                path.write_text("\n".join(lines) + "\n")
                return
        raise AssertionError(f"no {key} in config.toml")

    def get(self, path: str) -> Any:
        status, body = self.api("GET", path)
        assert status == 200, (status, body)
        return body

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


class Federation:
    def __init__(self, root: Path, n: int, *, interval_ms: int = 300,
                 fanout: int = DEFAULT_FANOUT,
                 alg: str = "ed25519", offline: dict | None = None,
                 hpke_suite: str = "x25519", exercise: bool = False,
                 window_ms: int = 10_000, rules: list[str] | None = None) -> None:
        governance = None
        if exercise or rules:
            from pocnode.cli.governance_cmds import parse_rules
            from pocnode.core.genesis import default_governance

            governance = parse_rules(tuple(rules or ()), default_governance(),
                                     window_ms if exercise else None)
        self.root = root
        self.members = create_federation(root, n, interval_ms=interval_ms, fanout=fanout,
                                         alg=alg, offline=offline, hpke_suite=hpke_suite,
                                         governance=governance, exercise=exercise)
        self.nodes = {m.member: Node(m) for m in self.members}
        self.external: list[int] = []  # pids of nodes the CLI started (federation join)

    def adopt(self, member: str) -> Node:
        """A node started by the CLI in this federation's directory (federation join):
        talked to like the others, and stopped with them."""
        from pocnode.node.config import load_config
        from pocnode.node.localfed import LocalMember

        d = self.root / member
        config = load_config(d)
        node = Node(LocalMember(member=member, name=member, data_dir=d,
                                peer_port=config.peer_port,
                                operator_port=config.operator_port))
        pid = int((d / "node.pid").read_text())
        self.external.append(pid)
        self.nodes[member] = node
        wait_until(lambda: node.api("GET", "/v1/health")[0] == 200, timeout=30,
                   what=f"{member} answers")
        return node

    def __getitem__(self, member: str) -> Node:
        return self.nodes[member]

    def start(self, members: list[str] | None = None) -> None:
        chosen = members or list(self.nodes)
        for m in chosen:
            self.nodes[m].start()
        for m in chosen:
            self.nodes[m].wait_ready()

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(timeout=10)
                node.proc = None
        for pid in self.external:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)  # waiting for a process we signalled, with a deadline
            else:
                os.kill(pid, signal.SIGKILL)
        self.external.clear()


def record(member: str, marker: str) -> dict[str, Any]:
    """A small record with one value of each visibility, each carrying ``marker``."""
    return {"template": 1, "entries": [
        {"id": "cert", "domain": "technical", "visibility": "public",
         "organisation": f"{member} CERT {marker}", "email": f"cert-{marker}@example.org",
         "phone": "+41225550100"},
        {"id": "mfa", "domain": "diplomatic", "visibility": "members",
         "organisation": f"{member} Foreign Ministry", "person": f"Member-{marker}",
         "email": f"mfa-{marker}@example.org"},
        {"id": "duty", "domain": "policy", "visibility": "bilateral",
         "organisation": f"{member} Cyber Policy", "person": f"Bilateral-{marker}",
         "phone": "+41225550111"},
    ]}
