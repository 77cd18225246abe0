"""`coremachine cancel | retry | rerun JOB_ID` end to end on the real PostgreSQL, with in-process workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.models import JobStatus
from infrastructure.postgres.database import Database
from infrastructure.postgres.store import PostgresStore
from infrastructure.settings import Settings
from triggers.cli import main


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresStore]:
    for name in ("COREMACHINE_JOB_PACKAGES", "COREMACHINE_TASK_PACKAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COREMACHINE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COREMACHINE_LOG_LEVEL", "WARNING")
    database = Database(Settings.for_tests(database_url=database_url, data_dir=tmp_path))
    yield PostgresStore(database.connection)
    database.close()


def test_cancel_retry_and_rerun_from_the_command_line(
    cli_env: PostgresStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store = cli_env
    assert main(["submit", "hello_world", "-p", "n=2"]) == 0
    job_id = capsys.readouterr().out.split()[0]

    assert main(["cancel", job_id, "--reason", "not now"]) == 0
    assert main(["cancel", job_id]) == 1
    assert "only a queued or processing job can be cancelled" in capsys.readouterr().err
    assert main(["run", "hello_world", "-p", "n=2", "--timeout", "60"]) == 1
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED and job.error is not None
    assert job.error["message"] == "not now"

    assert main(["retry", job_id]) == 0
    assert main(["run", "hello_world", "-p", "n=2", "--timeout", "60"]) == 0
    job = store.get_job(job_id)
    assert job is not None and (job.status, job.round) == (JobStatus.COMPLETED, 1)
    assert main(["retry", job_id]) == 1

    assert main(["rerun", job_id]) == 0
    assert main(["run", "hello_world", "-p", "n=2", "--timeout", "60"]) == 0
    job = store.get_job(job_id)
    assert job is not None and (job.status, job.round) == (JobStatus.COMPLETED, 2)
    capsys.readouterr()
    assert main(["submit", "hello_world", "-p", "n=2"]) == 0
    assert "already exists" in capsys.readouterr().out

    assert main(["rerun", "not-a-job-id"]) == 2
    assert main(["retry", "c" * 64]) == 1
