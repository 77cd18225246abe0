"""OpenTelemetry: the `core.tracing.Telemetry` port on the opentelemetry API (spans, W3C context, metrics).

Providers are passed in (tests give in-memory ones) or taken from the process's global ones (set once by
`infrastructure.telemetry.setup`). Context travels with the W3C Trace Context propagator, so a `traceparent`
written into a message by one process is continued by whichever process receives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation
from opentelemetry.trace import Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.tracing import Attributes

INSTRUMENTATION = "coremachine"
_PROPAGATOR = TraceContextTextMapPropagator()
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Span:
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def record_error(self, exc: BaseException) -> None:
        self._span.record_exception(exc)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


class OpenTelemetry:
    """Spans from one tracer, counters and duration histograms from one meter, created on first use."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
    ) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        self._meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    @contextmanager
    def span(self, name: str, attributes: Attributes, parent: Mapping[str, Any] | None = None) -> Iterator[_Span]:
        context = _PROPAGATOR.extract(dict(parent)) if parent else None
        # Exceptions are recorded by the caller (`record_error`) where it knows they matter; one that escapes
        # the block is recorded here as well.
        with self._tracer.start_as_current_span(name, context=context, attributes=dict(attributes)) as span:
            yield _Span(span)

    def carrier(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier

    def count(self, name: str, value: int = 1, attributes: Attributes | None = None) -> None:
        with self._lock:
            counter = self._counters.get(name)
            if counter is None:
                counter = self._counters[name] = self._meter.create_counter(name, unit="1")
        counter.add(value, dict(attributes or {}))

    def record(self, name: str, value: float, attributes: Attributes | None = None) -> None:
        with self._lock:
            histogram = self._histograms.get(name)
            if histogram is None:
                histogram = self._histograms[name] = self._meter.create_histogram(
                    name, unit="s", explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS)
                )
        histogram.record(value, dict(attributes or {}))

    def observe_queue_depth(self, depths: Callable[[], Mapping[str, int]]) -> None:
        """`coremachine.queue.depth` by queue: messages ready or in flight, read when metrics are collected."""

        def observe(options: CallbackOptions) -> list[Observation]:
            return [Observation(count, {"queue": queue}) for queue, count in depths().items()]

        self._meter.create_observable_gauge("coremachine.queue.depth", callbacks=[observe], unit="1")
