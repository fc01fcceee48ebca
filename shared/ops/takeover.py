"""Active and standby processes of the embedded broker on PostgreSQL, for the fault harness
(``broker faults --kill-active``): which process holds a service's lease, and how long a standby
takes to serve after the active one died.

The lease is PostgreSQL's own (`shared.bus.lease`): the active process is the one whose writing
connection holds the advisory lock, found in ``pg_locks`` and named by its process id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.bus.lease import Holder, lease_holder
from shared.client import BrokerUnavailable, wait_for_services
from shared.ops.embedded import EmbeddedBroker, ServiceProcess

#: The services that run active/standby: one writer each (`shared.bus.backends.service_store`).
LEASED_SERVICES = ("scheduler", "launcher")
#: How long a takeover is watched for before it is reported as not seen.
TAKEOVER_LIMIT_S = 90.0
#: How long after the new active serves its first message is looked for (none may come).
FIRST_MESSAGE_GRACE_S = 10.0
_POLL_S = 0.05


class DatabaseNotEmpty(ValueError):
    pass


@dataclass(frozen=True)
class Takeover:
    """After an active process was killed, in seconds after the kill: when another one held the
    lease, when it answered its health subject (it does once it consumes: the takeover), and when
    it applied its first message (None: not seen, e.g. no message came in the meantime)."""

    service: str
    lease_s: float | None
    serving_s: float | None
    first_message_s: float | None


async def _connect(url: str) -> Any:
    import psycopg  # the harness's PostgreSQL runs need it; the others never load it

    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def check_empty(url: str) -> None:
    """Refuse a database that holds the services' schemas already: a fault run's audit counts its
    own sessions, and another broker's rows (its holds on the pool, say) would change the run."""
    async with await _connect(url) as conn:
        cursor = await conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ANY(%s) "
            "ORDER BY schema_name",
            (["offers", *LEASED_SERVICES],),
        )
        found = [str(row[0]) for row in await cursor.fetchall()]
    if found:
        raise DatabaseNotEmpty(
            f"the database of EB_DATABASE_URL already holds the schemas {', '.join(found)}: "
            "give the fault run an empty database of its own"
        )


async def holder(url: str, service: str) -> Holder | None:
    async with await _connect(url) as conn:
        return await lease_holder(conn, service)


async def active_process(broker: EmbeddedBroker, url: str, service: str, timeout: float) -> ServiceProcess:
    """The process of ``service`` that holds its lease, waiting up to ``timeout`` for one to."""
    deadline = time.monotonic() + timeout
    while True:
        found = await holder(url, service)
        if found is not None:
            for process in broker.processes(service):
                if process.proc is not None and process.proc.pid == found.pid and process.alive():
                    return process
        if time.monotonic() > deadline:
            raise TimeoutError(f"no live {service} process held its lease within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def watch_takeover(
    broker: EmbeddedBroker, url: str, service: str, killed_pid: int, killed_at: datetime
) -> Takeover:
    """Watch the broker after the active ``service`` (process ``killed_pid``) was killed at
    ``killed_at``: when another process holds the lease, when the new active answers its health
    subject, and when it applied its first message (the earliest inbox row written after the kill:
    the dead one writes none). The first message is looked for up to `FIRST_MESSAGE_GRACE_S`
    after the new active serves: with no traffic there is none."""
    began = time.monotonic()
    serving_s: float | None = None
    serving = asyncio.Event()

    async def health() -> None:
        nonlocal serving_s
        with contextlib.suppress(BrokerUnavailable):
            await wait_for_services(broker.url, (service,), TAKEOVER_LIMIT_S, broker.operator())
            serving_s = time.monotonic() - began
        serving.set()

    answering = asyncio.create_task(health())
    lease_s = first_s = None
    try:
        async with await _connect(url) as conn:
            while first_s is None and time.monotonic() - began < TAKEOVER_LIMIT_S:
                if serving.is_set() and time.monotonic() - began > (serving_s or 0) + FIRST_MESSAGE_GRACE_S:
                    break
                if lease_s is None:
                    found = await lease_holder(conn, service)
                    if found is not None and found.pid != killed_pid:
                        lease_s = time.monotonic() - began
                cursor = await conn.execute(
                    f"SELECT min(seen_at) FROM {service}.inbox WHERE seen_at > %s", (killed_at.isoformat(),)
                )
                row = await cursor.fetchone()
                if row is not None and row[0] is not None:
                    first_s = (datetime.fromisoformat(str(row[0])) - killed_at).total_seconds()
                await asyncio.sleep(_POLL_S)
        await answering
    finally:
        answering.cancel()
    if first_s is not None and lease_s is None:  # taken and used between two looks
        lease_s = time.monotonic() - began
    return Takeover(service, lease_s, serving_s, first_s)


def now() -> datetime:
    return datetime.now(UTC)
