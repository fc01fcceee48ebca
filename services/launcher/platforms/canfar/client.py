"""HTTP client for the CANFAR skaha sessions API, as the `canfar` platform uses it.

Each HTTP attempt is one OpenTelemetry CLIENT span (method, URL without credentials, status). Errors
that may pass (5xx, 429, timeouts, connection errors) are retried with jittered exponential back-off,
honouring `Retry-After`; when the tries are used up the call raises a transient PlatformError. A 401
re-reads the token (a token file may have been renewed) and retries once; a second 401, or a 403,
is a PlatformError that names where the token came from, never the token itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

TRACER_NAME = "execution_broker.platforms.canfar"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that tell us the server did not act on the request, so even a create may be resent.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


class TokenSource:
    """A bearer token from a setting or a file; the file is read again when the server refuses it."""

    def __init__(self, token: str | None, token_file: str | None) -> None:
        self._fixed = token.strip() if token else None
        self._file = Path(token_file).expanduser() if token_file else None
        self._cached: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self._fixed or self._file)

    def describe(self) -> str:
        """Where the token comes from, for messages; never the token itself."""
        if self._file is not None:
            return f"the token file {self._file} (EB_CANFAR_TOKEN_FILE)"
        if self._fixed:
            return "the token in EB_CANFAR_TOKEN"
        return "no token (set EB_CANFAR_TOKEN or EB_CANFAR_TOKEN_FILE)"

    def token(self, *, reload: bool = False) -> str:
        if self._file is not None:
            if reload or self._cached is None:
                try:
                    self._cached = self._file.read_text().strip()
                except OSError as error:
                    raise PlatformError(
                        f"cannot read the CANFAR token file {self._file}: {error.strerror or error}"
                    ) from error
            if not self._cached:
                raise PlatformError(f"the CANFAR token file {self._file} is empty")
            return self._cached
        if self._fixed:
            return self._fixed
        raise PlatformError("no CANFAR token configured: set EB_CANFAR_TOKEN or EB_CANFAR_TOKEN_FILE")

    def redact(self, text: str) -> str:
        for secret in (self._fixed, self._cached):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    # A Retry-After longer than this is not waited for: the call fails (transiently) at once.
    max_retry_after_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Equal-jitter exponential back-off before retry number `attempt` (0-based)."""
        ceiling = min(self.cap_s, self.base_s * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class TransientHttpError(Exception):
    """A create that the server may or may not have carried out (a timeout, a 5xx answer).

    `no_answer` is true when no answer came at all: the server may still be working on it.
    """

    def __init__(self, message: str, *, no_answer: bool) -> None:
        super().__init__(message)
        self.message = message
        self.no_answer = no_answer


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        seconds: float = float(value)
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def first_line(text: str, limit: int = 300) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:limit] if stripped else ""


def _safe_url(url: httpx.URL) -> str:
    """The URL for spans and logs: no user info (the query holds no secrets in this API)."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class SkahaClient:
    def __init__(
        self,
        base_url: str,
        api: str,
        tokens: TokenSource,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.tokens = tokens
        self.timeout_s = timeout_s
        self.retry = retry
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def path(self, *parts: str, api: str | None = None) -> str:
        return "/".join([f"/{api or self.api}", *parts])

    def _http(self) -> httpx.AsyncClient:
        # One pooled client per event loop (a client's connections belong to the loop that made them).
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout_s),
                transport=self._transport,
                follow_redirects=False,
                headers={"User-Agent": "execution-broker-canfar/0.1"},
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.aclose()
        self._client = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: list[tuple[str, str]] | None = None,
        ok: Collection[int] = (200,),
        resend_unprocessed_only: bool = False,
        route: str | None = None,
    ) -> httpx.Response:
        """One API call with retries. Answers whose status is in `ok` are returned, others raise.

        `route` names the span (the path with ids replaced by placeholders).
        `resend_unprocessed_only` (for a create): retry only when the server surely did not act
        (429/503, refused connection); raise TransientHttpError when it may have (timeout, 5xx).
        """
        what = f"{method} {path}"
        reauthenticated = False
        attempt = 0
        while True:
            try:
                response = await self._attempt(method, path, route or path, params, data, resend=attempt)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                reason = f"{type(error).__name__}: {first_line(str(error)) or 'no answer'}"
                unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if resend_unprocessed_only and not unsent:
                    raise TransientHttpError(f"{what}: {reason}", no_answer=True) from error
                attempt = await self._pause_or_give_up(what, reason, attempt, None)
                continue
            status = response.status_code
            if status in ok:
                return response
            if status == 401 and not reauthenticated:
                # The token may have been renewed on disk since we read it: read it again, retry once.
                reauthenticated = True
                self.tokens.token(reload=True)
                log.info("canfar: %s answered 401; retrying once with the token re-read", what)
                continue
            if status in (401, 403):
                raise PlatformError(self._refusal(status, what, response.text))
            if status in RETRYABLE_STATUSES:
                reason = f"HTTP {status} {first_line(self.tokens.redact(response.text), 200)}".strip()
                if resend_unprocessed_only and status not in NOT_PROCESSED_STATUSES:
                    raise TransientHttpError(f"{what}: {reason}", no_answer=False)
                wait = retry_after_seconds(response) if status in NOT_PROCESSED_STATUSES else None
                attempt = await self._pause_or_give_up(what, reason, attempt, wait)
                continue
            detail = first_line(self.tokens.redact(response.text), 500) or response.reason_phrase
            raise PlatformError(f"CANFAR refused {what}: HTTP {status} {detail}")

    async def _pause_or_give_up(self, what: str, reason: str, attempt: int, retry_after: float | None) -> int:
        """Sleep before the next try, or raise a transient PlatformError when the tries are used up."""
        if attempt + 1 >= self.retry.tries:
            raise PlatformError(
                f"CANFAR did not answer {what} after {self.retry.tries} tries (last: {reason})",
                transient=True,
            )
        pause = self.retry.backoff(attempt)
        if retry_after is not None:
            if retry_after > self.retry.max_retry_after_s:
                raise PlatformError(
                    f"CANFAR asked to retry {what} after {retry_after:g} s ({reason})", transient=True
                )
            pause = max(pause, retry_after)
        log.warning("canfar: %s failed (%s); try %d of %d in %.2f s",
                    what, reason, attempt + 2, self.retry.tries, pause)  # fmt: skip
        await asyncio.sleep(pause)
        return attempt + 1

    async def _attempt(
        self,
        method: str,
        path: str,
        route: str,
        params: dict[str, str] | None,
        data: list[tuple[str, str]] | None,
        *,
        resend: int,
    ) -> httpx.Response:
        client = self._http()
        token = self.tokens.token()
        content = urlencode(data) if data is not None else None
        headers = {"Authorization": f"Bearer {token}"}
        if content is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = client.build_request(method, path, params=params, content=content, headers=headers)
        url = _safe_url(request.url)
        attributes: dict[str, Any] = {
            "http.method": method,
            "http.request.method": method,
            "http.url": url,
            "url.full": url,
            "server.address": request.url.host,
        }
        if request.url.port:
            attributes["server.port"] = request.url.port
        if resend:
            attributes["http.request.resend_count"] = resend
        with self._tracer.start_as_current_span(
            f"{method} {route}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            try:
                response = await client.send(request)
            except httpx.HTTPError as error:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            span.set_attribute("http.status_code", response.status_code)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status_code}"))
            return response

    def _refusal(self, status: int, what: str, body: str) -> str:
        source = self.tokens.describe()
        detail = first_line(self.tokens.redact(body), 300)
        if status == 401:
            return (
                f"CANFAR rejected the credentials from {source} (HTTP 401 on {what}, also after re-reading "
                f"it): the token is missing, expired or revoked; renew it"
            )
        return (
            f"CANFAR denied access with the credentials from {source} (HTTP 403 on {what}"
            f"{': ' + detail if detail else ''}): the account is not authorized for the platform"
        )
