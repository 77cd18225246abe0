"""Recovery drills on the real PostgreSQL: worker processes, SIGKILL, dead letters and replay, poison."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import CoreMachine
from core.models import DeadLetterSelector, JobStatus
from infrastructure.settings import Settings
from tests.integration.conftest import DRILL_PACKAGES
from tests.integration.engine_helpers import event_counts, rows, run_to_end, task_rows
from triggers.runtime import Registries, Runtime, build_runtime

ROOT = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREMACHINE_") and k != "DATABASE_URL"}
    env.update({
        "DATABASE_URL": str(settings.database_url),
        "COREMACHINE_DATA_DIR": str(settings.data_dir),
        "COREMACHINE_JOB_PACKAGES": DRILL_PACKAGES["job_packages"],
        "COREMACHINE_TASK_PACKAGES": DRILL_PACKAGES["task_packages"],
        "COREMACHINE_LOCK_SECONDS": "2",
        "COREMACHINE_LEASE_GRACE_SECONDS": "0.5",
        "COREMACHINE_LOG_LEVEL": "WARNING",
    })
    return env


@pytest.fixture
def spawn(drill_settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def start_worker(procs: list[subprocess.Popen[bytes]], settings: Settings, concurrency: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "triggers.cli", "worker", "--concurrency", str(concurrency)],
        cwd=ROOT, env=worker_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    procs.append(proc)
    return proc


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_worker_processes_advance_a_2000_task_stage_exactly_once(
    runtime: Runtime, drill_settings: Settings, spawn: list[subprocess.Popen[bytes]]
) -> None:
    job_id = runtime.engine.submit("hello_world", {"n": 2000}).job.job_id
    workers = [start_worker(spawn, drill_settings, concurrency=2) for _ in range(2)]

    def done() -> bool:
        job = runtime.store.get_job(job_id)
        return job is not None and job.status.terminal

    wait_for(done, 180, "the job to finish")
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    job = runtime.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED
    assert job.result is not None and job.result["replies"] == 2000
    events = event_counts(runtime, job_id)
    assert events[("stage_completed", 1)] == 1 and events[("stage_completed", 2)] == 1
    assert events[("stage_started", 2)] == 1 and events[("job_finished", None)] == 1
    assert rows(runtime, "SELECT count(*) FROM queue_messages WHERE message_id = %s", f"j:{job_id}:s2")[0][0] == 1
    assert rows(runtime, "SELECT stage, count(*), sum(attempt) FROM tasks WHERE job_id = %s AND status = 'completed' "
                         "GROUP BY stage ORDER BY stage", job_id) == [(1, 2000, 2000), (2, 2000, 2000)]
    workers_seen = rows(runtime, "SELECT count(DISTINCT claimed_by) FROM tasks WHERE job_id = %s", job_id)[0][0]
    assert workers_seen >= 2, "both processes took part"


def test_sigkilled_worker_task_is_taken_back_and_job_completes(
    runtime: Runtime, drill_settings: Settings, spawn: list[subprocess.Popen[bytes]]
) -> None:
    job_id = runtime.engine.submit("drill_fail_fast", {"n": 3, "sleep_ms": 1500}).job.job_id
    victim = start_worker(spawn, drill_settings, concurrency=1)
    wait_for(lambda: rows(runtime, "SELECT count(*) FROM tasks WHERE job_id = %s AND status = 'running'",
                          job_id)[0][0] > 0, 60, "a task to be running")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    (killed_task,) = rows(runtime, "SELECT task_id FROM tasks WHERE job_id = %s AND status = 'running'", job_id)
    job = run_to_end(runtime, job_id, timeout=90)
    assert job.status is JobStatus.COMPLETED
    attempt, errors = rows(runtime, "SELECT attempt, errors FROM tasks WHERE task_id = %s", killed_task[0])[0]
    assert attempt == 2
    assert [e["type"] for e in errors] == ["LeaseExpired"]
    assert all(status == "completed" for _, _, status, _, _, _ in task_rows(runtime, job_id))


def test_unknown_task_type_is_dead_lettered_then_replayed(runtime: Runtime, drill_settings: Settings) -> None:
    regs = runtime.registries
    old_build = Registries(regs.jobs, regs.tasks.without("hello.reply"))
    with build_runtime(drill_settings, registries=old_build, worker_id="old-build") as old:
        job_id = old.engine.submit("hello_world", {"n": 3}).job.job_id
        selector = DeadLetterSelector(job_id=job_id)
        worker = old.worker(concurrency=1, wait_seconds=0.2)
        assert worker.run_until(lambda: len(old.transport.list_dead_letters(selector)) == 3, timeout=30)
        dead = old.transport.list_dead_letters(selector)
        assert {d.reason for d in dead} == {"UnknownTaskType"} and {d.queue for d in dead} == {"tasks"}
        snapshot = old.engine.status(job_id)
        assert snapshot is not None and snapshot.job.status is JobStatus.PROCESSING
        from core.diagnosis import explain

        assert any("UnknownTaskType" in line for line in explain(snapshot, dead))
    replayed = runtime.transport.replay_dead_letters(DeadLetterSelector(task_type="hello.reply"))
    assert len(replayed) == 3
    assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
    assert runtime.transport.list_dead_letters(DeadLetterSelector(job_id=job_id)) == []


class _CrashingStore:
    """A store whose claim raises for one task id: the engine crashes on that message every delivery."""

    def __init__(self, inner: object, poison_task_suffix: str) -> None:
        self._inner = inner
        self._suffix = poison_task_suffix

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def claim_tasks(self, task_ids: list[str], worker_id: str, lease_seconds: float | None = None) -> object:
        if any(t.endswith(self._suffix) for t in task_ids):
            raise RuntimeError("engine bug: crashed while claiming")
        return self._inner.claim_tasks(task_ids, worker_id, lease_seconds)  # type: ignore[attr-defined]


def test_repeatedly_crashing_message_is_dead_lettered_after_max_deliveries(drill_settings: Settings) -> None:
    settings = drill_settings.model_copy(update={"max_deliveries": 3, "lock_seconds": 1.0})
    with build_runtime(settings) as rt:
        job_id = rt.engine.submit("hello_world", {"n": 2}).job.job_id
        crashing = CoreMachine(_CrashingStore(rt.store, "-s1-t1"), rt.relay,  # type: ignore[arg-type]
                               rt.registries.jobs, rt.registries.tasks, "crashy")
        from core.worker import Worker, WorkerConfig

        worker = Worker(crashing, rt.transport, WorkerConfig(concurrency=1, max_batch=1, wait_seconds=0.2))
        selector = DeadLetterSelector(job_id=job_id)
        assert worker.run_until(lambda: bool(rt.transport.list_dead_letters(selector)), timeout=30)
        (dead,) = rt.transport.list_dead_letters(selector)
        assert dead.reason == "MaxDeliveryCountExceeded" and dead.delivery_count == 3
        assert dead.body["task_id"].endswith("-s1-t1")
        rt.transport.replay_dead_letters(DeadLetterSelector(ids=(dead.id,)))
        assert run_to_end(rt, job_id).status is JobStatus.COMPLETED


def test_malformed_message_is_dead_lettered(runtime: Runtime) -> None:
    from core.models import OutgoingMessage

    runtime.transport.send([OutgoingMessage("tasks", "garbage-1", {"kind": "task", "job_id": "not-a-job"})])
    runtime.transport.send([OutgoingMessage("jobs", "garbage-2", {"hello": "world"})])
    worker = runtime.worker(concurrency=1, wait_seconds=0.2)
    assert worker.run_until(lambda: len(runtime.transport.list_dead_letters(DeadLetterSelector())) == 2, timeout=20)
    assert {d.reason for d in runtime.transport.list_dead_letters(DeadLetterSelector())} == {"MalformedMessage"}
