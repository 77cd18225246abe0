"""Dead letters of the Service Bus transport: its DLQ subqueues and the PostgreSQL-parked ones, seen as one list.

Ids say where a dead letter lives: `pg:<row id>` for a row of PostgreSQL's `dead_letters` table (parked there by
a Functions trigger, which cannot dead-letter a message itself), `sb:<queue>:<sequence number>` for a message in
a queue's `$DeadLetterQueue`. Listing orders parked rows first (by id), then Service Bus dead letters by
(sequence number, queue); `after` is a position in that order.

Replay and purge work page by page and hold nothing across pages. Service Bus: receive a page of the DLQ in
peek-lock mode, settle the selected messages (replay first sends a NEW message under `replay_message_id` with
`replay_count` + 1, then completes the DLQ copy) and defer the others, so the next page reaches further and no
lock is held while it does; deferred dead letters are listed as before and a later replay or purge fetches the
selected ones by sequence number. Parked rows: read a page (no lock), send it with no transaction open, delete
it. A crash between send and settle duplicates the message under the same replay id, which duplicate detection
drops; handlers are idempotent anyway.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from azure.servicebus import ServiceBusMessageState
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.ids import replay_message_id
from core.models import DeadLetter, DeadLetterSelector, OutgoingMessage, ReceivedMessage
from infrastructure.postgres.queue import ConnectionSource, dead_letter_from_row, translated
from infrastructure.postgres.sql_queries import query
from infrastructure.servicebus.mapping import (
    decode_body,
    decode_properties,
    replay_count_of,
    to_servicebus_message,
)
from infrastructure.servicebus.mapping import translated as sb_translated

if TYPE_CHECKING:
    from infrastructure.servicebus.transport import ServiceBusTransport

log = logging.getLogger(__name__)

_PAGE = 250
Key = tuple[int, int, str]


def _selector_params(selector: DeadLetterSelector, ids: list[int] | None) -> dict[str, Any]:
    return {
        "queue": selector.queue,
        "ids": ids,
        "job_id": selector.job_id,
        "task_type": selector.task_type,
        "reason": selector.reason,
    }


def _split_ids(selector: DeadLetterSelector) -> tuple[list[int] | None, set[tuple[str, int]] | None]:
    """The selector's ids for each source; None means "no id filter", an empty collection means "none"."""
    if not selector.ids:
        return None, None
    parked: list[int] = []
    queued: set[tuple[str, int]] = set()
    for value in selector.ids:
        key = parse_id(value)
        if key is None:
            continue
        if key[0] == 0:
            parked.append(key[1])
        else:
            queued.add((key[2], key[1]))
    return parked, queued


def parse_id(value: str) -> Key | None:
    """The sort key of a dead-letter id, or None if it is not one."""
    parts = value.split(":")
    if len(parts) == 2 and parts[0] == "pg" and parts[1].isdecimal():
        return (0, int(parts[1]), "")
    if len(parts) == 3 and parts[0] == "sb" and parts[1] and parts[2].isdecimal():
        return (1, int(parts[2]), parts[1])
    return None


def _matches(dead: DeadLetter, selector: DeadLetterSelector) -> bool:
    return (
        (selector.queue is None or dead.queue == selector.queue)
        and (selector.job_id is None or dead.properties.get("job_id") == selector.job_id)
        and (selector.task_type is None or dead.properties.get("task_type") == selector.task_type)
        and (selector.reason is None or dead.reason == selector.reason)
    )


class ParkedDeadLetters:
    """PostgreSQL's `dead_letters` table as the parking place of the Service Bus transport (row ids `pg:<id>`)."""

    def __init__(self, pool: ConnectionSource) -> None:
        self._pool = pool

    def park(self, message: ReceivedMessage, reason: str, description: str) -> None:
        replay = message.properties.get("replay_count", 0)
        params = {
            "queue": message.queue,
            "message_id": message.message_id,
            "body": Jsonb(message.body),
            "properties": Jsonb(message.properties),
            "reason": reason,
            "description": description[:4000],
            "delivery_count": message.delivery_count,
            "enqueued_at": message.enqueued_at,
            "replay_count": replay if isinstance(replay, int) else int(replay) if replay.isdecimal() else 0,
        }
        with translated("park dead letter"), self._pool.connection() as conn, conn.transaction():
            conn.execute(query("dead_letter_park"), params)
        log.warning("parked dead letter %s of %s in PostgreSQL: %s", message.message_id, message.queue, reason)

    def page(self, selector: DeadLetterSelector, ids: list[int] | None, after: int, limit: int) -> list[DeadLetter]:
        if ids is not None and not ids:
            return []
        params = {**_selector_params(selector, ids), "after": after, "upto": None, "limit": limit}
        with translated("list parked dead letters"), self._pool.connection() as conn, conn.transaction():
            rows = conn.cursor(row_factory=dict_row).execute(query("queue_list_dead_letters"), params).fetchall()
        return [_renamed(dead_letter_from_row(row)) for row in rows]

    def take(
        self, selector: DeadLetterSelector, ids: list[int] | None, send: Callable[[list[DeadLetter]], None] | None
    ) -> list[DeadLetter]:
        """Page by page: read selected rows (no lock), hand them to `send` (None: purge) with no transaction
        open, delete them. Rows dead-lettered after the call started are left for the next one."""
        if ids is not None and not ids:
            return []
        with translated("take parked dead letters"), self._pool.connection() as conn, conn.transaction():
            high_water = conn.execute(query("queue_dead_letters_high_water")).fetchone()
        taken: list[DeadLetter] = []
        after = 0
        while True:
            params = {**_selector_params(selector, ids), "after": after, "upto": high_water[0] if high_water else 0,
                      "limit": _PAGE}
            with translated("take parked dead letters"), self._pool.connection() as conn, conn.transaction():
                rows = conn.cursor(row_factory=dict_row).execute(query("queue_list_dead_letters"), params).fetchall()
            page = [dead_letter_from_row(row) for row in rows]
            if not page:
                return taken
            after = int(page[-1].id)
            if send is not None:
                send([_renamed(d) for d in page])
            with translated("delete parked dead letters"), self._pool.connection() as conn, conn.transaction():
                deleted = {r[0] for r in conn.execute(query("parked_delete"), {"ids": [int(d.id) for d in page]})}
            taken += [_renamed(d) for d in page if int(d.id) in deleted]

    def purge_settled(self, older_than_seconds: float) -> int:
        with translated("purge settled outbox rows"), self._pool.connection() as conn, conn.transaction():
            cur = conn.execute(query("queue_purge_settled"), {"older_than_seconds": older_than_seconds})
        return cur.rowcount


def _renamed(dead: DeadLetter) -> DeadLetter:
    return replace(dead, id=f"pg:{dead.id}")


def _replayed(dead: DeadLetter) -> OutgoingMessage:
    count = dead.replay_count + 1
    return OutgoingMessage(
        queue=dead.queue,
        message_id=replay_message_id(dead.message_id, count),
        body=dead.body,
        properties={**dead.properties, "replay_count": count},
    )


class DeadLetterBrowser:
    """list/get/replay/purge over the parked rows and every queue's Service Bus DLQ."""

    def __init__(self, transport: ServiceBusTransport, parked: ParkedDeadLetters | None, scan_limit: int) -> None:
        self._transport = transport
        self._parked = parked
        self._scan_limit = scan_limit
        self._deferred: defaultdict[str, set[int]] = defaultdict(set)
        """Sequence numbers of dead letters set aside (deferred) by an earlier replay or purge, by queue."""

    def _queues(self, selector: DeadLetterSelector) -> list[str]:
        queues = self._transport.logical_queues
        return [q for q in queues if selector.queue is None or q == selector.queue]

    def _converted(self, queue: str, raw: Any) -> DeadLetter:
        try:
            body = decode_body(raw)
        except (ValueError, TypeError):
            body = {"undecodable": True}
        properties = decode_properties(raw.application_properties)
        return DeadLetter(
            id=f"sb:{queue}:{raw.sequence_number}",
            queue=queue,
            message_id=str(raw.message_id),
            body=body if isinstance(body, dict) else {"value": body},
            properties=properties,
            reason=str(raw.dead_letter_reason or ""),
            description=str(raw.dead_letter_error_description or ""),
            delivery_count=int(raw.delivery_count or 0) + 1,
            dead_lettered_at=raw.enqueued_time_utc,
            replay_count=replay_count_of(properties),
        )

    def _peek_all(self, queue: str) -> list[DeadLetter]:
        guarded = self._transport.receiver(queue, dead_letters=True)
        found: list[DeadLetter] = []
        next_seq = 0
        self._deferred[queue] = set()
        with guarded.lock, sb_translated(f"peek dead letters of {queue}"):
            while len(found) < self._scan_limit:
                page = guarded.get().peek_messages(max_message_count=_PAGE, sequence_number=next_seq)
                if not page:
                    break
                found.extend(self._converted(queue, m) for m in page)
                self._deferred[queue].update(
                    int(m.sequence_number) for m in page if getattr(m, "state", None) == ServiceBusMessageState.DEFERRED
                )
                next_seq = max(int(m.sequence_number) for m in page) + 1
        return found

    def _servicebus(self, selector: DeadLetterSelector) -> list[DeadLetter]:
        _, queued = _split_ids(selector)
        if queued is not None and not queued:
            return []
        selected = [
            d
            for queue in self._queues(selector)
            for d in self._peek_all(queue)
            if _matches(d, selector) and (queued is None or (d.queue, _seq(d)) in queued)
        ]
        return sorted(selected, key=lambda d: (_seq(d), d.queue))

    def listing(self, selector: DeadLetterSelector, limit: int, after: str | None) -> list[DeadLetter]:
        if limit < 1:
            return []
        start = parse_id(after) if after else None
        start = start or (0, 0, "")
        parked_ids, _ = _split_ids(selector)
        found: list[DeadLetter] = []
        if self._parked is not None and start[0] == 0:
            found = self._parked.page(selector, parked_ids, start[1], limit)
        if len(found) < limit:
            sb_after = start if start[0] == 1 else (1, -1, "")
            rest = [d for d in self._servicebus(selector) if (1, _seq(d), d.queue) > sb_after]
            found.extend(rest[: limit - len(found)])
        return found

    def get(self, dead_letter_id: str) -> DeadLetter | None:
        if parse_id(dead_letter_id) is None:
            return None
        found = self.listing(DeadLetterSelector(ids=(dead_letter_id,)), 1, None)
        return found[0] if found else None

    def replay(self, selector: DeadLetterSelector, dry_run: bool) -> list[DeadLetter]:
        parked_ids, _ = _split_ids(selector)
        if dry_run:
            return self.listing(selector, 1_000_000, None)
        done: list[DeadLetter] = []
        if self._parked is not None:
            done += self._parked.take(
                selector, parked_ids, lambda batch: self._transport.send([_replayed(d) for d in batch])
            )
        return done + self._settle_selected(selector, replay=True)

    def purge(self, selector: DeadLetterSelector) -> int:
        parked_ids, _ = _split_ids(selector)
        count = 0
        if self._parked is not None:
            count += len(self._parked.take(selector, parked_ids, None))
        return count + len(self._settle_selected(selector, replay=False))

    def _settle_selected(self, selector: DeadLetterSelector, replay: bool) -> list[DeadLetter]:
        selected = self._servicebus(selector)
        settled: list[DeadLetter] = []
        for queue in sorted({d.queue for d in selected}):
            wanted = {_seq(d): d for d in selected if d.queue == queue}
            deferred = sorted(seq for seq in wanted if seq in self._deferred[queue])
            guarded = self._transport.receiver(queue, dead_letters=True)
            with guarded.lock, sb_translated(f"settle dead letters of {queue}"):
                receiver = guarded.get()
                for start in range(0, len(deferred), _PAGE):
                    page = receiver.receive_deferred_messages(deferred[start : start + _PAGE])
                    settled += self._settle_page(queue, receiver, page, wanted, replay)
                self._deferred[queue].difference_update(deferred)
                remaining = set(wanted) - set(deferred)
                scanned = 0
                while remaining and scanned < self._scan_limit:
                    page = receiver.receive_messages(max_message_count=_PAGE, max_wait_time=1.0)
                    if not page:
                        break
                    scanned += len(page)
                    settled += self._settle_page(queue, receiver, page, wanted, replay)
                    remaining.difference_update(int(raw.sequence_number) for raw in page)
        return sorted(settled, key=lambda d: (_seq(d), d.queue))

    def _settle_page(
        self, queue: str, receiver: Any, page: list[Any], wanted: dict[int, DeadLetter], replay: bool
    ) -> list[DeadLetter]:
        """Settle one received page before the next is received: the selected ones are replayed (sent anew, one
        batch) and completed, the others deferred (kept in the DLQ, their locks released)."""
        chosen = [raw for raw in page if int(raw.sequence_number) in wanted]
        for raw in page:
            if int(raw.sequence_number) not in wanted:
                receiver.defer_message(raw)
                self._deferred[queue].add(int(raw.sequence_number))
        if replay and chosen:
            try:
                replays = [to_servicebus_message(_replayed(wanted[int(raw.sequence_number)])) for raw in chosen]
                self._transport.send_now(queue, replays)
            except BaseException:
                for raw in chosen:
                    receiver.abandon_message(raw)
                raise
        for raw in chosen:
            receiver.complete_message(raw)
        return [wanted[int(raw.sequence_number)] for raw in chosen]


def _seq(dead: DeadLetter) -> int:
    return int(dead.id.rsplit(":", 1)[1])
