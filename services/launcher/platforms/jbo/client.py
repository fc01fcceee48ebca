"""The JBO runner's HTTP API as the `jbo` platform uses it, on the shared HTTP layer.

What is the runner's own is stated here once: the statuses worth another attempt, bearer auth (a
token file is re-read on a 401, once per call), and the messages. Credentials never leave the
Authorization header: messages and logs name the method and URL only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.jbo.settings import JboSettings
from shared.http.client import HttpApi, write_to
from shared.http.retry import GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.http.tokens import TokenSource
from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

TRACER_NAME = "execution_broker.launcher.jbo"


@dataclass(frozen=True)
class JboRules(RetryRules):
    retry_statuses: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})

    def status_reason(self, response: httpx.Response) -> str:
        return f"HTTP {response.status_code}"

    def timeout_reason(self, timeout_s: float | None) -> str:
        return f"timed out after {timeout_s:g} s"


RULES = JboRules()


class JboHttp:
    def __init__(self, settings: JboSettings, tracer_provider: TracerProvider | None = None) -> None:
        self.base_url = settings.url
        self.tokens = TokenSource(settings.token, label="JBO token", variable=settings.variable("token"))
        self._api = HttpApi.for_settings(
            settings,
            settings.url,
            rules=RULES,
            tracer_name=TRACER_NAME,
            tokens=self.tokens,
            headers={"Accept": "application/json"},
            tracer_provider=tracer_provider,
        )

    def url(self, path: str) -> str:
        return self._api.url(path)

    async def aclose(self) -> None:
        await self._api.aclose()

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
        with self._errors(method, url):
            response = await self._api.call(
                method, path, json=json_body, params=params, headers=headers, what=f"{method} {url}"
            )
        status = response.status_code
        log.info("jbo: %s %s -> %s", method, url, status)
        if status < 400 or status in ok_statuses:
            return response
        if status in (401, 403):
            raise PlatformError(
                f"the JBO runner refused the credentials (HTTP {status} on {method} {url}): "
                "check EB_JBO_TOKEN / EB_JBO_TOKEN_FILE"
            )
        raise PlatformError(f"the JBO runner answered HTTP {status} to {method} {url}: " + _snippet(response))

    async def download(self, path: str, target: Path, max_bytes: int) -> bool:
        """Stream a file to target (True), or False if the runner has none (404). Bounded in size."""
        url = self.url(path)
        started = time.monotonic()

        async def save(response: httpx.Response) -> bool:
            await write_to(target, max_bytes, response)
            return True

        with self._errors("GET", url):
            found = await self._api.receive(path, save, missing=_absent)
        if found:
            log.info("jbo: fetched %s (%.1f s)", url, time.monotonic() - started)
        return found

    @contextmanager
    def _errors(self, method: str, url: str) -> Iterator[None]:
        try:
            yield
        except GaveUp as gave_up:
            if gave_up.stopped == "retry_after":
                message = (
                    f"the JBO runner is unavailable ({gave_up.reason} on {method} {url}) and "
                    f"asks to retry after {gave_up.retry_after:g} s"
                )
            else:
                message = (
                    f"the JBO runner did not answer {method} {url}: {gave_up.reason} ({gave_up.summary})"
                )
            raise PlatformError(message, transient=True) from None
        except HttpLayerError as error:
            raise PlatformError(error.message, transient=error.transient) from None


def _absent() -> bool:
    return False


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] or "(empty body)"
