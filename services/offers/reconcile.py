"""The offers service's start-up check: accepted sessions whose booking never showed.

The scheduler answers a ``book`` with WAITING at once, so a session still ACCEPTED long after its
accept lost its booking on the way: a machine crash took the scheduler's last transactions (its
``book`` was acked), or the stream lost the command (`shared.bus.upkeep.reconcile_outbox` covers
the second when offers still has the row). The ``book`` is sent again under a new message id;
the scheduler's state machine makes that safe: a booking it holds is a repeat and changes nothing,
a hold it still has is booked, a hold it lost fails the session with a message, so the session is
never left ACCEPTED for ever. The count is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from services.offers import store as tables
from services.offers.domain import OfferPolicy
from shared import subjects
from shared.bus.store import Store, Transaction
from shared.messages import BookSession
from shared.subjects import SchedulerVerb

log = logging.getLogger(__name__)

#: Far longer than a booking takes even under load (milliseconds to seconds).
STALE_ACCEPT = timedelta(minutes=10)
#: At most this many books re-sent at one start: enough for any crash, bounded for a store gone odd.
MAX_REBOOKS = 1000


async def rebook_stale_accepts(tx: Transaction, policy: OfferPolicy) -> list[str]:
    """Queue a ``book`` again for every session ACCEPTED before ``tx.now - STALE_ACCEPT``."""
    stale = await tables.accepted_before(tx, tx.now - STALE_ACCEPT, MAX_REBOOKS)
    for session_id, owner in stale:
        pool = await tables.session_pool(tx, session_id) or policy.pool
        document = await tables.session_document(tx, session_id)
        choice = policy.choice(pool)
        book = BookSession(
            session_id=session_id,
            owner=owner,
            siblings=[],  # released with the accept; the scheduler frees a sibling once anyway
            executable=document.get("executable") or {},
            storage=document.get("storage") or [],
            data=document.get("data") or [],
            volumes=(document.get("compute") or {}).get("volumes") or [],
            platform=choice.platform if choice else policy.platform,
        )
        await tx.publish(
            subjects.scheduler_command(pool, SchedulerVerb.BOOK),
            book.to_bytes(),
            f"book:{session_id}:again:{_stamp(tx.now)}",
            trace_headers=await tables.session_trace(tx, session_id),
        )
    if stale:
        log.warning(
            "offers: %d sessions were still ACCEPTED %s after their accept: their book was sent again",
            len(stale),
            STALE_ACCEPT,
            extra={"event": "stale_accepts", "count": len(stale)},
        )
    return [session_id for session_id, _ in stale]


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S")


def at_start(policy: OfferPolicy) -> Callable[[Store], Awaitable[None]]:
    """A `Wiring.on_start` hook: the queued books leave with the relay once the bus is up."""

    async def check(store: Store) -> None:
        async with store.transaction() as tx:
            await rebook_stale_accepts(tx, policy)

    return check
