"""The three services as units under test: each one's handlers and wiring on a `Service`, with the
messages its tests send most, built with the `shared.subjects` builders."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from services.launcher import handlers as launcher_service
from services.launcher import store as launcher_tables
from services.launcher.driver import Drivers
from services.launcher.handlers import LauncherHandlers
from services.offers import handlers as offers_service
from services.offers import store as offers_tables
from services.offers.domain import OfferPolicy, PoolChoice
from services.offers.handlers import OffersHandlers
from services.scheduler import handlers as scheduler_service
from services.scheduler import store as scheduler_tables
from services.scheduler.handlers import SchedulerHandlers
from services.scheduler.states import ReservationState
from shared import subjects
from shared.lifecycle import Phase
from shared.messages import BookSession, CancelSession, Hold, Message, QuoteSlots, ReleaseHolds, SlotsQuoted
from shared.models import ENUM_VALUE_UPDATE_KIND, JUPYTER_NOTEBOOK_KIND, SIMPLE_COMPUTE_KIND
from shared.pools import Pool
from shared.subjects import LauncherVerb, SchedulerFact, SchedulerVerb
from tests.handlers.harness import NOW, OWNER, Sent, Service, StoreMaker, in_memory, only
from tests.unit.offers_policy import LOCAL, POLICY

# -- the scheduler --------------------------------------------------------------------------------

#: A pool of one core, so that every second hold of the same time finds it taken.
TINY = Pool(name="tiny", platform="local", cores=1, memory_gib=4, grid_s=1, prepare_s=0, max_offers=1)
HOLD_GRACE_S = 60


class Scheduler(Service[SchedulerHandlers]):
    @property
    def pool(self) -> str:
        return self.handlers.pool

    async def command(self, verb: SchedulerVerb, message: Message, at: datetime = NOW) -> list[Sent]:
        return await self.deliver(subjects.scheduler_command(self.pool, verb), message, at=at)

    async def quote(
        self, request_id: str, start: datetime, *, at: datetime = NOW, **fields: Any
    ) -> SlotsQuoted:
        """Quote for one core for a minute from ``start`` (or ``fields``); the answer it publishes."""
        quote = QuoteSlots.model_validate(
            {
                "request_id": request_id,
                "owner": OWNER,
                "cores_min": 1,
                "cores_max": 1,
                "memory_min": 1,
                "memory_max": 1,
                "duration_s": 60,
                "earliest_start": start,
                "latest_start": start,
                "prepare_s": 0,
                "max_offers": 1,
                "expires_at": NOW + timedelta(minutes=5),
                "requested_at": at,
                **fields,
            }
        )
        sent = await self.command(SchedulerVerb.QUOTE, quote, at)
        assert [s.subject for s in sent] == [subjects.scheduler_event(self.pool, SchedulerFact.QUOTED)]
        assert sent[0].msg_id == f"quoted:{self.pool}:{request_id}"
        return only(sent, SlotsQuoted)

    async def hold(self, request_id: str, start: datetime) -> str:
        """One hold of one core from ``start`` for a minute; its session id."""
        (hold,) = (await self.quote(request_id, start)).holds
        return hold.session_id

    async def book(self, session_id: str, at: datetime = NOW, siblings: Sequence[str] = ()) -> list[Sent]:
        book = BookSession(
            session_id=session_id, owner=OWNER, siblings=list(siblings), executable={}, platform="local"
        )
        return await self.command(SchedulerVerb.BOOK, book, at)

    async def cancel(self, session_id: str, at: datetime = NOW) -> list[Sent]:
        return await self.command(SchedulerVerb.CANCEL, CancelSession(session_id=session_id, reason="no"), at)

    async def release(self, *session_ids: str, reason: str = "EXPIRED") -> list[Sent]:
        return await self.command(
            SchedulerVerb.RELEASE, ReleaseHolds(session_ids=list(session_ids), reason=reason)
        )

    async def state(self, session_id: str) -> ReservationState | None:
        rows = await self.rows("SELECT state FROM reservations WHERE session_id = ?", (session_id,))
        return ReservationState(rows[0][0]) if rows else None


async def _no_pool_reports(msg: Msg) -> None:
    raise AssertionError("the handler tests make no core requests")


@asynccontextmanager
async def scheduler_unit(
    pool: Pool = TINY, hold_grace_s: int = HOLD_GRACE_S, stores: StoreMaker = in_memory
) -> AsyncIterator[Scheduler]:
    handlers = SchedulerHandlers(pool, hold_grace_s)
    wiring = scheduler_service.wiring({pool.name: handlers}, _no_pool_reports)
    unit = await Scheduler.open(scheduler_tables.SCHEMA, handlers, wiring, stores)
    try:
        yield unit
    finally:
        await unit.close()


# -- the launcher ---------------------------------------------------------------------------------


class RecordingDrivers(Drivers):
    """The launcher's drivers, recording which sessions the handlers asked to drive or wake."""

    def __init__(self) -> None:
        super().__init__(None, {}, Path("/nonexistent"))  # nothing is driven, so nothing is written
        self.ensured: list[str] = []

    def ensure(self, session_id: str) -> None:
        self.ensured.append(session_id)

    def wake(self, session_id: str) -> None:
        self.ensured.append(f"wake {session_id}")


class Launcher(Service[LauncherHandlers]):
    @property
    def drivers(self) -> RecordingDrivers:
        assert isinstance(self.handlers.drivers, RecordingDrivers)
        return self.handlers.drivers

    async def command(self, verb: LauncherVerb, message: Message) -> list[Sent]:
        return await self.deliver(subjects.launcher_command(self.handlers.pool, verb), message)

    async def run_of(self, session_id: str) -> launcher_tables.Run | None:
        return await launcher_tables.read(self.store, session_id)

    async def phase(self, session_id: str) -> Phase | None:
        run = await self.run_of(session_id)
        return run.phase if run is not None else None


@asynccontextmanager
async def launcher_unit(pool: str = TINY.name, stores: StoreMaker = in_memory) -> AsyncIterator[Launcher]:
    handlers = LauncherHandlers(RecordingDrivers(), pool, "local")
    unit = await Launcher.open(launcher_tables.SCHEMA, handlers, launcher_service.wiring([handlers]), stores)
    try:
        yield unit
    finally:
        await unit.close()


# -- the offers service ---------------------------------------------------------------------------

EAST, WEST = "east", "west"


def pool_choice(name: str, executable_kinds: frozenset[str] = LOCAL.executable_kinds) -> PoolChoice:
    return PoolChoice(name, "local", 60, executable_kinds=executable_kinds, data_kinds=LOCAL.data_kinds)


#: The unit tests' policy with two pools on the local platform, both able to run a notebook: every
#: request is quoted by both.
TWO_POOLS = replace(POLICY, pool=EAST, pools=(pool_choice(EAST), pool_choice(WEST)))
EXPIRES = NOW + timedelta(seconds=TWO_POOLS.offer_expiry_s)


def notebook_request(**schedule: str) -> dict[str, Any]:
    """A notebook on one core and one GiB, with ``schedule`` as its requested schedule."""
    document: dict[str, Any] = {
        "executable": {"kind": JUPYTER_NOTEBOOK_KIND, "meta": {"name": "nb"}, "location": "/nb.ipynb"},
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": 1}, "memory": {"min": 1}},
    }
    if schedule:
        document["schedule"] = {"requested": schedule}
    return document


def hold(pool: str, start: datetime, minutes: int = 30) -> Hold:
    return Hold(
        session_id=str(uuid.uuid4()),
        pool=pool,
        start=start,
        end=start + timedelta(minutes=minutes),
        cores=1,
        memory_gib=1,
        prepare_s=60,
    )


class Offers(Service[OffersHandlers]):
    async def request(
        self, document: Mapping[str, Any] | bytes, request_id: str = "r1", *, at: datetime = NOW
    ) -> list[Sent]:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        return await self.deliver(subjects.request(OWNER, request_id), body, at=at)

    async def quoted(
        self, pool: str, request_id: str = "r1", holds: Sequence[Hold] = (), reasons: Sequence[str] = ()
    ) -> list[Sent]:
        answer = SlotsQuoted(request_id=request_id, pool=pool, holds=list(holds), reasons=list(reasons))
        return await self.deliver(subjects.scheduler_event(pool, SchedulerFact.QUOTED), answer)

    async def update(
        self,
        session_id: str,
        value: Phase | bytes,
        *,
        requester: str = OWNER,
        at: datetime = NOW,
        update_id: str | None = None,
    ) -> list[Sent]:
        """An update of the session's phase to ``value`` (or a body of the test's own)."""
        if isinstance(value, bytes):
            body = value
        else:
            body = json.dumps(
                {"kind": ENUM_VALUE_UPDATE_KIND, "path": "phase", "value": value.value}
            ).encode()
        return await self.deliver(subjects.update(requester, session_id), body, at=at, msg_id=update_id)

    async def phase(self, session_id: str) -> Phase | None:
        rows = await self.rows("SELECT phase FROM sessions WHERE session_id = ?", (session_id,))
        return Phase(rows[0][0]) if rows else None


@asynccontextmanager
async def offers_unit(
    policy: OfferPolicy = TWO_POOLS, stores: StoreMaker = in_memory
) -> AsyncIterator[Offers]:
    handlers = OffersHandlers(policy)
    wiring = offers_service.wiring(handlers, [p.name for p in policy.pools])
    unit = await Offers.open(offers_tables.SCHEMA, handlers, wiring, stores)
    try:
        yield unit
    finally:
        await unit.close()
