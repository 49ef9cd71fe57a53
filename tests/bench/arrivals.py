"""When a node first logged that it holds an author's event, read from its JSON log.

The convergence benchmark polls every node's log until all hold an update. Reading each
whole log on every poll costs the benchmark's own process a good part of a core while the
nodes it measures share the machine's two; this reader keeps each log's offset and the
heads seen so far and reads only what was appended. It imports nothing from pocnode, so
the node benchmark loads this same file into the baseline's run: both trees are measured
by the same code.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

# log path -> (bytes read, author -> [(seq, first time logged)])
_read: dict[Path, tuple[int, dict[str, list[tuple[int, float]]]]] = {}


def arrival(node: Any, author: str, seq: int) -> float | None:
    """Wall time (s) of the first log line saying ``node`` holds ``author``'s ``seq``."""
    path = node.dir / "node.log"
    offset, heads = _read.get(path, (0, {}))
    try:
        with path.open("rb") as f:
            if f.seek(0, 2) < offset:  # a new log: start again
                offset, heads = 0, {}
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return None
    whole = chunk.rfind(b"\n") + 1  # a line still being written is read next time
    for line in chunk[:whole].splitlines():
        if b'"accepted events"' not in line:
            continue
        entry = json.loads(line)
        at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
        for head in entry.get("heads", "").split(","):
            a, _, s = head.partition(":")
            if s:
                heads.setdefault(a, []).append((int(s), at))
    _read[path] = (offset + whole, heads)
    times = [at for s, at in heads.get(author, ()) if s >= seq]
    return min(times) if times else None
