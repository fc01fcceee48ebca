"""The HTTP API of the execution broker (schema 1.0.7 paths) and its dashboard.

HTTP is one more way in, not a second system: requests and updates are published on the bus with
the caller's identity as the owner token, exactly as ``BrokerClient`` does, and every read comes
from the offers read model (or, for a session's history, from the events stream).

``create_app`` is the one place where the parts meet: the shared objects go into ``app.state`` (the
routes reach them through ``context.Context``), the routers of ``routers/`` are included, every
request passes the guard (``guard.RequestGuard``: origin, media type, size) first, and errors of
every kind become schema messages in the format the caller asked for.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.offers.http import openapi
from services.offers.http.auth import Authenticator
from services.offers.http.availability import AvailabilityProbe, HealthCheck
from services.offers.http.bus import Bus
from services.offers.http.context import HttpContext
from services.offers.http.guard import RequestGuard
from services.offers.http.login_limits import LoginLimiter
from services.offers.http.origins import own_origins, parse_origins
from services.offers.http.responses import ApiError, error_response
from services.offers.http.routers import admin, dashboard, docs, events, requests, sessions, vosi
from services.offers.http.settings import HttpSettings
from services.offers.http.tokens import EventTokens, event_secret
from services.offers.store import ReadModel
from shared.auth.identities import store_in
from shared.auth.oidc import OidcVerifier
from shared.models import MessageItem

log = logging.getLogger(__name__)


def create_app(
    settings: HttpSettings,
    read_model: ReadModel,
    bus: Bus,
    *,
    data_dir: Path,
    oidc: OidcVerifier | None = None,
    health: HealthCheck | None = None,
) -> FastAPI:
    """The app; `data_dir` (``EB_DATA_DIR``) holds the local identities and the event-token key;
    `health` asks a service's health subject (``/availability``; without it, never available)."""
    if oidc is None and settings.oidc_issuer:
        if not settings.oidc_audience:  # HttpSettings refuses this already; a caller may build its own
            raise ValueError("EB_OIDC_AUDIENCE must be set when EB_OIDC_ISSUER is")
        oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, leeway_s=settings.oidc_leeway_s)
    app = FastAPI(
        title="Execution Broker on NATS",
        version="1.0.7",
        summary="IVOA Execution Broker API (Calycopis schema 1.0.7), JSON and YAML",
        # /docs is our own page (routers/docs.py): FastAPI's loads swagger-ui from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = HttpContext(
        settings=settings,
        read_model=read_model,
        bus=bus,
        auth=Authenticator(
            admin_username=settings.admin_username,
            admin_password=settings.admin_password,
            identities=store_in(data_dir),
            oidc=oidc,
        ),
        tokens=EventTokens(event_secret(settings.http_secret, data_dir), settings.event_token_ttl_s),
        logins=LoginLimiter(
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_window_s,
        ),
        availability=AvailabilityProbe(health),
    )
    allowed = own_origins(settings.base_url(), loopback=not settings.public_url)
    app.add_middleware(RequestGuard, allowed_origins=allowed | parse_origins(settings.http_allowed_origins))
    _handle_errors(app)
    # The order of the routers is the order of the paths in the OpenAPI document.
    for router in (
        requests.router,
        sessions.router,
        admin.router,
        dashboard.router,
        events.router,
        docs.router,
        vosi.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    app.mount(docs.ASSETS, docs.assets(), name="docs-assets")
    openapi.install(app)
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every error, FastAPI's and Starlette's too, answers with schema messages (JSON or YAML)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> Response:
        return error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        messages = [
            MessageItem.error(
                "urn:invalid-value",
                "${where}: ${reason}",
                time=datetime.now(UTC),
                where=".".join(str(p) for p in e.get("loc", ())),
                reason=e.get("msg", "invalid"),
            )
            for e in error.errors()
        ]
        return error_response(request, ApiError.of(422, messages))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        kind = "urn:not-found" if error.status_code == 404 else "urn:http-error"
        api = ApiError(error.status_code, kind, "${detail}", detail=error.detail)
        api.headers = dict(error.headers or {})
        return error_response(request, api)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            request,
            ApiError(500, "urn:internal-error", "Internal error: ${reason}", reason=type(error).__name__),
        )
