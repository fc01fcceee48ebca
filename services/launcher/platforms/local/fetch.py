"""Fetching a notebook or a data resource over http(s) for the local platform (and the canfar
platform, which stages a notebook it fetched), on the shared layer.

Redirects are followed (these are user-given URLs, not an API), every hop checked against the pool's
rules (`locations.GuardedTransport`: no internal host unless allowed); 429 and 5xx answers,
timeouts and connection errors are retried within the platform's retry policy. Sizes are counted
while streaming. Messages name the URL and the failure, never the content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx

from services.launcher.platforms.local.locations import (
    GuardedTransport,
    LocationRefused,
    LocationRules,
    check_host,
)
from shared.http.client import HttpApi, HttpStatusError, TooLarge, read_at_most, write_to
from shared.http.retry import GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.http.settings import HttpSettings
from shared.platforms.port import PlatformError

T = TypeVar("T")
RULES = RetryRules(retry_statuses=frozenset({429, 500, 502, 503, 504}))


class Fetcher:
    def __init__(
        self,
        settings: HttpSettings,
        rules: LocationRules,
        tracer_name: str = "execution_broker.platforms.local",
    ) -> None:
        self._rules = rules
        self._api = HttpApi.for_settings(
            settings,
            "",
            rules=RULES,
            tracer_name=tracer_name,
            follow_redirects=True,
            transport=GuardedTransport(rules),
        )

    async def read(self, url: str, max_bytes: int, noun: str) -> bytes:
        """The content at `url` (at most `max_bytes`); `noun` names it in messages ("notebook")."""
        return await self._get(url, partial(read_at_most, max_bytes), noun)

    async def save(self, url: str, target: Path, max_bytes: int, noun: str) -> None:
        await self._get(url, partial(write_to, target, max_bytes), noun)

    async def _get(self, url: str, consume: Callable[[httpx.Response], Awaitable[T]], noun: str) -> T:
        try:
            # Checked here too, so that a refused first host is refused at once, not retried.
            await check_host(url, self._rules, noun)
            return await self._api.receive(url, consume, what=f"GET {url}")
        except LocationRefused as refused:
            raise PlatformError(refused.message) from None
        except TooLarge as error:
            raise PlatformError(f"{noun} at {url} is larger than {error.max_bytes} bytes") from None
        except GaveUp as gave_up:
            raise PlatformError(
                f"cannot fetch {url}: {gave_up.reason} ({gave_up.summary})", transient=True
            ) from None
        except HttpStatusError as error:
            raise PlatformError(f"HTTP {error.status} fetching {url}") from None
        except HttpLayerError as error:
            raise PlatformError(error.message, transient=error.transient) from None
