"""The ``pocnode`` command line: a thin shell over the operator API and the core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import click

from pocnode import __version__
from pocnode.cli.client import CliError
from pocnode.cli.options import DATA_DIR, JSON, NEW_DATA_DIR, PASSPHRASE
from pocnode.core.errors import PocError


class _Group(click.Group):
    """Errors are one clear line and a non-zero exit code, never a traceback
    (set POCNODE_DEBUG=1 to see one for a bug)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except PocError as exc:
            message = exc.message if exc.code == "cli" else str(exc)
            click.echo(f"error: {message}", err=True)
            sys.exit(1)
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            click.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the promise: never a traceback
            if os.environ.get("POCNODE_DEBUG"):
                raise
            click.echo(f"error: internal: {type(exc).__name__}: {exc} (a bug; rerun with "
                       f"POCNODE_DEBUG=1 and report it)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pocnode")
def main() -> None:
    """pocnode: a federated directory of government Points of Contact.

    Each state runs a node holding its own signed contact record; nodes gossip
    signed updates, so the directory converges with no central server.
    The protocol is specified in protocol/PROTOCOL.md.
    """


# Linux gives outgoing connections source ports from 32768-60999 (ip_local_port_range): a
# listening port there may be taken while its node is down. The defaults are far below.
PORT_ADVICE = "below 32768, outside Linux's ephemeral range"


@main.command()
@NEW_DATA_DIR
@click.option("--member", required=True, help="This node's member id, e.g. DEU.")
@click.option("--alg", type=click.Choice(["ed25519", "ed25519+mldsa65"]), default="ed25519",
              show_default=True, help="Signature algorithm (must match the genesis).")
@click.option("--peer-host", default="127.0.0.1", show_default=True,
              help="Address the peer port binds: 0.0.0.0 (all) for a production node.")
@click.option("--peer-port", type=click.IntRange(1, 65535), default=7443, show_default=True,
              help=f"The port other members' nodes connect to ({PORT_ADVICE}).")
@click.option("--operator-port", type=click.IntRange(1, 65535), default=7444,
              show_default=True,
              help=f"The operator API's port on loopback, for the CLI ({PORT_ADVICE}).")
@click.option("--advertise", default="",
              help="URL peers use to reach this node, e.g. https://pocnode.example.de:7443. "
                   "Default: https://PEER_HOST:PEER_PORT.")
@click.option("--profile", type=click.Choice(["local", "lan", "wan"]), default="wan",
              show_default=True,
              help="Timing and limits: wan (production), lan (one site), local (one host).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the passphrase that encrypts the keys (0600, owned by the "
                   "node's user); its absolute path is recorded in config.toml. Default: "
                   "POCNODE_PASSPHRASE_FILE; with neither, a random one is stored in the "
                   "data dir (trials only).")
def init(data_dir: Path, member: str, alg: str, peer_host: str, peer_port: int,
         operator_port: int, advertise: str, profile: str, passphrase_file: Path | None) -> None:
    """Create a data directory: identity key, TLS certificate, config and API token.

    Example: pocnode init --data-dir /var/lib/pocnode --member DEU --passphrase-file pass
    """
    from pocnode.core.events import MEMBER_ID
    from pocnode.node.datadir import PASSPHRASE_ENV, init_data_dir

    if not MEMBER_ID.fullmatch(member):
        raise click.BadParameter("must match [A-Z][A-Z0-9-]{1,31}", param_hint="--member")
    if passphrase_file is None and os.environ.get(PASSPHRASE_ENV):
        passphrase_file = Path(os.environ[PASSPHRASE_ENV])
    result = init_data_dir(data_dir, member=member, alg=alg, passphrase_file=passphrase_file,
                           peer_host=peer_host, peer_port=peer_port,
                           operator_port=operator_port, advertise=advertise, profile=profile)
    click.echo(f"initialised {data_dir} for {member}")
    click.echo(f"  identity key (public, ed25519): {result.public_key.ed25519.hex()}")
    click.echo(f"  TLS pin (sha-256 of the certificate): {result.tls_pin.hex()}")
    if result.generated_passphrase:
        click.echo(f"  passphrase: none given (--passphrase-file or {PASSPHRASE_ENV}), so a "
                   f"random one is kept in {result.passphrase_file}: fine for a trial, not "
                   f"for production")
    else:
        click.echo(f"  passphrase: read from {result.passphrase_file}, recorded in config.toml "
                   f"for every later command")
    click.echo("next: take part in the genesis ceremony, then `pocnode run`")


@main.command()
@DATA_DIR
@PASSPHRASE
def run(data_dir: Path, passphrase_file: Path | None) -> None:
    """Run the node in the foreground until SIGTERM or Ctrl-C. The data directory is locked
    while it runs: a second node, or offline maintenance, is refused.

    Example: pocnode run --data-dir /var/lib/pocnode
    """
    from pocnode.node import datadir
    from pocnode.node.config import load_config
    from pocnode.node.node import run_node

    os.umask(0o077)
    try:
        lock = datadir.lock_data_dir(data_dir, "pocnode run")
    except datadir.DataDirLocked as exc:
        raise CliError(f"{exc.message}: one data directory runs one node "
                       f"(`pocnode status --data-dir {data_dir}` shows it)") from None
    try:
        # Checked here, before the daemon starts, so each mistake is one line naming the
        # file: the daemon then reads the very file checked (through the environment).
        config = load_config(data_dir)
        from pocnode.node.logs import setup_logging

        # The node's log starts here: unlocking the key may migrate its file, and says so.
        setup_logging(config.log_format, config.log_level)
        _, _, source = datadir.unlock_identity(data_dir, config.passphrase_file,
                                               passphrase_file)
        genesis = datadir.load_genesis(data_dir)
        if config.member not in genesis.members and not (data_dir / "application.bin").exists():
            raise CliError(f"{config.member} (this node's [node] member) is not a founder of "
                           f"the genesis installed in {data_dir}: it cannot run in that "
                           f"federation unless it applies to join (pocnode apply)")
        os.environ[datadir.PASSPHRASE_ENV] = str(source.path.absolute())
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT is handled; this covers start-up
            asyncio.run(run_node(data_dir))
    finally:
        lock.release()


@main.group()
def db() -> None:
    """Offline maintenance of the node's database (stop the node first: refused while it
    runs)."""


@db.command("check")
@DATA_DIR
def db_check(data_dir: Path) -> None:
    """Re-verify every stored event and proof from the genesis on.

    Example: pocnode db check --data-dir /var/lib/pocnode
    """
    from pocnode.node.maintenance import check

    report = asyncio.run(check(data_dir))
    click.echo(f"{report.events} events from {report.authors} authors, "
               f"{report.proofs} equivocation proofs")
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.problems:
        sys.exit(1)
    click.echo("every event and proof verifies")


@db.command("rebuild")
@DATA_DIR
def db_rebuild(data_dir: Path) -> None:
    """Drop and recompute the derived tables (the directory) from the events.

    Example: pocnode db rebuild --data-dir /var/lib/pocnode
    """
    from pocnode.node.maintenance import rebuild

    rows = asyncio.run(rebuild(data_dir))
    click.echo(f"directory rebuilt from events: {rows} members with a record")


# `pocnode health` exit status, for monitoring (Nagios' convention: 0 ok, 1 warning,
# 2 critical, 3 unknown). A health the node does not report is a warning, not "down".
HEALTH_EXIT = {"ok": 0, "degraded": 1, "failing": 2}
HEALTH_UNKNOWN_EXIT = 1
HEALTH_UNREACHABLE_EXIT = 3


def _health_of(s: dict) -> tuple[str, list[str]]:
    """(status, reasons) from GET /v1/status; "unknown" when the node does not say."""
    health = s.get("health")
    if not isinstance(health, dict) or health.get("status") not in HEALTH_EXIT:
        return "unknown", ["this node does not report its health (an older daemon)"]
    return health["status"], [str(r) for r in health.get("reasons") or []]


@main.command()
@DATA_DIR
@JSON
def status(data_dir: Path, as_json: bool) -> None:
    """The node: member id, daemon pid, version, health, federation, what it holds.

    Example: pocnode status --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.render import duration, emit_json, kv

    s = OperatorClient(data_dir).get("/v1/status")
    if as_json:
        emit_json(s)
        return
    state, reasons = _health_of(s)
    kv(f"pocnode {s['member']}", [
        ("health", state + "".join(f"\n  {r}" for r in reasons)),
        ("member", s["member"]), ("pid", s["pid"]),
        ("version", s["version"]), ("federation", f"{s['federation']} "
                                                  f"({s['federation_id'][:16]}…)"),
        ("uptime", duration(int(s["uptime_s"]) * 1000)),
        ("events held", f"{s['events']} from {s['authors']} of {s['members']} members"),
        ("peers known", s["peers"]), ("pending (out of order)", s["pending"]),
        ("peer port", s["peer_port"]), ("TLS pin", s["tls_pin"]),
        *([("requests", f"{s['requests_unacknowledged']} unacknowledged "
                        f"(pocnode request inbox)")]
          if s.get("requests_unacknowledged") else [])])


@main.command()
@DATA_DIR
@JSON
def health(data_dir: Path, as_json: bool) -> None:
    """The node's health, for monitoring: exit 0 ok, 1 degraded (or not reported), 2
    failing, 3 node not reachable; the reasons on stdout.

    Example: pocnode health --data-dir /var/lib/pocnode || alert
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.render import emit_json

    try:
        s = OperatorClient(data_dir).get("/v1/status")
    except PocError as exc:
        message = exc.message if exc.code == "cli" else str(exc)
        if as_json:
            emit_json({"status": "unreachable", "reasons": [message]})
        else:
            click.echo(f"unreachable: {message}")
        sys.exit(HEALTH_UNREACHABLE_EXIT)
    state, reasons = _health_of(s)
    if as_json:
        emit_json({"status": state, "reasons": reasons,
                   "checks": (s.get("health") or {}).get("checks", {})})
    else:
        click.echo(f"{s['member']}: {state}")
        for reason in reasons:
            click.echo(f"  {reason}")
    sys.exit(HEALTH_EXIT.get(state, HEALTH_UNKNOWN_EXIT))


@main.command()
@DATA_DIR
@JSON
def peers(data_dir: Path, as_json: bool) -> None:
    """The peers this node knows, where it learned them, and their last contact.

    Example: pocnode peers --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.render import ago, emit_json, table

    rows = OperatorClient(data_dir).get("/v1/peers")["peers"]
    if as_json:
        emit_json(rows)
        return
    table(None, ["endpoint", "member", "learned from", "last contact", "failures", "pinned",
                 "last error"],
          [(p["endpoint"], p["member"], p["source"], ago(p["last_contact"]), p["failures"],
            "yes" if p["pinned"] else "no", p["last_error"]) for p in rows])


@main.command()
@DATA_DIR
@JSON
def proofs(data_dir: Path, as_json: bool) -> None:
    """Equivocation proofs this node holds: members that signed two different events at one
    place in their chain (each proof is checked by every node that keeps it).

    Example: pocnode proofs --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.offline import OfflineReader, node_running, proof_events
    from pocnode.cli.render import emit_json, table, when

    if node_running(data_dir):
        rows = OperatorClient(data_dir).get("/v1/proofs")["proofs"]
    else:
        click.echo("note: the node is not running; read from its database", err=True)
        rows = OfflineReader(data_dir).proofs()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no equivocation proofs: no member has signed two histories")
        return
    out = []
    for p in rows:
        events = proof_events(p["proof"])
        out.append((p["author"], f"#{p['seq']}", when(p["found_at"]),
                    "\n".join(f"{e['kind']} {e['id'][:16]}… signed {when(e['ts'])}"
                              for e in events) or "(unreadable)"))
    table(f"{len(rows)} equivocation proofs", ["member", "at", "found", "the two events"],
          out)


@main.command()
@click.option("--keep", is_flag=True, help="Leave the federation running until Ctrl-C.")
@click.option("--members", type=click.IntRange(2, 20), default=5, show_default=True,
              help="How many member nodes to start.")
def demo(keep: bool, members: int) -> None:
    """A 5-member federation of real daemons, live: publish, converge, show, tear down.

    Example: pocnode demo
    """
    from pocnode.cli.federation_cmds import run_demo

    run_demo(members, keep)


@main.group()
def key() -> None:
    """The member's identity key."""


@key.command("rotate")
@DATA_DIR
@click.option("--reason", help="Why, for the record (at most 256 characters).")
def key_rotate(data_dir: Path, reason: str | None) -> None:
    """Replace the identity key: the running node signs a key.rotate event with the old
    key and uses the new one from then on. The old key file is kept as identity.key.old-N.

    Example: pocnode key rotate --data-dir /var/lib/pocnode --reason "annual rotation"
    """
    from pocnode.cli.client import OperatorClient

    answer = OperatorClient(data_dir).post("/v1/key/rotate",
                                           {"reason": reason} if reason else {})
    click.echo(f"{answer['member']} rotated its identity key at #{answer['seq']}; new ed25519 "
               f"key {answer['new_key']['ed25519'][:16]}…; every node now expects it")


@main.group()
def consent() -> None:
    """Mutual consent: bilateral values flow only while both states offer it."""


def _set_consent(data_dir: Path, member: str, action: str) -> None:
    from pocnode.cli.client import CliError, OperatorClient

    try:
        answer = OperatorClient(data_dir).post(f"/v1/consent/{member.upper()}",
                                               {"action": action})
    except CliError as exc:
        if exc.remote_code != "no_change":
            raise
        click.echo(f"nothing to do: {exc.remote_message} (no event written)")
        return
    state = "mutual: bilateral values now flow both ways" if answer["mutual"] else (
        "not mutual" + (" yet: waiting for their offer" if action == "offer" else
                        ": bilateral values stop, and each side erases the other's"))
    click.echo(f"{action} to {answer['member']} sealed and published (#{answer['seq']}); "
               f"consent is {state}")


@consent.command("offer")
@click.argument("member")
@DATA_DIR
def consent_offer(member: str, data_dir: Path) -> None:
    """Offer consent to MEMBER (sealed: only MEMBER learns it).

    Example: pocnode consent offer FRA --data-dir /var/lib/pocnode
    """
    _set_consent(data_dir, member, "offer")


@consent.command("withdraw")
@click.argument("member")
@DATA_DIR
def consent_withdraw(member: str, data_dir: Path) -> None:
    """Withdraw consent from MEMBER: disclosures stop and both sides erase.

    Example: pocnode consent withdraw FRA --data-dir /var/lib/pocnode
    """
    _set_consent(data_dir, member, "withdraw")


@consent.command("list")
@DATA_DIR
@JSON
def consent_list(data_dir: Path, as_json: bool) -> None:
    """Consent with each counterpart: who offers, and whether it is mutual.

    Example: pocnode consent list --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.render import emit_json, table

    rows = OperatorClient(data_dir).get("/v1/consent")["consents"]
    if as_json:
        emit_json(rows)
        return
    yes = {True: "yes", False: "no"}
    table(None, ["member", "we offer", "they offer", "mutual"],
          [(r["member"], yes[r["we_offer"]], yes[r["they_offer"]], yes[r["mutual"]])
           for r in rows])


@main.group()
def token() -> None:
    """The operator API's bearer token (the data directory's `token` file)."""


@token.command("rotate")
@DATA_DIR
def token_rotate(data_dir: Path) -> None:
    """Replace the operator token: the running node writes a new `token` file and refuses
    the old token from then on (scripts must read the file again).

    Example: pocnode token rotate --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient

    OperatorClient(data_dir).post("/v1/token/rotate", {})
    click.echo(f"operator token replaced: {data_dir}/token holds the new one; the old one "
               f"is refused from now on")


def _register() -> None:
    from pocnode.cli.audit_cmds import COMMANDS as AUDIT_COMMANDS
    from pocnode.cli.federation_cmds import federation
    from pocnode.cli.genesis_cmds import genesis
    from pocnode.cli.record_cmds import directory, record
    from pocnode.cli.request_cmds import ping, request
    from pocnode.cli.sim_cmds import simulate

    for group in (genesis, record, directory, federation, simulate, request, ping,
                  *AUDIT_COMMANDS):
        main.add_command(group)
    from pocnode.cli.governance_cmds import register

    register(main, key)


_register()
