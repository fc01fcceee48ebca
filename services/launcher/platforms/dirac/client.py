"""A small client for the Slurm REST API (slurmrestd), used by the `dirac` platform.

What it does for every call:

* JWT auth headers (`X-SLURM-USER-NAME`, `X-SLURM-USER-TOKEN`); on 401, 511 or error 1007 the token
  is read again from its file and the call is retried once. The token never appears in a log line,
  an exception message or a span.
* One CLIENT OpenTelemetry span per HTTP request (method, URL, status), with `traceparent` sent on.
* Bounded retries with jittered exponential back-off on transient failures: no answer (connect
  error, timeout), 502/503/504/429 (Retry-After honoured), and any status, 200 included, whose
  `errors[]` carry a transient Slurm error number. slurmrestd answers most slurmctld errors with
  500 (422 from 26.05) and some with 200, so the decision is made on `errors[].error_number`, not on
  the HTTP status. Exhausted retries raise `PlatformError(transient=True)`.
* A request that is not idempotent (submit) is never retried after an answer that may have been lost
  (timeout, dropped connection, 504): `OutcomeUnknown` is raised so the caller can look first.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

# slurm/slurm_errno.h
SLURM_PROTOCOL_AUTHENTICATION_ERROR = 1007
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
# Errors that say "slurmctld/slurmdbd is busy or unreachable right now", worth retrying.
TRANSIENT_ERROR_NUMBERS = frozenset(
    {
        1001,  # SLURM_COMMUNICATIONS_CONNECTION_ERROR
        1002,  # SLURM_COMMUNICATIONS_SEND_ERROR
        1003,  # SLURM_COMMUNICATIONS_RECEIVE_ERROR
        1004,  # SLURM_COMMUNICATIONS_SHUTDOWN_ERROR
        1800,  # SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR
        1801,  # SLURMCTLD_COMMUNICATIONS_SEND_ERROR
        1802,  # SLURMCTLD_COMMUNICATIONS_RECEIVE_ERROR
        1803,  # SLURMCTLD_COMMUNICATIONS_SHUTDOWN_ERROR
        1804,  # SLURMCTLD_COMMUNICATIONS_BACKOFF (RPC rate limit)
        5004,  # SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
        7000,  # ESLURM_DB_CONNECTION
    }
)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 511})
# Statuses after which a lost submit may still have created the job.
UNKNOWN_OUTCOME_STATUSES = frozenset({504})


class OutcomeUnknown(PlatformError):
    """A non-idempotent request whose answer was lost: it may or may not have taken effect."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


@dataclass
class SlurmReply:
    status: int
    body: dict[str, Any]
    retry_after: str | None = None

    @property
    def errors(self) -> list[dict[str, Any]]:
        items = self.body.get("errors")
        return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []

    @property
    def error_numbers(self) -> set[int]:
        return {int(n) for e in self.errors if isinstance(n := e.get("error_number"), int) and n != 0}

    @property
    def failed(self) -> bool:
        """True when slurmrestd reports an error, whatever the HTTP status."""
        return self.status >= 400 or bool(self.error_numbers)

    def describe(self) -> str:
        """The errors as Slurm states them, e.g. 'Invalid partition name specified (error 2000)'."""
        parts = []
        for e in self.errors:
            text = str(e.get("error") or e.get("description") or "error")
            detail = str(e.get("description") or "")
            number = e.get("error_number")
            if detail and detail != text:
                text = f"{text}: {detail}"
            parts.append(f"{text} (error {number})" if number else text)
        return "; ".join(parts) or f"HTTP {self.status}"


class TokenSource:
    """The JWT, from a literal value or a file that an operator (or a token renewer) rewrites."""

    def __init__(self, token: str | None, token_file: Path | None) -> None:
        self._literal = token or None
        self._file = token_file
        self._cached: str | None = None

    @property
    def refreshable(self) -> bool:
        return self._file is not None

    def current(self) -> str:
        if self._cached is None:
            self._cached = self._read()
        return self._cached

    def refresh(self) -> str:
        self._cached = self._read()
        return self._cached

    def _read(self) -> str:
        if self._file is not None:
            try:
                text = self._file.read_text().strip()
            except OSError as error:
                raise PlatformError(
                    f"cannot read the Slurm token file {self._file}: {error.strerror}", transient=True
                ) from error
            # `scontrol token` prints SLURM_JWT=<token>; accept that line as it is.
            text = text.removeprefix("SLURM_JWT=").strip()
            if text:
                return text
            raise PlatformError(f"the Slurm token file {self._file} is empty", transient=True)
        if self._literal:
            return self._literal
        raise PlatformError("no Slurm token configured: set EB_DIRAC_TOKEN or EB_DIRAC_TOKEN_FILE")


@dataclass
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    # A Retry-After longer than this is not waited for: the failure is reported as transient.
    max_retry_after_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Full back-off for `attempt` (0-based), with jitter in [50 %, 100 %]."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return float(ceiling * (0.5 + 0.5 * self.rng.random()))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class SlurmClient:
    """One short-lived client per platform operation (an httpx.AsyncClient is bound to its loop)."""

    def __init__(
        self,
        base_url: str,
        user: str,
        tokens: TokenSource,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        tracer: Tracer,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._tokens = tokens
        self._retry = retry
        self._tracer = tracer
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, follow_redirects=False, verify=verify
        )

    async def __aenter__(self) -> SlurmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        idempotent: bool = True,
        accept: Iterable[int] = (),
    ) -> SlurmReply:
        """Send one API request with auth, retries and tracing.

        Returns the reply when it is final: a success, or an error that retrying will not change
        (the caller judges those, e.g. 404 with error 2017). `accept` lists error numbers the caller
        wants back rather than retried.
        """
        accepted = set(accept)
        refreshed = False
        problem = "no attempt made"
        attempt = 0
        while attempt < self._retry.attempts:
            wait: float | None = None
            try:
                reply = await self._send(method, path, json)
            except httpx.TimeoutException:
                problem = f"no answer within {self._http.timeout.read} s"
                if not idempotent:
                    raise OutcomeUnknown(f"slurmrestd {method} {path}: {problem}") from None
            except httpx.ConnectError as error:
                problem = f"cannot connect: {_first_line(error)}"
            except httpx.TransportError as error:
                problem = f"connection failed: {_first_line(error)}"
                if not idempotent:
                    raise OutcomeUnknown(f"slurmrestd {method} {path}: {problem}") from None
            else:
                numbers = reply.error_numbers
                is_auth = reply.status in AUTH_STATUSES or SLURM_PROTOCOL_AUTHENTICATION_ERROR in numbers
                if is_auth:
                    if self._tokens.refreshable and not refreshed:
                        refreshed = True
                        self._tokens.refresh()
                        log.info("slurmrestd %s %s: authentication refused, token re-read", method, path)
                        continue  # does not count as an attempt
                    raise PlatformError(
                        f"slurmrestd refused the credentials of user {self.user!r} "
                        f"(HTTP {reply.status}: {reply.describe()}); check EB_DIRAC_TOKEN or "
                        "EB_DIRAC_TOKEN_FILE"
                    )
                if reply.status == 403:
                    raise PlatformError(
                        f"slurmrestd denied user {self.user!r} access to {method} {path} "
                        f"(HTTP 403: {reply.describe()})"
                    )
                transient_numbers = (numbers & TRANSIENT_ERROR_NUMBERS) - accepted
                if reply.status in RETRY_STATUSES or transient_numbers:
                    problem = f"HTTP {reply.status}: {reply.describe()}"
                    if not idempotent and reply.status in UNKNOWN_OUTCOME_STATUSES:
                        raise OutcomeUnknown(f"slurmrestd {method} {path}: {problem}")
                    if reply.status in (429, 503):
                        wait = retry_after_seconds(reply.retry_after)
                        if wait is not None and wait > self._retry.max_retry_after_s:
                            raise PlatformError(
                                f"slurmrestd {method} {path}: {problem}; asked to retry after {wait:.0f} s",
                                transient=True,
                            )
                else:
                    return reply
            attempt += 1
            if attempt >= self._retry.attempts:
                break
            delay = self._retry.delay(attempt - 1)
            await asyncio.sleep(max(delay, wait or 0.0))
        raise PlatformError(
            f"slurmrestd {method} {path}: {problem} (gave up after {self._retry.attempts} attempts)",
            transient=True,
        )

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> SlurmReply:
        url = f"{self.base_url}{path}"
        with self._tracer.start_as_current_span(f"{method}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.full", url)
            span.set_attribute("server.address", self._http.base_url.host)
            if self._http.base_url.port is not None:
                span.set_attribute("server.port", self._http.base_url.port)
            span.set_attribute("slurm.user", self.user)
            headers = {
                "X-SLURM-USER-NAME": self.user,
                "X-SLURM-USER-TOKEN": self._tokens.current(),
                "Accept": "application/json",
            }
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            headers.update(carrier)
            try:
                response = await self._http.request(method, path, json=body, headers=headers)
            except httpx.HTTPError as error:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            document: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
            if parsed is None and response.content:
                document = {"errors": [{"error": response.text.strip()[:200], "error_number": 0}]}
            reply = SlurmReply(response.status_code, document, response.headers.get("Retry-After"))
            numbers = reply.error_numbers
            if numbers:
                span.set_attribute("slurm.error_numbers", sorted(numbers))
            return reply


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def tracer_for(provider: trace.TracerProvider | None) -> Tracer:
    return trace.get_tracer("execution_broker.platforms.dirac", tracer_provider=provider)
