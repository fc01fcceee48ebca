"""Live events: every phase change of the caller's sessions as server-sent events.

EventSource cannot send an Authorization header, so the dashboard first trades its credentials for
a short-lived token (``POST /events/token``) and passes it in the query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.offers import store as tables
from services.offers.http import openapi, views
from services.offers.http.access import User, caller, unauthenticated
from services.offers.http.auth import AuthError, Identity
from services.offers.http.context import Context, HttpContext
from services.offers.http.responses import respond
from shared.asyncapi import installed_document

router = APIRouter()


@router.post(
    "/events/token",
    tags=["dashboard"],
    summary="A short-lived token for GET /events?token=… (EventSource cannot send headers)",
    response_model=None,
    responses={200: {"model": views.EventToken, "description": "The token"}, **openapi.errors(401)},
)
async def event_token(request: Request, identity: User, ctx: Context) -> Response:
    token, expires = ctx.tokens.issue(identity)
    return respond(request, {"token": token, "expires": expires})


@router.get(
    "/events",
    tags=["dashboard"],
    summary="Server-sent events: every phase change of the caller's sessions",
    response_model=None,
    responses={
        200: {
            "description": "An endless text/event-stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **openapi.errors(401),
    },
)
async def events(request: Request, ctx: Context, token: str | None = None) -> Response:
    if token:
        try:
            identity: Identity | None = ctx.tokens.verify(token)
        except AuthError as exc:
            raise unauthenticated(request, ctx, exc.reason) from None
    else:
        identity = await caller(request, ctx)
    if identity is None:
        raise unauthenticated(request, ctx, "Authentication required (a token from POST /events/token)")
    return StreamingResponse(
        _event_stream(ctx, identity),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(ctx: HttpContext, identity: Identity) -> AsyncIterator[bytes]:
    owners: dict[str, str | None] = {}
    everything = ctx.settings.public_reads or identity.admin
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
                    owners[event.session_id] = await tables.session_owner(ctx.read_model, event.session_id)
                if owners[event.session_id] != identity.owner:
                    continue
            yield f"event: session\ndata: {event.model_dump_json(exclude_none=True)}\n\n".encode()


# -- the bus contract -------------------------------------------------------------------------------


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi(ctx: Context) -> JSONResponse:
    """The AsyncAPI 3 document of the bus, as public as /openapi.json: it describes, it grants nothing."""
    if ctx.asyncapi is None:
        # Built once, off the event loop: it builds every installed service's wiring table.
        ctx.asyncapi = await asyncio.to_thread(installed_document)
    return JSONResponse(ctx.asyncapi)
