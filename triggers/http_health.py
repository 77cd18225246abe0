"""Probe routes of the HTTP API: liveness, readiness and a health report (database, transport, registries)."""

from __future__ import annotations

import logging
from typing import Any

from core.models import DeadLetterSelector
from infrastructure.postgres.migrations import load_migrations, schema_version
from triggers.http_base import ApiContext, Auth, Request, Response, Route

log = logging.getLogger("coremachine.http")


def _database(ctx: ApiContext) -> dict[str, Any]:
    expected = max((m.version for m in load_migrations()), default=0)
    try:
        version = schema_version(ctx.database)
    except Exception as exc:
        log.warning("health: database unreachable", extra={"error": str(exc)})
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "expected_schema_version": expected}
    return {"ok": version == expected, "schema_version": version, "expected_schema_version": expected}


def _transport(ctx: ApiContext) -> dict[str, Any]:
    try:
        ping = getattr(ctx.transport, "ping", None)
        if callable(ping):
            ping()
        else:
            ctx.transport.list_dead_letters(DeadLetterSelector(), limit=1)
    except Exception as exc:
        log.warning("health: transport unreachable", extra={"error": str(exc)})
        return {"ok": False, "kind": ctx.settings.transport, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "kind": ctx.settings.transport}


def livez(ctx: ApiContext, req: Request) -> Response:
    return Response(200, {"status": "ok"})


def readyz(ctx: ApiContext, req: Request) -> Response:
    database, transport = _database(ctx), _transport(ctx)
    ready = database["ok"] and transport["ok"]
    return Response(200 if ready else 503, {"status": "ready" if ready else "not_ready",
                                            "database": database, "transport": transport})


def health(ctx: ApiContext, req: Request) -> Response:
    database, transport = _database(ctx), _transport(ctx)
    ok = database["ok"] and transport["ok"]
    job_types = {
        job.job_type: {
            "description": job.description, "failure_policy": job.failure_policy.value,
            "stages": [{"stage": s.number, "name": s.name, "task_type": s.task_type, "max_attempts": s.max_attempts}
                       for s in job.numbered_stages()],
        }
        for job in ctx.jobs
    }
    return Response(200 if ok else 503, {
        "status": "ok" if ok else "degraded", "database": database, "transport": transport,
        "job_types": job_types, "task_types": list(ctx.tasks),
    })


ROUTES = [
    Route("livez", "GET", "livez", livez, Auth.ANONYMOUS, "Liveness: the process answers"),
    Route("readyz", "GET", "readyz", readyz, Auth.ANONYMOUS, "Readiness: database and transport reachable"),
    Route("health", "GET", "health", health, Auth.FUNCTION,
          "Database, transport, schema version, job types and handlers"),
]
