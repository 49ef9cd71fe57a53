"""Structured logs: one line per event, as text (key=value) or JSON.

Callers log a short message of their own and put the facts in
``extra={"fields": {...}}``. Every field value may come from outside (a peer's
error text, a member id, a path), so each is escaped: in text, any value that is not
a plain token is written as a JSON string with every control and non-ASCII character
escaped, and in JSON the whole line is ASCII; no value can end a line or look like
another field. Values are cut at :data:`MAX_VALUE_CHARS`. Tracebacks are kept, as
one escaped field, so a bug is diagnosable from the log alone.

Refusals (of events, requests, connections) are what a hostile peer can cause at
will, so they are not logged one by one: :class:`RefusalLog` logs the first few of
each code per interval in full, then one summary line per interval with the counts
per code. A peer within its rate limit thus costs a few lines per interval, not one
per refusal. Secrets never reach a log line: keys, tokens, passphrases and disclosure
values are not passed to the logger anywhere in pocnode.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections import Counter
from typing import Any

MAX_VALUE_CHARS = 300
MAX_TRACEBACK_CHARS = 8000
# Refusals logged in full per code and interval; the rest are counted.
REFUSALS_IN_FULL = 3
REFUSAL_INTERVAL_S = 10.0
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@,+\-#]{1,300}")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        fields = dict(getattr(record, "fields", {}) or {})
        if record.exc_info and record.exc_info[0] is not None:
            fields["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            fields["traceback"] = "".join(
                traceback.format_exception(*record.exc_info))[-MAX_TRACEBACK_CHARS:]
        if self.as_json:
            line: dict[str, object] = {"ts": ts, "level": record.levelname.lower(),
                                       "logger": record.name, "msg": record.getMessage()}
            for k, v in fields.items():
                line[str(k)] = _cut(v)
            return json.dumps(line, default=str, ensure_ascii=True)
        extra = " ".join(f"{_key(k)}={_quote(v)}" for k, v in fields.items())
        message = _quote(record.getMessage(), bare=True)
        return f"{ts} {record.levelname:<7} {record.name} {message}" + (
            f" {extra}" if extra else "")


def _cut(value: object) -> object:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)
    return text if len(text) <= MAX_TRACEBACK_CHARS else text[:MAX_TRACEBACK_CHARS] + "…"


def _key(key: object) -> str:
    text = str(key)
    return text if _PLAIN.fullmatch(text) else json.dumps(text, ensure_ascii=True)


def _quote(value: object, *, bare: bool = False) -> str:
    """A plain token as it is; anything else as an ASCII JSON string (newlines, quotes,
    control and non-ASCII characters escaped), so no value can forge a line or a field."""
    text = str(value)
    limit = MAX_TRACEBACK_CHARS if "\n" in text and "Traceback" in text else MAX_VALUE_CHARS
    if len(text) > limit:
        text = text[:limit] + "…"
    if _PLAIN.fullmatch(text):
        return text
    if bare and text.isascii() and text.isprintable() and "=" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=True)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root = logging.getLogger("pocnode")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # Libraries' own warnings (asyncio's "exception never retrieved", aiohttp's client)
    # go through the same escaped format, never Python's raw last-resort handler.
    others = logging.getLogger()
    others.handlers[:] = [handler]
    others.setLevel(logging.WARNING)


class RefusalLog:
    """Rate-limited logging of refusals: a few in full per code and interval, then counts.

    ``clock`` is monotonic seconds (passed in, so a test can drive it)."""

    def __init__(self, logger: logging.Logger, *, clock: Any = time.monotonic,
                 in_full: int = REFUSALS_IN_FULL, interval_s: float = REFUSAL_INTERVAL_S) -> None:
        self.logger = logger
        self.clock = clock
        self.in_full = in_full
        self.interval_s = interval_s
        self._started = clock()
        self._full: Counter[str] = Counter()
        self._counted: Counter[str] = Counter()

    def refused(self, code: str, message: str, **fields: Any) -> None:
        self.flush()
        if self._full[code] < self.in_full:
            self._full[code] += 1
            self.logger.warning(message, extra={"fields": {"code": code, **fields}})
        else:
            self._counted[code] += 1

    def flush(self, *, force: bool = False) -> None:
        """At the end of an interval: one line with what was counted and not logged."""
        now = self.clock()
        if not force and now - self._started < self.interval_s:
            return
        if self._counted:
            self.logger.warning(
                "refusals not logged one by one", extra={"fields": {
                    "seconds": round(now - self._started, 1),
                    **{f"count_{code}": n for code, n in sorted(self._counted.items())[:32]},
                    "total": sum(self._counted.values())}})
        self._started = now
        self._full.clear()
        self._counted.clear()
