"""What goes in and comes out of every route: JSON or YAML bodies, and errors as schema messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from services.offers.domain import session_options
from services.offers.http import views
from services.offers.http.negotiation import Format, render, response_format
from shared.client import BrokerTimeout, RequestTooLarge
from shared.lifecycle import Phase
from shared.messages import UpdateResult
from shared.models import DocumentError, EnumValueOption, MessageItem, load_document, to_jsonable

# Update results of the offers service → HTTP status.
_UPDATE_STATUS = {
    "urn:forbidden": 403,
    "urn:illegal-transition": 409,
    "urn:offer-expired": 409,
    "urn:session-ended": 409,
    "urn:not-found": 404,
    "urn:input-syntax-fail": 422,
    "urn:not-supported": 422,
    "urn:invalid-value": 422,
}


#: Headers of every HTML page (the dashboard, /docs): scripts, styles and connections from the broker
#: itself only, no inline script or style, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
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
        #: The updates legal now, with a refused update (``update_error``).
        self.options: list[EnumValueOption] = []

    @classmethod
    def of(cls, status: int, messages: list[MessageItem]) -> ApiError:
        error = cls(status, "urn:error", "error")
        error.messages = messages
        return error


def negotiate(request: Request) -> Format:
    return response_format(request.headers.get("accept"), request.headers.get("content-type"))


def respond(
    request: Request, document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    fmt = negotiate(request)
    return Response(render(document, fmt), status_code=status, media_type=fmt.value, headers=headers)


def error_response(request: Request, error: ApiError) -> Response:
    body = to_jsonable(views.ErrorResponse(messages=error.messages, options=error.options or None))
    return respond(request, body, error.status, error.headers)


def prefers_body(request: Request) -> bool:
    """``Prefer: return=representation`` asks for 200 with the body instead of the 303 redirect."""
    return "return=representation" in request.headers.get("prefer", "").lower()


async def read_body(request: Request) -> tuple[bytes, Any]:
    """The raw body and its parsed document, in JSON or YAML.

    The guard middleware (``guard.RequestGuard``) has already refused a body that is not JSON or YAML
    or that passes ``MAX_DOCUMENT_BYTES``, for every route, before any of it was read.
    """
    raw = await request.body()
    try:
        document = load_document(raw, request.headers.get("content-type"))
    except DocumentError as exc:
        raise ApiError(
            422, "urn:input-syntax-fail", "The document could not be parsed: ${reason}", reason=exc.reason
        ) from None
    return raw, document


async def on_bus(call: Callable[[], Awaitable[Any]]) -> Any:
    """A call to the broker's services, with their silence and their size limit as HTTP errors."""
    try:
        return await call()
    except BrokerTimeout as exc:
        raise ApiError(504, "urn:timeout", "The broker did not answer: ${reason}", reason=exc) from None
    except RequestTooLarge as exc:
        raise ApiError(413, "urn:too-large", "${reason}", reason=exc) from None


def update_error(result: UpdateResult) -> ApiError:
    """A refused update: its messages, and the updates legal in the phase the session is in (the
    offers service names that phase only to the session's owner)."""
    kinds = [m.kind for m in result.messages]
    status = next((_UPDATE_STATUS[k] for k in kinds if k in _UPDATE_STATUS), 500)
    error = ApiError.of(status, list(result.messages))
    if result.phase is not None and result.phase in Phase.__members__:
        error.options = session_options(Phase(result.phase))
    return error
