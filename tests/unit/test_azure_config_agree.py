"""host.json, the Bicep app settings, the queue properties and local.settings.json.example agree on concurrency,
locks, delivery counts and the duplicate window; the arithmetic docs/azure.md writes down holds."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from triggers.sb_triggers import bp as servicebus_blueprint

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = (ROOT / "infra" / "resources.bicep").read_text()
SPARE_THREADS = 2
"""Threads beyond the Service Bus calls: HTTP requests and the janitor timer."""


def _bicep_vars() -> dict[str, str]:
    return {name: value.strip().strip("'") for name, value in re.findall(r"^var (\w+) = (.+)$", RESOURCES, re.M)}


def _app_settings() -> dict[str, str]:
    """The Function App's settings in the Bicep, with `string(var)` and `var` references resolved."""
    variables = _bicep_vars()
    settings: dict[str, str] = {}
    for name, value in re.findall(r"\{ name: '([^']+)', value: (.+?) \}", RESOURCES):
        literal = re.fullmatch(r"'(.*)'", value)
        reference = re.fullmatch(r"string\((\w+)\)", value)
        if literal:
            settings[name] = literal.group(1)
        elif reference:
            settings[name] = variables[reference.group(1)]
    return settings


def _duration(value: str) -> timedelta:
    """ISO 8601 (PT5M, PT1H) or .NET (00:10:00) durations."""
    iso = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", value)
    if iso:
        hours, minutes, seconds = (int(part or 0) for part in iso.groups())
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)
    hours, minutes, seconds = (int(part) for part in value.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _host() -> dict[str, Any]:
    return dict(json.loads((ROOT / "host.json").read_text()))


def _service_bus_functions() -> int:
    functions = [builder.build() for builder in servicebus_blueprint._function_builders]
    return sum(any(b.type == "serviceBusTrigger" for b in f.get_bindings()) for f in functions)


def test_threads_cover_every_concurrent_call_and_the_pool_every_thread() -> None:
    service_bus = _host()["extensions"]["serviceBus"]
    calls = _service_bus_functions() * int(service_bus["maxConcurrentCalls"])
    local = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    for source in (_app_settings(), local):
        threads = int(source["PYTHON_THREADPOOL_THREAD_COUNT"])
        pool = int(source["COREMACHINE_POOL_MAX_SIZE"])
        assert threads >= calls + SPARE_THREADS, "every concurrent Service Bus call gets a thread, with room for HTTP"
        assert pool >= threads, "an invocation holds one connection at a time: no thread waits for one"


def test_the_docs_write_down_the_same_arithmetic() -> None:
    docs = (ROOT / "docs" / "azure.md").read_text()
    functions = _service_bus_functions()
    per_function = int(_host()["extensions"]["serviceBus"]["maxConcurrentCalls"])
    settings = _app_settings()
    assert f"{functions} \N{MULTIPLICATION SIGN} {per_function} = {functions * per_function}" in docs
    assert f"PYTHON_THREADPOOL_THREAD_COUNT={settings['PYTHON_THREADPOOL_THREAD_COUNT']}" in docs
    assert f"COREMACHINE_POOL_MAX_SIZE={settings['COREMACHINE_POOL_MAX_SIZE']}" in docs


def test_host_settings_keep_a_running_function_locked_and_every_invocation_visible() -> None:
    host = _host()
    service_bus = host["extensions"]["serviceBus"]
    assert _duration(service_bus["maxAutoLockRenewalDuration"]) >= _duration(str(host["functionTimeout"]))
    assert service_bus["prefetchCount"] == 0 and service_bus["autoCompleteMessages"] is True
    assert "Host.Results" not in host.get("logging", {}).get("logLevel", {})


def test_queue_properties_match_the_settings_that_mirror_them() -> None:
    variables, settings = _bicep_vars(), _app_settings()
    local = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    for source in (settings, local):
        assert int(source["COREMACHINE_MAX_DELIVERIES"]) == int(variables["maxDeliveryCount"])
        window = _duration(variables["duplicateWindow"]).total_seconds()
        assert float(source["COREMACHINE_DUPLICATE_WINDOW_SECONDS"]) == window
        assert float(source["COREMACHINE_LOCK_SECONDS"]) == _duration(variables["tasksLockDuration"]).total_seconds()
    assert RESOURCES.count("requiresDuplicateDetection: true") == 2
    assert _duration(variables["tasksLockDuration"]) <= timedelta(minutes=5), "Service Bus allows at most 5 minutes"


def test_the_app_needs_no_secret_in_its_settings() -> None:
    settings = _app_settings()
    assert "ServiceBusConnection" not in settings and "AzureWebJobsStorage" not in settings
    assert settings["COREMACHINE_DATABASE_AUTH"] == "entra" and settings["COREMACHINE_TRANSPORT"] == "servicebus"
    assert "disableLocalAuth: true" in RESOURCES, "Service Bus: no SAS keys"
    assert "allowSharedKeyAccess: false" in RESOURCES
    assert "passwordAuth: 'Disabled'" in RESOURCES
    assert not re.search(r"listKeys|SharedAccessKey|RootManageSharedAccessKey", RESOURCES)
