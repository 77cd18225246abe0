"""Dashboard pages through the app in-process: sign-in, filters, search, fragments, the dead-letter join."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core.models import JOBS_QUEUE
from tests.acceptance.conftest import client_for
from triggers.http_base import ApiContext
from triggers.runtime import Runtime

API_KEY, ADMIN_KEY = "pages-api-key", "pages-admin-key"


def keyed(api: ApiContext) -> TestClient:
    settings = api.settings.model_copy(update={"api_key": API_KEY, "admin_key": ADMIN_KEY})
    return client_for(ApiContext(**{**api.__dict__, "settings": settings}))


def test_pages_need_a_key_and_the_sign_in_form_sets_it(api: ApiContext) -> None:
    client = keyed(api)
    response = client.get("/api/dashboard/jobs/" + "a" * 64, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/api/dashboard/login?next=/api/dashboard/jobs/{'a' * 64}"
    wrong = client.post("/api/dashboard/login", content="key=nope&next=/api/dashboard",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert wrong.status_code == 303 and "error=wrong+key" in wrong.headers["location"]
    assert "coremachine_key" not in wrong.cookies
    elsewhere = client.post("/api/dashboard/login", content=f"key={API_KEY}&next=https://evil.example/",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert elsewhere.headers["location"] == "/api/dashboard"  # never sent to another site
    cookie = elsewhere.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/api" in cookie
    page = client.get("/api/dashboard")
    assert page.status_code == 200 and "<h1>Jobs</h1>" in page.text
    assert client.get("/api/jobs").status_code == 200  # the JSON API takes the same cookie
    assert client.get("/api/ops/deadletters").status_code == 401  # the API key is no admin key
    assert client.post("/api/dashboard/logout", follow_redirects=False).status_code == 303


def test_jobs_list_filters_searches_and_renders_fragments(client: TestClient, api: ApiContext) -> None:
    first = api.engine.submit("drill_continue", {"tag": "one"}).job.job_id
    other = api.engine.submit("hello_world", {"n": 1}).job.job_id
    page = client.get("/api/dashboard", params={"type": "drill_continue"})
    assert first[:12] in page.text and other[:12] not in page.text
    assert client.get("/api/dashboard", params={"status": "failed"}).text.count("No jobs match") == 1
    found = client.get("/api/dashboard", params={"q": first}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == f"/api/dashboard/jobs/{first}"
    prefix = client.get("/api/dashboard", params={"q": other[:8]})
    assert other[:12] in prefix.text and first[:12] not in prefix.text
    fragment = client.get(f"/api/dashboard/jobs/{first}", params={"fragment": "1"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and 'id="job-progress"' in fragment.text
    assert "Why isn&#39;t this job finished?" in fragment.text and 'id="cancel-job"' in fragment.text
    assert client.get("/api/dashboard/jobs/" + "f" * 64).status_code == 404


def test_dead_letters_page_joins_each_to_its_job(client: TestClient, http_runtime: Runtime) -> None:
    job_id = http_runtime.engine.submit("hello_world", {"n": 2}).job.job_id
    [message] = http_runtime.transport.receive(JOBS_QUEUE, 1, 5.0)
    http_runtime.transport.dead_letter(message, "DrillParked", "parked by the test")
    page = client.get("/api/dashboard/deadletters")
    assert page.status_code == 200 and "DrillParked" in page.text
    assert f'href="/api/dashboard/jobs/{job_id}"' in page.text and 'class="badge queued"' in page.text
    job_page = client.get(f"/api/dashboard/jobs/{job_id}")
    assert "Dead-lettered message" in job_page.text and 'id="replay-all"' in job_page.text
    css = client.get("/api/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
