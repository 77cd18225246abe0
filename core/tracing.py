"""Telemetry port: spans and metrics, and the trace context that travels inside queue messages.

`core/` knows no vendor. The engine opens spans (submit, stage start, each task attempt, finalize) and records
metrics through `Telemetry`; `NoTelemetry` is the default and does nothing. The OpenTelemetry adapter lives in
`infrastructure/telemetry/`.

A job's trace context (W3C `traceparent`, `tracestate`) travels as message properties: while the engine works
for a job it binds the job's context (`bound_traces`), and every message the store writes for that job in the
meantime is stamped with it (`with_trace`, called where messages are written). The next handler takes the
context from the message it receives and continues the same trace, so an HTTP submit and every stage, task and
finalize it causes share one trace, on either transport.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Protocol

TRACE_KEYS = ("traceparent", "tracestate")
Attributes = Mapping[str, str | int | float | bool]


class Span(Protocol):
    def set_attribute(self, key: str, value: str | int | float | bool) -> None: ...

    def record_error(self, exc: BaseException) -> None: ...


class Telemetry(Protocol):
    def span(
        self, name: str, attributes: Attributes, parent: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Span]:
        """A span, current while the block runs; `parent` is a carrier (message properties) to continue."""
        ...

    def carrier(self) -> dict[str, str]:
        """The current trace context as W3C headers (`traceparent`, maybe `tracestate`); {} when none."""
        ...

    def count(self, name: str, value: int = 1, attributes: Attributes | None = None) -> None: ...

    def record(self, name: str, value: float, attributes: Attributes | None = None) -> None:
        """One observation of a distribution (durations in seconds)."""
        ...


class _NoSpan:
    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        return None

    def record_error(self, exc: BaseException) -> None:
        return None


class NoTelemetry:
    """The default: no spans, no metrics, nothing stamped."""

    def span(
        self, name: str, attributes: Attributes, parent: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Span]:
        return nullcontext(_NoSpan())

    def carrier(self) -> dict[str, str]:
        return {}

    def count(self, name: str, value: int = 1, attributes: Attributes | None = None) -> None:
        return None

    def record(self, name: str, value: float, attributes: Attributes | None = None) -> None:
        return None


_NONE: Mapping[str, Mapping[str, str]] = MappingProxyType({})
_bound: ContextVar[Mapping[str, Mapping[str, str]]] = ContextVar("coremachine_job_traces", default=_NONE)


@contextmanager
def bound_traces(by_job: Mapping[str, Mapping[str, str]]) -> Iterator[None]:
    """While the block runs, messages written for these jobs carry these trace contexts (added to any bound
    by an enclosing block)."""
    wanted = {job: dict(carrier) for job, carrier in by_job.items() if carrier}
    if not wanted:  # nothing to stamp (telemetry off, no carrier received): no context change at all
        yield
        return
    token = _bound.set({**_bound.get(), **wanted})
    try:
        yield
    finally:
        _bound.reset(token)


def trace_of(job_id: str) -> Mapping[str, str] | None:
    return _bound.get().get(job_id)


def carrier_in(properties: Mapping[str, Any]) -> dict[str, str]:
    """The trace context carried by a received message's properties ({} if none)."""
    if "traceparent" not in properties and "tracestate" not in properties:
        return {}
    return {key: str(properties[key]) for key in TRACE_KEYS if isinstance(properties.get(key), str)}


def with_trace(properties: dict[str, str | int]) -> dict[str, str | int]:
    """`properties` stamped with the bound trace context of their `job_id`, unless they already carry one."""
    if "traceparent" in properties:
        return properties
    carrier = _bound.get().get(str(properties.get("job_id", "")))
    return {**properties, **carrier} if carrier else properties
