"""Settings for the whole test run."""

from __future__ import annotations

import os

import pytest

# tests/integration/test_quickstart.py runs the README's test command verbatim in a fresh
# clone, inside this run. That nested run proves the command installs and runs the suite
# from nothing; the multi-process tests it would repeat are this (outer) run's, so the
# nested one skips them instead of doubling CI's time.
NESTED = "POCNODE_QUICKSTART_NESTED"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get(NESTED):
        return
    skip = pytest.mark.skip(reason="nested quick-start run: the outer run runs the slow tests")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
