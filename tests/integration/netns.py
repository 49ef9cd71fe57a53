"""A switch and N hosts in network namespaces, for fault tests: split and heal at will.

Layout (all inside namespaces; nothing is created in the host's own namespace): namespace
``pft<pid>s`` holds two bridges, ``br0`` and ``br1``; namespace ``pft<pid>h<I>`` (I = 1..N)
holds ``eth0``, one end of a veth pair whose other end is port ``portI`` in the switch, with
address 10.232.0.(100+I)/24. ``<pid>`` is the test process's: two runs at once (two
sessions on one machine) never touch each other's labs, and a lab whose process is gone is
a leftover. All ports start on ``br0``. A partition moves some ports to ``br1``: frames no
longer cross between the groups, so packets are dropped silently, as on a real network
partition (a connection attempt times out, it is not refused). Healing moves the ports
back. Deleting the namespaces deletes every link, bridge and address with them.

The names differ from deploy/netns-federation.sh's (``pocsw``, ``pocI``, 10.231.0.0/24), so
the two never touch each other's namespaces.

The test process itself talks to a host's loopback (the operator API binds 127.0.0.1 only)
from a thread that has entered the host's namespace with setns(2): the network namespace is
per thread, and a socket belongs to the namespace it was created in.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PREFIX = "pft"
_OURS = re.compile(rf"{PREFIX}(\d+)(s|h\d+|probe[0-9a-f]+)")
SUBNET = "10.232.0"
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
# `ip` commands finish in milliseconds; seconds mean the kernel or the machine is stuck.
IP_TIMEOUT_S = 20
# A process sent SIGKILL is gone within milliseconds unless the machine is stuck.
KILL_WAIT_S = 10


class NetnsUnavailable(Exception):
    """This machine cannot run namespace tests; the message says why."""


def switch_name(owner: int | None = None) -> str:
    return f"{PREFIX}{owner or os.getpid()}s"


def host_name(i: int, owner: int | None = None) -> str:
    return f"{PREFIX}{owner or os.getpid()}h{i}"


def address(i: int) -> str:
    return f"{SUBNET}.{100 + i}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({out.returncode}): "
                           f"{out.stderr.strip()}")
    return out


def cannot_run() -> str | None:
    """Why namespaces, veth pairs and bridges cannot be made here, or None."""
    if os.geteuid() != 0:
        return f"needs root to create network namespaces (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian package iproute2), not found on PATH"
    probe = f"{PREFIX}{os.getpid()}probe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    try:
        for args in (("link", "add", "br0", "type", "bridge"),
                     ("link", "add", "a0", "type", "veth", "peer", "name", "b0")):
            out = _ip("-n", probe, *args, check=False)
            if out.returncode != 0:
                return f"`ip link add {' '.join(args[2:])}` does not work in a namespace: " \
                       f"{out.stderr.strip()}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


def our_namespaces(*, leftovers_only: bool = False) -> list[str]:
    """Namespaces of fault-test labs; with ``leftovers_only``, those whose test process is
    gone or is this one (a lab of this process that is not being torn down is left over)."""
    out = _ip("netns", "list").stdout
    names = [line.split()[0] for line in out.splitlines() if line.split()]
    found = []
    for name in names:
        match = _OURS.fullmatch(name)
        if match is None:
            continue
        owner = int(match.group(1))
        if not leftovers_only or owner == os.getpid() or not _alive(owner):
            found.append(name)
    return sorted(found)


def namespace_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Pids still alive (not zombies) after ``timeout`` seconds of polling."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.05)
    return left


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def remove_leftovers() -> list[str]:
    """Kill every process inside our namespaces (each by its pid) and delete the namespaces.

    Returns what was found, for the test to report. Raises RuntimeError if something could
    not be removed: a test must not start on top of another run's network.
    """
    found = []
    for ns in our_namespaces(leftovers_only=True):
        pids = namespace_pids(ns)
        found.append(f"namespace {ns} (processes {pids or 'none'})")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stuck = _wait_gone(pids, KILL_WAIT_S)
        if stuck:
            raise RuntimeError(f"processes {stuck} in {ns} survive SIGKILL")
        _ip("netns", "delete", ns)
    if our_namespaces(leftovers_only=True):
        raise RuntimeError(f"could not delete namespaces: "
                           f"{our_namespaces(leftovers_only=True)}")
    return found


class _NsThread:
    """One worker thread that lives inside a namespace: calls submitted run there."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{ns}", initializer=self._enter)

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_DIR / self.ns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {self.ns}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        return self._pool.submit(fn).result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Lab:
    """Switch and hosts; :meth:`teardown` removes everything and may be called any time."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 99:
            raise ValueError(f"1..99 hosts, got {n}")
        self.n = n
        self.switch = switch_name()
        self._threads: dict[str, _NsThread] = {}
        self.groups: list[list[int]] = [list(range(1, n + 1))]

    def create(self) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        for bridge in ("br0", "br1"):
            _ip("-n", sw, "link", "add", bridge, "type", "bridge")
            _ip("-n", sw, "link", "set", bridge, "up")
        for i in range(1, self.n + 1):
            ns = host_name(i)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}",
                "netns", sw)
            _ip("-n", sw, "link", "set", f"port{i}", "master", "br0")
            _ip("-n", sw, "link", "set", f"port{i}", "up")
            _ip("-n", ns, "addr", "add", f"{address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def split(self, second: Iterable[int]) -> None:
        """Move the ports of hosts ``second`` to br1: the two groups can no longer talk."""
        moved = sorted(second)
        for i in moved:
            _ip("-n", self.switch, "link", "set", f"port{i}", "master", "br1")
        self.groups = [[i for i in range(1, self.n + 1) if i not in moved], moved]

    def heal(self) -> None:
        for i in range(1, self.n + 1):
            _ip("-n", self.switch, "link", "set", f"port{i}", "master", "br0")
        self.groups = [list(range(1, self.n + 1))]

    def bridge_of(self) -> dict[int, str]:
        """Which bridge each host's port is on now, read back from the kernel."""
        out = _ip("-n", self.switch, "-o", "link", "show").stdout
        where = {}
        for line in out.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith("port") and " master " in line:
                where[int(name[4:])] = line.split(" master ")[1].split()[0]
        return where

    def run_in(self, i: int, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run ``fn`` on a thread inside host i's namespace (sockets it opens live there)."""
        ns = host_name(i)
        thread = self._threads.get(ns)
        if thread is None:
            thread = self._threads[ns] = _NsThread(ns)
        return thread.call(fn, timeout)

    def popen(self, i: int, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """A process in host i's namespace; `ip netns exec` execs it, so its pid is ours."""
        return subprocess.Popen(["ip", "netns", "exec", host_name(i), *argv], **kwargs)

    def teardown(self) -> list[str]:
        """Kill whatever still runs in this process's namespaces and delete them."""
        for thread in self._threads.values():
            thread.close()
        self._threads.clear()
        return remove_leftovers()
