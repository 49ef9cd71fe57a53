"""Governance from the command line (PROTOCOL.md §5.6-§5.10): applying, proposing, voting,
withdrawing, and a lost key's replacement.

A thin shell over the operator API, except `pocnode apply`, which a joining state runs
on its own data directory before it is a member (there is nothing to ask a node yet).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from pocnode.cli.client import CliError, OperatorClient
from pocnode.cli.options import DATA_DIR, JSON, read_file
from pocnode.cli.render import emit_json, kv, table, when

# An application is a few KB; a proposal's file is the application itself.
MAX_APPLICATION_FILE = 16 * 1024
DECISIONS = {"admit": "admission", "observer": "observer", "recover": "key_recovery",
             "amend": "rules"}
_RULE = re.compile(r"(consensus|silence|fraction:(\d+)/(\d+)|count:(\d+))(?:@(\d+)(ms|s|m|h|d))?")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_rule(spec: str, default_window_ms: int) -> dict[str, Any]:
    """`fraction:7/10@2d`, `count:51`, `consensus@1h`, `silence@30s` -> a rule map (§5.3)."""
    m = _RULE.fullmatch(spec.strip())
    if m is None:
        raise CliError(f"rule {spec!r}: expected consensus, silence, fraction:NUM/DEN or "
                       f"count:MIN, optionally @WINDOW (e.g. fraction:7/10@2d)")
    window = default_window_ms if m.group(5) is None else int(m.group(5)) * _UNITS[m.group(6)]
    kind = m.group(1).split(":")[0]
    rule: dict[str, Any] = {"rule": kind, "window_ms": window}
    if kind == "fraction":
        rule.update(num=int(m.group(2)), den=int(m.group(3)))
    elif kind == "count":
        rule["min"] = int(m.group(4))
    return rule


def parse_rules(specs: tuple[str, ...], base: dict[str, dict[str, Any]],
                default_window_ms: int | None = None) -> dict[str, dict[str, Any]]:
    """`--rule admission=fraction:7/10` (repeatable) over ``base``."""
    out = {k: dict(v) for k, v in base.items()}
    if default_window_ms is not None:
        for rule in out.values():
            rule["window_ms"] = default_window_ms
    for spec in specs:
        decision, _, text = spec.partition("=")
        if decision not in out:
            raise CliError(f"--rule {spec!r}: the decision must be one of {sorted(out)}")
        out[decision] = parse_rule(text, out[decision]["window_ms"])
    return out


def parse_duration(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip())
    if m is None:
        raise CliError(f"duration {text!r}: expected a number and a unit, e.g. 5s, 2h, 14d")
    return int(m.group(1)) * _UNITS[m.group(2)]


# -- applying (the joining state's side) -----------------------------------------------------


@click.command()
@DATA_DIR
@click.option("--role", type=click.Choice(["member", "observer"]), default="member",
              show_default=True, help="Join as a member state, or as an observer.")
@click.option("--name", required=True, help="The state's (or organisation's) name, as "
                                            "members will see it.")
@click.option("--reference", help="An out-of-band reference members can check the key "
                                  "against, e.g. a note verbale number.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the signed application to this file, to hand to a sponsor.")
@click.option("--to", "send_to", help="Also hand it to this member node's peer endpoint "
                                      "(https://host:port): it waits there for a sponsor.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the keys' passphrase (default: as `pocnode run` finds it).")
def apply(data_dir: Path, role: str, name: str, reference: str | None, out: Path | None,
          send_to: str | None, passphrase_file: Path | None) -> None:
    """Sign this node's application to join a federation whose genesis is installed
    (with `genesis install --applicant`). Shows the key's fingerprint, to be read out to
    the members through diplomatic channels.

    Example: pocnode apply --data-dir /var/lib/pocnode --name "Republic of X" --out app.bin
    """
    from pocnode.core.governance import make_application, parse_application
    from pocnode.node import datadir
    from pocnode.node.config import load_config
    from pocnode.node.node import APPLICATION_FILE, HPKE_KEY_FILE, _load_or_create_hpke

    config = load_config(data_dir)
    genesis = datadir.load_genesis(data_dir)
    key, passphrase, _ = datadir.unlock_identity(data_dir, config.passphrase_file,
                                                 passphrase_file)
    hpke = _load_or_create_hpke(data_dir, genesis.hpke_suite, passphrase)
    raw = make_application(key, fed=genesis.id, role=role, member=config.member, name=name,
                           hpke_suite=genesis.hpke_suite, hpke=hpke.public_bytes,
                           endpoints=[config.advertise], ts=int(time.time() * 1000),
                           reference=reference)
    app = parse_application(raw, fed=genesis.id, sig_alg=genesis.sig_alg,
                            hpke_suite=genesis.hpke_suite)
    (data_dir / APPLICATION_FILE).write_bytes(raw)
    if out is not None:
        out.write_bytes(raw)
    article = "an" if role == "observer" else "a"
    click.echo(f"{config.member} applies to {genesis.name!r} as {article} {role}; its key's "
               f"fingerprint (read it out to the members):")
    click.echo(f"  {app.fingerprint()}")
    click.echo(f"  the application is in {data_dir / APPLICATION_FILE}"
               + (f" and {out}" if out else "") + f"; keys: identity.key, {HPKE_KEY_FILE}")
    if send_to:
        _send(send_to, genesis.id, raw)
        click.echo(f"handed to {send_to}: it waits there for a member to sponsor it")
    click.echo("next: a member proposes it (pocnode propose admit FILE), members vote; "
               "start this node (pocnode run) to sync and join once admitted")


def _send(endpoint: str, fed: bytes, raw: bytes) -> None:
    from pocnode.core import wire

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a stranger has no pin yet; the application is signed
    request = urllib.request.Request(  # noqa: S310 - the member's https endpoint
        endpoint.rstrip("/") + "/v1/peer/apply",
        data=wire.encode({"fed": fed, "application": raw}), method="POST",
        headers={"Content-Type": "application/msgpack"})
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as resp:  # noqa: S310
            resp.read(64 * 1024)
    except OSError as exc:
        raise CliError(f"could not hand the application to {endpoint}: {exc}") from None


# -- proposing and voting (a member's side) ---------------------------------------------------


@click.group()
def propose() -> None:
    """Propose a decision: admit a state or an observer, recover a key, amend the rules."""


def _post_proposal(data_dir: Path, body: dict[str, Any]) -> None:
    answer = OperatorClient(data_dir).post("/v1/proposals", body)
    click.echo(f"proposed ({body['decision']}): {answer['id']}")
    click.echo(f"members vote with: pocnode vote {answer['id'][:16]} yes|no|abstain"
               + ("|object" if body["decision"] == "observer" else ""))


@propose.command("admit")
@click.argument("application", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--note", help="A note for the other members (at most 256 characters).")
def propose_admit(application: Path, data_dir: Path, note: str | None) -> None:
    """Propose admitting the state whose signed APPLICATION file (from `pocnode apply`)
    you were handed. Check its fingerprint with the state first.

    Example: pocnode propose admit app.bin --data-dir /var/lib/pocnode
    """
    body = {"decision": "admission", "application": read_file(
        application, MAX_APPLICATION_FILE, "an application").hex()}
    if note:
        body["note"] = note
    _post_proposal(data_dir, body)


@propose.command("observer")
@click.argument("application", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--note", help="A note for the other members (at most 256 characters).")
def propose_observer(application: Path, data_dir: Path, note: str | None) -> None:
    """Propose admitting an observer (by the `observer` rule, usually silence).

    Example: pocnode propose observer ngo.bin --data-dir /var/lib/pocnode
    """
    body = {"decision": "observer", "application": read_file(
        application, MAX_APPLICATION_FILE, "an application").hex()}
    if note:
        body["note"] = note
    _post_proposal(data_dir, body)


@propose.command("recover")
@click.argument("member")
@DATA_DIR
@click.option("--key", "key_text", required=True,
              help="The member's new public key: the JSON `pocnode key new` printed, or a "
                   "file holding it.")
@click.option("--from-seq", type=click.IntRange(1), help="The sequence the new key signs "
                                                          "from (default: the member's head "
                                                          "as this node sees it, plus one).")
@click.option("--note", help="A note for the other members (at most 256 characters).")
def propose_recover(member: str, data_dir: Path, key_text: str, from_seq: int | None,
                    note: str | None) -> None:
    """Propose a new identity key for MEMBER, which lost its own.

    Example: pocnode propose recover ATL --key newkey.json --data-dir /var/lib/pocnode
    """
    text = Path(key_text).read_text() if Path(key_text).is_file() else key_text
    try:
        key = json.loads(text)
    except ValueError:
        raise CliError("--key: not the JSON `pocnode key new` prints") from None
    body: dict[str, Any] = {"decision": "key_recovery", "subject": member.upper(),
                            "key": key.get("key", key)}
    if from_seq:
        body["from_seq"] = from_seq
    if note:
        body["note"] = note
    _post_proposal(data_dir, body)


@propose.command("amend")
@DATA_DIR
@click.option("--rule", "rules", multiple=True, required=True,
              help="A decision's new rule, e.g. admission=fraction:7/10@14d; repeatable.")
@click.option("--note", help="A note for the other members (at most 256 characters).")
def propose_amend(data_dir: Path, rules: tuple[str, ...], note: str | None) -> None:
    """Propose new governance rules (by the `rules` rule); the others stay as they are.

    Example: pocnode propose amend --rule admission=fraction:7/10@14d --data-dir D
    """
    from pocnode.node import datadir

    genesis = datadir.load_genesis(data_dir)
    base = {k: dict(v) for k, v in genesis.governance.items()}
    body: dict[str, Any] = {"decision": "rules", "governance": parse_rules(rules, base)}
    if note:
        body["note"] = note
    _post_proposal(data_dir, body)


@click.group()
def proposals() -> None:
    """Proposals this node knows: what they decide, by which rule, how the tally stands."""


def _resolve(client: OperatorClient, prefix: str) -> dict[str, Any]:
    rows = client.get("/v1/proposals")["proposals"]
    found = [p for p in rows if p["id"].startswith(prefix.lower())]
    if len(found) != 1:
        raise CliError(f"{prefix!r} names {len(found)} proposals; give more of the id")
    return found[0]


def _window(ms: int) -> str:
    from pocnode.cli.render import duration

    return duration(ms)


def _deadline(ms: int | None) -> str:
    if ms is None:
        return "-"
    local = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms / 1000))
    utc = time.strftime("%H:%M:%S UTC", time.gmtime(ms / 1000))
    return f"{local} ({utc})"


@proposals.command("list")
@DATA_DIR
@JSON
def proposals_list(data_dir: Path, as_json: bool) -> None:
    """Every proposal, newest first: kind, subject, rule and version, tally, outcome.

    Example: pocnode proposals list --data-dir /var/lib/pocnode --json
    """
    rows = OperatorClient(data_dir).get("/v1/proposals")["proposals"]
    if as_json:
        emit_json(rows)
        return
    table(None, ["id", "kind", "subject", "rule (version)", "tally", "needed", "outcome",
                 "our vote"],
          [(p["id"][:16], p["kind"], p["subject"] or "",
            f"{(p['rule'] or {}).get('rule', '?')} (v{p['rules_version'] or '?'})",
            " ".join(f"{k} {v}" for k, v in p["tally"].items() if v) or "none",
            p["needed"] if p["needed"] is not None else "-",
            p["outcome"] + (" (final)" if p["final"] else ""),
            "awaited" if p["awaiting_our_vote"] else "")
           for p in rows])


@proposals.command("show")
@click.argument("proposal_id")
@DATA_DIR
@JSON
def proposals_show(proposal_id: str, data_dir: Path, as_json: bool) -> None:
    """One proposal in full: rule, member count, windows, ballots, what is still needed.

    Example: pocnode proposals show 3fa2 --data-dir /var/lib/pocnode
    """
    p = _resolve(OperatorClient(data_dir), proposal_id)
    if as_json:
        emit_json(p)
        return
    rule = p["rule"] or {}
    kv(f"proposal {p['id']}", [
        ("kind", p["kind"]), ("subject", p["subject"] or "-"), ("proposed by", p["proposer"]),
        ("proposed at", _deadline(p["proposed_at"])),
        ("key fingerprint", p["fingerprint"] or "-"), ("reference", p["reference"] or "-"),
        ("rule", f"{rule.get('rule', '?')} {rule.get('num', '')}"
                 f"{'/' + str(rule['den']) if 'den' in rule else ''}"
                 f"{rule.get('min', '')} (rules version {p['rules_version'] or '?'})"),
        ("window", _window(p["window_ms"])),
        ("nominal deadline", _deadline(p["deadline"])),
        ("our window ends", _deadline(p["our_window_ends"])),
        ("electorate", f"{p['members']} members" if p["members"] else "not fixed yet"),
        ("tally", ", ".join(f"{k} {v}" for k, v in p["tally"].items())),
        ("needed", p["needed"] if p["needed"] is not None else "-"),
        ("outcome", p["outcome"] + (" (final)" if p["final"] else " (not final)")),
        ("why", p["reason"] or "-")])
    if p["ballots"]:
        table("ballots", ["member", "vote", "at", "counted", "why not"],
              [(b["member"], b["vote"], when(b["ts"]), "yes" if b["counted"] else "no",
                b["code"] or "") for b in p["ballots"]])


@click.command()
@click.argument("proposal_id")
@click.argument("choice", type=click.Choice(["yes", "no", "abstain", "object"]))
@DATA_DIR
def vote(proposal_id: str, choice: str, data_dir: Path) -> None:
    """Vote on a proposal (object: under the silence procedure). The first vote counts.

    Example: pocnode vote 3fa2 yes --data-dir /var/lib/pocnode
    """
    client = OperatorClient(data_dir)
    p = _resolve(client, proposal_id)
    answer = client.post(f"/v1/proposals/{p['id']}/vote", {"vote": choice})
    click.echo(f"voted {choice} on {p['kind']} of {p['subject'] or '-'} (#{answer['seq']}); "
               f"the proposal is {answer['outcome']}")


@click.group()
def member() -> None:
    """This member's place in the federation."""


@member.command("withdraw")
@DATA_DIR
@click.option("--reason", help="Why, for the record (at most 256 characters).")
@click.option("--yes", "confirmed", is_flag=True,
              help="Confirm: withdrawal is final; re-joining is a new application.")
def member_withdraw(data_dir: Path, reason: str | None, confirmed: bool) -> None:
    """Withdraw this member from the federation: its chain closes, nodes stop gossiping
    with it, its record stays shown as withdrawn.

    Example: pocnode member withdraw --data-dir /var/lib/pocnode --yes
    """
    if not confirmed:
        raise CliError("withdrawal is final (re-joining is a new application): add --yes")
    body: dict[str, Any] = {"confirm": True}
    if reason:
        body["reason"] = reason
    answer = OperatorClient(data_dir).post("/v1/withdraw", body)
    click.echo(f"{answer['member']} withdrew (#{answer['seq']}); its chain is closed")


@click.group()
def applications() -> None:
    """Applications strangers handed this node, waiting for a sponsor."""


@applications.command("list")
@DATA_DIR
@JSON
@click.option("--save", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each application to DIR/<member>.bin, to propose it.")
def applications_list(data_dir: Path, as_json: bool, save: Path | None) -> None:
    """Applications received, with the keys' fingerprints to check out of band.

    Example: pocnode applications list --data-dir D --save /tmp/apps
    """
    rows = OperatorClient(data_dir).get("/v1/applications")["applications"]
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        for row in rows:
            (save / f"{row['member']}.bin").write_bytes(bytes.fromhex(row["application"]))
    if as_json:
        emit_json(rows)
        return
    table(None, ["member", "role", "name", "fingerprint", "reference", "received"],
          [(r["member"], r["role"], r["name"], r["fingerprint"], r["reference"] or "",
            when(r["received_at"])) for r in rows])


def register(main: click.Group, key_group: click.Group) -> None:
    for command in (apply, propose, proposals, vote, member, applications):
        main.add_command(command)
    key_group.add_command(key_new)


@click.command("new")
@DATA_DIR
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the keys' passphrase (default: as `pocnode run` finds it).")
def key_new(data_dir: Path, passphrase_file: Path | None) -> None:
    """For a member that lost its identity key: make a new one (the old file must be gone)
    and print its public key for another member to propose a key recovery with.

    Example: pocnode key new --data-dir /var/lib/pocnode > newkey.json
    """
    from pocnode.core.keys import SigningKey
    from pocnode.keyfile import save_signing_key
    from pocnode.node import datadir
    from pocnode.node.config import load_config

    path = data_dir / datadir.IDENTITY_KEY
    if path.exists():
        raise CliError(f"{path} exists: a key that is not lost is rotated (pocnode key "
                       f"rotate), not recovered; move it aside only if it is truly lost")
    config = load_config(data_dir)
    genesis = datadir.load_genesis(data_dir)
    source = datadir.passphrase_source(data_dir, config.passphrase_file, passphrase_file)
    passphrase = datadir.read_passphrase_from(source, data_dir)
    key = SigningKey.generate(genesis.sig_alg)
    save_signing_key(path, key, passphrase)
    emit_json({"member": config.member,
               "key": {k: v.hex() for k, v in key.public_key.to_wire().items()}})
    click.echo(f"new identity key saved in {path}; hand the JSON above to another member: "
               f"pocnode propose recover {config.member} --key FILE", err=True)
