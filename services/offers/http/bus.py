"""The HTTP layer's way onto the bus: the same subjects and messages as ``BrokerClient`` (it *is* a
BrokerClient, on the offers process's own NATS connection), with the authenticated owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.auth import owners
from shared.auth.credentials import Credentials
from shared.bus.servers import server_urls
from shared.client import BrokerClient
from shared.lifecycle import Phase
from shared.messages import SessionEvent, UpdateResult
from shared.models import OfferSetResponse


class Bus(Protocol):
    async def submit(self, owner: str, raw: bytes, request_id: str) -> OfferSetResponse: ...

    async def update(self, owner: str, session_id: str, phase: Phase, timeout: float) -> UpdateResult: ...

    def event_queue(self) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[SessionEvent]]: ...

    async def history(self, session_id: str) -> list[SessionEvent]: ...


class _OnConnection(BrokerClient):
    """A BrokerClient for one owner that borrows an open connection instead of making its own: the
    gateway's key, acting for the owner HTTP authenticated."""

    def __init__(self, nc: Client, owner: str, seed_file: Path) -> None:
        url = nc.connected_url.geturl() if nc.connected_url else "nats://"
        super().__init__(url, Credentials(nkey_seed_file=seed_file, acting_for=owners.from_token(owner)))
        self._nc = nc

    async def close(self) -> None:  # the connection belongs to NatsBus
        return None


class NatsBus:
    def __init__(self, nats_url: str, seed_file: Path, *, timeout: float = 30.0) -> None:
        self.nats_url = nats_url
        #: The HTTP API's own identity on the bus (``shared.ops.secured.GATEWAY``).
        self.seed_file = seed_file
        self.timeout = timeout
        self._nc: Client | None = None

    async def connect(self) -> None:
        async def quiet(_: Exception) -> None:
            return None

        self._nc = await nats.connect(
            server_urls(self.nats_url),
            name="eb-offers-http",
            **Credentials(nkey_seed_file=self.seed_file).connect_options(),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=quiet,
        )

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        return self._nc

    async def answers(self, service: str, timeout: float) -> bool:
        """Whether `service` answers its health subject within `timeout` (``/availability``)."""
        try:
            await self.nc.request(subjects.health(service), b"", timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return False
        return True

    async def submit(self, owner: str, raw: bytes, request_id: str) -> OfferSetResponse:
        return await _OnConnection(self.nc, owner, self.seed_file).submit(
            raw, request_id=request_id, timeout=self.timeout
        )

    async def update(self, owner: str, session_id: str, phase: Phase, timeout: float) -> UpdateResult:
        """The offers service's decision on the update (``BrokerClient.update``), within ``timeout``."""
        return await _OnConnection(self.nc, owner, self.seed_file).update(session_id, phase, timeout=timeout)

    @contextlib.asynccontextmanager
    async def event_queue(self) -> AsyncIterator[asyncio.Queue[SessionEvent]]:
        """New session events of every session as they are published (a core subscription)."""
        queue: asyncio.Queue[SessionEvent] = asyncio.Queue(maxsize=1000)

        async def put(msg: Msg) -> None:
            try:
                event = SessionEvent.model_validate_json(msg.data)
            except ValueError:
                return
            with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses events, not memory
                queue.put_nowait(event)

        sub = await self.nc.subscribe(subjects.session_events(), cb=put)
        try:
            yield queue
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def history(self, session_id: str) -> list[SessionEvent]:
        """Every stored event of one session, in order, replayed from the events stream."""
        js = self.nc.jetstream()
        subject = subjects.session_events(session_id=session_id)
        info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
        count = sum((info.state.subjects or {}).values())
        if count == 0:
            return []
        sub = await js.subscribe(
            subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        events: list[SessionEvent] = []
        try:
            while len(events) < count:
                try:
                    msg = await sub.next_msg(timeout=2.0)
                except nats.errors.TimeoutError:
                    break
                with contextlib.suppress(ValueError):
                    events.append(SessionEvent.model_validate_json(msg.data))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return events
