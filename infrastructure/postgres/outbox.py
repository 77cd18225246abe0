"""Bulk writes of one PostgreSQL unit of work: its timeline events and outgoing messages, and a new stage's rows.

A unit of work writes events and messages but never reads them back, so they wait in `PendingWrites` and go out
as one multi-row statement per kind right before the commit: a small job's units of work then cost one statement
for all their events and one for all their messages, instead of one per call. A new stage's task rows and
messages go in with one `INSERT ... SELECT FROM unnest(...)` while the stage is small and by COPY beyond
(`COPY_THRESHOLD`, measured: up to about 16 rows both cost the same CPU and the INSERT saves the COPY protocol's
extra round trips; from about 100 rows COPY costs a third less, client and server). A COPY of more than one
chunk (`_COPY_CHUNK` lines) hands its text to a writer thread, so building the next lines overlaps the server
taking in the previous ones (the queued text is at most the stage's own COPY text, smaller than the plan the
caller already holds); a COPY of one chunk is written directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter, QueuedLibpqWriter, Writer
from psycopg.types.json import Jsonb

from core.ids import task_id_for
from core.models import JSON, OutgoingMessage, ReceivedMessage, StagePlan
from infrastructure.postgres.queue import acknowledge_params, lost_locks, send_params
from infrastructure.postgres.sql_queries import query

COPY_THRESHOLD = 32
"""Rows from which a new stage's tasks and messages are written by COPY rather than one multi-row INSERT."""
_COPY_CHUNK = 1_000
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


@dataclass(frozen=True, slots=True)
class _Event:
    job_id: str
    kind: str
    stage: int | None
    task_id: str | None
    detail: JSON
    if_job_exists: bool


class PendingWrites:
    """The events and messages of one unit of work, in call order, until `flush` writes them."""

    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._events: list[_Event] = []
        self._messages: list[OutgoingMessage] = []
        self._acknowledged: list[ReceivedMessage] = []

    def event(
        self, job_id: str, kind: str, detail: JSON, stage: int | None, task_id: str | None, *, if_job_exists: bool
    ) -> None:
        self._events.append(_Event(job_id, kind, stage, task_id, detail, if_job_exists))

    def send(self, cur: psycopg.Cursor[Any], messages: Sequence[OutgoingMessage], *, fresh: bool) -> None:
        """Buffer the messages; a large batch of fresh ones (ids never sent, none delayed) is copied at once."""
        if fresh and len(messages) >= COPY_THRESHOLD:
            copy_messages(cur, messages)
        else:
            self._messages.extend(messages)

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> None:
        self._acknowledged.extend(messages)

    def flush(self, cur: psycopg.Cursor[Any]) -> None:
        """Write what is pending: one statement for the events, one for the messages (the queue's own send, so
        duplicate detection and the wake-up notification are those of any sender), then one settling the received
        messages acknowledged. They go out in one pipeline: one round trip, since nothing waits for their answers
        (the settled count is read once the pipeline is done: the last statement's)."""
        statements: list[tuple[sql.SQL, dict[str, Any]]] = []
        if self._events:
            events, self._events = self._events, []
            statements.append((query("insert_events"), {"events": Jsonb([
                {"job_id": e.job_id, "kind": e.kind, "stage": e.stage, "task_id": e.task_id, "detail": e.detail,
                 "checked": e.if_job_exists}
                for e in events
            ])}))
        if self._messages:
            messages, self._messages = self._messages, []
            statements.append((query("queue_send"), send_params(messages, self._window)))
        acknowledged, self._acknowledged = self._acknowledged, []
        if acknowledged:
            statements.append((query("queue_acknowledge"), acknowledge_params(acknowledged)))
        if len(statements) > 1:
            with cur.connection.pipeline():
                for statement, params in statements:
                    cur.execute(statement, params)
        elif statements:
            cur.execute(*statements[0])
        if acknowledged:
            lost_locks(len(acknowledged), cur.rowcount)


def copy_messages(cur: psycopg.Cursor[Any], messages: Sequence[OutgoingMessage]) -> None:
    """COPY in text format, the lines built in bulk. A stage's messages mostly share their properties (job, stage,
    task type, trace), so each distinct properties object is serialised once."""
    dumps = json.dumps
    last_properties: dict[str, str | int] | None = None
    last_queue, properties_text, queue_text = "", "", ""
    with cur.copy(query("copy_messages"), writer=_writer(cur, len(messages))) as copy:
        lines: list[str] = []
        for m in messages:
            if m.properties is not last_properties and m.properties != last_properties:
                last_properties, properties_text = m.properties, copy_json(dumps(m.properties))
            if m.queue != last_queue:
                last_queue, queue_text = m.queue, copy_field(m.queue)
            lines.append(f"{queue_text}\t{copy_field(m.message_id)}\t{copy_json(dumps(m.body))}\t{properties_text}\n")
            if len(lines) == _COPY_CHUNK:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))


def insert_small_stages_tasks(cur: psycopg.Cursor[Any], plans: Sequence[StagePlan]) -> None:
    """The task rows of small new stages (each under `COPY_THRESHOLD` tasks), all in one INSERT."""
    rows = [(plan, index, spec) for plan in plans for index, spec in enumerate(plan.tasks)]
    cur.execute(query("insert_tasks"), {
        "task_ids": [task_id_for(p.job_id, p.stage, i) for p, i, _ in rows],
        "job_ids": [p.job_id for p, _, _ in rows], "stages": [p.stage for p, _, _ in rows],
        "idxs": [i for _, i, _ in rows], "task_types": [spec.task_type for _, _, spec in rows],
        "max_attempts": [p.max_attempts for p, _, _ in rows],
        "timeouts": [p.timeout_seconds for p, _, _ in rows],
        "parameters": Jsonb([spec.parameters for _, _, spec in rows]),
    })


def copy_tasks(cur: psycopg.Cursor[Any], plan: StagePlan) -> None:
    """A new large stage's task rows, by COPY."""
    job_id, stage, tasks = plan.job_id, plan.stage, plan.tasks
    max_attempts, timeout_seconds = plan.max_attempts, plan.timeout_seconds
    dumps = json.dumps
    fixed = f"\t{copy_field(job_id)}\t{stage}\t"
    limits = f"\t{max_attempts}\t{float(timeout_seconds)!r}\n"
    last_type, type_text = "", ""
    with cur.copy(query("copy_tasks"), writer=_writer(cur, len(tasks))) as copy:
        lines: list[str] = []
        for index, spec in enumerate(tasks):
            if spec.task_type != last_type:
                last_type, type_text = spec.task_type, copy_field(spec.task_type)
            lines.append(f"{copy_field(task_id_for(job_id, stage, index))}{fixed}{index}\t{type_text}"
                         f"\t{copy_json(dumps(spec.parameters))}{limits}")
            if len(lines) == _COPY_CHUNK:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))


def _writer(cur: psycopg.Cursor[Any], lines: int) -> Writer:
    """More than one chunk: a writer thread sends each chunk while the next is built, so the server works while
    the client does. One chunk: the plain writer, which spares the thread and its two hand-offs."""
    return QueuedLibpqWriter(cur) if lines > _COPY_CHUNK else LibpqWriter(cur)


def copy_json(text: str) -> str:
    """`json.dumps` output as a COPY text field: it escapes every control character itself (`ensure_ascii`), so
    only its backslashes need doubling."""
    return text.replace("\\", "\\\\") if "\\" in text else text


def copy_field(value: str) -> str:
    """`value` as a field of COPY's text format: backslash, tab, newline and carriage return escaped."""
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
