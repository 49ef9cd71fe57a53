"""`pocnode genesis ...`: the founders' ceremony, file by file, for real deployments.

1. each founder: `pocnode genesis founder --data-dir D --name "..." > atl.json`
2. one of them:  `pocnode genesis draft --name "..." --founder atl.json ... --out draft.bin`
3. each founder checks the draft's hash and summary with the others (out of band), then
                 `pocnode genesis sign draft.bin --data-dir D --out atl.sig`
4. anyone:       `pocnode genesis assemble draft.bin atl.sig bor.sig ... --out genesis.bin`
5. each founder: `pocnode genesis install genesis.bin --data-dir D`
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click

from pocnode.cli.client import CliError
from pocnode.cli.options import DATA_DIR, PASSPHRASE, read_file
from pocnode.cli.render import duration, emit_json, kv, table, when
from pocnode.core import encoding
from pocnode.core.errors import PocError
from pocnode.core.genesis import (
    assemble,
    build_payload,
    default_governance,
    parse_draft,
    parse_genesis,
    sign_payload,
)
from pocnode.core.keys import PublicKey, Signature
from pocnode.node import datadir
from pocnode.node.config import load_config

# Founder cards, drafts and signatures are small files a human passes around.
MAX_FILE_BYTES = 4 * 1024 * 1024


def _read(path: Path) -> bytes:
    return read_file(path, MAX_FILE_BYTES, "a ceremony file")


def _write(path: Path | None, data: bytes) -> None:
    if path is None:
        click.get_binary_stream("stdout").write(data)  # type: ignore[operator]
    else:
        path.write_bytes(data)


@click.group()
def genesis() -> None:
    """The founders' genesis ceremony (file based)."""


@genesis.command()
@DATA_DIR
@click.option("--name", required=True, help="The state's name as it should appear.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write the card to. Default: stdout.")
@PASSPHRASE
def founder(data_dir: Path, name: str, out: Path | None, passphrase_file: Path | None) -> None:
    """Print this node's founder card: member id, name, public key, endpoint.

    Example: pocnode genesis founder --data-dir /var/lib/pocnode --name "Republic of X" > x.json
    """
    config = load_config(data_dir)
    key, _, _ = datadir.unlock_identity(data_dir, config.passphrase_file, passphrase_file)
    card = {"id": config.member, "name": name, "alg": key.alg,
            "key": {k: v.hex() for k, v in key.public_key.to_wire().items()},
            "endpoints": [config.advertise]}
    _write(out, (json.dumps(card, indent=2) + "\n").encode())


def _cards(paths: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Each founder once: a card passed twice, or two cards of one member or one key,
    would be refused by the genesis rules with a message about sorting; say what it is."""
    cards = [_card(p) for p in paths]
    by_id: dict[str, Path] = {}
    by_key: dict[bytes, Path] = {}
    for path, card in zip(paths, cards, strict=True):
        if card["id"] in by_id:
            same = "is given twice" if by_id[card["id"]] == path else \
                f"and {by_id[card['id']]} both give member {card['id']}"
            raise CliError(f"{path} {same}: pass each founder's card once (--founder)")
        key = card["key"].ed25519
        if key in by_key:
            raise CliError(f"{path} and {by_key[key]} carry the same identity key: one key "
                           f"would be one holder with two votes; each founder makes its own "
                           f"card with `pocnode genesis founder`")
        by_id[card["id"]], by_key[key] = path, path
    return cards


def _card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(_read(path))
        alg = card["alg"]
        key = PublicKey.from_wire({k: bytes.fromhex(v) for k, v in card["key"].items()},
                                  alg=alg, path=f"{path}: key")
        return {"id": card["id"], "name": card["name"], "key": key,
                "endpoints": list(card.get("endpoints", [])), "alg": alg}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{path} is not a founder card ({type(exc).__name__}: {exc})") from None


@genesis.command()
@click.option("--name", required=True, help="The federation's name.")
@click.option("--founder", "founders", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A founder card (from `genesis founder`); once per founder.")
@click.option("--governance", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file of governance rules (PROTOCOL.md §5.3); default: consensus for "
                   "admission and rules, silence for observers, 70% for key recovery.")
@click.option("--hpke-suite", type=click.Choice(["x25519", "mlkem768-x25519"]),
              default="x25519", show_default=True,
              help="Sealing of consent and bilateral values; the hybrid is post-quantum.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write the draft to (every founder signs this file).")
def draft(name: str, founders: tuple[Path, ...], governance: Path | None, hpke_suite: str,
          out: Path) -> None:
    """Write the unsigned genesis every founder will sign.

    Example: pocnode genesis draft --name "PoC Directory" --founder atl.json --founder bor.json
    --out draft.bin
    """
    cards = _cards(founders)
    algs = {c["alg"] for c in cards}
    if len(algs) != 1:
        raise CliError(f"founders use different signature algorithms: {sorted(algs)}")
    try:
        rules = json.loads(_read(governance)) if governance else default_governance()
    except ValueError as exc:
        raise CliError(f"{governance}: not valid JSON ({exc})") from None
    payload = build_payload(name=name, created=int(time.time() * 1000), sig_alg=algs.pop(),
                            founders=cards, governance=rules, hpke_suite=hpke_suite)
    out.write_bytes(payload)
    _summary(payload, title=f"draft written to {out}")


def _parse_draft_file(payload: bytes, path: Path) -> dict[str, Any]:
    """A draft; a signed genesis given in its place is named as such."""
    try:
        return parse_draft(payload)
    except PocError as exc:
        try:
            parse_genesis(payload)
        except PocError:
            raise CliError(f"{path} is not a genesis draft ({exc})") from None
        raise CliError(f"{path} is already a signed genesis, not a draft: install it "
                       f"(`pocnode genesis install {path}`)") from None


def _summary(payload: bytes, *, title: str) -> None:
    fields = parse_draft(payload)
    kv(title, [("name", fields["name"]), ("federation id (sha-256)",
                                          hashlib.sha256(payload).hexdigest()),
               ("created", when(fields["created"]) or "(not set)"),
               ("signature algorithm", fields["sig_alg"]), ("hpke suite", fields["hpke_suite"]),
               ("founders", len(fields["founders"]))])
    table("founders", ["id", "name", "ed25519 key", "endpoints"],
          [(f.id, f.name, f.key.ed25519.hex()[:16] + "…", " ".join(f.endpoints))
           for f in fields["founders"]])
    table("governance", ["decision", "rule", "voting window"],
          [(d, rule_text(r), duration(r["window_ms"])) for d, r in
           fields["governance"].items()])


def rule_text(rule: Any) -> str:
    """A governance rule as the founders would say it (PROTOCOL.md §5.3)."""
    kind = rule["rule"]
    if kind == "fraction":
        return f"{rule['num']}/{rule['den']} of members"
    if kind == "count":
        return f"at least {rule['min']} members"
    if kind == "silence":
        return "silence procedure (adopted unless a member objects)"
    return "consensus (every member)" if kind == "consensus" else kind


@genesis.command()
@click.argument("draft_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write this founder's signature to.")
@click.option("--yes", is_flag=True, help="Sign without asking (you checked the hash).")
@PASSPHRASE
def sign(draft_file: Path, data_dir: Path, out: Path, yes: bool,
         passphrase_file: Path | None) -> None:
    """Sign a draft with this node's identity key, after showing what is signed.

    Example: pocnode genesis sign draft.bin --data-dir /var/lib/pocnode --out atl.sig
    """
    payload = _read(draft_file)
    fields = _parse_draft_file(payload, draft_file)
    config = load_config(data_dir)
    key, _, _ = datadir.unlock_identity(data_dir, config.passphrase_file, passphrase_file)
    mine = next((f for f in fields["founders"] if f.id == config.member), None)
    if mine is None:
        raise CliError(f"{config.member} (this node) is not a founder in {draft_file} "
                       f"(founders: {', '.join(f.id for f in fields['founders'])}): send your "
                       f"card (`pocnode genesis founder`) to whoever drafts it")
    if mine.key != key.public_key:
        raise CliError(f"{draft_file} lists {config.member} with another identity key than "
                       f"this node's ({data_dir}): was the card made from another data "
                       f"directory? make a new card and ask for a new draft")
    _summary(payload, title=f"you are signing, as {config.member}")
    if not yes:
        click.confirm("Compare the federation id with the other founders. Sign?", abort=True)
    sig = sign_payload(payload, key)
    out.write_bytes(encoding.encode({"member": config.member, "sig": sig.to_wire()}))
    click.echo(f"signature of {config.member} written to {out}")


@genesis.command("assemble")
@click.argument("draft_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("sig_files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write the signed genesis to.")
def assemble_cmd(draft_file: Path, sig_files: tuple[Path, ...], out: Path) -> None:
    """Combine the draft and every founder's signature; verify before writing.

    Example: pocnode genesis assemble draft.bin atl.sig bor.sig --out genesis.bin
    """
    payload = _read(draft_file)
    _parse_draft_file(payload, draft_file)
    sigs: dict[str, Signature] = {}
    for path in sig_files:
        try:
            doc = encoding.decode(_read(path))
            sigs[doc["member"]] = Signature.from_wire(doc["sig"], path=str(path))
        except (PocError, KeyError, TypeError) as exc:
            raise CliError(f"{path} is not a genesis signature ({exc})") from None
    signed = assemble(payload, sigs)
    genesis_obj = parse_genesis(signed)
    out.write_bytes(signed)
    click.echo(f"genesis assembled and verified: federation id {genesis_obj.id.hex()}")


@genesis.command()
@click.argument("genesis_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_DIR
@click.option("--applicant", is_flag=True,
              help="This node's state joins after the genesis (it is not a founder): "
                   "install the federation's genesis, then `pocnode apply`.")
def install(genesis_file: Path, data_dir: Path, applicant: bool) -> None:
    """Verify a signed genesis and install it in a data directory; refuses a genesis that
    does not list this node's member as a founder, unless it is an applicant.

    Example: pocnode genesis install genesis.bin --data-dir /var/lib/pocnode
    """
    member = load_config(data_dir).member
    g = datadir.install_genesis(data_dir, _read(genesis_file), member=member,
                                name=str(genesis_file), applicant=applicant)
    click.echo(f"installed genesis {g.name!r}: federation id {g.id.hex()}, "
               f"{len(g.founders)} founders")


@genesis.command()
@click.argument("genesis_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(genesis_file: Path, as_json: bool) -> None:
    """Verify a signed genesis and show what it says (for auditors).

    Example: pocnode genesis show genesis.bin
    """
    g = datadir.parse_genesis_file(_read(genesis_file), str(genesis_file))
    if as_json:
        emit_json({"federation_id": g.id.hex(), "name": g.name, "created": g.created,
                   "sig_alg": g.sig_alg, "hpke_suite": g.hpke_suite,
                   "governance": {k: dict(v) for k, v in g.governance.items()},
                   "founders": [{"id": f.id, "name": f.name, "endpoints": list(f.endpoints),
                                 "key": {k: v.hex() for k, v in f.key.to_wire().items()}}
                                for f in g.founders]})
        return
    _summary(g.payload, title="verified genesis: every founder's signature checks")
