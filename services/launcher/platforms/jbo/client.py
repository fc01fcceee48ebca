"""HTTP to the JBO runner: bearer auth, bounded jittered retries, Retry-After, one CLIENT span per call.

Credentials never leave this module except in the Authorization header: messages and logs name the
method and URL only.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # in all, the first included
    base_s: float = 0.5
    max_backoff_s: float = 30.0
    # A Retry-After longer than this is not waited for: the call fails as transient instead.
    max_retry_after_s: float = 120.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class JboHttp:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        token_file: str | None,
        timeout_s: float,
        policy: RetryPolicy,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._token_file = token_file
        self._timeout = timeout_s
        self._policy = policy
        self._tracer = trace.get_tracer("execution_broker.launcher.jbo", tracer_provider=tracer_provider)

    def url(self, path: str) -> str:
        return self.base_url + path

    def _bearer(self) -> str:
        if self._token:
            return self._token
        if self._token_file:
            try:
                token = Path(self._token_file).read_text().strip()
            except OSError as error:
                raise PlatformError(
                    f"cannot read the JBO token file {self._token_file}: {error.strerror}"
                ) from error
            if token:
                return token
        raise PlatformError("the jbo platform has no credentials: set EB_JBO_TOKEN or EB_JBO_TOKEN_FILE")

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """The response of a call that succeeded (2xx, or a status in ok_statuses); else PlatformError."""
        url = self.url(path)
        sent_headers = {"Authorization": f"Bearer {self._bearer()}", "Accept": "application/json"}
        sent_headers |= headers or {}
        policy = self._policy
        last_problem = ""
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            for attempt in range(policy.attempts):
                wait: float | None = None
                with self._tracer.start_as_current_span(method, kind=SpanKind.CLIENT) as span:
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("url.full", url)
                    span.set_attribute("server.address", _host(url))
                    span.set_attribute("server.port", _port(url))
                    if attempt:
                        span.set_attribute("http.request.resend_count", attempt)
                    try:
                        response = await client.request(
                            method, url, json=json_body, params=params, headers=sent_headers
                        )
                    except httpx.TimeoutException as error:
                        span.set_attribute("error.type", "timeout")
                        span.set_status(Status(StatusCode.ERROR, "timeout"))
                        last_problem = f"timed out after {self._timeout:g} s ({type(error).__name__})"
                    except httpx.TransportError as error:
                        span.set_attribute("error.type", type(error).__name__)
                        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                        last_problem = f"cannot reach the runner ({type(error).__name__})"
                    else:
                        status = response.status_code
                        span.set_attribute("http.response.status_code", status)
                        log.info("jbo: %s %s -> %s", method, url, status)
                        if status < 400 or status in ok_statuses:
                            return response
                        span.set_attribute("error.type", str(status))
                        span.set_status(Status(StatusCode.ERROR, str(status)))
                        if status in (401, 403):
                            raise PlatformError(
                                f"the JBO runner refused the credentials (HTTP {status} on {method} {url}): "
                                "check EB_JBO_TOKEN / EB_JBO_TOKEN_FILE"
                            )
                        if status not in RETRYABLE_STATUSES:
                            raise PlatformError(
                                f"the JBO runner answered HTTP {status} to {method} {url}: "
                                + _snippet(response)
                            )
                        last_problem = f"HTTP {status}"
                        if status in (429, 503):
                            wait = retry_after_seconds(response.headers.get("Retry-After"))
                            if wait is not None and wait > policy.max_retry_after_s:
                                raise PlatformError(
                                    f"the JBO runner is unavailable (HTTP {status} on {method} {url}) and "
                                    f"asks to retry after {wait:g} s",
                                    transient=True,
                                )
                if attempt == policy.attempts - 1:
                    break
                if wait is None:
                    # Full jitter: a random wait up to the exponential bound, so clients spread out.
                    wait = random.uniform(0, min(policy.max_backoff_s, policy.base_s * 2**attempt))
                log.info("jbo: %s %s: %s; retrying in %.2f s", method, url, last_problem, wait)
                await asyncio.sleep(wait)
        raise PlatformError(
            f"the JBO runner did not answer {method} {url} "
            f"after {policy.attempts} attempt(s): {last_problem}",
            transient=True,
        )

    async def download(self, path: str, target: Path, max_bytes: int) -> bool:
        """Stream a file to target (True), or False if the runner has none (404). Bounded in size."""
        url = self.url(path)
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            with self._tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as span:
                span.set_attribute("http.request.method", "GET")
                span.set_attribute("url.full", url)
                span.set_attribute("server.address", _host(url))
                span.set_attribute("server.port", _port(url))
                try:
                    async with client.stream("GET", url, headers=headers) as response:
                        span.set_attribute("http.response.status_code", response.status_code)
                        if response.status_code == 404:
                            return False
                        if response.status_code >= 400:
                            span.set_status(Status(StatusCode.ERROR, str(response.status_code)))
                            transient = response.status_code in RETRYABLE_STATUSES
                            raise PlatformError(
                                f"HTTP {response.status_code} fetching {url}", transient=transient
                            )
                        partial = target.with_name(target.name + ".part")
                        size = 0
                        try:
                            with partial.open("wb") as out:
                                async for chunk in response.aiter_bytes():
                                    size += len(chunk)
                                    if size > max_bytes:
                                        raise PlatformError(f"{url} is larger than {max_bytes} bytes")
                                    out.write(chunk)
                            partial.replace(target)
                        finally:
                            partial.unlink(missing_ok=True)
                except httpx.HTTPError as error:
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                    raise PlatformError(
                        f"cannot fetch {url}: {type(error).__name__}", transient=True
                    ) from error
        log.info("jbo: fetched %s (%.1f s)", url, time.monotonic() - started)
        return True


def _host(url: str) -> str:
    return httpx.URL(url).host


def _port(url: str) -> int:
    parsed = httpx.URL(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] or "(empty body)"
