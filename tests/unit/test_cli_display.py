"""CLI rendering: plain status wording, and tables that stay readable at 80 columns (no word broken)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from core.diagnosis import explain
from core.models import (
    DeadLetter,
    EventView,
    FailurePolicy,
    JobRecord,
    JobSnapshot,
    JobStatus,
    StageStatus,
    StageView,
)
from triggers.cli_deadletters import _table as dead_letter_table
from triggers.cli_display import fitted_table, print_status, stage_table, stage_wording

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(status: JobStatus, error: dict[str, str] | None = None) -> JobRecord:
    return JobRecord(
        job_id="c" * 64, job_type="annuity_performance_ingest", status=status, parameters={}, current_stage=2,
        total_stages=3, failure_policy=FailurePolicy.FAIL_FAST, result=None, error=error, created_at=T0,
        updated_at=T0, finished_at=T0 + timedelta(seconds=3) if status.terminal else None,
    )


def stage(number: int, status: StageStatus, failed: int = 0, name: str = "validate") -> StageView:
    counts = {"completed": 10 - failed, "failed": failed} if failed else {"completed": 10}
    return StageView(stage=number, name=name, status=status, task_count=10, remaining=0, failed=failed,
                     counts=counts, started_at=T0, completed_at=T0 + timedelta(seconds=1))


@pytest.mark.parametrize(("job_status", "stage_status", "failed", "wording"), [
    (JobStatus.FAILED, StageStatus.CANCELLED, 2, "failed"),
    (JobStatus.FAILED, StageStatus.CANCELLED, 0, "stopped"),
    (JobStatus.FAILED, StageStatus.COMPLETED, 1, "failed"),
    (JobStatus.COMPLETED_WITH_ERRORS, StageStatus.COMPLETED, 1, "completed with errors"),
    (JobStatus.CANCELLED, StageStatus.CANCELLED, 0, "cancelled"),
    (JobStatus.COMPLETED, StageStatus.COMPLETED, 0, "completed"),
    (JobStatus.PROCESSING, StageStatus.PROCESSING, 1, "processing"),
])
def test_stage_wording(job_status: JobStatus, stage_status: StageStatus, failed: int, wording: str) -> None:
    assert stage_wording(stage(1, stage_status, failed), job(job_status)) == wording


@pytest.mark.parametrize(("status", "error", "sentence"), [
    (JobStatus.COMPLETED, None, "Job completed."),
    (JobStatus.COMPLETED_WITH_ERRORS, None, "Job completed with errors."),
    (JobStatus.CANCELLED, None, "Job cancelled."),
    (JobStatus.FAILED, {"type": "PermanentError", "message": "bad row"}, "Job failed: PermanentError: bad row."),
])
def test_a_finished_job_is_described_plainly(status: JobStatus, error: dict[str, str] | None, sentence: str) -> None:
    snapshot = JobSnapshot(job(status, error), [], [], None, None, [])
    assert explain(snapshot) == [sentence]


def render(renderable: object) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    text = console.export_text()
    console.file.close()
    return text


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]{3,}", text))


def test_stage_table_at_80_columns_breaks_no_word() -> None:
    stages = [stage(1, StageStatus.COMPLETED, name="discover_workbooks"),
              stage(2, StageStatus.CANCELLED, failed=3, name="validate_and_normalise"),
              stage(3, StageStatus.CANCELLED, name="load_warehouse")]
    snapshot = JobSnapshot(job(JobStatus.FAILED), stages, [], None, None, [])
    text = render(stage_table(snapshot))
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in ("discover_workbooks", "validate_and_normalise", "load_warehouse", "completed", "failed",
                 "stopped", "1.00s"):
        assert word in text, f"{word!r} broken or missing in\n{text}"


def test_status_page_at_80_columns_breaks_no_word() -> None:
    events = [EventView(at=T0, kind="finalize_deferred", stage=1, task_id="t" * 40,
                        detail={"tasks": 10, "note": "a fairly long detail that will not fit in the column"})]
    snapshot = JobSnapshot(job(JobStatus.FAILED, {"type": "PermanentError", "message": "bad"}),
                           [stage(1, StageStatus.CANCELLED, failed=1)], events, None, None, [])
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_status(console, snapshot, [])
    text = console.export_text()
    console.file.close()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "finalize_deferred" in text and "tttttttt" in text
    assert {"Status", "failed", "stage", "Timeline"} <= words(text)


def test_dead_letter_table_at_80_columns_breaks_no_word() -> None:
    dl = DeadLetter(id="12345", queue="tasks", message_id="m" * 40, body={},
                    properties={"job_id": "d" * 64, "task_type": "ingest.validate_rows"},
                    reason="MaxDeliveryCountExceeded", description="delivered ten times, the handler never settled",
                    delivery_count=10, dead_lettered_at=T0)
    text = render(dead_letter_table([dl, replace(dl, id="12346", replay_count=2)]))
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in ("12345", "12346", "tasks", "dddddddddddd", "deliveries" if "deliveries" in text else "tries"):
        assert word in text, f"{word!r} broken or missing in\n{text}"


def test_a_table_too_wide_for_80_columns_is_split_and_repeats_the_name_column() -> None:
    columns = ["domain", "files", "in", "out", "rejected", "skipped", "unknown", "quality", "table", "rows"]
    rows = [[name, "1", "86", "78", "4", "4", "16", "pass", f"warehouse.{name}", "78"]
            for name in ("annuity_performance", "trustee_performance")]
    text = render(fitted_table("ingest", columns, rows, 80))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("domain") == 2, "the name column starts each part"
    for word in (*columns, "annuity_performance", "warehouse.trustee_performance"):
        assert word in text, f"{word!r} broken or missing in\n{text}"
    wide = render(fitted_table("ingest", columns[:4], [r[:4] for r in rows], 80))
    assert wide.count("domain") == 1, "a table that fits stays one table"
