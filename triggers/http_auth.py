"""Function and admin keys, checked by the app itself (locally and on Azure), as FastAPI security dependencies.

A key is presented in the `x-functions-key` header, the `code` query parameter, or the dashboard's cookie (set by
its sign-in form). Job routes accept the API key or the admin key; admin routes and the dashboard's admin actions
accept the admin key only. With no keys configured every route is open, which `coremachine serve` allows on
loopback; the Azure app is built with `require_keys=True`, so a missing key setting closes the routes instead.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery

from triggers.http_base import ApiError, Context

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
KEY_COOKIE = "coremachine_key"


class Auth(StrEnum):
    ANONYMOUS = "anonymous"
    FUNCTION = "function"
    ADMIN = "admin"


def _schemes(level: str, description: str) -> tuple[APIKeyHeader, APIKeyQuery, APIKeyCookie]:
    return (
        APIKeyHeader(name=KEY_HEADER, scheme_name=f"{level}Key", auto_error=False, description=description),
        APIKeyQuery(name=KEY_QUERY, scheme_name=f"{level}KeyQuery", auto_error=False, description=description),
        APIKeyCookie(name=KEY_COOKIE, scheme_name=f"{level}KeyCookie", auto_error=False,
                     description=f"{description} (the dashboard's sign-in cookie)"),
    )


_FUNCTION = _schemes("function", "the API key (COREMACHINE_API_KEY) or the admin key")
_ADMIN = _schemes("admin", "the admin key (COREMACHINE_ADMIN_KEY)")


def _presented(header: str | None, query: str | None, cookie: str | None) -> str:
    return header or query or cookie or ""


def accepted_keys(ctx: Context, request: Request, level: Auth) -> list[str] | None:
    """The keys that open a route of this level, or None if the route is open (no key configured)."""
    api_key, admin_key = ctx.settings.api_key, ctx.settings.admin_key
    keys = [k for k in ((api_key, admin_key) if level is Auth.FUNCTION else (admin_key,)) if k]
    needed = api_key if level is Auth.FUNCTION else admin_key
    if needed:
        return keys
    if request.app.state.require_keys:
        return []
    return None


def check(ctx: Context, request: Request, level: Auth, presented: str) -> None:
    keys = accepted_keys(ctx, request, level)
    if keys is None:
        return
    if not keys:
        setting = "COREMACHINE_ADMIN_KEY" if level is Auth.ADMIN else "COREMACHINE_API_KEY"
        raise ApiError(401, "unauthorized", f"this route is closed: {setting} is not configured")
    if not any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys):
        kind = "an admin" if level is Auth.ADMIN else "an API"
        raise ApiError(401, "unauthorized", f"this route needs {kind} key in the {KEY_HEADER} header",
                       headers={"WWW-Authenticate": f'ApiKey header="{KEY_HEADER}"'})


def _function_key(
    ctx: Context, request: Request,
    header: Annotated[str | None, Security(_FUNCTION[0])], query: Annotated[str | None, Security(_FUNCTION[1])],
    cookie: Annotated[str | None, Security(_FUNCTION[2])],
) -> None:
    check(ctx, request, Auth.FUNCTION, _presented(header, query, cookie))


def _admin_key(
    ctx: Context, request: Request,
    header: Annotated[str | None, Security(_ADMIN[0])], query: Annotated[str | None, Security(_ADMIN[1])],
    cookie: Annotated[str | None, Security(_ADMIN[2])],
) -> None:
    check(ctx, request, Auth.ADMIN, _presented(header, query, cookie))


FunctionKey = Depends(_function_key)
AdminKey = Depends(_admin_key)
