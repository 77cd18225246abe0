"""Probe routes of the HTTP API: liveness, readiness and a health report (database, transport, registries)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConfigurationError
from core.models import DeadLetterSelector
from infrastructure.postgres.migrations import load_migrations, schema_version
from triggers.http_auth import FunctionKey
from triggers.http_base import ApiContext, Context

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


class Alive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str


class Ready(BaseModel):
    status: str
    database: dict[str, Any] | None = None
    transport: dict[str, Any] | None = None
    error: str | None = Field(default=None, description="'startup' when the app settings cannot run here")
    problems: list[str] | None = Field(default=None, description="each start-up problem, naming the setting")


class Health(Ready):
    job_types: dict[str, Any]
    task_types: list[str]


def health_router() -> APIRouter:
    router = APIRouter(tags=["probes"])

    @router.get("/livez", response_model=Alive, summary="Liveness: the process answers")
    def livez() -> Alive:
        return Alive(status="ok")

    @router.get("/readyz", response_model=Ready, summary="Readiness: database and transport reachable",
                responses={503: {"model": Ready, "description": "database or transport unreachable"}})
    def readyz(request: Request) -> JSONResponse:
        try:
            ctx: ApiContext = request.app.state.context_provider()
        except ConfigurationError as exc:  # the app settings cannot run here (see triggers.azure_runtime)
            problems = list(getattr(exc, "problems", [str(exc)]))
            return JSONResponse({"status": "not_ready", "error": "startup", "problems": problems}, status_code=503)
        database, transport = _database(ctx), _transport(ctx)
        ready = database["ok"] and transport["ok"]
        body = Ready(status="ready" if ready else "not_ready", database=database, transport=transport)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)

    @router.get("/health", response_model=Health, dependencies=[FunctionKey],
                summary="Database, transport, schema version, job types and handlers",
                responses={503: {"model": Health, "description": "degraded"}})
    def health(ctx: Context) -> JSONResponse:
        database, transport = _database(ctx), _transport(ctx)
        ok = database["ok"] and transport["ok"]
        job_types = {
            job.job_type: {
                "description": job.description, "failure_policy": job.failure_policy.value,
                "stages": [{"stage": s.number, "name": s.name, "task_type": s.task_type,
                            "max_attempts": s.max_attempts} for s in job.numbered_stages()],
            }
            for job in ctx.jobs
        }
        body = Health(status="ok" if ok else "degraded", database=database, transport=transport,
                      job_types=job_types, task_types=list(ctx.tasks))
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)

    return router
