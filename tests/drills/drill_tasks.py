"""Handlers of the drill jobs."""

from __future__ import annotations

import time
from typing import Any

from core.errors import PermanentError
from core.registry import TaskContext, register_task


@register_task("drill.work")
def work(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    if params.get("hang") and context.attempt == 1:
        time.sleep(3600)
    if params.get("sleep_ms"):
        time.sleep(int(params["sleep_ms"]) / 1000)
    if params.get("cooperative_ms"):
        deadline = time.monotonic() + int(params["cooperative_ms"]) / 1000
        while time.monotonic() < deadline and not context.cancelled:
            time.sleep(0.01)
        return {"index": params["index"], "attempt": context.attempt, "stopped_early": context.cancelled}
    if params.get("fail_index") is not None and params["index"] == params["fail_index"]:
        raise PermanentError(f"task {params['index']} is broken on purpose")
    if params.get("poison"):
        return {"index": params["index"], "note": "NUL \u0000 is valid JSON but not storable as jsonb"}
    return {"index": params["index"], "attempt": context.attempt}
