"""Ask for offers, or run at once, and read the offer sets that answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.offers import store as tables
from services.offers.http import openapi, views
from services.offers.http.access import Reader, User, check_read
from services.offers.http.auth import Identity
from services.offers.http.context import Context, HttpContext
from services.offers.http.responses import ApiError, on_bus, prefers_body, read_body, respond
from services.offers.http.updates import decide
from shared.lifecycle import Phase
from shared.models import ComponentMetadata, OfferSetResponse, ScheduledExecutionSession, to_jsonable

router = APIRouter()


async def _submit(request: Request, identity: Identity, ctx: HttpContext) -> OfferSetResponse:
    """Publish the request's body with the caller as its owner, and wait for the offer set."""
    raw, _ = await read_body(request)
    offerset: OfferSetResponse = await on_bus(lambda: ctx.bus.submit(identity.owner, raw, str(uuid4())))
    return offerset


def _see_other(request: Request, document: dict[str, Any], location: str) -> Response:
    """303 to where the document lives, with the document; 200 if the caller prefers just the body."""
    if prefers_body(request):
        return respond(request, document)
    return respond(request, document, 303, {"Location": location})


async def _offerset_document(ctx: HttpContext, offerset_id: str) -> dict[str, Any] | None:
    row = await tables.offerset(ctx.read_model, offerset_id)
    if row is None:
        return None
    return views.offerset_document(row, await tables.offerset_sessions(ctx.read_model, offerset_id))


@router.post(
    "/requests",
    tags=["execution broker"],
    summary="Ask for offers: 303 to the offer set, with the offer set in the body (YES or NO)",
    response_model=None,
    status_code=303,
    openapi_extra=openapi.body("ExecutionRequest"),
    responses={
        303: openapi.see_other(OfferSetResponse, "The offer set (YES or NO), also at Location"),
        200: {
            "model": OfferSetResponse,
            "description": "The offer set (with Prefer: return=representation)",
        },
        **openapi.errors(401, 413, 415, 422, 504),
    },
)
async def post_requests(request: Request, identity: User, ctx: Context) -> Response:
    offerset = await _submit(request, identity, ctx)
    offerset_id = offerset.meta.uuid if offerset.meta and offerset.meta.uuid else ""
    document = await _offerset_document(ctx, offerset_id) or to_jsonable(offerset)
    return _see_other(request, document, f"{ctx.base_url}/offersets/{offerset_id}")


@router.post(
    "/direct",
    tags=["execution broker"],
    summary="Run now: ask for offers and accept the first; 303 to the session",
    response_model=None,
    status_code=303,
    openapi_extra=openapi.body("ExecutionRequest"),
    responses={
        303: openapi.see_other(ScheduledExecutionSession, "The accepted session, also at Location"),
        200: {
            "model": ScheduledExecutionSession,
            "description": "The accepted session (with Prefer: return=representation)",
        },
        400: {
            "model": ScheduledExecutionSession,
            "description": "No offer: a FAILED session whose messages say why",
        },
        **openapi.errors(401, 403, 409, 413, 415, 422, 504),
    },
)
async def post_direct(request: Request, identity: User, ctx: Context) -> Response:
    offerset = await _submit(request, identity, ctx)
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
    # Answered once the offers service has accepted it: the session ACCEPTED (or already later).
    document = views.session_document(await decide(ctx, identity, first, Phase.ACCEPTED))
    return _see_other(request, document, f"{ctx.base_url}/sessions/{first}")


@router.get(
    "/offersets/{uuid}",
    tags=["execution broker"],
    summary="An offer set, with each offer's current phase",
    response_model=None,
    responses={
        200: {"model": OfferSetResponse, "description": "The offer set"},
        **openapi.errors(401, 403, 404, 422),
    },
)
async def get_offerset(request: Request, uuid: UUID, identity: Reader, ctx: Context) -> Response:
    offerset_id = str(uuid)
    row = await tables.offerset(ctx.read_model, offerset_id)
    if row is None:
        raise ApiError(404, "urn:not-found", "There is no offer set ${offerset}", offerset=offerset_id)
    check_read(ctx, identity, row.owner, "offer set", offerset_id)
    return respond(
        request, views.offerset_document(row, await tables.offerset_sessions(ctx.read_model, offerset_id))
    )
