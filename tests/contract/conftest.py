"""The store contract runs every scenario against each store adapter: ids `[memory]` and `[postgres]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.store_harness import Harness, MemoryHarness, PostgresHarness


@pytest.fixture(params=["memory", "postgres"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    database = request.getfixturevalue("database")
    yield PostgresHarness(database)
