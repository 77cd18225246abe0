"""Log context: fields such as job_id, stage and task_id bound for the duration of a block.

The engine binds context here; the JSON log formatter in infrastructure reads it. Context variables make it
safe across worker threads.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_FIELDS: ContextVar[dict[str, Any]] = ContextVar("coremachine_log_fields", default={})  # noqa: B039


def current() -> dict[str, Any]:
    return dict(_FIELDS.get())


class bind:  # noqa: N801 - used as a function: `with logcontext.bind(job_id=...):`
    """Bind these fields (None values left out) while the block runs. A class, not a generator: it is entered
    for every task attempt."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        merged = {**_FIELDS.get(), **{k: v for k, v in self._fields.items() if v is not None}}
        self._token = _FIELDS.set(merged)

    def __exit__(self, *exc: object) -> None:
        _FIELDS.reset(self._token)
