"""HTTP API fixtures: a runtime on this test's database with the drill jobs, and its ApiContext."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infrastructure.settings import Settings
from triggers import http_blueprint
from triggers.http_base import ApiContext
from triggers.runtime import Runtime, build_runtime

HTTP_PACKAGES = {
    "job_packages": "jobs.hello_world,jobs.sum_squares,tests.drills,tests.acceptance.http_drills",
    "task_packages": "services.hello,services.squares,tests.drills,tests.acceptance.http_drills",
}


@pytest.fixture
def http_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=HTTP_PACKAGES)


@pytest.fixture
def http_runtime(http_settings: Settings) -> Iterator[Runtime]:
    with build_runtime(http_settings, worker_id="http-test-worker") as rt:
        yield rt


@pytest.fixture
def api(http_runtime: Runtime) -> Iterator[ApiContext]:
    """The ApiContext, also installed as the Azure blueprint's provider for the test's duration."""
    context = ApiContext.from_runtime(http_runtime)
    http_blueprint.set_context_provider(lambda: context)
    try:
        yield context
    finally:
        http_blueprint.set_context_provider(None)
