"""Swagger UI at /api/docs from assets shipped in a Python package (fastapi-offline), so it works offline."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"


def add_docs(app: FastAPI, docs_path: str, openapi_path: str) -> None:
    """Swagger UI at `docs_path`, its script and style under `docs_path`/assets."""
    assets = f"{docs_path}/assets"
    app.mount(assets, StaticFiles(directory=ASSETS), name="swagger-assets")

    @app.get(docs_path, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_path, title=f"{app.title} API", swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )
