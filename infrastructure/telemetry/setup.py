"""Which telemetry a process gets: Application Insights on Azure, OTLP where an endpoint is set, else none.

- `APPLICATIONINSIGHTS_CONNECTION_STRING` set: `azure-monitor-opentelemetry` (imported only then) configures the
  process's OpenTelemetry providers with the Azure Monitor exporters; spans and metrics go to Application Insights.
- `OTEL_EXPORTER_OTLP_ENDPOINT` set: the OpenTelemetry SDK with OTLP/HTTP exporters (the endpoint and headers
  come from the standard `OTEL_EXPORTER_OTLP_*` variables), e.g. to a local Jaeger or collector.
- Neither: `NoTelemetry`.
OpenTelemetry's providers are process-global and can be set once, so the exporters are configured at most once
per process, whatever the number of runtimes built in it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from core.tracing import NoTelemetry, Telemetry

if TYPE_CHECKING:
    from infrastructure.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = "coremachine"
_lock = threading.Lock()
_configured: list[str] = []
"""The exporter this process's global providers were set up with (at most one entry)."""


def build_telemetry(settings: Settings) -> Telemetry:
    exporter = _exporter(settings)
    if exporter is None:
        return NoTelemetry()
    with _lock:
        if not _configured:
            _configure(exporter, settings)
            _configured.append(exporter)
        elif _configured[0] != exporter:
            log.warning("telemetry already exports to %s; %s ignored in this process", _configured[0], exporter)
    from infrastructure.telemetry.otel import OpenTelemetry

    return OpenTelemetry()


def _exporter(settings: Settings) -> str | None:
    if settings.applicationinsights_connection_string:
        return "azure-monitor"
    if settings.otel_exporter_otlp_endpoint:
        return "otlp"
    return None


def _configure(exporter: str, settings: Settings) -> None:
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": SERVICE_NAME})
    if exporter == "azure-monitor":
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=settings.applicationinsights_connection_string, resource=resource)
        log.info("telemetry exported to Application Insights")
        return
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    log.info("telemetry exported over OTLP to %s", settings.otel_exporter_otlp_endpoint)
