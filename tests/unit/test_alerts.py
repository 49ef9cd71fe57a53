"""The alert adapter (node/alerts.py): every channel bounded in time, failures counted and
logged, never raised into the node; the summary carries sealed content only when opted in."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from pocnode.core.requests import Alert
from pocnode.node.alerts import Alerter
from pocnode.node.config import Config

ALERT = Alert(summary={"event": "request", "sender": "ATL", "id": "ab" * 16, "type": "ping",
                       "urgency": "urgent"},
              content={"subject": "sealed subject", "text": "sealed text"})


def _config(tmp_path: Path, **kw: object) -> Config:
    return Config(member="BOR", data_dir=tmp_path, **kw)  # type: ignore[arg-type]


async def test_a_hanging_command_and_a_dead_webhook_do_not_block(tmp_path: Path) -> None:
    alerter = Alerter(_config(tmp_path, alerts_command=(sys.executable, "-c",
                                                        "import time; time.sleep(30)"),
                              alerts_webhook="http://127.0.0.1:9/hook", alerts_timeout_s=1.0))
    started = time.monotonic()
    await alerter.fire(ALERT)
    assert time.monotonic() - started < 10
    assert alerter.counters[("pocnode_alerts_total",
                             (("channel", "command"), ("outcome", "failed")))] == 1
    assert alerter.counters[("pocnode_alerts_total",
                             (("channel", "webhook"), ("outcome", "failed")))] == 1


async def test_the_command_gets_the_summary_without_content_unless_opted_in(
        tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    argv = (sys.executable, "-c",
            f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())")
    await Alerter(_config(tmp_path, alerts_command=argv)).fire(ALERT)
    got = json.loads(out.read_text())
    assert got["sender"] == "ATL" and "content" not in got
    assert "sealed" not in out.read_text()
    await Alerter(_config(tmp_path, alerts_command=argv, alerts_include_content=True)).fire(
        ALERT)
    assert json.loads(out.read_text())["content"]["subject"] == "sealed subject"


async def test_a_failing_command_is_counted(tmp_path: Path) -> None:
    alerter = Alerter(_config(tmp_path, alerts_command=(sys.executable, "-c",
                                                        "import sys; sys.exit(3)")))
    await alerter.fire(ALERT)
    assert alerter.counters[("pocnode_alerts_total",
                             (("channel", "command"), ("outcome", "failed")))] == 1
    missing = Alerter(_config(tmp_path, alerts_command=("/nonexistent/pager",)))
    await asyncio.wait_for(missing.fire(ALERT), 10)
    assert missing.counters[("pocnode_alerts_total",
                             (("channel", "command"), ("outcome", "failed")))] == 1
