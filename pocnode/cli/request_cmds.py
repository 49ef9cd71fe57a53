"""`pocnode request ...` and `pocnode ping ...`: the duty officer's inbox and ping tests
(PROTOCOL.md §12), a thin shell over the operator API."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from pocnode.cli.client import CliError, OperatorClient
from pocnode.cli.options import DATA_DIR, JSON, read_file
from pocnode.cli.render import emit_json, kv, table, when

TYPES = ("ping", "incident-notification", "information-request", "assistance-request",
         "follow-up", "other")
URGENCIES = ("routine", "priority", "urgent")
DOMAINS = ("diplomatic", "policy", "technical")
# A body file is a message, not a document: the request's own limit is 8000 characters.
MAX_BODY_FILE = 64 * 1024
# Attachments are named by their digest; the file itself travels elsewhere.
MAX_ATTACHMENT_FILE = 1024 * 1024 * 1024
_RELATIVE = re.compile(r"(\d+)\s*(s|m|min|h|d)")
_UNIT_MS = {"s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
# `ping run` waits this long for receipts before reporting who did not answer.
DEFAULT_PING_WAIT_S = 30.0
# Polling the node while waiting: it answers from memory.
POLL_S = 0.5


def parse_time(text: str, now_ms: int) -> int:
    """``30m``, ``2h``, ``1d`` from now, or an ISO 8601 UTC time (``2026-06-10T12:00Z``)."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        return now_ms + int(match.group(1)) * _UNIT_MS[match.group(2)]
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected 30m, 2h, 1d or an ISO time such as "
                                 f"2026-06-10T12:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def resolve(client: OperatorClient, ref: str) -> tuple[str, str]:
    """``SENDER/ID`` as it is, or an id prefix (4+ hex digits) among this node's requests."""
    if "/" in ref:
        sender, rid = ref.split("/", 1)
        return sender.upper(), rid.lower()
    prefix = ref.lower()
    if len(prefix) < 4 or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise CliError(f"{ref!r}: give a request as SENDER/ID or at least 4 hex digits of its "
                       f"id (`pocnode request inbox` lists them)")
    listing = client.get("/v1/requests")
    found = {(r["sender"], r["id"]) for r in listing["inbox"] + listing["outbox"]
             if r["id"].startswith(prefix)}
    if len(found) != 1:
        raise CliError(f"{ref!r} names {len(found)} requests here; give more of the id"
                       if found else f"no request here has an id starting {ref!r}")
    return found.pop()


def _short(r: dict[str, Any]) -> str:
    return f"{r['sender']}/{r['id'][:8]}"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


@click.group()
def request() -> None:
    """Communication requests: send, read, acknowledge, answer, decline, publish."""


@request.command("send")
@click.argument("member")
@click.option("--type", "type_", type=click.Choice(TYPES), required=True, help="Request type.")
@click.option("--subject", required=True, help="At most 200 characters.")
@click.option("--body", "body", help="The text (at most 8000 characters).")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the text from a UTF-8 file.")
@click.option("--urgency", type=click.Choice(URGENCIES), default="routine", show_default=True,
              help="How soon it needs a person.")
@click.option("--reply-by", help="30m, 2h, 1d, or an ISO time (UTC): shown expired after it.")
@click.option("--lang", default="en", show_default=True, help="Language tag of the text.")
@click.option("--domain", type=click.Choice(DOMAINS), help="The recipient's domain wanted.")
@click.option("--entry", help="The recipient's PoC entry id wanted.")
@click.option("--from-entry", help="Your PoC entry the request comes from.")
@click.option("--attach", "attachments", multiple=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A file exchanged elsewhere: its SHA-256 travels, not the file.")
@click.option("--ref", help="An earlier request this one follows (SENDER/ID or id prefix).")
@DATA_DIR
@JSON
def request_send(member: str, type_: str, subject: str, body: str | None,
                 body_file: Path | None, urgency: str, reply_by: str | None, lang: str,
                 domain: str | None, entry: str | None, from_entry: str | None,
                 attachments: tuple[Path, ...], ref: str | None, data_dir: Path,
                 as_json: bool) -> None:
    """Send a request to MEMBER, sealed so that only MEMBER's node can read it.

    Example: pocnode request send FRA --type information-request --subject "Phishing wave"
    --body "Do you see it too?" --urgency priority --reply-by 4h
    """
    if (body is None) == (body_file is None):
        raise click.UsageError("give the text with exactly one of --body or --body-file")
    if body_file is not None:
        try:
            body = read_file(body_file, MAX_BODY_FILE, "a request text").decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{body_file}: not UTF-8 text") from None
    client = OperatorClient(data_dir)
    fields: dict[str, Any] = {"to": member.upper(), "type": type_, "subject": subject,
                              "text": body or "", "urgency": urgency, "lang": lang}
    if reply_by:
        fields["reply_by"] = parse_time(reply_by, int(time.time() * 1000))
    if domain:
        fields["to_domain"] = domain
    if entry:
        fields["to_entry"] = entry
    if from_entry:
        fields["from_entry"] = from_entry
    if attachments:
        fields["attachments"] = [_sha256(p) for p in attachments]
    if ref:
        sender, rid = resolve(client, ref)
        fields["ref"] = {"sender": sender, "id": rid}
    answer = client.post("/v1/requests", fields)
    if as_json:
        emit_json(answer)
        return
    way = ("delivered straight to its node" if answer["push"] == "accepted" else
           "its node did not answer: gossip carries it (store and forward)")
    click.echo(f"request {_short(answer)} to {answer['recipient']} sealed and published; {way}")
    click.echo(f"follow it with: pocnode request show {answer['sender']}/{answer['id']}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()


def _listing(rows: list[dict[str, Any]], who: str, title: str) -> None:
    table(title, ["request", who, "type", "urgency", "subject", "state", "sent", "reply by",
                  "via"],
          [(_short(r), r[who], r["type"], r["urgency"], r["subject"][:60],
            r["state"] + (" (rate limited)" if r["rate_limited"] else ""), when(r["sent_at"]),
            when(r["reply_by"]), r["via"] or "") for r in rows])


@request.command("inbox")
@DATA_DIR
@JSON
def request_inbox(data_dir: Path, as_json: bool) -> None:
    """Requests to this member, oldest first, with their state.

    Example: pocnode request inbox
    """
    listing = OperatorClient(data_dir).get("/v1/requests")
    if as_json:
        emit_json(listing["inbox"])
        return
    _listing(listing["inbox"], "sender", f"inbox: {listing['unacknowledged']} "
                                         f"unacknowledged")
    if listing["refused"]:
        click.echo(f"{len(listing['refused'])} request messages refused (see --json of "
                   f"`pocnode request refused`)", err=True)


@request.command("outbox")
@DATA_DIR
@JSON
def request_outbox(data_dir: Path, as_json: bool) -> None:
    """Requests this member sent, with their state and how they were delivered.

    Example: pocnode request outbox --json
    """
    listing = OperatorClient(data_dir).get("/v1/requests")
    if as_json:
        emit_json(listing["outbox"])
        return
    _listing(listing["outbox"], "recipient", "outbox")


@request.command("refused")
@DATA_DIR
@JSON
def request_refused(data_dir: Path, as_json: bool) -> None:
    """Request messages this node opened and refused, with the spec's code (§12.4).

    Example: pocnode request refused
    """
    rows = OperatorClient(data_dir).get("/v1/requests")["refused"]
    if as_json:
        emit_json(rows)
        return
    table(None, ["code", "author", "event", "signed", "why"],
          [(r["code"], r["author"], f"#{r['seq']}", when(r["at"]), r["message"]) for r in rows])


@request.command("show")
@click.argument("ref")
@DATA_DIR
@JSON
def request_show(ref: str, data_dir: Path, as_json: bool) -> None:
    """One request: its content and its whole timeline, with times.

    Example: pocnode request show ATL/3f2a9c41
    """
    client = OperatorClient(data_dir)
    sender, rid = resolve(client, ref)
    r = client.get(f"/v1/requests/{sender}/{rid}")
    if as_json:
        emit_json(r)
        return
    kv(f"request {_short(r)} ({'to' if r['direction'] == 'out' else 'from'} "
       f"{r['recipient'] if r['direction'] == 'out' else r['sender']})", [
        ("id", f"{r['sender']}/{r['id']}"), ("type", r["type"]), ("urgency", r["urgency"]),
        ("state", r["state"]), ("reply by", when(r["reply_by"]) or "-"),
        ("subject", r["subject"]), ("text", r["text"]), ("language", r["lang"]),
        ("answer", r["answer"]), ("reason declined", r["reason"]),
        ("delivered", {"direct": "straight to the recipient's node",
                       "gossip": "through gossip (store and forward)"}.get(r["via"] or "", "")),
        ("attachments", "\n".join(r["attachments"])),
        ("thread", f"{r['ref']['sender']}/{r['ref']['id']}" if r["ref"] else None),
        ("publication", f"sender: {r['publish']['sender'] or '-'}, recipient: "
                        f"{r['publish']['recipient'] or '-'}"
                        + (" (published)" if r["publish"]["published"] else ""))])
    table("timeline", ["state", "by", "signed at", "arrived here"],
          [(t["state"] + (f" ({t['scope']})" if t.get("scope") else ""), t["by"],
            when(t["at"]), when(t["seen_at"])) for t in r["timeline"]])


def _status(data_dir: Path, ref: str, state: str, **extra: Any) -> None:
    client = OperatorClient(data_dir)
    sender, rid = resolve(client, ref)
    try:
        r = client.post(f"/v1/requests/{sender}/{rid}", {"state": state, **extra})
    except CliError as exc:
        if exc.remote_code != "no_change":
            raise
        click.echo(f"nothing to do: {exc.remote_message} (no event written)")
        return
    click.echo(f"{state} {_short(r)}: signed, sealed to the counterpart and published; the "
               f"request is now {r['state']}")


@request.command("ack")
@click.argument("ref")
@DATA_DIR
def request_ack(ref: str, data_dir: Path) -> None:
    """Acknowledge a request: a person has read it (the sender sees when).

    Example: pocnode request ack ATL/3f2a9c41
    """
    _status(data_dir, ref, "acknowledged")


@request.command("answer")
@click.argument("ref")
@click.option("--text", help="The answer (at most 8000 characters).")
@click.option("--text-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the answer from a UTF-8 file.")
@DATA_DIR
def request_answer(ref: str, text: str | None, text_file: Path | None, data_dir: Path) -> None:
    """Answer a request; the answer is sealed to its sender.

    Example: pocnode request answer ATL/3f2a9c41 --text "Yes, since 02:00 UTC."
    """
    if (text is None) == (text_file is None):
        raise click.UsageError("give the answer with exactly one of --text or --text-file")
    if text_file is not None:
        try:
            text = read_file(text_file, MAX_BODY_FILE, "an answer").decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{text_file}: not UTF-8 text") from None
    _status(data_dir, ref, "answered", text=text)


@request.command("decline")
@click.argument("ref")
@click.option("--reason", help="Why, optionally (sealed to the sender).")
@DATA_DIR
def request_decline(ref: str, reason: str | None, data_dir: Path) -> None:
    """Decline a request: answering is the recipient's choice, and so is saying why.

    Example: pocnode request decline ATL/3f2a9c41 --reason "not our competence"
    """
    _status(data_dir, ref, "declined", **({"text": reason} if reason is not None else {}))


@request.command("publish")
@click.argument("ref")
@click.option("--content", is_flag=True,
              help="Publish the content too (only if the other side chooses so as well).")
@DATA_DIR
def request_publish(ref: str, content: bool, data_dir: Path) -> None:
    """Consent to publishing a record of this exchange to members: it is published only
    once both sides consent (metadata, and the content only if both chose --content).

    Example: pocnode request publish ATL/3f2a9c41
    """
    _status(data_dir, ref, "publish", scope="content" if content else "metadata")


# -- ping tests ---------------------------------------------------------------------------


@click.group()
def ping() -> None:
    """Ping tests, as the UN directory runs them: is each PoC reachable?"""


@ping.command("run")
@click.argument("members", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every other member (the default).")
@click.option("--domain", type=click.Choice(DOMAINS), help="Whose PoC is pinged.")
@click.option("--wait", type=click.FloatRange(0, 3600), default=DEFAULT_PING_WAIT_S,
              show_default=True, help="Seconds to wait for receipts before reporting.")
@DATA_DIR
@JSON
def ping_run(members: tuple[str, ...], all_: bool, domain: str | None, wait: float,
             data_dir: Path, as_json: bool) -> None:
    """Send a ping request to each member (or those named), wait for receipts, report.

    Example: pocnode ping run --all --domain technical
    """
    if all_ and members:
        raise click.UsageError("give --all or members, not both")
    client = OperatorClient(data_dir)
    body: dict[str, Any] = {}
    if members:
        body["members"] = [m.upper() for m in members]
    if domain:
        body["domain"] = domain
    campaign = client.post("/v1/ping", body)
    name = campaign["campaign"]
    targets = {s["member"] for s in campaign["sent"]}
    deadline = time.monotonic() + wait
    rows: list[dict[str, Any]] = []
    while True:
        report = client.get("/v1/ping")
        rows = [r for r in report["members"] if r["campaign"] == name]
        if all(r["delivered"] for r in rows) and len(rows) == len(targets):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    if as_json:
        emit_json({"campaign": name, "members": rows, "skipped": campaign["skipped"]})
        return
    _report_table(rows, f"ping campaign {name}: {sum(r['delivered'] for r in rows)} of "
                        f"{len(rows)} delivered")
    for s in campaign["skipped"]:
        click.echo(f"not pinged: {s['member']}: {s['message']}", err=True)


def _report_table(rows: list[dict[str, Any]], title: str) -> None:
    table(title, ["member", "delivered", "receipt", "ack", "via", "last success", "campaigns"],
          [(r["member"], "yes" if r["delivered"] else "UNREACHABLE", _secs(r["receipt_s"]),
            _secs(r["ack_s"]), r["via"] or "", when(r["last_success"]) or "never",
            f"{sum(h['delivered'] for h in r['history'])}/{len(r['history'])} delivered")
           for r in rows])


CSV_COLUMNS = ("member", "delivered", "receipt_s", "ack_s", "via", "campaign", "sent_at",
               "last_success", "campaigns_sent", "campaigns_delivered")


@ping.command("report")
@DATA_DIR
@JSON
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row, one row a member.")
def ping_report(data_dir: Path, as_json: bool, as_csv: bool) -> None:
    """Per member: delivered or not in the last campaign, time to receipt and to
    acknowledgement, last success, and the history of campaigns.

    Example: pocnode ping report --csv > ping.csv
    """
    report = OperatorClient(data_dir).get("/v1/ping")
    rows = report["members"]
    if as_json:
        emit_json(rows)
        return
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r["member"], "yes" if r["delivered"] else "no",
                             "" if r["receipt_s"] is None else r["receipt_s"],
                             "" if r["ack_s"] is None else r["ack_s"], r["via"] or "",
                             r["campaign"], when(r["sent_at"]), when(r["last_success"]),
                             len(r["history"]), sum(h["delivered"] for h in r["history"])])
        sys.stdout.write(out.getvalue())
        return
    _report_table(rows, "ping report (latest campaign per member)")
    if report["campaigns"]:
        table("campaigns", ["campaign", "started", "sent", "delivered", "acknowledged"],
              [(c["campaign"], when(c["started_at"]), c["sent"], c["delivered"],
                c["acknowledged"]) for c in report["campaigns"]])
