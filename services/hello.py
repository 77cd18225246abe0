"""Handlers of the hello_world job, with failure and delay injection for drills."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from core.errors import TransientError
from core.registry import TaskContext, register_task


def _drill(params: dict[str, Any], context: TaskContext) -> None:
    sleep_ms = int(params.get("sleep_ms", 0))
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    if context.attempt <= int(params.get("fail_attempts", 0)):
        raise TransientError(f"injected failure on attempt {context.attempt}")
    rate = float(params.get("failure_rate", 0.0))
    if rate > 0:
        digest = hashlib.sha256(f"{context.task_id}:{context.attempt}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < rate:
            raise TransientError(f"injected random failure (rate {rate}) on attempt {context.attempt}")


@register_task("hello.greet")
def greet(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    _drill(params, context)
    return {"greeting": f"{params['message']} #{params['index']}"}


@register_task("hello.reply")
def reply(params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    _drill(params, context)
    return {"reply": f"re: {params['greeting']}"}
