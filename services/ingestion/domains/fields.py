"""Shared field helpers for domain models: raw cell types, header aliases, SQL type hints."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AliasChoices, Field, JsonValue

RawCell = str | int | float | dt.datetime | dt.date | None
JsonDict = dict[str, "JsonValue"]
MONEY: JsonDict = {"sql_type": "numeric(20,2)"}
RATE: JsonDict = {"sql_type": "numeric(12,6)"}
CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_.-]*$"


def header(*labels: str, required: bool = True) -> Any:
    """An input field matched by any of `labels` in the sheet's header row (case and punctuation ignored)."""
    if required:
        return Field(validation_alias=AliasChoices(*labels))
    return Field(None, validation_alias=AliasChoices(*labels))
