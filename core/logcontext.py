"""Log context: fields such as job_id, stage and task_id bound for the duration of a block.

The engine binds context here; the JSON log formatter in infrastructure reads it. Context variables make it
safe across worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_FIELDS: ContextVar[dict[str, Any]] = ContextVar("coremachine_log_fields", default={})  # noqa: B039


def current() -> dict[str, Any]:
    return dict(_FIELDS.get())


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    merged = {**_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(merged)
    try:
        yield
    finally:
        _FIELDS.reset(token)
