"""Waking people up (PROTOCOL.md §12.5): the operator's alerts, carried out for the engine.

The engine decides *when* to alert (a new request, an answer to ours, within each sender's
hourly budget) and yields an :class:`~pocnode.core.requests.Alert`; this adapter decides
nothing about the protocol. It runs each configured channel at once, concurrently:

- a **command**: argv as configured, no shell, the summary as JSON on stdin;
- a **webhook**: an HTTP POST of the JSON summary;
- **e-mail** through an SMTP relay (stdlib smtplib, in a thread).

Each is bounded by ``[alerts] timeout_s``; a failure is logged with its reason and counted,
never raised into the node. The summary holds who, what type, how urgent and when; the
sealed subject and text are added only when the operator set ``include_content = true``
(an alert often leaves the secure host: a pager service, a mailbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import smtplib
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp

from pocnode.core.requests import Alert
from pocnode.node.config import Config

log = logging.getLogger("pocnode.alerts")
# What a command may print before we stop reading it: its output is only for the log.
MAX_COMMAND_OUTPUT = 4096


class Alerter:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    @property
    def configured(self) -> list[str]:
        c = self.config
        return [name for name, on in (("command", bool(c.alerts_command)),
                                      ("webhook", bool(c.alerts_webhook)),
                                      ("email", bool(c.alerts_smtp_host and c.alerts_smtp_to)))
                if on]

    def payload(self, alert: Alert) -> dict[str, Any]:
        out = dict(alert.summary)
        if self.config.alerts_include_content:
            out["content"] = alert.content
        return out

    async def fire(self, alert: Alert) -> None:
        """Every configured channel, concurrently; returns when all are done or timed out."""
        channels = self.configured
        if not channels:
            return
        payload = self.payload(alert)
        runs = {"command": self._command, "webhook": self._webhook, "email": self._email}
        results = await asyncio.gather(*(self._bounded(name, runs[name](payload))
                                         for name in channels), return_exceptions=True)
        for name, result in zip(channels, results, strict=True):
            outcome = "ok" if result is None else "failed"
            self.counters[("pocnode_alerts_total", (("channel", name), ("outcome", outcome)))] += 1
            if result is not None:
                log.warning("alert failed", extra={"fields": {
                    "channel": name, "reason": str(result)[:300],
                    "request": payload.get("id", "")}})

    async def _bounded(self, name: str, run: Any) -> None:
        try:
            await asyncio.wait_for(run, self.config.alerts_timeout_s)
        except TimeoutError:
            raise AlertFailed(f"{name} took longer than {self.config.alerts_timeout_s} s"
                              ) from None

    async def _command(self, payload: dict[str, Any]) -> None:
        argv = list(self.config.alerts_command)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise AlertFailed(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        try:
            _, err = await proc.communicate(json.dumps(payload).encode() + b"\n")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            raise AlertFailed(f"{argv[0]!r} exited with {proc.returncode}: "
                              f"{err[:MAX_COMMAND_OUTPUT].decode(errors='replace').strip()}")

    async def _webhook(self, payload: dict[str, Any]) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.alerts_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                self.config.alerts_webhook, json=payload) as resp:
            if resp.status >= 300:
                raise AlertFailed(f"webhook answered HTTP {resp.status}")

    async def _email(self, payload: dict[str, Any]) -> None:
        await asyncio.to_thread(self._send_mail, payload)

    def _send_mail(self, payload: dict[str, Any]) -> None:
        c = self.config
        msg = EmailMessage()
        what = "request" if payload.get("event") == "request" else str(payload.get("event"))
        msg["Subject"] = (f"[pocnode {c.member}] {payload.get('urgency', '')} "
                          f"{payload.get('type', '')} {what} from {payload.get('sender', '')}")
        msg["From"] = c.alerts_smtp_from or f"pocnode@{c.member.lower()}.invalid"
        msg["To"] = ", ".join(c.alerts_smtp_to)
        lines = [f"{k}: {v}" for k, v in payload.items() if k != "content"]
        if "content" in payload:
            lines += ["", "Subject of the request:", str(payload["content"].get("subject", "")),
                      "", str(payload["content"].get("text", ""))]
        lines += ["", "Read and acknowledge with: pocnode request show "
                      f"{payload.get('sender', '')}/{payload.get('id', '')}"]
        msg.set_content("\n".join(lines) + "\n")
        with smtplib.SMTP(c.alerts_smtp_host, c.alerts_smtp_port,
                          timeout=c.alerts_timeout_s) as smtp:
            if c.alerts_smtp_starttls:
                smtp.starttls()
            if c.alerts_smtp_user:
                smtp.login(c.alerts_smtp_user, self._password())
            smtp.send_message(msg)

    def _password(self) -> str:
        path = Path(self.config.alerts_smtp_password_file)
        if not path.is_absolute():
            path = self.config.data_dir / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AlertFailed(f"cannot read the SMTP password file {path}: "
                              f"{exc.strerror}") from None


class AlertFailed(Exception):
    """One alert channel failed; logged by :meth:`Alerter.fire`, never raised further."""
