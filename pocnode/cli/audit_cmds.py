"""`pocnode export`, `pocnode audit`, `pocnode checkpoint show` (PROTOCOL.md §13).

Auditors need no member key and no running node: a bundle file, or a node's public
endpoint, and this verifying code are enough. On a node's host, the data directory is
read read-only (SQLite ``mode=ro``, one snapshot), whether the node runs or not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from pocnode.cli.audit_io import data_dir_source, file_chunks, run_audit, url_chunks
from pocnode.cli.client import CliError
from pocnode.cli.options import DATA_DIR, DEFAULT_DATA_DIR, JSON
from pocnode.core.audit import EQUIVOCATION, FAILED, AuditReport

# -- rendering -------------------------------------------------------------------------------


def render_report(report: AuditReport) -> None:
    from pocnode.cli.render import table, when

    status = {"ok": "everything verifies", EQUIVOCATION: "verifies, but an author signed "
              "two histories", FAILED: "verification FAILED"}[report.status]
    click.echo(f"audit of {report.source}: {status}")
    click.echo(f"federation {report.federation!r} {report.federation_id}; {report.records} "
               f"records, {report.events} events verified")
    rows = []
    for m in report.members:
        keys = "\n".join(f"#{s}: {k[:16]}…" for s, k in m.keys)
        cp = (f"size {m.checkpoint['size']} ({m.checkpoints} in all)" if m.checkpoint
              else "none")
        state = "ok"
        if m.frozen_at:
            state = f"EQUIVOCATED at #{m.frozen_at}"
        if m.problems or m.unlisted:
            state = f"{len(m.problems) + m.unlisted} problem(s)"
        rows.append((m.member, m.events, f"{(m.head_id or '')[:16]}\n{when(m.head_ts)}",
                     keys, cp, ", ".join(m.witnesses) or "-", state))
    table(None, ["member", "events", "head", "keys (from seq)", "checkpoint",
                 "witnesses of it", "state"], rows)
    for f in report.findings:
        click.echo(f"EQUIVOCATION {f.author} #{f.seq}: {f.detail}"
                   + (f"\n  proof: {f.proof.hex()}" if f.proof else ""))
    for p in report.problems:
        click.echo(f"PROBLEM {p.text()}")
    for m in report.members:
        for p in m.problems:
            click.echo(f"PROBLEM {p.text()}")
        if m.unlisted:
            click.echo(f"PROBLEM {m.member}: {m.unlisted} more (each follows one above)")
    for w in report.warnings:
        click.echo(f"warning: {w}")


def _federation_id(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        fed = bytes.fromhex(value)
    except ValueError:
        fed = b""
    if len(fed) != 32:
        raise CliError("--federation-id takes the 64 hex digits `pocnode genesis show` prints")
    return fed


# -- commands -------------------------------------------------------------------------------


@click.command()
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write the bundle to ('-' for standard output).")
@click.option("--member", default=None, help="Only this member's chain (and the genesis).")
@DATA_DIR
def export(out: Path, member: str | None, data_dir: Path) -> None:
    """Write an export bundle: the genesis, every event of every member, the evidence of
    forks, the equivocation proofs, checkpoints and cosignatures; never a confidential
    value (PROTOCOL.md §13.6). Reads the database read-only: the node may be running.

    Example: pocnode export --out directory.bundle
    """
    chunks, _ = data_dir_source(data_dir, member)
    written = records = 0
    if str(out) == "-":
        stream = sys.stdout.buffer
        for chunk in chunks:
            stream.write(chunk)
            written += len(chunk)
            records += 1
        stream.flush()
    else:
        tmp = out.with_name(out.name + ".partial")
        try:
            with tmp.open("wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
                    records += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CliError(f"cannot write {out}: {exc.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    click.echo(f"wrote {records} records, {written} bytes"
               + (f" to {out}" if str(out) != "-" else ""), err=True)


@click.command()
@click.argument("source", required=False)
@click.option("--compare", "compare", multiple=True, metavar="URL",
              help="Compare the checkpoints several nodes hold (repeat; at least two).")
@click.option("--federation-id", "federation_id", default=None,
              help="Fail unless the bundle is of this federation (64 hex digits).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="POCNODE_DATA_DIR", show_envvar=True,
              help=f"Without SOURCE: the node's data directory [default: {DEFAULT_DATA_DIR}].")
@JSON
def audit(source: str | None, compare: tuple[str, ...], federation_id: str | None,
          data_dir: Path | None, as_json: bool) -> None:
    """Verify a whole directory from its genesis: every signature, chain link, key
    rotation, checkpoint and cosignature, with the code a node ingests with.

    SOURCE is a bundle file (`pocnode export`), or a node's peer URL (its public
    endpoint); without it, the node's data directory, read-only. Exit status: 0 when
    everything verifies, 3 when it verifies but an author signed two histories (the proof
    is shown), 2 when something does not verify, 1 when the audit could not run.

    \b
    Example:
      pocnode audit directory.bundle --federation-id 3f2a...
      pocnode audit https://pocnode.example.de:7443
      pocnode audit --compare https://a.example:7443 --compare https://b.example:7443
    """
    expect = _federation_id(federation_id)
    if compare:
        from pocnode.cli.compare import compare_nodes

        code = compare_nodes(list(compare), expect=expect, as_json=as_json)
        sys.exit(code)
    total = None
    if source is None:
        from pocnode.node import datadir

        given = "--data-dir" if data_dir is not None else "the default; give --data-dir"
        data_dir = data_dir or DEFAULT_DATA_DIR
        datadir.check_exists(data_dir, given)
        datadir.check_owner(data_dir, f"pocnode audit --data-dir {data_dir}")
        chunks, where = data_dir_source(data_dir)
    elif source.startswith(("https://", "http://")):
        chunks, where = url_chunks(source), source
    else:
        path = Path(source)
        try:
            total = path.stat().st_size
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        chunks, where = file_chunks(path), str(path)
    report, _, _ = run_audit(chunks, expect=expect, total=total, source=where)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_report(report)
    sys.exit(report.exit_code)


@click.group()
def checkpoint() -> None:
    """Checkpoints of members' chains, as C2SP signed notes (PROTOCOL.md §13)."""


@checkpoint.command("show")
@click.argument("member")
@click.option("--vkeys", is_flag=True, help="Print the verifier keys of the member's log and "
              "of its witnesses instead, one per line.")
@click.option("--leaves", is_flag=True, help="Print the chain's leaves instead: event ids, "
              "hex, one per line, oldest first.")
@DATA_DIR
def checkpoint_show(member: str, vkeys: bool, leaves: bool, data_dir: Path) -> None:
    """The latest checkpoint of MEMBER's chain this node holds, exactly as the signed note
    with every cosignature (nothing else on standard output): what C2SP tooling verifies.

    Example: pocnode checkpoint show FRA > fra.checkpoint; pocnode checkpoint show FRA
    --vkeys > fra.vkeys
    """
    from pocnode.core.events import parse_event
    from pocnode.core.tlog import TlogState
    from pocnode.node import datadir
    from pocnode.node.config import load_config
    from pocnode.store.bundle_source import chain_ids, checkpoint_events

    if vkeys and leaves:
        raise CliError("--vkeys and --leaves: one at a time")
    genesis = datadir.load_genesis(data_dir)
    if member not in genesis.members:
        raise CliError(f"unknown_author: {member} is not a member of this federation")
    db = load_config(data_dir).db_path
    state = TlogState(genesis.id, genesis.sig_alg)
    for raw in checkpoint_events(db):
        state.fold(parse_event(raw))  # stored events were verified when accepted
    cp = state.checkpoints.get(member)
    if cp is None:
        raise CliError(f"not_found: this node holds no checkpoint of {member} yet")
    if leaves:
        ids = chain_ids(db, member)[:cp.size]
        sys.stdout.write("".join(f"{i.hex()}\n" for i in ids))
    elif vkeys:
        sys.stdout.write("".join(f"{v}\n" for v in state.vkeys(member)))
    else:
        text = state.signed_note(member)
        assert text is not None
        sys.stdout.write(text)


COMMANDS = (export, audit, checkpoint)
