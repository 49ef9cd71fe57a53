"""`pocnode federation ...` and `pocnode demo`: whole federations on one machine.

For tests, exercises and training. Each member's node is a real `pocnode run` process in
its own session, logging to ``DIR/<MEMBER>/node.log``; `down` stops them all and checks
that none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pocnode.cli.client import CliError, OperatorClient
from pocnode.cli.options import JSON, PASSPHRASE
from pocnode.cli.record_cmds import print_record_view
from pocnode.cli.render import table
from pocnode.core.errors import PocError
from pocnode.node.config import CONFIG_FILE, load_config
from pocnode.node.localfed import create_federation

console = Console(highlight=False)
# A node on a busy laptop starts in about a second; thirty means something is wrong.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def member_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise CliError(f"{root} is not a federation directory (run `pocnode federation create`)")
    dirs = sorted(d for d in root.iterdir() if (d / CONFIG_FILE).is_file())
    if not dirs:
        raise CliError(f"{root} holds no member data directories")
    return dirs


def _pid(d: Path) -> int | None:
    try:
        pid = int((d / "node.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _answers(d: Path) -> bool:
    """The node's operator API answers (whatever health it reports: a node just started
    has not met its peers yet)."""
    try:
        OperatorClient(d).get("/v1/health")
    except PocError:
        return False
    return True


def node_command(*args: str) -> list[str]:
    """``pocnode ARGS`` as a child process, run by this very installation.

    ``python -m pocnode`` puts the current directory first on sys.path, so run from the
    folder that holds a clone (or any folder with a ``pocnode/`` in it) it would import
    that folder instead of the installed package, perhaps another version. ``-P``
    (Python 3.11+) leaves the current directory out; the package then comes from where
    this process got it.
    """
    return [sys.executable, "-P", "-m", "pocnode", *args]


def up(root: Path, env: dict[str, str] | None = None,
       only: str | None = None) -> list[tuple[str, int, int, int]]:
    """Start every member's node not running yet (or only ``only``'s) and wait until each
    answers. ``env``: the children's environment (default: ours, so
    POCNODE_PASSPHRASE_FILE is honoured)."""
    dirs = [d for d in member_dirs(root) if only is None or d.name == only]
    started = []
    for d in dirs:
        if _pid(d) is not None:
            continue
        log = (d / "node.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            node_command("run", "--data-dir", str(d)), env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        (d / "node.pid").write_text(str(proc.pid))
        started.append((d, proc))
    deadline = time.monotonic() + START_TIMEOUT_S
    for d, proc in started:
        while not _answers(d):
            if proc.poll() is not None:
                tail = (d / "node.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise CliError(f"{d.name} exited with {proc.returncode}: " + " | ".join(tail))
            if time.monotonic() > deadline:
                raise CliError(f"{d.name} did not answer within {START_TIMEOUT_S:.0f} s; "
                               f"see {d / 'node.log'}")
            time.sleep(0.1)  # polling a process we just started, with a deadline
    out = []
    for d in dirs:
        c = load_config(d)
        out.append((c.member, _pid(d) or 0, c.peer_port, c.operator_port))
    return out


def down(root: Path) -> int:
    dirs = member_dirs(root)
    pids = {d: p for d in dirs if (p := _pid(d)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for d, pid in pids.items():
        while _pid(d) is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for a SIGTERMed process to exit, with a deadline
        if _pid(d) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
        (d / "node.pid").unlink(missing_ok=True)
    left = [d.name for d in dirs if _pid(d) is not None]
    if left:
        raise CliError(f"still running after SIGKILL: {', '.join(left)}")
    return len(pids)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@click.group()
def federation() -> None:
    """A complete local federation on loopback (tests, exercises, training)."""


@federation.command("create")
@click.option("--members", "n", type=click.IntRange(1, 200), required=True,
              help="How many members (fictional states; S001... past 20).")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="An empty directory to create the members' data directories in.")
@click.option("--alg", type=click.Choice(["ed25519", "ed25519+mldsa65"]), default="ed25519",
              show_default=True, help="Signature algorithm of every member (and the genesis).")
@click.option("--interval-ms", type=click.IntRange(100, 600_000), default=1000,
              show_default=True, help="Gossip round interval of every node.")
@click.option("--hpke-suite", type=click.Choice(["x25519", "mlkem768-x25519"]),
              default="x25519", show_default=True,
              help="Sealing of consent and bilateral values; the hybrid is post-quantum.")
@click.option("--listen-host", default="127.0.0.1", show_default=True,
              help="Address every node's peer port binds.")
@click.option("--endpoint-template", default="",
              help="Advertised URL per member, e.g. 'https://{member_lower}:7443' or "
                   "'https://10.231.0.1{index:02d}:7443' (with --peer-port, --operator-port).")
@click.option("--peer-port", type=click.IntRange(1, 65535),
              help="With --endpoint-template: every node's peer port (each on its own host); "
                   "choose one below 32768, outside Linux's ephemeral range. Default: free "
                   "ports on loopback.")
@click.option("--operator-port", type=click.IntRange(1, 65535),
              help="With --endpoint-template: every node's operator API port.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Encrypt every member's keys with the passphrase in this file (recorded in "
                   "each config). Default: POCNODE_PASSPHRASE_FILE, else a random passphrase "
                   "in each data directory.")
@click.option("--rule", "rules", multiple=True,
              help="A decision's rule in the genesis, e.g. admission=fraction:7/10 or "
                   "observer=silence@2d; repeatable (PROTOCOL.md §5.3).")
@click.option("--exercise", is_flag=True,
              help="An exercise federation: its genesis says so, every node shows it, and "
                   "governance windows may be seconds (see --window).")
@click.option("--window", help="With --exercise: every decision's window, e.g. 5s "
                               "(default 10s); a production genesis keeps at least an hour.")
def create(n: int, root: Path, alg: str, interval_ms: int, hpke_suite: str, listen_host: str,
           endpoint_template: str, peer_port: int | None, operator_port: int | None,
           passphrase_file: Path | None, rules: tuple[str, ...], exercise: bool,
           window: str | None) -> None:
    """Create one data directory per member under DIR and a genesis signed by all.

    Example: pocnode federation create --members 10 --dir /tmp/fed
    """
    from pocnode.node.datadir import PASSPHRASE_ENV

    if root.exists() and any(root.iterdir()):
        raise CliError(f"{root} is not empty")
    if endpoint_template and not (peer_port and operator_port):
        raise CliError("--endpoint-template needs --peer-port and --operator-port")
    if passphrase_file is None and os.environ.get(PASSPHRASE_ENV):
        passphrase_file = Path(os.environ[PASSPHRASE_ENV])
    from pocnode.cli.governance_cmds import parse_duration, parse_rules
    from pocnode.core.genesis import default_governance

    if window and not exercise:
        raise CliError("--window is for exercises (--exercise): a production genesis keeps "
                       "windows of at least an hour; set them per rule with --rule ...@14d")
    default_window = (parse_duration(window) if window else 10_000) if exercise else None
    governance = parse_rules(rules, default_governance(), default_window)
    members = create_federation(root, n, alg=alg, interval_ms=interval_ms,
                                hpke_suite=hpke_suite,
                                listen_host=listen_host, endpoint_template=endpoint_template,
                                peer_port=peer_port, operator_port=operator_port,
                                passphrase_file=passphrase_file, governance=governance,
                                exercise=exercise)
    table(f"federation of {n} created in {root}", ["member", "name", "peer port",
                                                    "operator port", "data dir"],
          [(m.member, m.name, m.peer_port, m.operator_port, m.data_dir) for m in members])
    click.echo(f"next: pocnode federation up {root}")


@federation.command("join")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The local federation's directory (from `federation create`).")
@click.option("--member", required=True, help="The joining state's id, e.g. NEW.")
@click.option("--name", help="The joining state's name (default: 'State ID').")
@click.option("--sponsor", help="The member that proposes the admission (default: the "
                                "first member).")
@click.option("--observer", is_flag=True, help="Join as an observer, not a member.")
def join(root: Path, member: str, name: str | None, sponsor: str | None,
         observer: bool) -> None:
    """For exercises on one machine: create an applicant beside a running local
    federation, apply, have a member propose the admission, and start its node. Members
    then vote (`pocnode vote`); once admitted, the new node joins by itself.

    Example: pocnode federation join --dir /tmp/fed --member NEW
    """
    from pocnode.core.events import MEMBER_ID
    from pocnode.node import datadir
    from pocnode.node.localfed import free_ports

    member = member.upper()
    if not MEMBER_ID.fullmatch(member):
        raise CliError("--member must match [A-Z][A-Z0-9-]{1,31}")
    existing = member_dirs(root)
    if not existing:
        raise CliError(f"{root} holds no federation (pocnode federation create)")
    target = root / member
    if target.exists():
        raise CliError(f"{target} exists already")
    sponsor_dir = root / (sponsor.upper() if sponsor else existing[0].name)
    if not _answers(sponsor_dir):
        raise CliError(f"the sponsor's node in {sponsor_dir} is not running "
                       f"(pocnode federation up {root})")
    p_port, o_port = free_ports(2)
    datadir.init_data_dir(target, member=member, peer_port=p_port, operator_port=o_port,
                          advertise=f"https://127.0.0.1:{p_port}", profile="local")
    interval = re.search(r"^interval_ms = (\d+)", (existing[0] / "config.toml").read_text(),
                         re.MULTILINE)
    text = (target / "config.toml").read_text()
    if interval:
        text = text.replace("# interval_ms = ", f"interval_ms = {interval.group(1)}\n# was ", 1)
    (target / "config.toml").write_text(text)
    datadir.install_genesis(target, (existing[0] / datadir.GENESIS_FILE).read_bytes(),
                            member=member, applicant=True)
    app = subprocess.run(node_command("apply", "--data-dir", str(target), "--name",  # noqa: S603
                                      name or f"State {member}", "--role",
                                      "observer" if observer else "member"),
                         capture_output=True, text=True, timeout=120)
    if app.returncode != 0:
        raise CliError(f"apply failed: {app.stderr.strip()}")
    raw = (target / "application.bin").read_bytes()
    answer = OperatorClient(sponsor_dir).post("/v1/proposals", {
        "decision": "observer" if observer else "admission", "application": raw.hex()})
    up(root, only=member)
    click.echo(f"{member} applied; {sponsor_dir.name} proposed it: {answer['id']}")
    click.echo(f"its node runs from {target}; members vote with: "
               f"pocnode vote {answer['id'][:16]} yes --data-dir {root}/<MEMBER>")


@federation.command("up")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@PASSPHRASE
def up_cmd(root: Path, passphrase_file: Path | None) -> None:
    """Start every member's node in the background and wait until each answers.

    Example: pocnode federation up /tmp/fed
    """
    from pocnode.node.datadir import PASSPHRASE_ENV

    env = None
    if passphrase_file is not None:
        env = {**os.environ, PASSPHRASE_ENV: str(passphrase_file.absolute())}
    with console.status("starting nodes..."):
        running = up(root, env)
    table(f"federation in {root} is up", ["member", "pid", "peer port", "operator port"],
          running)
    click.echo(f"try: pocnode directory list --data-dir {root / running[0][0]}")


@federation.command("down")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
def down_cmd(root: Path) -> None:
    """Stop every node of the federation (SIGTERM, then SIGKILL after 20 s).

    Example: pocnode federation down /tmp/fed
    """
    stopped = down(root)
    click.echo(f"stopped {stopped} nodes; none left running")


@federation.command("status")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@JSON
def status_cmd(root: Path, as_json: bool) -> None:
    """Each member's node: running or not, events and authors held.

    Example: pocnode federation status /tmp/fed
    """
    rows = []
    for d in member_dirs(root):
        try:
            s = OperatorClient(d).get("/v1/status")
            rows.append({"member": d.name, "running": True, "pid": s["pid"],
                         "events": s["events"], "authors": s["authors"],
                         "summary": s["summary"][:16]})
        except PocError:
            rows.append({"member": d.name, "running": False, "pid": None, "events": None,
                         "authors": None, "summary": None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table(None, ["member", "running", "pid", "events", "authors", "summary"],
          [(r["member"], "yes" if r["running"] else "no", r["pid"], r["events"], r["authors"],
            r["summary"]) for r in rows])


# -- demo -----------------------------------------------------------------------------

_SAMPLES = {
    "ATL": ("Atlantis", "atlantis", "+41225550101", ["en", "fr"], "Europe/Lisbon"),
    "BOR": ("Borduria", "borduria", "+41225550102", ["en", "de"], "Europe/Vienna"),
    "CAL": ("Caledonia", "caledonia", "+41225550103", ["en", "gd"], "Europe/London"),
    "DUN": ("Dunmore", "dunmore", "+41225550104", ["en", "es"], "America/Montevideo"),
    "ELB": ("Elbonia", "elbonia", "+41225550105", ["en", "ru"], "Europe/Riga"),
}


def sample_record(member: str) -> dict[str, Any]:
    """A realistic record (example.org contacts) with all three visibilities."""
    short, slug, phone, langs, tz = _SAMPLES.get(
        member, (member.title(), member.lower(), "+41225550199", ["en"], "UTC"))
    return {"template": 1, "entries": [
        {"id": "mfa-cyber", "domain": "diplomatic", "visibility": "public",
         "organisation": f"Ministry of Foreign Affairs of {short}",
         "unit": "Cyber Diplomacy Division", "role": "Head of Division", "level": "senior",
         "person": f"Amb. R. {short[:3]}ova", "email": f"cyber-diplomacy@mfa.{slug}.example.org",
         "phone": phone, "languages": langs,
         "hours": {"timezone": tz, "availability": "Mon-Fri 08:00-18:00; duty officer 24/7"},
         "field_visibility": {"person": "members"}},
        {"id": "ncsa-policy", "domain": "policy", "visibility": "members",
         "organisation": f"National Cyber Security Agency of {short}",
         "unit": "International Policy", "role": "Deputy Director", "level": "political",
         "person": f"Dr. K. {short[:4]}", "email": f"policy@ncsa.{slug}.example.org",
         "languages": langs[:1]},
        {"id": "cert", "domain": "technical", "visibility": "public",
         "organisation": f"{short} National CERT", "role": "Incident Coordinator on duty",
         "level": "operational", "person": "Duty Incident Handler",
         "email": f"incident@cert.{slug}.example.org", "phone": phone[:-2] + "99",
         "secure_channels": [{"type": "openpgp",
                              "value": "3F2A 9C41 7E0B 55D2 A1C8  4B6E 90F3 12AD 77C5 E018"}],
         "languages": langs, "hours": {"timezone": tz, "availability": "24/7"},
         "field_visibility": {"person": "bilateral", "phone": "bilateral"}},
    ]}


def _convergence_table(members: list[str], published: dict[str, tuple[int, float]],
                       held: dict[tuple[str, str], float | None]) -> Table:
    t = Table(title="convergence: which node holds which update (seconds after publishing)",
              title_justify="left", header_style="bold")
    t.add_column("update")
    for node in members:
        t.add_column(node, justify="right")
    for author, (seq, _) in published.items():
        cells = []
        for node in members:
            at = held.get((node, author))
            cells.append("…" if at is None else f"✓ {at:.2f}")
        t.add_row(f"{author} record #{seq}", *cells)
    return t


def run_demo(n: int, keep: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="pocnode-demo-"))
    started = False
    try:
        with console.status(f"creating a {n}-member federation in {root} ..."):
            members = [m.member for m in create_federation(root, n, interval_ms=1000)]
        console.print(f"[bold]1.[/bold] created {n} members with keys, TLS certificates and a "
                      f"genesis signed by all: {', '.join(members)}")
        with console.status("starting the nodes (real daemons, HTTPS on loopback) ..."):
            started = True
            # The demo's members have their own random passphrases: an operator's
            # POCNODE_PASSPHRASE_FILE is not theirs.
            from pocnode.node.datadir import PASSPHRASE_ENV

            up(root, {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV})
        console.print(f"[bold]2.[/bold] {n} nodes running; each gossips every second")
        published: dict[str, tuple[int, float]] = {}
        for member in members:
            answer = OperatorClient(root / member).post("/v1/record", sample_record(member))
            published[member] = (answer["seq"], time.monotonic())
        console.print("[bold]3.[/bold] each member published its signed contact record")
        held: dict[tuple[str, str], float | None] = {}
        deadline = time.monotonic() + 30
        with Live(_convergence_table(members, published, held), console=console,
                  refresh_per_second=8) as live:
            while time.monotonic() < deadline and len(held) < n * n:
                for node in members:
                    listing = OperatorClient(root / node).get("/v1/directory")["members"]
                    for row in listing:
                        author = row["member"]
                        if author in published and (node, author) not in held and \
                                (row["record_seq"] or 0) >= published[author][0]:
                            held[(node, author)] = time.monotonic() - published[author][1]
                live.update(_convergence_table(members, published, held))
                time.sleep(0.1)  # refresh of a live display, bounded by the deadline
        console.print()
        if len(held) < n * n:
            raise CliError("the federation did not converge within 30 s")
        viewer = members[1] if n > 1 else members[0]
        console.print(f"[bold]4.[/bold] converged: every node holds every record, each "
                      f"signature checked by every node. The directory as {viewer} sees it:")
        client = OperatorClient(root / viewer)
        table(None, ["member", "name", "record", "entries", "domains"],
              [(m["member"], m["name"], f"#{m['record_seq']}", m["entries"],
                ", ".join(m["domains"])) for m in client.get("/v1/directory")["members"]])
        _wait_members_values(client, members[0])
        view = client.get(f"/v1/directory/{members[0]}")
        console.print(f"{members[0]}'s record as {viewer} sees it: public and members values, "
                      f"and what is withheld (bilateral needs mutual consent):")
        print_record_view(view)
        if keep:
            console.print(f"\nThe federation keeps running in {root}. Point the CLI at it:\n"
                          f"  export POCNODE_DATA_DIR={root / members[0]}\n"
                          f"  pocnode status; pocnode directory list\n"
                          f"Press Ctrl-C to stop it and remove everything.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)  # waiting for the operator's Ctrl-C
        console.print("[bold]5.[/bold] tearing down: stopping every node, removing every file")
    finally:
        if started:
            with contextlib.suppress(PocError):
                down(root)
        shutil.rmtree(root, ignore_errors=True)


def _wait_members_values(client: OperatorClient, member: str) -> None:
    """Members values arrive by an authenticated pull, a round or two after the record."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = client.get(f"/v1/directory/{member}")
        if not any((e.get("withheld") or {}).get("members") or
                   (e.get("awaiting") or {}).get("members") for e in view["record"]["entries"]):
            return
        time.sleep(0.2)  # polling the node, with a deadline
