"""One trace per job: the OpenTelemetry SDK's in-memory exporter and reader over real jobs on real PostgreSQL,
on the PostgreSQL queue and on the Service Bus transport (over the SDK fake, driven through the triggers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.models import JobStatus
from infrastructure.servicebus import transport as sb
from infrastructure.settings import Settings
from infrastructure.telemetry.otel import OpenTelemetry
from tests.fakes.servicebus_fake import FakeServiceBus
from tests.integration.engine_helpers import run_to_end
from tests.integration.test_servicebus_flow import QUEUES, HostSimulator
from triggers.azure_runtime import set_runtime
from triggers.runtime import build_runtime


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.adapter = OpenTelemetry(self.tracer_provider, self.meter_provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metric_points(self) -> dict[str, list[object]]:
        found: dict[str, list[object]] = {}
        data = self.metrics.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_job_is_one_trace_from_the_request_to_finalize(drill_settings: Settings, telemetry: Telemetry) -> None:
    with build_runtime(drill_settings, worker_id="traced", telemetry=telemetry.adapter) as runtime:
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("POST /api/jobs/hello_world") as request:  # what an HTTP layer opens
            job_id = runtime.engine.submit("hello_world", {"n": 3, "fail_attempts": 1}).job.job_id
        assert run_to_end(runtime, job_id).status is JobStatus.COMPLETED
        depths = {p.attributes["queue"]: p.value for p in telemetry.metric_points()["coremachine.queue.depth"]}  # type: ignore[attr-defined]
        assert depths == {"jobs": 0, "tasks": 0}

    spans = telemetry.finished()
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}, "every span of the job is in the request's trace"
    [submit] = by_name(spans, "coremachine.submit")
    assert submit.parent is not None and submit.parent.span_id == request.get_span_context().span_id
    assert dict(submit.attributes or {}) == {"job_id": job_id, "job_type": "hello_world", "created": True}
    stages = by_name(spans, "coremachine.stage")
    assert sorted(int((s.attributes or {})["stage"]) for s in stages) == [1, 2]  # type: ignore[arg-type]
    tasks = by_name(spans, "coremachine.task")
    assert len(tasks) == 12, "3 tasks x 2 stages x 2 attempts (the first fails)"
    for span in tasks:
        attributes = dict(span.attributes or {})
        assert set(attributes) >= {"job_id", "job_type", "stage", "task_id", "attempt"}
        assert attributes["job_id"] == job_id
    failed = [s for s in tasks if (s.attributes or {})["attempt"] == 1]
    assert len(failed) == 6 and all(not s.status.is_ok for s in failed)
    assert by_name(spans, "coremachine.finalize"), "finalize is traced"

    points = telemetry.metric_points()
    assert sum(p.value for p in points["coremachine.tasks.completed"]) == 6  # type: ignore[attr-defined]
    assert sum(p.value for p in points["coremachine.tasks.retried"]) == 6  # type: ignore[attr-defined]
    assert sum(p.count for p in points["coremachine.task.duration"]) == 12  # type: ignore[attr-defined]


def test_the_trace_crosses_service_bus_messages(
    drill_settings: Settings, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = FakeServiceBus(lock_seconds=30.0)
    monkeypatch.setattr(sb, "client_factory", lambda access: bus)
    monkeypatch.setattr(sb, "admin_factory", lambda access: bus)
    settings = drill_settings.model_copy(update={
        "transport": "servicebus",
        "servicebus_connection": "Endpoint=sb://fake.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x",
        "jobs_queue": QUEUES["jobs"], "tasks_queue": QUEUES["tasks"],
    })
    with build_runtime(settings, worker_id="traced-sb", telemetry=telemetry.adapter) as runtime:
        previous = set_runtime(runtime)
        try:
            job_id = runtime.engine.submit("hello_world", {"n": 2}).job.job_id
            bus.get_queue_sender(QUEUES["tasks"]).send_messages(ServiceBusMessage(b"{}", message_id="waiting"))
            depths = {p.attributes["queue"]: p.value for p in telemetry.metric_points()["coremachine.queue.depth"]}  # type: ignore[attr-defined]
            assert depths == {"jobs": 1, "tasks": 1}, "the stage-1 message and one unrelated task message wait"
            HostSimulator(bus).run_until(lambda: bool((job := runtime.store.get_job(job_id)) and job.status.terminal))
        finally:
            set_runtime(previous)

    spans = telemetry.finished()
    [submit] = by_name(spans, "coremachine.submit")
    assert {s.context.trace_id for s in spans} == {submit.context.trace_id}
    assert len(by_name(spans, "coremachine.task")) == 4 and by_name(spans, "coremachine.finalize")
