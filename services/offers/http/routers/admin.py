"""What only the administrator may do: create local identities (HTTP Basic users)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.offers import store as tables
from services.offers.http import openapi, views
from services.offers.http.access import User
from services.offers.http.auth import USERNAME, hash_password
from services.offers.http.context import Context
from services.offers.http.responses import ApiError, read_body, respond
from services.offers.store import IdentityExists

router = APIRouter()


@router.post(
    "/admin/identities",
    tags=["admin"],
    summary="Create a local identity (HTTP Basic user); admin only",
    response_model=None,
    status_code=201,
    openapi_extra=openapi.body("IdentityRequest"),
    responses={
        201: {"model": views.IdentityCreated, "description": "Created"},
        **openapi.errors(400, 401, 403, 409, 413, 415, 422),
    },
)
async def create_identity(request: Request, identity: User, ctx: Context) -> Response:
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
    if username == ctx.settings.admin_username:
        raise ApiError(409, "urn:identity-exists", "The identity ${username} exists", username=username)
    hashed = await asyncio.to_thread(hash_password, password)
    try:
        identity_id = await tables.create_identity(ctx.read_model, username, hashed)
    except IdentityExists:
        raise ApiError(
            409, "urn:identity-exists", "The identity ${username} exists", username=username
        ) from None
    return respond(request, {"uuid": identity_id, "username": username}, 201)
