"""The clock of a fake whose jobs change state with time, which a test may move forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class FakeClock:
    """`base()` plus what tests advanced it by; `wall(t)` is the epoch time of a reading, for the API."""

    def __init__(self, base: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self._offset = 0.0
        self._lock = threading.Lock()
        # Read together, so that a reading converts to the wall time it stands for.
        self._wall_minus_base = time.time() - base()

    def now(self) -> float:
        return self._base() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def wall(self, t: float) -> float:
        return t + self._wall_minus_base

    def route(self) -> Route:
        """`POST /_fake/clock/advance?s=N` → {"now": <the reading after>}."""

        async def advance(request: Request) -> Response:
            self.advance(float(request.query_params.get("s", "0")))
            return JSONResponse({"now": self.now()})

        return Route("/_fake/clock/advance", advance, methods=["POST"])
