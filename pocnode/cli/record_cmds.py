"""`pocnode record ...` and `pocnode directory ...`: the contact record, yours and theirs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from pocnode.cli.client import CliError, OperatorClient
from pocnode.cli.options import DATA_DIR, JSON, read_file
from pocnode.cli.render import emit_json, table, when
from pocnode.cli.vcard import to_vcards
from pocnode.core.disclosure import compile_record
from pocnode.core.errors import InvalidRecord
from pocnode.core.record import CONTENT_FIELDS, example_record, validate_plain_record

# A record is a few KB; a file of a megabyte is a mistake, not a record.
MAX_RECORD_FILE = 1024 * 1024

TEMPLATE_HEADER = """\
# pocnode contact record, template 1 (protocol/record.schema.json).
# One entry per Point of Contact; domain is diplomatic, policy or technical.
# visibility, per entry (and per field in field_visibility):
#   public    - anyone, including non-members
#   members   - admitted members of the federation only
#   bilateral - only states with which mutual consent exists
# Required per entry: id, domain, visibility, organisation, and one of email, phone or
# secure_channels. Everything else is optional: list what your state chooses to.
# Check it:   pocnode record validate record.yaml
# Publish it: pocnode record publish record.yaml --data-dir DIR
"""


def load_record_file(path: Path) -> dict[str, Any]:
    raw = read_file(path, MAX_RECORD_FILE, "a record")
    text = _utf8(raw, path)
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                       f"{str(exc).splitlines()[0]}") from None


def _utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _check(path: Path) -> dict[str, Any]:
    plain = load_record_file(path)
    try:
        validate_plain_record(plain)
        compile_record(plain, os.urandom)  # also refuses what could never be signed
    except InvalidRecord as exc:
        raise CliError(f"{path}: {exc.path or 'record'}: {exc.message}") from None
    return plain


@click.group()
def record() -> None:
    """Your own contact record: write, check, publish, show."""


@record.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True)
def template(fmt: str) -> None:
    """Print an example record to start from (entries of all three visibilities).

    Example: pocnode record template > record.yaml
    """
    example = example_record()
    if fmt == "json":
        emit_json(example)
    else:
        click.echo(TEMPLATE_HEADER + yaml.safe_dump(example, sort_keys=False,
                                                    allow_unicode=True, width=88), nl=False)


@record.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check a record file against the template; errors name the field.

    Example: pocnode record validate record.yaml
    """
    plain = _check(file)
    counts: dict[str, int] = {}
    for entry in plain["entries"]:
        counts[entry["visibility"]] = counts.get(entry["visibility"], 0) + 1
    click.echo(f"{file}: valid, {len(plain['entries'])} entries ("
               + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + ")")


@record.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@DATA_DIR
def publish(file: Path, data_dir: Path) -> None:
    """Validate, sign and publish a record; the node gossips it to the federation.

    Example: pocnode record publish record.yaml --data-dir /var/lib/pocnode
    """
    plain = _check(file)
    answer = OperatorClient(data_dir).post("/v1/record", plain)
    click.echo(f"published {answer['member']} #{answer['seq']} "
               f"(event {answer['event_id'][:16]}…); gossip carries it to the federation")


@record.command("show")
@DATA_DIR
@JSON
def record_show(data_dir: Path, as_json: bool) -> None:
    """Show this node's own record as published, with every value.

    Example: pocnode record show --data-dir /var/lib/pocnode
    """
    view = OperatorClient(data_dir).get("/v1/record")
    if as_json:
        emit_json(view)
        return
    print_record_view(view)


def print_record_view(view: dict[str, Any]) -> None:
    click.echo(f"{view['member']} record #{view['seq']}, signed {when(view['ts'])}")
    rows = []
    for entry in view["record"]["entries"]:
        for name in CONTENT_FIELDS:
            if name in entry["fields"]:
                rows.append((entry["id"], entry["domain"], name,
                             entry["field_visibility"].get(name, ""),
                             _text(entry["fields"][name])))
        for vis, n in entry.get("withheld", {}).items():
            rows.append((entry["id"], entry["domain"], f"({n} withheld)", vis,
                         "ask for consent" if vis == "bilateral" else "members only"))
    table(None, ["entry", "domain", "field", "visibility", "value"], rows)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


@click.group()
def directory() -> None:
    """The federation's directory, as this node may see it."""


@directory.command("list")
@DATA_DIR
@JSON
def directory_list(data_dir: Path, as_json: bool) -> None:
    """Every member, and the record of it this node holds.

    Example: pocnode directory list --data-dir /var/lib/pocnode
    """
    members = OperatorClient(data_dir).get("/v1/directory")["members"]
    if as_json:
        emit_json(members)
        return
    table(None, ["member", "name", "record", "signed", "entries", "domains"],
          [(m["member"], m["name"], f"#{m['record_seq']}" if m["record_seq"] else "none yet",
            when(m["record_ts"]), m["entries"], ", ".join(m["domains"])) for m in members])


@directory.command("show")
@click.argument("member")
@DATA_DIR
@JSON
def directory_show(member: str, data_dir: Path, as_json: bool) -> None:
    """One member's record: what this node may read, and what is withheld from it.

    Example: pocnode directory show ATL --data-dir /var/lib/pocnode
    """
    view = OperatorClient(data_dir).get(f"/v1/directory/{member.upper()}")
    if as_json:
        emit_json(view)
        return
    print_record_view(view)


@directory.command("export")
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["json", "vcard"]), default="json",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Default: stdout.")
def directory_export(data_dir: Path, fmt: str, out: Path | None) -> None:
    """Export every record this node holds, as JSON or vCard 4.0 (RFC 6350).

    Example: pocnode directory export --format vcard --out poc.vcf --data-dir DIR
    """
    client = OperatorClient(data_dir)
    views = [client.get(f"/v1/directory/{m['member']}")
             for m in client.get("/v1/directory")["members"] if m["record_seq"]]
    text = (json.dumps(views, indent=2, ensure_ascii=False) + "\n" if fmt == "json"
            else to_vcards(views))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"exported {len(views)} records to {out}", err=True)
