"""Sessions: the caller's list, one session with its legal updates, its components and its history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.offers import domain
from services.offers import store as tables
from services.offers.http import openapi, views
from services.offers.http.access import Reader, User, readable_session
from services.offers.http.context import Context
from services.offers.http.responses import ApiError, read_body, respond
from services.offers.http.updates import decide
from shared.lifecycle import Phase
from shared.models import MessageItem, ScheduledExecutionSession
from shared.telemetry import trace_id_from_headers

router = APIRouter()


@router.get(
    "/sessions",
    tags=["execution broker"],
    summary="The caller's sessions, newest first (all sessions for the admin)",
    response_model=None,
    responses={200: {"model": views.SessionList, "description": "Sessions"}, **openapi.errors(401, 422)},
)
async def list_sessions(
    request: Request,
    identity: User,
    ctx: Context,
    phase: Annotated[Phase | None, Query(description="Only sessions in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    owner = None if identity.admin else identity.owner
    rows = await tables.sessions(ctx.read_model, owner, phase, limit)
    return respond(request, {"sessions": [views.session_document(row) for row in rows]})


@router.get(
    "/sessions/{uuid}",
    tags=["execution broker"],
    summary="A session: current phase, legal updates (meta.options), messages, connectors, outputs",
    response_model=None,
    responses={
        200: {"model": ScheduledExecutionSession, "description": "The session"},
        **openapi.errors(401, 403, 404, 422),
    },
)
async def get_session(request: Request, uuid: UUID, identity: Reader, ctx: Context) -> Response:
    return respond(request, views.session_document(await readable_session(ctx, str(uuid), identity)))


@router.post(
    "/sessions/{uuid}",
    tags=["execution broker"],
    summary="Update a session: an EnumValueUpdate of path 'phase' (ACCEPTED, REJECTED, CANCELLED)",
    response_model=None,
    openapi_extra=openapi.body("EnumValueUpdate"),
    responses={
        200: {"model": ScheduledExecutionSession, "description": "The updated session"},
        **openapi.errors(401, 403, 404, 409, 413, 415, 422, 504),
    },
)
async def update_session(request: Request, uuid: UUID, identity: User, ctx: Context) -> Response:
    session_id = str(uuid)
    _, body = await read_body(request)
    requested = domain.parse_update(body, datetime.now(UTC))
    if isinstance(requested, MessageItem):
        raise ApiError.of(422, [requested])
    if await tables.session_owner(ctx.read_model, session_id) is None:
        raise ApiError(404, "urn:not-found", "There is no session ${session}", session=session_id)
    # Answered once the offers service has decided: the session in its new phase, or the refusal.
    return respond(request, views.session_document(await decide(ctx, identity, session_id, requested)))


def _component_route(role: str) -> None:
    async def get_component(request: Request, uuid: UUID, identity: Reader, ctx: Context) -> Response:
        row = await readable_session(ctx, str(uuid), identity)
        document = views.component_document(row, role)
        if document is None:
            raise ApiError(
                404, "urn:not-found", "Session ${session} has no ${role}", session=str(uuid), role=role
            )
        return respond(request, document)

    router.add_api_route(
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
            **openapi.errors(401, 403, 404, 422),
        },
    )


_component_route("executable")
_component_route("compute")


@router.get(
    "/sessions/{uuid}/events",
    tags=["dashboard"],
    summary="The phases a session went through (from the events stream) and its trace",
    response_model=None,
    responses={
        200: {"model": views.SessionHistory, "description": "History"},
        **openapi.errors(401, 403, 404, 422),
    },
)
async def session_history(request: Request, uuid: UUID, identity: Reader, ctx: Context) -> Response:
    row = await readable_session(ctx, str(uuid), identity)
    events = await ctx.bus.history(row.session_id)
    trace_id = next((e.trace_id for e in events if e.trace_id), None) or trace_id_from_headers(row.trace)
    trace_url = f"{ctx.settings.jaeger_url.rstrip('/')}/trace/{trace_id}" if trace_id else None
    history = views.SessionHistory(
        session=row.session_id,
        trace_id=trace_id,
        trace_url=trace_url,
        events=[e.model_dump(mode="json", exclude_none=True) for e in events],
    )
    return respond(request, history.model_dump(mode="json", exclude_none=True))
