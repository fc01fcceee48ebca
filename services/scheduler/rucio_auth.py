"""Rucio tokens from Rucio itself: `GET /auth/userpass`, renewed before they end.

Rucio's own clients authenticate this way (launcher-targets.md §4.1): the request carries
`X-Rucio-Account`, `X-Rucio-Username` and `X-Rucio-Password`; the answer carries the token in
`X-Rucio-Auth-Token` and its end in `X-Rucio-Auth-Token-Expires`, an HTTP-style date in UTC
(`Thu, 03 Dec 2026 22:00:00 UTC`). Wrong credentials get 401 `CannotAuthenticate`.

`RucioAuthTokens` is the token source of a `RucioClient` configured with an account instead of a
token: before each request it makes sure the token has more than its renewal margin left (the
setting `renew_before_s`, at most half the token's life, so a short-lived token is not renewed on
every request), and a token the server refuses all the same (a clock ahead of ours, a revoked
token) is dropped and a new one obtained for the one resend the HTTP layer makes. Concurrent
look-ups share one renewal. The password and the tokens never reach a log, a span or a message.

The date and the renewal time are computed by the pure functions `token_end` and `renewal_time`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from opentelemetry.trace import TracerProvider

from services.scheduler.rucio_settings import RucioSettings
from shared.http.client import HttpApi
from shared.http.retry import GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.http.tokens import TokenSource, TokenUnavailable

log = logging.getLogger(__name__)

AUTH_PATH = "/auth/userpass"
EXPIRES_FORMAT = "%a, %d %b %Y %H:%M:%S UTC"
#: Rucio's default token lifetime, assumed when an answer states none (or one that cannot be read).
ASSUMED_LIFETIME_S = 3600.0


def token_end(header: str | None, issued_at: float) -> float:
    """The epoch second a token ends at, from `X-Rucio-Auth-Token-Expires`; when the header is
    missing or unreadable, `ASSUMED_LIFETIME_S` after `issued_at`."""
    if header:
        try:
            return datetime.strptime(header.strip(), EXPIRES_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    return issued_at + ASSUMED_LIFETIME_S


def renewal_time(issued_at: float, ends_at: float, renew_before_s: float) -> float:
    """When to get the next token: `renew_before_s` before the end, but never before halfway through
    the token's life (a token that ends sooner than the margin would be renewed on every request)."""
    lifetime = max(0.0, ends_at - issued_at)
    return ends_at - min(renew_before_s, lifetime / 2)


class RucioAuthTokens(TokenSource):
    def __init__(
        self,
        settings: RucioSettings,
        base_url: str,
        *,
        wall_clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        super().__init__(None, label="Rucio token", variable=settings.variable("token"))
        if not (settings.account and settings.username and settings.password is not None):
            raise ValueError("Rucio's userpass authentication needs an account, a user name and a password")
        self._account = settings.account
        self._username = settings.username
        self._password = settings.password
        self._renew_before_s = settings.renew_before_s
        self._clock = wall_clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._http = HttpApi.for_settings(
            settings,
            base_url,
            rules=RetryRules(),
            tracer_name="execution_broker.scheduler.rucio",
            tracer_provider=tracer_provider,
            transport=transport,
        )

    @property
    def configured(self) -> bool:
        return True

    @property
    def refreshable(self) -> bool:
        return True

    def describe(self) -> str:
        return (
            f"tokens from {self._http.base_url}{AUTH_PATH} for account {self._account!r} "
            f"(EB_RUCIO_ACCOUNT, EB_RUCIO_USERNAME, EB_RUCIO_PASSWORD)"
        )

    def current(self) -> str:
        if self._token is None:
            raise TokenUnavailable(f"no Rucio token obtained yet from {self.describe()}", transient=True)
        return self._token

    def refresh(self) -> bool:
        """The server refused the token: drop it, so that the resend obtains a new one."""
        self._token = None
        return True

    async def ready(self) -> None:
        if self._token is not None and self._clock() < self._renew_at:
            return
        async with self._renewal_lock():
            # Another look-up may have renewed it while this one waited.
            if self._token is None or self._clock() >= self._renew_at:
                await self._obtain()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _renewal_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _obtain(self) -> None:
        issued_at = self._clock()
        headers = {
            "X-Rucio-Account": self._account,
            "X-Rucio-Username": self._username,
            "X-Rucio-Password": self._password.get_secret_value(),
        }
        try:
            response = await self._http.call("GET", AUTH_PATH, headers=headers, route=AUTH_PATH)
        except GaveUp as gave_up:
            raise TokenUnavailable(
                f"Rucio's auth endpoint gave no token: {gave_up.reason} ({gave_up.summary})"
            ) from None
        except HttpLayerError as error:
            raise TokenUnavailable(f"Rucio's auth endpoint gave no token: {error.message}") from None
        token = response.headers.get("X-Rucio-Auth-Token", "").strip()
        if response.status_code != 200 or not token:
            reason = response.headers.get("ExceptionMessage") or response.reason_phrase
            reason = reason.replace(self._password.get_secret_value(), "<redacted>")
            raise TokenUnavailable(
                f"Rucio refused the credentials of account {self._account!r}, user {self._username!r} "
                f"(HTTP {response.status_code}: {self.redact(reason[:200])}); check EB_RUCIO_USERNAME "
                "and EB_RUCIO_PASSWORD (or EB_RUCIO_PASSWORD_FILE)",
                transient=response.status_code >= 500,
            )
        ends_at = token_end(response.headers.get("X-Rucio-Auth-Token-Expires"), issued_at)
        self._token = token
        self._seen.add(token)
        self._renew_at = renewal_time(issued_at, ends_at, self._renew_before_s)
        log.info(
            "rucio: obtained a token for account %s, valid for %.0f s, renewed after %.0f s",
            self._account,
            ends_at - issued_at,
            self._renew_at - issued_at,
        )
