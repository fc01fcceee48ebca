"""Whether the broker is available (VOSI ``/availability``): all three services answer their health
subject on the bus.

The answer is kept for `CACHE_S`, and concurrent callers share one round of questions, so that
however often the public endpoint is asked, the services are asked at most three questions per
period: the endpoint cannot be used to flood the bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from shared.ivoa.documents import Availability

#: The services whose health makes the broker available.
SERVICES = ("offers", "scheduler", "launcher")
#: How long one service may take to answer (a healthy one answers in milliseconds).
HEALTH_TIMEOUT_S = 0.5
#: How long an answer is reused.
CACHE_S = 1.5

#: Asks one service's health subject; True when it answered within the timeout.
HealthCheck = Callable[[str, float], Awaitable[bool]]


class AvailabilityProbe:
    def __init__(
        self,
        ask: HealthCheck | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache_s: float = CACHE_S,
    ) -> None:
        self._ask = ask
        self._clock = clock
        self._now = now
        self._cache_s = cache_s
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._report = Availability(False, notes=("not checked yet",))
        #: Since when every service has answered, while they do: from the start until one does not.
        self._up_since: datetime | None = now()

    async def report(self) -> Availability:
        async with self._lock:  # callers that arrive during a round wait for it and share its answer
            fresh = self._checked_at is not None and self._clock() - self._checked_at < self._cache_s
            if not fresh:
                self._report = await self._check()
                self._checked_at = self._clock()
            return self._report

    async def _check(self) -> Availability:
        if self._ask is None:
            self._up_since = None
            return Availability(False, notes=("the HTTP API has no connection to ask the services on",))
        ask = self._ask
        answers = await asyncio.gather(*(self._answers(ask, name) for name in SERVICES))
        silent = [name for name, answered in zip(SERVICES, answers, strict=True) if not answered]
        if silent:
            self._up_since = None
            return Availability(
                False,
                notes=tuple(
                    f"the {name} service did not answer its health check within {HEALTH_TIMEOUT_S} s"
                    for name in silent
                ),
            )
        if self._up_since is None:
            self._up_since = self._now()
        return Availability(True, up_since=self._up_since)

    @staticmethod
    async def _answers(ask: HealthCheck, name: str) -> bool:
        try:
            return await ask(name, HEALTH_TIMEOUT_S)
        except Exception:  # a closed or reconnecting connection: the service is not reachable now
            return False
