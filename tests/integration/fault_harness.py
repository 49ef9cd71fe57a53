"""Helpers for the fault tests (test_faults.py): figures, hard deadlines, operator calls
that work from any thread, and nodes run inside network namespaces or with a shifted clock.

Nothing here fakes a pocnode component: every node is a `pocnode run` process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pocnode.node.localfed import LocalMember
from tests.integration.harness import Node
from tests.integration.netns import Lab

SKEWED_LAUNCHER = Path(__file__).resolve().with_name("skewed_clock.py")
# A node stops gracefully on SIGTERM within a second or two; SIGKILL after this.
STOP_TIMEOUT_S = 20


class DeadlinePassed(AssertionError):
    """A test ran past its hard deadline."""


@contextlib.contextmanager
def hard_deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise DeadlinePassed in the test's (main) thread once ``seconds`` have passed.

    Every wait in these tests has its own deadline; this one bounds the sum, whatever a
    blocking call does. The fixtures' teardown runs after it is disarmed.
    """
    def expire(signum: int, frame: Any) -> None:
        raise DeadlinePassed(f"{what}: hard deadline of {seconds:.0f} s passed")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def operator_call(port: int, token: str, method: str, path: str, body: Any = None,
                  timeout: float = 10) -> tuple[int, Any]:
    """One operator API request to 127.0.0.1:port; (status, decoded JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")


def log_excerpt(text: str, needles: tuple[str, ...], limit: int = 8) -> list[str]:
    """The first ``limit`` log lines holding any of ``needles``."""
    return [line[:400] for line in text.splitlines()
            if any(n in line for n in needles)][:limit]


class FaultNode(Node):
    """A harness node that may run with a shifted wall clock (through skewed_clock.py) and
    whose log may live outside its data directory (a full disk must not swallow it)."""

    def __init__(self, m: LocalMember, log_path: Path | None = None) -> None:
        super().__init__(m)
        self.shift_s = 0.0
        self.log_path = log_path or self.dir / "node.log"

    def argv(self, *args: str, shift_s: float | None = None) -> list[str]:
        shift = self.shift_s if shift_s is None else shift_s
        if shift == 0:
            return [sys.executable, "-m", "pocnode", *args]
        return [sys.executable, str(SKEWED_LAUNCHER), f"{shift:+.3f}", *args]

    def start(self, env: dict[str, str] | None = None) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        (self.dir / "run.json").unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv("run", "--data-dir", str(self.dir)),
                                         stdout=log, stderr=log, env=env,
                                         stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`pocnode ARGS` as this node's operator runs it: on the node's own clock."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout)


class NetnsNode:
    """A `pocnode run` process inside host ``index`` of a :class:`Lab`."""

    def __init__(self, lab: Lab, index: int, m: LocalMember) -> None:
        self.lab = lab
        self.index = index
        self.m = m
        self.member = m.member
        self.dir = m.data_dir
        self.token = (self.dir / "token").read_text().strip()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        (self.dir / "run.json").unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.dir / "node.log", "ab") as log:
            self.proc = self.lab.popen(
                self.index, [sys.executable, "-m", "pocnode", "run", "--data-dir",
                             str(self.dir)], stdout=log, stderr=log, env=env,
                stdin=subprocess.DEVNULL)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 5
            ) -> tuple[int, Any]:
        port, token = self.m.operator_port, self.token
        return self.lab.run_in(self.index, lambda: operator_call(
            port, token, method, path, body, timeout), timeout=timeout + 5)

    def get(self, path: str) -> Any:
        status, body = self.api("GET", path)
        assert status == 200, (self.member, path, status, body)
        return body

    def running(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.member} exited with {self.proc.returncode}:\n"
                                 + self.log()[-3000:])
        return True

    def ready(self) -> bool:
        return self.running() and self.api("GET", "/v1/health", timeout=2)[0] == 200

    def log(self) -> str:
        path = self.dir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)
