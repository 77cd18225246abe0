"""Engine fixtures on the real PostgreSQL: a runtime per test with the drill jobs registered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infrastructure.settings import Settings
from triggers.runtime import Runtime, build_runtime

DRILL_PACKAGES = {"job_packages": "jobs,tests.drills", "task_packages": "services,tests.drills"}


@pytest.fixture
def drill_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=DRILL_PACKAGES)


@pytest.fixture
def runtime(drill_settings: Settings) -> Iterator[Runtime]:
    with build_runtime(drill_settings, worker_id="test-worker") as rt:
        yield rt
