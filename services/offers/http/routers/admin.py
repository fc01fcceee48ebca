"""What only an administrator may do: manage the local identities (HTTP Basic users), kept in the
identity store (`shared.auth.identities`) that the auth callout is to share.

The store is the one ``broker users`` writes too. A change takes effect on the caller's next
request in every process: `auth.Authenticator` re-reads the identity's stamp on each request
instead of trusting what it verified before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.offers.http import openapi, views
from services.offers.http.access import User
from services.offers.http.auth import Identity
from services.offers.http.context import Context
from services.offers.http.responses import ApiError, read_body, respond
from shared.auth.identities import (
    USERNAME,
    IdentityError,
    IdentityExists,
    IdentityStore,
    LocalIdentity,
    UnknownIdentity,
)

router = APIRouter()
T = TypeVar("T")
_NAME_RULE = "1 to 64 letters, digits or . _ @ + -"


def _require_admin(identity: Identity) -> None:
    if not identity.admin:
        raise ApiError(403, "urn:forbidden", "Only an administrator may manage identities")


def _invalid(fields: str) -> ApiError:
    return ApiError(400, "urn:invalid-value", "Missing or invalid: ${fields}", fields=fields)


def _check_path_name(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise _invalid(f"username ({_NAME_RULE})")


async def _on_store(call: Callable[[], T]) -> T:
    """A blocking store call (SQLite, a password hash) off the event loop, its refusals as HTTP."""
    try:
        return await asyncio.to_thread(call)
    except IdentityExists as exc:
        raise ApiError(409, "urn:identity-exists", "${reason}", reason=str(exc)) from None
    except UnknownIdentity as exc:
        raise ApiError(404, "urn:not-found", "${reason}", reason=str(exc)) from None
    except IdentityError as exc:
        raise ApiError(400, "urn:invalid-value", "${reason}", reason=str(exc)) from None


async def _body(request: Request) -> dict[str, Any]:
    _, body = await read_body(request)  # JSON or YAML, and a mapping (anything else is a 422)
    mapping: dict[str, Any] = body
    return mapping


def _view(identity: LocalIdentity) -> dict[str, Any]:
    return views.IdentityView(
        username=identity.username, admin=identity.admin, disabled=identity.disabled
    ).model_dump()


async def _current(store: IdentityStore, username: str) -> dict[str, Any]:
    found = await _on_store(lambda: store.get(username))
    if found is None:  # deleted from the file between the change and this read
        raise ApiError(404, "urn:not-found", "${reason}", reason=f"there is no identity {username}")
    return _view(found)


@router.get(
    "/admin/identities",
    tags=["admin"],
    summary="The local identities (user name, admin, disabled); admin only",
    response_model=None,
    responses={
        200: {"model": views.IdentityList, "description": "Every local identity"},
        **openapi.errors(401, 403),
    },
)
async def list_identities(request: Request, identity: User, ctx: Context) -> Response:
    _require_admin(identity)
    everyone = await _on_store(ctx.auth.identities.all)
    return respond(request, {"identities": [_view(one) for one in everyone]})


@router.post(
    "/admin/identities",
    tags=["admin"],
    summary="Create a local identity (HTTP Basic user); admin only",
    response_model=None,
    status_code=201,
    openapi_extra=openapi.body("IdentityRequest"),
    responses={
        201: {"model": views.IdentityView, "description": "Created"},
        **openapi.errors(400, 401, 403, 409, 413, 415, 422),
    },
)
async def create_identity(request: Request, identity: User, ctx: Context) -> Response:
    _require_admin(identity)
    body = await _body(request)
    username, password, admin = body.get("username"), body.get("password"), body.get("admin", False)
    problems = []
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        problems.append(f"username ({_NAME_RULE})")
    if not isinstance(password, str) or not password:
        problems.append("password (a non-empty string)")
    if not isinstance(admin, bool):
        problems.append("admin (true or false)")
    if problems:
        raise _invalid(", ".join(problems))
    assert isinstance(username, str) and isinstance(password, str) and isinstance(admin, bool)
    if username == ctx.auth.admin_username:
        # The configured administrator would shadow a local identity of the same name on HTTP.
        raise ApiError(409, "urn:identity-exists", "The identity ${username} exists", username=username)
    store = ctx.auth.identities
    created = await _on_store(lambda: store.add(username, password, admin=admin))
    return respond(request, _view(created), 201)


@router.post(
    "/admin/identities/{username}/disable",
    tags=["admin"],
    summary="Disable a local identity: its next request is refused; admin only",
    response_model=None,
    responses={
        200: {"model": views.IdentityView, "description": "Disabled"},
        **openapi.errors(400, 401, 403, 404),
    },
)
async def disable_identity(request: Request, username: str, identity: User, ctx: Context) -> Response:
    _require_admin(identity)
    _check_path_name(username)
    store = ctx.auth.identities
    await _on_store(lambda: store.disable(username))
    return respond(request, await _current(store, username))


@router.post(
    "/admin/identities/{username}/enable",
    tags=["admin"],
    summary="Enable a disabled local identity again; admin only",
    response_model=None,
    responses={
        200: {"model": views.IdentityView, "description": "Enabled"},
        **openapi.errors(400, 401, 403, 404),
    },
)
async def enable_identity(request: Request, username: str, identity: User, ctx: Context) -> Response:
    _require_admin(identity)
    _check_path_name(username)
    store = ctx.auth.identities
    await _on_store(lambda: store.enable(username))
    return respond(request, await _current(store, username))


@router.put(
    "/admin/identities/{username}/password",
    tags=["admin"],
    summary="Set a local identity's password (a disabled one stays disabled); admin only",
    response_model=None,
    openapi_extra=openapi.body("PasswordRequest"),
    responses={
        200: {"model": views.IdentityView, "description": "The password is set"},
        **openapi.errors(400, 401, 403, 404, 413, 415, 422),
    },
)
async def set_password(request: Request, username: str, identity: User, ctx: Context) -> Response:
    _require_admin(identity)
    _check_path_name(username)
    password = (await _body(request)).get("password")
    if not isinstance(password, str) or not password:
        raise _invalid("password (a non-empty string)")
    store = ctx.auth.identities
    await _on_store(lambda: store.set_password(username, password))
    return respond(request, await _current(store, username))
