"""The skaha sessions API as the `canfar` platform uses it, on the shared HTTP layer.

What is CANFAR's own is stated here once: which answers are retried (5xx, 429, timeouts, connection
errors; a create only when the server surely did not act: 429, 503 or a refused connection), the
bearer token (re-read from its file on a 401, once per call), and the messages. Each HTTP attempt is
one CLIENT span named after its route; a 401 after the re-read, or a 403, is a PlatformError that
names where the token came from, never the token itself.

With EB_CANFAR_SERVICE and EB_CANFAR_REGISTRY the base URL and API version come from the registry
(`canfar/discovery.py`): each call first takes them from the locator's cache, and a 404 has them read
again; when that finds the service elsewhere, the request is sent once more, there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.canfar.discovery import TRACER_NAME, USER_AGENT, Found, SkahaLocator
from services.launcher.platforms.canfar.settings import CanfarSettings
from shared.http.client import HttpApi, HttpStatusError, TooLarge, read_at_most
from shared.http.create import create_without_duplicates
from shared.http.retry import CallState, GaveUp, HttpLayerError
from shared.http.rules import RetryRules, first_line
from shared.http.tokens import TokenSource
from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

RULES = RetryRules(
    retry_statuses=frozenset({429, 500, 502, 503, 504}),
    unprocessed_statuses=frozenset({429, 503}),
    auth_statuses=frozenset({401}),
)


class SkahaClient:
    def __init__(
        self,
        settings: CanfarSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        base_url: str | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        """`base_url` and `tokens` make a client of another CANFAR API with the same token (the
        storage API: `storage.ArcStorage`); by default, skaha's with the configured token, at the
        base URL the registry names when the pool gives one (never for another API)."""
        self.api: str = settings.api
        self.tokens = tokens or TokenSource(
            settings.token, label="CANFAR token", variable=settings.variable("token")
        )
        self._locator = (
            SkahaLocator(settings, tracer_provider=tracer_provider, transport=transport)
            if settings.discovered and base_url is None
            else None
        )
        self._found: Found | None = None
        self.http = HttpApi.for_settings(
            settings,
            base_url or settings.url or "http://canfar.invalid",
            rules=RULES,
            tracer_name=TRACER_NAME,
            tokens=self.tokens,
            headers={"User-Agent": USER_AGENT},
            tracer_provider=tracer_provider,
            transport=transport,
        )

    def path(self, *parts: str, api: str | None = None) -> str:
        return "/".join([f"/{api or self.api}", *parts])

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._locator is not None:
            await self._locator.aclose()

    async def discover(self) -> str:
        """The API version for new sessions; with a registry, the base URL and version are taken
        from the locator (read again once its cache has aged) first."""
        if self._locator is not None:
            self._use(await self._locator.endpoint())
        return self.api

    def _use(self, found: Found) -> None:
        if found is not self._found:
            self._found = found
            self.api = found.endpoint.api
            if self.http.base_url != found.endpoint.base_url:
                self.http.rebase(found.endpoint.base_url)

    async def _moved(self) -> bool:
        """After a 404: whether the registry now names another base URL (then it is used)."""
        seen = self._found
        if self._locator is None or seen is None:
            return False
        self._use(await self._locator.after_404(seen))
        moved = self.http.base_url != seen.endpoint.base_url
        if moved:
            log.info("canfar: the service moved from %s to %s; sending again there",
                     seen.endpoint.base_url, self.http.base_url)  # fmt: skip
        return moved

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        ok: Collection[int] = (200,),
        route: str | None = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One API call with retries. Answers whose status is in `ok` are returned, others raise.

        `route` names the span (the path with ids replaced by placeholders). Every call sent here
        is idempotent (a GET, a DELETE, or a PUT of a whole file or folder).
        """
        what = f"{method} {path}"

        async def send() -> httpx.Response:
            with self._errors(what):
                return await self.http.call(
                    method,
                    path,
                    params=params,
                    route=route or path,
                    what=what,
                    content=content,
                    headers=headers,
                )

        await self.discover()
        response = await send()
        if response.status_code == 404 and await self._moved():
            response = await send()  # once: the registry named another base URL
        return self._accepted(response, what, ok)

    async def download(self, path: str, max_bytes: int, *, route: str) -> bytes | None:
        """The file at `path`, at most `max_bytes` of it (counted while streaming); None on a 404."""
        what = f"GET {path}"
        with self._errors(what):
            try:
                return await self.http.receive(
                    path, partial(read_at_most, max_bytes), missing=lambda: None, what=what, route=route
                )
            except TooLarge:
                raise PlatformError(f"{path} on CANFAR is larger than {max_bytes} bytes") from None
            except HttpStatusError as error:
                if error.status in (401, 403):
                    raise PlatformError(self._refusal(error.status, what, "")) from None
                raise PlatformError(f"CANFAR refused {what}: HTTP {error.status}") from None

    async def create(
        self,
        path: str,
        data: list[tuple[str, str]],
        find: Callable[[CallState], Awaitable[str | None]],
        parse: Callable[[httpx.Response], str],
        *,
        what: str,
        settle_s: float,
    ) -> str:
        """POST a create, never twice: after a doubtful answer, `find` looks for what it made first."""
        request = f"POST {path}"

        async def send(state: CallState) -> str:
            response = await self.http.attempt(
                "POST", path, state, idempotent=False, route=path, content=urlencode(data),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            return parse(self._accepted(response, request, (200,)))

        with self._errors(what):
            return await create_without_duplicates(self.http.policy, send, find, what, settle_s=settle_s)

    async def look(
        self, method: str, path: str, state: CallState, *, route: str, **request: Any
    ) -> httpx.Response:
        """One GET of a create's look-up: a single attempt of the create's own loop."""
        response = await self.http.attempt(method, path, state, route=route, **request)
        return self._accepted(response, f"{method} {path}", (200,))

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except GaveUp as gave_up:
            if gave_up.stopped == "attempts":
                message = (
                    f"CANFAR did not answer {what} after {gave_up.attempts} tries (last: {gave_up.reason})"
                )
            else:
                message = f"CANFAR did not answer {what}: {gave_up.reason} ({gave_up.summary})"
            raise PlatformError(message, transient=True) from None
        except HttpLayerError as error:
            raise PlatformError(error.message, transient=error.transient) from None

    def _accepted(self, response: httpx.Response, what: str, ok: Collection[int]) -> httpx.Response:
        status = response.status_code
        if status in ok:
            return response
        if status in (401, 403):
            raise PlatformError(self._refusal(status, what, response.text))
        detail = first_line(self.tokens.redact(response.text), 500) or response.reason_phrase
        raise PlatformError(f"CANFAR refused {what}: HTTP {status} {detail}")

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
