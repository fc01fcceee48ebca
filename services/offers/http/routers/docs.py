"""The Swagger UI page at /docs, with nothing from a CDN.

FastAPI's own page loads swagger-ui from a CDN and starts it with an inline script, which the pages'
Content-Security-Policy forbids. Here the swagger-ui files come from the ``fastapi-offline`` package
(served at ``/docs/assets``, not copied into this repository) and the page starts them with our own
``/static/docs.js``. ReDoc is not served.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.offers.http.responses import PAGE_HEADERS

ASSETS = "/docs/assets"

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - Swagger UI</title>
  <link rel="stylesheet" href="{root}{assets}/swagger-ui.css">
  <link rel="icon" href="{root}{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}{openapi}"></div>
<script src="{root}{assets}/swagger-ui-bundle.js"></script>
<script src="{root}/static/docs.js"></script>
</body>
</html>
"""


def assets() -> StaticFiles:
    """The swagger-ui files that the fastapi-offline package ships."""
    return StaticFiles(packages=[("fastapi_offline", "static")])


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = html.escape(str(request.scope.get("root_path", "")))
    page = _PAGE.format(
        title=html.escape(request.app.title),
        root=root,
        assets=ASSETS,
        openapi=html.escape(request.app.openapi_url or "/openapi.json"),
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)
