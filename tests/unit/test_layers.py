"""The package's layers, read from its source: who may import whom, and no cycles.

core/ decides and imports only core/; store/ and net/ are adapters that may use core/ but
not node/ (net/ serves narrow service interfaces, net/services.py); node/ wires them; cli/
sits on top; sim/ drives core/ without node/ or net/. Imports inside functions count: a
cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "pocnode"

# Which top-level parts of the package each part may import (besides itself).
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "net": {"core"},
    "keyfile": {"core"},
    "node": {"core", "store", "net", "keyfile"},
    "sim": {"core"},
    "cli": {"core", "store", "net", "node", "keyfile", "sim"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.is_relative_to(ROOT.parent) else "pocnode.x"
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pocnode"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("pocnode"):
                out.add(module)
                # "from pocnode.node import datadir" imports the submodule
                out.update(f"{module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_part_imports_only_what_it_may():
    bad = [(m, d) for m, deps in _graph().items() for d in deps
           if _part(d) != _part(m) and _part(d) not in ALLOWED[_part(m)]
           and d != "pocnode"]
    assert not bad, "\n".join(f"{m} imports {d}" for m, d in sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # A package's __init__ re-exporting its own submodules is not a cycle between layers.
    cycles = [c for c in cycles if not all(m.startswith(c[0]) for m in c)]
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_would_see_a_forbidden_import(tmp_path):
    # The test can fail: an import of node/ from net/ is what it looks for.
    probe = ROOT / "net" / "peer_server.py"
    assert any(_part(d) == "core" for d in _imports(probe))
    fake = tmp_path / "x.py"
    fake.write_text("from pocnode.node.node import Node\n")
    assert "pocnode.node.node" in _imports(fake)
