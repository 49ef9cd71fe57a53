"""The spec and the code agree on their shared tables, and the core stays pure."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pocnode.core import errors

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "protocol" / "PROTOCOL.md").read_text()


def _spec_codes() -> set[str]:
    section = SPEC.split("## 9. Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.MULTILINE))


def _all_error_classes() -> set[type[errors.PocError]]:
    import importlib
    import pkgutil

    import pocnode

    for info in pkgutil.walk_packages(pocnode.__path__, "pocnode."):
        if info.name != "pocnode.__main__":
            importlib.import_module(info.name)
    found, todo = set(), [errors.PocError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_code_is_in_the_spec_table_and_back():
    families = {"encoding", "chain", "governance"}  # never raised themselves (§9, end)
    code_codes = {cls.code for cls in _all_error_classes()} - families
    assert code_codes == _spec_codes()


def test_all_errors_lists_every_error_class():
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, errors.PocError)}
    assert defined == set(errors.ALL_ERRORS)
    assert len({cls.code for cls in errors.ALL_ERRORS}) == len(errors.ALL_ERRORS)


# The core decides; adapters do. Nothing in pocnode/core may reach the outside world.
_FORBIDDEN_IMPORTS = {"asyncio", "socket", "os", "time", "datetime", "random", "secrets",
                      "pathlib", "io", "subprocess", "threading", "aiohttp", "aiosqlite",
                      "sqlite3", "click", "logging", "shutil", "tempfile", "urllib"}
_FORBIDDEN_CALLS = {"open", "print", "input"}


def test_core_does_no_io():
    for path in sorted((ROOT / "pocnode" / "core").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = [ast.Pass()]  # typing-only imports do nothing at run time
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in _FORBIDDEN_CALLS, f"{path.name}: calls {node.func.id}"
                continue
            else:
                continue
            bad = set(names) & _FORBIDDEN_IMPORTS
            assert not bad, f"{path.name} imports {bad}"
