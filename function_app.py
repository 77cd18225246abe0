"""The Azure Functions app (v2 model): the host indexes this module and registers every blueprint's functions."""

from __future__ import annotations

import azure.functions as func

from triggers.azure_runtime import log_startup_problems
from triggers.http_blueprint import bp as http_bp
from triggers.sb_triggers import bp as sb_bp

log_startup_problems()  # reads the app settings only: a misconfigured app says so as soon as the host loads it

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(http_bp)
app.register_blueprint(sb_bp)
