"""The Azure Functions app (v2 model): the HTTP app as one ASGI function, plus the queue and timer triggers.

`AsgiFunctionApp` registers one HTTP function (`http_api`, route `{*route}`) that hands every request to the
FastAPI app; the app checks its own keys (COREMACHINE_API_KEY / COREMACHINE_ADMIN_KEY), so the function is
anonymous at the host and a key setting left unset closes its routes. The Service Bus and timer functions come
from their blueprint, registered on the same app. Job types are discovered at import (no I/O); the database and
Service Bus are first touched by the first invocation.
"""

from __future__ import annotations

import azure.functions as func

from triggers.azure_runtime import api_context, http_settings, log_startup_problems
from triggers.http_app import create_app
from triggers.runtime import load_registries
from triggers.sb_triggers import bp as sb_bp

log_startup_problems()  # reads the app settings only: a misconfigured app says so as soon as the host loads it

_settings = http_settings()
_api = create_app(load_registries(_settings).jobs, api_context, require_keys=True,
                  max_body_bytes=_settings.http_max_body_bytes)
app = func.AsgiFunctionApp(app=_api, http_auth_level=func.AuthLevel.ANONYMOUS, function_name="http_api")
app.register_functions(sb_bp)
