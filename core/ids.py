"""Deterministic ids: job ids from canonical JSON, task ids from position, message ids from both."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

MAX_MESSAGE_ID_LENGTH = 128
_JOB_ID = re.compile(r"[0-9a-f]{64}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def job_id_for(job_type: str, parameters: dict[str, Any]) -> str:
    """SHA-256 hex of canonical JSON {"job_type": T, "parameters": P}."""
    payload = canonical_json({"job_type": job_type, "parameters": parameters})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def is_job_id(value: str) -> bool:
    """64 lowercase hex digits (a SHA-256 hex digest), as the jobs table's CHECK says."""
    return _JOB_ID.fullmatch(value) is not None


def task_id_for(job_id: str, stage: int, index: int) -> str:
    return f"{job_id}-s{stage}-t{index}"


def bounded_message_id(message_id: str) -> str:
    """The id itself when it fits Service Bus's 128 characters, else a hash of it."""
    if len(message_id) <= MAX_MESSAGE_ID_LENGTH:
        return message_id
    return "h:" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()


def stage_message_id(job_id: str, stage: int) -> str:
    return bounded_message_id(f"j:{job_id}:s{stage}")


def finalize_message_id(job_id: str) -> str:
    return bounded_message_id(f"j:{job_id}:final")


def task_message_id(task_id: str, attempt: int) -> str:
    """One id per (task, attempt): a redelivery of one attempt is a duplicate, a retry is not."""
    return bounded_message_id(f"t:{task_id}:a{attempt}")


def round_message_id(message_id: str, round_number: int) -> str:
    """The id a message gets when it is sent again in retry round N (round 0 keeps the plain id)."""
    return message_id if round_number == 0 else bounded_message_id(f"{message_id}:x{round_number}")


_REPLAYED = re.compile(r":r[0-9]+$")


def replay_message_id(message_id: str, replay_count: int) -> str:
    """A replayed dead letter needs a fresh id, or duplicate detection would drop it silently. Only a trailing
    replay suffix is replaced: a message split from a replayed batch (`{batch}:r1/3`) keeps what tells it from its
    siblings."""
    return bounded_message_id(f"{_REPLAYED.sub('', message_id)}:r{replay_count}")
