"""What every request must satisfy before any route sees it, as one pure ASGI middleware.

- A write (POST, PUT, PATCH, DELETE) from another origin is refused: 403 ``urn:cross-origin``
  (the rules are in ``origins``).
- A body must say it is JSON or YAML: 415 ``urn:unsupported-media-type``. The types a browser may send
  to another origin without asking first (``text/plain``, the form types, none at all) are exactly the
  ones refused, so a page elsewhere cannot post a document with the caller's credentials.
- A body may not pass ``MAX_DOCUMENT_BYTES``: 413 ``urn:too-large`` at once when ``Content-Length``
  says so, and otherwise as soon as the bytes read pass it, without reading the rest.

A refusal sent before the body was read asks the server to close the connection (``Connection:
close``): uvicorn would otherwise go on reading, and dropping, the rest of the body.

It is plain ASGI, not ``BaseHTTPMiddleware``, which would run the app in another task and read the
body through a stream of its own.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.offers.http.negotiation import format_of
from services.offers.http.origins import write_refusal
from services.offers.http.responses import ApiError, error_response
from shared.models import MAX_DOCUMENT_BYTES

ACCEPTED_TYPES = (
    "JSON (application/json or application/*+json) or YAML (application/yaml, application/x-yaml, text/yaml)"
)


class BodyTooLarge(ApiError):
    """Raised from ``receive`` when the bytes read pass the limit; the app's ApiError handler (or the
    guard, if it reaches it) answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "urn:too-large",
            "The document is larger than the limit of ${limit} bytes",
            headers={"Connection": "close"},
            limit=limit,
        )


def declared_length(headers: Headers) -> int | None:
    """``Content-Length`` as a number; None without one; ``ApiError`` 400 for one that is not a number."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ApiError(400, "urn:bad-request", "Content-Length is not a number of bytes")
    return int(value)


def has_body(headers: Headers, length: int | None) -> bool:
    """Whether a request carries a body: a positive ``Content-Length`` or a chunked one (even empty)."""
    if length is not None:
        return length > 0
    return "chunked" in headers.get("transfer-encoding", "").lower()


def refusal(method: str, headers: Headers, allowed_origins: frozenset[str], limit: int) -> ApiError | None:
    """Why the request is refused before the app sees it, or None."""
    reason = write_refusal(method, headers.get("origin"), headers.get("sec-fetch-site"), allowed_origins)
    if reason is not None:
        return ApiError(403, "urn:cross-origin", "${reason}", reason=reason)
    try:
        length = declared_length(headers)
    except ApiError as error:
        return error
    if not has_body(headers, length):
        return None
    content_type = headers.get("content-type")
    if format_of(content_type) is None:
        return ApiError(
            415,
            "urn:unsupported-media-type",
            "A request body must be ${accepted}; this one ${found}",
            accepted=ACCEPTED_TYPES,
            found=f"is of type {content_type[:100]}" if content_type else "has no Content-Type",
        )
    if length is not None and length > limit:
        return ApiError(
            413,
            "urn:too-large",
            "The document is ${size} bytes; the limit is ${limit}",
            size=length,
            limit=limit,
        )
    return None


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, allowed_origins: frozenset[str], limit: int = MAX_DOCUMENT_BYTES
    ) -> None:
        self.app = app
        self.allowed_origins = allowed_origins
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refused = refusal(scope["method"], headers, self.allowed_origins, self.limit)
        if refused is not None:
            await _answer(scope, receive, send, refused)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as error:
            if started:  # the answer is on its way: the server ends the connection
                raise
            await _answer(scope, receive, send, error)


async def _answer(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    error.headers.setdefault("Connection", "close")
    response = error_response(Request(scope), error)
    await response(scope, receive, send)
