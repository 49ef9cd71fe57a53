"""Issue 11 acceptance with real nodes: communication requests delivered directly and
through gossip, their timeline, expiry, the three alerts, and ping campaigns.

Every node is a `pocnode run` process; requests are sent, acknowledged and answered with
the `pocnode` command line as a duty officer would; the e-mail alert is read back from a
real SMTP server (aiosmtpd) and the webhook from a real HTTP server, both on loopback.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocnode.node.localfed import create_federation, free_ports
from tests.integration import netns
from tests.integration.fault_harness import NetnsNode, hard_deadline
from tests.integration.harness import Federation, wait_until

pytestmark = pytest.mark.slow

SECRET_TEXT = "zq-request-body-7f3a"
SECRET_SUBJECT = "zq-subject-91c2"
SECRET_ANSWER = "zq-answer-5d0e"
# A request crosses loopback in well under a second; these leave room for a loaded box.
DELIVERY_TIMEOUT_S = 30
START_TIMEOUT_S = 90


def cli(node: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-P", "-m", "pocnode", *args, "--data-dir",
                          str(node.dir)], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"pocnode {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out


def cli_json(node: Any, *args: str, timeout: float = 60) -> Any:
    return json.loads(cli(node, *args, "--json", timeout=timeout).stdout)


# -- the alert receivers: a webhook and an SMTP server on loopback ----------------------------


class Webhook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[tuple[Webhook, Any, int]]:
    from aiosmtpd.controller import Controller

    class Mailbox:
        def __init__(self) -> None:
            self.messages: list[bytes] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            self.messages.append(envelope.content)
            return "250 OK"

    mailbox = Mailbox()
    (port,) = free_ports(1)
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    hook = Webhook()
    try:
        yield hook, mailbox, port
    finally:
        hook.close()
        smtp.stop()


def test_direct_delivery_timeline_expiry_and_every_alert(federation_factory, receivers,
                                                         tmp_path: Path) -> None:
    hook, mailbox, smtp_port = receivers
    fed: Federation = federation_factory(2, interval_ms=300)
    atl, bor = fed["ATL"], fed["BOR"]
    alert_file = tmp_path / "alerts.jsonl"
    script = ("import sys; data = sys.stdin.buffer.read(); "
              f"open({str(alert_file)!r}, 'ab').write(data)")
    bor.configure("command", json.dumps([sys.executable, "-c", script]))
    bor.configure("webhook", json.dumps(hook.url))
    bor.configure("smtp_host", '"127.0.0.1"')
    bor.configure("smtp_port", str(smtp_port))
    bor.configure("smtp_from", '"pocnode@bor.example"')
    bor.configure("smtp_to", '["duty-officer@bor.example"]')
    # ATL is alerted of answers through its command too.
    atl_alerts = tmp_path / "atl-alerts.jsonl"
    atl.configure("command", json.dumps([sys.executable, "-c", script.replace(
        str(alert_file), str(atl_alerts))]))
    fed.start()
    wait_until(lambda: all(n.get("/v1/status")["authors"] == 2 for n in (atl, bor)),
               timeout=30, what="each node holds the other's node.keys")

    # 1. ATL's duty officer sends; BOR's node is reachable: delivered straight to it.
    out = cli(atl, "request", "send", "BOR", "--type", "incident-notification", "--subject",
              SECRET_SUBJECT, "--body", SECRET_TEXT, "--urgency", "urgent", "--reply-by", "2h",
              "--domain", "technical")
    assert "delivered straight to its node" in out.stdout, out.stdout
    (sent,) = cli_json(atl, "request", "outbox")
    ref = f"ATL/{sent['id']}"
    shown = wait_until(lambda: (r := cli_json(atl, "request", "show", ref))["state"]
                       == "delivered" and r, timeout=DELIVERY_TIMEOUT_S,
                       what="BOR's receipt at ATL")
    assert shown["via"] == "direct" and shown["push"] == "accepted"
    assert shown["receipt_s"] is not None and shown["receipt_s"] < DELIVERY_TIMEOUT_S

    # 2. The three alerts fired at BOR, with no sealed content in them.
    wait_until(lambda: alert_file.exists() and hook.bodies and mailbox.messages,
               timeout=DELIVERY_TIMEOUT_S, what="command, webhook and e-mail alerts")
    command_summary = json.loads(alert_file.read_text().splitlines()[0])
    for summary in (command_summary, hook.bodies[0]):
        assert summary["event"] == "request" and summary["sender"] == "ATL"
        assert summary["type"] == "incident-notification" and summary["urgency"] == "urgent"
        assert summary["id"] == sent["id"] and summary["to_domain"] == "technical"
        assert SECRET_TEXT not in json.dumps(summary) and SECRET_SUBJECT not in json.dumps(
            summary)
    mail = mailbox.messages[0].decode()
    assert "Subject: [pocnode BOR] urgent incident-notification request from ATL" in mail
    assert "duty-officer@bor.example" in mail and sent["id"] in mail
    assert SECRET_TEXT not in mail and SECRET_SUBJECT not in mail
    status = cli(bor, "status").stdout
    assert "1 unacknowledged" in status, status

    # 3. BOR reads, acknowledges, answers; ATL's timeline shows each step with its time.
    (incoming,) = cli_json(bor, "request", "inbox")
    assert incoming["subject"] == SECRET_SUBJECT and incoming["state"] == "delivered"
    assert cli_json(bor, "request", "show", sent["id"][:8])["text"] == SECRET_TEXT
    cli(bor, "request", "ack", ref)
    cli(bor, "request", "answer", ref, "--text", SECRET_ANSWER)
    shown = wait_until(lambda: (r := cli_json(atl, "request", "show", ref))["state"]
                       == "answered" and r, timeout=DELIVERY_TIMEOUT_S,
                       what="BOR's answer at ATL")
    steps = shown["timeline"]
    assert [s["state"] for s in steps] == ["sent", "delivered", "acknowledged", "answered"]
    assert [s["by"] for s in steps] == ["ATL", "BOR", "BOR", "BOR"]
    times = [s["at"] for s in steps]
    assert times == sorted(times) and all(s["seen_at"] >= times[0] for s in steps)
    assert shown["answer"] == SECRET_ANSWER and shown["ack_s"] is not None
    table = cli(atl, "request", "show", ref).stdout
    assert "acknowledged" in table and "answered" in table
    wait_until(lambda: atl_alerts.exists() and "answered" in atl_alerts.read_text(),
               timeout=DELIVERY_TIMEOUT_S, what="ATL alerted of the answer")

    # 4. A second request is declined with a reason.
    cli(atl, "request", "send", "BOR", "--type", "information-request", "--subject", "Q2",
        "--body", "second")
    second = next(r for r in cli_json(atl, "request", "outbox") if r["subject"] == "Q2")
    ref2 = f"ATL/{second['id']}"
    wait_until(lambda: cli_json(bor, "request", "show", ref2)["state"] == "delivered",
               timeout=DELIVERY_TIMEOUT_S, what="the second request at BOR")
    cli(bor, "request", "decline", ref2, "--reason", "not our competence")
    shown = wait_until(lambda: (r := cli_json(atl, "request", "show", ref2))["state"]
                       == "declined" and r, timeout=DELIVERY_TIMEOUT_S, what="the decline")
    assert shown["reason"] == "not our competence"
    assert [s["state"] for s in shown["timeline"]] == ["sent", "delivered", "declined"]
    # Acknowledging after a decline is refused with the spec's code.
    late = subprocess.run([sys.executable, "-P", "-m", "pocnode", "request", "ack", ref2,
                           "--data-dir", str(bor.dir)], capture_output=True, text=True,
                          timeout=60)
    assert late.returncode == 1 and "out_of_order" in late.stderr, late.stderr

    # 5. A request whose reply-by passes unanswered shows expired, on both sides.
    status, third = atl.api("POST", "/v1/requests", {
        "to": "BOR", "type": "follow-up", "subject": "Q3", "text": "",
        "reply_by": int(time.time() * 1000) + 1500,
        "ref": {"sender": "ATL", "id": sent["id"]}})
    assert status == 201, third
    ref3 = f"ATL/{third['id']}"
    for node in (atl, bor):
        wait_until(lambda n=node: cli_json(n, "request", "show", ref3)["state"] == "expired",
                   timeout=DELIVERY_TIMEOUT_S, what=f"expired at {node.member}")
    assert cli_json(atl, "request", "show", ref3)["ref"] == {"sender": "ATL",
                                                            "id": sent["id"]}
    for node in (atl, bor):
        assert "Traceback" not in node.log(), node.log()[-3000:]


def test_a_ping_campaign_with_two_nodes_down_then_back(federation_factory) -> None:
    fed: Federation = federation_factory(11, interval_ms=500)
    with hard_deadline(240, "ping campaign test"):
        for node in fed.nodes.values():
            node.start()
        for node in fed.nodes.values():  # eleven key files to decrypt on a shared machine
            node.wait_ready(timeout=START_TIMEOUT_S)
        atl = fed["ATL"]
        wait_until(lambda: atl.get("/v1/status")["authors"] == 11, timeout=START_TIMEOUT_S,
                   what="ATL holds every member's node.keys")
        down = [fed["KRA"], fed["LAT"]]
        for node in down:
            assert node.stop() == 0
        first = cli_json(atl, "ping", "run", "--all", "--domain", "technical", "--wait", "12")
        rows = {r["member"]: r for r in first["members"]}
        assert len(rows) == 10 and first["skipped"] == []
        delivered = sorted(m for m, r in rows.items() if r["delivered"])
        assert delivered == sorted(set(fed.nodes) - {"ATL", "KRA", "LAT"})
        for member in delivered:
            assert 0 <= rows[member]["receipt_s"] < 12 and rows[member]["via"] == "direct"
            assert rows[member]["ack_s"] is None
        for member in ("KRA", "LAT"):
            assert rows[member]["delivered"] is False and rows[member]["receipt_s"] is None
        # The table says who is unreachable.
        assert cli(atl, "ping", "report").stdout.count("UNREACHABLE") == 2

        for node in down:
            node.start()
        for node in down:
            node.wait_ready(timeout=START_TIMEOUT_S)
        # A person at GEN acknowledges the ping: the acknowledgement measures the people.
        gen_ping = next(r for r in cli_json(fed["GEN"], "request", "inbox")
                        if r["type"] == "ping")
        cli(fed["GEN"], "request", "ack", f"ATL/{gen_ping['id']}")
        second = cli_json(atl, "ping", "run", "--all", "--wait", "30")
        rows = {r["member"]: r for r in second["members"]}
        assert len(rows) == 10 and all(r["delivered"] for r in rows.values()), rows
        assert second["campaign"] != first["campaign"]

        report = cli_json(atl, "ping", "report")
        assert {r["member"] for r in report} == set(fed.nodes) - {"ATL"}
        for r in report:
            assert r["delivered"] is True and r["campaign"] == second["campaign"]
            assert len(r["history"]) == 2 and r["last_success"] is not None
        gen = next(r for r in report if r["member"] == "GEN")
        assert gen["history"][0]["ack_s"] is not None
        table = list(csv.reader(io.StringIO(cli(atl, "ping", "report", "--csv").stdout)))
        assert table[0][:4] == ["member", "delivered", "receipt_s", "ack_s"]
        assert len(table) == 11 and {row[0] for row in table[1:]} == set(fed.nodes) - {"ATL"}
        assert all(row[1] == "yes" and float(row[2]) >= 0 for row in table[1:])


# -- through gossip: A and B cut off from each other, both reaching C -------------------------

TRAFFIC_LAUNCHER = Path(__file__).resolve().with_name("traffic_launcher.py")
PEER_PORT, OPERATOR_PORT = 7443, 7444


@pytest.fixture
def lab() -> Iterator[dict[str, Any]]:
    reason = netns.cannot_run()
    if reason:
        pytest.skip(reason)
    netns.remove_leftovers()
    state: dict[str, Any] = {"lab": None, "nodes": []}
    try:
        yield state
    finally:
        for node in state["nodes"]:
            node.stop()
        if state["lab"] is not None:
            state["lab"].teardown()


def test_delivery_through_gossip_leaves_nothing_readable_at_the_relay(
        lab: dict[str, Any], tmp_path: Path) -> None:
    """Network namespaces, one host per node: A and B each get a kernel route that makes
    the other unreachable (`ip route add unreachable`), so neither can open a connection to
    the other, while both reach C. C runs with the traffic hook: everything it receives in
    plaintext (after TLS) is written to a file, searched at the end with its data dir."""
    with hard_deadline(150, "gossip delivery test"):
        n = 3
        the_lab = lab["lab"] = netns.Lab(n)
        the_lab.create()
        members = create_federation(
            tmp_path / "fed", n, interval_ms=300, listen_host="0.0.0.0",
            endpoint_template=f"https://{netns.SUBNET}.1{{index:02d}}:{PEER_PORT}",
            peer_port=PEER_PORT, operator_port=OPERATOR_PORT)
        nodes = [NetnsNode(the_lab, i + 1, m) for i, m in enumerate(members)]
        lab["nodes"] = nodes
        a, b, c = nodes
        for x, y in ((a, b), (b, a)):
            netns._ip("-n", netns.host_name(x.index), "route", "add", "unreachable",
                      f"{netns.address(y.index)}/32")
        dump = tmp_path / "c-traffic.dump"
        a.start(), b.start()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(c.dir / "node.log", "ab") as log:
            c.proc = the_lab.popen(c.index, [sys.executable, "-P", str(TRAFFIC_LAUNCHER),
                                             str(dump), "run", "--data-dir", str(c.dir)],
                                   stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
        for node in nodes:
            wait_until(node.ready, timeout=START_TIMEOUT_S, every=0.2,
                       what=f"{node.member} answers")
        wait_until(lambda: all(x.get("/v1/status")["authors"] == n for x in nodes),
                   timeout=START_TIMEOUT_S, what="every node holds every node.keys")
        assert not the_lab.run_in(a.index, lambda: _reaches(netns.address(b.index)))
        assert the_lab.run_in(a.index, lambda: _reaches(netns.address(c.index)))

        status, sent = a.api("POST", "/v1/requests", {
            "to": b.member, "type": "assistance-request", "subject": SECRET_SUBJECT,
            "text": SECRET_TEXT, "urgency": "priority"})
        assert status == 201, sent
        assert sent["push"] == "failed"  # B's node cannot be reached from A's
        url = f"/v1/requests/{a.member}/{sent['id']}"
        wait_until(lambda: b.api("GET", url)[0] == 200, timeout=DELIVERY_TIMEOUT_S,
                   what="the request reaches B through C")
        assert b.get(url)["text"] == SECRET_TEXT
        got = wait_until(lambda: (r := a.get(url))["state"] == "delivered" and r,
                         timeout=DELIVERY_TIMEOUT_S, what="B's receipt reaches A through C")
        assert got["via"] == "gossip"
        assert b.api("POST", url, {"state": "acknowledged"})[0] == 201
        assert b.api("POST", url, {"state": "answered", "text": SECRET_ANSWER})[0] == 201
        got = wait_until(lambda: (r := a.get(url))["state"] == "answered" and r,
                         timeout=DELIVERY_TIMEOUT_S, what="B's answer reaches A through C")
        assert [s["state"] for s in got["timeline"]] == ["sent", "delivered", "acknowledged",
                                                         "answered"]
        # C carried the events (it holds A's and B's chains) but opened nothing.
        assert c.get("/v1/requests") == {"inbox": [], "outbox": [], "refused": [],
                                         "unacknowledged": 0}
        heads = {x.member: x.get(f"/v1/events/{x.member}?limit=1")["head"] for x in (a, b)}
        for member, head in heads.items():
            assert c.get(f"/v1/events/{member}?limit=1")["head"] == head
    for node in nodes:
        node.stop()
    secrets = (SECRET_TEXT.encode(), SECRET_SUBJECT.encode(), SECRET_ANSWER.encode())
    for secret in secrets:
        assert dump.exists() and secret not in dump.read_bytes()
        for root, _, names in os.walk(c.dir):
            for name in names:
                assert secret not in (Path(root) / name).read_bytes(), (name, secret)
    # ...while B's own store holds the request only sealed too: the plaintext is in memory.
    for root, _, names in os.walk(b.dir):
        for name in names:
            if name != "node.log":
                assert SECRET_TEXT.encode() not in (Path(root) / name).read_bytes(), name


def _reaches(host: str) -> bool:
    import socket

    try:
        with socket.create_connection((host, PEER_PORT), timeout=2):
            return True
    except OSError:
        return False
