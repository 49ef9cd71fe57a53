"""Federations of real nodes; every node is stopped at the end, whatever happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Federation


@pytest.fixture
def federation_factory(tmp_path: Path) -> Iterator:
    made: list[Federation] = []

    def make(n: int, **kwargs) -> Federation:
        fed = Federation(tmp_path / f"fed{len(made)}", n, **kwargs)
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.stop_all()
