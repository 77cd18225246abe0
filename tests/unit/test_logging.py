"""Logging: JSON lines carry the bound context, `extra=` fields and exceptions; text is for people."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from core import logcontext
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings


class Colour(Enum):
    RED = "red"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def stream(restore_root: None) -> io.StringIO:
    out = io.StringIO()
    configure_logging(Settings.for_tests(log_level="DEBUG"), stream=out)
    return out


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_base_fields_context_and_extras(stream: io.StringIO) -> None:
    with logcontext.bind(job_id="a" * 64, job_type="ingest", stage=2), logcontext.bind(task_id="t-1", attempt=3):
        logging.getLogger("coremachine.test").info("task %s done", "t-1", extra={"rows": 120, "duration_ms": 4.5})
    (line,) = lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "coremachine.test"
    assert line["msg"] == "task t-1 done"
    assert datetime.fromisoformat(line["ts"]).utcoffset() == UTC.utcoffset(None)
    assert line["job_id"] == "a" * 64
    assert (line["job_type"], line["stage"], line["task_id"], line["attempt"]) == ("ingest", 2, "t-1", 3)
    assert (line["rows"], line["duration_ms"]) == (120, 4.5)
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]


def test_context_ends_with_its_block(stream: io.StringIO) -> None:
    with logcontext.bind(job_id="j"):
        pass
    logging.getLogger("x").warning("outside")
    (line,) = lines(stream)
    assert "job_id" not in line


def test_exceptions_are_included(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad row 7")
    except ValueError:
        logging.getLogger("x").exception("load failed")
    (line,) = lines(stream)
    assert line["level"] == "ERROR"
    assert line["exc_type"] == "ValueError"
    assert line["exc_message"] == "bad row 7"
    assert "Traceback (most recent call last)" in line["traceback"]
    assert 'raise ValueError("bad row 7")' in line["traceback"]


def test_awkward_values_always_serialise(stream: io.StringIO) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    circular: list[Any] = []
    circular.append(circular)
    extra = {
        "when": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "uid": uuid.UUID(int=1),
        "path": Path("/data/x.xlsx"),
        "colour": Colour.RED,
        "ids": {3},
        "tuple_keys": {(1, 2): "x"},
        "thing": Opaque(),
        "circular": circular,
    }
    logging.getLogger("x").info("awkward", extra=extra)
    (line,) = lines(stream)
    assert line["when"] == "2024-05-01T12:00:00+00:00"
    assert line["uid"] == str(uuid.UUID(int=1))
    assert line["path"] == "/data/x.xlsx"
    assert line["colour"] == "red"
    assert line["ids"] == [3]
    assert line["tuple_keys"] == "{(1, 2): 'x'}"
    assert line["thing"] == "<opaque>"
    assert isinstance(line["circular"], str)


def test_extras_never_overwrite_base_fields(stream: io.StringIO) -> None:
    logging.getLogger("x").info("hello", extra={"level": "custom", "ts": 1})
    (line,) = lines(stream)
    assert line["level"] == "INFO"
    assert (line["level_"], line["ts_"]) == ("custom", 1)


def test_configure_is_idempotent_and_honours_the_level(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings.for_tests(), stream=first)
    configure_logging(Settings.for_tests(log_level="WARNING"), stream=second)
    logging.getLogger("x").info("dropped")
    logging.getLogger("x").warning("kept")
    assert first.getvalue() == ""
    assert [line["msg"] for line in lines(second)] == ["kept"]


def test_text_format_for_people(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(Settings.for_tests(log_format="text"), stream=out)
    with logcontext.bind(job_id="j1", stage=1):
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("coremachine.worker").error("failed", exc_info=True, extra={"note": "two words"})
    first, *rest = out.getvalue().splitlines()
    assert "ERROR" in first
    assert "coremachine.worker: failed" in first
    assert 'job_id=j1 stage=1 note="two words"' in first
    assert rest[0].startswith("Traceback")
