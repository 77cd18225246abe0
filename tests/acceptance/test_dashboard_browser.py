"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `coremachine serve`'s app
(uvicorn on a free loopback port, keys set) with an in-process worker. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from core.models import JOBS_QUEUE, DeadLetterSelector
from core.worker import Worker
from triggers.http_base import ApiContext
from triggers.runtime import Runtime
from triggers.serve import ApiServer, make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "screenshots"
API_KEY, ADMIN_KEY = "browser-api-key", "browser-admin-key"
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(http_runtime: Runtime) -> Iterator[ApiServer]:
    settings = http_runtime.settings.model_copy(update={"api_key": API_KEY, "admin_key": ADMIN_KEY})
    context = ApiContext(**{**ApiContext.from_runtime(http_runtime).__dict__, "settings": settings})
    server = make_server(context).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Browser, server: ApiServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A signed-in page (admin key, through the sign-in form); a screenshot of it is kept after the test."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto("/api/dashboard")
    expect(page).to_have_url(f"{server.url}/api/dashboard/login?next=/api/dashboard")
    page.fill("#key", ADMIN_KEY)
    page.click("#sign-in")
    expect(page.locator("h1")).to_have_text("Jobs")
    try:
        yield page
    finally:
        shot(page, request.node.name)
        context.close()


@pytest.fixture
def worker(http_runtime: Runtime) -> Iterator[Worker]:
    worker = http_runtime.worker(concurrency=2)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(timeout=30)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def submit(page: Page, job_type: str, parameters: dict[str, object]) -> str:
    """Submit through the JSON API with the browser's own sign-in cookie."""
    response = page.request.post(f"/api/jobs/submit/{job_type}", data=json.dumps(parameters),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 201, response.text()
    return str(response.json()["job_id"])


def test_a_submitted_job_is_watched_to_100_percent(page: Page, worker: Worker) -> None:
    job_id = submit(page, "hello_world", {"n": 40, "sleep_ms": 20})
    page.goto("/api/dashboard")
    page.fill("#filter-id", job_id[:10])
    page.click("text=Filter")
    page.click(f"a[href='/api/dashboard/jobs/{job_id}']")
    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#job-progress")).to_have_text("100%")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#stages tbody tr")).to_have_count(2)
    expect(page.locator("#diagnosis")).to_contain_text("completed")
    expect(page.locator("#timeline")).to_contain_text("job_finished")


def test_a_running_job_is_cancelled_then_rerun_from_its_page(page: Page, worker: Worker, tmp_path: Path) -> None:
    job_id = submit(page, "http_flaky", {"marker": str(tmp_path / "absent"), "n": 30, "sleep_ms": 300})
    page.goto(f"/api/dashboard/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("processing")
    page.click("#cancel-job")
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-yes")
    expect(page.locator("#flash")).to_contain_text("Cancelling")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#stages")).to_contain_text("cancelled")
    expect(page.locator("#cancel-job")).to_have_count(0)  # only queued or processing jobs can be cancelled

    page.click("#rerun-job")  # a new round of the same job, from stage 1
    page.click("#confirm-yes")
    expect(page.locator("#flash")).to_contain_text("Rerunning")
    expect(page.locator("#job-progress")).to_have_text("100%")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#timeline")).to_contain_text("rerun")


def test_a_dead_letter_is_replayed_from_the_page_after_a_dry_run(page: Page, http_runtime: Runtime) -> None:
    job_id = submit(page, "hello_world", {"n": 5})
    [message] = http_runtime.transport.receive(JOBS_QUEUE, 1, 5.0)  # the job's first stage message
    assert message.properties.get("job_id") == job_id
    http_runtime.transport.dead_letter(message, "DrillParked", "parked by the browser test")
    [dead] = http_runtime.transport.list_dead_letters(DeadLetterSelector(job_id=job_id))

    page.goto("/api/dashboard/deadletters")
    row = page.locator(f"tr[data-dead-letter='{dead.id}']")
    expect(row).to_contain_text("DrillParked")
    expect(row).to_contain_text("queued")  # joined to its job's state
    shot(page, "dead_letters_page")
    row.locator("button[data-action=replay]").click()
    expect(page.locator("#confirm-body")).to_contain_text("Dry run")
    expect(page.locator("#confirm-body")).to_contain_text(dead.id)
    shot(page, "replay_dry_run")
    page.click("#confirm-yes")
    expect(page.locator("#flash")).to_have_text("Replayed 1 dead letter(s).")
    expect(row).to_have_count(0)
    assert http_runtime.transport.list_dead_letters(DeadLetterSelector(job_id=job_id)) == []

    worker = http_runtime.worker(concurrency=2)
    worker.start()
    try:
        page.goto(f"/api/dashboard/jobs/{job_id}")
        expect(page.locator("#job-progress")).to_have_text("100%")
    finally:
        worker.stop(timeout=30)
