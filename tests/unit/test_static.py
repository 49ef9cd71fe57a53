"""ruff and mypy, with the package's own settings (pyproject.toml), as part of the test run:
the README's test command, and so CI (.ci/run), runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]], ids=["ruff", "mypy"])
def test_static_checks_pass(tool):
    out = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(tool)} found problems:\n{out.stdout}{out.stderr}"
