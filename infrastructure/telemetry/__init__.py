"""Telemetry adapters: OpenTelemetry behind `core.tracing.Telemetry`, and the exporters chosen at start-up."""
