"""The ``pocnode`` command line: a thin shell over the operator API and the core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import click

from pocnode import __version__
from pocnode.cli.options import DATA_DIR
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


@main.command()
@DATA_DIR
@click.option("--member", required=True, help="This node's member id, e.g. DEU.")
@click.option("--alg", type=click.Choice(["ed25519", "ed25519+mldsa65"]), default="ed25519",
              show_default=True, help="Signature algorithm (must match the genesis).")
@click.option("--peer-host", default="127.0.0.1", show_default=True)
@click.option("--peer-port", type=int, default=7443, show_default=True)
@click.option("--operator-port", type=int, default=7444, show_default=True)
@click.option("--advertise", default="", help="URL peers use to reach this node.")
@click.option("--profile", type=click.Choice(["local", "lan", "wan"]), default="wan",
              show_default=True)
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the passphrase that encrypts the keys (0600). Without it a "
                   "random one is stored in the data dir: fine for trials, not production.")
def init(data_dir: Path, member: str, alg: str, peer_host: str, peer_port: int,
         operator_port: int, advertise: str, profile: str, passphrase_file: Path | None) -> None:
    """Create a data directory: identity key, TLS certificate, config and API token.

    Example: pocnode init --data-dir /var/lib/pocnode --member DEU --passphrase-file pass
    """
    from pocnode.core.events import MEMBER_ID
    from pocnode.keyfile import read_private_file
    from pocnode.node.datadir import init_data_dir

    if not MEMBER_ID.fullmatch(member):
        raise click.BadParameter("must match [A-Z][A-Z0-9-]{1,31}", param_hint="--member")
    passphrase = (read_private_file(passphrase_file, 4096).rstrip(b"\r\n")
                  if passphrase_file else None)
    result = init_data_dir(data_dir, member=member, alg=alg, passphrase=passphrase,
                           peer_host=peer_host, peer_port=peer_port,
                           operator_port=operator_port, advertise=advertise, profile=profile)
    click.echo(f"initialised {data_dir} for {member}")
    click.echo(f"  identity key (public, ed25519): {result.public_key.ed25519.hex()}")
    click.echo(f"  TLS pin (sha-256 of the certificate): {result.tls_pin.hex()}")
    click.echo("next: take part in the genesis ceremony, then `pocnode run`")


@main.command()
@DATA_DIR
def run(data_dir: Path) -> None:
    """Run the node in the foreground until SIGTERM or Ctrl-C.

    Example: pocnode run --data-dir /var/lib/pocnode
    """
    from pocnode.node.node import run_node

    os.umask(0o077)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is handled; this covers start-up
        asyncio.run(run_node(data_dir))


@main.group()
def db() -> None:
    """Offline maintenance of the node's database (stop the node first)."""


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


@main.command()
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(data_dir: Path, as_json: bool) -> None:
    """The node: member id, daemon pid, version, health, federation, what it holds.

    Example: pocnode status --data-dir /var/lib/pocnode
    """
    from pocnode.cli.client import OperatorClient
    from pocnode.cli.render import emit_json, kv

    s = OperatorClient(data_dir).get("/v1/status")
    if as_json:
        emit_json(s)
        return
    kv(f"pocnode {s['member']}", [
        ("health", "ok"), ("member", s["member"]), ("pid", s["pid"]),
        ("version", s["version"]), ("federation", f"{s['federation']} "
                                                  f"({s['federation_id'][:16]}…)"),
        ("uptime", f"{s['uptime_s']} s"),
        ("events held", f"{s['events']} from {s['authors']} of {s['members']} members"),
        ("peers known", s["peers"]), ("pending (out of order)", s["pending"]),
        ("peer port", s["peer_port"]), ("TLS pin", s["tls_pin"])])


@main.command()
@DATA_DIR
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
@click.option("--keep", is_flag=True, help="Leave the federation running until Ctrl-C.")
@click.option("--members", type=click.IntRange(2, 20), default=5, show_default=True)
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
    from pocnode.cli.client import OperatorClient

    answer = OperatorClient(data_dir).post(f"/v1/consent/{member.upper()}",
                                           {"action": action})
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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


def _register() -> None:
    from pocnode.cli.federation_cmds import federation
    from pocnode.cli.genesis_cmds import genesis
    from pocnode.cli.record_cmds import directory, record

    for group in (genesis, record, directory, federation):
        main.add_command(group)


_register()
