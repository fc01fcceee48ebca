"""What every route shares, reached through a FastAPI dependency instead of closure variables.

``create_app`` builds one ``HttpContext`` and keeps it in ``app.state``; a route asks for it with a
``Context`` parameter, so a test can hand the app any read model, bus or settings.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from services.offers.http.auth import Authenticator
from services.offers.http.availability import AvailabilityProbe
from services.offers.http.bus import Bus
from services.offers.http.login_limits import LoginLimiter
from services.offers.http.settings import HttpSettings
from services.offers.http.tokens import EventTokens
from services.offers.store import ReadModel


@dataclass
class HttpContext:
    settings: HttpSettings
    read_model: ReadModel
    bus: Bus
    auth: Authenticator
    tokens: EventTokens
    #: Failed Basic logins per user name and per address (429 past the limits).
    logins: LoginLimiter
    #: Whether the three services answer (``/availability``).
    availability: AvailabilityProbe = field(default_factory=lambda: AvailabilityProbe(None))
    #: Set when the server stops, so that endless event streams end.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: The AsyncAPI document of the bus, built on first request.
    asyncapi: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url()


def http_context(request: Request) -> HttpContext:
    context = request.app.state.ctx
    assert isinstance(context, HttpContext)
    return context


Context = Annotated[HttpContext, Depends(http_context)]
