"""How many received messages one worker thread takes: enough fast ones to share a commit, one slow one alone.

Each kind of message (a task type, or a job message kind) has a running estimate of its duration. A thread
runs the longest prefix of what it received whose estimated time fits the batch budget — always at least
one message, and at most the thread's most tasks (a message of several tasks counts as that many) — and hands
the rest straight back, unclaimed, for other threads and processes. A kind never seen before counts as slow: its
message runs alone until its first timing is known. A message of several tasks of a kind known to be slow is split
into one message per task instead of run (`too_slow`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from core.models import ReceivedMessage

SMOOTHING = 0.3


def message_kind(message: ReceivedMessage) -> str:
    body = message.body
    if not isinstance(body, dict):
        return "(malformed)"
    return str(body.get("task_type") or body.get("kind") or "(malformed)")


def message_weight(message: ReceivedMessage) -> int:
    """How many tasks the message carries (a wide stage's messages carry several: `core.messages`)."""
    body = message.body
    count = body.get("count") if isinstance(body, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1


def weighted_kinds(messages: Iterable[ReceivedMessage]) -> list[str]:
    """Each message's kind once per task it carries: what `DurationEstimates.observe` charges."""
    return [kind for m in messages for kind in [message_kind(m)] * message_weight(m)]


class DurationEstimates:
    """Exponentially weighted mean seconds per message kind; shared by a worker's threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {"(malformed)": 0.0}
        self._lock = threading.Lock()

    def get(self, kind: str) -> float | None:
        with self._lock:
            return self._seconds.get(kind)

    def observe(self, kinds: Iterable[str], elapsed: float) -> None:
        """A batch of these kinds took `elapsed` seconds; each is charged an equal share."""
        kinds = list(kinds)
        if not kinds:
            return
        share = elapsed / len(kinds)
        with self._lock:
            for kind in kinds:
                old = self._seconds.get(kind)
                self._seconds[kind] = share if old is None else old + SMOOTHING * (share - old)

    def split(
        self, messages: Sequence[ReceivedMessage], budget_seconds: float, max_tasks: int | None = None
    ) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
        """(run now, hand back): the longest prefix whose estimated time fits the budget and which carries at most
        `max_tasks` tasks, never empty."""
        take: list[ReceivedMessage] = []
        total = 0.0
        tasks = 0
        for message in messages:
            estimate = self.get(message_kind(message))
            if estimate is None:
                if not take:
                    take.append(message)
                break
            weight = message_weight(message)
            estimate *= weight
            if take and (total + estimate > budget_seconds or (max_tasks is not None and tasks + weight > max_tasks)):
                break
            take.append(message)
            total += estimate
            tasks += weight
        return take, list(messages[len(take):])

    def too_slow(
        self, messages: Sequence[ReceivedMessage], split_seconds: float
    ) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
        """(run, split): the messages of several tasks to split into one message per task are those delivered
        again (a poison task then fails alone) and those whose kind is known to be slow: its estimate times their
        tasks exceeds `split_seconds`. Slow tasks then spread over every thread, and a stage's last message holds
        its tasks up for about that long at most. A kind with no timing yet runs whole: that batch times it."""
        run: list[ReceivedMessage] = []
        split: list[ReceivedMessage] = []
        for message in messages:
            weight = message_weight(message)
            estimate = self.get(message_kind(message))
            slow = weight > 1 and (message.delivery_count > 1
                                   or (estimate is not None and estimate * weight > split_seconds))
            (split if slow else run).append(message)
        return run, split

    def batch_size(
        self, kind: str, budget_seconds: float, max_batch: int, weight: int = 1, max_messages: int | None = None
    ) -> int:
        """How many messages of this kind, of `weight` tasks each, to ask for next time: at most `max_batch` tasks
        and `max_messages` messages (each held under a lock until it is settled)."""
        estimate = self.get(kind)
        if estimate is None:
            return 1
        messages = max(1, min(max_batch, int(budget_seconds / max(estimate, 1e-4))) // weight)
        return messages if max_messages is None else min(messages, max_messages)
