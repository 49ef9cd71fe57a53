"""The README's operator's guide as a machine runs it: its command blocks, read from
README.md, carried out on this host for one or more states.

The guide is written for one state's host: /var/lib/pocnode, /etc/pocnode, member DEU,
ports 7443/7444, the user `pocnode`, systemd. Here several states share one host, so each
command is translated before it runs, and only in these ways:

- paths: /var/lib/pocnode, /var/lib/pocnode-files, /etc/pocnode, /var/backups move under
  the state's own directory in a temporary "root" (the data directory the CLI uses by
  default, /var/lib/pocnode, is given as POCNODE_DATA_DIR: the test cannot edit a default);
- names: DEU and deu.json/deu.sig become the state's, FRA its counterpart's, the state's
  name its own, "--founder ... ..." and "x.sig ... ..." every state's files;
- ports 7443/7444 become free ports, 0.0.0.0 and pocnode.example.de become 127.0.0.1;
- the user `pocnode` becomes a system user created for the test (useradd as written);
  when the test cannot create users (not root), the current user stands in for it;
- `sudo -u USER` is run by a stand-in (runuser, keeping the environment), and `pocnode`
  is this checkout's CLI, run by an interpreter the service user may execute;
- `systemctl` starts and stops the unit as deploy/pocnode.service says (User=,
  ExecStart=, Environment=, WorkingDirectory=); `journalctl` and the package
  installation lines (venv, pip, ln) are not run.

Everything else runs as written, through bash, as root (or the current user).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocnode.node.localfed import free_ports
from tests.integration.harness import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
UNIT = ROOT / "deploy" / "pocnode.service"

# The guide's own example values, which each state replaces with its own.
GUIDE_MEMBER, GUIDE_OTHER = "DEU", "FRA"
GUIDE_NAME = "Federal Republic of Germany"
GUIDE_USER = "pocnode"
GUIDE_PEER_PORT, GUIDE_OPERATOR_PORT = "7443", "7444"
# Guide paths, longest first so that a prefix never replaces part of a longer one.
GUIDE_PATHS = ("/var/lib/pocnode-files", "/var/lib/pocnode", "/etc/pocnode", "/var/backups")
# Lines that install the package: the test runs this checkout instead.
INSTALL_LINES = (re.compile(r"^python3 -m venv /opt/pocnode "), re.compile(r"^ln -s /opt/"))
# How long one CLI command may take; a node start, a convergence.
COMMAND_TIMEOUT_S = 120
START_TIMEOUT_S = 60
# The system tools live in sbin, which a test runner's PATH may lack.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def tool(name: str) -> str:
    found = shutil.which(name, path=SYSTEM_PATH)
    assert found, f"{name} not found in {SYSTEM_PATH}"
    return found


# -- reading the guide -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    section: str    # the ### heading it is under
    comment: str    # the comment line just above it in its block ("" if none)
    command: str    # continuation lines joined, trailing comment removed


def guide_steps(readme: Path = README) -> list[Step]:
    """Every command of every ```sh block under "## Operator's guide", in order."""
    text = readme.read_text(encoding="utf-8")
    guide = text.split("\n## Operator's guide", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for part in re.split(r"\n### ", guide)[1:]:
        section = part.split("\n", 1)[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", part, flags=re.DOTALL):
            comment = ""
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith("#"):
                    comment = line
                    continue
                command = re.sub(r"\s{2,}#.*$", "", line)
                steps.append(Step(section, comment, re.sub(r"\s+", " ", command)))
                comment = ""
    return steps


def section(steps: list[Step], title: str) -> list[Step]:
    chosen = [s for s in steps if s.section.lower().startswith(title.lower())]
    assert chosen, f"the guide has no commands under a heading starting {title!r}"
    return chosen


def unit_service() -> dict[str, list[str]]:
    """deploy/pocnode.service's [Service] settings (each key: its values, in order)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line
        elif current == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


# -- the host ----------------------------------------------------------------------------------


def can_create_users() -> str | None:
    """None if the test may add system users here, else why not."""
    if os.geteuid() != 0:
        return "not root: the service user cannot be created"
    for name in ("useradd", "userdel", "runuser"):
        if shutil.which(name, path=SYSTEM_PATH) is None:
            return f"{name} is not installed"
    return None


@dataclass
class State:
    member: str
    name: str
    root: Path               # this state's "/" for the guide's paths
    peer_port: int
    operator_port: int
    cwd: Path = field(init=False)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.cwd = self.root / "root"  # root's home: where a shell starts

    @property
    def lower(self) -> str:
        return self.member.lower()

    def path(self, guide_path: str) -> Path:
        return self.root / guide_path.lstrip("/")

    @property
    def data(self) -> Path:
        return self.path("/var/lib/pocnode")

    @property
    def files(self) -> Path:
        return self.path("/var/lib/pocnode-files")


class Host:
    """Several states on this machine, each following the guide."""

    def __init__(self, base: Path, members: list[tuple[str, str]], *, real_user: bool) -> None:
        self.base = base
        base.chmod(0o755)  # the service user must reach its directories under it
        self.user = (f"pocnode-t{os.getpid() % 100000}" if real_user
                     else pwd.getpwuid(os.geteuid()).pw_name)
        self.group = self.user if real_user else grp.getgrgid(os.getegid()).gr_name
        self.real_user = real_user
        self.user_created = False
        ports = free_ports(2 * len(members))
        self.states = []
        for i, (member, name) in enumerate(members):
            state = State(member, name, base / member.lower(), ports[2 * i], ports[2 * i + 1])
            for d in ("root", "var/lib", "var/backups", "etc"):
                (state.root / d).mkdir(parents=True, exist_ok=True)
                (state.root / d).chmod(0o755)
            state.root.chmod(0o755)
            self.states.append(state)
        self.bin = base / "bin"
        self.bin.mkdir()
        self.bin.chmod(0o755)
        self._write_shims()
        self.log: list[str] = []

    # -- stand-ins for the host's tools ----------------------------------------------------

    def _interpreter(self) -> list[str]:
        """A Python the service user may run, with this checkout's packages: the test's own
        interpreter when it can (CI), else the system's of the same version (the test's
        may sit under root's home, closed to other users)."""
        site = sysconfig.get_paths()["purelib"]
        candidates = [sys.executable, f"/usr/bin/python{sys.version_info.major}."
                                      f"{sys.version_info.minor}"]
        for python in candidates:
            # -S: no site-packages but ours (a system Python's may hold other versions).
            cmd = [python, "-S", "-P", "-c",
                   f"import site; site.addsitedir({site!r}); import pocnode.cli"]
            if self.real_user:
                cmd = [tool("runuser"), "-u", self.user, "--", *cmd]
            if Path(python).exists() and subprocess.run(cmd, capture_output=True,
                                                        cwd="/").returncode == 0:
                return [python, "-S", "-P", "-c",
                        f"import site, sys; site.addsitedir({site!r}); sys.argv[0] = "
                        f"'pocnode'; from pocnode.cli import main; main()"]
        raise RuntimeError(f"no Python among {candidates} that {self.user} may run with "
                           f"{site}")

    def _write_shims(self) -> None:
        sudo = self.bin / "sudo"
        sudo.write_text(
            "#!/bin/sh\n"
            "# Stands in for sudo: runs as the user, keeping the environment (the test\n"
            "# gives POCNODE_DATA_DIR in place of the guide's default data directory).\n"
            '[ "$1" = "-u" ] || { echo "sudo stand-in: only -u USER" >&2; exit 64; }\n'
            'user=$2; shift 2\n'
            'if [ "$(id -un)" = "$user" ]; then exec "$@"; fi\n'
            f'exec {tool("runuser")} -u "$user" -- "$@"\n')
        sudo.chmod(0o755)

    def write_pocnode_shim(self) -> None:
        """Once the service user exists: `pocnode` as it may run it."""
        shim = self.bin / "pocnode"
        shim.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in
                                                      self._interpreter()) + ' "$@"\n')
        shim.chmod(0o755)

    def env(self, state: State) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("POCNODE_", "VIRTUAL_ENV", "PYTHON"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{SYSTEM_PATH}"
        env["POCNODE_DATA_DIR"] = str(state.data)  # the guide's default, /var/lib/pocnode
        return env

    # -- translating and running a step ---------------------------------------------------------

    def translate(self, command: str, state: State, other: State) -> str:
        everyone = self.states
        command = re.sub(r"(?:--founder \w+\.json )+\.\.\.",
                         " ".join(f"--founder {s.lower}.json" for s in everyone), command)
        command = re.sub(r"(?:\w+\.sig )+\.\.\.",
                         " ".join(f"{s.lower}.sig" for s in everyone), command)
        marks = {}

        def mark(value: str) -> str:
            key = f"\x00{len(marks)}\x00"
            marks[key] = value
            return key

        for guide_path in GUIDE_PATHS:
            command = command.replace(guide_path, mark(str(state.path(guide_path))))
        command = command.replace(GUIDE_NAME, mark(state.name))
        command = re.sub(rf"\b({GUIDE_MEMBER}|{GUIDE_OTHER})\b",
                         lambda m: mark(state.member if m[1] == GUIDE_MEMBER else other.member),
                         command)
        command = re.sub(rf"\b({GUIDE_MEMBER.lower()}|{GUIDE_OTHER.lower()})\.(json|sig)\b",
                         lambda m: mark((state.lower if m[1] == GUIDE_MEMBER.lower()
                                         else other.lower) + "." + m[2]), command)
        command = re.sub(rf"\b{GUIDE_PEER_PORT}\b", mark(str(state.peer_port)), command)
        command = re.sub(rf"\b{GUIDE_OPERATOR_PORT}\b", mark(str(state.operator_port)), command)
        command = command.replace("0.0.0.0", "127.0.0.1").replace("pocnode.example.de",
                                                                  "127.0.0.1")
        command = re.sub(rf"(-u|-o|-g) {GUIDE_USER}\b",
                         lambda m: f"{m[1]} {mark(self.group if m[1] == '-g' else self.user)}",
                         command)
        command = command.replace(f"{GUIDE_USER}:{GUIDE_USER}",
                                  mark(f"{self.user}:{self.group}"))
        if command.startswith("useradd "):
            command = re.sub(rf" {GUIDE_USER}$", " " + mark(self.user), command)
        for key, value in marks.items():
            command = command.replace(key, value)
        return command

    def run(self, step: Step, state: State, other: State, *, stdin: str | None = None,
            ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        """Carry out one step for one state; fail the test if it exits otherwise than ``ok``."""
        command = step.command
        if any(p.match(command) for p in INSTALL_LINES):
            return subprocess.CompletedProcess(command, 0, "", "")
        if command.startswith(("systemctl ", "journalctl ", "install -m 0644 deploy/")):
            for part in command.split("&&"):
                self._service(part.strip(), state)
            return subprocess.CompletedProcess(command, 0, "", "")
        if command.startswith("useradd ") and (not self.real_user or self.user_created):
            return subprocess.CompletedProcess(command, 0, "", "")
        if not self.real_user or self.user_created:
            self.pocnode_ready()
        text = self.translate(command, state, other)
        if text.startswith("cd "):
            state.cwd = Path(shlex.split(text)[1])
            return subprocess.CompletedProcess(text, 0, "", "")
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=state.cwd,
                                env=self.env(state), input=stdin, capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT_S)
        self.log.append(f"[{state.member}] $ {text}\n{result.stdout}{result.stderr}")
        if command.startswith("useradd "):
            self.user_created = result.returncode == 0
            if self.user_created:
                self.write_pocnode_shim()
        assert result.returncode in ok, (f"{state.member}: `{text}` exited "
                                         f"{result.returncode}:\n{result.stdout}\n"
                                         f"{result.stderr}")
        return result

    def pocnode_ready(self) -> None:
        if not (self.bin / "pocnode").exists():
            self.write_pocnode_shim()

    # -- systemd, as deploy/pocnode.service says -----------------------------------------------

    def _service(self, command: str, state: State) -> None:
        words = command.split()
        if words[0] == "install":
            assert UNIT.is_file() and words[-1] == "/etc/systemd/system/", command
            return
        if words[0] == "journalctl" or words[1] == "daemon-reload":
            return
        assert words[-1] == "pocnode", f"unexpected unit in {command!r}"
        if words[1] in ("start", "restart") or words[1:3] == ["enable", "--now"]:
            if words[1] == "restart":
                self.stop_unit(state)
            self.start_unit(state)
        elif words[1] == "stop":
            self.stop_unit(state)
        else:
            raise AssertionError(f"systemctl stand-in: {command!r}")

    def start_unit(self, state: State) -> None:
        assert state.proc is None or state.proc.poll() is not None, "already started"
        self.pocnode_ready()
        unit = unit_service()
        user = unit["User"][0]
        assert user == GUIDE_USER and unit["Group"][0] == GUIDE_USER, unit["User"]
        exec_start = self.translate(unit["ExecStart"][0], state, state)
        argv = shlex.split(exec_start)
        assert argv[0] == "/usr/local/bin/pocnode", argv  # where the guide links it
        argv[0] = str(self.bin / "pocnode")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        for assignment in unit.get("Environment", []):
            key, value = assignment.split("=", 1)
            env[key] = self.translate(value, state, state)
        workdir = self.translate(unit["WorkingDirectory"][0], state, state)
        if self.real_user:
            argv = [tool("runuser"), "-u", self.user, "--", *argv]
        log = (state.root / "journal.log").open("ab")
        state.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_until(lambda: self._answers(state), timeout=START_TIMEOUT_S,
                   what=f"{state.member}'s node answers")

    def _answers(self, state: State) -> bool:
        if state.proc is not None and state.proc.poll() is not None:
            raise AssertionError(f"{state.member}'s node exited {state.proc.returncode}:\n"
                                 + self.journal(state)[-3000:])
        return self.api(state, "/v1/health") is not None

    def stop_unit(self, state: State) -> None:
        if state.proc is None:
            return
        # systemd signals the service's main process, the node itself (runuser, which
        # stands in for User= here, would die of the signal before its child exits). Its
        # pid is in the data directory's lock file, which the node holds while it runs.
        node_pid = json.loads((state.data / "lock").read_text())["pid"]
        os.kill(node_pid, signal.SIGTERM)
        try:
            code = state.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(state.proc.pid, signal.SIGKILL)
            state.proc.wait(timeout=10)
            raise AssertionError(f"{state.member}'s node ignored SIGTERM") from None
        state.proc = None
        assert code == 0, f"{state.member}'s node exited {code} on SIGTERM"

    def journal(self, state: State) -> str:
        path = state.root / "journal.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- looking at a node as a test (not as the guide) ----------------------------------------

    def api(self, state: State, path: str) -> Any:
        """GET on the node's operator API (the test reads the token as root may); None if
        the node does not answer."""
        token = (state.data / "token").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{state.operator_port}{path}")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def exchange_files(self, patterns: tuple[str, ...]) -> None:
        """The founders' out-of-band channel: every state gets the others' ceremony files."""
        for source in self.states:
            for pattern in patterns:
                for f in source.files.glob(pattern):
                    for target in self.states:
                        if not (target.files / f.name).exists():
                            shutil.copyfile(f, target.files / f.name)
                            (target.files / f.name).chmod(0o644)

    def close(self) -> None:
        for state in self.states:
            if state.proc is not None and state.proc.poll() is None:
                with_suppress_kill(state.proc)
            state.proc = None
        if self.user_created:
            subprocess.run([tool("userdel"), self.user], capture_output=True, timeout=30)
            self.user_created = False


def with_suppress_kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=10)
