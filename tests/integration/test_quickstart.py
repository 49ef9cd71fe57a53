"""The README's quick start, verbatim, in a fresh clone: what a new user does first.

Clones the committed repository into an empty directory and runs the two commands of the
README's "Quick start" block exactly as written: the first must bring up the demo
federation and show it converging, the second must install the test tools and pass the
tests. The nested test run runs a sample of the suite and skips the rest, this test among
them (it would recurse), which this outer run runs (tests/conftest.py): it shows that the
command installs the test tools and runs the suite from nothing, without doubling CI's
time.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NESTED = "POCNODE_QUICKSTART_NESTED"


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = re.split(r"^#+\s*quick[\s-]*start", readme, flags=re.IGNORECASE | re.MULTILINE)[1]
    block = section.split("```", 2)[1]
    lines = [line.strip() for line in block.splitlines()[1:]]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_quick_start_has_exactly_two_commands():
    assert len(quickstart_commands()) == 2


@pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="nested run of the quick start")
def test_quick_start_verbatim_in_a_fresh_clone(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "pocnode"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if ".venv" not in p)
    demo, tests = quickstart_commands()
    first = subprocess.run(["bash", "-c", demo], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "converged" in first.stdout
    assert "tearing down" in first.stdout
    second = subprocess.run(["bash", "-c", tests], cwd=clone, env={**env, NESTED: "1"},
                            capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    passed = re.search(r"(\d+) passed", second.stdout)
    assert passed and int(passed.group(1)) >= 50, second.stdout[-3000:]
