"""The HTTP API of the execution broker (schema 1.0.7 paths) and its dashboard.

HTTP is one more way in, not a second system: requests and updates are published on the bus with
the caller's identity as the owner token, exactly as ``BrokerClient`` does, and every read comes
from the offers read model (or, for a session's history, from the events stream).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import as_file
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import yaml
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.offers import domain
from services.offers import store as tables
from services.offers.http import views
from services.offers.http.auth import (
    USERNAME,
    Authenticator,
    AuthError,
    EventTokens,
    Identity,
    OidcVerifier,
    hash_password,
)
from services.offers.http.bus import Bus
from services.offers.http.negotiation import Format, format_of, render, response_format
from services.offers.http.settings import HttpSettings
from services.offers.store import IdentityExists, ReadModel, SessionRow
from shared import examples
from shared.client import BrokerTimeout, RequestTooLarge
from shared.lifecycle import Phase
from shared.messages import UpdateResult
from shared.models import (
    MAX_DOCUMENT_BYTES,
    ComponentMetadata,
    DocumentError,
    EnumValueUpdate,
    ExecutionRequest,
    MessageItem,
    OfferSetResponse,
    ScheduledExecutionSession,
    load_document,
    to_jsonable,
)
from shared.telemetry import trace_id_from_headers

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"

# Update results of the offers service → HTTP status.
_UPDATE_STATUS = {
    "urn:forbidden": 403,
    "urn:illegal-transition": 409,
    "urn:offer-expired": 409,
    "urn:not-found": 404,
    "urn:input-syntax-fail": 422,
    "urn:not-supported": 422,
    "urn:invalid-value": 422,
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        kind: str,
        template: str,
        /,
        *,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> None:
        super().__init__(template)
        self.status = status
        self.messages = [MessageItem.error(kind, template, time=datetime.now(UTC), **values)]
        self.headers = headers or {}

    @classmethod
    def of(cls, status: int, messages: list[MessageItem]) -> ApiError:
        error = cls(status, "urn:error", "error")
        error.messages = messages
        return error


@dataclass
class HttpContext:
    settings: HttpSettings
    read_model: ReadModel
    bus: Bus
    auth: Authenticator
    tokens: EventTokens
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return self.settings.base_url()


# -- responses ------------------------------------------------------------------------------------


def negotiate(request: Request) -> Format:
    return response_format(request.headers.get("accept"), request.headers.get("content-type"))


def respond(
    request: Request, document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    fmt = negotiate(request)
    return Response(render(document, fmt), status_code=status, media_type=fmt.value, headers=headers)


def error_response(request: Request, error: ApiError) -> Response:
    body = to_jsonable(views.ErrorResponse(messages=error.messages))
    return respond(request, body, error.status, error.headers)


def _prefers_body(request: Request) -> bool:
    """``Prefer: return=representation`` asks for 200 with the body instead of the 303 redirect."""
    return "return=representation" in request.headers.get("prefer", "").lower()


# -- OpenAPI helpers --------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(name: str) -> dict[str, Any]:
    schema = _ref(name)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}},
        }
    }


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "Missing or invalid fields",
        401: "Not authenticated (see WWW-Authenticate)",
        403: "Authenticated, but not the owner",
        404: "No such resource",
        409: "Conflict: an illegal transition, an expired offer or an existing identity",
        413: "The document is too large",
        415: "Neither JSON nor YAML",
        422: "Unparsable or invalid input",
        504: "The broker's services did not answer in time",
    }
    return {code: {"model": views.ErrorResponse, "description": texts[code]} for code in codes}


_LOCATION = {"Location": {"required": True, "schema": {"type": "string", "format": "uri"}}}


def _see_other(model: type, description: str) -> dict[str, Any]:
    return {"model": model, "description": description, "headers": _LOCATION}


# -- authentication ----------------------------------------------------------------------------------


def _ctx(request: Request) -> HttpContext:
    context = request.app.state.ctx
    assert isinstance(context, HttpContext)
    return context


def unauthenticated(request: Request, reason: str) -> ApiError:
    # The dashboard asks for no Basic challenge, so the browser shows no login dialog of its own.
    challenge = _ctx(request).auth.challenge()
    if request.headers.get("x-requested-with"):
        challenge = 'Dashboard realm="execution-broker"'
    return ApiError(
        401, "urn:unauthenticated", "${reason}", reason=reason, headers={"WWW-Authenticate": challenge}
    )


async def caller(request: Request) -> Identity | None:
    try:
        return await _ctx(request).auth.identify(request.headers.get("authorization"))
    except AuthError as exc:
        raise unauthenticated(request, exc.reason) from None


async def user(request: Request) -> Identity:
    identity = await caller(request)
    if identity is None:
        raise unauthenticated(request, "Authentication required (HTTP Basic or an OIDC bearer token)")
    return identity


async def reader(request: Request) -> Identity | None:
    identity = await caller(request)
    if identity is None and not _ctx(request).settings.public_reads:
        raise unauthenticated(request, "Authentication required to read sessions")
    return identity


User = Annotated[Identity, Depends(user)]
Reader = Annotated[Identity | None, Depends(reader)]


# -- the application -------------------------------------------------------------------------------


def create_app(
    settings: HttpSettings,
    read_model: ReadModel,
    bus: Bus,
    *,
    oidc: OidcVerifier | None = None,
) -> FastAPI:
    if oidc is None and settings.oidc_issuer:
        oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience)
    ctx = HttpContext(
        settings=settings,
        read_model=read_model,
        bus=bus,
        auth=Authenticator(
            admin_username=settings.admin_username,
            admin_password=settings.admin_password,
            lookup_password=functools.partial(tables.password_hash, read_model),
            oidc=oidc,
        ),
        tokens=EventTokens(settings.http_secret, settings.event_token_ttl_s),
    )
    app = FastAPI(
        title="Execution Broker on NATS",
        version="1.0.7",
        summary="IVOA Execution Broker API (Calycopis schema 1.0.7), JSON and YAML",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx

    # -- errors ---------------------------------------------------------------------------------

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

    # -- authentication ---------------------------------------------------------------------------

    def may_read(identity: Identity | None, owner: str) -> bool:
        return settings.public_reads or (identity is not None and (identity.owner == owner or identity.admin))

    def check_read(identity: Identity | None, owner: str, what: str, ident: str) -> None:
        if not may_read(identity, owner):
            raise ApiError(
                403, "urn:forbidden", "Only the owner of ${what} ${id} may read it", what=what, id=ident
            )

    # -- bodies -----------------------------------------------------------------------------------

    async def read_body(request: Request) -> tuple[bytes, Any]:
        content_type = request.headers.get("content-type")
        if content_type and format_of(content_type) is None and not content_type.startswith("text/plain"):
            raise ApiError(
                415,
                "urn:unsupported-media-type",
                "Content type ${type} is not supported; send JSON or YAML",
                type=content_type,
            )
        raw = await request.body()
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise ApiError(
                413,
                "urn:too-large",
                "The document is ${size} bytes; the limit is ${limit}",
                size=len(raw),
                limit=MAX_DOCUMENT_BYTES,
            )
        try:
            document = load_document(raw, content_type)
        except DocumentError as exc:
            raise ApiError(
                422, "urn:input-syntax-fail", "The document could not be parsed: ${reason}", reason=exc.reason
            ) from None
        return raw, document

    async def on_bus(call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except BrokerTimeout as exc:
            raise ApiError(504, "urn:timeout", "The broker did not answer: ${reason}", reason=exc) from None
        except RequestTooLarge as exc:
            raise ApiError(413, "urn:too-large", "${reason}", reason=exc) from None

    async def session_row(session_id: str, identity: Identity | None) -> SessionRow:
        row = await tables.session(ctx.read_model, session_id)
        if row is None:
            raise ApiError(404, "urn:not-found", "There is no session ${session}", session=session_id)
        check_read(identity, row.owner, "session", session_id)
        return row

    def update_error(result: UpdateResult) -> ApiError:
        kinds = [m.kind for m in result.messages]
        status = next((_UPDATE_STATUS[k] for k in kinds if k in _UPDATE_STATUS), 500)
        return ApiError.of(status, list(result.messages))

    # -- the API ----------------------------------------------------------------------------------

    @app.post(
        "/requests",
        tags=["execution broker"],
        summary="Ask for offers: 303 to the offer set, with the offer set in the body (YES or NO)",
        response_model=None,
        status_code=303,
        openapi_extra=_body("ExecutionRequest"),
        responses={
            303: _see_other(OfferSetResponse, "The offer set (YES or NO), also at Location"),
            200: {
                "model": OfferSetResponse,
                "description": "The offer set (with Prefer: return=representation)",
            },
            **_errors(401, 413, 415, 422, 504),
        },
    )
    async def post_requests(request: Request, identity: User) -> Response:
        raw, _ = await read_body(request)
        offerset: OfferSetResponse = await on_bus(lambda: ctx.bus.submit(identity.owner, raw, str(uuid4())))
        offerset_id = offerset.meta.uuid if offerset.meta and offerset.meta.uuid else ""
        document = await offerset_document(offerset_id) or to_jsonable(offerset)
        if _prefers_body(request):
            return respond(request, document)
        return respond(request, document, 303, {"Location": f"{ctx.base_url}/offersets/{offerset_id}"})

    async def offerset_document(offerset_id: str) -> dict[str, Any] | None:
        row = await tables.offerset(ctx.read_model, offerset_id)
        if row is None:
            return None
        return views.offerset_document(row, await tables.offerset_sessions(ctx.read_model, offerset_id))

    @app.post(
        "/direct",
        tags=["execution broker"],
        summary="Run now: ask for offers and accept the first; 303 to the session",
        response_model=None,
        status_code=303,
        openapi_extra=_body("ExecutionRequest"),
        responses={
            303: _see_other(ScheduledExecutionSession, "The accepted session, also at Location"),
            200: {
                "model": ScheduledExecutionSession,
                "description": "The accepted session (with Prefer: return=representation)",
            },
            400: {
                "model": ScheduledExecutionSession,
                "description": "No offer: a FAILED session whose messages say why",
            },
            **_errors(401, 403, 409, 413, 415, 422, 504),
        },
    )
    async def post_direct(request: Request, identity: User) -> Response:
        raw, _ = await read_body(request)
        offerset: OfferSetResponse = await on_bus(lambda: ctx.bus.submit(identity.owner, raw, str(uuid4())))
        offers = offerset.offers or []
        first = offers[0].meta.uuid if offers and offers[0].meta else None
        if offerset.result != "YES" or first is None:
            failed = ScheduledExecutionSession(
                phase="FAILED",
                meta=ComponentMetadata(
                    created=datetime.now(UTC), messages=(offerset.meta.messages if offerset.meta else None)
                ),
            )
            return respond(request, to_jsonable(failed), 400)
        result: UpdateResult = await on_bus(lambda: ctx.bus.update(identity.owner, first, Phase.ACCEPTED))
        if not result.applied:
            raise update_error(result)
        document = views.session_document(await session_row(first, identity))
        if _prefers_body(request):
            return respond(request, document)
        return respond(request, document, 303, {"Location": f"{ctx.base_url}/sessions/{first}"})

    @app.get(
        "/offersets/{uuid}",
        tags=["execution broker"],
        summary="An offer set, with each offer's current phase",
        response_model=None,
        responses={
            200: {"model": OfferSetResponse, "description": "The offer set"},
            **_errors(401, 403, 404, 422),
        },
    )
    async def get_offerset(request: Request, uuid: UUID, identity: Reader) -> Response:
        offerset_id = str(uuid)
        row = await tables.offerset(ctx.read_model, offerset_id)
        if row is None:
            raise ApiError(404, "urn:not-found", "There is no offer set ${offerset}", offerset=offerset_id)
        check_read(identity, row.owner, "offer set", offerset_id)
        return respond(
            request, views.offerset_document(row, await tables.offerset_sessions(ctx.read_model, offerset_id))
        )

    @app.get(
        "/sessions",
        tags=["execution broker"],
        summary="The caller's sessions, newest first (all sessions for the admin)",
        response_model=None,
        responses={200: {"model": views.SessionList, "description": "Sessions"}, **_errors(401, 422)},
    )
    async def list_sessions(
        request: Request,
        identity: User,
        phase: Annotated[Phase | None, Query(description="Only sessions in this phase")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        owner = None if identity.admin else identity.owner
        rows = await tables.sessions(ctx.read_model, owner, phase, limit)
        return respond(request, {"sessions": [views.session_document(row) for row in rows]})

    @app.get(
        "/sessions/{uuid}",
        tags=["execution broker"],
        summary="A session: current phase, legal updates (meta.options), messages, connectors, outputs",
        response_model=None,
        responses={
            200: {"model": ScheduledExecutionSession, "description": "The session"},
            **_errors(401, 403, 404, 422),
        },
    )
    async def get_session(request: Request, uuid: UUID, identity: Reader) -> Response:
        return respond(request, views.session_document(await session_row(str(uuid), identity)))

    @app.post(
        "/sessions/{uuid}",
        tags=["execution broker"],
        summary="Update a session: an EnumValueUpdate of path 'phase' (ACCEPTED, REJECTED, CANCELLED)",
        response_model=None,
        openapi_extra=_body("EnumValueUpdate"),
        responses={
            200: {"model": ScheduledExecutionSession, "description": "The updated session"},
            **_errors(401, 403, 404, 409, 413, 415, 422, 504),
        },
    )
    async def update_session(request: Request, uuid: UUID, identity: User) -> Response:
        session_id = str(uuid)
        _, body = await read_body(request)
        requested = domain.parse_update(body, datetime.now(UTC))
        if isinstance(requested, MessageItem):
            raise ApiError.of(422, [requested])
        if await tables.session_owner(ctx.read_model, session_id) is None:
            raise ApiError(404, "urn:not-found", "There is no session ${session}", session=session_id)
        result: UpdateResult = await on_bus(lambda: ctx.bus.update(identity.owner, session_id, requested))
        if not result.applied:
            raise update_error(result)
        return respond(request, views.session_document(await session_row(session_id, identity)))

    def component_route(role: str) -> None:
        async def get_component(request: Request, uuid: UUID, identity: Reader) -> Response:
            row = await session_row(str(uuid), identity)
            document = views.component_document(row, role)
            if document is None:
                raise ApiError(
                    404, "urn:not-found", "Session ${session} has no ${role}", session=str(uuid), role=role
                )
            return respond(request, document)

        app.add_api_route(
            f"/sessions/{{uuid}}/{role}",
            get_component,
            methods=["GET"],
            tags=["execution broker"],
            summary=f"The {role} of a session (its meta.url)",
            response_model=None,
            responses={
                200: {
                    "description": f"The {role} component",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(401, 403, 404, 422),
            },
        )

    component_route("executable")
    component_route("compute")

    @app.get(
        "/sessions/{uuid}/events",
        tags=["dashboard"],
        summary="The phases a session went through (from the events stream) and its trace",
        response_model=None,
        responses={
            200: {"model": views.SessionHistory, "description": "History"},
            **_errors(401, 403, 404, 422),
        },
    )
    async def session_history(request: Request, uuid: UUID, identity: Reader) -> Response:
        row = await session_row(str(uuid), identity)
        events = await ctx.bus.history(row.session_id)
        trace_id = next((e.trace_id for e in events if e.trace_id), None) or trace_id_from_headers(row.trace)
        trace_url = f"{settings.jaeger_url.rstrip('/')}/trace/{trace_id}" if trace_id else None
        history = views.SessionHistory(
            session=row.session_id,
            trace_id=trace_id,
            trace_url=trace_url,
            events=[e.model_dump(mode="json", exclude_none=True) for e in events],
        )
        return respond(request, history.model_dump(mode="json", exclude_none=True))

    # -- identities -------------------------------------------------------------------------------

    @app.post(
        "/admin/identities",
        tags=["admin"],
        summary="Create a local identity (HTTP Basic user); admin only",
        response_model=None,
        status_code=201,
        openapi_extra=_body("IdentityRequest"),
        responses={
            201: {"model": views.IdentityCreated, "description": "Created"},
            **_errors(400, 401, 403, 409, 413, 415, 422),
        },
    )
    async def create_identity(request: Request, identity: User) -> Response:
        if not identity.admin:
            raise ApiError(403, "urn:forbidden", "Only the administrator may create identities")
        _, body = await read_body(request)
        username, password = body.get("username"), body.get("password")
        problems = []
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            problems.append("username (1 to 64 letters, digits or . _ @ + -)")
        if not isinstance(password, str) or not password:
            problems.append("password (a non-empty string)")
        if problems:
            fields = ", ".join(problems)
            raise ApiError(400, "urn:invalid-value", "Missing or invalid: ${fields}", fields=fields)
        assert isinstance(username, str) and isinstance(password, str)
        if username == settings.admin_username:
            raise ApiError(409, "urn:identity-exists", "The identity ${username} exists", username=username)
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            identity_id = await tables.create_identity(ctx.read_model, username, hashed)
        except IdentityExists:
            raise ApiError(
                409, "urn:identity-exists", "The identity ${username} exists", username=username
            ) from None
        return respond(request, {"uuid": identity_id, "username": username}, 201)

    @app.get(
        "/whoami",
        tags=["dashboard"],
        summary="The authenticated caller",
        response_model=None,
        responses={200: {"model": views.WhoAmI, "description": "The caller"}, **_errors(401)},
    )
    async def whoami(request: Request, identity: User) -> Response:
        me = views.WhoAmI(
            username=identity.username,
            owner=identity.owner,
            admin=identity.admin,
            jaeger_url=settings.jaeger_url,
            public_reads=settings.public_reads,
        )
        return respond(request, me.model_dump())

    # -- live events ------------------------------------------------------------------------------

    @app.post(
        "/events/token",
        tags=["dashboard"],
        summary="A short-lived token for GET /events?token=… (EventSource cannot send headers)",
        response_model=None,
        responses={200: {"model": views.EventToken, "description": "The token"}, **_errors(401)},
    )
    async def event_token(request: Request, identity: User) -> Response:
        token, expires = ctx.tokens.issue(identity)
        return respond(request, {"token": token, "expires": expires})

    @app.get(
        "/events",
        tags=["dashboard"],
        summary="Server-sent events: every phase change of the caller's sessions",
        response_model=None,
        responses={
            200: {
                "description": "An endless text/event-stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(401),
        },
    )
    async def events(request: Request, token: str | None = None) -> Response:
        if token:
            try:
                identity: Identity | None = ctx.tokens.verify(token)
            except AuthError as exc:
                raise unauthenticated(request, exc.reason) from None
        else:
            identity = await caller(request)
        if identity is None:
            raise unauthenticated(request, "Authentication required (a token from POST /events/token)")
        return StreamingResponse(
            event_stream(identity),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def event_stream(identity: Identity) -> AsyncIterator[bytes]:
        owners: dict[str, str | None] = {}
        everything = settings.public_reads or identity.admin
        yield b"retry: 2000\n: connected\n\n"
        async with ctx.bus.event_queue() as queue:
            idle = 0.0
            while not ctx.closing.is_set():
                try:
                    event = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    idle += 1.0
                    if idle >= 15.0:
                        idle = 0.0
                        yield b": keepalive\n\n"
                    continue
                if not everything:
                    if event.session_id not in owners:
                        owners[event.session_id] = await tables.session_owner(
                            ctx.read_model, event.session_id
                        )
                    if owners[event.session_id] != identity.owner:
                        continue
                yield f"event: session\ndata: {event.model_dump_json(exclude_none=True)}\n\n".encode()

    # -- dashboard --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/dashboard/example", include_in_schema=False)
    async def example() -> Response:
        from shared.client import read_request_file

        with as_file(examples.example("hello-notebook.yaml")) as path:
            document = read_request_file(path)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return Response(text, media_type="application/yaml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- OpenAPI ----------------------------------------------------------------------------------

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
            description="JSON and YAML in both directions; YAML when a request names neither "
            "Content-Type nor Accept. Authenticate with HTTP Basic or an OIDC bearer token.",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _, extra = models_json_schema(
            [
                (ExecutionRequest, "validation"),
                (EnumValueUpdate, "validation"),
                (views.IdentityRequest, "validation"),
            ],
            ref_template="#/components/schemas/{model}",
        )
        for name, definition in extra.get("$defs", {}).items():
            components.setdefault(name, definition)
        schemes = schema["components"].setdefault("securitySchemes", {})
        schemes["basic"] = {"type": "http", "scheme": "basic"}
        schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation["security"] = [{"basic": []}, {"bearer": []}]
                for response in operation.get("responses", {}).values():
                    content = response.get("content") or {}
                    if "application/json" in content:
                        content.setdefault("application/yaml", content["application/json"])
        stream = schema["paths"].get("/events", {}).get("get", {}).get("responses", {}).get("200", {})
        stream["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
