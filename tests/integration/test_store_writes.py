"""How the PostgreSQL unit of work writes: events and messages together right before the commit, one statement per
kind; a new stage's rows by one INSERT while small and by COPY beyond, the same rows either way."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from core.ids import job_id_for, task_id_for
from core.models import (
    TASKS_QUEUE,
    ErrorClass,
    ErrorInfo,
    FailurePolicy,
    JobStatus,
    NewJob,
    OutcomeKind,
    OutgoingMessage,
    StagePlan,
    TaskOutcome,
    TaskSpec,
)
from core.uow import UnitOfWork
from infrastructure.postgres import outbox
from infrastructure.postgres.database import Database
from infrastructure.postgres.queue import PostgresQueue
from infrastructure.postgres.store import PostgresBackend, PostgresStore


def new_job(label: str, stages: int = 1, policy: FailurePolicy = FailurePolicy.CONTINUE) -> NewJob:
    parameters = {"label": label}
    return NewJob(job_id_for("writes_test", parameters), "writes_test", parameters, stages, policy)


def message(message_id: str, n: int) -> OutgoingMessage:
    return OutgoingMessage(queue="jobs", message_id=message_id, body={"n": n}, properties={"n": n})


@contextmanager
def counting(database: Database, statements: list[str]) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection whose cursors record the text of every statement they run."""

    class Recording(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            statements.append(query.as_string(None) if hasattr(query, "as_string") else str(query))
            return super().execute(query, params, **kwargs)

    with database.connection() as conn:
        previous = conn.cursor_factory
        conn.cursor_factory = Recording
        try:
            yield conn
        finally:
            conn.cursor_factory = previous


def test_events_and_messages_go_out_together_in_call_order(database: Database) -> None:
    statements: list[str] = []
    backend = PostgresBackend(lambda: counting(database, statements))
    job = new_job("together")

    def work(uow: UnitOfWork) -> None:
        assert uow.insert_job(job) is not None
        uow.event(job.job_id, "first", {"n": 1})
        uow.send([message("m-1", 1), message("m-2", 2)])
        uow.event_if_job_exists("f" * 64, "dropped", {"n": 0})  # no such job: nothing written
        uow.event_if_job_exists(job.job_id, "second", {"n": 2}, stage=1, task_id="t")
        uow.send([message("m-1", 99), message("m-3", 3)])  # the first message with an id wins
        uow.event(job.job_id, "third", {"n": 3})

    backend.transaction(work)
    # insert_job, then one statement for the three events and one for the four messages.
    assert len(statements) == 3
    with database.connection() as conn:
        events = conn.execute("SELECT kind, stage, task_id, detail FROM job_events ORDER BY id").fetchall()
        messages = conn.execute("SELECT message_id, body FROM queue_messages ORDER BY id").fetchall()
    assert events == [("first", None, None, {"n": 1}), ("second", 1, "t", {"n": 2}), ("third", None, None, {"n": 3})]
    assert messages == [("m-1", {"n": 1}), ("m-2", {"n": 2}), ("m-3", {"n": 3})]


def test_nothing_is_written_when_the_unit_of_work_fails(database: Database) -> None:
    backend = PostgresBackend(database.connection)
    job = new_job("fails")

    def work(uow: UnitOfWork) -> None:
        uow.insert_job(job)
        uow.event(job.job_id, "never", {})
        uow.send([message("never", 1)])
        raise RuntimeError("the decision failed")

    with pytest.raises(RuntimeError):
        backend.transaction(work)
    with database.connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_events),"
            " (SELECT count(*) FROM queue_messages)"
        ).fetchone()
    assert counts == (0, 0, 0)


def test_a_buffered_send_wakes_listeners_once_per_queue(database: Database, database_url: str) -> None:
    backend = PostgresBackend(database.connection)
    job = new_job("wakes")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN coremachine_queue")

        def work(uow: UnitOfWork) -> None:
            uow.insert_job(job)
            uow.send([message("w-1", 1)])
            uow.send([OutgoingMessage(queue="tasks", message_id="w-2", body={})])
            uow.send([message("w-3", 3)])

        backend.transaction(work)
        woken = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=2))
    assert woken == ["jobs", "tasks"]


def _stage_rows(database: Database, job_id: str) -> tuple[list[Any], list[Any]]:
    """The stage's task rows and task messages, with the job id taken out so two jobs compare."""
    with database.connection() as conn:
        tasks = conn.execute(
            "SELECT replace(task_id, %(j)s, 'J'), stage, idx, task_type, status, parameters, attempt, max_attempts,"
            " timeout_seconds, errors FROM tasks WHERE job_id = %(j)s ORDER BY idx", {"j": job_id},
        ).fetchall()
        messages = conn.execute(
            "SELECT queue, replace(message_id, %(j)s, 'J'), replace(body::text, %(j)s, 'J'),"
            " replace(properties::text, %(j)s, 'J'), state, delivery_count, available_at <= now()"
            " FROM queue_messages WHERE queue = 'tasks' AND body ->> 'job_id' = %(j)s ORDER BY id", {"j": job_id},
        ).fetchall()
    return tasks, messages


def test_a_small_stage_is_inserted_and_a_large_one_copied_to_the_same_rows(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(database.connection)
    specs = [TaskSpec("bench.noop", {"i": i, "text": "tab\there, \\ and \"quotes\" é"}) for i in range(5)]
    job_ids = []
    for label, threshold in (("inserted", 6), ("copied", 5)):
        monkeypatch.setattr(outbox, "COPY_THRESHOLD", threshold)
        job, created = store.create_job(new_job(label))
        assert created
        assert store.start_stage(StagePlan(job.job_id, 1, "only", specs, 3, 30.0))
        job_ids.append(job.job_id)
    inserted, copied = (_stage_rows(database, job_id) for job_id in job_ids)
    assert len(inserted[0]) == len(inserted[1]) == 5
    assert inserted == copied


def test_copied_messages_keep_every_character(database: Database) -> None:
    awkward = "tab\t newline\n return\r backslash\\ \\N é \u2028"
    messages = [
        OutgoingMessage(queue="jobs", message_id=f"{awkward}{i}", body={"text": awkward, "i": i},
                        properties={"p": awkward if i % 2 else "plain"})
        for i in range(4)
    ]
    with database.connection() as conn, conn.cursor() as cur:
        outbox.copy_messages(cur, messages)
    with database.connection() as conn:
        rows = conn.execute("SELECT queue, message_id, body, properties FROM queue_messages ORDER BY id").fetchall()
    assert rows == [(m.queue, m.message_id, m.body, m.properties) for m in messages]


def test_engine_made_keys_compare_byte_by_byte(database: Database) -> None:
    """Task ids, queue names and message ids use the "C" collation: cheap index comparisons, and SQL orders task
    ids as core sorts them (code points), so both take row locks in one order."""
    with database.connection() as conn:
        rows = conn.execute(
            "SELECT a.attrelid::regclass::text, a.attname, c.collname FROM pg_attribute a"
            " JOIN pg_collation c ON c.oid = a.attcollation"
            " WHERE (a.attrelid, a.attname) IN (('tasks'::regclass, 'task_id'), ('queue_messages'::regclass, 'queue'),"
            "                                   ('queue_messages'::regclass, 'message_id'))"
            " ORDER BY 1, 2"
        ).fetchall()
    assert rows == [("queue_messages", "message_id", "C"), ("queue_messages", "queue", "C"), ("tasks", "task_id", "C")]


def test_a_single_statement_unit_runs_one_statement_in_autocommit(database: Database) -> None:
    statements: list[str] = []
    backend = PostgresBackend(lambda: counting(database, statements))
    job, other = new_job("single"), new_job("second")

    assert backend.statement(lambda uow: uow.insert_job(job)) is not None
    assert len(statements) == 1

    def two(uow: UnitOfWork) -> None:
        uow.insert_job(other)
        uow.read_jobs([other.job_id])

    with pytest.raises(RuntimeError, match="second statement"):
        backend.statement(two)
    with pytest.raises(RuntimeError, match="events or messages"):
        backend.statement(lambda uow: uow.event(job.job_id, "never", {}))
    with pytest.raises(RuntimeError, match="events or messages"):
        backend.statement(lambda uow: uow.send([message("never", 1)]))
    with database.connection() as conn:
        jobs = conn.execute("SELECT job_id FROM jobs ORDER BY created_at").fetchall()
        counts = conn.execute("SELECT (SELECT count(*) FROM job_events), (SELECT count(*) FROM queue_messages)"
                              ).fetchone()
    # No transaction around the statement: the one that ran stays, whatever the unit did next.
    assert jobs == [(job.job_id,), (other.job_id,)]
    assert counts == (0, 0)


def updated_tables(statements: list[str]) -> list[str]:
    """The table each UPDATE statement updates (after its WITH clause, if any), in order."""
    return [match.group(1) for text in statements if (match := re.search(r"\bUPDATE (?!OF\b)(\w+)", text))]


def test_a_fail_fast_batch_takes_its_rows_in_the_lock_order(database: Database) -> None:
    """Tasks, then the stage counter, then the job row, then the settled task messages - here a failure that fails
    the job fast and completes its stage in one batch, which once moved the job row before the stage's."""
    statements: list[str] = []
    store = PostgresStore(lambda: counting(database, statements), holds_queue=True)
    job = new_job("fail fast", stages=2, policy=FailurePolicy.FAIL_FAST)
    store.create_job(job)
    assert store.start_stage(StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {"i": i}) for i in range(3)], 3, 10.0))
    claimed = sorted(store.claim_tasks([task_id_for(job.job_id, 1, i) for i in range(3)], "w"), key=lambda t: t.index)
    received = PostgresQueue(database, None).receive(TASKS_QUEUE, 3, 0)
    statements.clear()
    error = ErrorInfo("Boom", ErrorClass.PERMANENT, "boom", attempt=1)
    store.record_outcomes([TaskOutcome(claimed[0], OutcomeKind.FAILED, error=error),
                           *(TaskOutcome(t, OutcomeKind.COMPLETED, result={}) for t in claimed[1:])],
                          acknowledge=received)

    rank = {"tasks": 0, "stages": 1, "jobs": 2, "queue_messages": 3}
    updated = updated_tables(statements)
    assert [rank[table] for table in updated] == sorted(rank[table] for table in updated), updated
    assert updated[-2:] == ["jobs", "queue_messages"] and "stages" in updated
    with database.connection() as conn:
        settled = conn.execute("SELECT count(*) FROM queue_messages WHERE queue = %s AND state = 'done'",
                               [TASKS_QUEUE]).fetchone()
    assert settled == (3,)
    record = store.get_job(job.job_id)
    assert record is not None and record.status is JobStatus.FINALIZING and record.current_stage == 1


def test_a_batch_closing_several_jobs_stages_counts_and_completes_them_in_one_statement_each(
    database: Database,
) -> None:
    """The last tasks of three small jobs' first stages in one batch: one statement decrements the three counters,
    one completes the three stages, one advances the three job rows."""
    statements: list[str] = []
    store = PostgresStore(lambda: counting(database, statements))
    jobs = []
    for label in ("a", "b", "c"):
        job = new_job(label, stages=2)
        store.create_job(job)
        assert store.start_stage(StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {"i": i}) for i in range(2)], 3,
                                           10.0))
        jobs.append(job.job_id)
    claimed = store.claim_tasks([task_id_for(job_id, 1, i) for job_id in jobs for i in range(2)], "w")
    assert len(claimed) == 6
    statements.clear()
    store.record_outcomes([TaskOutcome(t, OutcomeKind.COMPLETED, result={"i": t.index}) for t in claimed])

    assert updated_tables(statements) == ["tasks", "stages", "stages", "jobs"]
    for job_id in jobs:
        record = store.get_job(job_id)
        assert record is not None and record.current_stage == 2, job_id


def test_a_batch_ending_several_jobs_reads_their_counters_once_and_moves_them_in_one_statement(
    database: Database,
) -> None:
    """Three one-stage jobs end in one batch: their stage counters are read by one statement and the three job
    rows move by one - to completed for a clean round of a job type that finishes inline, else to finalizing
    with the outcome (completed with errors after a failed task) and a finalize message."""
    statements: list[str] = []
    store = PostgresStore(lambda: counting(database, statements))
    inline = NewJob(job_id_for("inline_type", {}), "inline_type", {}, 1, FailurePolicy.CONTINUE)
    clean, failing = new_job("clean"), new_job("failing")
    for job in (inline, clean, failing):
        store.create_job(job)
        assert store.start_stage(StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {"i": i}) for i in range(2)], 1,
                                           10.0))
    claimed = store.claim_tasks([task_id_for(j.job_id, 1, i) for j in (inline, clean, failing) for i in range(2)],
                                "w")
    assert len(claimed) == 6
    error = ErrorInfo("Boom", ErrorClass.PERMANENT, "boom", attempt=1)
    outcomes = [TaskOutcome(t, OutcomeKind.FAILED, error=error) if t.job_id == failing.job_id and t.index == 0
                else TaskOutcome(t, OutcomeKind.COMPLETED, result={"i": t.index}) for t in claimed]
    statements.clear()
    store.record_outcomes(outcomes, frozenset({"inline_type"}))

    assert updated_tables(statements) == ["tasks", "tasks", "stages", "stages", "jobs"]
    assert sum(1 for text in statements if "FROM stages WHERE job_id = ANY" in text) == 1
    states = {j.job_id: store.get_job(j.job_id) for j in (inline, clean, failing)}
    assert {job_id: (r.status, r.outcome) for job_id, r in states.items() if r is not None} == {
        inline.job_id: (JobStatus.COMPLETED, JobStatus.COMPLETED),
        clean.job_id: (JobStatus.FINALIZING, JobStatus.COMPLETED),
        failing.job_id: (JobStatus.FINALIZING, JobStatus.COMPLETED_WITH_ERRORS),
    }
    record = states[inline.job_id]
    assert record is not None and record.result is not None and record.finished_at is not None
    with database.connection() as conn:
        finalizes = conn.execute("SELECT body ->> 'job_id' FROM queue_messages WHERE body ->> 'kind' = 'finalize'"
                                 " ORDER BY 1").fetchall()
    assert finalizes == sorted([(clean.job_id,), (failing.job_id,)])


def test_the_settlement_of_task_messages_rolls_back_with_the_outcomes_it_rides_in(database: Database) -> None:
    """The outcomes' transaction fails at COMMIT itself (a deferred constraint trigger refuses its timeline
    events), after the settlement was written: no message is settled, no task completed."""
    statements: list[str] = []
    store = PostgresStore(lambda: counting(database, statements), holds_queue=True)
    job = new_job("refused at commit")
    store.create_job(job)
    assert store.start_stage(StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {"i": i}) for i in range(2)], 3, 10.0))
    claimed = store.claim_tasks([task_id_for(job.job_id, 1, i) for i in range(2)], "w")
    received = PostgresQueue(database, None).receive(TASKS_QUEUE, 2, 0)
    assert len(claimed) == len(received) == 2
    with database.connection() as conn:
        conn.execute("CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql"
                     " AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
        conn.execute("CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON job_events"
                     " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()")

    statements.clear()
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        store.record_outcomes([TaskOutcome(t, OutcomeKind.COMPLETED, result={}) for t in claimed],
                              acknowledge=received)
    assert updated_tables(statements)[-1] == "queue_messages"  # the settlement went out before the COMMIT

    with database.connection() as conn:
        states = conn.execute("SELECT state, lock_token IS NOT NULL FROM queue_messages WHERE queue = %s",
                              [TASKS_QUEUE]).fetchall()
        tasks = conn.execute("SELECT status FROM tasks WHERE job_id = %s", [job.job_id]).fetchall()
    assert states == [("ready", True)] * 2
    assert tasks == [("running",)] * 2


def test_a_batch_that_fails_one_job_and_advances_another_moves_both_rows_in_one_statement(
    database: Database,
) -> None:
    """A fail-fast job's failure and another job's stage close in one batch: both job rows move in one statement
    (locked in job id order), not the closing job's first and the failing job's after it."""
    statements: list[str] = []
    store = PostgresStore(lambda: counting(database, statements))
    failing, advancing = new_job("fails", stages=2, policy=FailurePolicy.FAIL_FAST), new_job("advances", stages=2)
    for job in (failing, advancing):
        store.create_job(job)
        assert store.start_stage(StagePlan(job.job_id, 1, "s1", [TaskSpec("work", {"i": i}) for i in range(2)], 1,
                                           10.0))
    claimed = store.claim_tasks([task_id_for(j.job_id, 1, i) for j in (failing, advancing) for i in range(2)], "w")
    error = ErrorInfo("Boom", ErrorClass.PERMANENT, "boom", attempt=1)
    outcomes = [TaskOutcome(t, OutcomeKind.FAILED, error=error) if t.job_id == failing.job_id and t.index == 0
                else TaskOutcome(t, OutcomeKind.COMPLETED, result={}) for t in claimed]
    statements.clear()
    store.record_outcomes(outcomes)

    assert updated_tables(statements).count("jobs") == 1
    failed, advanced = store.get_job(failing.job_id), store.get_job(advancing.job_id)
    assert failed is not None and (failed.status, failed.outcome) == (JobStatus.FINALIZING, JobStatus.FAILED)
    assert failed.error is not None and failed.error["task_id"].endswith("-s1-t0")
    assert advanced is not None and advanced.status is JobStatus.PROCESSING and advanced.current_stage == 2
