"""The Slurm REST API (slurmrestd) as the `dirac` platform uses it, on the shared HTTP layer.

What is slurmrestd's own is stated here once:

* JWT auth headers (`X-SLURM-USER-NAME`, `X-SLURM-USER-TOKEN`); on 401, 511 or error 1007 a token
  file is read again and the call resent once. The token never appears in a log line, an exception
  message or a span.
* Which failures are retried: no answer (connect error, timeout), 502/503/504/429 (Retry-After
  honoured), and any status, 200 included, whose `errors[]` carry a transient Slurm error number.
  slurmrestd answers most slurmctld errors with 500 (422 from 26.05) and some with 200, so the
  decision is made on `errors[].error_number`, not on the HTTP status.
* A request that is not idempotent (submit) is never resent after an answer that may have been lost
  (timeout, dropped connection, 504): the platform looks for the job first (`create`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.dirac.settings import DiracSettings
from shared.http.client import HttpApi
from shared.http.create import create_without_duplicates
from shared.http.retry import CallState, GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.http.tokens import TokenSource
from shared.platforms.port import PlatformError

TRACER_NAME = "execution_broker.platforms.dirac"

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
# Statuses after which a lost submit may still have created the job.
UNKNOWN_OUTCOME_STATUSES = frozenset({504})


@dataclass
class SlurmReply:
    status: int
    body: dict[str, Any]

    @classmethod
    def of(cls, response: httpx.Response) -> SlurmReply:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        document: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        if parsed is None and response.content:
            document = {"errors": [{"error": response.text.strip()[:200], "error_number": 0}]}
        return cls(response.status_code, document)

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


@dataclass(frozen=True)
class SlurmRules(RetryRules):
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    auth_statuses: frozenset[int] = frozenset({401, 511})
    #: Error numbers the caller wants back rather than retried.
    accepted: frozenset[int] = frozenset()

    def retryable(self, response: httpx.Response) -> bool:
        transient = (SlurmReply.of(response).error_numbers & TRANSIENT_ERROR_NUMBERS) - self.accepted
        return response.status_code in self.retry_statuses or bool(transient)

    def unprocessed(self, response: httpx.Response) -> bool:
        return response.status_code not in UNKNOWN_OUTCOME_STATUSES

    def auth_refused(self, response: httpx.Response) -> bool:
        return response.status_code in self.auth_statuses or (
            SLURM_PROTOCOL_AUTHENTICATION_ERROR in SlurmReply.of(response).error_numbers
        )

    def status_reason(self, response: httpx.Response) -> str:
        return f"HTTP {response.status_code}: {SlurmReply.of(response).describe()}"

    def span_attributes(self, response: httpx.Response) -> Mapping[str, str | int | list[int]]:
        numbers = SlurmReply.of(response).error_numbers
        return {"slurm.error_numbers": sorted(numbers)} if numbers else {}


RULES = SlurmRules()


class SlurmClient:
    """slurmrestd for one platform instance (one pooled connection set per event loop)."""

    def __init__(self, settings: DiracSettings, *, tracer_provider: TracerProvider | None = None) -> None:
        self.user = settings.user
        self.tokens = TokenSource(
            settings.token,
            label="Slurm token",
            variable=settings.variable("token"),
            # `scontrol token` prints SLURM_JWT=<token>; accept that line as it is.
            parse=lambda text: text.strip().removeprefix("SLURM_JWT=").strip(),
            unreadable_is_transient=True,
        )
        self.http = HttpApi.for_settings(
            settings,
            settings.url,
            rules=RULES,
            tracer_name=TRACER_NAME,
            tokens=self.tokens,
            auth=self._auth,
            headers={"Accept": "application/json"},
            span_attributes={"slurm.user": settings.user},
            tracer_provider=tracer_provider,
        )

    def _auth(self, token: str) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        accept: Iterable[int] = (),
    ) -> SlurmReply:
        """Send one API request with auth, retries and tracing.

        Returns the reply when it is final: a success, or an error that retrying will not change
        (the caller judges those, e.g. 404 with error 2017). `accept` lists error numbers the caller
        wants back rather than retried.
        """
        rules = dataclasses.replace(RULES, accepted=frozenset(accept))
        with self._errors(method, path):
            response = await self.http.call(method, path, json=json, params=params, rules=rules)
        return self._final(response, method, path)

    async def create(
        self,
        path: str,
        body: dict[str, Any],
        find: Callable[[CallState], Awaitable[int | None]],
        parse: Callable[[SlurmReply], int],
    ) -> int:
        """POST a submit, never twice: after a lost answer, `find` looks for the job first."""

        async def send(state: CallState) -> int:
            response = await self.http.attempt("POST", path, state, idempotent=False, json=body)
            return parse(self._final(response, "POST", path))

        with self._errors("POST", path):
            return await create_without_duplicates(self.http.policy, send, find, f"slurmrestd POST {path}")

    async def look(self, path: str, state: CallState) -> SlurmReply:
        """One GET of a submit's look-up: a single attempt of the submit's own loop."""
        return self._final(await self.http.attempt("GET", path, state), "GET", path)

    @contextmanager
    def _errors(self, method: str, path: str) -> Iterator[None]:
        try:
            yield
        except GaveUp as gave_up:
            raise PlatformError(
                f"slurmrestd {method} {path}: {gave_up.reason} ({gave_up.summary})", transient=True
            ) from None
        except HttpLayerError as error:
            raise PlatformError(error.message, transient=error.transient) from None

    def _final(self, response: httpx.Response, method: str, path: str) -> SlurmReply:
        reply = SlurmReply.of(response)
        if RULES.auth_refused(response):
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
        return reply
