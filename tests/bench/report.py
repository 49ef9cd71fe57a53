"""One benchmark figure, and the report every run writes (JSON and a Markdown table).

Each figure carries what it is compared with, measured in the same run: a limit (what the
machine can do at best, e.g. raw signature checks) or a peer (the same benchmark of an
earlier version of pocnode, a theoretical reference). The ratio is what holds when the
machine's speed drifts; the goal, where the issues set one, is on the ratio or the value.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    group: str
    name: str
    value: float
    unit: str
    # What the ratio is to: "raw Ed25519 verify in one thread, 5,300/s", "6a0cd56's node".
    against: str = ""
    ratio: float | None = None
    # The goal: (">=" or "<=", threshold, "ratio" or "value"); None where no issue sets one.
    goal: tuple[str, float, str] | None = None
    note: str = ""

    @property
    def meets(self) -> bool | None:
        if self.goal is None:
            return None
        op, threshold, of = self.goal
        x = self.ratio if of == "ratio" else self.value
        if x is None or math.isnan(x):
            return False
        return x >= threshold if op == ">=" else x <= threshold

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        op, threshold, of = self.goal
        what = "ratio" if of == "ratio" else self.unit
        return f"{what} {op} {_num(threshold)}"

    def verdict(self) -> str:
        return {None: "", True: "meets", False: "BELOW"}[self.meets]

    def line(self) -> str:
        text = f"{self.name}: {_num(self.value)} {self.unit}"
        if self.ratio is not None:
            text += f", ratio {self.ratio:.2f} to {self.against}"
        elif self.against:
            text += f" ({self.against})"
        if self.goal is not None:
            text += f" (goal {self.goal_text()}: {self.verdict()})"
        if self.note:
            text += f"; {self.note}"
        return text

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["goal"] = self.goal_text() or None
        out["meets"] = self.meets
        return out


def _num(x: float) -> str:
    if isinstance(x, int) or (abs(x) >= 100 and float(x).is_integer()):
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}"


def write(figures: list[Figure], notes: list[str], meta: dict[str, Any], out: Path) -> None:
    """``out``.json and ``out``.md."""
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()} {platform.python_implementation()} "
                       f"{platform.python_version()}", **meta}
    out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "figures": [f.to_json() for f in figures], "notes": notes},
        indent=1) + "\n")
    lines = ["# pocnode benchmark report", "",
             f"Run `{meta.get('command', '')}` on {meta['machine']}, "
             f"{meta.get('cpus', '?')} CPUs, {meta.get('started', '')}; "
             f"{meta.get('duration_s', 0):.0f} s. Every ratio is to a limit or a peer measured "
             f"in this same run.", ""]
    group = None
    for f in figures:
        if f.group != group:
            group = f.group
            lines += ["", f"## {group}", "",
                      "| figure | value | ratio | to | goal | verdict |",
                      "|---|---|---|---|---|---|"]
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        name = f.name + (f" ({f.note})" if f.note else "")
        lines.append(f"| {_cell(name)} | {_num(f.value)} {f.unit} | {ratio} | "
                     f"{_cell(f.against)} | {f.goal_text()} | {f.verdict()} |")
    if notes:
        lines += ["", "## notes", ""] + [f"- {n}" for n in notes]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
