"""Output: a readable table by default, JSON with --json, for every read command."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

_console = Console(highlight=False, soft_wrap=False)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for name in columns:
        t.add_column(name, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    _console.print(t)


def kv(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(k, "" if v is None else str(v))
    _console.print(t)


def ago(ms: int | None) -> str:
    if not ms:
        return "never"
    seconds = max(0, int(time.time() - ms / 1000))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def when(ms: int | None) -> str:
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


_UNITS = (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000), ("second", 1000))


def duration(ms: int) -> str:
    """A duration as a person says it, its two largest units: "28 days", "1 hour 30
    minutes", "250 ms" (not window_ms=2419200000). Days, not weeks: a rule's "28 days"
    is read without arithmetic."""
    if ms < 1000:
        return f"{ms} ms"
    parts = []
    rest = ms
    for name, size in _UNITS:
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n} {name}{'' if n == 1 else 's'}")
        if len(parts) == 2 or (parts and not n):
            break
    return " ".join(parts)
