"""Every HTTP route through the FastAPI app, in-process, on the real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.models import JOBS_QUEUE, DeadLetterSelector, OutgoingMessage
from tests.integration.engine_helpers import run_to_end
from triggers.http_base import ApiContext
from triggers.runtime import Runtime

ROUTES = {
    "submit_job": ("POST", "/api/jobs/submit/{job_type}"),
    "submit_batch": ("POST", "/api/jobs/submit/{job_type}/batch"),
    "job_status": ("GET", "/api/jobs/status/{job_id}"),
    "list_jobs": ("GET", "/api/jobs"),
    "list_tasks": ("GET", "/api/jobs/{job_id}/tasks"),
    "cancel_job": ("POST", "/api/jobs/{job_id}/cancel"),
    "retry_job": ("POST", "/api/jobs/{job_id}/retry"),
    "rerun_job": ("POST", "/api/jobs/{job_id}/rerun"),
    "job_events": ("GET", "/api/jobs/{job_id}/events"),
    "livez": ("GET", "/api/livez"),
    "readyz": ("GET", "/api/readyz"),
    "health": ("GET", "/api/health"),
    "openapi": ("GET", "/api/openapi.json"),
    "deadletters_list": ("GET", "/api/ops/deadletters"),
    "deadletters_replay": ("POST", "/api/ops/deadletters/replay"),
    "deadletters_purge": ("POST", "/api/ops/deadletters/purge"),
}


class Http:
    """Calls routes by name and checks every answer is JSON in the one error shape."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, name: str, route_params: dict[str, str] | None = None, *, body: Any = None,
             raw: bytes | None = None, params: dict[str, str] | None = None,
             content_type: str | None = "application/json") -> tuple[int, Any]:
        method, template = ROUTES[name]
        path = template.format(**route_params) if route_params else template
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = {"Content-Type": content_type} if content_type and data else {}
        response = self.client.request(method, path, content=data, headers=headers, params=params or {})
        assert response.headers["content-type"] == "application/json"
        payload = response.json()
        if response.status_code >= 400:
            assert set(payload) == {"error", "message", "details"}, payload
        return response.status_code, payload

    def submit(self, job_type: str, params: dict[str, Any]) -> tuple[int, Any]:
        return self.call("submit_job", {"job_type": job_type}, body=params)


@pytest.fixture
def http(client: TestClient) -> Http:
    return Http(client)


def test_submit_is_idempotent_and_validates(http: Http, api: ApiContext) -> None:
    status, created = http.submit("drill_continue", {"n": 2, "tag": "a"})
    assert status == 201 and created["created"] is True and created["status"] == "queued"
    assert created["status_url"] == f"/api/jobs/status/{created['job_id']}"
    status, again = http.submit("drill_continue", {"tag": "a", "n": 2})
    assert status == 200 and again["job_id"] == created["job_id"] and again["created"] is False

    status, error = http.submit("drill_continue", {"n": "many", "fail_index": [], "bogus": 1})
    assert status == 400 and error["error"] == "invalid_parameters"
    assert {d["field"] for d in error["details"]} == {"n", "fail_index", "bogus"}

    status, error = http.submit("no_such_job", {})
    assert status == 404 and error["error"] == "unknown_job_type" and "drill_continue" in error["details"]
    assert http.call("submit_job", {"job_type": "drill_continue"}, raw=b"n=2", content_type="text/plain")[0] == 415
    assert http.call("submit_job", {"job_type": "drill_continue"}, raw=b"{nope")[0] == 400
    assert http.call("submit_job", {"job_type": "drill_continue"}, raw=b"[1]")[0] == 400
    assert http.call("submit_job", {"job_type": "drill_continue"}, raw=b'{"n": NaN}')[0] == 400
    assert http.submit("drill_continue", {"n": True})[0] == 400  # JSON types are strict: true is no integer
    assert http.submit("drill_continue", {"n": 2.0, "tag": "a"}) == (200, again)  # 2.0 is the integer 2
    status, error = http.submit("sum_squares", {"upto": 10**12, "chunk_size": 1})
    assert status == 422 and error["error"] == "invalid_parameters"  # fits the schema, breaks the job's own rule
    big = json.dumps({"tag": "x" * (api.settings.http_max_body_bytes + 1)}).encode()
    assert http.call("submit_job", {"job_type": "drill_continue"}, raw=big)[0] == 413


def test_a_batch_submit_creates_many_jobs_in_one_call_each_idempotent(http: Http, api: ApiContext) -> None:
    _, single = http.submit("drill_continue", {"n": 1, "tag": "one"})
    entries = [{"n": 1, "tag": "one"}, {"n": 2, "tag": "b"}, {"tag": "b", "n": 2}, {"n": 3, "tag": "c"}]
    status, batch = http.call("submit_batch", {"job_type": "drill_continue"}, body={"jobs": entries})
    assert status == 201 and batch["created"] == 2
    assert [j["created"] for j in batch["jobs"]] == [False, True, False, True]
    ids = [j["job_id"] for j in batch["jobs"]]
    assert ids[0] == single["job_id"] and ids[1] == ids[2] and len(set(ids)) == 3
    for job_id in ids[1:]:
        status, body = http.call("job_status", {"job_id": job_id})
        assert status == 200 and body["status"] == "queued"
    jobs = {m.body["job_id"] for m in api.transport.receive("jobs", 10, 1)}
    assert jobs == set(ids), "every new job got its stage-1 message, the repeats none"
    status, again = http.call("submit_batch", {"job_type": "drill_continue"}, body={"jobs": entries[1:]})
    assert status == 200 and again["created"] == 0 and [j["job_id"] for j in again["jobs"]] == ids[1:]

    status, error = http.call("submit_batch", {"job_type": "drill_continue"},
                              body={"jobs": [{"n": 4, "tag": "d"}, {"n": "many"}]})
    assert status == 400 and error["error"] == "invalid_parameters"
    assert [d["field"] for d in error["details"]] == ["jobs.1.n"]
    assert http.submit("drill_continue", {"n": 4, "tag": "d"})[0] == 201, "the refused batch created nothing"
    assert http.call("submit_batch", {"job_type": "drill_continue"}, body={"jobs": []})[0] == 400
    assert http.call("submit_batch", {"job_type": "drill_continue"}, body=[{"n": 1}])[0] == 400
    status, error = http.call("submit_batch", {"job_type": "no_such_job"}, body={"jobs": [{}]})
    assert status == 404 and error["error"] == "unknown_job_type"


def test_status_events_and_tasks_of_a_finished_job(http: Http, http_runtime: Runtime) -> None:
    _, job = http.submit("drill_continue", {"n": 5, "fail_index": 2})
    job_id = job["job_id"]
    run_to_end(http_runtime, job_id)
    status, body = http.call("job_status", {"job_id": job_id})
    assert status == 200 and body["status"] == "completed_with_errors"
    assert body["stages"][0]["tasks"] == {"completed": 4, "failed": 1}
    assert body["created_at"] and body["finished_at"] and body["stages"][0]["completed_at"]
    [failed] = [e for e in body["errors"] if e["status"] == "failed"]
    assert failed["errors"][-1]["class"] == "permanent" and failed["errors"][-1]["type"] == "PermanentError"
    assert failed["errors"][-1]["attempt"] == 1 and "broken on purpose" in failed["errors"][-1]["message"]

    assert http.call("job_status", {"job_id": "0" * 64})[0] == 404
    assert http.call("job_status", {"job_id": "not-a-job"})[0] == 400

    status, events = http.call("job_events", {"job_id": job_id})
    assert status == 200 and events["diagnosis"] == ["Job completed with errors."]
    assert [e["kind"] for e in events["events"]][:2] == ["submitted", "stage_started"]
    assert http.call("job_events", {"job_id": "f" * 64})[0] == 404

    status, page = http.call("list_tasks", {"job_id": job_id}, params={"stage": "1", "limit": "2"})
    assert status == 200 and [t["index"] for t in page["tasks"]] == [0, 1] and page["next_cursor"]
    seen = [t["index"] for t in page["tasks"]]
    while page["next_cursor"]:
        _, page = http.call("list_tasks", {"job_id": job_id}, params={"stage": "1", "limit": "2",
                                                                 "cursor": page["next_cursor"]})
        seen += [t["index"] for t in page["tasks"]]
    assert seen == [0, 1, 2, 3, 4]
    _, failed_only = http.call("list_tasks", {"job_id": job_id}, params={"status": "failed"})
    assert [(t["stage"], t["index"]) for t in failed_only["tasks"]] == [(1, 2)]
    assert http.call("list_tasks", {"job_id": job_id}, params={"status": "exploded"})[0] == 400
    assert http.call("list_tasks", {"job_id": job_id}, params={"cursor": "garbage!"})[0] == 400
    assert http.call("list_tasks", {"job_id": "a" * 64})[0] == 404


def test_list_jobs_newest_first_with_filters_and_cursor(http: Http) -> None:
    ids = [http.submit("drill_continue", {"tag": f"t{i}"})[1]["job_id"] for i in range(5)]
    other = http.submit("drill_fail_fast", {"tag": "other"})[1]["job_id"]
    status, page = http.call("list_jobs", params={"type": "drill_continue", "limit": "2"})
    assert status == 200
    seen = [j["job_id"] for j in page["jobs"]]
    while page["next_cursor"]:
        _, page = http.call("list_jobs", params={"type": "drill_continue", "limit": "2", "cursor": page["next_cursor"]})
        seen += [j["job_id"] for j in page["jobs"]]
    assert seen == list(reversed(ids))
    _, everything = http.call("list_jobs", params={"status": "queued,processing"})
    assert {j["job_id"] for j in everything["jobs"]} == {*ids, other}
    _, none = http.call("list_jobs", params={"status": "failed"})
    assert none["jobs"] == [] and none["next_cursor"] is None
    status, error = http.call("list_jobs", params={"status": "queued,nope"})
    assert status == 400 and error["details"][0]["field"] == "status"
    assert http.call("list_jobs", params={"limit": "0"})[0] == 400


def test_cancel_stops_new_tasks_and_ends_cancelled(http: Http, http_runtime: Runtime) -> None:
    _, job = http.submit("drill_fail_fast", {"n": 3})
    job_id = job["job_id"]
    status, body = http.call("cancel_job", {"job_id": job_id}, body={"reason": "operator said so"})
    assert status == 202 and body["status"] == "finalizing" and body["outcome"] == "cancelled"
    assert http.call("cancel_job", {"job_id": job_id})[0] == 409  # finalizing: past cancelling
    assert run_to_end(http_runtime, job_id).status.value == "cancelled"
    status, error = http.call("cancel_job", {"job_id": job_id})
    assert status == 409 and error["details"] == [{"status": "cancelled"}]
    assert http.call("cancel_job", {"job_id": "b" * 64})[0] == 404
    assert http.call("cancel_job", {"job_id": job_id}, body={"reason": 5})[0] == 400


def test_retry_reruns_only_the_failed_tasks_and_resumes(http: Http, http_runtime: Runtime, tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    marker.touch()
    _, job = http.submit("http_flaky", {"marker": str(marker), "n": 3})
    job_id = job["job_id"]
    assert http.call("retry_job", {"job_id": job_id})[0] == 409  # queued, not failed
    assert run_to_end(http_runtime, job_id).status.value == "failed"
    _, tasks = http.call("list_tasks", {"job_id": job_id})
    before = {t["index"]: t for t in tasks["tasks"]}
    assert before[1]["status"] == "failed"

    marker.unlink()
    status, body = http.call("retry_job", {"job_id": job_id})
    assert status == 202 and body["status"] == "processing" and body["error"] is None
    assert body["retried_stage"] == 1 and body["stage_resent"] is False and body["round"] == 1
    requeued = body["tasks_requeued"]
    assert requeued >= 1
    assert http.call("retry_job", {"job_id": job_id})[0] == 409  # processing now

    finished = run_to_end(http_runtime, job_id)
    assert finished.status.value == "completed", finished.error
    _, tasks = http.call("list_tasks", {"job_id": job_id, }, params={"stage": "1"})
    after = {t["index"]: t for t in tasks["tasks"]}
    assert after[1]["status"] == "completed" and after[1]["attempt"] == 2 and len(after[1]["errors"]) == 1
    for index in (0, 2):  # completed before the failure: never run again
        if before[index]["status"] == "completed":
            assert after[index]["attempt"] == before[index]["attempt"]
    _, events = http.call("job_events", {"job_id": job_id})
    assert next(e for e in events["events"] if e["kind"] == "job_retried")["detail"]["tasks_requeued"] == requeued


def test_retry_after_create_tasks_failed_sends_the_stage_again(http: Http, http_runtime: Runtime) -> None:
    _, job = http.submit("drill_create_tasks_raises", {"n": 2})
    job_id = job["job_id"]
    assert run_to_end(http_runtime, job_id).status.value == "failed"
    status, body = http.call("retry_job", {"job_id": job_id})
    assert status == 202 and body["stage_resent"] is True and body["tasks_requeued"] == 0
    again = run_to_end(http_runtime, job_id)  # create_tasks still raises: it fails again, and is retryable again
    assert again.status.value == "failed" and again.current_stage == 2
    status, body = http.call("retry_job", {"job_id": job_id})
    assert status == 202 and body["round"] == 2


def test_rerun_starts_a_new_round_of_an_ended_job(http: Http, http_runtime: Runtime) -> None:
    _, job = http.submit("hello_world", {"n": 2})
    job_id = job["job_id"]
    assert http.call("rerun_job", {"job_id": job_id})[0] == 409  # queued: not ended
    assert run_to_end(http_runtime, job_id).status.value == "completed"
    status, body = http.call("rerun_job", {"job_id": job_id})
    assert status == 202 and body["status"] == "queued" and body["round"] == 1
    assert body["previous_status"] == "completed"
    assert run_to_end(http_runtime, job_id).status.value == "completed"
    _, events = http.call("job_events", {"job_id": job_id})
    kinds = [e["kind"] for e in events["events"]]
    assert kinds.count("job_finished") == 2 and "job_rerun" in kinds
    assert http.submit("hello_world", {"n": 2})[0] == 200  # a plain duplicate submit still creates nothing
    assert http.call("rerun_job", {"job_id": "d" * 64})[0] == 404


def test_probes(http: Http) -> None:
    assert http.call("livez") == (200, {"status": "ok"})
    status, ready = http.call("readyz")
    assert status == 200 and ready["database"]["ok"] and ready["transport"]["ok"]
    status, health = http.call("health")
    assert status == 200 and health["status"] == "ok"
    assert health["database"]["schema_version"] == health["database"]["expected_schema_version"] >= 1
    assert "drill_fail_fast" in health["job_types"] and "drill.work" in health["task_types"]


def _dead_letters(runtime: Runtime, count: int) -> None:
    runtime.transport.send([
        OutgoingMessage(JOBS_QUEUE, f"poison-{i}", {"kind": "nope", "i": i}, {"job_id": f"{i:064x}"})
        for i in range(count)
    ])
    received = runtime.transport.receive(JOBS_QUEUE, count, 1.0)
    assert len(received) == count
    for message in received:
        runtime.transport.dead_letter(message, "MalformedMessage", "poison for the test")


def test_dead_letters_list_replay_and_purge(http: Http, http_runtime: Runtime) -> None:
    _dead_letters(http_runtime, 3)
    status, page = http.call("deadletters_list", params={"queue": "jobs", "limit": "2"})
    assert status == 200 and len(page["dead_letters"]) == 2 and page["next_cursor"]
    _, rest = http.call("deadletters_list", params={"queue": "jobs", "cursor": page["next_cursor"]})
    ids = [d["id"] for d in page["dead_letters"] + rest["dead_letters"]]
    assert len(set(ids)) == 3 and rest["next_cursor"] is None
    assert http.call("deadletters_list", params={"queue": "elsewhere"})[0] == 400

    status, error = http.call("deadletters_replay", body={})
    assert status == 422 and error["error"] == "selector_required"
    assert http.call("deadletters_replay", body={"ids": [ids[0]], "dry_run": 0})[0] == 400  # JSON types are strict
    status, dry = http.call("deadletters_replay", body={"ids": [ids[0]], "dry_run": True})
    assert status == 200 and dry["dry_run"] is True and dry["count"] == 1
    assert len(http_runtime.transport.list_dead_letters(DeadLetterSelector())) == 3
    status, done = http.call("deadletters_replay", body={"ids": [ids[0]]})
    assert status == 200 and done["count"] == 1
    assert len(http_runtime.transport.list_dead_letters(DeadLetterSelector())) == 2

    assert http.call("deadletters_purge", body={})[0] == 422
    status, preview = http.call("deadletters_purge", body={"job_id": f"{1:064x}", "dry_run": True})
    assert status == 200 and preview["count"] == 1
    status, purged = http.call("deadletters_purge", body={"all": True})
    assert status == 200 and purged == {"dry_run": False, "count": 2, "dead_letters": []}
    assert http_runtime.transport.list_dead_letters(DeadLetterSelector()) == []


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_every_route_answers_json_without_a_server_error(http: Http, name: str) -> None:
    params = {p: "0" * 64 if p == "job_id" else "drill_continue" for p in ("job_id", "job_type")}
    body = {"deadletters_replay": {"ids": ["1"]}, "deadletters_purge": {"all": True}}.get(name)
    status, _ = http.call(name, params, body=body)
    assert status < 500
