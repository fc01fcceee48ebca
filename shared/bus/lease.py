"""The lease that makes one process the writer of a service's PostgreSQL schema (active/standby).

The scheduler and the launcher keep in-memory state that mirrors their tables (the scheduler's
ledger, the launcher's drivers), so each schema must have exactly one writing process. Several
processes of such a service may run against one database; the lease picks the one that works.

The lease is a PostgreSQL *session* advisory lock held by the store's writing connection. That
connection is also the only one its transactions run on, so the lease fences the writes: a write
can only reach the database through the session that holds the lock, and when that session ends
(the process died, the server cut it, the network lost it) the lock goes with it. The one rule a
process must keep is never to reconnect and write after its writing connection broke: the store
raises `LeaseLost` instead, and the service exits so that its supervisor restarts it as a standby.

Nothing here imports psycopg at module level: the embedded default (SQLite) never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zlib import crc32

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from shared.bus.store import Store

log = logging.getLogger(__name__)

#: How often a standby asks for the lease, and how often the holder checks its connection is alive.
POLL_S = 0.5
CHECK_S = 1.0
#: PostgreSQL names a session by at most 63 bytes of its ``application_name``.
_APPLICATION_NAME_BYTES = 63


class LeaseLost(RuntimeError):
    """The connection that held a store's lease broke: another process may be the writer now, so
    this one must not write again. The service exits; restarted, it waits as a standby."""


def lease_key(name: str) -> int:
    """The advisory lock key of the lease on schema ``name``: distinct from the key
    `shared.bus.postgres` locks while it creates a schema's tables (``crc32(name)``)."""
    return crc32(f"lease:{name}".encode())


def holder_name(name: str) -> str:
    """The ``application_name`` of a leased writing connection: the service, this process's id and
    its host, so that an operator (and the fault harness) can see which process is the active one
    (`lease_holder`). The host is last: a long one is cut, never the process id."""
    text = f"eb-{name}:{os.getpid()}@{socket.gethostname()}"
    return text.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")


@dataclass(frozen=True)
class Holder:
    """The process that holds a lease, as its writing connection names it (`holder_name`)."""

    pid: int
    host: str


#: Which session holds the lease on a schema of this database, by its application name.
HOLDER_SQL = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def parse_holder(application_name: str) -> Holder | None:
    """The process named by a leased connection's application name, or None if it is not one."""
    _, _, rest = application_name.partition(":")
    pid, at, host = rest.partition("@")
    if not (pid.isdigit() and at):
        return None
    return Holder(int(pid), host)


async def lease_holder(conn: AsyncConnection[Any], name: str) -> Holder | None:
    """Which process holds the lease on schema ``name`` (None: nobody, or not a broker process).
    Read on any connection to the database: PostgreSQL shows the locks of every session."""
    cursor = await conn.execute(HOLDER_SQL, (lease_key(name),))
    row = await cursor.fetchone()
    return parse_holder(str(row[0])) if row is not None else None


async def take(conn: AsyncConnection[Any], name: str) -> bool:
    """Try once to take the lease on ``conn``'s session: True if it holds it now."""
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(name),))
    row = await cursor.fetchone()
    return bool(row is not None and row[0])


async def wait_for_lease(conn: AsyncConnection[Any], name: str, service: str) -> None:
    """Ask for the lease every `POLL_S` until ``conn`` holds it. A process that waits is a standby:
    it has not connected to the bus yet, so it consumes nothing and writes nothing."""
    waiting = False
    while not await take(conn, name):
        if not waiting:
            log.info("standby: waiting for the %s lease", service)
            waiting = True
        await asyncio.sleep(POLL_S)
    log.info("%s: took the lease%s", service, " after waiting as a standby" if waiting else "")


async def served(stop: asyncio.Event, store: Store) -> None:
    """Until ``stop`` is set; raises `LeaseLost` as soon as ``store`` loses its lease (never, for a
    store without one). The composition roots run a service in between."""
    stopping = asyncio.ensure_future(stop.wait())
    losing = asyncio.ensure_future(store.lease_lost())
    try:
        await asyncio.wait({stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (stopping, losing):
            waiter.cancel()
    if losing.done() and not losing.cancelled():
        raise losing.result()


async def started(start: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``start`` (a service's start-up) unless ``stop`` is set first: a standby waits for its
    lease inside it, and must still stop at once when told. True if it started."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    if starting.cancelled():
        return False
    starting.result()  # its failure, if it failed
    return True
