"""HTTP API fixtures: a runtime on this test's database with the drill jobs, its ApiContext and a test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from infrastructure.settings import Settings
from triggers.http_app import create_app
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
def api(http_runtime: Runtime) -> ApiContext:
    return ApiContext.from_runtime(http_runtime)


def client_for(context: ApiContext, *, require_keys: bool = False) -> TestClient:
    app = create_app(context.jobs, lambda: context, max_body_bytes=context.settings.http_max_body_bytes,
                     require_keys=require_keys)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(api: ApiContext) -> TestClient:
    """The FastAPI app over the test's runtime, called in-process."""
    return client_for(api)
