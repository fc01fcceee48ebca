"""Who is calling, as FastAPI dependencies, and what they may read.

A route states what it needs with a parameter: ``User`` (authenticated, by HTTP Basic or an OIDC
bearer token) or ``Reader`` (anyone, when reads are public). The identity's ``owner`` is the owner
token the route publishes with on the bus.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from services.offers import store as tables
from services.offers.http.auth import AuthError, Identity
from services.offers.http.context import Context, HttpContext
from services.offers.http.login_limits import Refused, basic_user
from services.offers.http.responses import ApiError
from services.offers.store import SessionRow


def unauthenticated(request: Request, ctx: HttpContext, reason: str) -> ApiError:
    # The dashboard asks for no Basic challenge, so the browser shows no login dialog of its own.
    challenge = ctx.auth.challenge()
    if request.headers.get("x-requested-with"):
        challenge = 'Dashboard realm="execution-broker"'
    return ApiError(
        401, "urn:unauthenticated", "${reason}", reason=reason, headers={"WWW-Authenticate": challenge}
    )


async def caller(request: Request, ctx: HttpContext) -> Identity | None:
    """The caller named by the Authorization header, None without one; 401 if it does not verify,
    429 while its user name or address has failed too often (then the password is not checked)."""
    authorization = request.headers.get("authorization")
    user = basic_user(authorization)
    if user is None:  # no credentials, or a bearer token: no password hash to spend
        try:
            return await ctx.auth.identify(authorization)
        except AuthError as exc:
            raise unauthenticated(request, ctx, exc.reason) from None
    address = request.client.host if request.client else "unknown"
    attempt = ctx.logins.begin(user, address, time.monotonic())
    if isinstance(attempt, Refused):
        raise too_many_failures(attempt)
    try:
        identity = await ctx.auth.identify(authorization)
    except AuthError as exc:
        ctx.logins.failed(attempt, time.monotonic())
        raise unauthenticated(request, ctx, exc.reason) from None
    except BaseException:
        ctx.logins.abandoned(attempt)
        raise
    ctx.logins.succeeded(attempt)
    return identity


def too_many_failures(refused: Refused) -> ApiError:
    return ApiError(
        429,
        "urn:too-many-login-failures",
        "Too many failed logins ${reason}; try again in ${seconds} s",
        headers={"Retry-After": str(refused.retry_after_s)},
        reason=refused.reason,
        seconds=refused.retry_after_s,
    )


async def user(request: Request, ctx: Context) -> Identity:
    identity = await caller(request, ctx)
    if identity is None:
        raise unauthenticated(request, ctx, "Authentication required (HTTP Basic or an OIDC bearer token)")
    return identity


async def reader(request: Request, ctx: Context) -> Identity | None:
    identity = await caller(request, ctx)
    if identity is None and not ctx.settings.public_reads:
        raise unauthenticated(request, ctx, "Authentication required to read sessions")
    return identity


User = Annotated[Identity, Depends(user)]
Reader = Annotated[Identity | None, Depends(reader)]


def may_read(ctx: HttpContext, identity: Identity | None, owner: str) -> bool:
    return ctx.settings.public_reads or (identity is not None and (identity.owner == owner or identity.admin))


def check_read(ctx: HttpContext, identity: Identity | None, owner: str, what: str, ident: str) -> None:
    if not may_read(ctx, identity, owner):
        raise ApiError(
            403, "urn:forbidden", "Only the owner of ${what} ${id} may read it", what=what, id=ident
        )


async def readable_session(ctx: HttpContext, session_id: str, identity: Identity | None) -> SessionRow:
    """A session the caller may read: 404 if there is none, 403 if it is someone else's."""
    row = await tables.session(ctx.read_model, session_id)
    if row is None:
        raise ApiError(404, "urn:not-found", "There is no session ${session}", session=session_id)
    check_read(ctx, identity, row.owner, "session", session_id)
    return row
