"""A wide stage's last completions are stored by one statement and the stage is closed after it: when that close
fails (the database went away at that moment), the janitor closes the stage and the job still ends, once."""

from __future__ import annotations

from typing import Any

import pytest

import core.store
from core.models import JobStatus
from core.outcomes import WIDE_STAGE_TASKS, close_stage
from core.uow import UnitOfWork
from tests.integration.engine_helpers import event_counts, rows, run_to_end
from triggers.runtime import Runtime


def test_a_close_that_fails_after_the_counted_statement_is_done_by_the_janitor(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = close_stage
    failed: list[tuple[str, int]] = []

    def close_fails_once(uow: UnitOfWork, job_id: str, stage: int, inline_finish: frozenset[str] = frozenset()
                         ) -> Any:
        if not failed:
            failed.append((job_id, stage))
            raise ConnectionError("the database went away")
        return real(uow, job_id, stage, inline_finish)

    monkeypatch.setattr(core.store, "close_stage", close_fails_once)
    n = WIDE_STAGE_TASKS * 2
    job_id = runtime.engine.submit("hello_world", {"n": n}).job.job_id
    job = run_to_end(runtime, job_id, timeout=90)

    assert failed and failed[0][0] == job_id
    assert job.status is JobStatus.COMPLETED and job.result is not None and job.result["replies"] == n
    events = event_counts(runtime, job_id)
    assert events[("stage_completed", 1)] == 1 and events[("stage_completed", 2)] == 1
    assert events[("job_finished", None)] == 1
    assert rows(runtime, "SELECT count(*) FROM queue_messages WHERE message_id = %s", f"j:{job_id}:s2")[0][0] == 1
    assert rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s AND status = 'completed'", job_id)[0][0] == 2 * n
