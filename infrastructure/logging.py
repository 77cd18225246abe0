"""Logging: JSON-lines (or human text) output on stderr, carrying the bound log context and `extra=` fields.

Every line has `ts` (ISO 8601 UTC), `level`, `logger` and `msg`, then the fields bound with
`core.logcontext.bind` (job_id, job_type, stage, task_id, attempt, ...), then the record's `extra=` fields, then
`exc_type`, `exc_message` and `traceback` when an exception is attached. Values that JSON cannot hold are
written as strings, so a log call never fails.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal, TextIO

from core import logcontext
from infrastructure.settings import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_BASE = ("ts", "level", "logger", "msg")
# Libraries that log every connection or HTTP request at INFO; kept at WARNING unless the level is DEBUG.
_CHATTY = ("psycopg.pool", "pgserver", "azure.core.pipeline.policies.http_logging_policy", "azure.servicebus", "uamqp")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        try:
            return model_dump(mode="json")
        except Exception:
            return str(value)
    return str(value)


def _dumps(payload: Mapping[str, Any]) -> str:
    try:
        return json.dumps(payload, default=_json_default, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        # Non-string dict keys or a circular structure somewhere: fall back to strings field by field.
        safe: dict[str, Any] = {}
        for key, value in payload.items():
            try:
                json.dumps(value, default=_json_default)
                safe[str(key)] = value
            except (TypeError, ValueError, RecursionError):
                safe[str(key)] = str(value)
        return json.dumps(safe, default=_json_default, ensure_ascii=False)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: base fields, bound context, extras, exception details."""
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    context = logcontext.current()
    extras = {key: value for key, value in vars(record).items() if key not in _STANDARD}
    for key, value in {**context, **extras}.items():
        fields[key if key not in _BASE else f"{key}_"] = value
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, _ = record.exc_info
        fields["exc_type"] = exc_type.__name__
        fields["exc_message"] = str(exc)
        fields["traceback"] = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        fields["traceback"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return _dumps(record_fields(record))


class TextFormatter(logging.Formatter):
    """`ts LEVEL logger: msg key=value ...` with the traceback below, for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level'):<8} {fields.pop('logger')}: {fields.pop('msg')}"
        trace = fields.pop("traceback", None)
        fields.pop("exc_type", None)
        fields.pop("exc_message", None)
        stack = fields.pop("stack", None)
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        lines = [f"{head}  {pairs}" if pairs else head]
        lines.extend(part for part in (trace, stack) if part)
        return "\n".join(lines)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value, ensure_ascii=False)
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(str(value), ensure_ascii=False)


class _CoreMachineHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs; its type marks it so a second call replaces it."""


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, fmt: Literal["json", "text"] | None = None
) -> logging.Handler:
    """Send every log record to stderr (or `stream`) as JSON lines or text; calling again replaces the handler.

    Returns the installed handler. Other handlers on the root logger (pytest's, Azure Functions') are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CoreMachineHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _CoreMachineHandler(stream if stream is not None else sys.stderr)
    chosen = fmt or settings.log_format
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root.addHandler(handler)
    level = settings.log_level_number
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    return handler
