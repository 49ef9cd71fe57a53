"""`pocnode record ...` and `pocnode directory ...`: the contact record, yours and theirs."""

from __future__ import annotations

import json
import os
import re
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
from pocnode.core.record import (
    CONTENT_FIELDS,
    DOMAINS,
    LEVELS,
    placeholder_warnings,
    plain_record_errors,
    template_record,
)

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
# secure_channels. Optional, list what your state chooses to: unit, role, level
# (political, senior, working, operational), person, email, phone, secure_channels
# (openpgp, smime, signal, matrix, threema, other), languages, hours (timezone,
# availability), notes, field_visibility; and node.endpoints, the URL peers reach your
# node at (your config's [peer] advertise).
# Quote phone numbers ("+41225550123"): unquoted, YAML reads +41... as a number.
# Every value below is an example: replace each one (validate warns about those left).
# Check it:   pocnode record validate record.yaml
# Publish it: pocnode record publish record.yaml --data-dir DIR
"""


# -- reading a record file, with every error located --------------------------------------

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _locate(root: yaml.Node | None, path: str | None) -> tuple[int, int] | None:
    """(line, column), 1-based, of the YAML node a validation path names: the key for a
    field, the item for a list index, the nearest enclosing node for what is missing."""
    if root is None:
        return None
    node, mark = root, root.start_mark
    for name, index in _PATH_TOKEN.findall(path or ""):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            mark = node.start_mark
        elif name and isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == name), None)
            if found is None:
                break
            mark, node = found[0].start_mark, found[1]
        else:
            break
    return mark.line + 1, mark.column + 1


def _duplicate_keys(node: yaml.Node | None, path: str = "") -> list[tuple[str, yaml.Mark]]:
    """YAML (and JSON) parsers keep the last of two equal keys silently; an author meant
    one of them, so name both."""
    out: list[tuple[str, yaml.Mark]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Mark] = {}
        for key, value in node.value:
            where = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                out.append((where, key.start_mark))
            seen.setdefault(key.value, key.start_mark)
            out += _duplicate_keys(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _duplicate_keys(item, f"{path}[{i}]")
    return out


class RecordFile:
    """A record file, parsed, with its YAML node tree for locating errors (JSON is YAML)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = _utf8(read_file(path, MAX_RECORD_FILE, "a record"), path)
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        try:
            self.plain = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else (
                f":{line}:{column}" if line is not None else "")
            raise CliError(f"{path}{where}: not valid {kind}: "
                           f"{str(getattr(exc, 'problem', None) or exc).splitlines()[0]}"
                           ) from None
        try:
            self.tree: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.tree = None  # JSON that YAML cannot read (a tab, say): no line numbers

    def where(self, path: str | None) -> str:
        at = _locate(self.tree, path)
        return f"{self.path}:{at[0]}:{at[1]}" if at else str(self.path)

    def problems(self) -> list[str]:
        """Every error, one line each, in file order: "FILE:LINE:COL: PATH: MESSAGE"."""
        found: list[tuple[tuple[int, int], str]] = []
        for where, mark in _duplicate_keys(self.tree):
            found.append(((mark.line + 1, mark.column + 1),
                          f"{self.path}:{mark.line + 1}:{mark.column + 1}: {where}: duplicate "
                          f"key (only the last one would count): keep one"))
        errors = plain_record_errors(self.plain)
        if not errors and not found:
            try:
                compile_record(self.plain, os.urandom)  # also refuses what could not be signed
            except InvalidRecord as refused:
                errors = [refused]
        for error in errors:
            at = _locate(self.tree, error.path) or (0, 0)
            found.append((at, f"{self.where(error.path)}: {error.path or 'record'}: "
                              f"{error.message}"))
        return [line for _, line in sorted(found, key=lambda f: f[0])]

    def warnings(self, advertise: str | None = None, config_file: Path | None = None
                 ) -> list[str]:
        out = [f"{self.where(path)}: {path}: {message}"
               for path, message in placeholder_warnings(self.plain)]
        endpoints = (self.plain.get("node") or {}).get("endpoints")
        if advertise and endpoints is not None and advertise not in endpoints:
            out.append(f"{self.where('node.endpoints')}: node.endpoints lists "
                       f"{', '.join(endpoints) or 'nothing'}, but this node advertises "
                       f"{advertise} ([peer] advertise in {config_file}): peers reach a node "
                       f"at its record's endpoints; list {advertise} there (or fix advertise)")
        return out


def _utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _checked(path: Path, data_dir: Path | None) -> dict[str, Any]:
    """Every error on its own line (and exit 1), or the record, after printing warnings."""
    record_file = RecordFile(path)
    problems = record_file.problems()
    if problems:
        for line in problems:
            click.echo(f"error: {line}", err=True)
        sys.exit(1)
    advertise = config_file = None
    if data_dir is not None:
        from pocnode.node.config import CONFIG_FILE, load_config

        advertise, config_file = load_config(data_dir).advertise, data_dir / CONFIG_FILE
    for line in record_file.warnings(advertise, config_file):
        click.echo(f"warning: {line}", err=True)
    return record_file.plain


@click.group()
def record() -> None:
    """Your own contact record: write, check, publish, show."""


@record.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="YAML (with comments) or JSON.")
def template(fmt: str) -> None:
    """Print an example record to start from: every field of the template, entries of all
    three visibilities. Replace every value.

    Example: pocnode record template > record.yaml
    """
    example = template_record()
    if fmt == "json":
        emit_json(example)
    else:
        click.echo(TEMPLATE_HEADER + yaml.safe_dump(example, sort_keys=False,
                                                    allow_unicode=True, width=88), nl=False)


@record.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="POCNODE_DATA_DIR", show_envvar=True,
              help="Also check node.endpoints against this node's advertised address.")
def validate(file: Path, data_dir: Path | None) -> None:
    """Check a record file against the template: every error at once, each with its line,
    column and field; warnings for example values left in.

    Example: pocnode record validate record.yaml
    """
    if data_dir is not None and not (data_dir / "config.toml").is_file():
        data_dir = None  # only an extra check; the record stands on its own
    plain = _checked(file, data_dir)
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
    plain = _checked(file, data_dir)
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


# -- showing records -----------------------------------------------------------------------


def _not_yet(member: str) -> str:
    return f"not yet received: {member}'s node sends them within a few gossip rounds"


def print_record_view(view: dict[str, Any]) -> None:
    """Values this node may read; then, per entry, what exists but is not shown: withheld
    (not for this node) apart from not yet received (for this node, still on its way)."""
    click.echo(f"{view['member']} record #{view['seq']}, signed {when(view['ts'])}")
    rows = []
    for entry in view["record"]["entries"]:
        for name in CONTENT_FIELDS:
            if name in entry["fields"]:
                rows.append((entry["id"], entry["domain"], name,
                             entry["field_visibility"].get(name, ""),
                             _text(entry["fields"][name])))
        for vis, n in (entry.get("awaiting") or {}).items():
            if n:
                rows.append((entry["id"], entry["domain"], f"({n} not yet received)", vis,
                             _not_yet(view["member"])))
        for vis, n in (entry.get("withheld") or {}).items():
            if n:
                rows.append((entry["id"], entry["domain"], f"({n} withheld)", vis,
                             "ask for consent" if vis == "bilateral" else "members only"))
    table(None, ["entry", "domain", "field", "visibility", "value"], rows)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def filter_view(view: dict[str, Any], domain: str | None, level: str | None
                ) -> dict[str, Any]:
    """The view with only the entries of ``domain`` and ``level``. An entry whose level
    this node cannot read does not match a level (it is unknown, not different)."""
    if domain is None and level is None:
        return view
    entries = [e for e in view["record"]["entries"]
               if (domain is None or e["domain"] == domain)
               and (level is None or e["fields"].get("level") == level)]
    return {**view, "record": {**view["record"], "entries": entries}}


class _Source:
    """The directory from the running node's API, or from its database when it is not
    running (read-only; the node may start meanwhile, SQLite's WAL lets both be)."""

    def __init__(self, data_dir: Path) -> None:
        from pocnode.cli.offline import OfflineReader, node_running

        self.data_dir = data_dir
        self.online = node_running(data_dir)
        if self.online:
            self.client = OperatorClient(data_dir)
        else:
            self.reader = OfflineReader(data_dir)
            click.echo(f"note: the node is not running; read from "
                       f"{self.reader.config.db_path} (what it held when it stopped)",
                       err=True)

    def listing(self) -> list[dict[str, Any]]:
        if self.online:
            return self.client.get("/v1/directory")["members"]
        return self.reader.directory()

    def view(self, member: str) -> dict[str, Any]:
        if self.online:
            return self.client.get(f"/v1/directory/{member}")
        return self.reader.view(member)


DOMAIN = click.option("--domain", type=click.Choice(DOMAINS),
                      help="Only entries of this domain.")
LEVEL = click.option("--level", type=click.Choice(LEVELS),
                     help="Only entries of this level (entries whose level you may not "
                          "read do not match).")


@click.group()
def directory() -> None:
    """The federation's directory, as this node may see it (from the database when the
    node is stopped)."""


@directory.command("list")
@DATA_DIR
@DOMAIN
@LEVEL
@JSON
def directory_list(data_dir: Path, domain: str | None, level: str | None,
                   as_json: bool) -> None:
    """Every member, and the record of it this node holds.

    Example: pocnode directory list --domain technical --data-dir /var/lib/pocnode
    """
    source = _Source(data_dir)
    members = source.listing()
    if domain or level:
        chosen = []
        for m in members:
            if not m["record_seq"] or (domain and domain not in m["domains"]):
                continue
            view = filter_view(source.view(m["member"]), domain, level)
            entries = view["record"]["entries"]
            if entries:
                chosen.append({**m, "entries": len(entries),
                               "domains": sorted({e["domain"] for e in entries})})
        members = chosen
    if as_json:
        emit_json(members)
        return
    table(None, ["member", "name", "record", "signed", "entries", "domains"],
          [(m["member"], m["name"], f"#{m['record_seq']}" if m["record_seq"] else "none yet",
            when(m["record_ts"]), m["entries"], ", ".join(m["domains"])) for m in members])


@directory.command("show")
@click.argument("member")
@DATA_DIR
@DOMAIN
@LEVEL
@JSON
def directory_show(member: str, data_dir: Path, domain: str | None, level: str | None,
                   as_json: bool) -> None:
    """One member's record: what this node may read, what is withheld from it, and what
    it may read but has not received yet.

    Example: pocnode directory show ATL --data-dir /var/lib/pocnode
    """
    view = filter_view(_Source(data_dir).view(member.upper()), domain, level)
    if as_json:
        emit_json(view)
        return
    print_record_view(view)


@directory.command("export")
@DATA_DIR
@click.option("--format", "fmt", type=click.Choice(["json", "vcard"]), default="json",
              show_default=True, help="JSON (the records as shown) or vCard 4.0.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write. Default: stdout.")
@DOMAIN
@LEVEL
def directory_export(data_dir: Path, fmt: str, out: Path | None, domain: str | None,
                     level: str | None) -> None:
    """Export every record this node holds, as JSON or vCard 4.0 (RFC 6350). Entries of
    which this node can read no value yet make no card.

    Example: pocnode directory export --format vcard --out poc.vcf --data-dir DIR
    """
    source = _Source(data_dir)
    views = [filter_view(source.view(m["member"]), domain, level)
             for m in source.listing() if m["record_seq"]]
    views = [v for v in views if v["record"]["entries"]]
    text = (json.dumps(views, indent=2, ensure_ascii=False) + "\n" if fmt == "json"
            else to_vcards(views))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"exported {len(views)} records to {out}", err=True)


@directory.command("history")
@click.argument("member")
@DATA_DIR
@JSON
def directory_history(member: str, data_dir: Path, as_json: bool) -> None:
    """Every version of MEMBER's record this node holds, when it was signed and received,
    and what changed from the version before (by entry and field). Values this node may
    not read are compared by count only.

    Example: pocnode directory history ATL --data-dir /var/lib/pocnode
    """
    from pocnode.cli.offline import OfflineReader

    versions = OfflineReader(data_dir).history(member.upper())
    if not versions:
        raise CliError(f"no record from {member.upper()} is in this node's database yet")
    out: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] | None = None
    for version in versions:
        out.append({"seq": version.seq, "event_id": version.event_id.hex(),
                    "signed": version.ts, "received": version.received_at,
                    "changes": record_changes(previous, version.view["entries"])})
        previous = version.view["entries"]
    if as_json:
        emit_json({"member": member.upper(), "versions": out})
        return
    rows = []
    for v in out:
        first = True
        for change in v["changes"] or [{"entry": "", "change": "no visible change"}]:
            rows.append((f"#{v['seq']}" if first else "", when(v["signed"]) if first else "",
                         when(v["received"]) if first else "", change["entry"],
                         change["change"]))
            first = False
    table(f"{member.upper()}: {len(out)} record versions held", ["record", "signed",
                                                                  "received", "entry",
                                                                  "change"], rows)


def record_changes(before: list[dict[str, Any]] | None, after: list[dict[str, Any]]
                   ) -> list[dict[str, str]]:
    """What changed between two record views, entry by entry, as an operator reads it."""
    if before is None:
        return [{"entry": e["id"], "change": f"first version: {e['domain']}, "
                 f"{e['visibility']}, {len(e['fields'])} values shown"
                 + _withheld_text(e)} for e in after]
    old = {e["id"]: e for e in before}
    new = {e["id"]: e for e in after}
    changes: list[dict[str, str]] = []
    for entry_id in new.keys() - old.keys():
        changes.append({"entry": entry_id, "change": "entry added"})
    for entry_id in old.keys() - new.keys():
        changes.append({"entry": entry_id, "change": "entry removed"})
    for entry_id in [e["id"] for e in after if e["id"] in old]:
        a, b = old[entry_id], new[entry_id]
        for key in ("domain", "visibility"):
            if a[key] != b[key]:
                changes.append({"entry": entry_id, "change": f"{key} {a[key]} → {b[key]}"})
        for name in CONTENT_FIELDS:
            was, now = a["fields"].get(name), b["fields"].get(name)
            if was == now:
                continue
            if was is None:
                change = f"{name} added: {_text(now)}"
            elif now is None:
                change = f"{name} removed (was {_text(was)})"
            else:
                change = f"{name} changed: {_text(was)} → {_text(now)}"
            changes.append({"entry": entry_id, "change": change})
        for vis in ("members", "bilateral"):
            was_n = (a.get("withheld") or {}).get(vis, 0)
            now_n = (b.get("withheld") or {}).get(vis, 0)
            if was_n or now_n:
                changes.append({"entry": entry_id, "change": (
                    f"{now_n} {vis} values withheld (were {was_n}); not comparable"
                    if was_n != now_n else
                    f"{now_n} {vis} values withheld in both; may have changed")})
    order: dict[str, int] = {}
    for i, e in enumerate(after + before):
        order.setdefault(e["id"], i)
    return sorted(changes, key=lambda c: order.get(c["entry"], 0))


def _withheld_text(entry: dict[str, Any]) -> str:
    withheld = {k: n for k, n in (entry.get("withheld") or {}).items() if n}
    return "".join(f", {n} {vis} withheld" for vis, n in withheld.items())
