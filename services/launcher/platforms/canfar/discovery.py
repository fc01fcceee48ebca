"""Finding skaha through an IVOA registry, and remembering what was found.

With EB_CANFAR_SERVICE (an ``ivo://`` identifier) and EB_CANFAR_REGISTRY (a resource-caps URL) the
plugin reads the registry's resource-caps for the service's capabilities URL, then the VOSI
capabilities for the base URL and API version (`canfar/endpoint.py`; the parsing is
`shared/ivoa/registry.py`). What it found is used for EB_CANFAR_DISCOVERY_TTL_S seconds; the first
call after that reads both documents again, and so does a 404 from the platform (the service may have
moved: the client then resends the request once to the new base URL).

Failures: the first look-up's failure is a PlatformError naming the service, the registry and what
went wrong. Later, a failed re-read keeps what was found before (logged as a warning) and tries
again after at most RETRY_FAILED_READ_S: a registry that is briefly away does not stop sessions
that the platform itself would run.

Neither document is asked for with the CANFAR token: registries and capabilities are public, and the
token goes only to the base URL found. The registry is therefore trusted to name the real service,
which is why its URL and every URL it leads to must be https (http only to this machine).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import httpx
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.canfar.endpoint import SkahaEndpoint, skaha_endpoint
from services.launcher.platforms.canfar.settings import CanfarSettings
from shared.http.client import HttpApi, read_at_most, safe_url
from shared.http.retry import GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.ivoa.registry import (
    MAX_CAPABILITIES_BYTES,
    MAX_RESOURCE_CAPS_BYTES,
    DiscoveryError,
    capabilities_url,
    parse_capabilities,
)
from shared.platforms.port import PlatformError

log = logging.getLogger(__name__)

TRACER_NAME = "execution_broker.platforms.canfar"
USER_AGENT = "execution-broker-canfar/0.1"
#: After a failed re-read, what was found before is used this long (at most the TTL) before the
#: next try: long enough not to add a registry time-out to every call while it is away.
RETRY_FAILED_READ_S = 30.0


class Found(NamedTuple):
    endpoint: SkahaEndpoint
    at: float  # the clock's reading when it was read (or, after a failed re-read, when it counts from)


class SkahaLocator:
    def __init__(
        self,
        settings: CanfarSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = settings.service
        self.registry = settings.registry
        self.ttl_s = settings.discovery_ttl_s
        self._preferred = settings.api
        self._clock = clock
        # No token, no redirects: the documents are public, and a URL is followed only once checked.
        self._http = HttpApi.for_settings(
            settings, "", rules=RetryRules(), tracer_name=TRACER_NAME,
            headers={"User-Agent": USER_AGENT}, tracer_provider=tracer_provider, transport=transport,
        )  # fmt: skip
        self._found: Found | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def endpoint(self) -> Found:
        """What the registry says, read at most once per TTL."""
        found = self._found
        if found is not None and self._clock() - found.at < self.ttl_s:
            return found
        async with self._serialized():
            if self._found is not found and self._found is not None:
                return self._found  # another call read it while this one waited
            return await self._read(keep=found, why="its cache aged" if found else None)

    async def after_404(self, seen: Found) -> Found:
        """What the registry says now, after the platform answered 404 at `seen`'s base URL."""
        async with self._serialized():
            if self._found is not seen and self._found is not None:
                return self._found
            return await self._read(keep=seen, why="the platform answered 404")

    def _serialized(self) -> asyncio.Lock:
        # Concurrent calls share one read. A lock belongs to one event loop, as the HTTP client does.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _read(self, *, keep: Found | None, why: str | None) -> Found:
        try:
            endpoint = await self._look_up()
        except PlatformError as error:
            if keep is None:
                raise
            retry_in = min(self.ttl_s, RETRY_FAILED_READ_S)
            log.warning("canfar: %s; still using %s (API %s), trying again within %g s",
                        error.message, keep.endpoint.base_url, keep.endpoint.api, retry_in)  # fmt: skip
            self._found = Found(keep.endpoint, self._clock() - self.ttl_s + retry_in)
            return self._found
        if keep is None or keep.endpoint != endpoint:
            again = f" (read again: {why})" if why else ""
            log.info("canfar: %s is at %s (API %s), says the registry %s%s",
                     self.service, endpoint.base_url, endpoint.api, self.registry, again)  # fmt: skip
        self._found = Found(endpoint, self._clock())
        return self._found

    async def _look_up(self) -> SkahaEndpoint:
        problem = f"cannot find the CANFAR service {self.service} through the registry {self.registry}"
        try:
            listing = await self._get(self.registry, MAX_RESOURCE_CAPS_BYTES, "resource-caps")
            document = await self._get(
                capabilities_url(listing, self.service), MAX_CAPABILITIES_BYTES, "capabilities"
            )
            return skaha_endpoint(parse_capabilities(document), self._preferred)
        except DiscoveryError as error:
            raise PlatformError(f"{problem}: {error.message}") from None
        except GaveUp as gave_up:
            raise PlatformError(f"{problem}: {gave_up.reason} ({gave_up.summary})", transient=True) from None
        except HttpLayerError as error:
            raise PlatformError(f"{problem}: {error.message}", transient=error.transient) from None

    async def _get(self, url: str, max_bytes: int, route: str) -> bytes:
        async def consume(response: httpx.Response) -> bytes:
            if response.status_code != 200:  # a redirect, or a success with nothing to read
                raise HttpLayerError(
                    f"{safe_url(response.request.url)} answered HTTP {response.status_code}, not 200",
                    transient=False,
                )
            return await read_at_most(max_bytes, response)

        return await self._http.receive(url, consume, what=f"GET {route}", route=route)
