"""The Service Bus queue triggers (job and task messages) and the janitor timer, as one v2-model Blueprint.

The host receives in peek-lock mode and settles: it completes the message when the function returns and abandons
it when the function raises (Python cannot settle explicitly). So each disposition of the engine maps to:
- COMPLETE: return. (SETTLED, completed by the store's own commit, needs a queue in the store's database: not
  Service Bus; it would also just return.)
- DEAD_LETTER (malformed message, unknown task type): the transport parks the message in PostgreSQL's
  `dead_letters` table, where `Transport.list/replay/purge_dead_letters` see it next to the Service Bus DLQ;
  then return, so the host completes it.
- ABANDON, or an unexpected exception: raise, so the host abandons; after MaxDeliveryCount the queue itself
  dead-letters the message (`MaxDeliveryCountExceeded`).
Retries are scheduled messages written to the outbox by the engine; the relay is flushed before returning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import azure.functions as func

from core.models import JOBS_QUEUE, TASKS_QUEUE, ReceivedMessage
from core.settlement import Disposition, Settlement
from infrastructure.servicebus.mapping import decode_properties
from infrastructure.servicebus.transport import HOST_LOCK_PREFIX
from triggers.azure_runtime import get_runtime, outage_budget_seconds
from triggers.outage import OutageBackoff
from triggers.runtime import Runtime

log = logging.getLogger("coremachine.triggers")

DEFAULT_JANITOR_SCHEDULE = "0 */1 * * * *"
JANITOR_SCHEDULE = "%JANITOR_SCHEDULE%" if os.environ.get("JANITOR_SCHEDULE") else DEFAULT_JANITOR_SCHEDULE

Handler = Callable[[Sequence[ReceivedMessage]], list[Settlement]]

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class MessageAbandoned(RuntimeError):
    """Raised so the Functions host abandons the message and Service Bus redelivers it."""


def to_received(msg: func.ServiceBusMessage, queue: str) -> tuple[ReceivedMessage, str | None]:
    """Our message from the host's, and why its body is unusable (None if it is a JSON object)."""
    problem: str | None = None
    try:
        body: Any = json.loads(msg.get_body())
        if not isinstance(body, dict):
            problem, body = f"body is JSON {type(body).__name__}, not an object", {"value": body}
    except (ValueError, UnicodeDecodeError) as exc:
        problem, body = f"body is not JSON: {exc}", {"raw": msg.get_body()[:2000].decode("utf-8", "replace")}
    properties = decode_properties(msg.application_properties)
    attempt = properties.get("attempt")
    delivery_count = msg.delivery_count or (attempt if isinstance(attempt, int) else 1)
    received = ReceivedMessage(
        queue=queue,
        message_id=msg.message_id or "",
        body=body,
        properties=properties,
        delivery_count=int(delivery_count),
        lock_token=f"{HOST_LOCK_PREFIX}{msg.lock_token or msg.message_id}",
        enqueued_at=msg.enqueued_time_utc,
    )
    return received, problem


def handle(runtime: Runtime, msg: func.ServiceBusMessage, queue: str, handler: Handler) -> Disposition:
    """Run one host-delivered message through the engine; raises `MessageAbandoned` to have it redelivered."""
    received, problem = to_received(msg, queue)
    extra = {"message_id": received.message_id, "queue": queue, "delivery_count": received.delivery_count}
    try:
        if problem is not None:
            runtime.transport.dead_letter(received, "MalformedMessage", problem)
            log.warning("malformed message parked as a dead letter", extra=extra)
            return Disposition.DEAD_LETTER
        [settlement] = handler([received])
        if settlement.disposition is Disposition.DEAD_LETTER:
            runtime.transport.dead_letter(received, settlement.reason, settlement.description)
            log.warning("message parked as a dead letter: %s", settlement.reason, extra=extra)
        elif settlement.disposition is Disposition.ABANDON:
            raise MessageAbandoned(f"the engine abandoned {received.message_id}")
        return settlement.disposition
    finally:
        try:
            runtime.relay.flush()
        except Exception:
            log.exception("relay flush failed; the janitor relays the stranded outbox rows", extra=extra)


def _backoff(budget_seconds: float) -> OutageBackoff:
    return OutageBackoff(budget_seconds=budget_seconds)


backoff_factory: Callable[[float], OutageBackoff] = _backoff
"""How triggers wait out an outage; tests give it a fake clock and sleep."""


def handle_riding_out_outages(msg: func.ServiceBusMessage, queue: str) -> Disposition:
    """`handle` on the process's runtime; a database or transport outage is waited out inside the invocation
    (see `triggers.outage`) instead of abandoning at once, which would spend a delivery per attempt."""
    runtime: Runtime | None = None

    def attempt() -> Disposition:
        nonlocal runtime
        runtime = runtime or get_runtime()
        engine = runtime.engine
        return handle(runtime, msg, queue, engine.handle_job_messages if queue == JOBS_QUEUE
                      else engine.handle_task_messages)

    budget = outage_budget_seconds()
    extra: dict[str, object] = {"message_id": msg.message_id or "", "queue": queue}
    return backoff_factory(budget).run(attempt, extra)


@bp.function_name("process_job_message")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="ServiceBusConnection")
def process_job_message(msg: func.ServiceBusMessage) -> None:
    handle_riding_out_outages(msg, JOBS_QUEUE)


@bp.function_name("process_task_message")
@bp.service_bus_queue_trigger(arg_name="msg", queue_name="%TASKS_QUEUE%", connection="ServiceBusConnection")
def process_task_message(msg: func.ServiceBusMessage) -> None:
    handle_riding_out_outages(msg, TASKS_QUEUE)


@bp.function_name("janitor")
@bp.timer_trigger(arg_name="timer", schedule=JANITOR_SCHEDULE, run_on_startup=False, use_monitor=True)
def janitor(timer: func.TimerRequest) -> None:
    report = get_runtime().janitor.run_once()
    log.info("janitor pass", extra={"report": report.as_dict(), "past_due": bool(timer.past_due)})
