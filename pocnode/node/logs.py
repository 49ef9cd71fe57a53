"""Structured logs: one line per event, as text (key=value) or JSON.

Callers log a short message and put the facts in ``extra={"fields": {...}}``.
Secrets never reach a log line: keys, tokens, passphrases and disclosure values
are not passed to the logger anywhere in pocnode.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        fields = getattr(record, "fields", {}) or {}
        if record.exc_info and record.exc_info[0] is not None:
            fields = {**fields, "error": f"{record.exc_info[0].__name__}: {record.exc_info[1]}"}
        if self.as_json:
            return json.dumps({"ts": ts, "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage(), **fields},
                              default=str, ensure_ascii=False)
        extra = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        return f"{ts} {record.levelname:<7} {record.name} {record.getMessage()}" + (
            f" {extra}" if extra else "")


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or " " in text or "=" in text
                                                     or '"' in text) else text


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root = logging.getLogger("pocnode")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
