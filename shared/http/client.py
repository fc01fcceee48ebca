"""One HTTP client for the platform plugins and Rucio: build, authenticate, trace, retry.

`HttpApi` holds one pooled `httpx.AsyncClient` per event loop (its connections belong to the loop
that made them). Every request is one OpenTelemetry CLIENT span (method, URL without credentials,
status; `traceparent` is sent on), with the client's token in the headers it names. `call` runs one
retry loop (`shared.http.retry`) over single attempts, judged by the client's `RetryRules`:

* connect errors (nothing was sent) are always retried; other transport errors and timeouts too,
  except for a request that is not idempotent, which raises `InDoubt(no_answer=True)`;
* a refusal of the credentials re-reads a token file and resends at once, once per call; after that
  the answer is returned for the client to word;
* a retryable status is retried (its `Retry-After` honoured), except for a request that is not
  idempotent when the status does not prove the server did nothing: `InDoubt(no_answer=False)`;
* every other answer is returned as it is.

`attempt` is one try on its own, for clients that compose a retry loop of their own steps (a create
that looks for what an earlier try may have made: `create_without_duplicates`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from shared.http.retry import CallState, HttpLayerError, Retry, RetryPolicy, retry_after_seconds, retrying
from shared.http.rules import RETRY_AFTER_STATUSES, RetryRules, first_line
from shared.http.settings import HttpSettings
from shared.http.tokens import TokenSource

log = logging.getLogger(__name__)

T = TypeVar("T")
AuthHeaders = Callable[[str], dict[str, str]]
AttributeValue = str | int | list[int]


class InDoubt(HttpLayerError):
    """A request that is not idempotent failed in a way that leaves open whether it took effect.

    `no_answer`: nothing came back at all (the server may still be working on it).
    """

    def __init__(self, reason: str, *, no_answer: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_answer = no_answer


class HttpStatusError(HttpLayerError):
    """A final answer that a download cannot use (not retried)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, transient=False)
        self.status = status


class TooLarge(HttpLayerError):
    def __init__(self, url: str, max_bytes: int) -> None:
        super().__init__(f"{url} is larger than {max_bytes} bytes", transient=False)
        self.url = url
        self.max_bytes = max_bytes


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_client(
    base_url: str = "",
    *,
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
    follow_redirects: bool = False,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """The one way an `httpx.AsyncClient` is made for a platform API or Rucio."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s),
        transport=transport,
        follow_redirects=follow_redirects,
        headers=dict(headers or {}),
    )


def safe_url(url: httpx.URL) -> str:
    """The URL for spans and messages: no user info (our APIs put no secret in the query)."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port}" if url.port else f"{url.scheme}://{url.host}"


class HttpApi:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        policy: RetryPolicy,
        rules: RetryRules,
        tracer_name: str,
        tokens: TokenSource | None = None,
        auth: AuthHeaders = bearer,
        headers: Mapping[str, str] | None = None,
        span_attributes: Mapping[str, AttributeValue] | None = None,
        follow_redirects: bool = False,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.policy = policy
        self.rules = rules
        self.tokens = tokens
        self._auth = auth
        self._headers = dict(headers or {})
        self._span_attributes = dict(span_attributes or {})
        self._follow_redirects = follow_redirects
        self._tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_settings(cls, settings: HttpSettings, base_url: str, **options: Any) -> HttpApi:
        """An API client with the timeout and retry policy of a client's settings."""
        return cls(base_url, timeout_s=settings.timeout_s, policy=settings.retry_policy(), **options)

    def url(self, path: str) -> str:
        return self.base_url + path

    def rebase(self, base_url: str) -> None:
        """Send the next requests to `base_url` (a service found again through a registry); the
        pooled connections stay, so a move within one host costs no new connection."""
        self.base_url = base_url.rstrip("/")
        if self._client is not None:
            self._client.base_url = httpx.URL(self.base_url)

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            self._client = build_client(
                self.base_url,
                timeout_s=self.timeout_s,
                transport=self._transport,
                follow_redirects=self._follow_redirects,
                headers=self._headers,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.aclose()
        self._client = None

    def redact(self, text: str) -> str:
        return self.tokens.redact(text) if self.tokens is not None else text

    # -- calls ----------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        rules: RetryRules | None = None,
        what: str | None = None,
        **request: Any,
    ) -> httpx.Response:
        """One API call: attempts until an answer that is not retried, else `GaveUp` or `InDoubt`.

        `request` takes `params`, `json`, `content`, `headers`, `route` (the span's name, the path
        with ids as placeholders) and `attributes` (more span attributes).
        """

        async def once(state: CallState) -> httpx.Response:
            return await self.attempt(method, path, state, idempotent=idempotent, rules=rules, **request)

        return await retrying(self.policy, once, what or f"{method} {self.url(path)}")

    async def attempt(
        self,
        method: str,
        path: str,
        state: CallState,
        *,
        idempotent: bool = True,
        rules: RetryRules | None = None,
        **request: Any,
    ) -> httpx.Response:
        """One try: the answer when it is final; `Retry` or `InDoubt` when it is not."""
        rules = rules or self.rules
        async with self._exchange(
            method, path, state, idempotent, rules, stream=False, **request
        ) as response:
            return response

    async def receive(
        self,
        path: str,
        consume: Callable[[httpx.Response], Awaitable[T]],
        *,
        missing: Callable[[], T] | None = None,
        what: str | None = None,
        **request: Any,
    ) -> T:
        """GET `path` and hand the streamed answer to `consume` (the whole is retried); a 404 gives
        `missing()`, or without it an `HttpStatusError` like other final failures."""

        async def once(state: CallState) -> T:
            async with self._exchange(
                "GET", path, state, True, self.rules, stream=True, **request
            ) as response:
                if response.status_code == 404 and missing is not None:
                    return missing()
                if response.status_code >= 400:  # final: the rules retried what was worth it
                    raise HttpStatusError(
                        f"HTTP {response.status_code} fetching {safe_url(response.request.url)}",
                        response.status_code,
                    )
                try:
                    return await consume(response)
                except httpx.TimeoutException:
                    raise Retry(self.rules.timeout_reason(self.timeout_s)) from None
                except httpx.TransportError as error:
                    raise Retry(_transport_reason(error, response.request.url)) from None

        return await retrying(self.policy, once, what or f"GET {self.url(path)}")

    @asynccontextmanager
    async def _exchange(
        self,
        method: str,
        path: str,
        state: CallState,
        idempotent: bool,
        rules: RetryRules,
        *,
        stream: bool,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        route: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        client = self._http()
        sent = dict(headers or {})
        if self.tokens is not None:
            await self.tokens.ready()
            sent |= self._auth(self.tokens.current())
        request = client.build_request(method, path, params=params, json=json, content=content, headers=sent)
        with self._span(method, route, request.url, state.resend, attributes) as span:
            propagate.inject(request.headers)
            try:
                response = await client.send(request, stream=stream)
            except httpx.TransportError as error:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if isinstance(error, httpx.TimeoutException) and not unsent:
                    reason = rules.timeout_reason(self.timeout_s)
                else:
                    reason = _transport_reason(error, request.url)
                if not idempotent and not unsent:
                    raise InDoubt(reason, no_answer=True) from None
                raise Retry(reason) from None
            if stream and response.status_code >= 400:
                await response.aread()  # an error's body is small, and says what went wrong
            _record_answer(span, response, rules)
        try:
            log.debug("%s %s -> %s", method, safe_url(request.url), response.status_code)
            self._judge(response, state, idempotent, rules)
            yield response
        finally:
            await response.aclose()

    def _judge(self, response: httpx.Response, state: CallState, idempotent: bool, rules: RetryRules) -> None:
        """Raise `Retry` or `InDoubt` for an answer that is not final; return for one that is."""
        if rules.auth_refused(response):
            if not state.reauthenticated and self.tokens is not None and self.tokens.refresh():
                # The token may have been renewed in its file since it was read: read it, resend once.
                state.reauthenticated = True
                log.info("%s refused the token: re-read %s", self.base_url, self.tokens.describe())
                raise Retry(f"HTTP {response.status_code}: token refused, re-read", pause=0.0)
            return
        if not rules.retryable(response):
            return
        reason = self.redact(rules.status_reason(response))
        if not idempotent and not rules.unprocessed(response):
            raise InDoubt(reason, no_answer=False)
        retry_after = None
        if response.status_code in RETRY_AFTER_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise Retry(reason, retry_after=retry_after)

    @contextmanager
    def _span(
        self,
        method: str,
        route: str | None,
        url: httpx.URL,
        resend: int,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> Iterator[Span]:
        shown = safe_url(url)
        values: dict[str, AttributeValue] = {
            "http.request.method": method,
            "http.method": method,  # the older semantic conventions, still read by many back ends
            "url.full": shown,
            "http.url": shown,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            **self._span_attributes,
            **(attributes or {}),
        }
        if resend:
            values["http.request.resend_count"] = resend
        name = f"{method} {route}" if route else method
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=values, record_exception=False
        ) as span:
            yield span


def _record_answer(span: Span, response: httpx.Response, rules: RetryRules) -> None:
    status = response.status_code
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("http.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    if not response.is_stream_consumed:
        return  # a download's body is not read here
    for key, value in rules.span_attributes(response).items():
        span.set_attribute(key, value)


def _transport_reason(error: httpx.TransportError, url: httpx.URL) -> str:
    detail = first_line(str(error)) or "no answer"
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach {origin(url)} ({type(error).__name__}: {detail})"
    return f"connection failed ({type(error).__name__}: {detail})"


async def write_to(target: Path, max_bytes: int, response: httpx.Response) -> None:
    """Stream an answer into `target` (through a `.part` file), at most `max_bytes` of it."""
    partial = target.with_name(target.name + ".part")
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(safe_url(response.request.url), max_bytes)
                out.write(chunk)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


async def read_at_most(max_bytes: int, response: httpx.Response) -> bytes:
    """The whole answer, counted while streaming (Content-Length may be absent or wrong)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(safe_url(response.request.url), max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)
